"""A professional's accesses for the workspace's home page (`MyAccesses`), on the fakes: the
grants that reach them directly, through their organization and through their care teams, their
open emergency windows, the delegations they gave and received, their assistants' mandates;
an assistant acting for a practitioner sees the practitioner's; each view is recorded; an
assistant acts only for a practitioner whose mandate to them is in force."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    Delegation,
    EmergencyWindow,
    Grant,
    GrantLevel,
    Party,
    SubjectKind,
)
from carevault.domain.errors import NotPermitted
from carevault.domain.mandates import AssistantMandate
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import NewProfessional
from carevault.services.my_accesses import MyAccesses
from carevault.services.professionals import create_care_team
from carevault.services.record_policy import Actor, practitioner_subject
from support.builders import patient
from support.fake_directory import directory_context
from support.fake_records import FakeRecordStore
from support.fake_uow import FakeAuditStore, FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CTX = directory_context(lambda: NOW)


class Audit:
    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


class World:
    """A hospital; Dr One (in a care team), Dr Two, a nurse, an assistant; three patients."""

    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        with self.uow as uow:
            [org] = svc.register_organizations(uow, CTX, [new_organization(
                CTX.systems, identifier="ORG-1", name="Hôpital du Centre")])
            self.org = org.id
            people = svc.register_professionals(uow, CTX, [
                self.professional("HP-1", "One", "physician"),
                self.professional("HP-2", "Two", "physician"),
                self.professional("HP-3", "Three", "nurse"),
                self.professional("HP-4", "Four", "medical-assistant")])
            self.one, self.two, self.nurse, self.assistant = (p.id for p, _ in people)
            patients = svc.register_patients(uow, CTX, [
                patient(CTX.systems, 1, family="Alpha", given=["Ann"]),
                patient(CTX.systems, 2, family="Beta", given=["Ben"]),
                patient(CTX.systems, 3, family="Gamma", given=["Gil"])])
            self.a, self.b, self.c = (p.id for p in patients)
            team = create_care_team(uow, {
                "resourceType": "CareTeam", "status": "active", "name": "Cardiologie",
                "managingOrganization": [{"reference": f"Organization/{self.org}"}],
                "participant": [{"member": {"reference": f"Practitioner/{self.one}"}}]}, NOW)
            self.team = team.id
            uow.records = FakeRecordStore(patients={p.id: p.resource for p in patients})
            uow.commit()
        self.service = MyAccesses(lambda: self.uow, Audit(), clock=lambda: NOW)

    def professional(self, identifier: str, family: str, profession: str) -> NewProfessional:
        resource = new_practitioner(CTX.systems, identifier=identifier, family=family,
                                    given=["Dr"])
        return NewProfessional(resource, profession, None, self.org)

    def actor(self, practitioner_id: str) -> Actor:
        with self.uow as uow:
            subject = practitioner_subject(uow, practitioner_id, now=NOW)
        return Actor(subject, f"Practitioner/{practitioner_id}")

    def grant(self, patient_id: str, party: Party, party_id: str, end: datetime | None,
              grant_id: str, delegable: bool = False) -> None:
        with self.uow as uow:
            uow.records.add_grant(patient_id, Grant(party, party_id, GrantLevel.NORMAL, NOW,
                                                    end, "account:p", delegable, grant_id), NOW)
            uow.commit()

    def mandate(self, mandator: str, assistant: str, mandate_id: str) -> None:
        with self.uow as uow:
            uow.directory.add_mandate(AssistantMandate(
                mandate_id, mandator, assistant, NOW - DAY, NOW + 30 * DAY), NOW, "x")
            uow.commit()


@pytest.fixture
def world() -> World:
    return World()


def test_a_practitioner_sees_what_reaches_them_directly_through_their_organization_and_team(
        world: World) -> None:
    world.grant(world.a, Party.PRACTITIONER, world.one, NOW + 5 * DAY, "g-direct", True)
    world.grant(world.b, Party.ORGANIZATION, world.org, NOW + 2 * DAY, "g-org")
    world.grant(world.c, Party.CARE_TEAM, world.team, NOW + DAY, "g-team")
    world.grant(world.c, Party.PRACTITIONER, world.two, None, "g-theirs")
    view = world.service.overview(world.actor(world.one))
    assert [(g.grant.id, g.patient, g.via) for g in view.grants] == [
        ("g-team", "Gil Gamma", "Cardiologie"), ("g-org", "Ben Beta", "Hôpital du Centre"),
        ("g-direct", "Ann Alpha", "")]
    assert [g.grant.id for g in view.delegable] == ["g-direct"]
    assert not view.more and view.whose == world.one
    # Dr Two: only their own grant (and the organization's, which they work for too).
    theirs = world.service.overview(world.actor(world.two))
    assert [g.grant.id for g in theirs.grants] == ["g-org", "g-theirs"]
    [entry] = [e for e in world.uow.audit.records if e.agent.who == f"Practitioner/{world.one}"]
    assert (entry.interaction, entry.action, entry.outcome, entry.patient) == (
        "workspace-accesses", "R", "0", None)
    assert entry.detail == {"patients": "3"}


def test_emergencies_delegations_and_mandates_are_listed(world: World) -> None:
    with world.uow as uow:
        uow.records.open_emergency(world.a, EmergencyWindow(world.one, NOW + DAY, "w-1"),
                                   "unconscious", NOW)
        uow.records.add_delegation(world.b, Delegation(world.one, world.two, GrantLevel.NORMAL,
                                                       NOW, NOW + 3 * DAY, "d-given"), NOW)
        uow.records.add_delegation(world.c, Delegation(world.two, world.one, GrantLevel.NORMAL,
                                                       NOW, NOW + DAY, "d-received"), NOW)
        uow.commit()
    world.mandate(world.one, world.assistant, "m-1")
    view = world.service.overview(world.actor(world.one))
    [window] = view.emergencies
    assert (window.patient, window.window.reason, window.window.end) == (
        "Ann Alpha", "unconscious", NOW + DAY)
    assert [(d.delegation.id, d.given, d.colleague, d.patient) for d in view.delegations] == [
        ("d-received", False, "Dr Two", "Gil Gamma"), ("d-given", True, "Dr Two", "Ben Beta")]
    assert [(m.mandate.id, m.other) for m in view.mandates_given] == [("m-1", "Dr Four")]
    assert view.mandates_held == ()
    held = world.service.overview(world.actor(world.assistant)).mandates_held
    assert [(m.mandate.mandator_id, m.other) for m in held] == [(world.one, "Dr One")]


def test_an_assistant_acting_for_a_practitioner_sees_theirs_and_is_recorded_so(
        world: World) -> None:
    world.grant(world.a, Party.PRACTITIONER, world.one, None, "g-one")
    world.mandate(world.one, world.assistant, "m-1")
    acting = world.actor(world.assistant)  # one mandate in force: described with it
    assert acting.subject.mandator is not None and acting.subject.mandator.id == world.one
    view = world.service.overview(acting)
    assert view.whose == world.one and [g.grant.id for g in view.grants] == ["g-one"]
    entry = world.uow.audit.records[-1]
    assert (entry.agent.who, entry.agent.on_behalf_of) == (
        f"Practitioner/{world.assistant}", f"Practitioner/{world.one}")


def test_a_list_is_bounded_and_says_so(world: World) -> None:
    for n in range(3):
        world.grant(world.a, Party.PRACTITIONER, world.one, NOW + (n + 1) * DAY, f"g-{n}")
    service = MyAccesses(lambda: world.uow, Audit(), clock=lambda: NOW, limit=2)
    view = service.overview(world.actor(world.one))
    assert [g.grant.id for g in view.grants] == ["g-0", "g-1"] and view.more


def test_an_assistant_acts_only_for_a_practitioner_whose_mandate_is_in_force(
        world: World) -> None:
    world.mandate(world.one, world.assistant, "m-1")
    assistant = world.actor(world.assistant)
    world.service.choose_mandator(assistant, world.one)
    chosen = world.uow.audit.records[-1]
    assert (chosen.interaction, chosen.outcome, chosen.agent.on_behalf_of) == (
        "workspace-act-for", "0", f"Practitioner/{world.one}")
    with pytest.raises(NotPermitted):  # Dr Two never mandated them
        world.service.choose_mandator(assistant, world.two)
    refused = world.uow.audit.records[-1]
    assert (refused.outcome, refused.detail) == ("4", {"mandator": f"Practitioner/{world.two}"})
    with pytest.raises(NotPermitted):  # a physician is nobody's assistant
        world.service.choose_mandator(world.actor(world.two), world.one)
    with world.uow as uow:
        assert uow.directory.end_mandate("m-1", world.one, NOW, "x")
        uow.commit()
    with pytest.raises(NotPermitted):  # ended
        world.service.choose_mandator(assistant, world.one)
    assert assistant.subject.kind is SubjectKind.ASSISTANT
