"""What would this professional see? (`what_they_would_see`) on a unit of work in memory: the
documents the engine's filter lets the professional, as the directory describes them, see now,
newest first, with the total; the preview recorded as the patient's ``access-preview`` in its
transaction; refused to anyone but the record's patient or representative."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.storage.directory_store import Stored
from carevault.domain.accounts import Mandate
from carevault.domain.authorization import Confidentiality, MandateScope, Subject, SubjectKind
from carevault.domain.errors import NotFound
from carevault.fhirmodel.directory import RoleEntry
from carevault.services.documents import DocumentService
from carevault.services.preview import what_they_would_see
from carevault.services.record_policy import Actor, RecordPolicy, Refused
from support.document_world import (
    AFFINITY,
    DR,
    MATRIX,
    NOW,
    PATIENT,
    Audit,
    AuditPort,
    Clock,
    Signing,
    document,
    fresh_world,
    issue_signing,
    new_vault,
    publish,
    signed,
)
from support.fake_documents import FakeDocumentUnitOfWork

ME = Actor(PATIENT, "account:acc-pat")


@pytest.fixture(scope="module")
def platform() -> tuple[FakeDocumentUnitOfWork, Signing]:
    return issue_signing()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> EnvelopeVault:
    return new_vault(tmp_path_factory.mktemp("keks"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def uow(platform: tuple[FakeDocumentUnitOfWork, Signing]) -> FakeDocumentUnitOfWork:
    """pat-1's record holding, from dr-1: a normal report, then a restricted one, then a
    prescription; dr-1 to dr-3 in the directory (dr-3 has no grant)."""
    unit = fresh_world(platform[0])
    unit.directory.add_organization("org-2")
    for n, (practitioner_id, organization_id) in enumerate(
            [("dr-1", "org-1"), ("dr-2", "org-2"), ("dr-3", "org-2")], start=1):
        unit.directory.add_practitioner(practitioner_id, f"HP-{n}")
        role = {"resourceType": "PractitionerRole", "id": f"role-{n}"}
        unit.directory.write_roles(
            [(Stored(f"role-{n}", 1, role),
              RoleEntry(practitioner_id, organization_id, "physician", None, True))],
            NOW, new=True)
    unit.commit()
    return unit


@pytest.fixture
def documents(vault: EnvelopeVault, clock: Clock) -> DocumentService:
    return DocumentService(vault, AFFINITY, Audit(), clock=clock, matrix=MATRIX)


@pytest.fixture
def published(uow: FakeDocumentUnitOfWork, platform: tuple[FakeDocumentUnitOfWork, Signing],
              documents: DocumentService, clock: Clock) -> list[str]:
    """The three reports' ids, oldest first (each with its signature)."""
    service = documents
    ids = []
    for n, changes in enumerate([{}, {"confidentiality": Confidentiality.R},
                                 {"type_code": "57833-6"}], start=1):
        clock.now = NOW + timedelta(minutes=n)
        ids += publish(service, uow, DR, signed(platform[1], document(n, **changes),  # type: ignore[arg-type]
                                                uid=f"urn:oid:9.9.{n}"))
    clock.now = NOW + timedelta(hours=1)
    uow.commits = 0
    return ids


def preview(uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
            practitioner_id: str, actor: Actor = ME,
            audit: AuditPort | None = None) -> tuple[int, list[str]]:
    """The preview's total and its documents' ids (signatures left out)."""
    policy = RecordPolicy(lambda: uow, audit or AuditPort(), clock=clock, matrix=MATRIX)
    seen = what_they_would_see(policy, documents, lambda: uow, actor, "pat-1", practitioner_id)
    assert seen.practitioner_id == practitioner_id
    return seen.total, [m.id for m in seen.documents if m.signs is None]


def test_a_practitioner_with_a_normal_grant_would_see_the_normal_documents_newest_first(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    normal, _restricted, prescription = published
    # 4: with their signatures
    assert preview(uow, clock, documents, "dr-2") == (4, [prescription, normal])
    [entry] = uow.audit.records
    assert (entry.interaction, entry.kind, entry.patient, entry.entity_type, entry.entity_id) == (
        "access-preview", "patient-action", "pat-1", "Practitioner", "dr-2")
    assert entry.detail["documents"] == "4"
    assert (entry.agent.who, entry.agent.on_behalf_of) == ("account:acc-pat", None)
    assert uow.commits == 1


def test_the_author_would_see_everything_they_wrote(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    assert preview(uow, clock, documents, "dr-1") == (6, list(reversed(published)))


def test_a_practitioner_without_a_grant_would_see_nothing_and_the_preview_is_recorded(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    assert preview(uow, clock, documents, "dr-3") == (0, [])
    [entry] = uow.audit.records
    assert entry.detail["documents"] == "0" and uow.commits == 1


def test_a_document_the_patient_hid_is_not_in_the_preview(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    normal, _restricted, prescription = published
    policy = RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)
    policy.hide_document(ME, "pat-1", normal, True)
    assert preview(uow, clock, documents, "dr-2") == (2, [prescription])


def test_a_professional_not_in_the_directory_is_refused_and_nothing_is_recorded(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    with pytest.raises(NotFound, match="this professional is not in the directory"):
        preview(uow, clock, documents, "dr-9")
    assert uow.audit.records == [] and uow.commits == 0


def test_only_the_patient_or_their_representative_may_preview(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    for stranger in (Actor(Subject(SubjectKind.PATIENT, "pat-2"), "account:acc-2"),
                     Actor(DR, "Practitioner/dr-1")):
        with pytest.raises(Refused):
            preview(uow, clock, documents, "dr-2", stranger)
    assert uow.audit.records == [] and uow.commits == 0


def test_a_representative_previews_on_the_patients_behalf(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    with uow:
        uow.accounts.add_mandate(Mandate("m-1", "acc-rep", "pat-1", MandateScope.MANAGE.value,
                                         NOW - timedelta(days=1), None), NOW)
        uow.commit()
    representative = Actor(Subject(SubjectKind.REPRESENTATIVE, "acc-rep"), "account:acc-rep")
    assert preview(uow, clock, documents, "dr-2", representative)[0] == 4
    [entry] = uow.audit.records
    assert (entry.agent.who, entry.agent.on_behalf_of) == ("account:acc-rep", "Patient/pat-1")


def test_when_the_preview_cannot_be_recorded_it_is_not_shown(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    class Broken(AuditPort):
        def append_with(self, store: object, records: object) -> list[int]:
            raise RuntimeError("the audit store is unreachable")

    with pytest.raises(RuntimeError, match="unreachable"):
        preview(uow, clock, documents, "dr-2", audit=Broken())
    assert uow.audit.records == [] and uow.commits == 0


def test_what_the_asker_may_not_read_is_neither_listed_nor_counted(
        uow: FakeDocumentUnitOfWork, platform: tuple[FakeDocumentUnitOfWork, Signing],
        clock: Clock, documents: DocumentService, published: list[str]) -> None:
    """Their author sees a result held back until it is explained to the patient, and a
    secret (V) note: the patient's preview of that author lists and counts the note but not
    the held result, a representative's neither (a representative never reads V), and the
    titles of what they may not read appear nowhere in the preview."""
    held, secret = (
        publish(documents, uow, DR, signed(platform[1], document(n, **changes),  # type: ignore[arg-type]
                                           uid=f"urn:oid:9.9.{n}"))[0]
        for n, changes in ((4, {"held": True, "title": "HELD biopsy result"}),
                           (5, {"confidentiality": Confidentiality.V, "title": "SECRET note"})))
    uow.commits = 0
    total, shown = preview(uow, clock, documents, "dr-1")
    assert secret in shown and held not in shown
    assert total == 8  # the three reports, the note, and their four signatures
    with uow:
        uow.accounts.add_mandate(Mandate("m-1", "acc-rep", "pat-1", MandateScope.READ.value,
                                         NOW - timedelta(days=1), None), NOW)
        uow.commit()
    representative = Actor(Subject(SubjectKind.REPRESENTATIVE, "acc-rep"), "account:acc-rep")
    policy = RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)
    seen = what_they_would_see(policy, documents, lambda: uow, representative, "pat-1", "dr-1")
    titles = {m.title for m in seen.documents}
    assert not titles & {"HELD biopsy result", "SECRET note"}
    assert {m.id for m in seen.documents if m.signs is None} == set(published)
    assert seen.total == 6
    assert uow.audit.records[-1].detail["documents"] == "6"


def test_an_author_whose_grant_was_revoked_would_see_nothing_not_even_their_own_documents(
        uow: FakeDocumentUnitOfWork, clock: Clock, documents: DocumentService,
        published: list[str]) -> None:
    """The engine refuses their search of the record: the preview shows what they could
    search, not what its filter alone would let through (their own documents)."""
    [grant] = [g for g in uow.records.grants("pat-1") if g.grant.party_id == "dr-1"]
    with uow:
        assert uow.records.revoke_grant("pat-1", grant.grant.id, NOW, "pat-1")
        uow.commit()
    policy = RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)
    seen = what_they_would_see(policy, documents, lambda: uow, ME, "pat-1", "dr-1")
    assert seen.decision.permit is False
    assert (seen.total, seen.documents) == (0, ())
