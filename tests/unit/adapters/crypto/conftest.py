"""Fakes for the crypto adapter's unit tests: an in-memory KEK store and a hand-driven clock."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from carevault.adapters.crypto import KeyRing, LocalKek, UnknownKek
from carevault.adapters.crypto.errors import KeySourceError
from carevault.adapters.crypto.keyring import sorted_kek_ids


class MemoryKekStore:
    """A `KekStore` in a dict: local KEKs derived from a random master, nothing on disk."""

    def __init__(self, master: bytes | None = None) -> None:
        self.master = master or os.urandom(32)
        self.keks: dict[str, LocalKek] = {}
        self.opened: list[str] = []
        self.closed = False

    def kek_ids(self) -> list[str]:
        return sorted_kek_ids(list(self.keks))

    def create_kek(self, kek_id: str) -> LocalKek:
        if kek_id in self.keks:
            raise KeySourceError(f"{kek_id} already exists")
        kek = self.keks[kek_id] = LocalKek.derive(self.master, kek_id)
        return kek

    def open_kek(self, kek_id: str) -> LocalKek:
        self.opened.append(kek_id)
        try:
            return self.keks[kek_id]
        except KeyError:
            raise UnknownKek(kek_id) from None

    def destroy_kek(self, kek_id: str) -> None:
        if self.keks.pop(kek_id, None) is None:
            raise UnknownKek(kek_id)

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryKekStore:
    return MemoryKekStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keyring(store: MemoryKekStore, clock: FakeClock) -> Iterator[KeyRing]:
    ring = KeyRing(store, clock=clock)
    ring.initialize()
    yield ring
    ring.close()
