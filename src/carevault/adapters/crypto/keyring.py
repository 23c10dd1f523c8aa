"""The key ring: which KEK seals new content, and every KEK that may still open old content.

KEKs live in a `KekStore` (a local key file, an HSM token). The store is the only record of
which KEKs exist; the ring adds no state of its own. KEK ids are ``kek-`` and a decimal number
of at least four digits (``kek-0001``, ``kek-0002``, ..., ``kek-10000``); the *current* KEK, the
one `seal` should use, is the one with the highest number. Rotation is therefore nothing more
than `KeyRing.new_kek`: it creates the next id, which becomes current for every process that
shares the store once it refreshes (at most ``recheck_seconds`` later), and old content keeps
opening with the KEK named in its row until it has been re-wrapped and the old KEK retired.

What the ring does not know is whether a KEK still wraps any data key: that is in the database.
`KeyRing.retire` therefore trusts its caller (the rotation job) to have checked, and only
refuses to retire the current KEK.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from carevault.adapters.crypto.envelope import KeyEncryptionKey
from carevault.adapters.crypto.errors import KeySourceError, UnknownKek

__all__ = [
    "FIRST_KEK_ID",
    "KekStore",
    "KeyRing",
    "check_kek_id",
    "is_kek_id",
    "kek_id_number",
    "sorted_kek_ids",
]

FIRST_KEK_ID = "kek-0001"
_KEK_ID = re.compile(r"kek-([0-9]{4,})")


def kek_id_number(kek_id: str) -> int:
    """The number in a KEK id (``kek-0042`` -> 42); `ValueError` for anything else."""
    match = _KEK_ID.fullmatch(kek_id)
    if match is None:
        raise ValueError(f"{kek_id!r} is not a KEK id (expected 'kek-' and at least 4 digits)")
    return int(match.group(1))


def check_kek_id(kek_id: str) -> str:
    """``kek_id`` itself if well-formed; `ValueError` otherwise."""
    kek_id_number(kek_id)
    return kek_id


def _kek_id(number: int) -> str:
    return f"kek-{number:04d}"


def is_kek_id(name: str) -> bool:
    """Whether ``name`` is a KEK id (stores use it to ignore unrelated objects)."""
    return _KEK_ID.fullmatch(name) is not None


def sorted_kek_ids(names: list[str]) -> list[str]:
    """The KEK ids among ``names``, oldest first (by number, so ``kek-10000`` sorts last)."""
    return sorted((name for name in set(names) if is_kek_id(name)), key=kek_id_number)


class KekStore(Protocol):
    """Where KEKs are created, found and destroyed: one per key source kind."""

    def kek_ids(self) -> list[str]:
        """Every KEK id in the store, oldest first."""
        ...

    def create_kek(self, kek_id: str) -> KeyEncryptionKey:
        """Create the KEK ``kek_id``; `KeySourceError` if it already exists."""
        ...

    def open_kek(self, kek_id: str) -> KeyEncryptionKey:
        """The existing KEK ``kek_id``; `UnknownKek` if there is none."""
        ...

    def destroy_kek(self, kek_id: str) -> None:
        """Delete ``kek_id`` for good; `UnknownKek` if there is none."""
        ...

    def close(self) -> None:
        """Release the store's resources (an HSM session); KEKs opened from it stop working."""
        ...


class KeyRing:
    """The current KEK for new content, any KEK by id for old content, and rotation.

    Thread-safe. KEKs are cached once opened; the list of ids is re-read from the store at most
    every ``recheck_seconds`` (and at once after a change made through this ring), so a KEK
    created by another process becomes current here without a restart.
    """

    def __init__(
        self,
        store: KekStore,
        *,
        recheck_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._checked_at: float | None = None
        self._open: dict[str, KeyEncryptionKey] = {}

    def __repr__(self) -> str:
        return f"KeyRing(store={type(self._store).__name__}, kek_ids={self._ids!r})"

    def __enter__(self) -> KeyRing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def current(self) -> KeyEncryptionKey:
        """The KEK new content is sealed with; `KeySourceError` before `initialize`."""
        ids = self.kek_ids()
        if not ids:
            raise KeySourceError("the key source holds no key-encryption key yet: initialize it")
        return self.open_kek(ids[-1])

    def kek_ids(self) -> list[str]:
        """Every KEK id in the store, oldest first (possibly up to ``recheck_seconds`` old)."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._recheck_seconds:
                self._reload(now)
            return list(self._ids)

    def refresh(self) -> None:
        """Re-read the KEK ids now (after another process rotated, say)."""
        with self._lock:
            self._reload(self._clock())

    def open_kek(self, kek_id: str) -> KeyEncryptionKey:
        """The KEK ``kek_id``, current or not; `UnknownKek` if the store has none by that id."""
        kek = self._open.get(kek_id)
        if kek is not None:
            return kek
        try:
            check_kek_id(kek_id)
        except ValueError:
            raise UnknownKek(kek_id) from None
        with self._lock:
            kek = self._open.get(kek_id)
            if kek is None:
                kek = self._open[kek_id] = self._store.open_kek(kek_id)
            return kek

    def initialize(self) -> KeyEncryptionKey:
        """The current KEK, creating ``kek-0001`` if the store has none (safe to re-run)."""
        with self._lock:
            self._reload(self._clock())
            if not self._ids:
                self._create(FIRST_KEK_ID)
        return self.current

    def new_kek(self) -> KeyEncryptionKey:
        """Create the next KEK (``kek-0002`` after ``kek-0001``), which becomes current."""
        with self._lock:
            self._reload(self._clock())
            last = kek_id_number(self._ids[-1]) if self._ids else 0
            return self._create(_kek_id(last + 1))

    def retire(self, kek_id: str) -> None:
        """Destroy the KEK ``kek_id``: whatever it still wraps will never open again.

        The caller must have checked that no stored data key is wrapped by it. The current KEK
        cannot be retired (rotate first).
        """
        with self._lock:
            self._reload(self._clock())
            if kek_id not in self._ids:
                raise UnknownKek(kek_id)
            if kek_id == self._ids[-1]:
                raise KeySourceError(f"{kek_id} is the current key-encryption key: rotate first")
            self._store.destroy_kek(kek_id)
            self._open.pop(kek_id, None)
            self._reload(self._clock())

    def close(self) -> None:
        """Close the store; the ring and its KEKs cannot be used afterwards."""
        with self._lock:
            self._open.clear()
            self._store.close()

    def _create(self, kek_id: str) -> KeyEncryptionKey:
        kek = self._open[kek_id] = self._store.create_kek(kek_id)
        self._reload(self._clock())
        return kek

    def _reload(self, now: float) -> None:
        self._ids = self._store.kek_ids()
        self._checked_at = now
