"""Encryption at rest: envelope encryption of documents under rotatable key-encryption keys.

    seal(plaintext, document_id=…, version=…, kek=keyring.current) -> SealedContent
    open_sealed(sealed, document_id=…, version=…, keyring=keyring) -> bytes
    rewrap(sealed, keyring, new_kek) -> SealedContent          (rotation, no decryption)

A `KeyRing` over one `KekStore` gives the current KEK and any KEK by id; `open_keyring` builds one
from a key source string: ``file:PATH`` (KEKs derived from the local key file, `local_kek`) or
``pkcs11:module=…;token=…;pin-env=…`` (KEKs inside an HSM, `pkcs11_kek`). Modules:

* `envelope`   the format: data keys, AES-256-GCM, the associated data, `SealedContent`
* `keyring`    KEK ids, the `KekStore` port, `KeyRing` (current KEK, rotation, retirement)
* `local_kek`  KEKs derived from the key file, AES Key Wrap
* `pkcs11_kek` KEKs generated in a PKCS#11 token, AES-GCM inside the token
* `errors`     the error hierarchy (`DecryptionFailed`, `KeySourceError`, `UnknownKek`)

Nothing here opens a file or a session at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from carevault.adapters.crypto.envelope import (
    CONTENT,
    KekLookup,
    KeyEncryptionKey,
    SealedContent,
    associated_data,
    metadata_purpose,
    open_sealed,
    rewrap,
    seal,
)
from carevault.adapters.crypto.errors import DecryptionFailed, KeySourceError, UnknownKek
from carevault.adapters.crypto.keyring import KekStore, KeyRing
from carevault.adapters.crypto.local_kek import LocalKek, LocalKekStore
from carevault.adapters.crypto.pkcs11_kek import Pkcs11Kek, Pkcs11KekStore, Pkcs11KeySource

__all__ = [
    "CONTENT",
    "DecryptionFailed",
    "KekLookup",
    "KekStore",
    "KeyEncryptionKey",
    "KeyRing",
    "KeySourceError",
    "LocalKek",
    "LocalKekStore",
    "Pkcs11Kek",
    "Pkcs11KekStore",
    "Pkcs11KeySource",
    "SealedContent",
    "UnknownKek",
    "associated_data",
    "metadata_purpose",
    "open_kek_store",
    "open_keyring",
    "open_sealed",
    "rewrap",
    "seal",
]


def open_kek_store(key_source: str, environ: Mapping[str, str] | None = None) -> KekStore:
    """The KEK store a key source string names; ``environ`` (default: the process's) holds the
    HSM PIN variable. Raises `KeySourceError` (or the key file's `KeyFileError`)."""
    scheme, _, _ = key_source.partition(":")
    if scheme == "file":
        return LocalKekStore.from_key_source(key_source)
    if scheme == "pkcs11":
        return Pkcs11KekStore.open(
            Pkcs11KeySource.parse(key_source), os.environ if environ is None else environ
        )
    raise KeySourceError(
        f"unsupported key source {scheme!r}: expected 'file:PATH' or 'pkcs11:module=…;token=…;"
        "pin-env=…'"
    )


def open_keyring(
    key_source: str,
    environ: Mapping[str, str] | None = None,
    *,
    recheck_seconds: float = 60.0,
) -> KeyRing:
    """A `KeyRing` over the store ``key_source`` names (`open_kek_store`); close it after use."""
    return KeyRing(open_kek_store(key_source, environ), recheck_seconds=recheck_seconds)
