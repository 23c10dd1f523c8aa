"""Writing a new certificate holder's files: ``cert.pem``, ``key.pem`` (0600) and ``chain.pem``.

Each file is created with ``O_EXCL`` and its final mode in one system call, so an existing file
is never overwritten and the private key is never readable by anyone else, not even for a
moment. If any file cannot be created, the ones already written are removed again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from carevault.domain.errors import CareVaultError

CERTIFICATE_FILE = "cert.pem"
KEY_FILE = "key.pem"
CHAIN_FILE = "chain.pem"


class CredentialFilesError(CareVaultError):
    """The holder's files could not be written; none of them was left behind."""


@dataclass(frozen=True)
class CredentialFiles:
    certificate: Path
    key: Path
    chain: Path


def _files(directory: Path) -> CredentialFiles:
    return CredentialFiles(
        directory / CERTIFICATE_FILE, directory / KEY_FILE, directory / CHAIN_FILE
    )


def check_free(directory: Path) -> None:
    """Refuse early a directory that already holds one of the files."""
    files = _files(directory)
    existing = [
        str(p) for p in (files.certificate, files.key, files.chain) if p.exists() or p.is_symlink()
    ]
    if existing:
        raise CredentialFilesError(f"refusing to overwrite {', '.join(existing)}")


def write_credentials(
    directory: Path, certificate_pem: str, key_pem: bytes, chain_pem: str
) -> CredentialFiles:
    check_free(directory)
    files = _files(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise CredentialFilesError(f"cannot create {directory}: {error.strerror}") from None
    written: list[Path] = []
    try:
        for path, data, mode in (
            (files.key, key_pem, 0o600),
            (files.certificate, certificate_pem.encode("ascii"), 0o644),
            (files.chain, chain_pem.encode("ascii"), 0o644),
        ):
            _create(path, data, mode)
            written.append(path)
    except OSError as error:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(error, FileExistsError):
            raise CredentialFilesError(f"refusing to overwrite {error.filename}") from None
        raise CredentialFilesError(
            f"cannot write {error.filename or directory}: {error.strerror}"
        ) from None
    return files


def _create(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
