"""In memory, the stores the document services read besides key rotation's: the PKI's
authorities and certificates (services/signatures.py checks an author's chain against them),
the documents a closed record still holds and their purge (services/retention.py), and the
patients' notifications as the mail chore reads them (services/notification_mail.py).

`support.fake_uow.FakeUnitOfWork` builds its ``documents``, ``records`` and ``pki`` from here;
`tests/integration/test_store_contracts_documents.py` runs the same checks on these fakes and on
the real stores (SQLite and PostgreSQL). As in `support.fake_uow`, only what the services call
is faked: anything else fails with AttributeError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carevault.adapters.storage.document_store import SealedParts
from carevault.adapters.storage.record_store import PatientNotification
from support.fake_uow import FakeDocumentKeys, FakeRecords


class FakeDocumentStore(FakeDocumentKeys):
    """Key rotation's view of the sealed parts, and which patient each document belongs to:
    ``owners`` maps a document id to its patient, as the ``document`` table's rows do."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[str, str] = {}

    def holds(self, patient_id: str) -> bool:
        return patient_id in self.owners.values()

    def purge_record(self, patient_id: str) -> list[str]:
        """Every document of the patient, gone with its content and sealed text; their ids,
        in order."""
        ids = sorted(i for i, owner in self.owners.items() if owner == patient_id)
        for document_id in ids:
            del self.owners[document_id]
            self.contents.pop(document_id, None)
            self.texts.pop(document_id, None)
        return ids

    def add_sealed(self, document_id: str, patient_id: str, content: SealedParts,
                   text: SealedParts | None = None) -> None:
        """A stored document's sealed parts, for a test's setting up (the real store's
        ``add`` takes the whole metadata, which these fakes do not keep)."""
        if document_id in self.owners:
            raise KeyError(f"document {document_id} is stored once")
        self.owners[document_id] = patient_id
        self.contents[document_id] = content
        if text is not None:
            self.texts[document_id] = text


@dataclass
class _Record:
    closed: bool
    updated_at: datetime


class FakeRecordStore(FakeRecords):
    """The notifications (`FakeRecords`) with their outbox and the logins of the patients'
    accounts the mail goes to, and each record's state and last change
    (``closed_with_documents``). ``documents`` gives the unit of work's document store, read
    as the real query reads the ``document`` table."""

    def __init__(self, documents: Callable[[], FakeDocumentStore]) -> None:
        super().__init__()
        self.documents = documents  # a function: copied as is when the unit of work rolls back
        self.accounts: list[str | None] = []  # each notification's account, in order
        self.mailed: dict[str, datetime] = {}
        self.logins: dict[str, str] = {}  # patient id -> their patient account's login
        self.records: dict[str, _Record] = {}

    def notify(self, patient_id: str, kind: str, payload: dict[str, Any], now: datetime,
               account_id: str | None = None) -> str:
        self.accounts.append(account_id)
        return super().notify(patient_id, kind, payload, now, account_id)

    def unmailed(self, limit: int) -> list[tuple[PatientNotification, str]]:
        waiting = [
            (PatientNotification(f"notification-{n}", found.patient_id, account, found.kind,
                                 found.created_at, found.payload),
             self.logins[found.patient_id])
            for n, (found, account) in enumerate(zip(self.notifications, self.accounts,
                                                     strict=True), start=1)
            if f"notification-{n}" not in self.mailed and found.patient_id in self.logins
        ]
        waiting.sort(key=lambda pair: (pair[0].created_at, pair[0].id))
        return waiting[:limit]

    def mark_mailed(self, notification_ids: Sequence[str], now: datetime) -> None:
        known = {f"notification-{n}" for n in range(1, len(self.notifications) + 1)}
        for notification_id in set(notification_ids) & known:
            self.mailed[notification_id] = now

    def set_record(self, patient_id: str, *, closed: bool, updated_at: datetime) -> None:
        """A record's state and last change, for a test's setting up."""
        self.records[patient_id] = _Record(closed, updated_at)

    def closed_with_documents(self, closed_before: datetime, limit: int) -> list[str]:
        holding = self.documents()
        found = sorted(
            patient_id for patient_id, record in self.records.items()
            if record.closed and record.updated_at <= closed_before and holding.holds(patient_id)
        )
        return found[:limit]
