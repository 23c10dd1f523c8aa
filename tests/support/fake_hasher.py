"""A fast stand-in for Argon2id (`carevault.services.credentials.PasswordHasher`) for the unit
tests of accounts and sign-in: the same answers, and a note of each hash it checked against."""

from __future__ import annotations

import hashlib


class Hasher:
    def __init__(self) -> None:
        self.verified: list[str] = []

    def hash(self, password: str) -> str:
        return "sha256$" + hashlib.sha256(password.encode()).hexdigest()

    def verify(self, encoded: str, password: str) -> bool:
        self.verified.append(encoded)
        return encoded.partition("$")[2] == hashlib.sha256(password.encode()).hexdigest()

    def needs_rehash(self, encoded: str) -> bool:
        """A hash made with older parameters (here: another prefix)."""
        return not encoded.startswith("sha256$")
