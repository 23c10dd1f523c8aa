"""The sealing of e-prescriptions' access codes, so that a patient can be shown theirs again.

A pharmacy's code is checked against its SHA-256 (`domain.prescriptions.code_hash`); the patient,
who may lose the printout, needs the code itself. It is sealed as TOTP secrets are
(`adapters.security.totp`): AES-256-GCM under a key derived with HKDF-SHA256 (its own versioned
label) from the key file's master key, a random 96-bit nonce per seal, and the task's id as the
associated data, so a sealed code copied onto another task's row does not open. A copy of the
database alone yields no code.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys
from carevault.adapters.keys.log_signer import MASTER_KEY

__all__ = ["ACCESS_CODE_INFO", "AccessCodeBox", "CodeUnavailable"]

ACCESS_CODE_INFO = b"carevault/prescription-access-code/v1"
_SEAL_VERSION = b"\x01"
_NONCE_BYTES = 12


class CodeUnavailable(Exception):
    """A sealed access code does not open with this key (another environment's key file, or
    a row tampered with or moved to another task)."""


class AccessCodeBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the access code sealing key is 256 bits")
        self._aead = AESGCM(key)

    @classmethod
    def derive(cls, master: bytes) -> AccessCodeBox:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ACCESS_CODE_INFO).derive(
            master
        )
        return cls(key)

    @classmethod
    def from_key_source(cls, key_source: str) -> AccessCodeBox:
        keys = load_keys(key_file_path(key_source))
        if MASTER_KEY not in keys:
            raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
        return cls.derive(keys[MASTER_KEY])

    def seal(self, code: str, task_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, code.encode(), _bound(task_id))

    def open(self, sealed: bytes, task_id: str) -> str:
        if sealed[:1] != _SEAL_VERSION:
            raise CodeUnavailable("unknown sealed access code format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _bound(task_id)).decode("ascii")
        except InvalidTag:
            raise CodeUnavailable("the access code does not open with this key") from None


def _bound(task_id: str) -> bytes:
    return b"carevault/prescription/" + task_id.encode("utf-8")
