"""What the store contract checks share: a real unit of work used the way a fake one is.

The checks (tests/integration/test_store_contracts*.py) run the same assertions on a fake store
(tests/support/fake_*.py) and on the real one; the fake is one object entered again and again,
so the real side is wrapped to look the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork


class Reused:
    """A fresh real unit of work at each ``with``, used as the fake is (one object)."""

    def __init__(self, units: Callable[[], SqlUnitOfWork]) -> None:
        self._units = units
        self._current: SqlUnitOfWork | None = None

    def __enter__(self) -> SqlUnitOfWork:
        self._current = self._units().__enter__()
        return self._current

    def __exit__(self, *exc: Any) -> None:
        assert self._current is not None
        self._current.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)
