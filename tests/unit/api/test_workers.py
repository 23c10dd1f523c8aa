"""A server process freezes the platform it built before serving (`freeze_the_platform`): what
is alive then leaves the collector's generations, so that a full collection no longer walks it
(its cost, and the requests' latency, are `bench/documents.py`'s to measure)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from carevault.api.workers import freeze_the_platform


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process is no server: it takes its objects back afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class Piece:
    """An object the collector tracks (a class instance)."""


def tracked(objects: list[Piece]) -> int:
    """How many of ``objects`` are in the collector's generations now."""
    ids = {id(o) for o in objects}
    return sum(1 for o in gc.get_objects() if id(o) in ids)


@pytest.mark.usefixtures("unfrozen")
def test_what_is_alive_when_the_server_starts_is_frozen_and_what_comes_after_is_not() -> None:
    built = [Piece() for _ in range(1000)]  # stands for the platform's objects
    assert tracked(built) == len(built) and gc.get_freeze_count() == 0
    freeze_the_platform()
    frozen = gc.get_freeze_count()
    assert frozen >= len(built)
    assert tracked(built) == 0  # no collection walks them any more
    later = [Piece() for _ in range(10)]
    assert tracked(later) == len(later)  # what is allocated afterwards is still collected
    assert gc.get_freeze_count() == frozen
