"""The directory use cases against a real database: every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date
from typing import Any

import pytest
from sqlalchemy import event, func, select

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.directory import Identifier
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    NotFound,
    VersionConflict,
)
from carevault.domain.queries import (
    DateRange,
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
)
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import HOSPITAL_SYSTEM, hospital, national_id, patient

UowFactory = Callable[[], SqlUnitOfWork]
PAGE = Page(0, 50)


def _ids(result: svc.SearchResult) -> set[str]:
    return {item.id for item in result.items}


@pytest.fixture
def org_id(uow: UowFactory, ctx: DirectoryContext) -> str:
    with uow() as unit:
        return svc.create_organization(unit, ctx, hospital(ctx.systems)).id


def test_patient_round_trip_keeps_resource_and_stamps_version(
        uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        stored = svc.create_patient(unit, ctx, patient(ctx.systems, 1))
    with uow() as unit:
        again = svc.read_patient(unit, stored.id)
    assert again.resource == stored.resource
    assert again.resource["meta"]["versionId"] == "1"
    assert again.resource["name"][0]["family"] == "Müller"
    assert again.resource["meta"]["lastUpdated"].endswith("Z")


def test_timestamps_are_stored_in_utc(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        stored = svc.create_patient(unit, ctx, patient(ctx.systems, 1))
    with uow() as unit:
        row = unit.directory.connection.execute(
            select(t.patient.c.updated_at).where(t.patient.c.id == stored.id)).one()
    assert row.updated_at.tzinfo is not None
    assert row.updated_at.utcoffset() == UTC.utcoffset(None)


def test_national_identifier_is_unique(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        first = svc.create_patient(unit, ctx, patient(ctx.systems, 1))
    with uow() as unit, pytest.raises(Conflict, match=first.id):
        svc.create_patient(unit, ctx, patient(ctx.systems, 1, family="Other"))
    with uow() as unit:
        assert unit.directory.count("Patient") == 1


def test_a_refused_batch_writes_nothing(uow: UowFactory, ctx: DirectoryContext) -> None:
    good = patient(ctx.systems, 1)
    bad = patient(ctx.systems, 2)
    bad["identifier"][0]["value"] = "1980041200200"  # wrong check digits
    with uow() as unit, pytest.raises(BusinessRuleViolation):
        svc.register_patients(unit, ctx, [good, bad])
    with uow() as unit:
        assert unit.directory.count("Patient") == 0
        history = select(func.count()).select_from(t.resource_history)
        assert unit.directory.connection.execute(history).scalar_one() == 0


def test_local_identifier_needs_a_registered_authority(
        uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit, pytest.raises(BusinessRuleViolation, match="assigning authority"):
        svc.create_patient(unit, ctx, patient(ctx.systems, 1, local="L-1"))


def test_search_is_accent_and_case_insensitive_prefix(
        uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        muller = svc.create_patient(unit, ctx, patient(ctx.systems, 1, family="Müller"))
        goncalves = svc.create_patient(unit, ctx, patient(
            ctx.systems, 2, family="Gonçalves", given=["João"]))
        svc.create_patient(unit, ctx, patient(ctx.systems, 3, family="Weber"))
    with uow() as unit:
        assert _ids(svc.search_patients(unit, PatientQuery(family=[("mull",)]), PAGE)) == {
            muller.id}
        assert _ids(svc.search_patients(unit, PatientQuery(given=[("joao",)]), PAGE)) == {
            goncalves.id}
        # The second given name matches too.
        assert muller.id in _ids(svc.search_patients(unit, PatientQuery(given=[("mar",)]), PAGE))
        either = PatientQuery(family=[("gonc", "mul")])
        assert _ids(svc.search_patients(unit, either, PAGE)) == {muller.id, goncalves.id}
        both = PatientQuery(family=[("gonc",)], given=[("anne",)])
        assert _ids(svc.search_patients(unit, both, PAGE)) == set()


def test_like_wildcards_in_a_query_are_literal(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        svc.create_patient(unit, ctx, patient(ctx.systems, 1, family="Muller"))
    with uow() as unit:
        assert svc.search_patients(unit, PatientQuery(family=[("%",)]), PAGE).total == 0
        assert svc.search_patients(unit, PatientQuery(family=[("m_ller",)]), PAGE).total == 0


def test_search_by_birthdate_gender_postal_code(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        old = svc.create_patient(unit, ctx, patient(ctx.systems, 1, born=date(1950, 1, 31),
                                                    gender="male", postal_code="L-9012"))
        young = svc.create_patient(unit, ctx, patient(ctx.systems, 2, born=date(2001, 6, 1)))
    with uow() as unit:
        def find(query: PatientQuery) -> set[str]:
            return _ids(svc.search_patients(unit, query, PAGE))

        year_1950 = DateRange("eq", date(1950, 1, 1), date(1951, 1, 1))
        assert find(PatientQuery(birthdate=[year_1950])) == {old.id}
        after = DateRange("ge", date(2000, 1, 1), date(2000, 1, 2))
        assert find(PatientQuery(birthdate=[after])) == {young.id}
        not_1950 = DateRange("ne", date(1950, 1, 1), date(1951, 1, 1))
        assert find(PatientQuery(birthdate=[not_1950])) == {young.id}
        assert find(PatientQuery(gender=[("male",)])) == {old.id}
        assert find(PatientQuery(postal_code=[("L-90",)])) == {old.id}


def test_paging_is_stable_and_total_counts_all(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        svc.register_patients(unit, ctx, [patient(ctx.systems, i) for i in range(7)])
    seen: list[str] = []
    with uow() as unit:
        for offset in (0, 3, 6):
            result = svc.search_patients(unit, PatientQuery(), Page(offset, 3))
            assert result.total == 7
            seen += [item.id for item in result.items]
    assert len(seen) == len(set(seen)) == 7


def test_update_with_if_match(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        stored = svc.create_patient(unit, ctx, patient(ctx.systems, 1))
    changed = patient(ctx.systems, 1, family="Schmit")
    with uow() as unit:
        updated = svc.update_patient(unit, ctx, stored.id, changed, if_match=1)
    assert updated.version_id == 2
    with uow() as unit, pytest.raises(VersionConflict):
        svc.update_patient(unit, ctx, stored.id, changed, if_match=1)
    with uow() as unit:
        versions = svc.history(unit, "Patient", stored.id)
        assert [v.version_id for v in versions] == [2, 1]
        assert versions[1].resource["name"][0]["family"] == "Müller"
        assert svc.read_version(unit, "Patient", stored.id, 1).resource["meta"]["versionId"] == "1"
        found = svc.search_patients(unit, PatientQuery(family=[("schmit",)]), PAGE)
        assert _ids(found) == {stored.id}
        assert svc.search_patients(unit, PatientQuery(family=[("muller",)]), PAGE).total == 0


def test_merge_and_unmerge_keep_history(uow: UowFactory, ctx: DirectoryContext,
                                        org_id: str) -> None:
    with uow() as unit:
        survivor = svc.create_patient(unit, ctx, patient(ctx.systems, 1, local="H-1"))
        duplicate = svc.create_patient(unit, ctx, patient(ctx.systems, 2, local="H-2"))
    with uow() as unit:
        merged = svc.merge_patients(unit, ctx, duplicate.id, survivor.id)
    assert merged.resource["active"] is False
    assert merged.resource["link"] == [
        {"other": {"reference": f"Patient/{survivor.id}"}, "type": "replaced-by"}]
    with uow() as unit:
        answer = svc.read_patient(unit, survivor.id).resource
        assert {"other": {"reference": f"Patient/{duplicate.id}"}, "type": "replaces"} in answer[
            "link"]
        # The duplicate's identifiers now find the survivor; the duplicate is not listed.
        by_local = PatientQuery(identifier=[(Identifier(HOSPITAL_SYSTEM, "H-2"),)])
        assert _ids(svc.search_patients(unit, by_local, PAGE)) == {survivor.id}
        assert duplicate.id not in _ids(svc.search_patients(unit, PatientQuery(), PAGE))
        pix = svc.cross_reference(unit, Identifier(HOSPITAL_SYSTEM, "H-2"), [])
        assert pix.patient_id == survivor.id
        assert Identifier(HOSPITAL_SYSTEM, "H-1") in pix.identifiers
        assert Identifier(ctx.systems.national, national_id(1)) in pix.identifiers
    with uow() as unit, pytest.raises(Conflict, match="already merged"):
        svc.merge_patients(unit, ctx, duplicate.id, survivor.id)
    with uow() as unit:
        restored = svc.unmerge_patient(unit, ctx, duplicate.id)
    assert restored.resource["active"] is True
    assert "link" not in restored.resource
    with uow() as unit:
        assert "link" not in svc.read_patient(unit, survivor.id).resource
        assert [v.version_id for v in svc.history(unit, "Patient", duplicate.id)] == [3, 2, 1]
        rows = unit.directory.connection.execute(select(t.patient_merge)).all()
        assert len(rows) == 1 and rows[0].unmerged_at is not None
        pix = svc.cross_reference(unit, Identifier(HOSPITAL_SYSTEM, "H-2"), [])
        assert pix.patient_id == duplicate.id
    with uow() as unit, pytest.raises(Conflict, match="not merged"):
        svc.unmerge_patient(unit, ctx, duplicate.id)


def test_merge_refuses_chains(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        a, b, c = svc.register_patients(unit, ctx, [patient(ctx.systems, i) for i in (1, 2, 3)])
    with uow() as unit:
        svc.merge_patients(unit, ctx, a.id, b.id)
    with uow() as unit, pytest.raises(Conflict, match="itself merged"):
        svc.merge_patients(unit, ctx, c.id, a.id)
    with uow() as unit, pytest.raises(BusinessRuleViolation):
        svc.merge_patients(unit, ctx, c.id, c.id)
    with uow() as unit, pytest.raises(NotFound):
        svc.merge_patients(unit, ctx, c.id, "nope")


def test_identity_feed_creates_updates_and_merges(uow: UowFactory, ctx: DirectoryContext) -> None:
    key = Identifier(ctx.systems.national, national_id(5))
    with uow() as unit:
        created, was_new = svc.feed_patient(unit, ctx, key, patient(ctx.systems, 5))
    assert was_new
    with uow() as unit:
        updated, was_new = svc.feed_patient(unit, ctx, key, patient(ctx.systems, 5,
                                                                    family="Hoffmann"))
    assert not was_new and updated.id == created.id and updated.version_id == 2
    with uow() as unit:
        survivor = svc.create_patient(unit, ctx, patient(ctx.systems, 6))
    duplicate = patient(ctx.systems, 5, family="Hoffmann")
    duplicate["active"] = False
    duplicate["link"] = [{"other": {"reference": f"Patient/{survivor.id}"},
                          "type": "replaced-by"}]
    with uow() as unit:
        merged, _ = svc.feed_patient(unit, ctx, key, duplicate)
    assert merged.resource["link"][0]["type"] == "replaced-by"
    with uow() as unit:
        state = unit.directory.patient_merge_state(created.id)
        assert state is not None and state.merged_into == survivor.id


def test_cross_reference_unknown_identifier(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit, pytest.raises(NotFound):
        svc.cross_reference(unit, Identifier(ctx.systems.national, national_id(9)), [])


def test_professionals_roles_and_organizations(uow: UowFactory, ctx: DirectoryContext,
                                               org_id: str) -> None:
    items = [
        svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-1", family="Lefèvre",
                                             given=["Chloé"]), "pharmacist", None, org_id),
        svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-2", family="Weber",
                                             given=["Jos"]), "physician", "cardiology"),
    ]
    with uow() as unit:
        (pharmacist, pharmacist_role), (cardiologist, _) = svc.register_professionals(
            unit, ctx, items)
    with uow() as unit:
        found = svc.search_practitioners(unit, PractitionerQuery(name=[("lefev",)]), PAGE)
        assert _ids(found) == {pharmacist.id}
        by_id = svc.search_practitioners(unit, PractitionerQuery(identifier=[("HP-2",)]), PAGE)
        assert _ids(by_id) == {cardiologist.id}
        roles = svc.search_roles(unit, RoleQuery(role=[("pharmacist",)]), PAGE)
        assert _ids(roles) == {pharmacist_role.id}
        at_org = svc.search_roles(unit, RoleQuery(organization=[(org_id,)]), PAGE)
        assert _ids(at_org) == {pharmacist_role.id}
        assert svc.search_roles(unit, RoleQuery(specialty=[("cardiology",)]), PAGE).total == 1
        orgs = svc.search_organizations(unit, OrganizationQuery(name=[("hopital",)]), PAGE)
        assert _ids(orgs) == {org_id}
    duplicate = svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-1",
                                                     family="X", given=["Y"]), "nurse")
    with uow() as unit, pytest.raises(Conflict):
        svc.register_professionals(unit, ctx, [duplicate])
    wrong = svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-3", family="X",
                                                 given=["Y"]), "pharmacist", "cardiology")
    with uow() as unit, pytest.raises(BusinessRuleViolation, match="not a specialty"):
        svc.register_professionals(unit, ctx, [wrong])
    nowhere = svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-4", family="X",
                                                   given=["Y"]), "nurse", None, "missing-org")
    with uow() as unit, pytest.raises(BusinessRuleViolation, match="not known"):
        svc.register_professionals(unit, ctx, [nowhere])
    with uow() as unit:
        assert unit.directory.count("Practitioner") == 2


def test_suspending_a_licence_is_a_new_version(uow: UowFactory, ctx: DirectoryContext) -> None:
    with uow() as unit:
        stored = svc.create_practitioner(unit, ctx, new_practitioner(
            ctx.systems, identifier="HP-9", family="Thill", given=["Marc"]))
    suspended = new_practitioner(ctx.systems, identifier="HP-9", family="Thill", given=["Marc"],
                                 licence_status="suspended")
    with uow() as unit:
        updated = svc.update_practitioner(unit, ctx, stored.id, suspended, if_match=1)
    assert updated.version_id == 2
    with uow() as unit:
        row = unit.directory.connection.execute(
            select(t.practitioner.c.licence_status).where(t.practitioner.c.id == stored.id)).one()
        assert row.licence_status == "suspended"


def test_patient_scoped_tables_carry_the_patient_key() -> None:
    scoped = [t.patient_name, t.patient_identifier, t.patient_postal_code, t.patient_merge,
              t.resource_history]
    for table in scoped:
        assert "patient_id" in table.c, table.name



def test_a_search_tells_its_total_whether_or_not_it_counts(
        uow: UowFactory, ctx: DirectoryContext) -> None:
    """A page short of full needs no count (it ends the matches); a full page, or one past
    the end, counts them: the total is the same either way."""
    with uow() as unit:
        for n in range(5):
            svc.create_patient(unit, ctx, patient(ctx.systems, 300 + n, family="Weber"))
    webers = PatientQuery(family=[("weber",)])
    with uow() as unit:
        pages = {offset: svc.search_patients(unit, webers, Page(offset, 2))
                 for offset in (0, 2, 4, 8)}
        assert {offset: page.total for offset, page in pages.items()} == {0: 5, 2: 5, 4: 5, 8: 5}
        assert [len(page.items) for page in pages.values()] == [2, 2, 1, 0]
        assert len({item.id for page in pages.values() for item in page.items}) == 5
        assert svc.search_patients(unit, webers, Page(0, 50)).total == 5
        assert svc.search_patients(unit, webers, Page(0, 5)).total == 5  # full: counted
        assert svc.search_patients(unit, PatientQuery(family=[("nobody",)]), PAGE).total == 0
        assert svc.search_patients(unit, PatientQuery(family=[("nobody",)]), Page(4, 2)).total == 0


# Twenty thousand rows of random words in the searched table and its statistics, so that the
# planner weighs the statement as on a populated table (on empty ones it loops over the few
# patients instead).
_ROWS = "FROM generate_series(1, 20000) AS n"
_PATIENTS = (
    "INSERT INTO patient (id, version_id, national_id, active, resource, updated_at) "
    f"SELECT 'crowd-' || n, 1, 'crowd-' || n, true, '{{}}', now() {_ROWS}",
    "INSERT INTO patient_name (patient_id, position, family_folded, given_folded) "
    "SELECT 'crowd-' || n, 0, md5(n::text), md5((n + 1)::text) || ' ' || md5((n + 2)::text) "
    f"{_ROWS}",
    "ANALYZE patient, patient_name",
)
_PRACTITIONERS = (
    "INSERT INTO practitioner (id, version_id, identifier, family_folded, given_folded, "
    "licence_status, active, resource, updated_at) SELECT 'crowd-' || n, 1, 'crowd-' || n, "
    f"md5(n::text), md5((n + 1)::text), 'active', true, '{{}}', now() {_ROWS}",
    "ANALYZE practitioner",
)
_ORGANIZATIONS = (
    "INSERT INTO organization (id, version_id, identifier, name, name_folded, active, resource, "
    "updated_at) SELECT 'crowd-' || n, 1, 'crowd-' || n, md5(n::text), "
    f"md5(n::text) || ' ' || md5((n + 3)::text), true, '{{}}', now() {_ROWS}",
    "ANALYZE organization",
)
_TEAMS = (
    *_ORGANIZATIONS[:1],
    "INSERT INTO care_team (id, version_id, organization_id, name, active, resource, "
    "updated_at, name_folded) SELECT 'crowd-' || n, 1, 'crowd-' || n, md5(n::text), true, "
    f"'{{}}', now(), md5(n::text) || ' ' || md5((n + 4)::text) {_ROWS}",
    "ANALYZE organization, care_team",
)


@pytest.mark.parametrize(("crowd", "search", "index"), [
    (_PATIENTS, lambda unit: svc.search_patients(unit, PatientQuery(given=[("anne",)]), PAGE),
     "ix_patient_name_given_words"),
    (_PATIENTS, lambda unit: svc.search_patients(unit, PatientQuery(name=[("anne",)]), PAGE),
     "ix_patient_name_family_words"),
    (_PRACTITIONERS,
     lambda unit: svc.search_practitioners(unit, PractitionerQuery(given=[("anne",)]), PAGE),
     "ix_practitioner_given_words"),
    (_ORGANIZATIONS,
     lambda unit: svc.search_organizations(unit, OrganizationQuery(name=[("clinique",)]), PAGE),
     "ix_organization_name_words"),
    (_TEAMS, lambda unit: unit.directory.search_care_teams([], [], [], PAGE, names=[("diab",)]),
     "ix_care_team_name_words"),
], ids=["patient-given", "patient-name", "practitioner-given", "organization", "care-team"])
def test_a_search_by_the_start_of_any_word_of_a_name_can_use_an_index(
        database_url: str, uow: UowFactory, crowd: tuple[str, ...],
        search: Callable[[SqlUnitOfWork], object], index: str) -> None:
    """``LIKE '% x%'`` (the start of any word) cannot use a B-tree: without the trigram index
    (migration 0029) it read the whole table, at national scale 100 ms a search. Each search's
    own statement, explained on a populated table with sequential scans discouraged, is
    planned on its index."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite (development only) has no trigram index")
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with uow() as unit:
        connection = unit.directory.connection
        for statement in crowd:  # rolled back with the unit of work
            connection.exec_driver_sql(statement)
        engine = connection.engine
        event.listen(engine, "before_cursor_execute", keep)
        try:
            search(unit)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        # At twenty thousand rows a scan still costs little; at millions it is what the index
        # saves. The question here is whether the statement can use the index at all: neither
        # a scan of the table nor a walk of a whole B-tree in its stead.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
        plans = []
        for statement, parameters in statements:
            if "LIKE" not in statement:
                continue
            rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plans.append("\n".join(row[0] for row in rows))
    assert plans, "the search ran no LIKE"
    assert any(index in plan for plan in plans), "\n\n".join(plans)
