"""The unit of work as a use case sees it: the port to storage.

Every service, the door's gate and its handlers, and the portal's views type their unit of work
by this protocol. Only the composition root (`carevault.bootstrap`) and the command line build
the storage adapter that satisfies it (`carevault.adapters.storage.unit_of_work.UnitOfWork`, one
database transaction); the services' unit tests hand them `tests/support/fake_uow.FakeUnitOfWork`
(stores in memory) instead. Nothing above the services names the adapter, so the HTTP layer
cannot open a transaction of its own or reach a store the port does not list.

The promise, whatever the implementation: what is read and written between ``__enter__`` and
`commit` is one transaction; leaving the block without `commit` leaves the old state. The
stores are still named by their storage classes (their methods take and return domain values;
no connection or SQLAlchemy object crosses them).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from carevault.adapters.storage.account_store import AccountStore
from carevault.adapters.storage.alert_store import AlertStore
from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.authority_store import AuthorityStore, PresenceCodeStore
from carevault.adapters.storage.directory_store import DirectoryStore
from carevault.adapters.storage.document_store import DocumentStore
from carevault.adapters.storage.oauth_store import AppStore, OAuthStore
from carevault.adapters.storage.passkey_store import PasskeyStore
from carevault.adapters.storage.pki_store import PkiStore
from carevault.adapters.storage.portal_store import InvitationStore, SessionStore
from carevault.adapters.storage.prescription_store import PrescriptionStore
from carevault.adapters.storage.record_store import RecordStore


class UnitOfWork(Protocol):
    """One transaction over every store a use case may need."""

    directory: DirectoryStore
    records: RecordStore
    authorities: AuthorityStore
    presence_codes: PresenceCodeStore
    oauth: OAuthStore
    accounts: AccountStore
    pki: PkiStore
    sessions: SessionStore
    passkeys: PasskeyStore  # the professionals' passkeys and the workspace's challenges
    invitations: InvitationStore
    apps: AppStore
    documents: DocumentStore  # content in the database; `with_blobs` for the filesystem
    prescriptions: PrescriptionStore
    alerts: AlertStore  # the security officer's alerts and the detector's cursor
    audit: AuditStore  # the audit log's entries written in this transaction

    def __enter__(self) -> Self: ...

    def commit(self) -> None:
        """Make everything done in the block durable (the audit entries of the change too)."""
        ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


Units = Callable[[], UnitOfWork]
"""A source of units of work: a use case given one opens its own transaction(s) with it."""
