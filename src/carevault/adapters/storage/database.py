"""Connecting to the database and bringing its schema up to date.

SQLite is the embedded default; it gets WAL (readers do not block the writer), foreign keys
(off by default in SQLite) and a busy timeout so that concurrent requests wait instead of
failing. Schema changes go through Alembic only, for both backends.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

MIGRATIONS = Path(__file__).with_name("migrations")

# What the database (or the driver between) raises when it refuses an operation; the commands
# say it in words (`database_refusal`) instead of a stack trace.
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError,)


def database_refusal(error: Exception) -> str:
    """The first line of the database's own reason (the driver's message, not SQLAlchemy's
    wrapping with the statement), at most 300 characters: a statement's parameters may hold
    what a log must not."""
    reason = str(error.orig if isinstance(error, DBAPIError) else error).splitlines()
    return (reason[0] if reason else type(error).__name__)[:300]


# A database that is there again in a moment: the server went away under a connection or
# refuses new ones (a failover, a restart), the pool waited in vain for a connection, the
# server cancelled a statement (a deadlock, a serialization failure, a standby's recovery
# conflict), or a primary became read-only under its sessions (25006, being demoted). Each
# is answered 503 with "send the same request again", never as an incident.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
READ_ONLY_TRANSACTION = "25006"


def lost_database(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the database is unavailable
    for the moment rather than that a request or the code is wrong (`_TRANSIENT`)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT):
            return True
        if getattr(current, "sqlstate", None) == READ_ONLY_TRANSACTION:
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def connect(url: str, pool_size: int = 10) -> Engine:
    """An engine for ``url``; for a file SQLite database, its folder and the file are created
    private (see `create_private_database`). A server gives ``pool_size`` at least its request
    threads: connections beyond the pool are opened and closed for every use, which costs
    PostgreSQL a backend start each time. A failed statement's error never quotes its
    parameters (``hide_parameters``): they are patients' identifiers and names, and such an
    error can reach a log line or a traceback."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            create_private_database(Path(parsed.database))
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling would delay BEGIN; take it over so that a
        # transaction starts where SQLAlchemy says it does.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max(pool_size // 2, 4),
        hide_parameters=True,
    )
    event.listen(engine, "checkout", _still_open)
    event.listen(engine, "before_cursor_execute", _note_write)
    return engine


def _still_open(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool check-out: refuse a connection the server has left, without a round trip.

    An idle connection has nothing to read unless its server closed it or spoke unasked: a
    restart or a failover (the backends exit and their sockets close), or a FATAL
    ``terminating connection`` first. The socket is polled without waiting; anything to read,
    or a connection libpq already knows broken, makes SQLAlchemy discard it and check out
    another (`DisconnectionError`). This replaces ``pool_pre_ping``, a ``;`` sent and awaited
    at every check-out, which cost a round trip per unit of work (every request opens one or
    more). A server that vanished without closing anything (a host cut off) is found by the
    first statement instead, as it would have been by the ping, and that request is answered
    503 (`lost_database`). A connection handed out has written nothing yet (`_note_write`)."""
    record.info.pop(WROTE, None)
    pgconn = dbapi_connection.pgconn
    if dbapi_connection.closed or pgconn.status != psycopg.pq.ConnStatus.OK:
        raise DisconnectionError("the connection is closed")
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection or spoke unasked")


# ``Connection.info`` key: the transaction under way sent something other than a SELECT.
WROTE = "carevault.wrote"


def _note_write(
    connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    """Mark the transaction as one that may have written: every statement but a SELECT
    (SQLAlchemy writes each read as one) counts, a ``WITH`` or a savepoint too. A transaction
    left unmarked ends with COMMIT instead of ROLLBACK (`ends_as_read`): it changes nothing,
    and psycopg forgets every prepared statement of the connection at a ROLLBACK."""
    if not statement.startswith("SELECT "):
        connection.info[WROTE] = True


def ends_as_read(connection: Connection) -> bool:
    """Whether a COMMIT ends the connection's transaction as a ROLLBACK would, and so is the
    better end (psycopg keeps its prepared statements): PostgreSQL, nothing but SELECTs sent
    since the check-out (`_note_write`), and not aborted by a failed statement a caller
    caught. Used wherever a transaction that only read is ended: the units of work, the audit
    log's reads."""
    if connection.dialect.name != "postgresql" or connection.info.get(WROTE):
        return False
    driver = connection.connection.driver_connection
    return driver is not None and driver.info.transaction_status is TransactionStatus.INTRANS


@functools.cache
def shared_engine(url: str) -> Engine:
    """One engine per database for the life of the process: the command line's steps share
    its pool instead of opening one each (`shared_engine.cache_clear` forgets them)."""
    return connect(url)


def create_private_database(path: Path) -> None:
    """Create a SQLite database's folder (0700) and its file (0600), whatever the umask, if
    they do not exist yet: they hold every record. SQLite gives the ``-wal`` and ``-shm`` files
    the database file's mode. An existing folder or file keeps its mode (it is the operator's
    choice)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):  # an empty file is an empty SQLite database
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; running it again is a no-op."""
    command.upgrade(alembic_config(engine), revision)
