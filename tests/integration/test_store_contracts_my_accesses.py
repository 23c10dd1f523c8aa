"""A professional's accesses across records (the workspace's home page): the grants that name
them, their organizations or their teams, the delegations they gave or received and the
emergency windows they opened, each in force only, ending first first, bounded, on live
patients' records. The same checks run on the fake (`support.fake_records`) and on the real
record store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.authorization import Delegation, EmergencyWindow, Grant, GrantLevel, Party
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import patient
from support.contracts import Reused
from support.fake_records import FakeRecordUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _grant(grant_id: str, party: Party, party_id: str, start: datetime,
           end: datetime | None) -> Grant:
    return Grant(party, party_id, GrantLevel.NORMAL, start, end, "account:a", True, grant_id)


def check_accesses_across_records(uow: Any, one: str, two: str) -> None:
    with uow:
        records = uow.records
        records.add_grant(one, _grant("g-me", Party.PRACTITIONER, "dr-1", NOW, NOW + 3 * DAY), NOW)
        records.add_grant(two, _grant("g-open", Party.PRACTITIONER, "dr-1", NOW, None), NOW)
        records.add_grant(two, _grant("g-team", Party.CARE_TEAM, "team-1", NOW, NOW + DAY), NOW)
        records.add_grant(one, _grant("g-org", Party.ORGANIZATION, "org-1", NOW + DAY,
                                      NOW + 2 * DAY), NOW)  # to come: listed
        records.add_grant(one, _grant("g-past", Party.PRACTITIONER, "dr-1", NOW - DAY, NOW), NOW)
        records.add_grant(one, _grant("g-other", Party.PRACTITIONER, "dr-2", NOW, None), NOW)
        records.add_grant(one, _grant("g-gone", Party.PRACTITIONER, "dr-1", NOW, None), NOW)
        records.add_grant(one, _grant("g-same-id", Party.ORGANIZATION, "dr-1", NOW, NOW + DAY),
                          NOW)  # an organization whose id is the practitioner's: not theirs
        assert records.revoke_grant(one, "g-gone", NOW, "account:a")
        records.add_delegation(one, Delegation("dr-1", "dr-2", GrantLevel.NORMAL, NOW,
                                               NOW + 2 * DAY, "d-given"), NOW)
        records.add_delegation(two, Delegation("dr-3", "dr-1", GrantLevel.EXTENDED, NOW,
                                               NOW + DAY, "d-received"), NOW)
        records.add_delegation(two, Delegation("dr-1", "dr-3", GrantLevel.NORMAL, NOW - DAY,
                                               NOW, "d-over"), NOW)
        records.add_delegation(one, Delegation("dr-1", "dr-4", GrantLevel.NORMAL, NOW,
                                               NOW + DAY, "d-ended"), NOW)
        assert records.revoke_delegation(one, "d-ended", NOW)
        assert not records.revoke_delegation(two, "d-given", NOW)  # another record's
        records.open_emergency(one, EmergencyWindow("dr-1", NOW + DAY, "w-open"), "coma", NOW)
        records.open_emergency(two, EmergencyWindow("dr-1", NOW, "w-over"), "old", NOW - DAY)
        records.open_emergency(two, EmergencyWindow("dr-2", NOW + DAY, "w-theirs"), "x", NOW)
        uow.commit()
    mine = [(Party.PRACTITIONER, "dr-1"), (Party.ORGANIZATION, "org-1"),
            (Party.CARE_TEAM, "team-1")]
    with uow:
        records = uow.records
        found = records.grants_to(mine, NOW, 10)
        assert [(f.patient_id, f.grant.id) for f in found] == [
            (two, "g-team"), (one, "g-org"), (one, "g-me"), (two, "g-open")]
        assert found[2].grant == _grant("g-me", Party.PRACTITIONER, "dr-1", NOW, NOW + 3 * DAY)
        assert [f.grant.id for f in records.grants_to(mine, NOW, 2)] == ["g-team", "g-org"]
        assert records.grants_to([], NOW, 10) == []
        assert [f.grant.id for f in records.grants_to(mine, NOW + DAY, 10)] == [
            "g-org", "g-me", "g-open"]
        delegations = records.delegations_of("dr-1", NOW, 10)
        assert [(f.patient_id, f.delegation.id) for f in delegations] == [
            (two, "d-received"), (one, "d-given")]
        assert delegations[0].delegation == Delegation(
            "dr-3", "dr-1", GrantLevel.EXTENDED, NOW, NOW + DAY, "d-received")
        assert [f.delegation.id for f in records.delegations_of("dr-1", NOW, 1)] == ["d-received"]
        assert [f.delegation.id for f in records.delegations_of("dr-2", NOW, 10)] == ["d-given"]
        [window] = records.emergencies_of("dr-1", NOW, 10)
        assert (window.id, window.patient_id, window.reason, window.start, window.end) == (
            "w-open", one, "coma", NOW, NOW + DAY)
        assert records.emergencies_of("dr-1", NOW + DAY, 10) == []
        assert [w.id for w in records.emergencies_of("dr-2", NOW, 10)] == ["w-theirs"]


def _fake() -> FakeRecordUnitOfWork:
    fake = FakeRecordUnitOfWork()
    fake.directory.add_patient("pat-1", [])
    fake.directory.add_patient("pat-2", [])
    return fake


def test_the_fake_lists_a_professionals_accesses() -> None:
    check_accesses_across_records(_fake(), "pat-1", "pat-2")


def test_the_real_store_lists_a_professionals_accesses(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_accesses_across_records(Reused(uow), one.id, two.id)


def check_inactive_patients_left_out(uow: Any, live: str, gone: str) -> None:
    with uow:
        for patient_id in (live, gone):
            uow.records.add_grant(patient_id, _grant(f"g-{patient_id}", Party.PRACTITIONER,
                                                     "dr-1", NOW, None), NOW)
            uow.records.add_delegation(patient_id, Delegation(
                "dr-1", "dr-2", GrantLevel.NORMAL, NOW, NOW + DAY, f"d-{patient_id}"), NOW)
            uow.records.open_emergency(patient_id, EmergencyWindow(
                "dr-1", NOW + DAY, f"w-{patient_id}"), "x", NOW)
        uow.commit()
    with uow:
        records = uow.records
        assert [f.patient_id for f in records.grants_to([(Party.PRACTITIONER, "dr-1")],
                                                        NOW, 10)] == [live]
        assert [f.patient_id for f in records.delegations_of("dr-1", NOW, 10)] == [live]
        assert [f.patient_id for f in records.emergencies_of("dr-1", NOW, 10)] == [live]


def test_the_fake_leaves_inactive_patients_out() -> None:
    fake = _fake()
    fake.directory.patients["pat-2"]["active"] = False
    check_inactive_patients_left_out(fake, "pat-1", "pat-2")


def test_the_real_store_leaves_inactive_patients_out(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1), {
            **patient(ctx.systems, 2), "active": False}])
    check_inactive_patients_left_out(Reused(uow), one.id, two.id)
