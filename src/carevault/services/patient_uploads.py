"""A patient's own document, added from the portal (a letter from a doctor abroad, a scan of a
vaccination booklet): one file, the patient's word, no author's signature.

It goes through the same use case as every document (`DocumentService.publish`: the engine
decides the write, the content is sealed, the patient's default confidentiality applies), as
one submission authored by the patient, marked patient-authored for whoever reads it. The
file must be what it says it is (PDF, JPEG or PNG, recognised by its first bytes), within the
deployment's size limit; its audit entry is written in the same transaction as the document.
What one record may hold of the patient's own files is bounded too (`UploadQuota`): the portal
is open to every resident, and storage paid for care is not a free file host.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from carevault.domain.audit import ACTION_CREATE, AuditRecord, rfc3339_ms
from carevault.domain.authorization import Action, Confidentiality, SubjectKind
from carevault.domain.documents import Coding
from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.mhd import PatientRef, ProvidedSubmission, authored_document
from carevault.services.accounts import AuditAppender
from carevault.services.document_publication import Published
from carevault.services.documents import DocumentService
from carevault.services.record_policy import Actor, RecordPolicy
from carevault.services.unit_of_work import UnitOfWork

LOINC = "http://loinc.org"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
SNOMED = "http://snomed.info/sct"
MAX_TITLE = 200

# What a patient may say their document is: (class, type) in the affinity domain's LOINC codes.
UPLOAD_KINDS: dict[str, tuple[str, str]] = {
    "consultation": ("11488-4", "11488-4"),  # a consultation note or letter
    "laboratory": ("26436-6", "11502-2"),  # a laboratory report
    "imaging": ("18726-0", "18748-4"),  # an imaging report
    "discharge": ("18842-5", "18842-5"),  # a discharge summary
    "vaccination": ("11369-6", "11369-6"),  # a vaccination record
}

# The file types taken, each recognised by its first bytes (the browser's word is not enough).
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
}


class UploadRefused(InvalidInput):
    """An upload refused before anything is stored; ``reason`` names why, for the page's
    message in the person's language (kind, title, empty, size, type, mismatch, quota)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, expression="file" if reason != "title" else "title")
        self.reason = reason


@dataclass(frozen=True)
class UploadQuota:
    """How much of their own a record may hold: documents the patient added (every status: a
    hidden one still takes its room) and their bytes in all."""

    max_documents: int = 200
    max_bytes: int = 500 * 1024 * 1024

    def check(self, documents: int, stored_bytes: int, adding: int) -> None:
        """UploadRefused ("quota") when one more document of ``adding`` bytes would pass it."""
        if documents + 1 > self.max_documents or stored_bytes + adding > self.max_bytes:
            raise UploadRefused(
                f"the record holds {documents} documents of the patient's ({stored_bytes} "
                f"bytes); the limit is {self.max_documents} documents, {self.max_bytes} bytes",
                "quota",
            )


@dataclass(frozen=True)
class PatientUpload:
    content: bytes
    content_type: str
    title: str
    kind: str  # a key of UPLOAD_KINDS


def check_upload(upload: PatientUpload, max_bytes: int) -> str:
    """The upload's title, trimmed, once the file is one we take; InvalidInput otherwise."""
    if upload.kind not in UPLOAD_KINDS:
        raise UploadRefused(f"kind is one of {', '.join(UPLOAD_KINDS)}", "kind")
    title = " ".join(upload.title.split())
    if not title or len(title) > MAX_TITLE:
        raise UploadRefused(f"the title has 1 to {MAX_TITLE} characters", "title")
    if not upload.content:
        raise UploadRefused("the file is empty", "empty")
    if len(upload.content) > max_bytes:
        raise UploadRefused(f"the file exceeds {max_bytes} bytes", "size")
    starts = SIGNATURES.get(upload.content_type)
    if starts is None:
        raise UploadRefused("the file is a PDF, JPEG or PNG", "type")
    if not any(upload.content.startswith(s) for s in starts):
        raise UploadRefused(
            f"the file is not the {upload.content_type} it claims to be", "mismatch"
        )
    return title


class PatientUploads:
    """The patient's own documents, from the portal."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        documents: DocumentService,
        policy: RecordPolicy,
        audit: AuditAppender,
        max_bytes: int,
        quota: UploadQuota = UploadQuota(),
    ) -> None:
        self.units = units
        self.documents = documents
        self.policy = policy
        self.audit = audit
        self.max_bytes = max_bytes
        self.quota = quota

    def upload(self, actor: Actor, patient_id: str, upload: PatientUpload) -> Published:
        """Add the document to the record, authored by the patient, with its audit entry,
        unless the record holds its quota of the patient's own files already."""
        title = check_upload(upload, self.max_bytes)
        class_code, type_code = UPLOAD_KINDS[upload.kind]
        now = self.documents.clock()
        entry = f"urn:uuid:{uuid.uuid4()}"
        document = authored_document(
            full_url=entry,
            patient_id=patient_id,
            codes=(
                Coding(LOINC, class_code),
                Coding(LOINC, type_code),
                Coding(FORMAT_CODES, "urn:ihe:iti:xds:2017:mimeTypeSufficient"),
            ),
            # general medicine, the patient's home
            setting=(Coding(SNOMED, "394802001"), Coding(SNOMED, "394778007")),
            confidentiality=Confidentiality.N,  # the patient's default applies on top
            content_type=upload.content_type,
            content=upload.content,
            created=now.astimezone(UTC),
            title=title,
            patient_author=True,
        )
        submission = ProvidedSubmission(
            full_url=f"urn:uuid:{uuid.uuid4()}",
            master_identifier=f"urn:uuid:{uuid.uuid4()}",
            source_id="urn:carevault:portal",
            patient=PatientRef(patient_id),
            documents=(document,),
            entry_order=(entry,),
        )
        with self.units() as uow:
            record = self.policy.permitted_record(uow, actor.subject, patient_id, Action.WRITE, now)
            self.quota.check(*uow.documents.patient_authored_usage(patient_id), len(upload.content))
            published = self.documents.publisher.publish(uow, actor.subject, record, submission)
            self.audit.append_with(uow.audit, [_record(actor, patient_id, published, now)])
            uow.commit()
        return published


def _record(actor: Actor, patient_id: str, published: Published, now: datetime) -> AuditRecord:
    (document,) = published.documents
    return AuditRecord(
        stream="clinical",
        recorded=rfc3339_ms(now),
        kind="patient-action",
        action=ACTION_CREATE,
        interaction="document-upload",
        outcome="0",
        agent=actor.agent(
            f"Patient/{patient_id}" if actor.subject.kind is SubjectKind.REPRESENTATIVE else None
        ),
        patient=patient_id,
        entity_type="DocumentReference",
        entity_id=document.id,
    )


__all__ = [
    "UPLOAD_KINDS",
    "PatientUpload",
    "PatientUploads",
    "UploadQuota",
    "UploadRefused",
    "check_upload",
]
