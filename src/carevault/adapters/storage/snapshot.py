"""A consistent copy of an embedded (SQLite) database while it serves: SQLite's online backup
API copies the pages of one read transaction, so the copy is the database as of one instant,
whatever is written meanwhile (a file copy of a WAL database is not)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import Engine


class NotEmbedded(Exception):
    """The database is not SQLite: PostgreSQL is backed up with pgBackRest."""


def sqlite_path(engine: Engine) -> Path:
    if engine.dialect.name != "sqlite" or not engine.url.database:
        raise NotEmbedded(
            "carevault backup copies the embedded SQLite database; a PostgreSQL database is "
            "backed up with pgBackRest (docs/operations.md)"
        )
    return Path(engine.url.database)


def snapshot(engine: Engine, destination: Path) -> None:
    """Copy the database into ``destination`` (a new file, 0600), fsynced."""
    sqlite_path(engine)
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(descriptor)
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(destination)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        raw.close()
    with open(destination, "rb") as written:
        os.fsync(written.fileno())
