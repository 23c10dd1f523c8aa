"""Publishing documents (`DocumentService.publisher`, `DocumentPublisher`) on a unit of work in
memory, with the platform's real vault (envelope encryption under a local KEK), its real PKI
(authors' signatures), the built-in affinity domain and profile matrix: what a publication
stores and tells the patient, what it refuses and leaves behind; held documents and their
release; the author's withdrawal. Finding and reading them: test_documents.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.domain.authorization import Confidentiality
from carevault.domain.documents import Coding, DocumentStatus
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from carevault.services.document_publication import DocumentLimits, DocumentPublisher
from carevault.services.documents import DocumentService
from carevault.services.record_policy import Refused
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
    Clock,
    Signing,
    document,
    found_ids,
    fresh_world,
    issue_signing,
    new_vault,
    nothing_stored,
    permitted,
    publish,
    record,
    refused,
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
        service.publisher.publish(uow, PHARMACIST, record(uow), signed(signing, document()))
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
        service.publisher.publish(uow, dr2, record(uow), signed(
            signing, document(2, replaces=restricted), uid="urn:oid:9.9.2"))
    assert error.value.message == "the document to replace is not one you may see"
    with uow, pytest.raises(NotFound, match=r"DocumentReference/nope \(the document to replace\) "
                            "is not known"):
        service.publisher.publish(uow, DR, record(uow), signed(
            signing, document(3, replaces="nope"), uid="urn:oid:9.9.3"))


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
        service.publisher.release(uow, replace(DR2, organization_ids=frozenset({"org-1"})),
                        record(uow), held)
    with uow:
        service.publisher.release(uow, DR, record(uow), held)
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
    assert service.publisher.release_due(lambda: uow) == 0
    clock.now = NOW + timedelta(days=2)
    assert service.publisher.release_due(lambda: uow) == 1
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
        service.publisher.withdraw(uow, dr2, record(uow), report)
    with uow:
        service.publisher.withdraw(uow, DR, record(uow), report)
        assert uow.records.touched_patients == ["pat-1"]
        uow.commit()
    assert {m.status for m in uow.documents.metadata.values()} == {
        DocumentStatus.ENTERED_IN_ERROR}
    with uow, pytest.raises(Conflict, match=f"DocumentReference/{report} is entered-in-error"):
        service.publisher.withdraw(uow, DR, record(uow), report)




# --- the deployment's limits ------------------------------------------------------------------


def test_a_publisher_holds_to_the_limits_it_was_given(
        vault: EnvelopeVault, uow: FakeDocumentUnitOfWork, signing: Signing,
        clock: Clock) -> None:
    """The size limit and the default hold are the deployment's (`DocumentLimits`): a document
    over the size is refused whole, and a held one waits as long as the publisher was told."""
    limits = DocumentLimits(max_bytes=len(REPORT) - 1, release_delay=timedelta(days=3))
    publisher = DocumentPublisher(vault, AFFINITY, clock=clock, matrix=MATRIX, limits=limits)
    with uow, pytest.raises(InvalidInput, match=f"the limit is {len(REPORT) - 1}"):
        publisher.publish(uow, DR, record(uow), signed(signing, document()))
    nothing_stored(uow)
    roomy = DocumentPublisher(vault, AFFINITY, clock=clock, matrix=MATRIX,
                              limits=replace(limits, max_bytes=4096))  # its signature fits
    with uow:
        published = roomy.publish(uow, DR, record(uow), signed(signing, document(held=True)))
        uow.commit()
    held = published.ids["urn:uuid:doc-1"]
    assert uow.documents.metadata[held].release_at == NOW + timedelta(days=3)
