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
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import DocumentCriteria
from carevault.domain.authorization import Action, Confidentiality, Subject, SubjectKind, decide
from carevault.domain.documents import Coding, DocumentStatus
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from carevault.fhirmodel.mhd import ProvidedSubmission
from carevault.services.documents import DocumentService, PermittedRead
from carevault.services.record_policy import Actor, RecordPolicy, Refused
from carevault.services.signatures import InvalidSignature
from support.document_world import (
    AFFINITY,
    DR,
    DR2,
    LOINC,
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
    fresh_world,
    issue_signing,
    new_vault,
    publish,
    record,
    signature,
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


def found_ids(service: DocumentService, uow: FakeDocumentUnitOfWork, subject: Subject,
              criteria: DocumentCriteria | None = None) -> tuple[int, list[str]]:
    with uow:
        total, found = service.find(uow, subject, record(uow), criteria or DocumentCriteria(),
                                    offset=0, count=50)
    return total, [m.id for m in found]


def permitted(service: DocumentService, uow: FakeDocumentUnitOfWork, subject: Subject,
              document_id: str) -> PermittedRead:
    """What the gate hands the handler: the document loaded with its content, and the engine's
    decision on reading it."""
    with uow:
        loaded = service.load(uow, document_id, with_content=True)
    assert loaded is not None
    facts = record(uow)
    return PermittedRead(facts, decide(subject, Action.READ, facts, loaded.facts, NOW, MATRIX),
                         loaded)


def refused(error: type[Exception], service: DocumentService, uow: FakeDocumentUnitOfWork,
            subject: Subject, provided: ProvidedSubmission) -> str:
    """The refusal's message; the unit of work is left without a commit, as the API leaves it."""
    with uow, pytest.raises(error) as raised:
        service.publish(uow, subject, record(uow), provided)
    return str(getattr(raised.value, "message", raised.value))


def nothing_stored(uow: FakeDocumentUnitOfWork) -> None:
    assert uow.documents.metadata == {} and uow.documents.contents == {}
    assert uow.documents.sets == {} and uow.records.notifications == []


# --- publishing -------------------------------------------------------------------------------


def test_a_signed_report_is_stored_sealed_with_its_submission_set_and_the_patient_is_told(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [report_id] = publish(service, uow, DR, signed(signing, document()))
    stored = uow.documents.metadata[report_id]
    assert (stored.author_id, stored.author_organization_id, stored.engine_class) == (
        "dr-1", "org-1", "consultation-report")
    assert (stored.status, stored.size, stored.patient_authored) == (
        DocumentStatus.CURRENT, len(REPORT), False)
    assert stored.title is None and stored.type_code.display is None  # sealed / not kept
    sealed = uow.documents.contents[report_id]
    assert b"MARKER-Kaiser" not in sealed.ciphertext
    assert b"MARKER-Title" not in uow.documents.texts[report_id].ciphertext
    [signature_id] = [i for i, m in uow.documents.metadata.items() if m.signs == report_id]
    [row] = uow.documents.sets.values()
    assert row["master_identifier"] == "urn:oid:9.9.1" and row["author_id"] == "dr-1"
    assert row["document_ids"] == f'["{report_id}", "{signature_id}"]'
    [told] = uow.records.notifications
    assert (told.patient_id, told.kind) == ("pat-1", "new-document")
    assert (told.payload["documents"], told.payload["sender"]) == (
        report_id, "Practitioner/dr-1")
    assert told.payload["en"] == "1 new document(s) were added to your record."
    assert uow.commits == 1


def test_the_author_retrieves_the_exact_bytes_and_reads_the_title_opened(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [report_id] = publish(service, uow, DR, signed(signing, document()))
    read = permitted(service, uow, DR, report_id)
    assert service.retrieve(read).content == REPORT
    described = service.describe(read)
    assert (described.title, described.description) == ("Consultation MARKER-Title-1",
                                                         "in confidence")


def test_a_practitioners_document_without_the_authors_signature_is_refused_and_nothing_stays(
        service: DocumentService, uow: FakeDocumentUnitOfWork) -> None:
    message = refused(InvalidSignature, service, uow, DR, submission(document()))
    assert message.startswith("DocumentReference urn:uuid:doc-1: the author's signature is "
                              "required")
    nothing_stored(uow)


def test_a_signature_over_other_bytes_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    report = document()
    forged = signature(report, signing.sign(REPORT + b"altered"))
    assert refused(InvalidSignature, service, uow, DR, submission(report, forged)) == (
        "the signature does not verify over the document's bytes")
    nothing_stored(uow)


def test_a_signature_by_a_system_of_another_organization_than_the_authors_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    message = refused(InvalidSignature, service, uow, DR2, signed(signing, document()))
    assert message == ("DocumentReference urn:uuid:doc-1: the signer (system:ORG-H1) is neither "
                       "the author nor the author's organization")


def test_a_signature_that_signs_no_document_of_the_bundle_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    report = document()
    stray = replace(signature(report, signing.sign(REPORT)), signs="urn:uuid:elsewhere")
    message = refused(InvalidInput, service, uow, DR, submission(report, stray))
    assert message == ("DocumentReference urn:uuid:doc-1-sig: relatesTo 'signs' must target a "
                       "DocumentReference of this Bundle (its fullUrl)")


def test_a_patients_own_upload_needs_no_signature_and_is_authored_by_the_patient(
        service: DocumentService, uow: FakeDocumentUnitOfWork) -> None:
    [upload_id] = publish(service, uow, PATIENT, submission(document()))
    stored = uow.documents.metadata[upload_id]
    assert (stored.author_id, stored.author_organization_id, stored.patient_authored) == (
        "pat-1", "", True)
    assert uow.records.notifications[0].payload["sender"] == "Patient/pat-1"


def test_a_patients_upload_claiming_a_practitioner_author_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork) -> None:
    provided = submission(document(author_practitioner_id="dr-1"))
    assert refused(BusinessRuleViolation, service, uow, PATIENT, provided) == (
        "DocumentReference urn:uuid:doc-1: a patient's upload is authored by the patient "
        "(Patient/pat-1)")
    nothing_stored(uow)


def test_a_practitioner_publishes_in_their_own_name_and_organization_only(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    assert refused(BusinessRuleViolation, service, uow, DR, signed(
        signing, document(author_practitioner_id="dr-2"))) == (
        "DocumentReference urn:uuid:doc-1: the author must be the practitioner the token "
        "speaks for (Practitioner/dr-1)")
    assert refused(BusinessRuleViolation, service, uow, DR, signed(
        signing, document(author_organization_id="org-2"))) == (
        "DocumentReference urn:uuid:doc-1: the author's organization must be one the "
        "practitioner works for")
    nothing_stored(uow)


@pytest.mark.parametrize(("changes", "message"), [
    ({"declared_size": len(REPORT) + 1},
     f"attachment.size says {len(REPORT) + 1} bytes, the content has {len(REPORT)}"),
    ({"declared_sha1": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
     "attachment.hash does not match the content (SHA-1, base64)"),
    ({"type_code": "00000-0", "class_code": Coding(LOINC, "00000-1")},
     "class 00000-1 / type 00000-0 has no document category in the affinity domain"),
])
def test_metadata_that_does_not_match_the_content_or_the_affinity_domain_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        changes: dict[str, object], message: str) -> None:
    provided = signed(signing, document(**changes))
    assert refused(InvalidInput, service, uow, DR, provided) == (
        f"DocumentReference urn:uuid:doc-1: {message}")
    nothing_stored(uow)


def test_a_submission_set_or_a_document_received_twice_is_refused(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    publish(service, uow, DR, signed(signing, document()))
    assert refused(Conflict, service, uow, DR, signed(signing, document(2))) == (
        "a SubmissionSet with uniqueId urn:oid:9.9.1 was already received")
    assert refused(Conflict, service, uow, DR, signed(signing, document(), uid="urn:oid:9.9.2")
                   ) == "DocumentReference urn:uuid:doc-1: uniqueId urn:oid:1.2.3.1 already exists"
    twice = signed(signing, document(2), replace(document(3), master_identifier="urn:oid:1.2.3.2"),
                   uid="urn:oid:9.9.3")
    assert refused(Conflict, service, uow, DR, twice) == (
        "DocumentReference urn:uuid:doc-3: uniqueId urn:oid:1.2.3.2 already exists")
    assert len(uow.documents.sets) == 1 and len(uow.documents.metadata) == 2  # the first only


def test_the_engine_refuses_a_class_the_profession_may_not_write(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    with uow, pytest.raises(Refused) as error:
        service.publish(uow, PHARMACIST, record(uow), signed(signing, document()))
    assert error.value.decision.permit is False
    nothing_stored(uow)


def test_the_patients_default_level_raises_a_documents_confidentiality(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    with uow:
        uow.records.update_record("pat-1", NOW, default_confidentiality=Confidentiality.R)
        uow.commit()
    ids = publish(service, uow, DR, signed(signing, document()))
    signature_of = {m.signs: m for m in uow.documents.metadata.values() if m.signs}
    assert uow.documents.metadata[ids[0]].confidentiality is Confidentiality.R
    assert signature_of[ids[0]].confidentiality is Confidentiality.R  # the signature follows


def test_a_replacement_supersedes_the_old_document_and_its_signature(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [old] = publish(service, uow, DR, signed(signing, document()))
    [new] = publish(service, uow, DR, signed(signing, document(2, replaces=old),
                                             uid="urn:oid:9.9.2"))
    statuses = {m.id: m.status for m in uow.documents.metadata.values() if old in (m.id, m.signs)}
    assert set(statuses.values()) == {DocumentStatus.SUPERSEDED} and len(statuses) == 2
    assert uow.documents.metadata[new].replaces == old
    again = signed(signing, document(3, replaces=old), uid="urn:oid:9.9.3")
    assert refused(Conflict, service, uow, DR, again) == (
        f"DocumentReference/{old} was already replaced")


def test_a_submission_failing_after_a_replacement_leaves_the_replaced_document_current(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [old] = publish(service, uow, DR, signed(signing, document()))
    broken = signed(signing, document(2, replaces=old), document(3, declared_size=1),
                    uid="urn:oid:9.9.2")
    refused(InvalidInput, service, uow, DR, broken)
    assert uow.documents.metadata[old].status is DocumentStatus.CURRENT
    assert len(uow.documents.metadata) == 2 and uow.commits == 1


def test_replacing_a_document_one_may_not_see_is_refused_without_saying_what_it_is(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [restricted] = publish(service, uow, DR, signed(
        signing, document(confidentiality=Confidentiality.R)))
    dr2 = replace(DR2, organization_ids=frozenset({"org-1"}))
    with uow, pytest.raises(Refused) as error:
        service.publish(uow, dr2, record(uow), signed(
            signing, document(2, replaces=restricted), uid="urn:oid:9.9.2"))
    assert error.value.message == "the document to replace is not one you may see"
    with uow, pytest.raises(NotFound, match=r"DocumentReference/nope \(the document to replace\) "
                            "is not known"):
        service.publish(uow, DR, record(uow), signed(signing, document(3, replaces="nope"),
                                                      uid="urn:oid:9.9.3"))


# --- held documents ---------------------------------------------------------------------------


def test_a_held_document_is_hidden_from_the_patient_until_its_author_releases_it(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    [held] = publish(service, uow, DR, signed(signing, document(held=True)))
    assert uow.documents.metadata[held].release_at == NOW + timedelta(days=14)
    assert uow.records.notifications == []  # told when released
    assert found_ids(service, uow, PATIENT) == (0, [])  # nor its signature
    total, ids = found_ids(service, uow, DR)
    assert total == 2 and held in ids
    with uow, pytest.raises(NotPermitted, match="only the document's author releases it"):
        service.release(uow, replace(DR2, organization_ids=frozenset({"org-1"})),
                        record(uow), held)
    with uow:
        service.release(uow, DR, record(uow), held)
        uow.commit()
    total, ids = found_ids(service, uow, PATIENT)
    assert total == 2 and held in ids
    [told] = uow.records.notifications
    assert (told.kind, told.payload["documents"]) == ("document-released", held)


def test_a_held_document_is_released_by_the_chore_when_its_time_has_come(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    [held] = publish(service, uow, DR, signed(signing, document(held=NOW + timedelta(days=2))))
    clock.now = NOW + timedelta(days=2) - timedelta(seconds=1)
    assert service.release_due(lambda: uow) == 0
    clock.now = NOW + timedelta(days=2)
    assert service.release_due(lambda: uow) == 1
    assert uow.documents.metadata[held].not_yet_visible_to_patient is False
    assert [n.kind for n in uow.records.notifications] == ["document-released"]


@pytest.mark.parametrize("until", [NOW, NOW + timedelta(days=367)])
def test_a_hold_must_end_in_the_future_and_within_the_limit(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing,
        until: datetime) -> None:
    assert refused(InvalidInput, service, uow, DR, signed(signing, document(held=until))) == (
        "DocumentReference urn:uuid:doc-1: the hold must end in the future and within 366 days")


def test_a_patients_own_upload_is_not_held_from_them(
        service: DocumentService, uow: FakeDocumentUnitOfWork) -> None:
    assert refused(InvalidInput, service, uow, PATIENT, submission(document(held=True))) == (
        "DocumentReference urn:uuid:doc-1: a patient's own upload is not held from them")


# --- withdrawing --------------------------------------------------------------------------------


def test_the_author_marks_a_document_entered_in_error_with_its_signature(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    [report] = publish(service, uow, DR, signed(signing, document()))
    dr2 = replace(DR2, organization_ids=frozenset({"org-1"}))
    with uow, pytest.raises(NotPermitted, match="only the document's author marks it"):
        service.withdraw(uow, dr2, record(uow), report)
    with uow:
        service.withdraw(uow, DR, record(uow), report)
        assert uow.records.touched_patients == ["pat-1"]
        uow.commit()
    assert {m.status for m in uow.documents.metadata.values()} == {
        DocumentStatus.ENTERED_IN_ERROR}
    with uow, pytest.raises(Conflict, match=f"DocumentReference/{report} is entered-in-error"):
        service.withdraw(uow, DR, record(uow), report)


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


def test_a_submission_set_is_known_only_to_who_sees_one_of_its_documents(
        service: DocumentService, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    provided = signed(signing, document(confidentiality=Confidentiality.R))
    with uow:
        published = service.publish(uow, DR, record(uow), provided)
        uow.commit()
    with uow:
        found = service.submission_set(uow, DR, record(uow), published.submission_set_id)
        assert len(found.document_ids) == 2 and found.row["details"] == {"title": "Consultation"}
        assert service.submission_sets(uow, DR, record(uow), offset=0, count=10)[0] == 1
        assert service.submission_sets(uow, DR2, record(uow), offset=0, count=10) == (0, [])
        with pytest.raises(NotFound, match=f"List/{published.submission_set_id} is not known"):
            service.submission_set(uow, DR2, record(uow), published.submission_set_id)
