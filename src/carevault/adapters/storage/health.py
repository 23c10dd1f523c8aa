"""What the database says about itself: can it take a write now, and how far its standbys are.

Used by ``/health/ready`` and ``/metrics``. The write check opens a read-write transaction that
asks for a transaction id (PostgreSQL: ``txid_current()`` fails on a standby and in a read-only
session; SQLite: ``BEGIN IMMEDIATE`` takes the write lock) and rolls back: nothing is written,
so a probe every second leaves no trace. Replication is read from ``pg_stat_replication`` on a
primary and from the replay position on a standby; SQLite has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class Standby:
    name: str
    state: str  # streaming, catchup…
    sync_state: str  # sync, quorum, potential, async
    replay_lag_seconds: float | None  # None: no lag measured yet (idle primary)


@dataclass(frozen=True)
class DatabaseHealth:
    writable: bool
    role: str  # "primary", "standby" (PostgreSQL) or "embedded" (SQLite)
    standbys: tuple[Standby, ...] = field(default_factory=tuple)
    # On a standby: seconds since the last replayed transaction's commit on the primary.
    replay_delay_seconds: float | None = None
    synchronous_standby_names: str = ""

    @property
    def replication(self) -> str:
        """One word for the readiness answer: none, synchronous, asynchronous, degraded."""
        if self.role == "embedded":
            return "none"
        if self.role == "standby":
            return "standby"
        if any(s.sync_state in ("sync", "quorum") for s in self.standbys):
            return "synchronous"
        if self.synchronous_standby_names:
            # A synchronous standby is configured and none is connected: with strict
            # synchronous mode, commits wait until one is back.
            return "degraded"
        return "asynchronous" if self.standbys else "none"


def database_health(engine: Engine) -> DatabaseHealth:
    """Raises whatever the driver raises when the database cannot be reached."""
    if engine.dialect.name == "sqlite":
        return DatabaseHealth(writable=_sqlite_writable(engine), role="embedded")
    with engine.connect() as connection:
        standby = bool(connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one())
        if standby:
            delay = connection.execute(
                text("SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8")
            ).scalar_one()
            connection.rollback()
            return DatabaseHealth(
                writable=False,
                role="standby",
                replay_delay_seconds=None if delay is None else float(delay),
            )
        names = str(connection.execute(text("SHOW synchronous_standby_names")).scalar_one())
        rows = connection.execute(
            text(
                "SELECT application_name, state, sync_state,"
                " EXTRACT(EPOCH FROM replay_lag)::float8 FROM pg_stat_replication"
            )
        ).all()
        connection.rollback()
        writable = _postgresql_writable(engine)
    return DatabaseHealth(
        writable=writable,
        role="primary",
        standbys=tuple(
            Standby(str(r[0]), str(r[1]), str(r[2]), None if r[3] is None else float(r[3]))
            for r in rows
        ),
        synchronous_standby_names=names,
    )


def _postgresql_writable(engine: Engine) -> bool:
    with engine.connect() as connection:
        try:
            connection.execute(text("SET TRANSACTION READ WRITE"))
            connection.execute(text("SELECT txid_current()"))
            return True
        except Exception:
            return False
        finally:
            connection.rollback()


def _sqlite_writable(engine: Engine) -> bool:
    # A raw connection: BEGIN IMMEDIATE needs the driver's own transaction control; the busy
    # timeout bounds the wait for a writer that holds the lock.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("ROLLBACK")
            return True
        except Exception:
            return False
        finally:
            cursor.close()
    finally:
        raw.close()
