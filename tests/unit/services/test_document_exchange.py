"""The MHD use cases as the API calls them (`DocumentExchange`), on a unit of work in memory with
the platform's real vault and PKI: each opens its own unit of work, a submission or an author's
operation commits once and a refused one not at all (nothing stays), a read commits nothing; a
Bundle whose resources name another patient, or an identifier nobody has, is refused with the
same words. The rules themselves are `DocumentService`'s (tests/unit/services/test_documents.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.domain.documents import DocumentCriteria, DocumentStatus
from carevault.domain.errors import InvalidInput, NotPermitted
from carevault.fhirmodel.mhd import PatientRef
from carevault.services.document_exchange import DocumentExchange
from carevault.services.documents import DocumentService
from carevault.services.record_policy import Refused
from support.document_world import (
    AFFINITY,
    DR,
    DR2,
    MATRIX,
    PATIENT,
    SYSTEMS,
    Audit,
    Clock,
    Signing,
    document,
    fresh_world,
    issue_signing,
    new_vault,
    record,
    signed,
)
from support.fake_documents import FakeDocumentUnitOfWork

SAME_PATIENT = "every resource of the Bundle concerns the patient of its SubmissionSet"


@pytest.fixture(scope="module")
def platform() -> tuple[FakeDocumentUnitOfWork, Signing]:
    return issue_signing()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


@pytest.fixture
def uow(platform: tuple[FakeDocumentUnitOfWork, Signing]) -> FakeDocumentUnitOfWork:
    world = fresh_world(platform[0])
    world.directory.add_patient("pat-2", [{"system": SYSTEMS.national, "value": "2"}])
    world.directory.add_patient("pat-1", [{"system": SYSTEMS.national, "value": "1"}])
    world.commit()
    world.commits = 0
    return world


@pytest.fixture
def signing(platform: tuple[FakeDocumentUnitOfWork, Signing]) -> Signing:
    return platform[1]


@pytest.fixture
def exchange(vault: EnvelopeVault, uow: FakeDocumentUnitOfWork) -> DocumentExchange:
    documents = DocumentService(vault, AFFINITY, Audit(), clock=Clock(), matrix=MATRIX)
    return DocumentExchange(lambda: uow, documents)


def test_a_submission_is_stored_in_one_commit_and_found_in_none(
        exchange: DocumentExchange, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    published = exchange.submit(DR, record(uow), signed(signing, document()))
    assert uow.commits == 1
    assert len(uow.documents.metadata) == 2  # the report and its signature
    stored = {i for url, i in published.ids.items() if url != "urn:uuid:set"}
    total, found = exchange.find(DR, record(uow), DocumentCriteria(), offset=0, count=10)
    assert total == 2 and {m.id for m in found} == stored
    listing = exchange.submission_set(DR, record(uow), published.submission_set_id)
    assert set(listing.document_ids) == stored
    assert exchange.submission_sets(DR, record(uow), offset=0, count=10)[0] == 1
    report_id = next(i for u, i in published.ids.items() if u == "urn:uuid:doc-1")
    assert exchange.read(DR, record(uow), report_id).id == report_id
    assert uow.commits == 1


@pytest.mark.parametrize("named", [
    PatientRef("pat-2"),  # another patient, by id
    PatientRef(system=SYSTEMS.national, value="2"),  # another patient, by identifier
    PatientRef(system=SYSTEMS.national, value="999"),  # nobody's identifier
], ids=["other-id", "other-identifier", "unknown-identifier"])
def test_a_document_naming_another_patient_or_nobody_is_refused_alike_and_nothing_stays(
        exchange: DocumentExchange, uow: FakeDocumentUnitOfWork, signing: Signing,
        named: PatientRef) -> None:
    provided = signed(signing, replace(document(), patient=named))
    with pytest.raises(InvalidInput, match=SAME_PATIENT) as refused:
        exchange.submit(DR, record(uow), provided)
    assert refused.value.expression == "DocumentReference.subject"
    assert uow.commits == 0 and uow.documents.metadata == {}


def test_the_patient_may_be_named_by_their_identifier(
        exchange: DocumentExchange, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    by_number = PatientRef(system=SYSTEMS.national, value="1")
    provided = signed(signing, replace(document(), patient=by_number))
    exchange.submit(DR, record(uow), replace(provided, patient=by_number))
    assert uow.commits == 1


def test_only_the_author_releases_or_withdraws_and_a_refusal_commits_nothing(
        exchange: DocumentExchange, uow: FakeDocumentUnitOfWork, signing: Signing) -> None:
    published = exchange.submit(DR, record(uow), signed(signing, document(held=True)))
    held = published.ids["urn:uuid:doc-1"]
    colleague = replace(DR2, organization_ids=frozenset({"org-1"}))
    with pytest.raises(NotPermitted, match="only the document's author releases it"):
        exchange.release(colleague, record(uow), held)
    assert uow.commits == 1
    with pytest.raises(Refused, match="not yet released this document"):
        exchange.read(PATIENT, record(uow), held)
    exchange.release(DR, record(uow), held)
    assert uow.commits == 2
    assert exchange.read(PATIENT, record(uow), held).id == held
    with pytest.raises(NotPermitted, match="only the document's author marks it"):
        exchange.withdraw(colleague, record(uow), held)
    exchange.withdraw(DR, record(uow), held)
    assert uow.commits == 3
    assert uow.documents.metadata[held].status is DocumentStatus.ENTERED_IN_ERROR
