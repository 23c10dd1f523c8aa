"""Key-encryption keys derived from the platform key file (``file:PATH`` key source).

A local KEK is HKDF-SHA256 over the key file's ``master-1`` key, with
``carevault/document-kek/<kek id>/v1`` as ``info``, as the audit log's and the CA's keys are
derived: the key file stays the single secret to protect and back up, and each KEK id still gets
an independent key. It wraps data keys with AES Key Wrap (RFC 3394): deterministic, no nonce to
manage, and an integrity check that refuses a wrapped key made by another KEK or altered.

Which KEK ids exist is kept beside the key file, in the directory ``<key file>.keks/`` (for
``var/carevault.key``, ``var/carevault.keks/``): one small file per KEK, created with ``O_EXCL``
so two rotations cannot both create the same id. It holds no key material: losing it loses no
data, it only forgets which KEK is current (`LocalKekStore.create_kek` of the old ids restores
it). Retiring a KEK deletes its entry, after which it no longer opens.

Limit, stated plainly: every local KEK is derived from the same master key, so rotating local
KEKs does not protect against a leaked key file; it exercises the same rotation path as an HSM.
Production keeps its KEKs in an HSM (`carevault.adapters.crypto.pkcs11_kek`).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from carevault.adapters.crypto.envelope import DATA_KEY_BYTES
from carevault.adapters.crypto.errors import DecryptionFailed, KeySourceError, UnknownKek
from carevault.adapters.crypto.keyring import check_kek_id, sorted_kek_ids
from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys
from carevault.adapters.keys.log_signer import MASTER_KEY

__all__ = ["LocalKek", "LocalKekStore", "kek_info", "registry_path"]

_WRAPPED_BYTES = DATA_KEY_BYTES + 8  # RFC 3394 adds one 64-bit integrity block


def kek_info(kek_id: str) -> bytes:
    """The HKDF ``info`` of a local KEK: versioned, so a future scheme derives other keys."""
    return f"carevault/document-kek/{check_kek_id(kek_id)}/v1".encode("ascii")


def registry_path(key_file: Path) -> Path:
    """Where local KEK ids are recorded: ``var/carevault.key`` -> ``var/carevault.keks``."""
    return key_file.with_suffix(".keks")


class LocalKek:
    """A KEK held in this process's memory, derived from the master key; AES-KW (RFC 3394)."""

    __slots__ = ("_id", "_key")

    def __init__(self, kek_id: str, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a local KEK is 256 bits")
        self._id = check_kek_id(kek_id)
        self._key = key

    @classmethod
    def derive(cls, master: bytes, kek_id: str) -> LocalKek:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=kek_info(kek_id)).derive(
            master
        )
        return cls(kek_id, key)

    def __repr__(self) -> str:
        return f"LocalKek(kek_id={self._id!r})"

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes) -> bytes:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError("a data key is 256 bits")
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        if len(wrapped) != _WRAPPED_BYTES:
            raise DecryptionFailed(f"the wrapped key under {self._id!r} has the wrong length")
        try:
            return aes_key_unwrap(self._key, wrapped)
        except InvalidUnwrap:
            raise DecryptionFailed(
                f"the wrapped key does not open under {self._id!r}: another KEK, or altered"
            ) from None


class LocalKekStore:
    """The local KEKs: derived from ``master``, existing when ``registry`` lists them."""

    def __init__(self, master: bytes, registry: Path) -> None:
        self._master = master
        self._registry = registry

    @classmethod
    def from_key_source(cls, key_source: str) -> LocalKekStore:
        """The store of a ``file:PATH`` key source (the key file must exist and be private)."""
        path = key_file_path(key_source)
        keys = load_keys(path)
        if MASTER_KEY not in keys:
            raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
        return cls(keys[MASTER_KEY], registry_path(path))

    def __repr__(self) -> str:
        return f"LocalKekStore(registry={str(self._registry)!r})"

    def kek_ids(self) -> list[str]:
        try:
            names = [entry.name for entry in self._registry.iterdir() if entry.is_file()]
        except FileNotFoundError:
            return []
        return sorted_kek_ids(names)

    def create_kek(self, kek_id: str) -> LocalKek:
        check_kek_id(kek_id)
        self._registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = {
            "kek_id": kek_id,
            "created": datetime.now(UTC).isoformat(),
            "derivation": f"HKDF-SHA256({MASTER_KEY}, info={kek_info(kek_id).decode()!r})",
        }
        try:
            fd = os.open(self._registry / kek_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeySourceError(f"the key-encryption key {kek_id} already exists") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_directory(self._registry)
        return LocalKek.derive(self._master, kek_id)

    def open_kek(self, kek_id: str) -> LocalKek:
        try:
            check_kek_id(kek_id)
        except ValueError:
            raise UnknownKek(kek_id) from None
        if not (self._registry / kek_id).is_file():
            raise UnknownKek(kek_id)
        return LocalKek.derive(self._master, kek_id)

    def destroy_kek(self, kek_id: str) -> None:
        try:
            (self._registry / check_kek_id(kek_id)).unlink()
        except (FileNotFoundError, ValueError):
            raise UnknownKek(kek_id) from None
        _fsync_directory(self._registry)

    def close(self) -> None:
        """Nothing to release: the master key is dropped with the store."""


def _fsync_directory(path: Path) -> None:
    # A new or removed entry is durable only once its directory is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
