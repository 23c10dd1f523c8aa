"""Per-recipient Maildirs: where accepted (encrypted) messages are delivered.

A mailbox is ``ROOT/<local part>/Maildir`` (``cur``, ``new``, ``tmp``), the layout Dovecot
reads with ``mail_location = maildir:ROOT/%n/Maildir``. A message is written and synced in
``tmp``, then renamed into ``new`` (the Maildir protocol): a reader never sees half a message,
and a message answered ``250`` survives a crash. Folders are 0700 and files 0600: the messages
are encrypted, but who writes to whom is nobody else's business either.

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
from pathlib import Path

__all__ = ["MaildirBoxes"]

_LOCAL = re.compile(r"[a-z0-9][a-z0-9._:\-]{0,63}")
_HOST = re.compile(r"[^A-Za-z0-9.\-]")


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
