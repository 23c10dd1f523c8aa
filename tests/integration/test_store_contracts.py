"""The fakes answer as the real stores do: the same checks run on the stores of
`support.fake_uow` and on the real ones (SQLite and PostgreSQL), so that a service tested on the
fake (tests/unit/services) is tested against the behaviour it will meet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.adapters.storage.oauth_store import AppClient, AuthorizationCode
from carevault.adapters.storage.passkey_store import StoredChallenge, StoredPasskey
from carevault.adapters.storage.portal_store import StoredInvitation, StoredSession
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.anomaly import StoredAlert
from carevault.domain.authorization import Authority
from carevault.domain.prescriptions import StoredTask
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import hospital, patient
from support.contracts import Reused
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def authority(id: str, organization_id: str, kind: Authority, minutes: int) -> RegisteredAuthority:
    return RegisteredAuthority(id, organization_id, kind, None, NOW + timedelta(minutes=minutes),
                               "op")


def check_authority_store(uow: Any, org: str) -> None:
    with uow:
        uow.authorities.add(authority("b", org, Authority.PROVIDER_REGISTRY, 1))
        uow.authorities.add(authority("a", org, Authority.ADMISSION_SYSTEM, 1))
        uow.authorities.add(authority("c", org, Authority.IDENTITY_SOURCE, 0))
        uow.commit()
    with uow:
        assert uow.authorities.end("a", "op-2", NOW) is True
        assert uow.authorities.end("a", "op-2", NOW) is False
        assert uow.authorities.end("nobody", "op-2", NOW) is False
        uow.commit()
    with uow:
        assert sorted(a.id for a in uow.authorities.active_of(org)) == ["b", "c"]
        assert uow.authorities.active_of("org-other") == []
        assert [a.id for a in uow.authorities.listing()] == ["c", "b"]
        listed = uow.authorities.listing(include_ended=True)
        assert [a.id for a in listed] == ["c", "a", "b"]  # by creation, then id
        assert (listed[1].ended_at, listed[1].ended_by) == (NOW, "op-2")
        uow.authorities.end("b", "op", NOW)  # not committed
    with uow:
        assert sorted(a.id for a in uow.authorities.active_of(org)) == ["b", "c"]


def check_presence_code_store(uow: Any, patient_id: str, other_id: str) -> None:
    expires = NOW + timedelta(minutes=10)
    with uow:
        uow.presence_codes.add("h1", patient_id, "account:a", NOW, expires)
        uow.presence_codes.add("h2", patient_id, "account:a", NOW, expires)
        uow.commit()
    with uow:
        codes = uow.presence_codes
        assert codes.usable("h1", patient_id, NOW)
        assert not codes.usable("h1", other_id, NOW)
        assert not codes.usable("h1", patient_id, expires)
        assert not codes.usable("nope", patient_id, NOW)
        assert not codes.use("h1", other_id, "dr", NOW)
        assert not codes.use("h2", patient_id, "dr", expires)
        assert codes.use("h1", patient_id, "dr", NOW)
        assert not codes.use("h1", patient_id, "dr", NOW)
        assert not codes.usable("h1", patient_id, NOW)
        uow.commit()
    with uow:
        assert not uow.presence_codes.usable("h1", patient_id, NOW)
        assert uow.presence_codes.usable("h2", patient_id, NOW)


def check_session_store(uow: Any) -> None:
    later = NOW + timedelta(minutes=30)
    with uow:
        uow.sessions.add(StoredSession("s1", "acc-1", "representative", None, "c1", NOW, later))
        uow.sessions.add(StoredSession("s2", "acc-2", "patient", "pat-2", "c2", NOW, later))
        uow.commit()
    with uow:
        assert uow.sessions.get("s1") == StoredSession(
            "s1", "acc-1", "representative", None, "c1", NOW, later)
        assert uow.sessions.get("nope") is None
        uow.sessions.extend("s1", later + timedelta(minutes=5))
        uow.sessions.act_for("s1", "pat-9")
        uow.sessions.act_for("s2", "pat-9")
        uow.sessions.end("s2", later)
        uow.sessions.end("s2", later + timedelta(hours=1))  # ended once
        uow.commit()
    with uow:
        one, two = uow.sessions.get("s1"), uow.sessions.get("s2")
        assert (one.patient_id, one.expires_at, one.ended_at) == (
            "pat-9", later + timedelta(minutes=5), None)
        assert (two.patient_id, two.ended_at) == ("pat-2", later)
        uow.sessions.end("s1", later)  # not committed
    with uow:
        assert uow.sessions.get("s1").ended_at is None
        uow.sessions.add(StoredSession("s3", "acc-1", "representative", None, "c3", NOW, later))
        uow.commit()
    with uow:
        assert uow.sessions.end_all("acc-1", later) == 2  # s1 and s3; s2 is another's
        assert uow.sessions.end_all("acc-1", later) == 0
        uow.commit()
    with uow:
        assert [uow.sessions.get(h).ended_at for h in ("s1", "s2", "s3")] == [later] * 3


def test_the_fake_session_store() -> None:
    check_session_store(FakeUnitOfWork())


def test_the_real_session_store(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_session_store(Reused(uow))


def check_passkey_store(uow: Any) -> None:
    later = NOW + timedelta(minutes=5)
    with uow:
        uow.sessions.add(StoredSession("p1", "pr-1", "practitioner", None, "c1", NOW, later,
                                       certificate_serial="ab12"))
        uow.sessions.add(StoredSession("p2", "pr-1", "practitioner", None, "c2", NOW, later))
        uow.sessions.add(StoredSession("p3", "pr-2", "practitioner", None, "c3", NOW, later))
        uow.passkeys.add_challenge(StoredChallenge("h1", "signin", None, None, later))
        uow.passkeys.add_challenge(StoredChallenge("h2", "enrolment", "pr-1", "ab12", later))
        uow.passkeys.add(StoredPasskey("cred-1", "pr-1", "ab12", b"cose", 0, NOW))
        uow.commit()
    with uow:
        assert uow.sessions.get("p1").certificate_serial == "ab12"
        assert uow.passkeys.take_challenge("h1", "enrolment", NOW) is None  # wrong purpose
        assert uow.passkeys.take_challenge("h2", "enrolment", later) is None  # expired
        taken = uow.passkeys.take_challenge("h2", "enrolment", NOW)
        assert (taken.practitioner_id, taken.certificate_serial) == ("pr-1", "ab12")
        assert uow.passkeys.take_challenge("h2", "enrolment", NOW) is None  # used
        uow.passkeys.used("cred-1", 7, NOW)
        assert uow.sessions.end_all("pr-1", NOW) == 2
        uow.commit()
    with uow:
        assert uow.passkeys.get("cred-1").sign_count == 7
        assert uow.passkeys.get("nope") is None
        assert [p.credential_id for p in uow.passkeys.of_practitioner("pr-1")] == ["cred-1"]
        assert uow.sessions.get("p3").ended_at is None
        assert uow.sessions.get("p2").ended_at == NOW
        # A new challenge sweeps those that ended an hour before it does.
        uow.passkeys.add_challenge(StoredChallenge("h3", "signin", None, None,
                                                   later + timedelta(hours=2)))
        assert uow.passkeys.take_challenge("h1", "signin", NOW) is None
        uow.commit()


def test_the_fake_passkey_store() -> None:
    check_passkey_store(FakeUnitOfWork())


def test_the_real_passkey_store(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_passkey_store(Reused(uow))


def _organization(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> str:
    with uow() as unit:
        [stored] = svc.register_organizations(unit, ctx, [hospital(ctx.systems)])
    return stored.id


def test_the_fake_authority_store() -> None:
    fake = FakeUnitOfWork()
    fake.directory.add_organization("org-1")
    check_authority_store(fake, "org-1")


def test_the_real_authority_store(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    org = _organization(uow, ctx)
    check_authority_store(Reused(uow), org)


def test_the_fake_presence_code_store() -> None:
    check_presence_code_store(FakeUnitOfWork(), "pat-1", "pat-2")


def test_the_real_presence_code_store(
    uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext
) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_presence_code_store(Reused(uow), one.id, two.id)


def check_invitation_store(uow: Any, patient_id: str) -> None:
    later = NOW + timedelta(days=14)
    with uow:
        uow.invitations.add(StoredInvitation("h1", patient_id, NOW, later))
        uow.invitations.add(StoredInvitation("h2", patient_id, NOW, later))
        uow.commit()
    with uow:
        assert uow.invitations.get("h1") == StoredInvitation("h1", patient_id, NOW, later)
        assert uow.invitations.get("nope") is None
        uow.invitations.use("h1", NOW + timedelta(hours=1))
        uow.invitations.use("h1", NOW + timedelta(hours=2))  # used once
        uow.commit()
    with uow:
        assert uow.invitations.get("h1").used_at == NOW + timedelta(hours=1)
        uow.invitations.use("h2", NOW)  # not committed
    with uow:
        assert uow.invitations.get("h2").used_at is None


def test_the_fake_invitation_store() -> None:
    check_invitation_store(FakeUnitOfWork(), "pat-1")


def test_the_real_invitation_store(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        [one] = svc.register_patients(unit, ctx, [patient(ctx.systems, 1)])
    check_invitation_store(Reused(uow), one.id)


def check_app_store(uow: Any, patient_id: str) -> None:
    uris = ("https://app.example/cb", "http://127.0.0.1:8765/cb")
    code = AuthorizationCode("c1", "app-1", uris[0], "x" * 43, "patient/Patient.rs", "acc-1",
                             "patient", patient_id, NOW + timedelta(seconds=60))
    with uow:
        uow.apps.add_client(AppClient("app-1", "My app", uris, NOW))
        uow.apps.add_code(code)
        uow.commit()
    with uow:
        assert uow.apps.client("app-1") == AppClient("app-1", "My app", uris, NOW)
        assert uow.apps.client("nope") is None and uow.apps.code("nope") is None
        assert uow.apps.code("c1") == code
        assert uow.apps.use_code("c1", NOW) is True
        assert uow.apps.use_code("c1", NOW) is False  # of two exchanges, one wins
        assert uow.apps.use_code("nope", NOW) is False
        assert uow.apps.set_scopes("app-1", "patient/Patient.rs") is True
        assert uow.apps.set_scopes("nope", "patient/Patient.rs") is False
        uow.commit()
    with uow:
        assert uow.apps.code("c1").used_at == NOW
        assert uow.apps.client("app-1").scopes == "patient/Patient.rs"
        uow.apps.add_client(AppClient("app-2", "Other", uris, NOW))  # not committed
    with uow:
        assert uow.apps.client("app-2") is None


def test_the_fake_app_store() -> None:
    check_app_store(FakeUnitOfWork(), "pat-1")


def test_the_real_app_store(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    with uow() as unit:
        [one] = svc.register_patients(unit, ctx, [patient(ctx.systems, 1)])
    check_app_store(Reused(uow), one.id)


def _alert(id: str, key: str, severity: int, evidence: tuple[int, ...], minutes: int,
           kind: str = "vip") -> StoredAlert:
    at = NOW + timedelta(minutes=minutes)
    return StoredAlert(id=id, group_key=key, kind=kind, severity=severity, status="open",
                       verdict=None, professional="pro-1", organization=None,
                       patient_id="pat-1", explanation=f"why {severity}", evidence=evidence,
                       raised_at=at, updated_at=at, assignee=None, acknowledged_by=None,
                       closed_by=None, note=None, patient_notified_at=None, version=1)


def check_alert_store(uow: Any) -> None:
    with uow as unit:
        assert unit.alerts.cursor("clinical") == 0
        unit.alerts.raise_or_extend(_alert("a1", "vip|pro-1|pat-1|1", 60, (3, 1), 0))
        unit.alerts.raise_or_extend(_alert("a2", "bulk|pro-1||1", 80, (5,), 1, kind="bulk"))
        unit.alerts.move_cursor("clinical", 7)
    with uow as unit:  # not committed: nothing stays
        assert unit.alerts.get("a1") is None and unit.alerts.cursor("clinical") == 0
        unit.alerts.raise_or_extend(_alert("a1", "vip|pro-1|pat-1|1", 60, (3, 1), 0))
        unit.alerts.raise_or_extend(_alert("a2", "bulk|pro-1||1", 80, (5,), 1, kind="bulk"))
        unit.alerts.move_cursor("clinical", 7)
        unit.commit()
    with uow as unit:
        # The same group again: its evidence grows, its severity rises, no second alert.
        grown = unit.alerts.raise_or_extend(_alert("a3", "vip|pro-1|pat-1|1", 90, (2, 3), 5))
        assert grown.id == "a1" and grown.evidence == (1, 2, 3) and grown.severity == 90
        assert grown.explanation == "why 90" and grown.version == 2
        assert unit.alerts.get("a3") is None
        unit.alerts.move_cursor("clinical", 9)
        unit.commit()
    with uow as unit:
        assert unit.alerts.cursor("clinical") == 9 and unit.alerts.cursor("operator") == 0
        total, found = unit.alerts.search()
        assert total == 2 and [a.id for a in found] == ["a1", "a2"]  # most severe first
        assert unit.alerts.search(kind=("bulk",))[1][0].id == "a2"
        assert unit.alerts.search(status=("closed",)) == (0, [])
        assert [a.id for a in unit.alerts.search(offset=1, count=1)[1]] == ["a2"]
        later = NOW + timedelta(hours=1)
        assert not unit.alerts.change("a1", 1, later, status="acknowledged")  # stale version
        assert unit.alerts.change("a1", 2, later, status="closed", verdict="true-positive",
                                  closed_by="account:o", note="confirmed")
        try:
            unit.alerts.change("a2", 1, later, severity=1)
        except ValueError:
            pass
        else:
            raise AssertionError("only the workflow fields change")
        unit.commit()
    with uow as unit:
        closed = unit.alerts.get("a1")
        assert closed is not None and closed.status == "closed" and closed.version == 3
        assert closed.note == "confirmed" and closed.updated_at == NOW + timedelta(hours=1)
        assert unit.alerts.closed_verdicts() == [("pro-1", "vip", "true-positive")]
        # A closed alert's evidence still grows; it stays closed.
        again = unit.alerts.raise_or_extend(_alert("a4", "vip|pro-1|pat-1|1", 50, (8,), 9))
        assert again.status == "closed" and 8 in again.evidence and again.severity == 90


def test_the_fake_alert_store() -> None:
    check_alert_store(FakeUnitOfWork())


def test_the_real_alert_store(uow: Callable[[], SqlUnitOfWork]) -> None:
    check_alert_store(Reused(uow))


def _task(task_id: str, number: str, prescriber: str, created: datetime) -> StoredTask:
    return StoredTask(id=task_id, number=number, patient_id=None, prescriber_id=prescriber,
                      status="draft", version=1, access_code_hash="a" * 64, secret_hash=None,
                      created_at=created, updated_at=created)


def check_prescription_store(uow: Any, patient_id: str, other_id: str) -> None:
    later, old = NOW + timedelta(days=28), NOW - timedelta(days=400)
    with uow:
        uow.prescriptions.add(_task("t1", "160.000.000.000.001.01", "dr-1", NOW))
        uow.prescriptions.add(_task("t2", "160.000.000.000.002.02", "dr-1", NOW))
        uow.prescriptions.add(_task("t3", "160.000.000.000.003.03", "dr-2", old))
        uow.prescriptions.add(_task("t4", "160.000.000.000.004.04", "dr-2", NOW))  # a draft
        uow.prescriptions.add(_task("t5", "160.000.000.000.005.05", "dr-3", NOW))  # a repeat
        uow.commit()
    with uow:
        store = uow.prescriptions
        assert store.activate("t1", patient_id, "jws-1", later, NOW)
        assert not store.activate("t1", patient_id, "jws-1", later, NOW)  # no longer a draft
        assert store.activate("t2", other_id, "jws-2", NOW + timedelta(minutes=1), NOW)
        assert store.activate("t3", patient_id, "jws-3", later, old)
        assert not store.activate("nobody", patient_id, "jws", later, NOW)
        assert store.activate("t5", other_id, "jws-5", later, NOW, valid_from=NOW + timedelta(1))
        uow.commit()
    with uow:
        store = uow.prescriptions
        one = store.get("t1")
        assert (one.status, one.patient_id, one.signed_prescription, one.expires_at,
                one.version) == ("ready", patient_id, "jws-1", later, 2)
        assert store.get("nobody") is None
        # Accepting is the race's arbiter: once only, and never once expired.
        assert store.accept("t1", "s" * 64, "ph-1", "pharmacy-1", NOW)
        assert not store.accept("t1", "x" * 64, "ph-2", "pharmacy-2", NOW)
        assert not store.accept("t2", "s" * 64, "ph-1", "pharmacy-1", NOW + timedelta(minutes=1))
        # Nor before its validity window opens (a repeat prescription's).
        assert not store.accept("t5", "s" * 64, "ph-1", "pharmacy-1", NOW)
        assert store.accept("t5", "s" * 64, "ph-1", "pharmacy-1", NOW + timedelta(1))
        assert store.get("t5").valid_from == NOW + timedelta(1)
        # The pharmacy's steps need the secret it was given.
        assert not store.reject("t1", "x" * 64, NOW)
        assert store.reject("t1", "s" * 64, NOW)
        back = store.get("t1")
        assert (back.status, back.secret_hash, back.pharmacist_id, back.pharmacy_id) == (
            "ready", None, None, None)
        assert store.accept("t1", "t" * 64, "ph-2", "pharmacy-2", NOW)
        assert not store.close("t1", "s" * 64, "{}", "", NOW)
        assert not store.cancel("t1", ("in-progress",), NOW, secret_hash="s" * 64)
        assert store.close("t1", "t" * 64, '{"resourceType":"MedicationDispense"}', "", later)
        assert not store.cancel("t1", ("draft", "ready"), NOW)
        store.set_receipt("t1", "receipt")
        assert store.cancel("t2", ("draft", "ready"), NOW)
        assert not store.cancel("t2", ("draft", "ready"), NOW)
        uow.commit()
    with uow:
        store = uow.prescriptions
        done = store.get("t1")
        assert (done.status, done.dispense, done.receipt, done.pharmacy_id, done.updated_at) == (
            "completed", '{"resourceType":"MedicationDispense"}', "receipt", "pharmacy-2", later)
        assert store.get("t2").status == "cancelled"

        def ids(found: tuple[int, list[StoredTask]]) -> tuple[int, list[str]]:
            return found[0], [task.id for task in found[1]]

        # Drafts name no patient and are never listed; newest first.
        assert ids(store.of_patient(patient_id, None, 0, 10)) == (2, ["t1", "t3"])
        assert ids(store.of_patient(patient_id, NOW - timedelta(days=365), 0, 10)) == (1, ["t1"])
        assert ids(store.of_patient(patient_id, None, 1, 10)) == (2, ["t3"])
        assert ids(store.find(prescriber_id="dr-1")) == (2, ["t1", "t2"])
        assert ids(store.find(prescriber_id="dr-2")) == (1, ["t3"])
        assert ids(store.find(pharmacy_id="pharmacy-2", dispensed=True)) == (1, ["t1"])
        assert ids(store.find(pharmacy_id="pharmacy-1", dispensed=True)) == (0, [])
        assert ids(store.find(patient_id=patient_id, dispensed=True, since=later)) == (1, ["t1"])
        assert ids(store.find(patient_id=patient_id, dispensed=True,
                              since=later + timedelta(seconds=1))) == (0, [])
        # Wrong codes are counted per caller, strictly after the window's start.
        store.note_failure("ph-1", NOW)
        store.note_failure("ph-1", NOW + timedelta(minutes=1))
        store.note_failure("ph-2", NOW + timedelta(minutes=1))
        uow.commit()
    with uow:
        store = uow.prescriptions
        assert store.failures_since("ph-1", NOW) == 1
        assert store.failures_since("ph-1", NOW - timedelta(seconds=1)) == 2
        assert store.failures_since("ph-3", NOW - timedelta(days=1)) == 0
        assert store.activate("t4", patient_id, "jws-4", later, NOW)  # not committed
    with uow:
        assert uow.prescriptions.get("t4").status == "draft"


def test_the_fake_prescription_store() -> None:
    check_prescription_store(FakeUnitOfWork(), "pat-1", "pat-2")


def test_the_real_prescription_store(
    uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext
) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_prescription_store(Reused(uow), one.id, two.id)


def test_the_directory_knows_which_patients_are_professionals_and_where_they_work(
        uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> None:
    """The colleague rule's facts: a Practitioner carrying a patient's national identifier is
    that patient, working in the organizations of their active roles; the common family
    names are those borne by at least two patients and the given share."""
    from carevault.fhirmodel.directory import new_practitioner

    org = _organization(uow, ctx)
    with uow() as unit:
        nurse, _, _ = svc.register_patients(unit, ctx, [
            patient(ctx.systems, 31, family="Hoffmann"), patient(ctx.systems, 32),
            patient(ctx.systems, 33, family="Hoffmann")])
        national = next(i["value"] for i in nurse.resource["identifier"]
                        if i["system"] == ctx.systems.national)
        resource = new_practitioner(ctx.systems, identifier="HP-COLLEAGUE", family="Hoffmann",
                                    given=["Lea"])
        resource["identifier"].append({"system": ctx.systems.national, "value": national})
        svc.register_professionals(unit, ctx, [
            svc.NewProfessional(resource, "nurse", None, org),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-NOT-A-PATIENT",
                                                 family="Else", given=["Al"]), "nurse")])
        unit.commit()
    with uow() as unit:
        assert unit.directory.professionals_as_patients(ctx.systems.national) == {
            nurse.id: frozenset({org})}
        assert unit.directory.professionals_as_patients("urn:unknown") == {}
        shares = unit.directory.family_name_shares(0.0005)
    assert set(shares) == {"hoffmann"} and abs(shares["hoffmann"] - 2 / 3) < 1e-9
