"""Encrypted backup archives: a byte stream cut into AES-256-GCM chunks, the last one marked.

Layout: ``MAGIC`` (8 bytes), a random salt (16 bytes), then chunks, each a 4-byte big-endian
length and its ciphertext. The chunk key is HKDF-SHA256(backup key, salt), so no two archives
share a key and the counter nonce never repeats under one key. Each chunk's associated data
is the header, its index and whether it is the last: a flipped byte, a reordered, dropped or
repeated chunk, and a cut-off archive (no final chunk) are all refused, never half-read.

The backup key is 32 random bytes in a file of its own (``create_backup_key``), kept apart from
the archives it opens, like the platform's key file is kept apart from the data it protects.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"CVBAK01\n"
SALT_BYTES = 16
CHUNK_BYTES = 1024 * 1024
_LENGTH = struct.Struct(">I")
_MAX_CIPHERTEXT = CHUNK_BYTES + 16


class ArchiveError(Exception):
    """The archive is not one of ours, was changed, or is incomplete; or the key is wrong."""


def create_backup_key(path: Path) -> None:
    """A new backup key in ``path`` (0600); refuses to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")


def load_backup_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise ArchiveError(f"{path} must be readable by its owner only (chmod 600)")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError:
        raise ArchiveError(f"{path} is not a backup key") from None
    if len(key) != 32:
        raise ArchiveError(f"{path} is not a backup key")
    return key


def fingerprint(key: bytes) -> str:
    """A short name for a backup key that reveals nothing of it (written in manifests)."""
    derived = HKDF(hashes.SHA256(), 16, salt=None, info=b"carevault backup key id").derive(key)
    return derived.hex()


def _chunk_key(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(hashes.SHA256(), 32, salt=salt, info=b"carevault backup archive v1")
    return AESGCM(derived.derive(key))


def _nonce_and_aad(header: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    counter = struct.pack(">Q", index)
    return b"\0\0\0\0" + counter, header + counter + (b"\1" if final else b"\0")


class ArchiveWriter:
    """A write-only file object: what is written is sealed chunk by chunk into ``out``;
    ``close`` seals the final chunk (an archive without it is refused as incomplete)."""

    def __init__(self, out: BinaryIO, key: bytes) -> None:
        self.out = out
        salt = secrets.token_bytes(SALT_BYTES)
        self.header = MAGIC + salt
        self.aead = _chunk_key(key, salt)
        self.buffer = bytearray()
        self.index = 0
        self.closed = False
        out.write(self.header)

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) > CHUNK_BYTES:
            self._emit(bytes(self.buffer[:CHUNK_BYTES]), final=False)
            del self.buffer[:CHUNK_BYTES]
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if not self.closed:
            self._emit(bytes(self.buffer), final=True)
            self.buffer.clear()
            self.out.flush()
            self.closed = True

    def _emit(self, plaintext: bytes, *, final: bool) -> None:
        nonce, aad = _nonce_and_aad(self.header, self.index, final)
        sealed = self.aead.encrypt(nonce, plaintext, aad)
        self.out.write(_LENGTH.pack(len(sealed)) + sealed)
        self.index += 1


def read_archive(source: BinaryIO, key: bytes) -> Iterator[bytes]:
    """The plaintext, chunk by chunk; raises `ArchiveError` at the first chunk that does not
    open, and after the last if the final chunk never came. Callers must not use what they
    read before the iterator ends without an error."""
    header = source.read(len(MAGIC) + SALT_BYTES)
    if len(header) != len(MAGIC) + SALT_BYTES or not header.startswith(MAGIC):
        raise ArchiveError("this is not a CareVault backup archive")
    aead = _chunk_key(key, header[len(MAGIC) :])
    index = 0
    while True:
        prefix = source.read(_LENGTH.size)
        if len(prefix) < _LENGTH.size:
            raise ArchiveError("the archive is incomplete: it ends before its final chunk")
        (length,) = _LENGTH.unpack(prefix)
        if not 16 <= length <= _MAX_CIPHERTEXT:
            raise ArchiveError(f"chunk {index} has an impossible length: the archive was changed")
        sealed = source.read(length)
        if len(sealed) != length:
            raise ArchiveError("the archive is incomplete: its last chunk is cut off")
        opened = None
        for final in (False, True):
            nonce, aad = _nonce_and_aad(header, index, final)
            try:
                opened = aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            yield opened
            if final:
                if source.read(1):
                    raise ArchiveError("bytes follow the final chunk: the archive was changed")
                return
            break
        if opened is None:
            raise ArchiveError(
                f"chunk {index} does not open: the archive was changed or the key is wrong"
            )
        index += 1
