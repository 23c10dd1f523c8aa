"""Per-recipient Maildirs: where accepted (encrypted) messages are delivered.

A mailbox is ``ROOT/<local part>/Maildir`` (``cur``, ``new``, ``tmp``), the layout Dovecot
reads with ``mail_location = maildir:ROOT/%n/Maildir``. A message is written and synced in
``tmp``, then renamed into ``new`` (the Maildir protocol): a reader never sees half a message,
and a message answered ``250`` survives a crash. Folders are 0700 and files 0600: the messages
are encrypted, but who writes to whom is nobody else's business either.

The HTTP API reads the same Maildirs (`MaildirBoxes.listing`, `read`, `remove`). A message's id
there is its Maildir unique name without the ``:2,<flags>`` suffix, so that it does not change
when Dovecot moves it from ``new`` to ``cur`` or marks it seen. Deleting removes the file, as
any Maildir reader may; Dovecot sees the file is gone at its next scan.

``owner`` (uid, gid) is the mail user Dovecot reads as. It is used when the deliverer runs as
root, which Dovecot will not serve mail as. Every folder and file is then given to that user
before it becomes visible.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["MaildirBoxes", "StoredMessage"]

_LOCAL = re.compile(r"[a-z0-9][a-z0-9._:\-]{0,63}")
_HOST = re.compile(r"[^A-Za-z0-9.\-]")
# A unique name as this deliverer and Dovecot write them (time, unique part, host, ",S=size"),
# the ":2,flags" suffix aside. Anything else in a Maildir folder is not listed.
MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,=\-]{0,199}")


@dataclass(frozen=True)
class StoredMessage:
    id: str
    size: int
    received: datetime
    seen: bool  # an IMAP client opened it (the Maildir "S" flag)


class MaildirBoxes:
    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner

    def path(self, local_part: str) -> Path:
        if not _LOCAL.fullmatch(local_part) or ".." in local_part:
            raise ValueError(f"{local_part!r} is not a mailbox name")
        return self.root / local_part / "Maildir"

    def _folder(self, path: Path) -> None:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return
        if self.owner is not None:
            os.chown(path, *self.owner)

    def ensure(self, local_part: str) -> Path:
        """The mailbox, created if needed (an empty mailbox can be opened over IMAP)."""
        path = self.path(local_part)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, path.parent, path, path / "cur", path / "new", path / "tmp"):
            self._folder(folder)
        return path

    def deliver(self, local_part: str, message: bytes) -> str:
        """Deliver into ``new``; the message's unique name in the Maildir."""
        path = self.ensure(local_part)
        host = _HOST.sub("_", socket.gethostname())
        name = f"{time.time_ns()}.{secrets.token_hex(8)}.{host},S={len(message)}"
        temporary = path / "tmp" / name
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(message)
                file.flush()
                if self.owner is not None:
                    os.fchown(file.fileno(), *self.owner)
                os.fsync(file.fileno())
            os.rename(temporary, path / "new" / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(path / "new", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return name

    def _files(self, local_part: str) -> Iterator[tuple[str, Path, str]]:
        """(id, path, flags) of each message of a mailbox; nothing if it does not exist."""
        path = self.path(local_part)
        for folder in ("new", "cur"):
            try:
                names = os.listdir(path / folder)
            except FileNotFoundError:
                continue
            for name in names:
                unique, _, info = name.partition(":")
                if MESSAGE_ID.fullmatch(unique):
                    flags = info[2:] if info.startswith("2,") else ""
                    yield unique, path / folder / name, flags

    def listing(self, local_part: str) -> list[StoredMessage]:
        """The messages of a mailbox, oldest first (an absent mailbox is empty)."""
        found = []
        for unique, file, flags in self._files(local_part):
            try:
                status = file.stat()
            except FileNotFoundError:  # moved to cur, or deleted, meanwhile
                continue
            received = datetime.fromtimestamp(status.st_mtime, UTC)
            found.append(StoredMessage(unique, status.st_size, received, "S" in flags))
        if len(found) != len({m.id for m in found}):  # seen twice while Dovecot moved one
            found = list({m.id: m for m in found}.values())
        return sorted(found, key=lambda m: (m.received, m.id))

    def _find(self, local_part: str, message_id: str) -> Path | None:
        if not MESSAGE_ID.fullmatch(message_id):
            return None
        return next((f for u, f, _ in self._files(local_part) if u == message_id), None)

    def read(self, local_part: str, message_id: str) -> bytes | None:
        """A message's bytes exactly as delivered; None if the mailbox holds no such message."""
        for _attempt in range(2):  # Dovecot may move it from new to cur between find and open
            file = self._find(local_part, message_id)
            if file is None:
                return None
            try:
                return file.read_bytes()
            except FileNotFoundError:
                continue
        return None

    def remove(self, local_part: str, message_id: str) -> bool:
        """Delete a message for good; False if the mailbox holds no such message."""
        for _attempt in range(2):
            file = self._find(local_part, message_id)
            if file is None:
                return False
            try:
                file.unlink()
            except FileNotFoundError:
                continue
            return True
        return False
