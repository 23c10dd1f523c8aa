"""The directories' use cases as the FHIR API calls them (`DirectoryService`), on a unit of work
in memory: each opens its own unit of work, a write commits once and a refused one not at all,
a read commits nothing; practitioners and roles are served with their mailboxes, a role search
brings what ``_include`` asks for from the same snapshot, and PIXm's unknown domains are told
apart (source: not found; target: refused)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.domain.directory import Identifier, IdentityDomain
from carevault.domain.errors import NotFound, NotPermitted, VersionConflict
from carevault.domain.queries import Page, PatientQuery, RoleQuery
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as rules
from carevault.services.directory_service import DirectoryService, UnknownTargetSystem
from carevault.services.mail_directory import EndpointQuery, MailDirectory
from support.builders import HOSPITAL_SYSTEM, hospital, patient
from support.fake_directory import directory_context
from support.fake_messaging import FakeMessagingPkiStore
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CTX = directory_context(lambda: NOW)
PAGE = Page(0, 50)


class World:
    """A hospital (which assigns patient numbers) with Anne (HP-1, an encryption certificate:
    a mailbox) and Paul (HP-2, none), both physicians there; one patient."""

    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        self.uow.pki = FakeMessagingPkiStore()
        self.service = DirectoryService(
            lambda: self.uow, CTX, MailDirectory(CTX.systems, "msg.carevault.test", lambda: NOW)
        )
        with self.uow:
            (org,) = rules.register_organizations(self.uow, CTX, [hospital(CTX.systems)])
        self.org = org.id
        with self.uow:
            people = rules.register_professionals(self.uow, CTX, [
                rules.NewProfessional(
                    new_practitioner(CTX.systems, identifier=number, family="Doe",
                                     given=[given]),
                    "physician", organization_id=self.org)
                for number, given in (("HP-1", "Anne"), ("HP-2", "Paul"))])
        (anne, self.anne_role), (paul, self.paul_role) = people
        self.anne, self.paul = anne.id, paul.id
        self.uow.pki.add_certificate(CertificateRecord(
            "a1", "HP-1", "encryption", self.anne, None, "CN=HP-1", NOW - timedelta(days=1),
            NOW + timedelta(days=300),
            "-----BEGIN CERTIFICATE-----\n00a1\n-----END CERTIFICATE-----\n"))
        self.patient = self.service.create_patient(patient(CTX.systems, 1, local="H-1"), None)
        self.uow.commits = 0


@pytest.fixture
def world() -> World:
    return World()


def test_a_write_commits_once_and_a_read_commits_nothing(world: World) -> None:
    created = world.service.create_patient(patient(CTX.systems, 2), None)
    assert world.uow.commits == 1
    assert world.service.read("Patient", created.id) == created
    assert world.service.history("Patient", created.id) == [created]
    assert world.service.read_version("Patient", created.id, 1) == created
    found = world.service.search_patients(PatientQuery(ids=[(created.id,)]), PAGE)
    assert [s.id for s in found.items] == [created.id]
    assert world.uow.commits == 1


def test_a_refused_write_commits_nothing_and_changes_nothing(world: World) -> None:
    changed = {**world.patient.resource, "gender": "male"}
    with pytest.raises(VersionConflict):
        world.service.update_patient(world.patient.id, changed, 7, None)
    assert world.uow.commits == 0
    assert world.service.read("Patient", world.patient.id) == world.patient
    updated = world.service.update_patient(world.patient.id, changed, 1, None)
    assert updated.version_id == 2 and updated.resource["gender"] == "male"
    assert world.uow.commits == 1


def test_an_identity_source_writes_within_its_own_domain_only(world: World) -> None:
    outsider = IdentityDomain("https://carevault.lu/fhir/sid/local/elsewhere")
    with pytest.raises(NotPermitted, match="writes only the patients it identifies in"):
        world.service.create_patient(patient(CTX.systems, 3, local="H-3"), outsider)
    assert world.uow.commits == 0
    stored, created = world.service.feed_patient(
        Identifier(HOSPITAL_SYSTEM, "H-4"), patient(CTX.systems, 4, local="H-4"),
        IdentityDomain(HOSPITAL_SYSTEM))
    assert created and world.uow.commits == 1
    again, created = world.service.feed_patient(
        Identifier(HOSPITAL_SYSTEM, "H-4"), {**stored.resource, "gender": "male"},
        IdentityDomain(HOSPITAL_SYSTEM))
    assert not created and again.id == stored.id and again.version_id == 2


def test_a_practitioner_and_a_role_are_read_with_their_mailbox(world: World) -> None:
    anne = world.service.read("Practitioner", world.anne)
    assert {"system": "email", "value": "hp-1@msg.carevault.test", "use": "work"} in (
        anne.resource["telecom"])
    assert "telecom" not in world.service.read("Practitioner", world.paul).resource
    role = world.service.read("PractitionerRole", world.anne_role.id)
    assert role.resource["endpoint"] == [{"reference": f"Endpoint/msg-{world.anne}"}]
    # The stored resource is left as it was: the mailbox is derived on the way out.
    assert "telecom" not in world.uow.directory.practitioner(world.anne).resource  # type: ignore[union-attr]
    assert world.uow.commits == 0


def test_a_role_search_brings_only_what_include_asks_for(world: World) -> None:
    bare = world.service.search_roles(RoleQuery(), PAGE, [])
    assert bare.result.total == 2 and bare.included == []
    everything = world.service.search_roles(RoleQuery(), PAGE, [
        "PractitionerRole:practitioner", "PractitionerRole:organization",
        "PractitionerRole:endpoint"])
    kinds = sorted((s.resource["resourceType"], s.id) for s in everything.included)
    assert kinds == sorted([
        ("Practitioner", world.anne), ("Practitioner", world.paul),
        ("Organization", world.org),  # named by both roles, included once
        ("Endpoint", f"msg-{world.anne}")])
    included_anne = next(s for s in everything.included if s.id == world.anne)
    assert "telecom" in included_anne.resource  # an included practitioner is served too
    only_orgs = world.service.search_roles(RoleQuery(), PAGE, ["PractitionerRole:organization"])
    assert [s.id for s in only_orgs.included] == [world.org]


def test_mailboxes_are_read_and_searched(world: World) -> None:
    box = world.service.mailbox(f"msg-{world.anne}")
    assert box.resource["resourceType"] == "Endpoint"
    with pytest.raises(NotFound):
        world.service.mailbox(f"msg-{world.paul}")
    found = world.service.search_mailboxes(EndpointQuery(), PAGE)
    assert found.total == 1 and [s.id for s in found.items] == [box.id]


def test_pix_tells_an_unknown_source_domain_from_an_unknown_target_domain(world: World) -> None:
    with pytest.raises(NotFound, match="Assigning Authority not found") as unknown_source:
        world.service.cross_reference(Identifier("urn:oid:9.9", "X"), [])
    assert unknown_source.value.issue_code == "code-invalid"
    with pytest.raises(UnknownTargetSystem, match=r"'urn:oid:9\.9' not found"):
        world.service.cross_reference(Identifier(HOSPITAL_SYSTEM, "H-1"), ["urn:oid:9.9"])
    answer = world.service.cross_reference(
        Identifier(HOSPITAL_SYSTEM, "H-1"), [CTX.systems.national])
    assert answer.patient_id == world.patient.id
    assert [i.system for i in answer.identifiers] == [CTX.systems.national]
    assert world.uow.commits == 0


def test_a_care_team_is_stamped_by_the_directory_clock_and_versioned(world: World) -> None:
    team = {
        "resourceType": "CareTeam", "status": "active", "name": "Cardiologie",
        "managingOrganization": [{"reference": f"Organization/{world.org}"}],
        "participant": [{"member": {"reference": f"Practitioner/{world.anne}"}}]}
    stored = world.service.create_care_team(team)
    assert stored.resource["meta"]["lastUpdated"] == "2026-12-01T09:00:00.000Z"
    assert world.uow.commits == 1
    with pytest.raises(VersionConflict):
        world.service.update_care_team(stored.id, {**stored.resource, "name": "Cardio"}, 2)
    assert world.uow.commits == 1
    renamed = world.service.update_care_team(stored.id, {**stored.resource, "name": "Cardio"}, 1)
    assert renamed.version_id == 2
    found = world.service.search_care_teams([(stored.id,)], [], [], PAGE)
    assert [s.resource["name"] for s in found.items] == ["Cardio"]


def test_organizations_and_practitioners_are_created_and_searched(world: World) -> None:
    org = world.service.create_organization(
        new_organization(CTX.systems, identifier="ORG-X", name="Laboratoire X"))
    assert world.uow.commits == 1
    found = world.service.search_organizations(rules.OrganizationQuery(ids=[(org.id,)]), PAGE)
    assert [s.id for s in found.items] == [org.id]
    lea = world.service.create_practitioner(
        new_practitioner(CTX.systems, identifier="HP-3", family="Doe", given=["Lea"]))
    people = world.service.search_practitioners(rules.PractitionerQuery(ids=[(lea.id,)]), PAGE)
    assert [s.id for s in people.items] == [lea.id]
    with pytest.raises(VersionConflict):
        world.service.update_practitioner(lea.id, lea.resource, 5)
    assert world.uow.commits == 2


def test_a_merge_and_its_unmerge_are_one_transaction_each(world: World) -> None:
    other = world.service.create_patient(patient(CTX.systems, 5, family="Doublon"), None)
    merged = world.service.merge_patients(other.id, world.patient.id, None)
    assert merged.id == other.id and merged.resource["active"] is False
    assert world.uow.commits == 2
    assert {"other": {"reference": f"Patient/{world.patient.id}"}, "type": "replaced-by"} in (
        world.service.read("Patient", other.id).resource["link"])
    with pytest.raises(NotPermitted):
        world.service.unmerge_patient(other.id, IdentityDomain("urn:oid:9.9"))
    assert world.uow.commits == 2
    restored = world.service.unmerge_patient(other.id, None)
    assert restored.id == other.id and restored.resource["active"] is True
    assert world.uow.commits == 3
