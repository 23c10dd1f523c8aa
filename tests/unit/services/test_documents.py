"""Sharing documents (`DocumentService`) on a unit of work in memory, with the platform's real
vault (envelope encryption under a local KEK), its real PKI (authors' signatures), the built-in
affinity domain and profile matrix: what a publication stores and tells the patient, what it
refuses and leaves behind, who finds and retrieves what, and that a tampered content is never
served.

The document store is `support.fake_documents.FakeDocumentStore`, which answers as the real one
(tests/integration/test_store_contracts_documents.py); the wired-up paths (MHD over HTTP) are
tested in tests/integration/test_documents.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import DocumentCriteria
from carevault.domain.authorization import Confidentiality, Subject, SubjectKind
from carevault.domain.errors import (
    IntegrityFailure,
    NotFound,
)
from carevault.services.documents import DocumentService, PermittedRead
from carevault.services.record_policy import Actor, RecordPolicy, Refused
from support.document_world import (
    AFFINITY,
    DR,
    DR2,
    MATRIX,
    NOW,
    PATIENT,
    PHARMACIST,
    REPORT,
    Audit,
    AuditPort,
    Clock,
    Signing,
    document,
    found_ids,
    fresh_world,
    issue_signing,
    new_vault,
    permitted,
    publish,
    record,
    signed,
    submission,
)
from support.fake_documents import FakeDocumentUnitOfWork


@pytest.fixture(scope="module")
def platform() -> tuple[FakeDocumentUnitOfWork, Signing]:
    return issue_signing()


@pytest.fixture
def uow(platform: tuple[FakeDocumentUnitOfWork, Signing]) -> FakeDocumentUnitOfWork:
    return fresh_world(platform[0])


@pytest.fixture
def signing(platform: tuple[FakeDocumentUnitOfWork, Signing]) -> Signing:
    return platform[1]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def service(vault: EnvelopeVault, audit: Audit, clock: Clock) -> DocumentService:
    return DocumentService(vault, AFFINITY, audit, clock=clock, matrix=MATRIX)


# --- finding, reading, retrieving ---------------------------------------------------------------


def test_each_practitioner_finds_only_what_their_grant_and_profession_open(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    [normal] = publish(service, uow, DR, signed(signing, document()))
    clock.now = NOW + timedelta(minutes=1)
    [restricted, prescription] = publish(service, uow, DR, signed(
        signing, document(2, confidentiality=Confidentiality.R),
        document(3, type_code="57833-6"), uid="urn:oid:9.9.2"))
    everything = sorted([normal, restricted, prescription])
    total, ids = found_ids(service, uow, DR)
    assert total == 3 + 3 and set(ids) > set(everything)  # the author: with the signatures
    total, ids = found_ids(service, uow, DR2)  # normal grant: not the restricted one
    assert total == 4 and restricted not in ids and {normal, prescription} <= set(ids)
    total, ids = found_ids(service, uow, PHARMACIST)  # not a consultation report
    assert total == 2 and prescription in ids and normal not in ids
    total, ids = found_ids(service, uow, DR2, DocumentCriteria(status=[("current",)],
                                                               type=[("57833-6",)]))
    assert total == 2 and prescription in ids  # with its signature, of the same type


def test_a_document_the_patient_hides_is_neither_found_nor_read_by_a_practitioner(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    policy = RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)
    policy.hide_document(Actor(PATIENT, "account:acc-pat"), "pat-1", report, True)
    assert found_ids(service, uow, DR2) == (0, [])
    assert found_ids(service, uow, PATIENT)[0] == 2  # the patient still sees it
    with uow, pytest.raises(Refused):
        service.read(uow, DR2, record(uow), report)
    with pytest.raises(NotFound, match=f"DocumentReference/{report} is not known"):
        service.retrieve(permitted(service, uow, DR2, report))
    assert found_ids(service, uow, DR)[0] == 2  # the author does


def test_a_document_of_another_record_is_not_known(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    with uow:
        uow.directory.add_patient("pat-2", [])
        uow.commit()
        other = uow.records.load("pat-2", NOW)
        assert other is not None
        with pytest.raises(NotFound, match=f"DocumentReference/{report} is not known"):
            service.read(uow, DR, other, report)


def test_a_tampered_content_is_refused_and_the_security_officer_alerted(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        audit: Audit) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    sealed = uow.documents.contents[report]
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    uow.documents.contents[report] = replace(sealed, ciphertext=flipped)
    with pytest.raises(IntegrityFailure, match="failed its integrity check and was not served"):
        service.retrieve(permitted(service, uow, DR, report))
    [alert] = audit.records
    assert (alert.kind, alert.interaction, alert.entity_id, alert.patient, alert.detail) == (
        "alert", "integrity-check", report, "pat-1",
        {"problem": "the content does not decrypt", "decision": "deny"})


def test_a_content_sealed_for_another_document_or_missing_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        audit: Audit) -> None:
    [one, two] = publish(service, uow, DR, signed(signing, document(), document(2)))
    uow.documents.contents[one] = uow.documents.contents[two]  # swapped: another AAD
    del uow.documents.contents[two]
    for document_id in (one, two):
        with pytest.raises(IntegrityFailure):
            service.retrieve(permitted(service, uow, DR, document_id))
    assert [r.detail["problem"] for r in audit.records] == [
        "the content does not decrypt", "the content is missing"]


def test_a_content_that_decrypts_but_does_not_match_its_hash_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        vault: EnvelopeVault, audit: Audit) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    uow.documents.contents[report] = vault.seal(REPORT.replace(b"4417", b"4418"),
                                                document_id=report, version=1, purpose="content")
    with pytest.raises(IntegrityFailure):
        service.retrieve(permitted(service, uow, DR, report))
    assert audit.records[0].detail["problem"] == "the content does not match its hash"


def test_content_in_files_is_written_beside_the_row_and_read_back(
        vault: EnvelopeVault, audit: Audit, clock: Clock, uow: FakeDocumentUnitOfWork,
        signing: Signing, tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    service = DocumentService(vault, AFFINITY, audit, clock=clock, matrix=MATRIX, blobs=blobs)
    [report] = publish(service, uow, DR, signed(signing, document()))
    assert uow.documents.contents[report].ciphertext == b""  # the row holds no ciphertext
    assert blobs.read(report) not in (None, b"")
    assert service.retrieve(permitted(service, uow, DR, report)).content == REPORT
    blobs.delete(report)
    with pytest.raises(IntegrityFailure):
        service.retrieve(permitted(service, uow, DR, report))
    assert audit.records[0].detail["problem"] == "the content is missing"


def test_retrieval_needs_the_document_loaded_with_its_content(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    with uow:
        loaded = service.load(uow, report)
        assert service.load(uow, "nope") is None
    assert loaded is not None
    read = PermittedRead(record(uow), permitted(service, uow, DR, report).decision, loaded)
    with pytest.raises(ValueError, match="a retrieval needs the document loaded"):
        service.retrieve(read)


def test_the_listing_is_the_patients_documents_newest_first_and_refused_to_a_stranger(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    [first] = publish(service, uow, DR, signed(signing, document()))
    clock.now = NOW + timedelta(hours=1)
    [second] = publish(service, uow, PATIENT, submission(document(2), uid="urn:oid:9.9.2"))
    listed = service.listing(lambda: uow, PATIENT, "pat-1")
    assert [m.id for m in listed if m.signs is None] == [second, first]
    assert listed[0].title == "Consultation MARKER-Title-2"  # opened
    stranger = Subject(SubjectKind.PATIENT, "pat-2")
    with pytest.raises(Refused):
        service.listing(lambda: uow, stranger, "pat-1")


def test_everything_yields_each_visible_document_opened_across_steps(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    publish(service, uow, DR, signed(signing, document(), document(2),
                                     document(3, confidentiality=Confidentiality.R)))
    contents = {r.metadata.master_identifier: r.content
                for r in service.everything(lambda: uow, DR2, record(uow), step=2)}
    assert set(contents) == {"urn:oid:1.2.3.1", "urn:oid:1.2.3.2", "urn:oid:1.2.3.1.9",
                             "urn:oid:1.2.3.2.9"}  # not the restricted one, nor its signature
    assert contents["urn:oid:1.2.3.1"] == contents["urn:oid:1.2.3.2"] == REPORT
    assert contents["urn:oid:1.2.3.1.9"].startswith(b"eyJ")  # the signature's JWS


def test_everything_reads_each_content_as_it_is_yielded_not_a_step_at_once(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One document's content in memory at a time: a step of a hundred 20 MB documents read
    # together held 2 GB.
    publish(service, uow, DR, signed(signing, document(), document(2), document(3)))
    loads: list[str] = []
    original = service.load
    monkeypatch.setattr(service, "load", lambda u, i, **k: loads.append(i) or original(u, i, **k))
    exported = service.everything(lambda: uow, DR2, record(uow), step=100)
    first = next(exported)
    assert loads == [first.metadata.id]  # not the other five of the step
    rest = list(exported)
    assert len(loads) == 1 + len(rest) == 6  # three documents and their signatures


def test_a_submission_set_is_known_only_to_who_sees_one_of_its_documents(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    provided = signed(signing, document(confidentiality=Confidentiality.R))
    with uow:
        published = service.publisher.publish(uow, DR, record(uow), provided)
        uow.commit()
    with uow:
        found = service.submission_set(uow, DR, record(uow), published.submission_set_id)
        assert len(found.document_ids) == 2 and found.row["details"] == {"title": "Consultation"}
        assert service.submission_sets(uow, DR, record(uow), offset=0, count=10)[0] == 1
        assert service.submission_sets(uow, DR2, record(uow), offset=0, count=10) == (0, [])
        with pytest.raises(NotFound, match=f"List/{published.submission_set_id} is not known"):
            service.submission_set(uow, DR2, record(uow), published.submission_set_id)
