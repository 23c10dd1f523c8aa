"""In memory, the stores the document services read besides key rotation's: the documents
themselves as `DocumentStore` keeps them (publish, search under the engine's filter, retrieval
with the content's row, statuses, held documents, SubmissionSets: services/documents.py,
services/preview.py, services/record_export.py), the documents a closed record still holds and
their purge (services/retention.py), and the patients' notifications as the mail chore reads
them (services/notification_mail.py).

`support.fake_uow.FakeUnitOfWork` builds its ``documents`` and ``records`` from here;
`FakeDocumentUnitOfWork` adds the record policy's stores (`support.fake_records`) and the full
directory (`support.fake_directory`), which the document services read too.
`tests/integration/test_store_contracts_documents.py` runs the same checks on these fakes and on
the real stores (SQLite and PostgreSQL). As in `support.fake_uow`, only what the services call
is faked: anything else fails with AttributeError.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import (
    DocumentCriteria,
    NewDocument,
    SealedParts,
    StoredContent,
    StoredDocument,
)
from carevault.adapters.storage.record_store import PatientNotification
from carevault.domain.authorization import (
    Confidentiality,
    DocumentFacts,
    DocumentFilter,
    RecordModel,
)
from carevault.domain.documents import Coding, DocumentMetadata, DocumentStatus
from carevault.domain.errors import Conflict
from support import fake_records
from support.fake_directory import REFUSED, FakeDirectoryStore
from support.fake_uow import FakeDocumentKeys, FakeRecords


def _as_stored(coding: Coding) -> Coding:
    """A coding as the store reads it back from its ``system|code`` column: no display."""
    return Coding(coding.system, coding.code)


def _token(coding: Coding, alternatives: tuple[str, ...]) -> bool:
    """``system|code`` exactly, or a code in any system (the real store's LIKE '%|code')."""
    column = f"{coding.system}|{coding.code}"
    return any(column == v if "|" in v else column.endswith(f"|{v}") for v in alternatives)


def _dates(value: datetime | None, prefix: str, low: datetime, high: datetime) -> bool:
    if value is None:
        return False
    match prefix:
        case "lt":
            return value < low
        case "le":
            return value < high
        case "gt":
            return value >= high
        case "ge":
            return value >= low
        case "ne":
            return value < low or value >= high
    return low <= value < high


def _period(start: datetime | None, end: datetime | None, prefix: str, low: datetime,
            high: datetime) -> bool:
    if prefix in ("ge", "gt"):
        return end is None or end >= (low if prefix == "ge" else high)
    if prefix in ("le", "lt"):
        return start is not None and start < (high if prefix == "le" else low)
    return start is not None and start < high and (end is None or end >= low)


class FakeDocumentStore(FakeDocumentKeys):
    """Key rotation's view of the sealed parts, which patient each document belongs to
    (``owners``, as the ``document`` table's rows), and the documents as `DocumentStore` keeps
    them: ``metadata`` by id (free text left out: it is sealed in ``texts``), each content's
    sealed parts in ``contents`` (``locations``: those whose ciphertext is a file of ``blobs``)
    and the SubmissionSets' rows in ``sets``.

    The database's constraints are kept: a document id or uniqueId stored twice, a
    SubmissionSet's id or uniqueId stored twice is refused with `Conflict` (what the unit of
    work makes of the real store's IntegrityError), and nothing of the statement is written."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[str, str] = {}
        self.metadata: dict[str, DocumentMetadata] = {}
        self.locations: set[str] = set()
        self.sets: dict[str, dict[str, Any]] = {}
        self.blobs: FileBlobStore | None = None

    def with_blobs(self, blobs: FileBlobStore | None) -> FakeDocumentStore:
        """This store (the same rows), writing content to ``blobs``."""
        if blobs is self.blobs:
            return self
        view = copy.copy(self)  # shares every dict: the same transaction
        view.blobs = blobs
        return view

    # --- publishing -----------------------------------------------------------------------

    def identifiers_taken(self, submission_set: str,
                          documents: Sequence[str]) -> tuple[bool, frozenset[str]]:
        wanted = set(documents)
        return (
            any(row["master_identifier"] == submission_set for row in self.sets.values()),
            frozenset(m.master_identifier for m in self.metadata.values()
                      if m.master_identifier in wanted),
        )

    def add(self, documents: Sequence[NewDocument], now: datetime) -> None:
        ids = [d.id for d, _, _ in documents]
        uids = [d.master_identifier for d, _, _ in documents]
        taken = {m.master_identifier for m in self.metadata.values()}
        if (len(set(ids)) != len(ids) or set(ids) & set(self.owners)
                or len(set(uids)) != len(uids) or set(uids) & taken):
            raise Conflict(REFUSED)
        for d, content, text in documents:
            location = self.blobs.write(d.id, content.ciphertext) if self.blobs else None
            self.owners[d.id] = d.patient_id
            self.metadata[d.id] = replace(
                d, title=None, description=None,
                class_code=_as_stored(d.class_code), type_code=_as_stored(d.type_code),
                format_code=_as_stored(d.format_code),
                practice_setting=_as_stored(d.practice_setting),
                facility_type=_as_stored(d.facility_type),
                events=tuple(_as_stored(e) for e in d.events))
            if location is None:
                self.contents[d.id] = content
            else:
                self.contents[d.id] = replace(content, ciphertext=b"")
                self.locations.add(d.id)
            if text is not None:
                self.texts[d.id] = text

    def set_status(self, patient_id: str, document_id: str, status: DocumentStatus) -> bool:
        found = self.metadata.get(document_id)
        if found is None or found.patient_id != patient_id:
            return False
        for i, m in list(self.metadata.items()):
            if i == document_id or (m.signs == document_id and m.patient_id == patient_id):
                self.metadata[i] = replace(m, status=status)
        return True

    def add_submission_set(self, set_id: str, patient_id: str, master_identifier: str,
                           source_id: str, author_id: str | None, document_ids: Sequence[str],
                           now: datetime, details: Mapping[str, Any] | None = None) -> None:
        if set_id in self.sets or any(row["master_identifier"] == master_identifier
                                      for row in self.sets.values()):
            raise Conflict(REFUSED)
        self.sets[set_id] = {
            "id": set_id, "patient_id": patient_id, "master_identifier": master_identifier,
            "source_id": source_id, "author_id": author_id, "submitted_at": now,
            # As the JSON columns store them: read back as new objects.
            "document_ids": json.dumps(list(document_ids)),
            "details": json.dumps(dict(details), ensure_ascii=False) if details else None,
        }

    # --- reading --------------------------------------------------------------------------

    def _stored(self, document_id: str) -> StoredDocument | None:
        found = self.metadata.get(document_id)
        return None if found is None else StoredDocument(found, self.texts.get(document_id))

    def get(self, document_id: str) -> StoredDocument | None:
        return self._stored(document_id)

    def of_patient(self, patient_id: str, document_id: str) -> StoredDocument | None:
        stored = self._stored(document_id)
        return stored if stored is not None and stored.metadata.patient_id == patient_id else None

    def get_with_content(
        self, document_id: str
    ) -> tuple[StoredDocument, StoredContent | None] | None:
        stored = self._stored(document_id)
        if stored is None:
            return None
        sealed = self.contents.get(document_id)
        if sealed is None:
            return stored, None
        ciphertext = None if document_id in self.locations else sealed.ciphertext
        return stored, StoredContent(sealed.kek_id, sealed.wrapped_key, sealed.nonce, ciphertext)

    def referenced(self, document_ids: Sequence[str]) -> set[str]:
        return set(document_ids) & set(self.contents)

    def _visible(self, patient_id: str, visible: DocumentFilter) -> list[DocumentMetadata]:
        if visible.matches_nothing:
            return []
        return [m for m in self.metadata.values()
                if m.patient_id == patient_id and visible.matches(m.facts())]

    def _related(self, m: DocumentMetadata, alternatives: tuple[str, ...]) -> bool:
        named = [self.metadata[i] for i in alternatives if i in self.metadata]
        return (m.replaces in alternatives or m.signs in alternatives
                or any(m.id in (n.replaces, n.signs) for n in named))

    def _meets(self, m: DocumentMetadata, c: DocumentCriteria) -> bool:
        return (
            all(_token(coding, a) for coding, wanted in (
                (m.class_code, c.category), (m.type_code, c.type),
                (m.practice_setting, c.setting), (m.facility_type, c.facility),
                (m.format_code, c.format)) for a in wanted)
            and all(any(_token(e, a) for e in m.events) for a in c.event)
            and all(m.status.value in a for a in c.status)
            and all(m.confidentiality.value in [v.rpartition("|")[2] for v in a]
                    for a in c.security_label)
            and all(m.author_id in a for a in c.author)
            and all(self._related(m, a) for a in c.related)
            and all(_dates(m.indexed, *bounds) for bounds in c.date)
            and all(_period(m.service_start, m.service_end, *bounds) for bounds in c.period)
            and (c.also_visible_to is None or c.also_visible_to.matches(m.facts()))
        )

    def search(self, patient_id: str, visible: DocumentFilter, criteria: DocumentCriteria, *,
               offset: int, count: int) -> tuple[int, list[StoredDocument]]:
        found = [m for m in self._visible(patient_id, visible) if self._meets(m, criteria)]
        found.sort(key=lambda m: m.id)
        found.sort(key=lambda m: m.indexed, reverse=True)  # newest first, then by id
        page = found[offset:offset + count]
        return len(found), [StoredDocument(m, self.texts.get(m.id)) for m in page]

    def count_current(self, patient_id: str, visible: DocumentFilter) -> int:
        return sum(1 for m in self._visible(patient_id, visible)
                   if m.status is DocumentStatus.CURRENT and m.signs is None)

    def patient_authored_usage(self, patient_id: str) -> tuple[int, int]:
        mine = [m for m in self.metadata.values()
                if m.patient_id == patient_id and m.patient_authored]
        return len(mine), sum(m.size for m in mine)

    def visible_among(self, patient_id: str, visible: DocumentFilter,
                      document_ids: Sequence[str]) -> set[str]:
        wanted = set(document_ids)
        return {m.id for m in self._visible(patient_id, visible) if m.id in wanted}

    # --- held documents -------------------------------------------------------------------

    def release(self, patient_id: str, document_id: str) -> bool:
        released = False
        for i, m in list(self.metadata.items()):
            if m.patient_id != patient_id or document_id not in (i, m.signs):
                continue
            released = released or m.not_yet_visible_to_patient
            self.metadata[i] = replace(m, release_at=None, not_yet_visible_to_patient=False)
        return released

    def due_for_release(self, now: datetime, limit: int = 1000) -> list[tuple[str, str]]:
        due = sorted((m for m in self.metadata.values()
                      if m.release_at is not None and m.release_at <= now and m.signs is None),
                     key=lambda m: m.release_at or now)
        return [(m.patient_id, m.id) for m in due[:limit]]

    # --- submission sets ------------------------------------------------------------------

    @staticmethod
    def _set_row(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "document_ids": json.loads(row["document_ids"]),
                "details": json.loads(row["details"]) if row["details"] else {}}

    def submission_set(self, set_id: str) -> dict[str, Any] | None:
        row = self.sets.get(set_id)
        return None if row is None else self._set_row(row)

    def submission_sets(self, patient_id: str, visible: DocumentFilter, *, offset: int,
                        count: int) -> tuple[int, list[dict[str, Any]]]:
        shown = {m.submission_set_id for m in self._visible(patient_id, visible)}
        found = sorted((r for r in self.sets.values()
                        if r["patient_id"] == patient_id and r["id"] in shown),
                       key=lambda r: r["id"])
        found.sort(key=lambda r: r["submitted_at"], reverse=True)
        return len(found), [self._set_row(r) for r in found[offset:offset + count]]

    def holds(self, patient_id: str) -> bool:
        return patient_id in self.owners.values()

    def purge_record(self, patient_id: str) -> list[str]:
        """Every document of the patient, gone with its content and sealed text; their ids,
        in order."""
        ids = sorted(i for i, owner in self.owners.items() if owner == patient_id)
        for document_id in ids:
            del self.owners[document_id]
            self.metadata.pop(document_id, None)
            self.locations.discard(document_id)
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

    def due_for_purge(self, patient_id: str, closed_before: datetime) -> bool:
        return patient_id in self.closed_with_documents(closed_before, len(self.records))


class _LivePatients:
    """The directory's patients as the record store reads them (by id, the resource as
    stored): a view of the directory's table, so that both answer from the same rows."""

    def __init__(self, directory: FakeDirectoryStore) -> None:
        self.directory = directory

    def get(self, patient_id: str, default: Any = None) -> Any:
        row = self.directory.tables["patient"].get(patient_id)
        return default if row is None else json.loads(row.resource)


class FakeDocumentRecords(fake_records.FakeRecordStore):
    """The record policy's record store with what the document services also use: the
    patients written in the transaction (``touched_patients``, new at each block, as the real
    store is new at each ``with``), and a document's facts as the patient manages them (hidden,
    confidentiality), changed with its signatures' in the unit of work's document store
    (``documents`` gives it: the ``document`` table both real stores share)."""

    def __init__(self, model: RecordModel, *, patients: Any, mandates: dict[str, Any],
                 documents: Callable[[], FakeDocumentStore]) -> None:
        super().__init__(model, patients=patients, mandates=mandates)
        self.documents = documents  # a function: copied as is when the unit of work rolls back
        self.touched_patients: list[str] = []

    def _touch(self, patient_id: str) -> None:
        if patient_id not in self.touched_patients:
            self.touched_patients.append(patient_id)

    def document(self, patient_id: str, document_id: str) -> DocumentFacts | None:
        found = self.documents().metadata.get(document_id)
        return None if found is None or found.patient_id != patient_id else found.facts()

    def _update_document(self, patient_id: str, document_id: str, **values: Any) -> bool:
        self._touch(patient_id)
        rows = self.documents().metadata
        found = rows.get(document_id)
        if found is None or found.patient_id != patient_id:
            return False
        for i, m in list(rows.items()):
            if i == document_id or (m.signs == document_id and m.patient_id == patient_id):
                rows[i] = replace(m, **values)
        return True

    def set_document_hidden(self, patient_id: str, document_id: str, hidden: bool) -> bool:
        return self._update_document(patient_id, document_id, hidden=hidden)

    def set_document_confidentiality(self, patient_id: str, document_id: str,
                                     level: Confidentiality) -> bool:
        return self._update_document(patient_id, document_id, confidentiality=level)

    def __deepcopy__(self, memo: dict[int, Any]) -> FakeDocumentRecords:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for name, value in vars(self).items():
            setattr(clone, name, copy.deepcopy(value, memo))
        clone.touched_patients = []
        return clone


class FakeDocumentUnitOfWork(fake_records.FakeRecordUnitOfWork):
    """`FakeRecordUnitOfWork` (the record's facts, grants, blocks, mandates: what the engine
    decides on) with the full directory (`FakeDirectoryStore`: practitioners, roles, care
    teams, as `practitioner_subject` reads them) and the documents (`FakeDocumentStore`). The
    record store reads the directory's patient rows; all the stores are copied together."""

    directory: FakeDirectoryStore  # type: ignore[assignment]
    records: FakeDocumentRecords
    documents: FakeDocumentStore

    def __init__(self, model: RecordModel = RecordModel.OPT_OUT) -> None:
        super().__init__(model)
        self.directory = FakeDirectoryStore()
        self.records = FakeDocumentRecords(model, patients=_LivePatients(self.directory),
                                           mandates=self.accounts.mandates,
                                           documents=lambda: self.documents)
        self.documents = FakeDocumentStore()
        self._committed = self._snapshot()
