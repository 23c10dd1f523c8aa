"""The export of a record (`RecordExport`), on a unit of work in memory: how many documents it
holds for the caller, and its parts in order: the patient's identity, each document the caller
sees with its content opened and checked, then the record's grants and blocks. (The access
history that follows is the access history's: tests/unit/services/test_access_history.py; the
whole stream over HTTP: tests/integration/test_portal_export.py.)"""

from __future__ import annotations

from dataclasses import replace
from itertools import islice

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.record_store import StoredBlock, StoredGrant
from carevault.domain.authorization import Block, Confidentiality, Party, RecordFacts
from carevault.domain.errors import IntegrityFailure, NotFound
from carevault.services.audit_log import AuditLog
from carevault.services.documents import DocumentService, Retrieved
from carevault.services.record_export import Identity, RecordExport
from support.document_world import (
    AFFINITY,
    DR,
    DR2,
    MATRIX,
    NOW,
    PATIENT,
    REPORT,
    Audit,
    Clock,
    Signing,
    document,
    fresh_world,
    issue_signing,
    new_vault,
    publish,
    record,
    signed,
)
from support.fake_documents import FakeDocumentUnitOfWork

NO_LOG = AuditLog.__new__(AuditLog)  # never read before the grants and blocks are out


@pytest.fixture(scope="module")
def platform() -> tuple[FakeDocumentUnitOfWork, Signing]:
    return issue_signing()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


@pytest.fixture
def uow(platform: tuple[FakeDocumentUnitOfWork, Signing], vault: EnvelopeVault
        ) -> FakeDocumentUnitOfWork:
    """pat-1's record: a normal report and a restricted one by dr-1 (each signed), three
    grants (the world's) and a block of dr-9."""
    unit = fresh_world(platform[0])
    clock = Clock()
    service = DocumentService(vault, AFFINITY, Audit(), clock=clock, matrix=MATRIX)
    publish(service, unit, DR, signed(platform[1], document(1), document(
        2, confidentiality=Confidentiality.R)))
    with unit:
        unit.records.add_block("pat-1", Block(Party.PRACTITIONER, "dr-9"), NOW, "pat-1")
        unit.commit()
    return unit


def export(uow: FakeDocumentUnitOfWork, vault: EnvelopeVault, audit: Audit | None = None
           ) -> RecordExport:
    documents = DocumentService(vault, AFFINITY, audit or Audit(), clock=Clock(),
                                matrix=MATRIX)
    return RecordExport(lambda: uow, documents, NO_LOG, AFFINITY)


def test_the_export_counts_the_documents_the_caller_sees(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    assert export(uow, vault).document_count(PATIENT, record(uow)) == 4
    assert export(uow, vault).document_count(DR2, record(uow)) == 2  # not the restricted one


def test_the_parts_come_in_order_identity_documents_grants_blocks(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    parts = list(islice(export(uow, vault).parts(DR2, record(uow), "en"), 1 + 2 + 3 + 1))
    identity, *documents = parts[:3]
    assert isinstance(identity, Identity) and identity.resource["id"] == "pat-1"
    assert all(isinstance(p, Retrieved) for p in documents)
    report = next(p for p in documents if isinstance(p, Retrieved) and p.metadata.signs is None)
    assert report.content == REPORT and report.metadata.title == "Consultation MARKER-Title-1"
    grants, blocks = parts[3:6], parts[6:]
    assert all(isinstance(p, StoredGrant) for p in grants)
    assert sorted(p.grant.party_id for p in grants) == [  # type: ignore[union-attr]
        "dr-1", "dr-2", "ph-1"]
    assert [p.block.party_id for p in blocks] == ["dr-9"]  # type: ignore[union-attr]
    assert isinstance(blocks[0], StoredBlock)


def test_an_export_stops_at_a_tampered_document_and_alerts_the_officer(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    target = next(m.id for m in uow.documents.metadata.values() if m.signs is None
                  and m.confidentiality is Confidentiality.N)
    sealed = uow.documents.contents[target]
    flipped = sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])
    uow.documents.contents[target] = replace(sealed, ciphertext=flipped)
    audit = Audit()
    with pytest.raises(IntegrityFailure):
        list(islice(export(uow, vault, audit).parts(PATIENT, record(uow), "en"), 5))
    assert [r.entity_id for r in audit.records] == [target]


def test_the_export_of_a_patient_not_in_the_index_is_refused(
        uow: FakeDocumentUnitOfWork, vault: EnvelopeVault) -> None:
    other = RecordFacts(patient_id="pat-9")
    with pytest.raises(NotFound):
        next(export(uow, vault).parts(PATIENT, other, "en"))


