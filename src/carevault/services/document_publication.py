"""Publishing documents (IHE MHD ITI-65) and the author's later acts on them: releasing a held
document to the patient, marking one entered-in-error, and the chore that releases held
documents when their time has come.

A submission is all-or-nothing: every document is checked (metadata against the affinity
domain, bytes against their declared type, size and hash, the author's detached signature),
decided by the engine as a write of its class, sealed (a fresh data key per document,
AES-256-GCM) and stored in the caller's transaction with the SubmissionSet, the replaced
documents' new status and the patient's notification. A write that names a stored document
(replacing it, marking it entered-in-error, releasing it) is first decided as a read of that
document by the same caller (`require_visible`): nobody changes what they may not see, and the
refusal does not say what the document is.

Reading them is `carevault.services.documents`, whose `DocumentService.publisher` this is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import (
    DocumentStore,
    NewDocument,
    SealedParts,
    StoredDocument,
)
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    Action,
    ProfileMatrix,
    RecordFacts,
    Subject,
    SubjectKind,
    decide,
    stricter,
)
from carevault.domain.documents import (
    DEFAULT_CONTENT_TYPES,
    DEFAULT_MAX_DOCUMENT_BYTES,
    DocumentMetadata,
    DocumentStatus,
    check_content,
    sha256_hex,
)
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from carevault.fhirmodel.mhd import ProvidedDocument, ProvidedSubmission, new_id
from carevault.services.record_policy import Refused, require_visible
from carevault.services.signatures import InvalidSignature, verify_detached
from carevault.services.unit_of_work import UnitOfWork

CONTENT = "content"
TEXT = "text"


class ContentVault(Protocol):
    """Seals and opens bytes bound to one document (its id, version and purpose)."""

    def seal(
        self, plaintext: bytes, *, document_id: str, version: int, purpose: str
    ) -> SealedParts: ...

    def open(
        self, sealed: SealedParts, *, document_id: str, version: int, purpose: str
    ) -> bytes: ...


class AffinityCodes(Protocol):
    def contains(self, valueset: str, system: str, code: str) -> bool: ...

    def engine_class(
        self, class_code: tuple[str, str] | None, type_code: tuple[str, str] | None
    ) -> str | None: ...


class AuditAppender(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> list[int]: ...


@dataclass(frozen=True)
class DocumentLimits:
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    content_types: frozenset[str] = DEFAULT_CONTENT_TYPES
    max_bundle_entries: int = 1000
    release_delay: timedelta = timedelta(days=14)  # a held document's default hold
    max_hold: timedelta = timedelta(days=366)


DEFAULT_LIMITS = DocumentLimits()


@dataclass(frozen=True)
class Published:
    """What ITI-65 answers: the ids given to each entry of the bundle (by its fullUrl)."""

    submission_set_id: str
    ids: dict[str, str]  # fullUrl -> new id (DocumentReference and Binary share it)
    documents: tuple[DocumentMetadata, ...]


class DocumentPublisher:
    def __init__(
        self,
        vault: ContentVault,
        affinity: AffinityCodes,
        *,
        clock: Callable[[], datetime],
        matrix: ProfileMatrix,
        limits: DocumentLimits = DEFAULT_LIMITS,
        blobs: FileBlobStore | None = None,
    ) -> None:
        self.vault = vault
        self.affinity = affinity
        self.clock = clock
        self.matrix = matrix
        self.limits = limits
        self.blobs = blobs

    def _store(self, uow: UnitOfWork) -> DocumentStore:
        return uow.documents.with_blobs(self.blobs)

    def publish(
        self,
        uow: UnitOfWork,
        subject: Subject,
        record: RecordFacts,
        submission: ProvidedSubmission,
    ) -> Published:
        """Store every document of the submission, or none (the caller commits ``uow``)."""
        now = self.clock()
        store = self._store(uow)
        set_taken, taken = store.identifiers_taken(
            submission.master_identifier, [d.master_identifier for d in submission.documents]
        )
        if set_taken:
            raise Conflict(
                f"a SubmissionSet with uniqueId {submission.master_identifier} was already received"
            )
        unique = set(taken)  # grows with this submission's own documents
        _check_set_authors(subject, record, submission)
        ids = {d.full_url: new_id() for d in submission.documents}
        set_id = new_id()
        signatures = self._signatures(submission)
        signed: dict[str, DocumentMetadata] = {}
        new: list[NewDocument] = []
        # Signed documents first, so that each signature can take its document's facts.
        ordered = sorted(submission.documents, key=lambda d: d.signs is not None)
        for provided in ordered:
            metadata = self._metadata(subject, record, provided, ids, set_id, unique, now)
            if provided.signs is not None:
                target = signed[provided.signs]
                metadata = replace(
                    metadata,
                    signs=target.id,
                    engine_class=target.engine_class,
                    confidentiality=target.confidentiality,
                    not_yet_visible_to_patient=target.not_yet_visible_to_patient,
                    release_at=target.release_at,
                )
            else:
                signed[provided.full_url] = metadata
                signature = signatures.get(provided.full_url)
                if signature is None and not metadata.patient_authored:
                    raise InvalidSignature(
                        f"DocumentReference {provided.full_url}: the author's signature is "
                        "required (a DocumentReference with relatesTo 'signs' targeting it, "
                        "whose content is a detached JWS over its bytes)",
                        expression="DocumentReference.relatesTo",
                    )
                if signature is not None:
                    self._check_signature(uow, metadata, signature, provided, now)
            if provided.replaces is not None:
                self._supersede(store, subject, record, provided.replaces, now)
            content = self.vault.seal(
                provided.content, document_id=metadata.id, version=1, purpose=CONTENT
            )
            text = _free_text(provided)
            sealed_text = (
                self.vault.seal(text, document_id=metadata.id, version=1, purpose=TEXT)
                if text is not None
                else None
            )
            new.append((metadata, content, sealed_text))
        store.add(new, now)
        stored = [metadata for metadata, _, _ in new]
        store.add_submission_set(
            set_id,
            record.patient_id,
            submission.master_identifier,
            submission.source_id,
            subject.id,
            [m.id for m in stored],
            now,
            submission.details,
        )
        # The patient is told of what they can see: not signatures, not held documents (they
        # are told when those are released).
        shown = [m for m in stored if m.signs is None and not m.not_yet_visible_to_patient]
        if shown:
            uow.records.notify(
                record.patient_id,
                "new-document",
                {
                    "en": f"{len(shown)} new document(s) were added to your record.",
                    "fr": f"{len(shown)} nouveau(x) document(s) ajouté(s) à votre dossier.",
                    "sender": f"Practitioner/{subject.id}"
                    if subject.kind is SubjectKind.PRACTITIONER
                    else f"Patient/{record.patient_id}",
                    "documents": ",".join(m.id for m in shown),
                },
                now,
            )
        return Published(set_id, {**ids, submission.full_url: set_id}, tuple(stored))

    @staticmethod
    def _signatures(submission: ProvidedSubmission) -> dict[str, ProvidedDocument]:
        """The signature of each signed document of the bundle, by the signed one's fullUrl."""
        urls = {d.full_url for d in submission.documents if d.signs is None}
        found: dict[str, ProvidedDocument] = {}
        for document in submission.documents:
            if document.signs is None:
                continue
            if document.signs not in urls:
                raise InvalidInput(
                    f"DocumentReference {document.full_url}: relatesTo 'signs' must target a "
                    "DocumentReference of this Bundle (its fullUrl)",
                    expression="DocumentReference.relatesTo.target",
                )
            if document.signs in found:
                raise InvalidInput(
                    f"{document.signs} has two signatures in this Bundle",
                    expression="DocumentReference.relatesTo",
                )
            found[document.signs] = document
        return found

    def _check_signature(
        self,
        uow: UnitOfWork,
        metadata: DocumentMetadata,
        signature: ProvidedDocument,
        provided: ProvidedDocument,
        now: datetime,
    ) -> None:
        identity = verify_detached(uow, signature.content, provided.content, now)
        by_author = identity.practitioner_id is not None and (
            identity.practitioner_id == metadata.author_id
        )
        by_organization = (
            identity.kind == "system"
            and bool(metadata.author_organization_id)
            and (identity.organization_id == metadata.author_organization_id)
        )
        if not (by_author or by_organization):
            raise InvalidSignature(
                f"DocumentReference {provided.full_url}: the signer ({identity.client_id}) is "
                "neither the author nor the author's organization",
                expression="DocumentReference.relatesTo",
            )

    def _metadata(
        self,
        subject: Subject,
        record: RecordFacts,
        provided: ProvidedDocument,
        ids: dict[str, str],
        submission_set_id: str,
        taken: set[str],
        now: datetime,
    ) -> DocumentMetadata:
        where = f"DocumentReference {provided.full_url}"
        check_content(
            provided.content_type,
            provided.content,
            allowed=self.limits.content_types,
            max_bytes=self.limits.max_bytes,
            where=where,
        )
        if provided.declared_size is not None and provided.declared_size != len(provided.content):
            raise InvalidInput(
                f"{where}: attachment.size says {provided.declared_size} bytes, the content "
                f"has {len(provided.content)}",
                expression="DocumentReference.content.attachment.size",
            )
        sha1 = base64.b64encode(hashlib.sha1(provided.content).digest()).decode()  # noqa: S324 — FHIR's Attachment.hash
        if provided.declared_sha1 is not None and provided.declared_sha1 != sha1:
            raise InvalidInput(
                f"{where}: attachment.hash does not match the content (SHA-1, base64)",
                expression="DocumentReference.content.attachment.hash",
            )
        if provided.master_identifier in taken:
            raise Conflict(f"{where}: uniqueId {provided.master_identifier} already exists")
        taken.add(provided.master_identifier)
        patient_upload = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
        if patient_upload:
            if provided.author_practitioner_id is not None or provided.author_patient_id not in (
                None,
                record.patient_id,
            ):
                raise BusinessRuleViolation(
                    f"{where}: a patient's upload is authored by the patient "
                    f"(Patient/{record.patient_id})",
                    expression="DocumentReference.author",
                )
            author, organization = record.patient_id, ""
        else:
            author = subject.id
            if provided.author_practitioner_id not in (None, subject.id):
                raise BusinessRuleViolation(
                    f"{where}: the author must be the practitioner the token speaks for "
                    f"(Practitioner/{subject.id})",
                    expression="DocumentReference.author",
                )
            organization = provided.author_organization_id or min(
                subject.organization_ids, default=""
            )
            # A professional who works for no organization names none either.
            if organization and organization not in subject.organization_ids:
                raise BusinessRuleViolation(
                    f"{where}: the author's organization must be one the practitioner works for",
                    expression="DocumentReference.author",
                )
        engine_class = self.affinity.engine_class(
            (provided.class_code.system, provided.class_code.code),
            (provided.type_code.system, provided.type_code.code),
        )
        if engine_class is None:
            raise InvalidInput(
                f"{where}: class {provided.class_code.code} / type {provided.type_code.code} "
                "has no document category in the affinity domain",
                expression="DocumentReference.type",
            )
        release_at = self._hold(provided, patient_upload, now, where)
        metadata = DocumentMetadata(
            id=ids[provided.full_url],
            patient_id=record.patient_id,
            master_identifier=provided.master_identifier,
            status=DocumentStatus.CURRENT,
            class_code=provided.class_code,
            type_code=provided.type_code,
            format_code=provided.format_code,
            practice_setting=provided.practice_setting,
            facility_type=provided.facility_type,
            # At least the patient's default level for new documents (their choice holds
            # whatever the author labelled); a signature takes its document's level below.
            confidentiality=stricter(provided.confidentiality, record.default_confidentiality),
            engine_class=engine_class,
            author_id=author,
            author_organization_id=organization,
            content_type=provided.content_type.split(";")[0].strip().lower(),
            size=len(provided.content),
            sha256=sha256_hex(provided.content),
            sha1=sha1,
            indexed=now,
            created=provided.created,
            service_start=provided.service_start,
            service_end=provided.service_end,
            title=provided.title,
            description=provided.description,
            language=provided.language,
            events=provided.events,
            replaces=provided.replaces,
            submission_set_id=submission_set_id,
            patient_authored=patient_upload,
            not_yet_visible_to_patient=release_at is not None,
            release_at=release_at,
        )
        decision = decide(subject, Action.WRITE, record, metadata.facts(), now, self.matrix)
        if not decision.permit:
            raise Refused(decision)
        return metadata

    def _hold(
        self, provided: ProvidedDocument, patient_upload: bool, now: datetime, where: str
    ) -> datetime | None:
        """Until when the author holds the document from the patient (to discuss it first)."""
        if provided.held is False:
            return None
        if patient_upload:
            raise InvalidInput(
                f"{where}: a patient's own upload is not held from them",
                expression="DocumentReference.extension",
            )
        until = now + self.limits.release_delay if provided.held is True else provided.held
        if not isinstance(until, datetime) or until <= now or until > now + self.limits.max_hold:
            raise InvalidInput(
                f"{where}: the hold must end in the future and within "
                f"{self.limits.max_hold.days} days",
                expression="DocumentReference.extension",
            )
        return until

    def release(
        self, uow: UnitOfWork, subject: Subject, record: RecordFacts, document_id: str
    ) -> None:
        """The author releases a held document to the patient, who is told."""
        now = self.clock()
        stored = self._target(self._store(uow), subject, record, document_id, "release", now)
        if stored.metadata.author_id != subject.id:
            raise NotPermitted(
                "only the document's author releases it to the patient", issue_code="forbidden"
            )
        self._release(uow, record.patient_id, document_id, now)

    def withdraw(
        self, uow: UnitOfWork, subject: Subject, record: RecordFacts, document_id: str
    ) -> None:
        """The author marks a current document entered-in-error (with its signature)."""
        store = self._store(uow)
        stored = self._target(
            store, subject, record, document_id, "mark entered-in-error", self.clock()
        )
        if stored.metadata.author_id != subject.id or stored.metadata.signs is not None:
            raise NotPermitted(
                "only the document's author marks it entered-in-error", issue_code="forbidden"
            )
        if stored.metadata.status is not DocumentStatus.CURRENT:
            raise Conflict(f"DocumentReference/{document_id} is {stored.metadata.status.value}")
        store.set_status(record.patient_id, document_id, DocumentStatus.ENTERED_IN_ERROR)
        uow.records.touched_patients.append(record.patient_id)

    def release_due(self, units: Callable[[], UnitOfWork]) -> int:
        """Release every held document whose time has come (run periodically)."""
        now = self.clock()
        with units() as uow:
            due = self._store(uow).due_for_release(now)
            for patient_id, document_id in due:
                self._release(uow, patient_id, document_id, now)
            uow.commit()
        return len(due)

    def _release(self, uow: UnitOfWork, patient_id: str, document_id: str, now: datetime) -> None:
        if self._store(uow).release(patient_id, document_id):
            uow.records.notify(
                patient_id,
                "document-released",
                {
                    "en": "A document of your record is now visible to you.",
                    "fr": "Un document de votre dossier vous est maintenant visible.",
                    "documents": document_id,
                },
                now,
            )

    def _target(
        self,
        store: DocumentStore,
        subject: Subject,
        record: RecordFacts,
        document_id: str,
        what: str,
        now: datetime,
    ) -> StoredDocument:
        """A stored document a write names, once the caller may read it (`require_visible`):
        nothing is told about a document they may not see, not even its status."""
        stored = store.of_patient(record.patient_id, document_id)
        if stored is None:
            raise NotFound(f"DocumentReference/{document_id} (the document to {what}) is not known")
        require_visible(subject, record, stored.metadata.facts(), now, self.matrix, what)
        return stored

    def _supersede(
        self,
        store: DocumentStore,
        subject: Subject,
        record: RecordFacts,
        replaced_id: str,
        now: datetime,
    ) -> None:
        """The replaced document must be one the caller reads, and of a class they may write."""
        old = self._target(store, subject, record, replaced_id, "replace", now)
        decision = decide(subject, Action.WRITE, record, old.metadata.facts(), now, self.matrix)
        if not decision.permit:
            raise Refused(decision)
        if old.metadata.status is not DocumentStatus.CURRENT:
            raise Conflict(f"DocumentReference/{replaced_id} was already replaced")
        store.set_status(record.patient_id, replaced_id, DocumentStatus.SUPERSEDED)


def _free_text(provided: ProvidedDocument) -> bytes | None:
    if provided.title is None and provided.description is None:
        return None
    return json.dumps(
        {"title": provided.title, "description": provided.description}, ensure_ascii=False
    ).encode("utf-8")


def _check_set_authors(
    subject: Subject, record: RecordFacts, submission: ProvidedSubmission
) -> None:
    """A SubmissionSet's literal author (``List.source``, its authorOrg) names the caller: the
    platform keeps and returns it, so it must not let a system claim someone else's name. A
    contained author is the source's own description and is kept as such."""
    patient_upload = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
    for claim in submission.author_claims:
        if claim.kind == "Practitioner":
            ok = not patient_upload and claim.id == subject.id
        elif claim.kind == "Organization":
            ok = not patient_upload and claim.id in subject.organization_ids
        else:  # Patient
            ok = patient_upload and claim.id == record.patient_id
        if not ok:
            raise BusinessRuleViolation(
                f"{claim.where}: {claim.kind}/{claim.id} is not the caller (the SubmissionSet's "
                "author is the authenticated practitioner, one of their organizations, or the "
                "patient for their own upload)",
                expression=claim.where,
            )
