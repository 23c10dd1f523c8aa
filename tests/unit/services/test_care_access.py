"""What professionals do to reach a record (`CareAccess`), on a unit of work in memory:
breaking the glass (a reason, the patient's setting, a block, the quota and its alert); the
delegations are in test_end_delegation.py, care events through the API in
tests/integration/test_record_policy.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carevault.domain.authorization import (
    Action,
    EmergencySetting,
    Party,
)
from carevault.domain.errors import InvalidInput
from carevault.services.care_access import CareAccess
from carevault.services.record_policy import MAX_REASON, RecordPolicy, Refused
from support.fake_records import FakeRecordUnitOfWork
from support.record_world import (
    DR,
    DR2,
    MATRIX,
    NOW,
    PATIENT,
    AuditPort,
    Clock,
    entries,
    facts,
    new_uow,
    reads,
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
def care(policy: RecordPolicy) -> CareAccess:
    return CareAccess(policy)


def test_with_emergency_access_off_no_practitioner_breaks_the_glass(
        care: CareAccess,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.set_emergency_setting(PATIENT, "pat-1", EmergencySetting.OFF)
    with pytest.raises(Refused) as refused:
        care.declare_emergency(DR, "pat-1", "unconscious on arrival")
    assert refused.value.decision.reason == "emergency-off"
    assert uow.records.emergencies == {} and uow.commits == 1


def test_a_declared_emergency_opens_the_record_for_a_day_and_the_patient_is_told(
        care: CareAccess,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    window = care.declare_emergency(DR, "pat-1", "  unconscious\non arrival ")
    assert (window.practitioner_id, window.until) == ("dr-1", NOW + timedelta(hours=24))
    assert facts(uow).emergency_windows == (window,)
    assert uow.records.emergencies[window.id].reason == "unconscious on arrival"
    decision = policy.decide(DR.subject, Action.READ, facts(uow), None, NOW)
    assert decision.permit and decision.rule == "emergency"
    assert not reads(policy, uow, DR2)  # the window is the declarer's alone
    assert not reads(policy, uow, DR, NOW + timedelta(hours=24))
    [entry] = entries(uow, "emergency-access")
    assert entry.purpose_of_use == "EMER" and entry.detail["reason"] == "unconscious on arrival"
    [told] = uow.records.notifications
    assert told.kind == "emergency-access" and told.payload["sender"] == "Practitioner/dr-1"
    assert "Reason: unconscious on arrival" in told.payload["en"]


@pytest.mark.parametrize("reason", ["", "  \n ", "x" * (MAX_REASON + 1)])
def test_an_emergency_needs_a_reason_of_reasonable_length(
        care: CareAccess,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        care.declare_emergency(DR, "pat-1", reason)
    assert refused.value.expression == "reason"
    assert uow.records.emergencies == {} and uow.commits == 0


def test_a_blocked_practitioner_does_not_break_the_glass(
        care: CareAccess,
        policy: RecordPolicy, uow: FakeRecordUnitOfWork) -> None:
    policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1")
    with pytest.raises(Refused) as refused:
        care.declare_emergency(DR, "pat-1", "unconscious on arrival")
    assert refused.value.decision.rule == "blacklist"
    assert uow.records.emergencies == {} and uow.records.notifications == []


def test_the_emergency_quota_counts_a_day_of_declarations_and_then_refuses_with_an_alert(
        uow: FakeRecordUnitOfWork, clock: Clock) -> None:
    """Two declarations allowed in 24 hours, on any records: the third is refused by the
    engine (``emergency-quota``), nothing opens, and for a caller without a recorder (the
    workspace: ``alert``) the refusal and its alert are written here; a day later the
    professional may declare again, and another professional was never concerned."""
    policy = CareAccess(RecordPolicy(lambda: uow, AuditPort(), clock=clock, matrix=MATRIX),
                        emergency_quota=2)
    policy.declare_emergency(DR, "pat-1", "unconscious")
    clock.now += timedelta(hours=1)
    policy.declare_emergency(DR, "pat-2", "unconscious too")
    written = len(entries(uow))
    with pytest.raises(Refused) as refused:
        policy.declare_emergency(DR, "pat-1", "a third", alert=True)
    assert refused.value.decision.reason == "emergency-quota"
    assert "as many emergencies" in refused.value.message
    kinds = [(e.kind, e.outcome, e.detail.get("decision")) for e in entries(uow)[written:]]
    assert kinds == [("policy", "4", None), ("alert", "4", "deny")]
    assert len(uow.records.emergencies) == 2
    policy.declare_emergency(DR2, "pat-1", "their own")  # another professional's quota
    clock.now += timedelta(hours=23, seconds=1)  # the first declaration is a day old
    policy.declare_emergency(DR, "pat-1", "the next day")
    with pytest.raises(Refused):
        policy.declare_emergency(DR, "pat-2", "again")  # the API's caller: its recorder alerts
    assert len(entries(uow)) == written + 2 + 2  # two permits since; the last wrote nothing
