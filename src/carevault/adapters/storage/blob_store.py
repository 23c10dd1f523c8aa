"""The filesystem backend of the document storage port: sealed content as files.

For large files the database keeps the metadata and the wrapped key, and the ciphertext lives in
a file named by the document id. The file is written (and fsynced, then renamed into place, and
its directory fsynced) *before* the transaction that registers it commits: a crash can leave a
file nobody references, never a row whose file is missing. `sweep_orphans` removes such files
once they are older than any transaction could be.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from carevault.domain.errors import StorageFull

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, document_id: str) -> Path:
        if not _ID.match(document_id) or document_id.startswith("."):
            raise ValueError(f"not a document id: {document_id!r}")
        return self.root / document_id[:2] / document_id

    def write(self, document_id: str, data: bytes) -> str:
        """Store durably; returns the location to keep in the database."""
        final = self._path(document_id)
        temporary = self.root / "tmp" / f"{document_id}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(descriptor, view)
                    view = view[written:]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(
                    "the document store is full: nothing was stored; try again later"
                ) from None
            raise
        os.replace(temporary, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return f"file:{document_id[:2]}/{document_id}"

    def read(self, document_id: str) -> bytes | None:
        try:
            return self._path(document_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, document_id: str) -> None:
        self._path(document_id).unlink(missing_ok=True)

    def older_than(self, seconds: float) -> Iterator[str]:
        """Document ids of stored files (and abandoned temporary files) older than ``seconds``."""
        limit = time.time() - seconds
        for entry in self.root.glob("*/*"):
            if entry.parent.name == "tmp":
                if entry.stat().st_mtime < limit:
                    entry.unlink(missing_ok=True)  # a write that never finished
                continue
            if entry.is_file() and entry.stat().st_mtime < limit and _ID.match(entry.name):
                yield entry.name
