"""SQL storage of shared documents: registry metadata, sealed content and SubmissionSets.

The database is the default backend of the document storage port: the content row is written
in the same transaction as the metadata, so a document is either wholly there or not at all.
Only sealed bytes are stored (``SealedParts``); free text is sealed too. Searches apply the
authorization engine's filter (`carevault.adapters.storage.record_store.filter_clause`) in the
same WHERE clause as the criteria, so hidden documents never leave the database and never count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.record_store import filter_clause
from carevault.adapters.storage.sql import escape_like
from carevault.domain.authorization import Confidentiality, DocumentFilter
from carevault.domain.documents import (
    Coding,
    DocumentMetadata,
    DocumentStatus,
)
from carevault.domain.documents import DocumentCriteria as DocumentCriteria  # re-exported


@dataclass(frozen=True)
class SealedParts:
    """What a sealed content (or sealed free text) is made of; nothing in it is secret."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"SealedParts(kek_id={self.kek_id!r}, {len(self.ciphertext)} bytes)"

    def pack(self) -> bytes:
        """One column's worth: length-prefixed fields (used for sealed free text)."""
        parts = (self.kek_id.encode("ascii"), self.wrapped_key, self.nonce, self.ciphertext)
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)

    @classmethod
    def unpack(cls, data: bytes) -> SealedParts:
        parts: list[bytes] = []
        offset = 0
        for _ in range(4):
            size = int.from_bytes(data[offset : offset + 4], "big")
            parts.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return cls(parts[0].decode("ascii"), parts[1], parts[2], parts[3])


@dataclass(frozen=True)
class StoredDocument:
    """A document's metadata as stored: free text still sealed."""

    metadata: DocumentMetadata  # title and description are None here
    sealed_text: SealedParts | None


@dataclass(frozen=True)
class StoredContent:
    """A content row: the wrapped data key and nonce, and the ciphertext itself (database
    backend) or None (filesystem backend: the blob is read apart)."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes | None


def _code(coding: Coding) -> str:
    return f"{coding.system}|{coding.code}"


def _coding(value: str) -> Coding:
    system, _, code = value.rpartition("|")
    return Coding(system, code)


def _token(column: Any, alternatives: tuple[str, ...]) -> ColumnElement[bool]:
    tests = []
    for value in alternatives:
        if "|" in value:
            tests.append(column == value)
        else:  # a code in any system
            tests.append(column.like(f"%|{escape_like(value)}", escape="\\"))
    return or_(*tests)


def _events(column: Any, alternatives: tuple[str, ...]) -> ColumnElement[bool]:
    """``events`` holds `` system|code `` per event: a code matches in any system, system|code
    exactly."""
    tests = []
    for value in alternatives:
        escaped = escape_like(value)
        pattern = f"% {escaped} %" if "|" in value else f"%|{escaped} %"
        tests.append(column.like(pattern, escape="\\"))
    return or_(*tests)


def _dates(column: Any, prefix: str, low: datetime, high: datetime) -> ColumnElement[bool]:
    match prefix:
        case "lt":
            return and_(column.is_not(None), column < low)
        case "le":
            return and_(column.is_not(None), column < high)
        case "gt":
            return and_(column.is_not(None), column >= high)
        case "ge":
            return and_(column.is_not(None), column >= low)
        case "ne":
            return and_(column.is_not(None), or_(column < low, column >= high))
    return and_(column >= low, column < high)


def _period(
    start: Any, end: Any, prefix: str, low: datetime, high: datetime
) -> ColumnElement[bool]:
    """A date against the service period: eq overlaps the day (or month, year); ge/gt the
    period has not ended before it; le/lt the period started before it."""
    if prefix in ("ge", "gt"):
        bound = low if prefix == "ge" else high
        return or_(end.is_(None), end >= bound)
    if prefix in ("le", "lt"):
        bound = high if prefix == "le" else low
        return and_(start.is_not(None), start < bound)
    return and_(start.is_not(None), start < high, or_(end.is_(None), end >= low))


# A document to store: its metadata, its sealed content, its sealed free text (if any).
NewDocument = tuple[DocumentMetadata, SealedParts, SealedParts | None]


class DocumentStore:
    """``blobs`` is the filesystem backend for content (None: content lives in the database)."""

    def __init__(self, connection: Connection, blobs: FileBlobStore | None = None) -> None:
        self.connection = connection
        self.blobs = blobs

    def with_blobs(self, blobs: FileBlobStore | None) -> DocumentStore:
        """This store, in the same transaction, writing content to ``blobs`` (the document
        service owns the deployment's backend; the unit of work's store has none)."""
        return self if blobs is self.blobs else DocumentStore(self.connection, blobs)

    def identifiers_taken(
        self, submission_set: str, documents: Sequence[str]
    ) -> tuple[bool, frozenset[str]]:
        """Whether a SubmissionSet has this uniqueId already, and which of these documents'
        uniqueIds are taken: one query for a whole submission."""
        rows = self.connection.execute(
            _IDENTIFIERS_TAKEN, {"documents": list(documents), "submission_set": submission_set}
        ).all()
        return (
            any(row.is_set for row in rows),
            frozenset(str(row.taken) for row in rows if not row.is_set),
        )

    def add(self, documents: Sequence[NewDocument], now: datetime) -> None:
        """Insert a submission's documents: one statement per table for all of them."""
        if not documents:
            return
        self.connection.execute(
            _INSERT_DOCUMENT,
            [
                {
                    "id": d.id,
                    "patient_id": d.patient_id,
                    "author_id": d.author_id,
                    "author_organization_id": d.author_organization_id,
                    "class_code": d.engine_class,
                    "type_code": d.type_code.code,
                    "confidentiality": d.confidentiality.value,
                    "hidden": d.hidden,
                    "not_yet_visible": d.not_yet_visible_to_patient,
                    "held_until": d.release_at if d.not_yet_visible_to_patient else None,
                    "created_at": d.indexed,
                }
                for d, _, _ in documents
            ],
        )
        self.connection.execute(
            _INSERT_METADATA,
            [
                {
                    "document_id": d.id,
                    "patient_id": d.patient_id,
                    "status": d.status.value,
                    "master_identifier": d.master_identifier,
                    "xds_class": _code(d.class_code),
                    "xds_type": _code(d.type_code),
                    "format": _code(d.format_code),
                    "practice_setting": _code(d.practice_setting),
                    "facility_type": _code(d.facility_type),
                    "events": "".join(f" {_code(event)} " for event in d.events),
                    "content_type": d.content_type,
                    "size": d.size,
                    "sha256": d.sha256,
                    "sha1": d.sha1,
                    "created": d.created,
                    "service_start": d.service_start,
                    "service_end": d.service_end,
                    "language": d.language,
                    "replaces": d.replaces,
                    "signs": d.signs,
                    "submission_set_id": d.submission_set_id,
                    "patient_authored": d.patient_authored,
                    "release_at": d.release_at,
                    "sealed_text": text.pack() if text is not None else None,
                    "text_kek_id": text.kek_id if text is not None else None,
                }
                for d, _, text in documents
            ],
        )
        contents = []
        for d, content, _ in documents:
            # The file is durable before the row that points to it commits (see blob_store).
            location = self.blobs.write(d.id, content.ciphertext) if self.blobs else None
            contents.append(
                {
                    "document_id": d.id,
                    "patient_id": d.patient_id,
                    "kek_id": content.kek_id,
                    "wrapped_key": content.wrapped_key,
                    "nonce": content.nonce,
                    "ciphertext": content.ciphertext if location is None else None,
                    "location": location,
                    "created_at": now,
                }
            )
        self.connection.execute(_INSERT_CONTENT, contents)

    def set_status(self, patient_id: str, document_id: str, status: DocumentStatus) -> bool:
        """Change a document's status, and its signatures' with it."""
        m = t.document_metadata
        done = self.connection.execute(
            update(m)
            .where(m.c.patient_id == patient_id, m.c.document_id == document_id)
            .values(status=status.value)
        )
        if done.rowcount != 1:
            return False
        self.connection.execute(
            update(m)
            .where(m.c.patient_id == patient_id, m.c.signs == document_id)
            .values(status=status.value)
        )
        return True

    def get(self, document_id: str) -> StoredDocument | None:
        d, m = t.document, t.document_metadata
        row = self.connection.execute(
            select(d, m).join(m, _same_document(m, d)).where(d.c.id == document_id)
        ).first()
        return None if row is None else _stored(row)

    def of_patient(self, patient_id: str, document_id: str) -> StoredDocument | None:
        """``get``, for a caller who knows the patient: the document only if it is theirs,
        found by the patient's key (one shard, once distributed: docs/scaling.md)."""
        d, m = t.document, t.document_metadata
        row = self.connection.execute(
            select(d, m)
            .join(m, _same_document(m, d))
            .where(d.c.patient_id == patient_id, d.c.id == document_id)
        ).first()
        return None if row is None else _stored(row)

    def get_with_content(
        self, document_id: str
    ) -> tuple[StoredDocument, StoredContent | None] | None:
        """``get`` and the content's row in one statement: what a retrieval needs. A blob in
        the filesystem backend is not read here (``sealed`` reads it), so that nothing of a
        large file is read before the engine permitted the read."""
        row = self.connection.execute(_WITH_CONTENT, {"document_id": document_id}).first()
        if row is None:
            return None
        content = None if row.content_kek_id is None else _stored_content(row)
        return _stored(row), content

    def referenced(self, document_ids: Sequence[str]) -> set[str]:
        """Which of these ids have a content row (the others' files are orphans)."""
        c = t.document_content
        rows = self.connection.execute(
            select(c.c.document_id).where(c.c.document_id.in_(list(document_ids)))
        )
        return {row.document_id for row in rows}

    def search(
        self,
        patient_id: str,
        visible: DocumentFilter,
        criteria: DocumentCriteria,
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[StoredDocument]]:
        """Total and one page (newest first), both computed by the database under the
        engine's filter."""
        also = criteria.also_visible_to
        if visible.matches_nothing or (also is not None and also.matches_nothing):
            return 0, []
        d, m = t.document, t.document_metadata
        where: list[ColumnElement[bool]] = [
            d.c.patient_id == patient_id,
            filter_clause(visible),
        ]
        if also is not None:
            where.append(filter_clause(also))
        for column, wanted in (
            (m.c.xds_class, criteria.category),
            (m.c.xds_type, criteria.type),
            (m.c.practice_setting, criteria.setting),
            (m.c.facility_type, criteria.facility),
            (m.c.format, criteria.format),
        ):
            where += [_token(column, alternatives) for alternatives in wanted]
        where += [_events(m.c.events, alternatives) for alternatives in criteria.event]
        where += [m.c.status.in_(alternatives) for alternatives in criteria.status]
        where += [
            d.c.confidentiality.in_([v.rpartition("|")[2] for v in alternatives])
            for alternatives in criteria.security_label
        ]
        where += [d.c.author_id.in_(alternatives) for alternatives in criteria.author]
        where += [
            or_(
                m.c.replaces.in_(alternatives),
                m.c.signs.in_(alternatives),
                d.c.id.in_(
                    select(m.c.replaces).where(
                        m.c.patient_id == patient_id, m.c.document_id.in_(alternatives)
                    )
                ),
                d.c.id.in_(
                    select(m.c.signs).where(
                        m.c.patient_id == patient_id, m.c.document_id.in_(alternatives)
                    )
                ),
            )
            for alternatives in criteria.related
        ]
        where += [_dates(d.c.created_at, *bounds) for bounds in criteria.date]
        where += [
            _period(m.c.service_start, m.c.service_end, *bounds) for bounds in criteria.period
        ]
        joined = d.join(m, _same_document(m, d))
        total = self.connection.execute(select(func.count()).select_from(joined).where(*where))
        rows = self.connection.execute(
            select(d, m)
            .select_from(joined)
            .where(*where)
            .order_by(d.c.created_at.desc(), d.c.id)
            .offset(offset)
            .limit(count)
        )
        return int(total.scalar_one()), [_stored(row) for row in rows]

    def count_current(self, patient_id: str, visible: DocumentFilter) -> int:
        """How many current documents of the record (signatures not counted) the filter lets
        through: the workspace tells a professional how many they do not see."""
        if visible.matches_nothing:
            return 0
        d, m = t.document, t.document_metadata
        found = self.connection.execute(
            select(func.count())
            .select_from(d.join(m, m.c.document_id == d.c.id))
            .where(
                d.c.patient_id == patient_id,
                m.c.status == DocumentStatus.CURRENT.value,
                m.c.signs.is_(None),
                filter_clause(visible),
            )
        )
        return int(found.scalar_one())

    def patient_authored_usage(self, patient_id: str) -> tuple[int, int]:
        """How many documents the patient added to their record themselves, and their bytes
        (every status: a hidden or replaced one still takes its room). The patient's row is
        locked first (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes
        writers already), so that two uploads count one after the other: the quota cannot be
        passed by racing."""
        self.connection.execute(
            select(t.patient.c.id).where(t.patient.c.id == patient_id).with_for_update()
        )
        m = t.document_metadata
        count, size = self.connection.execute(
            select(func.count(), func.coalesce(func.sum(m.c.size), 0)).where(
                m.c.patient_id == patient_id, m.c.patient_authored.is_(True)
            )
        ).one()
        return int(count), int(size)

    def visible_among(
        self, patient_id: str, visible: DocumentFilter, document_ids: Sequence[str]
    ) -> set[str]:
        """Which of these documents the filter lets through."""
        if visible.matches_nothing or not document_ids:
            return set()
        d = t.document
        rows = self.connection.execute(
            select(d.c.id).where(
                d.c.patient_id == patient_id,
                d.c.id.in_(list(document_ids)),
                filter_clause(visible),
            )
        )
        return {row.id for row in rows}

    # --- held documents ---------------------------------------------------------------------

    def release(self, patient_id: str, document_id: str) -> bool:
        """Make a held document visible to the patient now (with its signatures)."""
        d, m = t.document, t.document_metadata
        ids = select(m.c.document_id).where(
            m.c.patient_id == patient_id,
            or_(m.c.document_id == document_id, m.c.signs == document_id),
        )
        self.connection.execute(
            update(m)
            .where(m.c.patient_id == patient_id, m.c.document_id.in_(ids))
            .values(release_at=None)
        )
        done = self.connection.execute(
            update(d)
            .where(d.c.patient_id == patient_id, d.c.id.in_(ids), d.c.not_yet_visible.is_(True))
            .values(not_yet_visible=False, held_until=None)
        )
        return done.rowcount > 0

    def due_for_release(self, now: datetime, limit: int = 1000) -> list[tuple[str, str]]:
        """Held documents whose release time has come: (patient, document)."""
        m = t.document_metadata
        rows = self.connection.execute(
            select(m.c.patient_id, m.c.document_id)
            .where(m.c.release_at.is_not(None), m.c.release_at <= now, m.c.signs.is_(None))
            .order_by(m.c.release_at)
            .limit(limit)
        )
        return [(row.patient_id, row.document_id) for row in rows]

    # --- key rotation -----------------------------------------------------------------------

    def kek_usage(self) -> dict[str, int]:
        """How many sealed items (contents and free texts) each KEK still wraps."""
        c, m = t.document_content, t.document_metadata
        usage: dict[str, int] = {}
        for kek_id, count in self.connection.execute(
            select(c.c.kek_id, func.count()).group_by(c.c.kek_id)
        ):
            usage[kek_id] = usage.get(kek_id, 0) + int(count)
        for kek_id, count in self.connection.execute(
            select(m.c.text_kek_id, func.count())
            .where(m.c.text_kek_id.is_not(None))
            .group_by(m.c.text_kek_id)
        ):
            usage[kek_id] = usage.get(kek_id, 0) + int(count)
        return usage

    def contents_not_under(
        self, kek_id: str, *, after: str, limit: int
    ) -> list[tuple[str, SealedParts]]:
        """Sealed contents wrapped by another KEK, by document id after ``after``: the wrapped
        key only (the ciphertext is not read)."""
        c = t.document_content
        rows = self.connection.execute(
            select(c.c.document_id, c.c.kek_id, c.c.wrapped_key)
            .where(c.c.kek_id != kek_id, c.c.document_id > after)
            .order_by(c.c.document_id)
            .limit(limit)
        )
        return [
            (row.document_id, SealedParts(row.kek_id, bytes(row.wrapped_key), b"", b""))
            for row in rows
        ]

    def purge_record(self, patient_id: str) -> list[str]:
        """Delete every document of a patient: content, metadata and facts rows. The one place
        that deletes a document, called only by the retention job (`services.retention`);
        the caller deletes the blobs of the ids returned once the transaction committed (a
        crash in between leaves orphan files, which the sweep removes, never a document
        without its content)."""
        d, m, c = t.document, t.document_metadata, t.document_content
        ids = [
            row.id
            for row in self.connection.execute(
                select(d.c.id).where(d.c.patient_id == patient_id).order_by(d.c.id)
            )
        ]
        for table in (c, m):
            self.connection.execute(delete(table).where(table.c.patient_id == patient_id))
        self.connection.execute(delete(d).where(d.c.patient_id == patient_id))
        return ids

    def sealed_contents(
        self, *, after: str, limit: int
    ) -> list[tuple[str, str, SealedParts | None]]:
        """(document id, the content's SHA-256 in hex, its sealed parts, None when its blob is
        missing) by id after ``after``: what a restore drill opens, one batch at a time."""
        c, m = t.document_content, t.document_metadata
        rows = self.connection.execute(
            select(c, m.c.sha256)
            .join(m, m.c.document_id == c.c.document_id)
            .where(c.c.document_id > after)
            .order_by(c.c.document_id)
            .limit(limit)
        )
        found: list[tuple[str, str, SealedParts | None]] = []
        for row in rows:
            ciphertext = None if row.location is not None else bytes(row.ciphertext)
            content = StoredContent(
                row.kek_id, bytes(row.wrapped_key), bytes(row.nonce), ciphertext
            )
            found.append(
                (row.document_id, row.sha256, sealed_parts(row.document_id, content, self.blobs))
            )
        return found

    def set_content_key(self, document_id: str, old_kek: str, kek_id: str, wrapped: bytes) -> bool:
        """Swap a content's wrapped key, if no one else did in the meantime."""
        c = t.document_content
        done = self.connection.execute(
            update(c)
            .where(c.c.document_id == document_id, c.c.kek_id == old_kek)
            .values(kek_id=kek_id, wrapped_key=wrapped)
        )
        return done.rowcount == 1

    def texts_not_under(
        self, kek_id: str, *, after: str, limit: int
    ) -> list[tuple[str, SealedParts]]:
        m = t.document_metadata
        rows = self.connection.execute(
            select(m.c.document_id, m.c.sealed_text)
            .where(m.c.text_kek_id.is_not(None), m.c.text_kek_id != kek_id, m.c.document_id > after)
            .order_by(m.c.document_id)
            .limit(limit)
        )
        return [(row.document_id, SealedParts.unpack(bytes(row.sealed_text))) for row in rows]

    def set_text(self, document_id: str, old_kek: str, sealed: SealedParts) -> bool:
        m = t.document_metadata
        done = self.connection.execute(
            update(m)
            .where(m.c.document_id == document_id, m.c.text_kek_id == old_kek)
            .values(sealed_text=sealed.pack(), text_kek_id=sealed.kek_id)
        )
        return done.rowcount == 1

    # --- submission sets --------------------------------------------------------------------

    def add_submission_set(
        self,
        set_id: str,
        patient_id: str,
        master_identifier: str,
        source_id: str,
        author_id: str | None,
        document_ids: Sequence[str],
        now: datetime,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.connection.execute(
            _INSERT_SUBMISSION_SET,
            {
                "id": set_id,
                "patient_id": patient_id,
                "master_identifier": master_identifier,
                "source_id": source_id,
                "author_id": author_id,
                "submitted_at": now,
                "document_ids": json.dumps(list(document_ids)),
                "details": json.dumps(dict(details), ensure_ascii=False) if details else None,
            },
        )

    def submission_set(self, set_id: str) -> dict[str, Any] | None:
        s = t.submission_set
        row = self.connection.execute(select(s).where(s.c.id == set_id)).first()
        if row is None:
            return None
        return _set_row(row)

    def submission_sets(
        self, patient_id: str, visible: DocumentFilter, *, offset: int, count: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """Total and one page (newest first) of the SubmissionSets with at least one document
        the engine's filter lets through: one whose documents are all hidden from the caller
        is neither listed nor counted (its existence would tell what is hidden)."""
        if visible.matches_nothing:
            return 0, []
        s, d, m = t.submission_set, t.document, t.document_metadata
        shown = (
            select(m.c.document_id)
            .join(d, _same_document(m, d))
            .where(m.c.submission_set_id == s.c.id, d.c.patient_id == patient_id)
            .where(filter_clause(visible))
            .exists()
        )
        where = (s.c.patient_id == patient_id, shown)
        total = self.connection.execute(
            select(func.count()).select_from(s).where(*where)
        ).scalar_one()
        rows = self.connection.execute(
            select(s)
            .where(*where)
            .order_by(s.c.submitted_at.desc(), s.c.id)
            .offset(offset)
            .limit(count)
        )
        return int(total), [_set_row(row) for row in rows]


def _same_document(part: Table, d: Table) -> ColumnElement[bool]:
    """The join of a document's metadata or content row to its ``document`` row, on the
    patient key too: a co-located join once the tables are distributed by patient
    (docs/scaling.md); the rows of one document always share their patient."""
    return and_(part.c.document_id == d.c.id, part.c.patient_id == d.c.patient_id)


def _set_row(row: Row[Any]) -> dict[str, Any]:
    """A SubmissionSet row with its JSON columns decoded."""
    return {
        **row._asdict(),
        "document_ids": json.loads(row.document_ids),
        "details": json.loads(row.details) if row.details else {},
    }


_CONTENT_COLUMNS: Final = tuple(
    t.document_content.c[name].label(f"content_{name}")
    for name in ("kek_id", "wrapped_key", "nonce", "ciphertext", "location")
)


# Built once, bound at each execution (building a statement costs more than running it).
_IDENTIFIERS_TAKEN: Final = (
    select(t.document_metadata.c.master_identifier.label("taken"), literal(False).label("is_set"))
    .where(t.document_metadata.c.master_identifier.in_(bindparam("documents", expanding=True)))
    .union_all(
        select(t.submission_set.c.master_identifier, literal(True)).where(
            t.submission_set.c.master_identifier == bindparam("submission_set")
        )
    )
)
_INSERT_DOCUMENT: Final = insert(t.document)
_INSERT_METADATA: Final = insert(t.document_metadata)
_INSERT_CONTENT: Final = insert(t.document_content)
_INSERT_SUBMISSION_SET: Final = insert(t.submission_set)

# Read on every retrieval: built once, bound at each execution.
_WITH_CONTENT: Final = (
    select(t.document, t.document_metadata, *_CONTENT_COLUMNS)
    .join(t.document_metadata, _same_document(t.document_metadata, t.document))
    .outerjoin(t.document_content, _same_document(t.document_content, t.document))
    .where(t.document.c.id == bindparam("document_id"))
)


def sealed_parts(
    document_id: str, content: StoredContent, blobs: FileBlobStore | None
) -> SealedParts | None:
    """The sealed parts of a content row, its blob read if it has one; None when the blob is
    missing (the caller treats that as an integrity failure)."""
    ciphertext = content.ciphertext
    if ciphertext is None:
        ciphertext = blobs.read(document_id) if blobs is not None else None
        if ciphertext is None:
            return None
    return SealedParts(content.kek_id, content.wrapped_key, content.nonce, ciphertext)


def _stored_content(row: Any) -> StoredContent:
    return StoredContent(
        row.content_kek_id,
        bytes(row.content_wrapped_key),
        bytes(row.content_nonce),
        None if row.content_location is not None else bytes(row.content_ciphertext),
    )


def _stored(row: Row[Any]) -> StoredDocument:
    metadata = DocumentMetadata(
        id=row.id,
        patient_id=row.patient_id,
        master_identifier=row.master_identifier,
        status=DocumentStatus(row.status),
        class_code=_coding(row.xds_class),
        type_code=_coding(row.xds_type),
        format_code=_coding(row.format),
        practice_setting=_coding(row.practice_setting),
        facility_type=_coding(row.facility_type),
        events=tuple(_coding(value) for value in row.events.split()),
        confidentiality=Confidentiality(row.confidentiality),
        engine_class=row.class_code,
        author_id=row.author_id,
        author_organization_id=row.author_organization_id,
        content_type=row.content_type,
        size=int(row.size),
        sha256=row.sha256,
        sha1=row.sha1,
        indexed=row.created_at,
        created=row.created,
        service_start=row.service_start,
        service_end=row.service_end,
        language=row.language,
        replaces=row.replaces,
        signs=row.signs,
        submission_set_id=row.submission_set_id,
        patient_authored=bool(row.patient_authored),
        release_at=row.release_at,
        not_yet_visible_to_patient=bool(row.not_yet_visible),
        hidden=bool(row.hidden),
    )
    sealed = SealedParts.unpack(bytes(row.sealed_text)) if row.sealed_text is not None else None
    return StoredDocument(metadata, sealed)
