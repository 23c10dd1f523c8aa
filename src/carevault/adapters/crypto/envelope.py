"""Envelope encryption of document content and free-text metadata.

`seal` draws a fresh 256-bit data key for every call, encrypts the plaintext with AES-256-GCM
under it (random 96-bit nonce, 128-bit tag) and has a key-encryption key (KEK) wrap the data key.
The result, `SealedContent`, is what a database row keeps: the KEK's id, the wrapped data key, the
nonce and the ciphertext with its tag; nothing in it is secret. Rotating a KEK is therefore
`rewrap`: the data key moves from one KEK to another and the ciphertext is not touched, not even
decrypted.

The associated data binds a ciphertext to its place, so that a row copied onto another document,
another version, or another column does not open. Its exact bytes, format 1::

    b"carevault/sealed/v1" 0x00
    uint16-be  len(purpose)      purpose, ASCII   ("content", "metadata/title", ...)
    uint16-be  len(document_id)  document_id, UTF-8
    uint64-be  version

Lengths prefix the variable fields, so no two (purpose, document id, version) triples give the
same bytes whatever characters an id holds. The KEK id is deliberately *not* in the associated
data: it changes when the data key is re-wrapped, and the ciphertext must not.

The data key exists only in this process's memory between generation (or unwrapping) and use:
it is never logged, never written anywhere, and every class here has a ``repr`` that shows sizes,
not bytes. (Python cannot wipe a ``bytes`` object; the key is simply dropped.)
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carevault.adapters.crypto.errors import DecryptionFailed, UnknownKek

__all__ = [
    "AAD_LABEL",
    "CONTENT",
    "DATA_KEY_BYTES",
    "NONCE_BYTES",
    "KekLookup",
    "KeyEncryptionKey",
    "SealedContent",
    "associated_data",
    "metadata_purpose",
    "open_sealed",
    "rewrap",
    "seal",
]

AAD_LABEL = b"carevault/sealed/v1\x00"
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
CONTENT = "content"

# Lower-case words joined by "/" (e.g. "metadata/title"): readable in a hex dump of the AAD and
# impossible to confuse with another purpose.
_PURPOSE = re.compile(r"[a-z][a-z0-9-]*(/[a-z][a-z0-9-]*)*")
_MAX_PURPOSE = 64
_MAX_FIELD = 0xFFFF
_MAX_VERSION = 2**64 - 1


class KeyEncryptionKey(Protocol):
    """A key that wraps data keys and never hands out its own value."""

    @property
    def kek_id(self) -> str:
        """The id stored next to every data key this KEK wraps (e.g. ``kek-0002``)."""
        ...

    def wrap(self, data_key: bytes) -> bytes:
        """The 32-byte ``data_key``, encrypted and authenticated under this KEK."""
        ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key back; `DecryptionFailed` if ``wrapped`` was not made by this KEK."""
        ...


class KekLookup(Protocol):
    """Whatever finds a KEK by id for opening old content (a `KeyRing`, or a fake in tests)."""

    def open_kek(self, kek_id: str) -> KeyEncryptionKey:
        """The KEK called ``kek_id``; `UnknownKek` if there is none."""
        ...


@dataclass(frozen=True, slots=True, repr=False)
class SealedContent:
    """Everything a row needs to open sealed content later, and nothing secret."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # the GCM tag is its last 16 bytes

    def __repr__(self) -> str:
        # Not secret, but a repr has no business dumping a megabyte of ciphertext into a log,
        # and showing sizes only keeps the habit uniform with the classes that do hold secrets.
        return (
            f"SealedContent(kek_id={self.kek_id!r}, wrapped_key=<{len(self.wrapped_key)} bytes>, "
            f"nonce=<{len(self.nonce)} bytes>, ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def metadata_purpose(field: str) -> str:
    """The purpose label of a free-text metadata field (``metadata/title``, for example).

    One label per field, so a sealed title copied into the description column does not open.
    """
    return _checked_purpose(f"metadata/{field}")


def associated_data(*, document_id: str, version: int, purpose: str = CONTENT) -> bytes:
    """The exact associated-data bytes (format 1, in the module docstring)."""
    purpose_bytes = _checked_purpose(purpose).encode("ascii")
    if not isinstance(document_id, str) or not document_id:
        raise ValueError("document_id must be a non-empty string")
    document_bytes = document_id.encode("utf-8")
    if len(document_bytes) > _MAX_FIELD:
        raise ValueError("document_id is longer than 65535 bytes")
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 0 <= version <= _MAX_VERSION
    ):
        raise ValueError("version must be an integer from 0 to 2**64 - 1")
    return b"".join(
        (
            AAD_LABEL,
            struct.pack(">H", len(purpose_bytes)),
            purpose_bytes,
            struct.pack(">H", len(document_bytes)),
            document_bytes,
            struct.pack(">Q", version),
        )
    )


def seal(
    plaintext: bytes,
    *,
    document_id: str,
    version: int,
    kek: KeyEncryptionKey,
    purpose: str = CONTENT,
) -> SealedContent:
    """Encrypt ``plaintext`` under a new data key, bound to its document, version and purpose."""
    aad = associated_data(document_id=document_id, version=version, purpose=purpose)
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    # A fresh key per call means a nonce is used once per key whatever happens; it is random
    # anyway, as the design asks, so that a faulty random source would still need two failures.
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    return SealedContent(
        kek_id=kek.kek_id, wrapped_key=kek.wrap(data_key), nonce=nonce, ciphertext=ciphertext
    )


def open_sealed(
    sealed: SealedContent,
    *,
    document_id: str,
    version: int,
    keyring: KekLookup,
    purpose: str = CONTENT,
) -> bytes:
    """The plaintext of ``sealed``, or `DecryptionFailed`; never unauthenticated bytes."""
    aad = associated_data(document_id=document_id, version=version, purpose=purpose)
    data_key = _unwrap(sealed, keyring)
    if len(sealed.nonce) != NONCE_BYTES or len(sealed.ciphertext) < TAG_BYTES:
        raise DecryptionFailed("malformed sealed content: wrong nonce or ciphertext length")
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise DecryptionFailed(
            "content does not authenticate: another document, version or purpose, "
            "or the ciphertext or nonce was altered"
        ) from None


def rewrap(sealed: SealedContent, keyring: KekLookup, new_kek: KeyEncryptionKey) -> SealedContent:
    """``sealed`` with its data key wrapped by ``new_kek``; nonce and ciphertext are unchanged.

    Idempotent: content already under ``new_kek`` comes back as it is, so an interrupted
    rotation can simply run again. The old wrapped key is authenticated on the way (a corrupt
    one raises `DecryptionFailed`); the ciphertext is not, since that would mean decrypting it.
    """
    if sealed.kek_id == new_kek.kek_id:
        return sealed
    data_key = _unwrap(sealed, keyring)
    return replace(sealed, kek_id=new_kek.kek_id, wrapped_key=new_kek.wrap(data_key))


def _unwrap(sealed: SealedContent, keyring: KekLookup) -> bytes:
    try:
        kek = keyring.open_kek(sealed.kek_id)
    except UnknownKek:
        raise DecryptionFailed(
            f"its key-encryption key {sealed.kek_id!r} is not available"
        ) from None
    data_key = kek.unwrap(sealed.wrapped_key)
    if len(data_key) != DATA_KEY_BYTES:
        raise DecryptionFailed(f"the data key under {sealed.kek_id!r} is not 256 bits")
    return data_key


def _checked_purpose(purpose: str) -> str:
    if len(purpose) > _MAX_PURPOSE or not _PURPOSE.fullmatch(purpose):
        raise ValueError(
            f"purpose {purpose!r} must be lower-case words joined by '/' (at most 64 characters)"
        )
    return purpose
