"""Sharing documents (IHE MHD): find and retrieve, each through the authorization engine;
publishing (ITI-65) and the author's later acts are `DocumentService.publisher`
(`carevault.services.document_publication`), over the same vault, matrix and store.

Retrieval (ITI-68) is decided once, by the gate, on the document's own facts as `load` read
them (`PermittedRead`); `retrieve` opens the sealed bytes and checks CareVault's SHA-256 before
serving a single byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import (
    DocumentCriteria,
    DocumentStore,
    StoredContent,
    StoredDocument,
    sealed_parts,
)
from carevault.domain.audit import ACTION_READ, Agent, AuditRecord, rfc3339_ms
from carevault.domain.authorization import (
    Action,
    Confidentiality,
    Decision,
    DocumentFacts,
    DocumentFilter,
    ProfileMatrix,
    RecordFacts,
    Subject,
    decide,
    visible_filter,
)
from carevault.domain.documents import (
    DocumentMetadata,
    sha256_hex,
)
from carevault.domain.errors import (
    IntegrityFailure,
    NotFound,
)
from carevault.services.document_publication import (
    CONTENT,
    DEFAULT_LIMITS,
    TEXT,
    AffinityCodes,
    AuditAppender,
    ContentVault,
    DocumentLimits,
    DocumentPublisher,
)
from carevault.services.record_policy import Refused
from carevault.services.unit_of_work import UnitOfWork

# Every document of a record, whatever the engine lets anyone see of it.
_EVERY_DOCUMENT = DocumentFilter(
    confidentiality=frozenset(Confidentiality),
    classes=None,
    include_hidden=True,
    include_not_yet_visible=True,
)


@dataclass(frozen=True)
class LoadedDocument:
    """One stored document, read once: in the gate's transaction, so that the engine decides
    on its ``facts`` and the handler serves what was decided on, without reading it again.
    ``content`` is its content's row when it was read for a retrieval (``with_content``; None
    then means there is no row)."""

    stored: StoredDocument
    facts: DocumentFacts
    content: StoredContent | None = None
    with_content: bool = False


@dataclass(frozen=True)
class PermittedRead:
    """The engine's permit to read one loaded document of one record, as the gate decided it
    (once, on ``document.facts``): `DocumentService.describe` and `retrieve` serve it without
    deciding again."""

    record: RecordFacts
    decision: Decision
    document: LoadedDocument


@dataclass(frozen=True)
class SubmissionSet:
    """A stored SubmissionSet (its row) and, in submission order, the documents of it the
    caller may see."""

    row: dict[str, Any]
    document_ids: list[str]


@dataclass(frozen=True)
class Retrieved:
    metadata: DocumentMetadata
    content: bytes


class DocumentService:
    def __init__(
        self,
        vault: ContentVault,
        affinity: AffinityCodes,
        audit: AuditAppender,
        *,
        clock: Callable[[], datetime],
        matrix: ProfileMatrix,
        limits: DocumentLimits = DEFAULT_LIMITS,
        blobs: FileBlobStore | None = None,
    ) -> None:
        self.vault = vault
        self.affinity = affinity
        self.audit = audit
        self.clock = clock
        self.matrix = matrix
        self.blobs = blobs
        # One clock for both halves: the publisher reads the service's, whoever sets it.
        self.publisher = DocumentPublisher(
            vault, affinity, clock=lambda: self.clock(), matrix=matrix, limits=limits, blobs=blobs
        )

    def _store(self, uow: UnitOfWork) -> DocumentStore:
        return uow.documents.with_blobs(self.blobs)

    def sweep_orphans(self, units: Callable[[], UnitOfWork], older_than: float = 3600.0) -> int:
        """Delete content files that no committed row references (a submission that failed
        after writing its file); only files older than any transaction can be."""
        if self.blobs is None:
            return 0
        candidates = list(self.blobs.older_than(older_than))
        removed = 0
        for start in range(0, len(candidates), 500):
            batch = candidates[start : start + 500]
            with units() as uow:
                kept = self._store(uow).referenced(batch)
            for document_id in batch:
                if document_id not in kept:
                    self.blobs.delete(document_id)
                    removed += 1
        return removed

    # --- ITI-67 / ITI-68 --------------------------------------------------------------------

    def find(
        self,
        uow: UnitOfWork,
        subject: Subject,
        record: RecordFacts,
        criteria: DocumentCriteria,
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[DocumentMetadata]]:
        visible = visible_filter(subject, record, self.clock(), self.matrix)
        total, found = self._store(uow).search(
            record.patient_id, visible, criteria, offset=offset, count=count
        )
        return total, [self._with_text(stored) for stored in found]

    def not_visible(self, uow: UnitOfWork, subject: Subject, record: RecordFacts) -> int:
        """How many current documents of the record the subject does not see (signatures not
        counted): what a professional whom the engine lets search the record may be told, so
        that they ask the patient rather than believe the record complete."""
        store = self._store(uow)
        visible = visible_filter(subject, record, self.clock(), self.matrix)
        every = store.count_current(record.patient_id, _EVERY_DOCUMENT)
        return every - store.count_current(record.patient_id, visible)

    def listing(
        self, units: Callable[[], UnitOfWork], subject: Subject, patient_id: str, count: int = 200
    ) -> list[DocumentMetadata]:
        """The documents of a record the subject sees (the patient's "my documents": the
        engine's search on the record, then its filter), newest first."""
        now = self.clock()
        with units() as uow:
            record = uow.records.load(patient_id, now)
            decision = decide(subject, Action.SEARCH, record, None, now, self.matrix)
            if not decision.permit or record is None:
                raise Refused(decision)
            _total, found = self.find(
                uow, subject, record, DocumentCriteria(), offset=0, count=count
            )
        return sorted(found, key=lambda m: m.indexed, reverse=True)

    def everything(
        self,
        units: Callable[[], UnitOfWork],
        subject: Subject,
        record: RecordFacts,
        step: int = 100,
    ) -> Iterator[Retrieved]:
        """Every document the subject sees, with its content checked and decrypted: the export
        of a record. The list is read ``step`` documents at a time, each content in a short
        transaction of its own as it is yielded, so that one document's content is held at a
        time (a hundred of 20 MB each, read together, were 2 GB in memory)."""
        offset = 0
        while True:
            with units() as uow:
                total, found = self.find(
                    uow, subject, record, DocumentCriteria(), offset=offset, count=step
                )
            for metadata in found:
                with units() as uow:
                    one = self.load(uow, metadata.id, with_content=True)
                if one is not None:
                    yield replace(self.open(subject, record, one), metadata=metadata)
            offset += len(found)
            if not found or offset >= total:
                return

    def submission_sets(
        self,
        uow: UnitOfWork,
        subject: Subject,
        record: RecordFacts,
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[SubmissionSet]]:
        """ITI-66: the SubmissionSets of which the caller sees at least one document, each
        with the documents they see; the total counts those only."""
        visible = visible_filter(subject, record, self.clock(), self.matrix)
        store = self._store(uow)
        total, rows = store.submission_sets(record.patient_id, visible, offset=offset, count=count)
        shown = store.visible_among(
            record.patient_id, visible, [i for row in rows for i in row["document_ids"]]
        )
        return total, [_listing(row, shown) for row in rows]

    def submission_set(
        self, uow: UnitOfWork, subject: Subject, record: RecordFacts, set_id: str
    ) -> SubmissionSet:
        """One SubmissionSet, if the caller sees one of its documents: otherwise it is not
        known to them, as it would not be listed."""
        store = self._store(uow)
        row = store.submission_set(set_id)
        if row is not None and row["patient_id"] == record.patient_id:
            visible = visible_filter(subject, record, self.clock(), self.matrix)
            listing = _listing(
                row, store.visible_among(record.patient_id, visible, row["document_ids"])
            )
            if listing.document_ids:
                return listing
        raise NotFound(f"List/{set_id} is not known")

    def read(
        self, uow: UnitOfWork, subject: Subject, record: RecordFacts, document_id: str
    ) -> DocumentMetadata:
        """One document's metadata, decided here (after a write changed it: the gate's
        snapshot is then out of date)."""
        stored = self._permitted(uow, subject, record, document_id)
        return self._with_text(stored)

    def load(
        self, uow: UnitOfWork, document_id: str, *, with_content: bool = False
    ) -> LoadedDocument | None:
        """A document, and with ``with_content`` its content's row in the same statement: the
        gate reads it to decide and hands it to ``describe`` or ``retrieve``, so that a read
        reads the database once and the engine decides once."""
        store = self._store(uow)
        if with_content:
            found = store.get_with_content(document_id)
            if found is None:
                return None
            stored, content = found
            return LoadedDocument(stored, stored.metadata.facts(), content, with_content=True)
        one = store.get(document_id)
        return None if one is None else LoadedDocument(one, one.metadata.facts())

    def describe(self, read: PermittedRead) -> DocumentMetadata:
        """ITI-67 read: the permitted document's metadata, its free text opened."""
        return self._with_text(_admitted(read))

    def retrieve(self, read: PermittedRead) -> Retrieved:
        """ITI-68: the permitted document's exact bytes (see `_open`)."""
        loaded = read.document
        if not loaded.with_content:
            raise ValueError("a retrieval needs the document loaded with its content")
        return self._open(_admitted(read), loaded.content)

    def open(self, subject: Subject, record: RecordFacts, loaded: LoadedDocument) -> Retrieved:
        """The exact bytes of a document loaded with its content, decided here (the export,
        which finds the documents itself)."""
        stored = self._check_permitted(loaded.stored, subject, record, loaded.stored.metadata.id)
        return self._open(stored, loaded.content)

    def open_with_text(
        self, subject: Subject, record: RecordFacts, loaded: LoadedDocument
    ) -> tuple[Retrieved, DocumentMetadata]:
        """`open`, and the metadata with its free text opened, decided once: the workspace's
        reading page shows the bytes under the title the author gave."""
        stored = self._check_permitted(loaded.stored, subject, record, loaded.stored.metadata.id)
        return self._open(stored, loaded.content), self._with_text(stored)

    def _open(self, stored: StoredDocument, content_row: StoredContent | None) -> Retrieved:
        """The bytes, after the integrity checks; a failed check alerts the security officer
        (outside any transaction, so that the alert never waits on it)."""
        document_id = stored.metadata.id
        sealed = None if content_row is None else sealed_parts(document_id, content_row, self.blobs)
        problem = None
        content = b""
        if sealed is None:
            problem = "the content is missing"
        else:
            try:
                content = self.vault.open(
                    sealed, document_id=document_id, version=1, purpose=CONTENT
                )
            except IntegrityFailure:
                problem = "the content does not decrypt"
        if problem is None and (
            sha256_hex(content) != stored.metadata.sha256 or len(content) != stored.metadata.size
        ):
            problem = "the content does not match its hash"
        if problem is not None:
            raise self._integrity(stored.metadata, problem)
        return Retrieved(stored.metadata, content)

    def _permitted(
        self, uow: UnitOfWork, subject: Subject, record: RecordFacts, document_id: str
    ) -> StoredDocument:
        return self._check_permitted(
            self._store(uow).of_patient(record.patient_id, document_id),
            subject,
            record,
            document_id,
        )

    def _check_permitted(
        self,
        stored: StoredDocument | None,
        subject: Subject,
        record: RecordFacts,
        document_id: str,
    ) -> StoredDocument:
        if stored is None or stored.metadata.patient_id != record.patient_id:
            raise NotFound(f"DocumentReference/{document_id} is not known")
        decision = decide(
            subject, Action.READ, record, stored.metadata.facts(), self.clock(), self.matrix
        )
        if not decision.permit:
            raise Refused(decision)
        return stored

    def _with_text(self, stored: StoredDocument) -> DocumentMetadata:
        if stored.sealed_text is None:
            return stored.metadata
        try:
            text = json.loads(
                self.vault.open(
                    stored.sealed_text,
                    document_id=stored.metadata.id,
                    version=1,
                    purpose=TEXT,
                )
            )
        except IntegrityFailure:
            return stored.metadata  # metadata stays usable; the content check will alert
        return replace(
            stored.metadata, title=text.get("title"), description=text.get("description")
        )

    def _integrity(self, metadata: DocumentMetadata, what: str) -> IntegrityFailure:
        """Alert the security officer (an entry of its own) and refuse."""
        record = AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(self.clock()),
            kind="alert",
            action=ACTION_READ,
            interaction="integrity-check",
            outcome="8",
            agent=Agent(who="CareVault"),
            patient=metadata.patient_id,
            entity_type="DocumentReference",
            entity_id=metadata.id,
            detail={"problem": what, "decision": "deny"},
        )
        self.audit.append([record])
        return IntegrityFailure(
            "the stored document failed its integrity check and was not served; the security "
            "officer has been alerted"
        )


def _admitted(read: PermittedRead) -> StoredDocument:
    """The permitted document, once the permit is one: a read of this record's document that
    the engine permitted (a handler cannot serve what the gate refused)."""
    stored = read.document.stored
    if not read.decision.permit or stored.metadata.patient_id != read.record.patient_id:
        raise NotFound(f"DocumentReference/{stored.metadata.id} is not known")
    return stored


def _listing(row: dict[str, Any], visible: set[str]) -> SubmissionSet:
    return SubmissionSet(row, [i for i in row["document_ids"] if i in visible])
