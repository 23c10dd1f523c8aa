"""The audit log's own way to its tables, beside the units of work.

Most audit entries are written inside a unit of work (`SqlUnitOfWork.audit`: a change and its
record commit together). The rest of the log's work runs outside any use case's transaction:
the group-commit writer's batches, the signing of tree heads, proofs, the verifier's and the
exporter's reads. `AuditDatabase` gives each of those a short transaction of its own through an
`AuditStore`, and `WriterConnection` keeps the group-commit writer's one long-lived connection,
so that no SQLAlchemy connection or exception leaves the storage adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from carevault.adapters.storage.audit_store import AuditStore, PendingEntry
from carevault.adapters.storage.database import ends_as_read
from carevault.domain.errors import Conflict


class AuditDatabase:
    """Short transactions on the audit tables, each on a pooled connection of its own (so a
    long verification or export holds none open between its reads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def reading(self) -> Iterator[AuditStore]:
        """A transaction that only reads, ended as a unit of work ends one (`ends_as_read`):
        a page of history, a proof, a tree head each keep the connection's prepared statements."""
        with self.engine.connect() as connection:
            yield AuditStore(connection)
            if connection.in_transaction() and ends_as_read(connection):
                connection.commit()

    @contextmanager
    def writing(self) -> Iterator[AuditStore]:
        """One transaction, committed when the block ends; a row another writer stored first
        (the same tree head signed twice) is a `Conflict`."""
        try:
            with self.engine.begin() as connection:
                yield AuditStore(connection)
        except IntegrityError as error:
            raise Conflict("another writer stored this first") from error

    def writer(self) -> WriterConnection:
        return WriterConnection(self.engine)


class WriterConnection:
    """The group-commit writer's connection, kept between batches: no pool check-out (nor its
    pre-ping, a round trip) per group commit.

    Idling between batches, it is the first to learn that the database went away meanwhile (a
    failover, a restart): when it is found dead before the commit was sent, nothing of the
    batch was committed, and the batch is written once more on a new connection instead of
    failing requests after the database is back. A failure of the commit itself leaves the
    outcome unknown: never retried, raised."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def append(self, entries: Mapping[str, Sequence[PendingEntry]]) -> dict[str, int]:
        """Append each stream's entries in one transaction; the first index of each stream."""
        for attempt in (1, 2):
            connection = self._connected()
            firsts: dict[str, int] = {}
            try:
                transaction = connection.begin()
                store = AuditStore(connection)
                for stream, pending in entries.items():
                    if pending:
                        firsts[stream], _size = store.append(stream, list(pending))
            except Exception as error:
                _roll_back(connection)
                if attempt == 1 and isinstance(error, DBAPIError) and error.connection_invalidated:
                    continue  # stale: it died while idle (`_connected` replaces it)
                raise
            try:
                transaction.commit()
            except Exception:
                _roll_back(connection)
                raise
            return firsts
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _connected(self) -> Connection:
        """The kept connection, or a new one if it was lost (the lost one given back)."""
        connection = self._connection
        if connection is not None and not connection.invalidated and not connection.closed:
            return connection
        if connection is not None and not connection.closed:
            connection.close()
        self._connection = None
        self._connection = self._engine.connect()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _roll_back(connection: Connection) -> None:
    """End a failed transaction; on a lost connection there is nothing left to end."""
    try:
        if connection.in_transaction():
            connection.rollback()
    except Exception:  # the connection is gone: the server ended the transaction
        connection.invalidate()
