"""A record in memory for the record's use cases (`RecordPolicy`, `Representatives`,
`CareAccess`): two patients, two physicians, an organization, a patient's and two
representatives' accounts; the audit port, a settable clock and the helpers their tests share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from carevault.adapters.storage.account_store import AccountRecord
from carevault.domain.accounts import AccountKind, Mandate
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    Action,
    MandateScope,
    ProfileMatrix,
    RecordFacts,
    Subject,
    SubjectKind,
)
from carevault.services.record_policy import Actor, RecordPolicy
from support.fake_records import FakeRecordUnitOfWork
from support.fake_uow import FakeAuditStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
MATRIX = ProfileMatrix.from_mapping(
    {"version": "test", "profiles": {"physician": {"read": ["*"], "write": ["*"]}}}
)

PATIENT = Actor(Subject(SubjectKind.PATIENT, "pat-1"), "account:acc-pat")
OTHER_PATIENT = Actor(Subject(SubjectKind.PATIENT, "pat-2"), "account:acc-pat-2")
REP = Actor(Subject(SubjectKind.REPRESENTATIVE, "acc-rep"), "account:acc-rep")
DR = Actor(Subject(SubjectKind.PRACTITIONER, "dr-1", "physician"), "Practitioner/dr-1")
DR2 = Actor(Subject(SubjectKind.PRACTITIONER, "dr-2", "physician"), "Practitioner/dr-2")


class AuditPort:
    """The audit log's port (`AuditAppender`): appends to the unit of work's audit store, so
    that an entry is kept or rolled back with the change it records."""

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


class BrokenAuditPort:
    """An audit log that fails to append: the change it should record must not stay."""

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        raise RuntimeError("the audit store is unreachable")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def account(account_id: str, kind: AccountKind, login: str,
            patient_id: str | None = None) -> AccountRecord:
    return AccountRecord(account_id, kind, login, "hash", b"sealed", None, patient_id,
                         frozenset(), NOW - timedelta(days=400))




def new_uow() -> FakeRecordUnitOfWork:
    unit = FakeRecordUnitOfWork()
    unit.directory.add_patient("pat-1", [])
    unit.directory.add_patient("pat-2", [])
    unit.directory.add_practitioner("dr-1", "HP-1")
    unit.directory.add_practitioner("dr-2", "HP-2")
    unit.directory.add_organization("org-1")
    unit.accounts.add(account("acc-pat", AccountKind.PATIENT, "pat@example.org", "pat-1"))
    unit.accounts.add(account("acc-rep", AccountKind.REPRESENTATIVE, "rep@example.org"))
    unit.accounts.add(account("acc-rep-2", AccountKind.REPRESENTATIVE, "rep2@example.org"))
    return unit


def plant_mandate(uow: FakeRecordUnitOfWork, scope: MandateScope, *, account_id: str = "acc-rep",
                  starts: datetime = NOW - timedelta(days=1), ends: datetime | None = None,
                  mandate_id: str = "m-1") -> None:
    """A mandate in force, stored as the account store holds it."""
    with uow:
        uow.accounts.add_mandate(
            Mandate(mandate_id, account_id, "pat-1", scope.value, starts, ends), NOW)
        uow.commit()


def facts(uow: FakeRecordUnitOfWork, patient_id: str = "pat-1",
          at: datetime = NOW) -> RecordFacts:
    found = uow.records.load(patient_id, at)
    assert found is not None
    return found


def entries(uow: FakeRecordUnitOfWork, interaction: str | None = None) -> list[AuditRecord]:
    return [r for r in uow.audit.records if interaction in (None, r.interaction)]


def reads(policy: RecordPolicy, uow: FakeRecordUnitOfWork, who: Actor,
          at: datetime = NOW) -> bool:
    """Whether the engine lets ``who`` read pat-1's record, on the facts stored now."""
    return policy.decide(who.subject, Action.READ, uow.records.load("pat-1", at), None, at).permit
