"""Password hashing with Argon2id (argon2-cffi), at the OWASP recommended parameters.

OWASP Password Storage Cheat Sheet, "Argon2id": "a minimum configuration of 19 MiB of memory,
an iteration count of 2, and 1 degree of parallelism" (m=19456 KiB, t=2, p=1); RFC 9106 §4
describes the same trade-off. The parameters travel inside each encoded hash
(``$argon2id$v=19$m=19456,t=2,p=1$salt$hash``), so raising them later only makes
`needs_rehash` true for older hashes, which the login service then re-hashes on the next
successful sign-in.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["OWASP_MEMORY_KIB", "OWASP_PARALLELISM", "OWASP_TIME_COST", "Argon2PasswordHasher"]

OWASP_MEMORY_KIB = 19 * 1024  # 19 MiB
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1


class Argon2PasswordHasher:
    """Hashes and verifies normalized passwords; callers normalize (NFKC) first."""

    def __init__(
        self,
        *,
        memory_cost: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, encoded: str, password: str) -> bool:
        """True if ``password`` matches; False for a mismatch or an unreadable hash (argon2's
        own comparison of the derived bytes is constant-time)."""
        try:
            return self._hasher.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        """True if ``encoded`` was made with other parameters (or another variant) than ours."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except (InvalidHashError, ValueError):
            return True
