"""The fake directory (`support.fake_directory`) answers as the real `DirectoryStore` does: the
same checks run on the fake and on the real store, on SQLite and PostgreSQL, so that the
directory's services tested on the fake (tests/unit/services: test_directory, test_finder,
test_professionals) are tested against the behaviour they will meet. What the database refuses
(an identifier given twice, a role of nobody, a version written twice) the fake refuses too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from carevault.adapters.storage.directory_store import (
    ActiveRole,
    PatientWrite,
    SearchResult,
    Stored,
)
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.directory import Identifier, MergeState
from carevault.domain.errors import Conflict
from carevault.domain.mandates import AssistantMandate
from carevault.domain.queries import (
    DateRange,
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
)
from carevault.fhirmodel.directory import (
    care_team_entry,
    new_organization,
    new_practitioner,
    new_role,
    organization_entry,
    patient_entry,
    practitioner_entry,
    role_entry,
)
from carevault.services.directory import DirectoryContext
from support.builders import HOSPITAL_SYSTEM, patient
from support.contracts import Reused
from support.fake_directory import directory_context
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PAGE = Page(0, 50)


def _ids(found: SearchResult) -> list[str]:
    return [item.id for item in found.items]


def _patient(ctx: DirectoryContext, patient_id: str, seq: int, version: int = 1,
             merged_into: str | None = None, **details: Any) -> PatientWrite:
    resource = patient(ctx.systems, seq, **details)
    resource["id"] = patient_id
    return PatientWrite(patient_id, version, patient_entry(resource, ctx.systems), resource,
                        merged_into)


def check_patients(uow: Any, ctx: DirectoryContext) -> None:
    national = ctx.systems.national
    p1 = _patient(ctx, "p1", 1, given=["Anne", "Marie"], local="L-1")
    p2 = _patient(ctx, "p2", 2, family="Gonçalves", given=["João"], born=date(1950, 1, 31),
                  gender="male", postal_code="L-9012")
    p3 = _patient(ctx, "p3", 3, family="Weber", given=["Paul"], born=date(1990, 2, 1))
    n1, n2, n3 = (p.entry.national_id for p in (p1, p2, p3))
    with uow:
        assert uow.directory.touched_patients == []
        uow.directory.write_patients([p1, p2, p3], NOW, national_system=national, new=True)
        assert uow.directory.touched_patients == ["p1", "p2", "p3"]
        uow.commit()
    with uow:
        directory = uow.directory
        assert directory.touched_patients == []  # what this transaction wrote: nothing yet
        assert directory.read("Patient", "p1") == Stored("p1", 1, p1.resource)
        assert directory.read("Patient", "nobody") is None
        assert directory.patient_merge_state("p1") == MergeState("p1", None)
        assert directory.patient_merge_state("nobody") is None
        assert directory.identifier_owners([
            (national, n1), (HOSPITAL_SYSTEM, "L-1"), (HOSPITAL_SYSTEM, "L-2"),
            (national, "unknown")]) == {(national, n1): "p1",
                                        (HOSPITAL_SYSTEM, "L-1"): "p1"}
        assert directory.patients_by_identifier(HOSPITAL_SYSTEM, "L-1") == ["p1"]
        assert directory.patients_by_identifier(national, "L-1") == []
        assert directory.identifiers_of(["p2", "p1"]) == sorted([
            (national, n1), (national, n2), (HOSPITAL_SYSTEM, "L-1")])

        def find(**criteria: Any) -> list[str]:
            return _ids(directory.search_patients(PatientQuery(**criteria), PAGE))

        assert find() == ["p1", "p2", "p3"]  # by id
        assert find(family=[("mull",)]) == ["p1"]
        assert find(given=[("mar",)]) == ["p1"]  # a second given name matches too
        assert find(name=[("joao",)]) == ["p2"]
        assert find(name=[("weber",)]) == ["p3"]
        assert find(family=[("gonc", "mul")]) == ["p1", "p2"]
        assert find(family=[("gonc",)], given=[("anne",)]) == []
        assert find(family=[("%",)]) == [] and find(family=[("m_ller",)]) == []
        assert find(family=[()]) == []  # no alternative left matches nothing
        assert find(birthdate=[DateRange("ge", date(1960, 1, 1), date(1960, 1, 2))]) == [
            "p1", "p3"]
        assert find(birthdate=[DateRange("eq", date(1950, 1, 31), date(1950, 2, 1))]) == ["p2"]
        assert find(birthdate=[DateRange("ne", date(1950, 1, 31), date(1950, 2, 1))]) == [
            "p1", "p3"]
        assert find(birthdate=[DateRange("lt", date(1980, 4, 12), date(1980, 4, 13))]) == ["p2"]
        assert find(birthdate=[DateRange("le", date(1980, 4, 12), date(1980, 4, 13))]) == [
            "p1", "p2"]
        assert find(birthdate=[DateRange("gt", date(1980, 4, 12), date(1980, 4, 13))]) == ["p3"]
        assert find(gender=[("male", "other")]) == ["p2"]
        assert find(postal_code=[("l-90",)]) == ["p2"]
        assert find(identifier=[(Identifier("", n2),)]) == ["p2"]
        assert find(identifier=[(Identifier(HOSPITAL_SYSTEM, "L-1"),
                                 Identifier(national, n3))]) == ["p1", "p3"]
        assert find(identifier=[(Identifier(national, "L-1"),)]) == []
        assert find(ids=[("p3", "p2")], active=True) == ["p2", "p3"]
        assert find(active=False) == []
        paged = directory.search_patients(PatientQuery(), Page(1, 1))
        assert (paged.total, _ids(paged)) == (3, ["p2"])
        # A new version; then the duplicate is folded into the first entry.
        renamed = _patient(ctx, "p1", 1, version=2, family="Schmit", local="L-1")
        directory.write_patients([renamed], NOW, national_system=national, new=False)
        merged = _patient(ctx, "p2", 2, version=2, merged_into="p1", family="Gonçalves",
                          born=date(1950, 1, 31))
        directory.write_patients([merged], NOW, national_system=national, new=False)
        directory.record_merge("p2", "p1", NOW)
        assert directory.touched_patients == ["p1", "p2"]
        uow.commit()
    with uow:
        directory = uow.directory
        assert [s.version_id for s in directory.history("Patient", "p1")] == [2, 1]
        assert directory.version("Patient", "p1", 1) == Stored("p1", 1, p1.resource)
        assert directory.version("Patient", "p1", 3) is None
        assert directory.read("Patient", "p1").resource["name"][0]["family"] == "Schmit"
        assert directory.patient_merge_state("p2") == MergeState("p2", "p1")
        assert directory.merged_into("p1") == ["p2"] and directory.merged_into("p2") == []
        assert _ids(directory.search_patients(PatientQuery(family=[("gonc",)]), PAGE)) == []
        by_old = PatientQuery(identifier=[(Identifier(national, n2),)])
        assert _ids(directory.search_patients(by_old, PAGE)) == ["p1"]  # the survivor
        assert _ids(directory.search_patients(PatientQuery(family=[("mull",)]), PAGE)) == []
        assert directory.patients_by_identifier(national, n2) == ["p2"]
        directory.record_unmerge("p2", NOW)
        directory.write_patients([_patient(ctx, "p4", 4)], NOW, national_system=national,
                                 new=True)  # not committed
    with uow:
        assert uow.directory.read("Patient", "p4") is None
    refused = [
        ([_patient(ctx, "p4", 3, born=date(1990, 2, 1))], True),  # p3's national identifier
        ([_patient(ctx, "p4", 4, local="L-1")], True),  # p1's local identifier
        ([_patient(ctx, "p4", 4), _patient(ctx, "p5", 4)], True),  # one identifier, two
        ([_patient(ctx, "p3", 5)], True),  # p3 exists
        ([_patient(ctx, "p3", 3)], False),  # version 1 of p3 is written already
        ([_patient(ctx, "p4", 4, version=2)], False),  # no p4 to update
        ([_patient(ctx, "p4", 4, merged_into="nobody")], True),
    ]
    for writes, new in refused:
        with pytest.raises(Conflict), uow:
            uow.directory.write_patients(writes, NOW, national_system=national, new=new)
    with uow:
        assert uow.directory.read("Patient", "p4") is None
        assert uow.directory.read("Patient", "p3") == Stored("p3", 1, p3.resource)


def test_the_fake_directory_keeps_patients() -> None:
    check_patients(FakeUnitOfWork(), directory_context(lambda: NOW))


def test_the_real_directory_keeps_patients(uow: Callable[[], SqlUnitOfWork],
                                           ctx: DirectoryContext) -> None:
    check_patients(Reused(uow), ctx)


def _organization(ctx: DirectoryContext, org_id: str, identifier: str, name: str, *,
                  system: str | None = None, active: bool = True,
                  version: int = 1) -> tuple[Stored, Any]:
    resource = new_organization(ctx.systems, identifier=identifier, name=name,
                                patient_id_system=system, city="Luxembourg")
    resource["active"] = active
    return Stored(org_id, version, resource), organization_entry(resource, ctx.systems)


def _practitioner(ctx: DirectoryContext, pr_id: str, identifier: str, family: str,
                  given: list[str], *, active: bool = True, licence: str = "active",
                  version: int = 1) -> tuple[Stored, Any]:
    resource = new_practitioner(ctx.systems, identifier=identifier, family=family, given=given,
                                licence_status=licence)
    resource["active"] = active
    return Stored(pr_id, version, resource), practitioner_entry(resource, ctx.systems)


def _role(ctx: DirectoryContext, role_id: str, practitioner_id: str, profession: str,
          specialty: str | None = None, organization_id: str | None = None, *,
          active: bool = True) -> tuple[Stored, Any]:
    resource = new_role(ctx.professions, practitioner_id=practitioner_id, profession=profession,
                        specialty=specialty, organization_id=organization_id)
    resource["active"] = active
    return Stored(role_id, 1, resource), role_entry(resource, ctx.professions)


def check_professionals(uow: Any, ctx: DirectoryContext) -> None:
    o1 = _organization(ctx, "o1", "ORG-1", "Hôpital Kirchberg", system=HOSPITAL_SYSTEM)
    o2 = _organization(ctx, "o2", "ORG-2", "Clinique d'Esch")
    o3 = _organization(ctx, "o3", "ORG-3", "Ancien Hôpital", active=False)
    d1 = _practitioner(ctx, "d1", "HP-1", "Müller", ["Anne"])
    d2 = _practitioner(ctx, "d2", "HP-2", "Weber", ["Jean", "Paul"])
    d3 = _practitioner(ctx, "d3", "HP-3", "Mullet", ["Luc"], active=False)
    roles = [_role(ctx, "r1", "d1", "physician", "cardiology", "o1"),
             _role(ctx, "r2", "d1", "physician", None, "o2"),
             _role(ctx, "r3", "d2", "nurse"),
             _role(ctx, "r4", "d2", "nurse", None, "o1", active=False)]
    with uow:
        directory = uow.directory
        directory.write_organizations([o1, o2, o3], NOW, new=True)
        directory.write_practitioners([d3, d1, d2], NOW, new=True)
        directory.write_roles(roles, NOW, new=True)
        assert directory.touched_professionals == ["d3", "d1", "d2"]
        uow.commit()
    with uow:
        directory = uow.directory
        assert directory.read("Organization", "o1") == o1[0]
        assert directory.read("PractitionerRole", "r1") == roles[0][0]
        assert directory.practitioner("d1") == d1[0]
        assert directory.practitioner("nobody") is None
        assert directory.existing_ids("Organization", ["o1", "d1", "nobody"]) == {"o1"}
        assert directory.existing_ids("Practitioner", []) == set()
        assert directory.organization_ids_by_identifier(["ORG-1", "ORG-9"]) == {"ORG-1": "o1"}
        assert directory.practitioner_ids_by_identifier(iter(["HP-2", "HP-9"])) == {"HP-2": "d2"}
        assert directory.organization_patient_id_system("o1") == HOSPITAL_SYSTEM
        assert directory.organization_patient_id_system("o2") is None
        assert directory.assigning_authorities() == {HOSPITAL_SYSTEM}
        assert directory.active_roles("d1") == [ActiveRole("r1", "o1", "physician", "cardiology"),
                                                ActiveRole("r2", "o2", "physician", None)]
        assert directory.active_roles("d2") == [ActiveRole("r3", None, "nurse", None)]
        assert directory.active_roles("nobody") == []

        def orgs(**criteria: Any) -> list[str]:
            return _ids(directory.search_organizations(OrganizationQuery(**criteria), PAGE))

        assert orgs() == ["o3", "o2", "o1"]  # by folded name: ancien, clinique, hopital
        assert orgs(name=[("hop",)]) == ["o3", "o1"]  # a word's beginning
        assert orgs(name=[("kirch", "esch")]) == ["o1"]  # "d'esch" is one word
        assert orgs(active=True, identifier=[("ORG-1", "ORG-3")]) == ["o1"]
        assert orgs(ids=[("o2",)]) == ["o2"]

        def people(**criteria: Any) -> list[str]:
            return _ids(directory.search_practitioners(PractitionerQuery(**criteria), PAGE))

        assert people() == ["d1", "d3", "d2"]  # by folded family name: muller, mullet, weber
        assert people(family=[("mul",)]) == ["d1", "d3"]
        assert people(family=[("ller",)]) == []  # a prefix, not a part
        assert people(given=[("pa",)]) == ["d2"]
        assert people(name=[("luc", "weber")], active=True) == ["d2"]
        assert people(identifier=[("HP-1",)], ids=[("d1", "d2")]) == ["d1"]

        def role_ids(**criteria: Any) -> list[str]:
            return _ids(directory.search_roles(RoleQuery(**criteria), PAGE))

        assert role_ids(practitioner=[("d1",)]) == ["r1", "r2"]
        assert role_ids(role=[("nurse",)], active=True) == ["r3"]
        assert role_ids(organization=[("o1",)]) == ["r1", "r4"]
        assert role_ids(specialty=[("cardiology",)], ids=[("r1", "r2")]) == ["r1"]
        found = directory.search_roles(RoleQuery(), Page(1, 2))
        assert (found.total, _ids(found)) == (4, ["r2", "r3"])
        # A new version is read at once, in the same transaction.
        suspended = _practitioner(ctx, "d1", "HP-1", "Müller", ["Anne"], licence="suspended",
                                  version=2)
        directory.write_practitioners([suspended], NOW, new=False)
        assert directory.practitioner("d1") == suspended[0]
        assert directory.touched_professionals == ["d1"]
        # An update of an entry that is not there changes no row; its version is kept.
        ghost = _practitioner(ctx, "ghost", "HP-8", "Nobody", ["No"], version=2)
        directory.write_practitioners([ghost], NOW, new=False)
        assert directory.practitioner("ghost") is None
        assert directory.version("Practitioner", "ghost", 2) == ghost[0]
        uow.commit()
    with uow:
        assert [s.version_id for s in uow.directory.history("Practitioner", "d1")] == [2, 1]
        assert uow.directory.history("Organization", "o2") == [o2[0]]
        assert uow.directory.history("Practitioner", "nobody") == []
    refusals: list[Callable[[Any], None]] = [
        lambda d: d.write_practitioners([_practitioner(ctx, "d4", "HP-2", "X", ["Y"])], NOW,
                                        new=True),
        lambda d: d.write_practitioners([_practitioner(ctx, "d4", "HP-4", "X", ["Y"]),
                                         _practitioner(ctx, "d5", "HP-4", "Z", ["Y"])], NOW,
                                        new=True),
        lambda d: d.write_practitioners([_practitioner(ctx, "d2", "HP-1", "Weber", ["Jean"],
                                                       version=2)], NOW, new=False),
        lambda d: d.write_organizations([_organization(ctx, "o4", "ORG-1", "Autre")], NOW,
                                        new=True),
        lambda d: d.write_organizations([_organization(ctx, "o4", "ORG-4", "Autre",
                                                       system=HOSPITAL_SYSTEM)], NOW, new=True),
        lambda d: d.write_organizations([o2], NOW, new=False),  # its version 1 is written
        lambda d: d.write_roles([_role(ctx, "r5", "nobody", "nurse")], NOW, new=True),
        lambda d: d.write_roles([_role(ctx, "r5", "d2", "nurse", None, "nowhere")], NOW,
                                new=True),
        lambda d: d.write_roles([roles[0]], NOW, new=True),
    ]
    for refused in refusals:
        with pytest.raises(Conflict), uow:
            refused(uow.directory)
    with uow:
        assert uow.directory.existing_ids("Practitioner", ["d4", "d5"]) == set()
        assert uow.directory.existing_ids("Organization", ["o4"]) == set()
        assert uow.directory.read("Practitioner", "d2") == d2[0]


def test_the_fake_directory_keeps_professionals() -> None:
    check_professionals(FakeUnitOfWork(), directory_context(lambda: NOW))


def test_the_real_directory_keeps_professionals(uow: Callable[[], SqlUnitOfWork],
                                                ctx: DirectoryContext) -> None:
    check_professionals(Reused(uow), ctx)


def _team(team_id: str, name: str, members: list[tuple[str, str | None]], *,
          status: str = "active", start: str | None = None, version: int = 1,
          organization: str = "o1") -> tuple[Stored, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CareTeam", "status": status, "name": name,
        "managingOrganization": [{"reference": f"Organization/{organization}"}],
        "participant": [
            {"member": {"reference": f"Practitioner/{m}"},
             **({"period": {"end": end}} if end else {})} for m, end in members]}
    if start:
        resource["period"] = {"start": start}
    return Stored(team_id, version, resource), care_team_entry(resource, team_id)


def check_mandates_and_teams(uow: Any, ctx: DirectoryContext) -> None:
    day = timedelta(days=1)
    m1 = AssistantMandate("m1", "d1", "a1", NOW, NOW + 30 * day, frozenset({"b", "a"}))
    m2 = AssistantMandate("m2", "d1", "a1", NOW + day, NOW + 10 * day)
    m3 = AssistantMandate("m3", "d2", "a1", NOW - day, NOW + day)
    t1 = _team("t1", "Cardiologie", [("d1", None), ("d2", "2026-12-01T09:00:00Z")])
    t2 = _team("t2", "Ambulance", [("d1", None)], status="inactive")
    t3 = _team("t3", "Urgences", [("d2", None)], start="2026-12-02")
    with uow:
        directory = uow.directory
        directory.write_organizations([_organization(ctx, "o1", "ORG-1", "Hôpital")], NOW,
                                      new=True)
        directory.write_practitioners([_practitioner(ctx, i, f"HP-{i}", i, ["X"])
                                       for i in ("d1", "d2", "a1")], NOW, new=True)
        for mandate in (m1, m2, m3):
            directory.add_mandate(mandate, NOW, "Practitioner/" + mandate.mandator_id)
        uow.commit()
    with uow:
        directory = uow.directory
        assert directory.touched_professionals == []
        assert directory.mandates(assistant_id="a1") == [m2, m1, m3]  # newest start first
        assert directory.mandates(mandator_id="d1") == [m2, m1]
        assert directory.mandates(mandator_id="d2", assistant_id="a1") == [m3]
        assert directory.mandates(assistant_id="d1") == []
        assert directory.active_mandates("a1", NOW) == [m1, m3]
        assert directory.active_mandates("a1", NOW + day) == [m2, m1]  # m3 ended at its end
        assert directory.end_mandate("m1", "d2", NOW, "Practitioner/d2") is False  # not theirs
        assert directory.end_mandate("m3", "d2", NOW + day, "Practitioner/d2") is False  # over
        assert directory.end_mandate("nobody", "d1", NOW, "Practitioner/d1") is False
        assert directory.end_mandate("m1", "d1", NOW + timedelta(hours=1), "Practitioner/d1")
        assert directory.end_mandate("m1", "d1", NOW + timedelta(hours=2), "x") is False
        directory.write_care_team(*t1, NOW, new=True)
        directory.write_care_team(*t2, NOW, new=True)
        directory.write_care_team(*t3, NOW, new=True)
        assert directory.touched_professionals == ["d1", "d2"]
        uow.commit()
    with uow:
        directory = uow.directory
        ended = directory.mandates(mandator_id="d1")[1]
        assert ended.ended_at == NOW + timedelta(hours=1) and ended.classes == {"a", "b"}
        assert directory.active_mandates("a1", NOW + timedelta(hours=2)) == [m3]
        assert directory.read("CareTeam", "t1") == t1[0]
        assert directory.care_team_ids("d1", NOW) == {"t1"}  # t2 is not active
        assert directory.care_team_ids("d2", NOW - timedelta(hours=1)) == {"t1"}
        assert directory.care_team_ids("d2", NOW) == set()  # left t1; t3 has not begun
        assert directory.care_team_ids("d2", NOW + 2 * day) == {"t3"}

        def teams(*criteria: Any) -> list[str]:
            ids, organizations, participants = criteria
            return _ids(directory.search_care_teams(ids, organizations, participants, PAGE))

        assert teams([], [], [("d1",)]) == ["t2", "t1"]  # by name
        assert teams([], [("o1",)], []) == ["t2", "t1", "t3"]
        assert teams([("t1", "t3")], [], [("d2", "nobody")]) == ["t1", "t3"]
        assert teams([], [("o9",)], []) == []
        found = directory.search_care_teams([], [], [], Page(2, 5))
        assert (found.total, _ids(found)) == (3, ["t3"])
        # Members are replaced with the team.
        t1_again = _team("t1", "Cardiologie", [("d1", None)], version=2)
        directory.write_care_team(*t1_again, NOW, new=False)
        assert directory.touched_professionals == ["d1"]
        assert directory.care_team_ids("d2", NOW - timedelta(hours=1)) == set()
        assert directory.read("CareTeam", "t1") == t1_again[0]
        uow.commit()
    with uow:
        assert [s.version_id for s in uow.directory.history("CareTeam", "t1")] == [2, 1]
        assert uow.directory.care_team_ids("d2", NOW - timedelta(hours=1)) == set()
    refusals: list[Callable[[Any], None]] = [
        lambda d: d.add_mandate(m2, NOW, "x"),
        lambda d: d.add_mandate(AssistantMandate("m4", "d1", "nobody", NOW, NOW + day), NOW,
                                "x"),
        lambda d: d.write_care_team(*_team("t4", "X", [("nobody", None)]), NOW, new=True),
        lambda d: d.write_care_team(*_team("t4", "X", [], organization="o9"), NOW, new=True),
        lambda d: d.write_care_team(*_team("t4", "X", [("d1", None)], version=2), NOW,
                                    new=False),
        lambda d: d.write_care_team(*t2, NOW, new=True),
    ]
    for refused in refusals:
        with pytest.raises(Conflict), uow:
            refused(uow.directory)
    with uow:
        assert uow.directory.mandates(assistant_id="nobody") == []
        assert uow.directory.read("CareTeam", "t4") is None


def test_the_fake_directory_keeps_mandates_and_care_teams() -> None:
    check_mandates_and_teams(FakeUnitOfWork(), directory_context(lambda: NOW))


def test_the_real_directory_keeps_mandates_and_care_teams(uow: Callable[[], SqlUnitOfWork],
                                                          ctx: DirectoryContext) -> None:
    check_mandates_and_teams(Reused(uow), ctx)

