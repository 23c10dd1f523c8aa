"""A patient's own document from the portal (`PatientUploads`), on a unit of work in memory:
stored through the documents' use case as the patient's, sealed, with its audit entry in the
same commit; every refusal (the file is not what it says, too large, empty, untitled, of an
unknown kind; a caller the engine refuses) stores nothing and records nothing."""

from __future__ import annotations

from typing import Any

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.domain.authorization import Subject, SubjectKind
from carevault.services.documents import DocumentService
from carevault.services.patient_uploads import (
    PatientUpload,
    PatientUploads,
    UploadQuota,
    UploadRefused,
    check_upload,
)
from carevault.services.record_policy import Actor, RecordPolicy, Refused
from support.document_world import (
    AFFINITY,
    MATRIX,
    NOW,
    PATIENT,
    Audit,
    AuditPort,
    Clock,
    fresh_world,
    issue_signing,
    new_vault,
)
from support.fake_documents import FakeDocumentUnitOfWork

LETTER = b"%PDF-1.7\n% a letter from Milan\n%%EOF\n"
ME = Actor(PATIENT, "account:acc-pat")
DEFAULT_QUOTA = UploadQuota()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


@pytest.fixture
def uow() -> FakeDocumentUnitOfWork:
    return fresh_world(issue_signing()[0])


def uploads(uow: FakeDocumentUnitOfWork, vault: EnvelopeVault, max_bytes: int = 1_000,
            quota: UploadQuota = DEFAULT_QUOTA) -> Any:
    clock = Clock()
    documents = DocumentService(vault, AFFINITY, Audit(), clock=clock, matrix=MATRIX)
    policy = RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)
    return PatientUploads(lambda: uow, documents, policy, AuditPort(), max_bytes, quota)


def test_the_patients_document_is_stored_as_theirs_with_its_audit_entry_in_one_commit(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    published = uploads(uow, vault).upload(
        ME, "pat-1", PatientUpload(LETTER, "application/pdf", "  Letter   from Milan ", "imaging"))
    (metadata,) = published.documents
    assert uow.commits == 1
    stored = uow.documents.get(metadata.id)
    assert stored is not None
    assert stored.metadata.patient_authored and stored.metadata.author_id == "pat-1"
    assert metadata.title == "Letter from Milan"  # spaces folded
    assert stored.metadata.title is None and stored.sealed_text is not None  # sealed, as text is
    assert (stored.metadata.class_code.code, stored.metadata.type_code.code) == (
        "18726-0", "18748-4")
    assert stored.metadata.created == NOW
    found = uow.documents.get_with_content(metadata.id)
    assert found is not None
    assert LETTER not in found[1].ciphertext and len(found[1].ciphertext) >= len(LETTER)
    [entry] = uow.audit.records
    assert (entry.interaction, entry.patient, entry.entity_id, entry.agent.who) == (
        "document-upload", "pat-1", metadata.id, "account:acc-pat")


@pytest.mark.parametrize(("upload", "reason"), [
    (PatientUpload(b"MZ\x90\x00", "application/pdf", "Letter", "consultation"), "mismatch"),
    (PatientUpload(LETTER, "image/gif", "Letter", "consultation"), "type"),
    (PatientUpload(b"", "application/pdf", "Letter", "consultation"), "empty"),
    (PatientUpload(LETTER + b"0" * 1_000, "application/pdf", "Letter", "consultation"), "size"),
    (PatientUpload(LETTER, "application/pdf", " \t ", "consultation"), "title"),
    (PatientUpload(LETTER, "application/pdf", "x" * 201, "consultation"), "title"),
    (PatientUpload(LETTER, "application/pdf", "Letter", "cat-scan-of-my-cat"), "kind"),
])
def test_a_refused_upload_says_why_and_stores_nothing(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault, upload: PatientUpload,
        reason: str) -> None:
    with pytest.raises(UploadRefused) as refused:
        uploads(uow, vault).upload(ME, "pat-1", upload)
    assert refused.value.reason == reason
    assert uow.commits == 0 and uow.audit.records == []
    with pytest.raises(UploadRefused):
        check_upload(upload, 1_000)


def test_a_png_and_a_jpeg_are_taken_by_their_first_bytes(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    service = uploads(uow, vault)
    for content, kind in ((b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, "image/png"),
                          (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg")):
        service.upload(ME, "pat-1", PatientUpload(content, kind, "Booklet", "vaccination"))
    assert uow.commits == 2


def test_someone_else_is_refused_by_the_engine_and_nothing_is_stored(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    stranger = Actor(Subject(SubjectKind.PATIENT, "pat-2"), "account:acc-other")
    with pytest.raises(Refused):
        uploads(uow, vault).upload(
            stranger, "pat-1", PatientUpload(LETTER, "application/pdf", "Mine", "consultation"))
    assert uow.commits == 0 and uow.audit.records == []


@pytest.mark.parametrize(("quota", "taken"), [
    (UploadQuota(max_documents=2, max_bytes=10_000), 2),  # the third is one document too many
    (UploadQuota(max_documents=9, max_bytes=2 * len(LETTER) + 10), 2),  # its bytes too many
])
def test_a_record_holding_its_quota_of_the_patients_files_takes_no_more(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault, quota: UploadQuota,
        taken: int) -> None:
    service = uploads(uow, vault, quota=quota)
    letter = PatientUpload(LETTER, "application/pdf", "Letter", "consultation")
    for _ in range(taken):
        service.upload(ME, "pat-1", letter)
    with pytest.raises(UploadRefused) as refused:
        service.upload(ME, "pat-1", letter)
    assert refused.value.reason == "quota"
    assert uow.commits == taken and len(uow.audit.records) == taken  # nothing more
    assert uow.documents.patient_authored_usage("pat-1") == (taken, taken * len(LETTER))


def test_hiding_a_file_does_not_free_its_place(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    service = uploads(uow, vault, quota=UploadQuota(max_documents=1))
    letter = PatientUpload(LETTER, "application/pdf", "Letter", "consultation")
    (first,) = service.upload(ME, "pat-1", letter).documents
    uow.records.set_document_hidden("pat-1", first.id, True)
    with pytest.raises(UploadRefused):
        service.upload(ME, "pat-1", letter)
