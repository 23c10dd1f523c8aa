"""Small secrets the platform must read back (a TOTP secret, an e-prescription's access code),
sealed so that a copy of the database alone yields none of them.

AES-256-GCM under a key derived with HKDF-SHA256 from the key file's master key, with a
versioned label of its own per kind of secret (as the audit log's and the CA's keys are
derived); a random 96-bit nonce per seal (NIST SP 800-38D §8.3 allows 2**32 random nonces per
key); and the row the secret belongs to as the associated data, so that a sealed value copied
onto another row does not open. The format: one version byte, the nonce, the ciphertext and
its tag.
"""

from __future__ import annotations

import os
from typing import ClassVar, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys
from carevault.adapters.keys.log_signer import MASTER_KEY

__all__ = ["SealedBox", "Unsealable"]

_SEAL_VERSION = b"\x01"
_NONCE_BYTES = 12


class Unsealable(Exception):
    """A sealed value does not open with this key (another environment's key file, or a row
    tampered with or moved to another row)."""


class SealedBox:
    """One kind of sealed secret: a subclass names its HKDF label (``INFO``), the prefix of
    the associated data that binds a value to its row (``BOUND_TO``), what it seals (for the
    messages) and the error it raises."""

    INFO: ClassVar[bytes]
    BOUND_TO: ClassVar[bytes]
    WHAT: ClassVar[str]
    ERROR: ClassVar[type[Unsealable]] = Unsealable

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"the {self.WHAT} sealing key is 256 bits")
        self._aead = AESGCM(key)

    @classmethod
    def derive(cls, master: bytes) -> Self:
        return cls(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=cls.INFO).derive(master)
        )

    @classmethod
    def from_key_source(cls, key_source: str) -> Self:
        keys = load_keys(key_file_path(key_source))
        if MASTER_KEY not in keys:
            raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
        return cls.derive(keys[MASTER_KEY])

    def seal(self, value: str, row_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return (
            _SEAL_VERSION + nonce + self._aead.encrypt(nonce, value.encode(), self._bound(row_id))
        )

    def open(self, sealed: bytes, row_id: str) -> str:
        if sealed[:1] != _SEAL_VERSION:
            raise self.ERROR(f"unknown sealed {self.WHAT} format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, self._bound(row_id)).decode("ascii")
        except InvalidTag:
            raise self.ERROR(f"the {self.WHAT} does not open with this key") from None

    def _bound(self, row_id: str) -> bytes:
        return self.BOUND_TO + row_id.encode("utf-8")
