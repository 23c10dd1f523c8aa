"""The people a patient names to act for them (`Representatives`), on a unit of work in memory:
who may name, limit and end a mandate, what each change audits and tells the patient when a
representative made it, and that a representative never changes their own mandate."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carevault.domain.authorization import (
    Action,
    GrantLevel,
    MandateScope,
    Party,
)
from carevault.domain.errors import InvalidInput, NotFound, NotPermitted
from carevault.services.record_policy import RecordPolicy, Refused
from carevault.services.representatives import Representatives
from support.fake_records import FakeRecordUnitOfWork
from support.record_world import (
    LATER,
    MATRIX,
    NOW,
    OTHER_PATIENT,
    PATIENT,
    REP,
    AuditPort,
    Clock,
    entries,
    facts,
    new_uow,
    plant_mandate,
)


@pytest.fixture
def uow() -> FakeRecordUnitOfWork:
    return new_uow()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(uow: FakeRecordUnitOfWork, clock: Clock) -> RecordPolicy:
    return RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX)


@pytest.fixture
def representatives(policy: RecordPolicy) -> Representatives:
    return Representatives(policy)


def test_a_patient_names_a_representative_who_may_then_manage_the_record(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    assert not policy.decide(REP.subject, Action.MANAGE, facts(uow), None, NOW).permit
    mandate = representatives.add(PATIENT, "pat-1", "acc-rep", MandateScope.MANAGE,
                                        end=LATER)
    assert (mandate.representative_account_id, mandate.patient_id, mandate.scope,
            mandate.starts_at, mandate.ends_at) == ("acc-rep", "pat-1", "manage", NOW, LATER)
    assert uow.accounts.mandates_for("pat-1") == [mandate]
    assert policy.decide(REP.subject, Action.MANAGE, facts(uow), None, NOW).permit
    assert "pat-1" in uow.records.settings  # the record is marked as written
    [entry] = entries(uow, "mandate-create")
    assert entry.detail == {"mandate": mandate.id, "representative": "account:acc-rep",
                            "scope": "manage", "end": "2026-12-31T09:00:00.000Z"}
    assert uow.records.notifications == [] and uow.commits == 1


def test_a_representative_is_named_by_the_login_of_their_account(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    mandate = representatives.name_by_login(PATIENT, "pat-1", " rep@example.org ",
                                            MandateScope.READ)
    assert mandate.representative_account_id == "acc-rep" and mandate.scope == "read"


@pytest.mark.parametrize("login", ["nobody@example.org", "pat@example.org"])
def test_only_a_representatives_account_is_named_representative(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, login: str) -> None:
    with pytest.raises(NotFound) as refused:
        representatives.name_by_login(PATIENT, "pat-1", login, MandateScope.READ)
    assert refused.value.expression == "login"
    with pytest.raises(NotFound):
        representatives.add(PATIENT, "pat-1", "acc-pat", MandateScope.READ)
    assert uow.accounts.mandates_for("pat-1") == [] and uow.commits == 0


def test_a_mandate_ends_after_it_starts(
        representatives: Representatives, policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(InvalidInput) as refused:
        representatives.add(PATIENT, "pat-1", "acc-rep", MandateScope.READ,
                                  start=LATER, end=LATER)
    assert refused.value.expression == "end"
    assert uow.accounts.mandates_for("pat-1") == [] and uow.commits == 0


def test_a_representative_does_not_give_themselves_a_mandate(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE, ends=LATER)
    with pytest.raises(NotPermitted, match="themselves") as refused:
        representatives.add(REP, "pat-1", "acc-rep", MandateScope.MANAGE)
    assert not isinstance(refused.value, Refused)
    assert [m.id for m in uow.accounts.mandates_for("pat-1")] == ["m-1"]


def test_a_managing_representative_names_another_and_the_patient_is_told(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    mandate = representatives.add(REP, "pat-1", "acc-rep-2", MandateScope.READ)
    [told] = uow.records.notifications
    assert told.kind == "mandate-create" and told.payload["mandate"] == mandate.id
    assert told.payload["en"] == "Your representative named another representative for you."


def test_a_removed_representative_is_refused_from_the_next_request(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, clock: Clock) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    clock.now = NOW + timedelta(minutes=5)
    representatives.remove(PATIENT, "pat-1", "m-1")
    [ended] = uow.accounts.mandates_for("pat-1")
    assert ended.ends_at == clock.now
    with pytest.raises(Refused) as refused:
        policy.grant(REP, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert refused.value.decision.reason == "mandate-none"
    [entry] = entries(uow, "mandate-end")
    assert (entry.action, entry.detail) == ("D", {"mandate": "m-1"})
    with pytest.raises(NotFound, match="no mandate m-1 in force"):
        representatives.remove(PATIENT, "pat-1", "m-1")


def test_a_mandate_of_another_record_is_not_removed_from_this_one(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    with pytest.raises(NotFound):
        representatives.remove(OTHER_PATIENT, "pat-2", "m-1")
    assert uow.accounts.mandates_for("pat-1")[0].ends_at is None


def test_a_patient_narrows_a_mandate_to_reading_until_a_date(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    representatives.limit(PATIENT, "pat-1", "m-1", MandateScope.READ, LATER)
    [limited] = uow.accounts.mandates_for("pat-1")
    assert (limited.scope, limited.ends_at) == ("read", LATER)
    with pytest.raises(Refused):
        policy.grant(REP, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL)
    assert entries(uow, "mandate-limit")[0].detail == {
        "mandate": "m-1", "scope": "read", "end": "2026-12-31T09:00:00.000Z"}


def test_a_mandate_is_limited_to_an_end_in_the_future(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    with pytest.raises(InvalidInput):
        representatives.limit(PATIENT, "pat-1", "m-1", MandateScope.READ, NOW)
    with pytest.raises(NotFound):
        representatives.limit(PATIENT, "pat-1", "m-9", MandateScope.READ, None)
    assert uow.accounts.mandates_for("pat-1")[0].scope == "manage" and uow.commits == 1


def test_a_representative_does_not_change_their_own_mandate(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    with pytest.raises(NotPermitted, match="their own mandate") as refused:
        representatives.limit(REP, "pat-1", "m-1", MandateScope.MANAGE, None)
    assert not isinstance(refused.value, Refused)
    assert uow.audit.records == [] and uow.commits == 1


def test_a_mandate_changed_by_a_representative_is_told_to_the_patient(
        representatives: Representatives,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    plant_mandate(uow, MandateScope.MANAGE)
    plant_mandate(uow, MandateScope.MANAGE, account_id="acc-rep-2", mandate_id="m-2")
    representatives.limit(REP, "pat-1", "m-2", MandateScope.READ, None)
    representatives.remove(REP, "pat-1", "m-2")
    assert [n.kind for n in uow.records.notifications] == ["mandate-limit", "mandate-end"]
    assert uow.records.notifications[1].payload["en"] == (
        "Your representative ended a representative's mandate.")
