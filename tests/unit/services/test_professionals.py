"""Assistants' mandates and care teams, on a unit of work in memory: a practitioner mandates an
assistant in person, until a date, and ends it when they like, each change with its audit entry
in the same transaction; care teams name a known organization and known practitioners, and
are versioned like every directory resource."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE, Agent, AuditRecord
from carevault.domain.authorization import Subject, SubjectKind
from carevault.domain.errors import (
    BusinessRuleViolation,
    InvalidInput,
    NotFound,
    NotPermitted,
    VersionConflict,
)
from carevault.domain.queries import Page
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import NewProfessional
from carevault.services.professionals import (
    Professionals,
    create_care_team,
    read_care_team,
    search_care_teams,
    update_care_team,
)
from carevault.services.record_policy import Actor, Refused, practitioner_subject
from support.fake_directory import directory_context
from support.fake_uow import FakeAuditStore, FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CTX = directory_context(lambda: NOW)
PAGE = Page(0, 50)


class Audit:
    """The audit log's port: appends to the unit of work's store (committed with it)."""

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


class BrokenAudit:
    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        raise RuntimeError("the audit log is unreachable")


class World:
    """A hospital; a cardiologist and her colleague, a nurse, and a medical assistant."""

    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        with self.uow as uow:
            [org] = svc.register_organizations(uow, CTX, [new_organization(
                CTX.systems, identifier="ORG-1", name="Hôpital")])
            self.org = org.id
            people = svc.register_professionals(uow, CTX, [
                self.professional("HP-1", "physician", "cardiology"),
                self.professional("HP-2", "physician"),
                self.professional("HP-3", "nurse"),
                self.professional("HP-4", "medical-assistant")])
            self.doctor, self.colleague, self.nurse, self.assistant = (p.id for p, _ in people)
        self.uow.commits = 0
        self.service = Professionals(lambda: self.uow, Audit(), clock=lambda: NOW)

    def professional(self, identifier: str, profession: str,
                     specialty: str | None = None) -> NewProfessional:
        resource = new_practitioner(CTX.systems, identifier=identifier, family=identifier,
                                    given=["X"])
        return NewProfessional(resource, profession, specialty, self.org)

    @staticmethod
    def actor(practitioner_id: str, kind: SubjectKind = SubjectKind.PRACTITIONER,
              organization: str | None = None) -> Actor:
        return Actor(Subject(kind, practitioner_id), f"Practitioner/{practitioner_id}",
                     organization=organization)


@pytest.fixture
def world() -> World:
    return World()


def test_a_practitioner_mandates_an_assistant_and_the_audit_names_both(world: World) -> None:
    mandate = world.service.mandate_assistant(
        world.actor(world.doctor), world.doctor, world.assistant, NOW + 30 * DAY,
        frozenset({"lab", "imaging"}))
    assert (mandate.mandator_id, mandate.assistant_id, mandate.start, mandate.end) == (
        world.doctor, world.assistant, NOW, NOW + 30 * DAY)
    assert world.uow.commits == 1
    assert world.service.mandates(assistant_id=world.assistant) == [mandate]
    kept = world.uow.directory.mandate_rows[mandate.id]
    assert (kept.created_at, kept.created_by) == (NOW, f"Practitioner/{world.doctor}")
    [record] = world.uow.audit.records
    assert (record.interaction, record.action, record.kind, record.entity_id, record.agent) == (
        "assistant-mandate", ACTION_CREATE, "policy", world.doctor,
        Agent(f"Practitioner/{world.doctor}", "practitioner"))
    assert record.detail == {
        "mandate": mandate.id, "mandator": f"Practitioner/{world.doctor}",
        "assistant": f"Practitioner/{world.assistant}", "start": "2026-12-01T09:00:00.000Z",
        "end": "2026-12-31T09:00:00.000Z", "classes": "imaging lab"}
    assert record.patient is None and record.rule


def test_from_the_mandate_on_the_assistant_acts_for_their_mandator(world: World) -> None:
    with world.uow as uow:
        before = practitioner_subject(uow, world.assistant, now=NOW)
    assert before.kind is SubjectKind.ASSISTANT and before.mandator is None
    world.service.mandate_assistant(world.actor(world.doctor), world.doctor, world.assistant,
                                    NOW + 30 * DAY, frozenset({"lab"}))
    with world.uow as uow:
        after = practitioner_subject(uow, world.assistant, now=NOW)
    assert after.mandator is not None and after.mandator.id == world.doctor
    assert (after.mandator.profession, after.mandate_classes) == ("physician", {"lab"})


def test_a_mandate_starting_later_is_listed_first_and_acts_from_its_start(world: World) -> None:
    doctor = world.actor(world.doctor)
    now_on = world.service.mandate_assistant(doctor, world.doctor, world.assistant, NOW + DAY)
    later = world.service.mandate_assistant(doctor, world.doctor, world.assistant,
                                            NOW + 10 * DAY, start=NOW + 2 * DAY)
    assert world.service.mandates(mandator_id=world.doctor) == [later, now_on]
    assert world.service.mandates(mandator_id=world.colleague) == []
    with world.uow as uow:
        assert uow.directory.active_mandates(world.assistant, NOW + 3 * DAY) == [later]


def test_only_an_assistant_is_mandated(world: World) -> None:
    for somebody in (world.colleague, world.nurse):
        with pytest.raises(BusinessRuleViolation, match=f"Practitioner/{somebody} is not an "
                           "assistant: a colleague is given access by the patient"):
            world.service.mandate_assistant(world.actor(world.doctor), world.doctor, somebody,
                                            NOW + DAY)
    with pytest.raises(NotFound, match="Practitioner/nobody is not in the directory"):
        world.service.mandate_assistant(world.actor(world.doctor), world.doctor, "nobody",
                                        NOW + DAY)
    assert world.uow.directory.mandate_rows == {} and world.uow.audit.records == []
    assert world.uow.commits == 0


@pytest.mark.parametrize(("kind", "organization", "refusal"), [
    (SubjectKind.ASSISTANT, None, Refused),  # an assistant never mandates
    (SubjectKind.PRACTITIONER, "Organization/o1", NotPermitted),  # a system acting for them
])
def test_a_practitioner_mandates_in_person_only(world: World, kind: SubjectKind,
                                                organization: str | None,
                                                refusal: type[Exception]) -> None:
    with pytest.raises(refusal) as refused:
        world.service.mandate_assistant(world.actor(world.doctor, kind, organization),
                                        world.doctor, world.assistant, NOW + DAY)
    assert getattr(refused.value, "issue_code", None) == "forbidden"
    assert world.uow.directory.mandate_rows == {} and world.uow.commits == 0


def test_nobody_mandates_in_anothers_name(world: World) -> None:
    with pytest.raises(Refused):
        world.service.mandate_assistant(world.actor(world.colleague), world.doctor,
                                        world.assistant, NOW + DAY)
    assert world.uow.directory.mandate_rows == {}


@pytest.mark.parametrize(("assistant", "end", "error", "message"), [
    ("doctor", NOW + DAY, BusinessRuleViolation, "cannot mandate themselves"),
    ("assistant", NOW, InvalidInput, "needs an end date in the future"),
    ("assistant", NOW + 367 * DAY, BusinessRuleViolation, "lasts at most 366 days"),
])
def test_a_mandate_ends_and_lasts_at_most_a_year(world: World, assistant: str, end: datetime,
                                                  error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        world.service.mandate_assistant(world.actor(world.doctor), world.doctor,
                                        getattr(world, assistant), end)
    assert world.uow.directory.mandate_rows == {} and world.uow.audit.records == []


def test_a_mandate_whose_audit_entry_cannot_be_written_is_not_kept(world: World) -> None:
    broken = Professionals(lambda: world.uow, BrokenAudit(), clock=lambda: NOW)
    with pytest.raises(RuntimeError, match="unreachable"):
        broken.mandate_assistant(world.actor(world.doctor), world.doctor, world.assistant,
                                 NOW + DAY)
    assert world.service.mandates(assistant_id=world.assistant) == []
    assert world.uow.commits == 0


def test_a_practitioner_ends_their_mandate_once_and_only_theirs(world: World) -> None:
    doctor = world.actor(world.doctor)
    mandate = world.service.mandate_assistant(doctor, world.doctor, world.assistant, NOW + DAY)
    with pytest.raises(NotFound, match=re.escape(
            f"Practitioner/{world.colleague} has no mandate {mandate.id} in force")):
        world.service.end_mandate(world.actor(world.colleague), world.colleague, mandate.id)
    with pytest.raises(Refused):
        world.service.end_mandate(world.actor(world.colleague), world.doctor, mandate.id)
    world.service.end_mandate(doctor, world.doctor, mandate.id)
    [ended] = world.service.mandates(assistant_id=world.assistant)
    assert ended.ended_at == NOW
    assert world.uow.directory.mandate_rows[mandate.id].ended_by == f"Practitioner/{world.doctor}"
    _, ending = world.uow.audit.records
    assert (ending.interaction, ending.action, ending.detail) == (
        "assistant-mandate-end", ACTION_DELETE,
        {"mandate": mandate.id, "mandator": f"Practitioner/{world.doctor}"})
    with pytest.raises(NotFound, match="in force"):
        world.service.end_mandate(doctor, world.doctor, mandate.id)
    assert world.uow.commits == 2 and len(world.uow.audit.records) == 2
    with world.uow as uow:
        assert practitioner_subject(uow, world.assistant, now=NOW).mandator is None


# --- care teams -------------------------------------------------------------------------------


def team(world: World, *members: str, name: str = "Cardiologie",
         organization: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam", "status": "active", "name": name,
        "managingOrganization": [{"reference": f"Organization/{organization or world.org}"}],
        "participant": [{"member": {"reference": f"Practitioner/{m}"}} for m in members],
        **extra}


def test_a_care_team_is_stored_with_its_members_who_reach_it_from_now(world: World) -> None:
    with world.uow as uow:
        stored = create_care_team(uow, team(world, world.doctor, world.nurse), NOW)
        assert uow.directory.touched_professionals == [world.doctor, world.nurse]
    assert world.uow.commits == 1
    assert stored.version_id == 1 and stored.resource["meta"] == {
        "versionId": "1", "lastUpdated": "2026-12-01T09:00:00.000Z"}
    with world.uow as uow:
        assert read_care_team(uow, stored.id) == stored
        assert practitioner_subject(uow, world.nurse, now=NOW).care_team_ids == {stored.id}
        assert practitioner_subject(uow, world.colleague, now=NOW).care_team_ids == set()


@pytest.mark.parametrize(("members", "organization", "error", "message"), [
    (("nobody",), None, BusinessRuleViolation, "Practitioner/nobody is not known"),
    ((), "nowhere", BusinessRuleViolation, "Organization/nowhere is not known"),
    ((), None, InvalidInput, "a care team has a name"),
])
def test_a_care_team_names_known_practitioners_in_a_known_organization(
        world: World, members: tuple[str, ...], organization: str | None,
        error: type[Exception], message: str) -> None:
    resource = team(world, world.doctor, *members, organization=organization)
    if error is InvalidInput:
        resource["name"] = "  "
    with pytest.raises(error, match=message), world.uow as uow:
        create_care_team(uow, resource, NOW)
    assert world.uow.directory.tables["care_team"] == {} and world.uow.commits == 0


def test_a_care_team_update_needs_its_version_and_its_own_id(world: World) -> None:
    with world.uow as uow:
        first = create_care_team(uow, team(world, world.doctor, world.nurse), NOW)
    later = NOW + DAY
    with pytest.raises(NotFound, match="CareTeam/nobody is not known"), world.uow as uow:
        update_care_team(uow, "nobody", team(world, world.doctor), later, None)
    with pytest.raises(VersionConflict, match="If-Match names version 2"), world.uow as uow:
        update_care_team(uow, first.id, team(world, world.doctor), later, 2)
    with pytest.raises(BusinessRuleViolation, match="the id does not match the URL"), \
            world.uow as uow:
        update_care_team(uow, first.id, team(world, world.doctor, id="other"), later, 1)
    with world.uow as uow:
        second = update_care_team(uow, first.id, team(world, world.doctor, id=first.id), later, 1)
        assert uow.directory.touched_professionals == [world.doctor]
    assert second.version_id == 2 and world.uow.commits == 2
    with world.uow as uow:
        assert read_care_team(uow, first.id) == second
        assert [s.version_id for s in svc.history(uow, "CareTeam", first.id)] == [2, 1]
        # The nurse left the team with its new version.
        assert practitioner_subject(uow, world.nurse, now=later).care_team_ids == set()
        with pytest.raises(NotFound, match="CareTeam/nobody is not known"):
            read_care_team(uow, "nobody")


def test_care_teams_are_found_by_member_and_organization(world: World) -> None:
    with world.uow as uow:
        cardio = create_care_team(uow, team(world, world.doctor, world.nurse), NOW)
        night = create_care_team(uow, team(world, world.nurse, name="Nuit"), NOW)
    with world.uow as uow:
        found = search_care_teams(uow, [], [], [(world.nurse,)], PAGE)
        assert (found.total, found.items) == (2, [cardio, night])  # by name
        assert search_care_teams(uow, [], [(world.org,)], [(world.doctor,)], PAGE).items == [
            cardio]
        assert search_care_teams(uow, [(night.id,)], [], [(world.doctor,)], PAGE).total == 0
