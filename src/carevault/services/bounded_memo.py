"""A bounded, thread-safe memo of outcomes that depend only on their key.

Used where a cryptographic check is costly and its outcome is fixed by the bytes checked (a
token's signature, a certificate chain): the outcome is kept for the next request, and the
oldest goes first once ``limit`` are kept. What can change without the bytes changing (expiry,
revocation) is never kept here: callers check it on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._kept.get(key)

    def add(self, key: K, value: V) -> None:
        with self._lock:
            if key not in self._kept and len(self._kept) >= self.limit:
                self._kept.pop(next(iter(self._kept)))  # the oldest
            self._kept[key] = value
