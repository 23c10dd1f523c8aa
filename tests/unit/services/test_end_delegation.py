"""Ending a delegation (`CareAccess.end_delegation`), on the record policy's fakes: its
delegator ends it in person, the patient (or a representative who manages the record) ends any;
the delegate is refused from that moment; nobody else ends one, and each end is audited in its
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import Action, GrantLevel, Party, Subject, SubjectKind
from carevault.domain.errors import NotFound, NotPermitted
from carevault.services.care_access import CareAccess
from carevault.services.record_policy import Actor, RecordPolicy
from support.fake_records import FakeRecordUnitOfWork
from support.fake_uow import FakeAuditStore
from support.record_world import MATRIX

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
PATIENT = Actor(Subject(SubjectKind.PATIENT, "pat-1"), "account:acc-pat")
DR = Actor(Subject(SubjectKind.PRACTITIONER, "dr-1", "physician"), "Practitioner/dr-1")
DR2 = Actor(Subject(SubjectKind.PRACTITIONER, "dr-2", "physician"), "Practitioner/dr-2")
DR3 = Actor(Subject(SubjectKind.PRACTITIONER, "dr-3", "physician"), "Practitioner/dr-3")


class AuditPort:
    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


class BrokenAuditPort:
    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        raise RuntimeError("the audit store is unreachable")


@pytest.fixture
def uow() -> FakeRecordUnitOfWork:
    unit = FakeRecordUnitOfWork()
    unit.directory.add_patient("pat-1", [])
    unit.directory.add_patient("pat-2", [])
    for n in (1, 2, 3):
        unit.directory.add_practitioner(f"dr-{n}", f"HP-{n}")
    return unit


@pytest.fixture
def policy(uow: FakeRecordUnitOfWork) -> RecordPolicy:
    return RecordPolicy(lambda: uow, AuditPort(), clock=lambda: NOW, matrix=MATRIX)


@pytest.fixture
def care(policy: RecordPolicy) -> CareAccess:
    return CareAccess(policy)


@pytest.fixture
def delegation_id(policy: RecordPolicy, care: CareAccess) -> str:
    policy.allow_delegation(PATIENT, "pat-1", True)
    policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL, end=LATER,
                 delegable=True)
    return care.delegate(DR, "pat-1", "dr-2", GrantLevel.NORMAL, LATER).id


def reads(policy: RecordPolicy, uow: FakeRecordUnitOfWork, who: Actor) -> bool:
    return policy.decide(who.subject, Action.READ, uow.records.load("pat-1", NOW), None,
                         NOW).permit


def ends(uow: FakeRecordUnitOfWork) -> list[AuditRecord]:
    return [r for r in uow.audit.records if r.interaction == "delegation-end"]


def test_the_delegator_ends_their_delegation_and_the_delegate_is_refused_at_once(
        care: CareAccess, policy: RecordPolicy, uow: FakeRecordUnitOfWork,
        delegation_id: str) -> None:
    assert reads(policy, uow, DR2)
    care.end_delegation(DR, "pat-1", delegation_id)
    assert not reads(policy, uow, DR2) and reads(policy, uow, DR)
    [entry] = ends(uow)
    assert (entry.action, entry.patient, entry.agent.who) == ("D", "pat-1", "Practitioner/dr-1")
    assert entry.detail == {"delegation": delegation_id, "delegate": "Practitioner/dr-2",
                            "delegator": "Practitioner/dr-1", "by": "delegator"}
    # Once: what is no longer in force is no longer theirs to end, and they do not manage it.
    with pytest.raises(NotPermitted):
        care.end_delegation(DR, "pat-1", delegation_id)
    with pytest.raises(NotFound):
        care.end_delegation(PATIENT, "pat-1", delegation_id)


def test_the_patient_ends_a_delegation_on_their_record(
        care: CareAccess, policy: RecordPolicy, uow: FakeRecordUnitOfWork,
        delegation_id: str) -> None:
    care.end_delegation(PATIENT, "pat-1", delegation_id)
    assert not reads(policy, uow, DR2)
    assert ends(uow)[0].detail["by"] == "record"


@pytest.mark.parametrize("who", [DR2, DR3], ids=["the delegate", "a stranger"])
def test_neither_the_delegate_nor_a_stranger_ends_a_delegation(
        care: CareAccess, policy: RecordPolicy, uow: FakeRecordUnitOfWork,
        delegation_id: str, who: Actor) -> None:
    with pytest.raises(NotPermitted):
        care.end_delegation(who, "pat-1", delegation_id)
    assert reads(policy, uow, DR2) and ends(uow) == []


def test_a_system_acting_for_the_delegator_does_not_end_it(
        care: CareAccess, policy: RecordPolicy, uow: FakeRecordUnitOfWork,
        delegation_id: str) -> None:
    system = Actor(DR.subject, DR.who, organization="org-1")
    with pytest.raises(NotPermitted):
        care.end_delegation(system, "pat-1", delegation_id)
    assert reads(policy, uow, DR2)


def test_a_delegation_of_another_record_or_unknown_is_not_found(
        care: CareAccess, policy: RecordPolicy, uow: FakeRecordUnitOfWork,
        delegation_id: str) -> None:
    other = Actor(Subject(SubjectKind.PATIENT, "pat-2"), "account:acc-pat-2")
    with pytest.raises(NotFound):
        care.end_delegation(other, "pat-2", delegation_id)
    with pytest.raises(NotFound):
        care.end_delegation(PATIENT, "pat-1", "no-such-delegation")
    with pytest.raises(NotPermitted):  # a professional learns nothing of others' delegations
        care.end_delegation(DR, "pat-1", "no-such-delegation")
    assert reads(policy, uow, DR2)


def test_an_end_whose_audit_entry_cannot_be_written_is_not_kept(
        uow: FakeRecordUnitOfWork, policy: RecordPolicy, delegation_id: str) -> None:
    broken = CareAccess(
        RecordPolicy(lambda: uow, BrokenAuditPort(), clock=lambda: NOW, matrix=MATRIX))
    with pytest.raises(RuntimeError):
        broken.end_delegation(DR, "pat-1", delegation_id)
    assert reads(policy, uow, DR2)
