"""A small world for the document services' unit tests (tests/unit/services/test_documents.py,
test_document_publication.py, test_preview.py, test_record_export.py): the built-in affinity
domain and profile matrix, a patient pat-1 and the practitioners their grants name, the
platform's real PKI with a hospital system's certificate (the authors' signatures), the real
vault, the builders of ITI-65 submissions as `carevault.fhirmodel.mhd` hands them to the service."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carevault.adapters.crypto.keyring import KeyRing
from carevault.adapters.crypto.local_kek import LocalKekStore
from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.package_config import builtin_profile_matrix
from carevault.adapters.storage.document_store import DocumentCriteria
from carevault.api.fhir.terminology_handlers import load_affinity_domain
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    Action,
    Confidentiality,
    Grant,
    GrantLevel,
    Party,
    RecordFacts,
    Subject,
    SubjectKind,
    decide,
)
from carevault.domain.documents import Coding
from carevault.fhirmodel.directory import IdentitySystems
from carevault.fhirmodel.mhd import PatientRef, ProvidedDocument, ProvidedSubmission
from carevault.services import pki
from carevault.services.documents import DocumentService, PermittedRead
from support.builders import hospital
from support.documents import detached_jws
from support.fake_documents import FakeDocumentUnitOfWork
from support.fake_uow import FakeAuditStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MATRIX = builtin_profile_matrix()
AFFINITY = load_affinity_domain(None)
SYSTEMS = IdentitySystems(
    national="https://carevault.lu/fhir/sid/matricule",
    professional="https://carevault.lu/fhir/sid/hpd",
    organization="https://carevault.lu/fhir/sid/organization",
)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
REPORT = b"%PDF-1.7\n% consultation MARKER-Kaiser-4417\n%%EOF\n"

DR = Subject(SubjectKind.PRACTITIONER, "dr-1", "physician", organization_ids=frozenset({"org-1"}))
DR2 = Subject(SubjectKind.PRACTITIONER, "dr-2", "physician", organization_ids=frozenset({"org-2"}))
PHARMACIST = Subject(SubjectKind.PRACTITIONER, "ph-1", "pharmacist",
                     organization_ids=frozenset({"org-1"}))
PATIENT = Subject(SubjectKind.PATIENT, "pat-1")


class Audit:
    """The audit log's port outside any transaction (`AuditAppender`): what it was given."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        self.records.extend(records)
        return list(range(len(self.records) - len(records), len(self.records)))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Signing:
    """The hospital org-1's system, holding a certificate the platform issued."""

    def __init__(self, key_pem: bytes, chain: list[bytes]) -> None:
        self.key_pem, self.chain = key_pem, chain

    def sign(self, content: bytes) -> bytes:
        return detached_jws(content, self.key_pem.decode("ascii"), self.chain)


def issue_signing() -> tuple[FakeDocumentUnitOfWork, Signing]:
    """The platform's PKI and org-1's certificate (issuing one takes a while: once a module)."""
    uow = FakeDocumentUnitOfWork()
    uow.directory.add_organization("org-1", resource=hospital(SYSTEMS, "ORG-H1"))
    ctx = pki.PkiContext(SYSTEMS, b"ca password", lambda: NOW)
    delivered: list[pki.Credentials] = []
    with uow:
        assert pki.init_pki(uow, ctx)
    with uow:
        record = pki.issue_system_certificate(uow, ctx, "org-1", delivered.append)
    [credentials] = delivered
    leaf = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))
    issuing = x509.load_pem_x509_certificate(credentials.chain_pem.encode("ascii"))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)]
    return uow, Signing(credentials.private_key_pem, chain)


def fresh_world(with_pki: FakeDocumentUnitOfWork) -> FakeDocumentUnitOfWork:
    """A fresh unit of work with the platform's PKI, org-1, the patient pat-1 and their grants:
    dr-1 extended (N and R), dr-2 and the pharmacist ph-1 normal (N)."""
    fresh = FakeDocumentUnitOfWork()
    fresh.pki = copy.deepcopy(with_pki.pki)
    fresh.directory.add_organization("org-1", resource=hospital(SYSTEMS, "ORG-H1"))
    fresh.directory.add_patient("pat-1", [])
    for party_id, level in (("dr-1", GrantLevel.EXTENDED), ("dr-2", GrantLevel.NORMAL),
                            ("ph-1", GrantLevel.NORMAL)):
        fresh.records.add_grant("pat-1", Grant(Party.PRACTITIONER, party_id, level,
                                               NOW - timedelta(days=1)), NOW)
    fresh.commit()
    fresh.commits = 0
    return fresh


def new_vault(registry: Path) -> EnvelopeVault:
    """The real envelope vault, its first KEK derived from a random master key."""
    keyring = KeyRing(LocalKekStore(os.urandom(32), registry))
    keyring.initialize()
    return EnvelopeVault(keyring)


def document(n: int = 1, content: bytes = REPORT, *, type_code: str = "11488-4",
             **changes: object) -> ProvidedDocument:
    provided = ProvidedDocument(
        full_url=f"urn:uuid:doc-{n}", master_identifier=f"urn:oid:1.2.3.{n}",
        patient=PatientRef("pat-1"), class_code=Coding(LOINC, "11488-4"),
        type_code=Coding(LOINC, type_code, "a display the store does not keep"),
        format_code=Coding(FORMATS, "urn:ihe:iti:xds-sd:pdf:2008"),
        practice_setting=Coding(SNOMED, "394802001"), facility_type=Coding(SNOMED, "22232009"),
        confidentiality=Confidentiality.N, author_practitioner_id=None,
        author_organization_id=None, author_patient_id=None, content_type="application/pdf",
        content=content, declared_size=len(content), declared_sha1=None,
        created=NOW - timedelta(days=1), service_start=None, service_end=None,
        title=f"Consultation MARKER-Title-{n}", description="in confidence", language="fr",
        replaces=None, held=False, events=(), binary_url=None, signs=None)
    return replace(provided, **changes)  # type: ignore[arg-type]


def signature(of: ProvidedDocument, jws: bytes) -> ProvidedDocument:
    """The signature of ``of`` (its uniqueId: the document's, with ``.9``)."""
    return replace(of, full_url=f"{of.full_url}-sig", master_identifier=f"{of.master_identifier}.9",
                   content_type="application/jose", content=jws, declared_size=len(jws),
                   title=None, description=None, signs=of.full_url, replaces=None,
                   format_code=Coding(FORMATS, "urn:ihe:iti:dsg:detached:2014"))


def submission(*documents: ProvidedDocument, uid: str = "urn:oid:9.9.1") -> ProvidedSubmission:
    return ProvidedSubmission(
        full_url="urn:uuid:set", master_identifier=uid, source_id="urn:oid:1.3.6.1.4.1.21367",
        patient=PatientRef("pat-1"), documents=documents,
        entry_order=("urn:uuid:set", *(d.full_url for d in documents)),
        details={"title": "Consultation"})


def signed(signing: Signing, *documents: ProvidedDocument,
           uid: str = "urn:oid:9.9.1") -> ProvidedSubmission:
    """The documents, each with org-1's signature over its bytes."""
    signatures = [signature(d, signing.sign(d.content)) for d in documents]
    return submission(*documents, *signatures, uid=uid)


def record(uow: FakeDocumentUnitOfWork) -> RecordFacts:
    found = uow.records.load("pat-1", NOW)
    assert found is not None
    return found


def publish(service: DocumentService, uow: FakeDocumentUnitOfWork, subject: Subject,
            provided: ProvidedSubmission) -> list[str]:
    """Publish and commit; the new documents' ids, signatures left out, in submission order."""
    with uow:
        published = service.publisher.publish(uow, subject, record(uow), provided)
        uow.commit()
    return [published.ids[d.full_url] for d in provided.documents if d.signs is None]


class AuditPort:
    """The record policy's audit port: appends to the unit of work's audit store."""

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


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
        service.publisher.publish(uow, subject, record(uow), provided)
    return str(getattr(raised.value, "message", raised.value))


def nothing_stored(uow: FakeDocumentUnitOfWork) -> None:
    assert uow.documents.metadata == {} and uow.documents.contents == {}
    assert uow.documents.sets == {} and uow.records.notifications == []
