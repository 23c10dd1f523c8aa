"""The record store against a real database: every test runs on SQLite and PostgreSQL.

The key property: for any record and any subject, the documents the SQL filter returns (and
counts) are exactly those `decide` would let the subject read one by one.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import event as hypothesis_event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, event, insert, select

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.record_store import (
    StoredEncounter,
    filter_clause,
)
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.authorization import (
    Action,
    Block,
    Confidentiality,
    Delegation,
    DocumentFacts,
    DocumentFilter,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Party,
    RecordFacts,
    RecordModel,
    RecordState,
    Representative,
    Subject,
    SubjectKind,
    decide,
    visible_filter,
)

BUILTIN_MATRIX = builtin_profile_matrix()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


# --- helpers ----------------------------------------------------------------------------------


def add_patient(
    connection: Connection, *, active: bool = True, merged_into: str | None = None
) -> str:
    patient_id = uuid.uuid4().hex
    connection.execute(
        insert(t.patient).values(
            id=patient_id,
            version_id=1,
            national_id=patient_id,
            active=active,
            merged_into=merged_into,
            resource="{}",
            updated_at=NOW,
        )
    )
    return patient_id


def add_representative(
    connection: Connection,
    patient_id: str,
    account_id: str,
    scope: MandateScope,
    start: datetime,
    end: datetime | None,
    mandate_id: str | None = None,
) -> Representative:
    known = select(t.account.c.id).where(t.account.c.id == account_id)
    if connection.execute(known).first() is None:
        connection.execute(
            insert(t.account).values(
                id=account_id,
                kind="representative",
                login=f"{account_id}@example.lu",
                password_hash="not a hash",
                totp_secret=b"sealed",
                roles="",
                created_at=NOW,
            )
        )
    mandate_id = mandate_id or uuid.uuid4().hex
    connection.execute(
        insert(t.mandate).values(
            id=mandate_id,
            representative_account_id=account_id,
            patient_id=patient_id,
            scope=scope.value,
            starts_at=start,
            ends_at=end,
            created_at=NOW,
        )
    )
    return Representative(account_id, scope, start, end, mandate_id)


def sort_facts(facts: RecordFacts | None) -> RecordFacts | None:
    """The facts with every collection in id order, for comparing regardless of load order."""
    if facts is None:
        return None

    def by_id(items: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(sorted(items, key=lambda item: item.id))

    return dataclasses.replace(
        facts,
        grants=by_id(facts.grants),
        blocks=by_id(facts.blocks),
        emergency_windows=by_id(facts.emergency_windows),
        representatives=by_id(facts.representatives),
        delegations=by_id(facts.delegations),
    )


@pytest.fixture
def unit(engine: Engine) -> Iterator[SqlUnitOfWork]:
    """A unit of work that is never committed: each test leaves the database as it found it."""
    with SqlUnitOfWork(engine) as uow:
        yield uow


# --- loading the facts ------------------------------------------------------------------------


def test_a_patient_without_a_record_row_has_the_defaults_under_opt_out(unit: SqlUnitOfWork) -> None:
    patient_id = add_patient(unit.records.connection)
    assert unit.records.load(patient_id, NOW) == RecordFacts(patient_id=patient_id)


def test_no_record_for_unknown_inactive_merged_or_unopened_opt_in(engine: Engine) -> None:
    with SqlUnitOfWork(engine, record_model=RecordModel.OPT_IN) as uow:
        connection = uow.records.connection
        survivor = add_patient(connection)
        inactive = add_patient(connection, active=False)
        merged = add_patient(connection, active=False, merged_into=survivor)
        merged_but_active = add_patient(connection, merged_into=survivor)
        for patient_id in (inactive, merged, merged_but_active):
            uow.records.ensure_record(patient_id, NOW)
        assert uow.records.load("no-such-patient", NOW) is None
        assert uow.records.load(inactive, NOW) is None
        assert uow.records.load(merged, NOW) is None
        assert uow.records.load(merged_but_active, NOW) is None
        assert uow.records.load(survivor, NOW) is None  # opt-in: no record opened yet
        uow.records.ensure_record(survivor, NOW)
        assert uow.records.load(survivor, NOW) == RecordFacts(
            patient_id=survivor, model=RecordModel.OPT_IN
        )


def test_every_kind_of_fact_round_trips(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    records.update_record(
        patient_id,
        NOW,
        state=RecordState.CLOSED,
        referring_physician_id="pr-ref",
        emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED,
        delegation_allowed=True,
        default_confidentiality=Confidentiality.R,
    )
    grants = (
        Grant(
            Party.PRACTITIONER,
            "pr-a",
            GrantLevel.EXTENDED,
            start=NOW - HOUR,
            granted_by="patient:me",
            delegable=True,
            id="g-1",
        ),
        Grant(
            Party.ORGANIZATION,
            "org-1",
            GrantLevel.NORMAL,
            start=NOW,
            end=NOW + HOUR,
            granted_by="rep:x",
            id="g-2",
            source="representative",
        ),
        Grant(
            Party.CARE_TEAM,
            "team-1",
            GrantLevel.NORMAL,
            start=NOW + HOUR,
            end=NOW + 2 * HOUR,
            id="g-3",
            source="care-event",
        ),
    )
    for grant in grants:
        assert records.add_grant(patient_id, grant, NOW) == grant.id
    blocks = (Block(Party.PRACTITIONER, "pr-b", "b-1"), Block(Party.ORGANIZATION, "org-2", "b-2"))
    for block in blocks:
        records.add_block(patient_id, block, NOW, "patient:me")
    delegation = Delegation("pr-a", "pr-c", GrantLevel.NORMAL, NOW - HOUR, NOW + HOUR, "d-1")
    records.add_delegation(patient_id, delegation, NOW)
    window = EmergencyWindow("pr-e", NOW + HOUR, "e-1")
    records.open_emergency(patient_id, window, "unconscious in the emergency room", NOW)
    representative = add_representative(
        records.connection, patient_id, "rep-1", MandateScope.MANAGE, NOW - HOUR, None, "m-1"
    )
    expected = RecordFacts(
        patient_id=patient_id,
        state=RecordState.CLOSED,
        referring_physician_id="pr-ref",
        grants=grants,
        blocks=blocks,
        emergency_setting=EmergencySetting.NORMAL_AND_RESTRICTED,
        emergency_windows=(window,),
        representatives=(representative,),
        delegation_allowed=True,
        delegations=(delegation,),
        default_confidentiality=Confidentiality.R,
    )
    loaded = records.load(patient_id, NOW)
    assert sort_facts(loaded) == sort_facts(expected)
    assert loaded is not None
    assert all(g.start.tzinfo is not None for g in loaded.grants)


def test_new_facts_get_an_id(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    grant_id = records.add_grant(
        patient_id, Grant(Party.PRACTITIONER, "pr-a", GrantLevel.NORMAL, NOW), NOW
    )
    block_id = records.add_block(patient_id, Block(Party.PRACTITIONER, "pr-b"), NOW, "me")
    loaded = records.load(patient_id, NOW)
    assert loaded is not None
    assert [g.id for g in loaded.grants] == [grant_id]
    assert [b.id for b in loaded.blocks] == [block_id]
    assert len(grant_id) == 32 and grant_id != block_id


def test_revoked_expired_and_closed_facts_are_left_out(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    other = add_patient(records.connection)
    live = Grant(Party.PRACTITIONER, "pr-a", GrantLevel.NORMAL, NOW - HOUR, NOW + HOUR, id="g-1")
    for grant in (
        live,
        dataclasses.replace(live, id="g-revoked"),
        dataclasses.replace(live, id="g-ended", end=NOW),
    ):
        records.add_grant(patient_id, grant, NOW - 2 * HOUR)
    records.add_grant(other, dataclasses.replace(live, id="g-other"), NOW)
    assert records.revoke_grant(patient_id, "g-revoked", NOW, "patient:me")
    assert not records.revoke_grant(patient_id, "g-revoked", NOW, "patient:me")
    assert not records.revoke_grant(patient_id, "g-other", NOW, "patient:me")  # not this record
    records.add_block(patient_id, Block(Party.PRACTITIONER, "pr-b", "b-1"), NOW, "me")
    records.add_block(patient_id, Block(Party.PRACTITIONER, "pr-c", "b-2"), NOW, "me")
    assert records.revoke_block(patient_id, "b-2", NOW, "me")
    assert not records.revoke_block(patient_id, "b-2", NOW, "me")
    delegation = Delegation("pr-a", "pr-c", GrantLevel.NORMAL, NOW - HOUR, NOW + HOUR, "d-1")
    records.add_delegation(patient_id, delegation, NOW)
    records.add_delegation(patient_id, dataclasses.replace(delegation, id="d-revoked"), NOW)
    records.add_delegation(patient_id, dataclasses.replace(delegation, id="d-ended", end=NOW), NOW)
    assert records.revoke_delegation(patient_id, "d-revoked", NOW)
    assert not records.revoke_delegation(patient_id, "d-revoked", NOW)
    window = EmergencyWindow("pr-e", NOW + HOUR, "e-1")
    records.open_emergency(patient_id, window, "reason", NOW - HOUR)
    records.open_emergency(patient_id, dataclasses.replace(window, id="e-closed"), "r", NOW)
    records.open_emergency(
        patient_id, dataclasses.replace(window, id="e-over", until=NOW), "r", NOW
    )
    assert records.close_emergency(patient_id, "e-closed", NOW)
    assert not records.close_emergency(patient_id, "e-closed", NOW)
    current = add_representative(
        records.connection, patient_id, "rep-1", MandateScope.READ, NOW - HOUR, NOW + HOUR
    )
    add_representative(records.connection, patient_id, "rep-2", MandateScope.READ, NOW - HOUR, NOW)

    loaded = records.load(patient_id, NOW)
    assert loaded is not None
    assert [g.id for g in loaded.grants] == ["g-1"]
    assert [b.id for b in loaded.blocks] == ["b-1"]
    assert [d.id for d in loaded.delegations] == ["d-1"]
    assert [w.id for w in loaded.emergency_windows] == ["e-1"]
    assert loaded.representatives == (current,)
    revoked = records.grant(patient_id, "g-revoked")
    assert revoked is not None
    assert revoked.revoked_at == NOW and revoked.revoked_by == "patient:me"


def test_load_is_one_statement(engine: Engine, unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    records.ensure_record(patient_id, NOW)
    records.add_grant(patient_id, Grant(Party.PRACTITIONER, "pr-a", GrantLevel.NORMAL, NOW), NOW)
    records.add_block(patient_id, Block(Party.ORGANIZATION, "org-1"), NOW, "me")
    records.add_delegation(
        patient_id, Delegation("pr-a", "pr-b", GrantLevel.NORMAL, NOW, NOW + HOUR), NOW
    )
    records.open_emergency(patient_id, EmergencyWindow("pr-e", NOW + HOUR), "reason", NOW)
    add_representative(records.connection, patient_id, "rep-1", MandateScope.READ, NOW, None)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        facts = records.load(patient_id, NOW)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    assert "UNION ALL" in statements[0]
    assert facts is not None
    assert (len(facts.grants), len(facts.blocks), len(facts.delegations)) == (1, 1, 1)
    assert (len(facts.emergency_windows), len(facts.representatives)) == (1, 1)


# --- managing the record ----------------------------------------------------------------------


def test_update_record_creates_the_row_and_changes_only_what_it_is_given(
    unit: SqlUnitOfWork,
) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    records.update_record(patient_id, NOW, referring_physician_id="pr-ref")
    records.update_record(patient_id, NOW, delegation_allowed=True)
    facts = records.load(patient_id, NOW)
    assert facts is not None
    assert (facts.referring_physician_id, facts.delegation_allowed) == ("pr-ref", True)
    records.update_record(patient_id, NOW, referring_physician_id=None, state=RecordState.CLOSED)
    records.ensure_record(patient_id, NOW)  # an existing row is left alone
    assert records.load(patient_id, NOW) == RecordFacts(
        patient_id=patient_id, state=RecordState.CLOSED, delegation_allowed=True
    )


def test_grants_are_listed_changed_and_revoked(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    first = Grant(Party.PRACTITIONER, "pr-a", GrantLevel.NORMAL, NOW, NOW + HOUR, id="g-1")
    second = Grant(Party.ORGANIZATION, "org-1", GrantLevel.NORMAL, NOW, NOW + HOUR, id="g-2")
    records.add_grant(patient_id, first, NOW)
    records.add_grant(patient_id, second, NOW + HOUR, source_ref="Encounter/enc-1")
    assert records.update_grant(patient_id, "g-1", level=GrantLevel.EXTENDED, end=None)
    assert records.update_grant(patient_id, "g-2")  # nothing to change, but it exists
    assert not records.update_grant(patient_id, "g-404", level=GrantLevel.EXTENDED)
    stored = records.grant(patient_id, "g-1")
    assert stored is not None
    assert stored.grant == dataclasses.replace(first, level=GrantLevel.EXTENDED, end=None)
    assert (stored.created_at, stored.revoked_at, stored.source_ref) == (NOW, None, None)
    assert records.revoke_grant(patient_id, "g-1", NOW, "patient:me")
    assert not records.update_grant(patient_id, "g-1", end=NOW)  # revoked grants stay as they were
    assert [s.grant.id for s in records.grants(patient_id, include_revoked=False)] == ["g-2"]
    listed = records.grants(patient_id, include_revoked=True)
    assert [s.grant.id for s in listed] == ["g-1", "g-2"]
    assert listed[1].source_ref == "Encounter/enc-1"
    assert records.grant(patient_id, "g-404") is None
    assert records.grant("another-patient", "g-2") is None


def test_blocks_are_listed_and_revoked(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    records.add_block(patient_id, Block(Party.PRACTITIONER, "pr-a", "b-1"), NOW, "patient:me")
    records.add_block(patient_id, Block(Party.CARE_TEAM, "team-1", "b-2"), NOW + HOUR, "rep:x")
    assert records.revoke_block(patient_id, "b-1", NOW + 2 * HOUR, "patient:me")
    active = records.blocks(patient_id, include_revoked=False)
    assert [(s.block, s.created_by) for s in active] == [
        (Block(Party.CARE_TEAM, "team-1", "b-2"), "rep:x")
    ]
    every = records.blocks(patient_id, include_revoked=True)
    assert [s.block.id for s in every] == ["b-1", "b-2"]
    assert (every[0].revoked_at, every[0].revoked_by) == (NOW + 2 * HOUR, "patient:me")


# --- documents --------------------------------------------------------------------------------


def test_document_facts_round_trip_and_change(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    document = DocumentFacts(
        "doc-1", "pr-a", "org-1", "laboratory", "11502-2", Confidentiality.R, False, True
    )
    records.add_document(patient_id, document, NOW)
    assert records.document(patient_id, "doc-1") == document
    assert records.document("another-patient", "doc-1") is None
    assert records.set_document_hidden(patient_id, "doc-1", True)
    assert records.set_document_confidentiality(patient_id, "doc-1", Confidentiality.V)
    assert records.set_document_released(patient_id, "doc-1")
    assert records.document(patient_id, "doc-1") == dataclasses.replace(
        document, hidden=True, confidentiality=Confidentiality.V, not_yet_visible_to_patient=False
    )
    assert not records.set_document_hidden(patient_id, "doc-404", True)
    assert not records.set_document_released("another-patient", "doc-1")


def test_find_documents_filters_and_counts_in_the_database(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    other = add_patient(records.connection)
    documents = [
        DocumentFacts("d-1", "pr-a", "org-1", "laboratory", confidentiality=Confidentiality.N),
        DocumentFacts("d-2", "pr-b", "org-1", "imaging", confidentiality=Confidentiality.R),
        DocumentFacts("d-3", "pr-b", "org-1", "laboratory", hidden=True),
        DocumentFacts("d-4", "pr-b", "org-1", "laboratory", not_yet_visible_to_patient=True),
        DocumentFacts("d-5", "pr-a", "org-1", "psychiatric", confidentiality=Confidentiality.V),
    ]
    for minutes, document in enumerate(documents):
        records.add_document(patient_id, document, NOW + timedelta(minutes=minutes))
    records.add_document(other, dataclasses.replace(documents[0], id="d-other"), NOW)

    def found(visible: DocumentFilter, offset: int = 0, count: int = 100) -> tuple[int, list[str]]:
        total, page = records.find_documents(patient_id, visible, offset=offset, count=count)
        return total, [document.id for document in page]

    everything = frozenset(Confidentiality)
    assert found(DocumentFilter()) == (0, [])
    assert found(DocumentFilter(everything, classes=frozenset())) == (0, [])
    assert found(DocumentFilter(frozenset(), classes=None, author_id="pr-a")) == (2, ["d-1", "d-5"])
    assert found(DocumentFilter(everything, classes=None)) == (3, ["d-1", "d-2", "d-5"])
    assert found(DocumentFilter(everything, None, include_hidden=True)) == (
        4,
        ["d-1", "d-2", "d-3", "d-5"],
    )
    assert found(DocumentFilter(everything, None, True, True)) == (
        5,
        ["d-1", "d-2", "d-3", "d-4", "d-5"],
    )
    assert found(DocumentFilter(everything, None, True, True), offset=1, count=2) == (
        5,
        ["d-2", "d-3"],
    )
    assert found(DocumentFilter(frozenset({Confidentiality.N}), frozenset({"laboratory"}))) == (
        1,
        ["d-1"],
    )
    imaging_or_by_b = DocumentFilter(
        frozenset({Confidentiality.R}), frozenset({"imaging"}), author_id="pr-b"
    )
    assert found(imaging_or_by_b) == (3, ["d-2", "d-3", "d-4"])
    assert str(filter_clause(DocumentFilter())) == "false"


# --- encounters and notifications -------------------------------------------------------------


def test_encounters_round_trip_most_recent_first(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    stored = [
        StoredEncounter(
            id=f"enc-{day}",
            version_id=1,
            patient_id=patient_id,
            practitioner_id="pr-a",
            organization_id="org-1" if day % 2 else None,
            period_start=NOW + timedelta(days=day),
            period_end=None if day == 2 else NOW + timedelta(days=day, hours=1),
            resource={"resourceType": "Encounter", "id": f"enc-{day}", "status": "finished"},
            created_at=NOW,
        )
        for day in range(3)
    ]
    for encounter in stored:
        records.add_encounter(encounter)
    assert records.encounter("enc-1") == stored[1]
    assert records.encounter("enc-404") is None
    assert records.encounters(patient_id, 0, 10) == (3, stored[::-1])
    assert records.encounters(patient_id, 1, 1) == (3, [stored[1]])
    assert records.encounters("another-patient", 0, 10) == (0, [])


def test_notifications_to_a_patient_without_an_account(unit: SqlUnitOfWork) -> None:
    records = unit.records
    patient_id = add_patient(records.connection)
    first = records.notify(patient_id, "emergency-access", {"b": 1, "a": "é"}, NOW)
    second = records.notify(patient_id, "grant-added", {}, NOW + HOUR)
    stored = records.notification(first)
    assert stored is not None
    assert (stored.patient_id, stored.account_id, stored.kind) == (
        patient_id,
        None,
        "emergency-access",
    )
    assert (stored.payload, stored.created_at, stored.read_at) == ({"a": "é", "b": 1}, NOW, None)
    raw = records.connection.execute(
        select(t.notification.c.payload).where(t.notification.c.id == first)
    ).scalar_one()
    assert raw.index('"a"') < raw.index('"b"')
    total, page = records.notifications(patient_id, 0, 10)
    assert (total, [n.id for n in page]) == (2, [second, first])
    assert [n.id for n in records.notifications(patient_id, 1, 10)[1]] == [first]
    assert records.notification("no-such-notification") is None


def test_facts_survive_a_commit(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        patient_id = add_patient(uow.records.connection)
        uow.records.add_grant(
            patient_id, Grant(Party.PRACTITIONER, "pr-a", GrantLevel.NORMAL, NOW, id="g-1"), NOW
        )
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        facts = uow.records.load(patient_id, NOW)
    assert facts is not None
    assert [g.id for g in facts.grants] == ["g-1"]


# --- the search filter is the engine's decision, in SQL ---------------------------------------

PRACTITIONERS = ("pr-a", "pr-b", "pr-c")
ORGANIZATIONS = ("org-1", "org-2")
TEAMS = ("team-1", "team-2")
REPRESENTATIVES = ("rep-a", "rep-b")
SELF = "<the patient>"
PROFESSIONS = (*sorted(BUILTIN_MATRIX.profiles), "unlisted-profession")
CLASSES = (
    *sorted(
        {
            code
            for actions in BUILTIN_MATRIX.profiles.values()
            for codes in actions.values()
            for code in codes
        }
        - {"*"}
    ),
    "psychiatric",
    "genetic",
    "hiv",
    "unlisted-class",
)
# Weighted towards facts in force, with the boundaries (starting or ending exactly now) included.
STARTS = st.sampled_from([NOW - 72 * HOUR, NOW - 72 * HOUR, NOW - HOUR, NOW, NOW + HOUR])
ENDS = st.sampled_from([NOW - HOUR, NOW, NOW + HOUR, NOW + 72 * HOUR, NOW + 72 * HOUR])
MOSTLY = st.sampled_from([True, True, True, True, True, False])

practitioners = st.builds(
    Subject,
    kind=st.just(SubjectKind.PRACTITIONER),
    id=st.sampled_from(PRACTITIONERS),
    profession=st.sampled_from(PROFESSIONS),
    organization_ids=st.frozensets(st.sampled_from(ORGANIZATIONS)),
    care_team_ids=st.frozensets(st.sampled_from(TEAMS)),
    licence_active=MOSTLY,
    identity_valid=MOSTLY,
)
subjects = st.one_of(
    practitioners,
    practitioners,
    st.builds(
        Subject,
        kind=st.just(SubjectKind.ASSISTANT),
        id=st.just("as-1"),
        organization_ids=st.frozensets(st.sampled_from(ORGANIZATIONS)),
        identity_valid=MOSTLY,
        mandator=practitioners,
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.ORGANIZATION_SYSTEM),
        id=st.just("sys-1"),
        organization_ids=st.frozensets(st.sampled_from(ORGANIZATIONS), min_size=1),
        identity_valid=MOSTLY,
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.PATIENT),
        id=st.sampled_from([SELF, SELF, "another-patient"]),
        identity_valid=MOSTLY,
    ),
    st.builds(
        Subject,
        kind=st.just(SubjectKind.REPRESENTATIVE),
        id=st.sampled_from([*REPRESENTATIVES, "rep-stranger"]),
    ),
    st.builds(Subject, kind=st.just(SubjectKind.OPERATOR), id=st.just("op-1")),
)


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    party = draw(st.sampled_from(Party))
    pool = {
        Party.PRACTITIONER: PRACTITIONERS,
        Party.ORGANIZATION: ORGANIZATIONS,
        Party.CARE_TEAM: TEAMS,
    }[party]
    return Grant(
        party=party,
        party_id=draw(st.sampled_from(pool)),
        level=draw(st.sampled_from(GrantLevel)),
        start=draw(STARTS),
        end=draw(st.none() | ENDS),
        granted_by=draw(st.sampled_from(["patient:me", "rep:a"])),
        delegable=draw(st.booleans()),
        source=draw(st.sampled_from(["patient", "representative", "care-event"])),
    )


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    party = draw(st.sampled_from(Party))
    pool = {
        Party.PRACTITIONER: PRACTITIONERS,
        Party.ORGANIZATION: ORGANIZATIONS,
        Party.CARE_TEAM: TEAMS,
    }[party]
    return Block(party, draw(st.sampled_from(pool)))


delegations = st.builds(
    Delegation,
    delegator_id=st.sampled_from(PRACTITIONERS),
    delegate_id=st.sampled_from(PRACTITIONERS),
    level=st.sampled_from(GrantLevel),
    start=STARTS,
    end=ENDS,
)
windows = st.builds(EmergencyWindow, practitioner_id=st.sampled_from(PRACTITIONERS), until=ENDS)
representatives = st.builds(
    Representative,
    person_id=st.sampled_from(REPRESENTATIVES),
    scope=st.sampled_from(MandateScope),
    start=STARTS,
    end=st.none() | ENDS,
)
documents = st.builds(
    DocumentFacts,
    id=st.just(""),
    author_id=st.sampled_from([*PRACTITIONERS, "pr-elsewhere"]),
    author_organization_id=st.sampled_from(ORGANIZATIONS),
    class_code=st.sampled_from(CLASSES),
    type_code=st.just("type"),
    confidentiality=st.sampled_from(Confidentiality),
    hidden=st.booleans(),
    not_yet_visible_to_patient=st.booleans(),
)


@dataclass(frozen=True)
class Scenario:
    """A record as the patient built it: ``settings`` is None when no record row was written;
    each fact comes with whether it was revoked (or closed) after being added."""

    model: RecordModel
    settings: RecordFacts | None
    grants: list[tuple[Grant, bool]]
    blocks: list[tuple[Block, bool]]
    delegations: list[tuple[Delegation, bool]]
    windows: list[tuple[EmergencyWindow, bool]]
    representatives: list[Representative]
    documents: list[tuple[DocumentFacts, int]]  # with a creation time in seconds after NOW


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    def numbered(prefix: str, pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        return [
            (dataclasses.replace(item, id=f"{prefix}-{i:02d}"), extra)
            for i, (item, extra) in enumerate(pairs)
        ]

    revoked = st.sampled_from([False, False, False, True])
    stored_settings = st.builds(
        RecordFacts,
        patient_id=st.just(""),
        state=st.sampled_from([*[RecordState.ACTIVE] * 4, RecordState.CLOSED]),
        referring_physician_id=st.none() | st.sampled_from(PRACTITIONERS),
        emergency_setting=st.sampled_from(EmergencySetting),
        delegation_allowed=st.booleans(),
        default_confidentiality=st.sampled_from(Confidentiality),
    )
    written = draw(st.sampled_from([True, True, False]))  # a record row, two times in three
    settings = draw(stored_settings) if written else None
    mandates = numbered("m", [(r, None) for r in draw(st.lists(representatives, max_size=2))])
    return Scenario(
        model=draw(st.sampled_from([RecordModel.OPT_OUT, RecordModel.OPT_OUT, RecordModel.OPT_IN])),
        settings=settings,
        grants=numbered("g", draw(st.lists(st.tuples(grants(), revoked), max_size=6))),
        blocks=numbered("b", draw(st.lists(st.tuples(blocks(), revoked), max_size=2))),
        delegations=numbered("d", draw(st.lists(st.tuples(delegations, revoked), max_size=3))),
        windows=numbered("e", draw(st.lists(st.tuples(windows, revoked), max_size=2))),
        representatives=[mandate for mandate, _ in mandates],
        documents=numbered(
            "doc", draw(st.lists(st.tuples(documents, st.integers(0, 3)), min_size=1, max_size=10))
        ),
    )


def store(unit: SqlUnitOfWork, scenario: Scenario) -> tuple[str, RecordFacts | None]:
    """Write the scenario for a new patient; returns its id and the facts `load` should give."""
    records = unit.records
    patient_id = add_patient(records.connection)
    if scenario.settings is not None:
        s = scenario.settings
        records.update_record(
            patient_id,
            NOW - HOUR,
            state=s.state,
            referring_physician_id=s.referring_physician_id,
            emergency_setting=s.emergency_setting,
            delegation_allowed=s.delegation_allowed,
            default_confidentiality=s.default_confidentiality,
        )
    for grant, revoked in scenario.grants:
        records.add_grant(patient_id, grant, NOW - 2 * HOUR)
        if revoked:
            assert records.revoke_grant(patient_id, grant.id, NOW - HOUR, "patient:me")
    for block, revoked in scenario.blocks:
        records.add_block(patient_id, block, NOW - 2 * HOUR, "patient:me")
        if revoked:
            assert records.revoke_block(patient_id, block.id, NOW - HOUR, "patient:me")
    for delegation, revoked in scenario.delegations:
        records.add_delegation(patient_id, delegation, NOW - 2 * HOUR)
        if revoked:
            assert records.revoke_delegation(patient_id, delegation.id, NOW - HOUR)
    for window, closed in scenario.windows:
        records.open_emergency(patient_id, window, "emergency", NOW - 2 * HOUR)
        if closed:
            assert records.close_emergency(patient_id, window.id, NOW - HOUR)
    for mandate in scenario.representatives:
        add_representative(
            records.connection,
            patient_id,
            mandate.person_id,
            mandate.scope,
            mandate.start,
            mandate.end,
            mandate.id,
        )
    for document, seconds in scenario.documents:
        records.add_document(patient_id, document, NOW + timedelta(seconds=seconds))

    if scenario.settings is None and scenario.model is RecordModel.OPT_IN:
        return patient_id, None
    settings = scenario.settings or RecordFacts(patient_id="")
    expected = dataclasses.replace(
        settings,
        patient_id=patient_id,
        model=scenario.model,
        grants=tuple(
            g for g, revoked in scenario.grants if not revoked and (g.end is None or g.end > NOW)
        ),
        blocks=tuple(b for b, revoked in scenario.blocks if not revoked),
        delegations=tuple(d for d, revoked in scenario.delegations if not revoked and d.end > NOW),
        emergency_windows=tuple(
            w for w, closed in scenario.windows if not closed and w.until > NOW
        ),
        representatives=tuple(r for r in scenario.representatives if r.end is None or r.end > NOW),
    )
    return patient_id, expected


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scenario=scenarios(),
    people=st.lists(subjects, min_size=1, max_size=8),
    pages=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 4)), max_size=3),
)
def test_the_sql_filter_returns_exactly_what_decide_permits(
    engine: Engine,
    scenario: Scenario,
    people: list[Subject],
    pages: list[tuple[int, int]],
) -> None:
    with SqlUnitOfWork(engine, record_model=scenario.model) as unit:  # rolled back at the end
        patient_id, expected = store(unit, scenario)
        facts = unit.records.load(patient_id, NOW)
        assert sort_facts(facts) == sort_facts(expected)
        in_order = sorted(scenario.documents, key=lambda pair: (pair[1], pair[0].id))
        ordered = [document for document, _ in in_order]
        for person in people:
            subject = dataclasses.replace(person, id=patient_id) if person.id == SELF else person
            visible = visible_filter(subject, facts, NOW, BUILTIN_MATRIX)
            total, found = unit.records.find_documents(patient_id, visible, offset=0, count=1000)
            permitted = [
                document.id
                for document in ordered
                if decide(subject, Action.READ, facts, document, NOW, BUILTIN_MATRIX).permit
            ]
            matching = [document.id for document in ordered if visible.matches(document)]
            assert [document.id for document in found] == matching, (subject, visible)
            assert matching == permitted, (subject, visible)
            assert total == len(permitted)
            hidden_away = len(ordered) - len(permitted)
            hypothesis_event(f"{subject.kind}: {'some' if permitted else 'no'} documents permitted")
            hypothesis_event(f"{subject.kind}: {'some' if hidden_away else 'no'} documents refused")
            for offset, count in pages:
                page_total, page = unit.records.find_documents(
                    patient_id, visible, offset=offset, count=count
                )
                assert page_total == total
                assert [document.id for document in page] == permitted[offset : offset + count]
