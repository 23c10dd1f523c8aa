"""Which process runs the background chores: a lease held on the database.

CareVault may serve from several processes (``carevault serve --workers N``) and hosts. Every
process answers requests and appends to the audit log, but the chores - signing tree heads,
releasing held documents, sweeping orphan blobs, time-stamping, exporting to the ATNA
repository - must run in one process only: two ATNA exporters reading the same cursor would
deliver every entry twice.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection kept
  open for as long as the lease is held. It spans hosts, and the server releases it when the
  holder's connection ends, so a crashed holder's lease passes to another process.
- SQLite (one host by nature): an exclusive ``flock`` on a file beside the database, released
  by the kernel when the holding process ends. An in-memory database has no other process to
  share with: the lease is always granted.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

# The advisory lock's key: any 64-bit number CareVault uses for nothing else ("CVCHORES").
CHORES_LOCK_KEY = 0x4356_4348_4F52_4553


class Lease(Protocol):
    def alive(self) -> bool:
        """Whether the lease is still held (a lost database session loses it)."""
        ...

    def release(self) -> None: ...


def try_chores_lease(engine: Engine) -> Lease | None:
    """The chores lease if no other process holds it, else None."""
    if engine.dialect.name == "postgresql":
        return _AdvisoryLease.try_acquire(engine)
    database = engine.url.database
    if not database or database == ":memory:":
        return _Granted()
    return _FileLease.try_acquire(Path(database).with_name(Path(database).name + ".chores"))


class _Granted:
    def alive(self) -> bool:
        return True

    def release(self) -> None:
        return None


class _AdvisoryLease:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @classmethod
    def try_acquire(cls, engine: Engine) -> _AdvisoryLease | None:
        try:
            connection = engine.connect()
        except SQLAlchemyError:
            return None  # the database is unreachable: ask again later
        try:
            held = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": CHORES_LOCK_KEY}
            ).scalar_one()
            connection.commit()  # the lock is the session's, not the transaction's
        except SQLAlchemyError:
            connection.close()
            return None
        if not held:
            connection.close()
            return None
        return cls(connection)

    def alive(self) -> bool:
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
        except SQLAlchemyError:
            return False
        return True

    def release(self) -> None:
        try:
            self._connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": CHORES_LOCK_KEY}
            )
            self._connection.commit()
        except SQLAlchemyError:
            pass  # the session is gone, and the lock with it
        finally:
            self._connection.close()


class _FileLease:
    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def try_acquire(cls, path: Path) -> _FileLease | None:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None  # the folder is unreachable: ask again later
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        return cls(descriptor)

    def alive(self) -> bool:
        return self._descriptor is not None

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor drops the lock
            self._descriptor = None
