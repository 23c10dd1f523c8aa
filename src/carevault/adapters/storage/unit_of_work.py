"""One database transaction per use case.

A use case opens a unit of work, reads and writes through its stores, and calls `commit`;
leaving the block any other way rolls everything back, so a failure at any point leaves the old
state. A constraint violation the service did not foresee (two requests racing to register the
same identifier) becomes a `Conflict` rather than a server error.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError

from carevault.adapters.storage.account_store import AccountStore
from carevault.adapters.storage.alert_store import AlertStore
from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.authority_store import AuthorityStore, PresenceCodeStore
from carevault.adapters.storage.database import ends_as_read, lost_database
from carevault.adapters.storage.directory_store import DirectoryStore
from carevault.adapters.storage.document_store import DocumentStore
from carevault.adapters.storage.oauth_store import AppStore, OAuthStore
from carevault.adapters.storage.passkey_store import PasskeyStore
from carevault.adapters.storage.pki_store import PkiStore
from carevault.adapters.storage.portal_store import InvitationStore, SessionStore
from carevault.adapters.storage.prescription_store import PrescriptionStore
from carevault.adapters.storage.record_store import RecordStore
from carevault.domain.audit import Written
from carevault.domain.authorization import RecordModel
from carevault.domain.errors import (
    SEND_AGAIN,
    CareVaultError,
    Conflict,
    InvalidInput,
    Unavailable,
)

BeforeCommit = Callable[[AuditStore, Written], None]


class SqlUnitOfWork:
    """``before_commit`` runs inside the transaction just before it commits, with the
    transaction's audit store and what the transaction wrote (`Written`): the audit log uses it
    to record a change atomically with the change. ``record_model`` (opt-in or opt-out) tells
    the record store whether a patient without a stored record has one.

    A ``read_only`` unit of work (the door's gate: authentication and the facts of a decision)
    runs a PostgreSQL ``READ ONLY`` transaction and ends it with a commit, which for such a
    transaction changes nothing. The reason is speed: psycopg forgets its prepared statements
    at every ROLLBACK, so read-only requests ending in one would have every statement planned
    again, every time. (On SQLite the option changes nothing.) For the same reason, on
    PostgreSQL, any unit of work left without `commit` and without an error whose transaction
    sent only SELECTs (`carevault.adapters.storage.database.ends_as_read`) ends with a
    COMMIT too: the pages and services that only read keep their statements prepared. One that
    sent anything else is rolled back, as ever.

    It satisfies the port `carevault.services.unit_of_work.UnitOfWork`: its stores are built
    on the transaction's connection in ``__enter__``."""

    def __init__(
        self,
        engine: Engine,
        before_commit: BeforeCommit | None = None,
        record_model: RecordModel = RecordModel.OPT_OUT,
        *,
        read_only: bool = False,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        self._before_commit = before_commit
        self._record_model = record_model
        self._connection: Connection | None = None

    def __enter__(self) -> Self:
        try:
            self._connection = self._engine.connect()
        except Exception as error:
            if lost_database(error):
                raise Unavailable(
                    f"the database cannot be reached (a failover?): nothing was done; {SEND_AGAIN}"
                ) from error
            raise
        if self._read_only and self._engine.dialect.name == "postgresql":
            self._connection.execution_options(postgresql_readonly=True)
        self._connection.begin()
        self.directory = DirectoryStore(self._connection)
        self.records = RecordStore(self._connection, self._record_model)
        self.authorities = AuthorityStore(self._connection)
        self.presence_codes = PresenceCodeStore(self._connection)
        self.oauth = OAuthStore(self._connection)
        self.accounts = AccountStore(self._connection)
        self.pki = PkiStore(self._connection)
        self.sessions = SessionStore(self._connection)
        self.passkeys = PasskeyStore(self._connection)
        self.invitations = InvitationStore(self._connection)
        self.apps = AppStore(self._connection)
        self.documents = DocumentStore(self._connection)
        self.prescriptions = PrescriptionStore(self._connection)
        self.alerts = AlertStore(self._connection)
        self.audit = AuditStore(self._connection)
        return self

    def commit(self) -> None:
        assert self._connection is not None
        if self._before_commit is not None:
            written = list(self.directory.touched_patients)
            for touched in (self.records.touched_patients, self.prescriptions.touched_patients):
                written += [p for p in touched if p not in written]
            professionals = list(self.directory.touched_professionals)
            self._before_commit(self.audit, Written(written, professionals))
        try:
            self._connection.commit()
        except IntegrityError as error:
            raise Conflict(
                "the change conflicts with stored data (a duplicate identifier?)"
            ) from error
        except Exception as error:
            if not lost_database(error):
                raise
            # The commit may or may not have happened: the client must send the same request
            # again (submissions are idempotent by their unique identifiers).
            raise Unavailable(
                f"the database connection was lost while committing: the outcome is unknown; "
                f"{SEND_AGAIN}"
            ) from error

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        try:
            if (
                error is None
                and self._connection.in_transaction()
                and (self._read_only or ends_as_read(self._connection))
            ):
                self._connection.commit()  # nothing to commit: keeps the prepared statements
            else:
                self._connection.rollback()
        finally:
            self._connection.close()
            self._connection = None
        if isinstance(error, IntegrityError):
            raise Conflict(
                "the change conflicts with stored data (a duplicate identifier?)"
            ) from error
        if isinstance(error, DataError):
            # The database refused a value the checks before it let through (longer than its
            # column, a NUL character, a number out of range): nothing was stored, and it is
            # the request's fault, not an incident.
            raise InvalidInput(
                "a value cannot be stored: longer than allowed, out of range, or holding a "
                "NUL character; nothing was stored"
            ) from error
        if error is not None and not isinstance(error, CareVaultError) and lost_database(error):
            # A lost connection (a failover, a restart): answered 503, not as an incident.
            raise Unavailable(
                f"the database connection was lost (a failover?): nothing was stored; {SEND_AGAIN}"
            ) from error
