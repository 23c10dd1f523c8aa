"""The record policy's fakes (`support.fake_records`) answer as the real stores do: the same
checks run on `FakeRecordUnitOfWork` and on the real unit of work (SQLite and PostgreSQL), for
what `carevault.services.record_policy` reads and writes: the record's facts in one load, its
settings, grants, blocks, delegations and emergency windows, and the representatives' accounts
and mandates the facts include."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.accounts import AccountKind, Mandate
from carevault.domain.authorization import (
    Block,
    Confidentiality,
    Delegation,
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
)
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import patient
from support.contracts import Reused
from support.fake_records import FakeRecordUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _account(account_id: str, login: str, kind: AccountKind = AccountKind.REPRESENTATIVE,
             patient_id: str | None = None) -> AccountRecord:
    return AccountRecord(account_id, kind, login, "hash", b"sealed", None, patient_id,
                         frozenset(), NOW - DAY)


def _grant(grant_id: str, party: Party, start: datetime, end: datetime | None,
           level: GrantLevel = GrantLevel.NORMAL) -> Grant:
    return Grant(party, "party-1", level, start, end, "account:a", False, grant_id, "patient")


def check_record_store(uow: Any, patient_id: str, other_id: str) -> None:
    with uow:
        assert uow.records.load(patient_id, NOW) == RecordFacts(patient_id)  # opt-out defaults
        assert uow.records.load("nobody", NOW) is None
        assert not uow.records.unopened(patient_id, NOW)
        assert uow.records.grants(patient_id) == [] and uow.records.blocks(patient_id) == []
        uow.records.add_grant(patient_id, _grant("g1", Party.PRACTITIONER, NOW, NOW + DAY), NOW)
        uow.records.add_grant(patient_id, _grant("g2", Party.ORGANIZATION, NOW - DAY, NOW),
                              NOW - HOUR, source_ref="Encounter/e-1")  # ends now: not a fact
        made = uow.records.add_grant(patient_id, _grant("", Party.PRACTITIONER, NOW - HOUR,
                                                        None), NOW + HOUR)
        uow.records.add_block(patient_id, Block(Party.PRACTITIONER, "dr-b", "b2"), NOW, "p")
        uow.records.add_block(patient_id, Block(Party.ORGANIZATION, "org-b", "b1"), NOW, "p")
        uow.commit()
    assert made  # a grant stored without an id gets one
    with uow:
        records = uow.records
        facts = records.load(patient_id, NOW)
        # Facts in force at NOW, by start then id; the record row is not opened by a grant.
        assert [g.id for g in facts.grants] == [made, "g1"]
        assert facts.grants[1] == _grant("g1", Party.PRACTITIONER, NOW, NOW + DAY)
        assert [b.id for b in facts.blocks] == ["b1", "b2"]
        assert facts.state is RecordState.ACTIVE and facts.referring_physician_id is None
        # Every grant that is not revoked, by creation: expired ones included.
        assert [s.grant.id for s in records.grants(patient_id)] == ["g2", "g1", made]
        assert records.grant(patient_id, "g2").source_ref == "Encounter/e-1"
        assert records.grant(patient_id, "g2").created_at == NOW - HOUR
        assert records.grant(other_id, "g1") is None and records.grant(patient_id, "x") is None
        assert not records.revoke_grant(other_id, "g1", NOW, "someone")
        assert records.revoke_grant(patient_id, "g1", NOW, "account:a")
        assert not records.revoke_grant(patient_id, "g1", NOW + HOUR, "account:b")
        assert records.update_grant(patient_id, made, level=GrantLevel.EXTENDED, end=NOW + DAY)
        assert records.update_grant(patient_id, made)  # nothing to change: it exists
        assert not records.update_grant(patient_id, "g1", level=GrantLevel.EXTENDED)  # revoked
        assert not records.update_grant(other_id, made, end=None)
        assert not records.update_grant(patient_id, "nope")
        assert not records.revoke_block(other_id, "b1", NOW, "p")
        assert records.revoke_block(patient_id, "b1", NOW + HOUR, "account:a")
        assert not records.revoke_block(patient_id, "b1", NOW + HOUR, "account:a")
        uow.commit()
    with uow:
        records = uow.records
        revoked = records.grant(patient_id, "g1")
        assert (revoked.revoked_at, revoked.revoked_by) == (NOW, "account:a")
        assert [s.grant.id for s in records.grants(patient_id)] == ["g2", made]
        assert [s.grant.id for s in records.grants(patient_id, include_revoked=True)] == [
            "g2", "g1", made]
        [changed] = records.load(patient_id, NOW).grants
        assert (changed.id, changed.level, changed.end) == (made, GrantLevel.EXTENDED, NOW + DAY)
        assert records.update_grant(patient_id, made, end=None)
        assert records.load(patient_id, NOW).grants[0].end is None
        assert [s.block.id for s in records.blocks(patient_id)] == ["b2"]
        lifted = records.blocks(patient_id, include_revoked=True)
        assert [(s.block.id, s.revoked_at, s.revoked_by, s.created_by) for s in lifted] == [
            ("b1", NOW + HOUR, "account:a", "p"), ("b2", None, None, "p")]
        assert records.load(other_id, NOW) == RecordFacts(other_id)
        uow.records.add_grant(patient_id, _grant("g4", Party.PRACTITIONER, NOW, None), NOW)
    with uow:  # not committed: neither the change nor the new grant stayed
        assert uow.records.load(patient_id, NOW).grants[0].end == NOW + DAY
        assert uow.records.grant(patient_id, "g4") is None


def check_record_settings(uow: Any, patient_id: str) -> None:
    with uow:
        uow.records.ensure_record(patient_id, NOW)
        uow.records.ensure_record(patient_id, NOW + HOUR)  # once
        uow.commit()
    with uow:
        assert uow.records.load(patient_id, NOW) == RecordFacts(patient_id)
        uow.records.update_record(
            patient_id, NOW, state=RecordState.CLOSED, referring_physician_id="dr-r",
            emergency_setting=EmergencySetting.OFF, delegation_allowed=True,
            default_confidentiality=Confidentiality.R)
        uow.commit()
    with uow:
        facts = uow.records.load(patient_id, NOW)
        assert (facts.state, facts.referring_physician_id, facts.emergency_setting,
                facts.delegation_allowed, facts.default_confidentiality) == (
            RecordState.CLOSED, "dr-r", EmergencySetting.OFF, True, Confidentiality.R)
        # What is left out stays; the referring physician is cleared with None.
        uow.records.update_record(patient_id, NOW, state=RecordState.ACTIVE)
        assert uow.records.load(patient_id, NOW).referring_physician_id == "dr-r"
        uow.records.update_record(patient_id, NOW, referring_physician_id=None)
        facts = uow.records.load(patient_id, NOW)
        assert facts.referring_physician_id is None and facts.state is RecordState.ACTIVE
        assert facts.emergency_setting is EmergencySetting.OFF
    with uow:  # not committed
        assert uow.records.load(patient_id, NOW).state is RecordState.CLOSED


def check_windows_and_delegations(uow: Any, patient_id: str) -> None:
    with uow:
        records = uow.records
        opened = records.open_emergency(patient_id, EmergencyWindow("dr-e", NOW + DAY, "w1"),
                                        "unconscious", NOW)
        records.open_emergency(patient_id, EmergencyWindow("dr-f", NOW, "w0"), "old", NOW - DAY)
        records.add_delegation(patient_id, Delegation("dr-a", "dr-b", GrantLevel.NORMAL, NOW,
                                                      NOW + DAY, "d1"), NOW)
        records.add_delegation(patient_id, Delegation("dr-a", "dr-c", GrantLevel.NORMAL,
                                                      NOW - DAY, NOW, "d0"), NOW)
        uow.commit()
    assert opened == "w1"
    with uow:
        facts = uow.records.load(patient_id, NOW)
        assert facts.emergency_windows == (EmergencyWindow("dr-e", NOW + DAY, "w1"),)
        assert facts.delegations == (
            Delegation("dr-a", "dr-b", GrantLevel.NORMAL, NOW, NOW + DAY, "d1"),)
        assert uow.records.load(patient_id, NOW + DAY).emergency_windows == ()


def check_accounts_and_mandates(uow: Any, patient_id: str, other_id: str) -> None:
    with uow:
        uow.accounts.add(_account("acc-r1", "r1@example.org"))
        uow.accounts.add(_account("acc-r2", "r2@example.org"))
        uow.accounts.add(_account("acc-r3", "r3@example.org"))
        uow.accounts.add_mandate(Mandate("m2", "acc-r2", patient_id, "manage", NOW, None), NOW)
        uow.accounts.add_mandate(Mandate("m1", "acc-r1", patient_id, "read", NOW - DAY,
                                         NOW + DAY), NOW)
        uow.accounts.add_mandate(Mandate("m3", "acc-r3", patient_id, "read", NOW + HOUR,
                                         None), NOW)  # starts later
        uow.accounts.add_mandate(Mandate("m4", "acc-r1", other_id, "read", NOW, None), NOW)
        uow.commit()
    with uow:
        accounts = uow.accounts
        assert accounts.by_id("acc-r1").login == "r1@example.org"
        assert accounts.by_login("r2@example.org").id == "acc-r2"
        assert accounts.by_id("nope") is None and accounts.by_login("nope") is None
        assert [m.id for m in accounts.mandates_for(patient_id)] == ["m1", "m2", "m3"]
        # The record's facts read the mandates not ended at the time, later ones too.
        assert uow.records.load(patient_id, NOW).representatives == (
            Representative("acc-r1", MandateScope.READ, NOW - DAY, NOW + DAY, "m1"),
            Representative("acc-r2", MandateScope.MANAGE, NOW, None, "m2"),
            Representative("acc-r3", MandateScope.READ, NOW + HOUR, None, "m3"),
        )
        assert not accounts.end_mandate(other_id, "m1", NOW)  # another record's
        assert not accounts.end_mandate(patient_id, "m3", NOW)  # not in force yet
        assert not accounts.limit_mandate(patient_id, "m3", "manage", None, NOW)
        assert accounts.end_mandate(patient_id, "m1", NOW)
        assert not accounts.end_mandate(patient_id, "m1", NOW)  # ended now
        # Started this very instant: ended at it, it would end when it starts (and no reading
        # of the record's mandates would work any more).
        assert not accounts.end_mandate(patient_id, "m2", NOW)
        assert accounts.limit_mandate(patient_id, "m2", "read", NOW + DAY, NOW)
        assert not accounts.limit_mandate(patient_id, "nope", "read", None, NOW)
        uow.commit()
    with uow:
        ended, limited, _later = uow.accounts.mandates_for(patient_id)
        assert ended.ends_at == NOW and (limited.scope, limited.ends_at) == ("read", NOW + DAY)
        assert [r.id for r in uow.records.load(patient_id, NOW).representatives] == ["m2", "m3"]
        assert uow.accounts.end_mandate(patient_id, "m2", NOW + HOUR)  # not committed
    with uow:
        assert uow.accounts.mandates_for(patient_id)[1].ends_at == NOW + DAY


def check_opt_in(uow: Any, patient_id: str) -> None:
    with uow:
        assert uow.records.load(patient_id, NOW) is None
        assert uow.records.unopened(patient_id, NOW)
        assert not uow.records.unopened("nobody", NOW)
        uow.records.update_record(patient_id, NOW, state=RecordState.ACTIVE)
        uow.commit()
    with uow:
        assert not uow.records.unopened(patient_id, NOW)
        assert uow.records.load(patient_id, NOW) == RecordFacts(patient_id,
                                                                 model=RecordModel.OPT_IN)


def _fake() -> FakeRecordUnitOfWork:
    fake = FakeRecordUnitOfWork()
    fake.directory.add_patient("pat-1", [])
    fake.directory.add_patient("pat-2", [])
    return fake


def _patients(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> tuple[str, str]:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    return one.id, two.id


def test_the_fake_record_store() -> None:
    check_record_store(_fake(), "pat-1", "pat-2")


def test_the_real_record_store(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_record_store(Reused(uow), *_patients(uow, ctx))


def test_the_fake_record_settings() -> None:
    check_record_settings(_fake(), "pat-1")


def test_the_real_record_settings(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_record_settings(Reused(uow), _patients(uow, ctx)[0])


def test_the_fake_windows_and_delegations() -> None:
    check_windows_and_delegations(_fake(), "pat-1")


def test_the_real_windows_and_delegations(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_windows_and_delegations(Reused(uow), _patients(uow, ctx)[0])


def test_the_fake_accounts_and_mandates() -> None:
    check_accounts_and_mandates(_fake(), "pat-1", "pat-2")


def test_the_real_accounts_and_mandates(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    check_accounts_and_mandates(Reused(uow), *_patients(uow, ctx))


def test_the_fake_record_store_under_opt_in() -> None:
    fake = FakeRecordUnitOfWork(RecordModel.OPT_IN)
    fake.directory.add_patient("pat-1", [])
    check_opt_in(fake, "pat-1")


def test_the_real_record_store_under_opt_in(engine: Engine, ctx: DirectoryContext) -> None:
    def units() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine, record_model=RecordModel.OPT_IN)

    check_opt_in(Reused(units), _patients(units, ctx)[0])


def check_practitioners_read_by_id(uow: Any, practitioner_id: str) -> None:
    with uow:
        found = uow.directory.read("Practitioner", practitioner_id)
        assert found is not None and found.id == practitioner_id
        assert found.resource["resourceType"] == "Practitioner"
        assert uow.directory.read("Practitioner", "nobody") is None


def test_the_fake_directory_reads_practitioners_by_id() -> None:
    fake = _fake()
    fake.directory.add_practitioner("dr-1", "HP-1")
    check_practitioners_read_by_id(fake, "dr-1")


def test_the_real_directory_reads_practitioners_by_id(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        svc.register_professionals(unit, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier="HP-1", family="Curie", given=["Marie"]),
            "physician")])
        unit.commit()
    with uow() as unit:
        practitioner_id = unit.directory.practitioner_ids_by_identifier(["HP-1"])["HP-1"]
    check_practitioners_read_by_id(Reused(uow), practitioner_id)
