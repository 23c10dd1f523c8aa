"""The reads the record's FHIR handlers answer with (Consent after a change, the record's facts
after it), on a unit of work in memory: each opens its own unit of work and commits nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carevault.domain.authorization import (
    GrantLevel,
    Party,
    ProfileMatrix,
    RecordState,
    Subject,
    SubjectKind,
)
from carevault.services import record_reads
from carevault.services.record_policy import Actor, RecordChange, RecordPolicy
from support.fake_records import FakeRecordUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MATRIX = ProfileMatrix.from_mapping(
    {"version": "test", "profiles": {"physician": {"read": ["*"], "write": ["*"]}}}
)
PATIENT = Actor(Subject(SubjectKind.PATIENT, "pat-1"), "account:acc-pat")


class Opened:
    """Hands out the one fake unit of work and counts how often it was opened."""

    def __init__(self, uow: FakeRecordUnitOfWork) -> None:
        self.uow, self.count = uow, 0

    def __call__(self) -> FakeRecordUnitOfWork:
        self.count += 1
        return self.uow


class NoAudit:
    def append_with(self, store: object, records: object) -> list[int]:
        return []


def world() -> tuple[FakeRecordUnitOfWork, RecordPolicy]:
    uow = FakeRecordUnitOfWork()
    uow.directory.add_patient("pat-1", [])
    uow.directory.add_practitioner("dr-1", "HP-1")
    uow.directory.add_practitioner("dr-2", "HP-2")
    policy = RecordPolicy(lambda: uow, NoAudit(), clock=lambda: NOW, matrix=MATRIX)
    return uow, policy


def test_a_records_consents_include_the_withdrawn_ones() -> None:
    uow, policy = world()
    kept = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-1", GrantLevel.NORMAL,
                        end=NOW + timedelta(days=30))
    gone = policy.grant(PATIENT, "pat-1", Party.PRACTITIONER, "dr-2", GrantLevel.NORMAL,
                        end=NOW + timedelta(days=30))
    policy.revoke_grant(PATIENT, "pat-1", gone.id)
    block = policy.block(PATIENT, "pat-1", Party.PRACTITIONER, "dr-2")
    units, commits = Opened(uow), uow.commits
    grants, blocks = record_reads.consents(units, "pat-1")
    assert {g.grant.id for g in grants} == {kept.id, gone.id}
    assert [b.block.id for b in blocks] == [block.id]
    withdrawn, _ = record_reads.consent(units, "pat-1", gone.id)
    assert withdrawn is not None and withdrawn.revoked_at is not None
    assert record_reads.consent(units, "pat-1", block.id) == (None, blocks[0])
    assert record_reads.consent(units, "pat-1", "nothing") == (None, None)
    assert record_reads.consents(units, "pat-2") == ([], [])
    assert units.count == 5 and uow.commits == commits


def test_the_records_facts_are_read_again_after_a_change() -> None:
    uow, policy = world()
    policy.change_record(PATIENT, "pat-1", RecordChange(state=RecordState.CLOSED))
    record = record_reads.record_now(Opened(uow), "pat-1", NOW)
    assert record is not None and record.state is RecordState.CLOSED
    assert record_reads.record_now(Opened(uow), "pat-nobody", NOW) is None


def test_a_page_read_by_the_patient_is_recorded_as_theirs() -> None:
    seen = record_reads.page_viewed(
        account_id="acc-pat", role="patient", network="192.0.2.7", patient_id="pat-1",
        interaction="documents", entity_type="DocumentReference", now=NOW)
    assert (seen.stream, seen.kind, seen.action, seen.outcome) == (
        "clinical", "patient-action", "R", "0")
    assert (seen.patient, seen.interaction, seen.entity_type) == (
        "pat-1", "documents", "DocumentReference")
    assert seen.recorded == "2026-12-01T09:00:00.000Z"
    assert (seen.agent.who, seen.agent.role, seen.agent.network, seen.agent.on_behalf_of) == (
        "account:acc-pat", "patient", "192.0.2.7", None)


def test_a_page_read_by_a_representative_is_recorded_on_behalf_of_the_patient() -> None:
    seen = record_reads.page_viewed(
        account_id="acc-rep", role="representative", network=None, patient_id="pat-1",
        interaction="access-history", entity_type="AuditEvent", now=NOW)
    assert (seen.agent.who, seen.agent.role, seen.agent.on_behalf_of) == (
        "account:acc-rep", "representative", "Patient/pat-1")
    assert seen.patient == "pat-1"
