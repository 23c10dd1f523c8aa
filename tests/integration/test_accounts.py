"""Accounts on both databases: enrolment, TOTP, recovery codes, uniform failures, throttling and
lockout, representatives and mandates, operators, password change, and the audit trail of all
of it, with no secret in it."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import Engine, select

from carevault.adapters.security.passwords import Argon2PasswordHasher
from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox, qr_svg
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.account_store import AccountRecord, AccountStore
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import Platform
from carevault.domain.accounts import AccountKind
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import BusinessRuleViolation, Conflict, NotFound, NotPermitted
from carevault.fhirmodel.audit_event import audit_event
from carevault.fhirmodel.validate import validate_resource
from carevault.services import directory as svc
from carevault.services.accounts import (
    FAILED,
    AccountService,
    AuthenticationFailed,
    Enrolment,
    Principal,
    Throttled,
    WeakPassword,
)
from carevault.services.directory import DirectoryContext
from carevault.settings import Settings
from support.builders import national_id, patient

Units = Callable[[], SqlUnitOfWork]

T0 = datetime(2026, 11, 22, 9, 0, 5, tzinfo=UTC)
PASSWORD = "violet tramway over Kirchberg"
IP = "198.51.100.7"


class CountingHasher:
    """The real Argon2 hasher, counting what it is asked to do."""

    def __init__(self, real: Argon2PasswordHasher) -> None:
        self.real = real
        self.verifications = 0
        self.hashes = 0

    def hash(self, password: str) -> str:
        self.hashes += 1
        return self.real.hash(password)

    def verify(self, encoded: str, password: str) -> bool:
        self.verifications += 1
        return self.real.verify(encoded, password)

    def needs_rehash(self, encoded: str) -> bool:
        return self.real.needs_rehash(encoded)


@dataclass
class Secrets:
    """Everything secret the tests handed out or received, to search the audit log for."""

    values: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)

    def enrolment(self, enrolment: Enrolment) -> None:
        self.add(totp_secret(enrolment))
        for code in enrolment.recovery_codes:
            self.add(code, code.replace("-", ""))


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher(Argon2PasswordHasher())


def make_service(
    uow: Units,
    platform: Platform,
    settings: Settings,
    hasher: CountingHasher | Argon2PasswordHasher,
) -> AccountService:
    return AccountService(
        uow,
        platform.audit,
        hasher=hasher,
        totp=TotpAuthenticator(),
        secret_box=TotpSecretBox.from_key_source(settings.key_source),
        qr_code=qr_svg,
        clock=lambda: T0,
    )


@pytest.fixture
def service(
    uow: Units, platform: Platform, settings: Settings, hasher: CountingHasher
) -> AccountService:
    return make_service(uow, platform, settings, hasher)


@pytest.fixture
def secrets() -> Secrets:
    found = Secrets()
    found.add(PASSWORD)
    return found


def add_patient(uow: Units, ctx: DirectoryContext, seq: int) -> str:
    with uow() as unit:
        return svc.register_patients(unit, ctx, [patient(ctx.systems, seq)])[0].id


def totp_secret(enrolment: Enrolment) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    return query["secret"][0]


def code(enrolment: Enrolment, at: datetime) -> str:
    return pyotp.TOTP(totp_secret(enrolment)).at(at)


def enrolled_patient(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    secrets: Secrets,
    seq: int = 1,
    login: str = "Anne.Muller@Example.LU",
) -> tuple[str, Enrolment]:
    patient_id = add_patient(uow, ctx, seq)
    enrolment = service.enrol_patient(login, PASSWORD, patient_id=patient_id, client_ip=IP)
    secrets.enrolment(enrolment)
    service.confirm_totp(enrolment.account_id, code(enrolment, T0), client_ip=IP, now=T0)
    return patient_id, enrolment


def records(platform: Platform, stream: str) -> list[AuditRecord]:
    size = platform.audit.size(stream)
    return [AuditRecord.from_canonical(d) for _, d in platform.audit.entries(stream, 0, size)]


def events(platform: Platform, stream: str = "clinical") -> list[tuple[str, str, str]]:
    return [
        (r.interaction, r.outcome, r.detail.get("reason", ""))
        for r in records(platform, stream)
        if r.kind == "authentication"
    ]


# --- enrolment and sign-in ----------------------------------------------------------------------


def test_enrol_confirm_and_sign_in(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    secrets: Secrets,
) -> None:
    patient_id = add_patient(uow, ctx, 1)
    enrolment = service.enrol_patient("Anne.Muller@Example.LU", PASSWORD, patient_id=patient_id)
    secrets.enrolment(enrolment)
    assert enrolment.totp_provisioning_uri.startswith("otpauth://totp/CareVault:")
    assert "issuer=CareVault" in enrolment.totp_provisioning_uri
    assert enrolment.qr_svg.startswith("<svg")
    assert len(enrolment.recovery_codes) == 10 and len(set(enrolment.recovery_codes)) == 10
    assert totp_secret(enrolment) not in repr(enrolment)

    # Until a first code confirms the enrolment, the account cannot sign in.
    with pytest.raises(AuthenticationFailed, match=FAILED):
        service.login("anne.muller@example.lu", PASSWORD, code(enrolment, T0), IP, T0)

    service.confirm_totp(enrolment.account_id, code(enrolment, T0), client_ip=IP, now=T0)
    with pytest.raises(Conflict):
        service.confirm_totp(enrolment.account_id, code(enrolment, T0), now=T0)

    at = T0 + timedelta(seconds=30)
    principal = service.login("ANNE.MULLER@example.lu", PASSWORD, code(enrolment, at), IP, at)
    assert principal == Principal(
        account_id=enrolment.account_id,
        kind=AccountKind.PATIENT,
        patient_id=patient_id,
        roles=frozenset(),
        second_factor="totp",
        authenticated_at=at,
        acting_for=patient_id,
        scope="manage",
    )
    assert not principal.security_officer

    # The patient's access history shows the sign-ins to their record.
    mine = [AuditRecord.from_canonical(d) for _, d in platform.audit.patient_entries(patient_id)]
    assert [(r.interaction, r.outcome) for r in mine if r.kind == "authentication"] == [
        ("enrol", "0"),
        ("login", "4"),
        ("enrol-confirm", "0"),
        ("login", "0"),
    ]
    assert mine[-1].agent.who == f"account:{enrolment.account_id}"
    assert mine[-1].agent.network == IP


def test_enrol_by_national_id_one_account_per_patient(
    service: AccountService, uow: Units, ctx: DirectoryContext
) -> None:
    patient_id = add_patient(uow, ctx, 2)
    enrolment = service.enrol_patient("jean@example.lu", PASSWORD, national_id=national_id(2))
    with uow() as unit:
        stored = AccountStore(unit.directory.connection).by_id(enrolment.account_id)
    assert stored is not None and stored.patient_id == patient_id
    assert stored.login == "jean@example.lu"
    with pytest.raises(Conflict, match="already has an account"):
        service.enrol_patient("other@example.lu", PASSWORD, patient_id=patient_id)
    add_patient(uow, ctx, 3)
    with pytest.raises(Conflict, match="login is already taken"):
        service.enrol_patient("JEAN@example.lu", PASSWORD, national_id=national_id(3))
    with pytest.raises(NotFound):
        service.enrol_patient("x@example.lu", PASSWORD, national_id=national_id(99))
    with pytest.raises(NotFound):
        service.enrol_patient("x@example.lu", PASSWORD, patient_id="no-such-patient")
    with pytest.raises(WeakPassword):
        service.enrol_patient("x@example.lu", "password1234", national_id=national_id(3))


# --- uniform failures ---------------------------------------------------------------------------


def test_unknown_login_and_wrong_password_look_the_same(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    hasher: CountingHasher,
    platform: Platform,
    secrets: Secrets,
) -> None:
    _, enrolment = enrolled_patient(service, uow, ctx, secrets)
    at = T0 + timedelta(minutes=1)

    before = hasher.verifications
    with pytest.raises(AuthenticationFailed) as wrong_password:
        service.login("anne.muller@example.lu", "not the password!", code(enrolment, at), IP, at)
    assert hasher.verifications == before + 1

    before = hasher.verifications
    with pytest.raises(AuthenticationFailed) as unknown:
        service.login("nobody@example.lu", PASSWORD, "123456", IP, at)
    assert hasher.verifications == before + 1  # the dummy Argon2 verification ran

    before = hasher.verifications
    with pytest.raises(AuthenticationFailed) as malformed:
        service.login("x", PASSWORD, "123456", IP, at)  # not even a valid login
    assert hasher.verifications == before + 1

    with pytest.raises(AuthenticationFailed) as wrong_code:
        service.login("anne.muller@example.lu", PASSWORD, "000000", IP, at)

    errors = [wrong_password.value, unknown.value, malformed.value, wrong_code.value]
    assert {type(e) for e in errors} == {AuthenticationFailed}
    assert {e.message for e in errors} == {FAILED}
    assert {str(e) for e in errors} == {"invalid login or password"}
    # The log is precise where the answer is not.
    assert [e for e in events(platform) if e[0] == "login"] == [
        ("login", "4", "wrong-password"),
        ("login", "4", "unknown-account"),
        ("login", "4", "unknown-account"),
        ("login", "4", "wrong-code"),
    ]


def test_a_totp_code_is_refused_the_second_time(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    secrets: Secrets,
) -> None:
    _, enrolment = enrolled_patient(service, uow, ctx, secrets)
    at = T0 + timedelta(seconds=60)
    used = code(enrolment, at)
    service.login("anne.muller@example.lu", PASSWORD, used, IP, at)
    with pytest.raises(AuthenticationFailed, match=FAILED):
        service.login("anne.muller@example.lu", PASSWORD, used, IP, at + timedelta(seconds=5))
    # The confirmation code of the enrolment cannot sign in either.
    with pytest.raises(AuthenticationFailed):
        service.login("anne.muller@example.lu", PASSWORD, code(enrolment, T0), IP, T0)
    assert events(platform)[-2:] == [
        ("login", "4", "replayed-code"),
        ("login", "4", "replayed-code"),
    ]


def test_a_recovery_code_works_once(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    secrets: Secrets,
) -> None:
    _, enrolment = enrolled_patient(service, uow, ctx, secrets)
    recovery = enrolment.recovery_codes[3]
    at = T0 + timedelta(minutes=5)
    principal = service.login("anne.muller@example.lu", PASSWORD, recovery.upper(), IP, at)
    assert principal.second_factor == "recovery-code"
    with pytest.raises(AuthenticationFailed, match=FAILED):
        service.login("anne.muller@example.lu", PASSWORD, recovery, IP, at)
    # Another one still works, typed without dashes.
    other = enrolment.recovery_codes[4].replace("-", "")
    assert service.login("anne.muller@example.lu", PASSWORD, other, IP, at).second_factor == (
        "recovery-code"
    )
    used = [r for r in records(platform, "clinical") if r.interaction == "recovery-code-use"]
    assert [r.detail["recovery_codes_left"] for r in used] == ["9", "8"]


# --- throttling ---------------------------------------------------------------------------------


def test_five_failures_back_off_and_ten_lock_with_a_notification(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    engine: Engine,
    hasher: CountingHasher,
    secrets: Secrets,
) -> None:
    patient_id, enrolment = enrolled_patient(service, uow, ctx, secrets)
    login = "anne.muller@example.lu"
    now = T0 + timedelta(minutes=1)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            service.login(login, "wrong password!!", "123456", IP, now)
    checks = hasher.verifications
    with pytest.raises(Throttled) as throttled:
        service.login(login, PASSWORD, code(enrolment, now), IP, now)
    assert throttled.value.retry_after >= 1
    assert hasher.verifications == checks  # refused before any password check
    # An unknown login backs off exactly the same way.
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            service.login("ghost@example.lu", "wrong password!!", "123456", "192.0.2.1", now)
    with pytest.raises(Throttled) as ghost:
        service.login("ghost@example.lu", "wrong password!!", "123456", "192.0.2.1", now)
    assert ghost.value.retry_after == throttled.value.retry_after

    # Failures 6 to 10, each after waiting out the previous backoff.
    for _ in range(5):
        now += timedelta(seconds=throttled.value.retry_after)
        with pytest.raises(AuthenticationFailed):
            service.login(login, "wrong password!!", "123456", IP, now)
        with pytest.raises(Throttled) as throttled:
            service.login(login, PASSWORD, code(enrolment, now), IP, now)
    assert throttled.value.retry_after == 3600  # locked for an hour

    with engine.connect() as connection:
        rows = connection.execute(
            select(t.notification).where(t.notification.c.patient_id == patient_id)
        ).all()
    assert len(rows) == 1
    assert rows[0].kind == "account-locked" and rows[0].account_id == enrolment.account_id
    assert rows[0].read_at is None
    [notice] = service.notifications(enrolment.account_id)
    assert notice.payload["failures"] == 10
    lockouts = [r for r in records(platform, "clinical") if r.interaction == "lockout"]
    assert [(r.patient, r.outcome) for r in lockouts] == [(patient_id, "8")]

    # After the lock, the right credentials work and the count starts over.
    now += timedelta(hours=1)
    service.login(login, PASSWORD, code(enrolment, now), IP, now)
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            service.login(login, "wrong password!!", "123456", IP, now)
    with pytest.raises(AuthenticationFailed):  # the fifth failure: not yet throttled
        service.login(login, "wrong password!!", "123456", IP, now)


def test_one_address_is_throttled_across_accounts(
    service: AccountService, uow: Units, ctx: DirectoryContext, secrets: Secrets
) -> None:
    _, enrolment = enrolled_patient(service, uow, ctx, secrets)
    now = T0 + timedelta(minutes=2)
    stuffer = "203.0.113.66"
    for n in range(20):  # one try per login: no account key ever backs off
        with pytest.raises(AuthenticationFailed):
            service.login(f"victim{n}@example.lu", "Summer2026!!x", "123456", stuffer, now)
    with pytest.raises(Throttled) as throttled:
        service.login("anne.muller@example.lu", PASSWORD, code(enrolment, now), stuffer, now)
    assert throttled.value.retry_after >= 1
    # The same IPv4 address written as IPv4-mapped IPv6 is the same client.
    with pytest.raises(Throttled):
        service.login("victim99@example.lu", "x" * 12, "123456", f"::ffff:{stuffer}", now)
    # The patient, from another address, is not affected.
    service.login("anne.muller@example.lu", PASSWORD, code(enrolment, now), IP, now)


# --- representatives ----------------------------------------------------------------------------


def test_a_representative_acts_under_active_mandates_only(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    secrets: Secrets,
) -> None:
    child = add_patient(uow, ctx, 11)
    grandmother = add_patient(uow, ctx, 12)
    other = add_patient(uow, ctx, 13)
    rep = service.add_representative("Marc.Weber@example.lu", PASSWORD, client_ip=IP)
    secrets.enrolment(rep)
    service.confirm_totp(rep.account_id, code(rep, T0), now=T0)

    active = service.create_mandate(
        rep.account_id,
        child,
        "manage",
        T0 - timedelta(days=1),
        T0 + timedelta(days=365),
        by="os-user:clerk",
    )
    service.create_mandate(
        rep.account_id,
        grandmother,
        "read",
        T0 - timedelta(days=60),
        T0 - timedelta(days=1),
        by="os-user:clerk",
    )  # expired
    future = service.create_mandate(
        rep.account_id, other, "read", T0 + timedelta(days=7), None, by="os-user:clerk"
    )
    assert [m.patient_id for m in service.mandates_of(rep.account_id, T0)] == [child]
    assert service.mandates_of(rep.account_id, T0)[0] == active
    assert [m.id for m in service.mandates_of(rep.account_id, T0 + timedelta(days=8))] == [
        active.id,
        future.id,
    ]

    at = T0 + timedelta(seconds=30)
    principal = service.login("marc.weber@example.lu", PASSWORD, code(rep, at), IP, at)
    assert principal.kind is AccountKind.REPRESENTATIVE
    assert principal.patient_id is None and principal.acting_for is None
    acting = service.choose_patient(principal, child, client_ip=IP, now=at)
    assert (acting.acting_for, acting.scope) == (child, "manage")
    with pytest.raises(NotPermitted):
        service.choose_patient(principal, grandmother, client_ip=IP, now=at)

    # Each patient's access history shows the mandate and who acted, or tried to.
    child_history = [
        AuditRecord.from_canonical(d) for _, d in platform.audit.patient_entries(child)
    ]
    assert [(r.interaction, r.outcome) for r in child_history] == [
        ("mandate-create", "0"),
        ("act-for", "0"),
    ]
    assert child_history[1].agent.who == f"account:{rep.account_id}"
    gm_history = [
        AuditRecord.from_canonical(d) for _, d in platform.audit.patient_entries(grandmother)
    ]
    assert [(r.interaction, r.outcome) for r in gm_history] == [
        ("mandate-create", "0"),
        ("act-for", "4"),
    ]


def test_mandate_rules_on_storage(
    service: AccountService, uow: Units, ctx: DirectoryContext, secrets: Secrets
) -> None:
    patient_id, enrolment = enrolled_patient(service, uow, ctx, secrets)
    with pytest.raises(BusinessRuleViolation, match="own record"):
        service.create_mandate(enrolment.account_id, patient_id, "read", T0, by="x")
    with pytest.raises(NotFound):
        service.create_mandate(enrolment.account_id, "no-such-patient", "read", T0, by="x")
    operator = service.register_operator("ops-anna", PASSWORD, security_officer=False, by="x")
    with pytest.raises(BusinessRuleViolation, match="person"):
        service.create_mandate(operator.account_id, patient_id, "read", T0, by="x")
    # A patient may also represent someone else (a parent for a child).
    child = add_patient(uow, ctx, 21)
    service.create_mandate(enrolment.account_id, child, "read", T0, by="x")
    assert [m.patient_id for m in service.mandates_of(enrolment.account_id, T0)] == [child]


# --- operators ----------------------------------------------------------------------------------


def test_operators_need_totp_to_exist_and_to_sign_in(
    service: AccountService, uow: Units, platform: Platform, secrets: Secrets
) -> None:
    with uow() as unit, pytest.raises(BusinessRuleViolation, match="TOTP"):
        AccountStore(unit.directory.connection).add(
            AccountRecord(
                id="op-1",
                kind=AccountKind.OPERATOR,
                login="no-totp",
                password_hash="$argon2id$",
                totp_secret=b"",
                totp_last_step=None,
                patient_id=None,
                roles=frozenset(),
                created_at=T0,
            )
        )

    officer = service.register_operator(
        "Sec.Officer", PASSWORD, security_officer=True, by="os-user:root"
    )
    secrets.enrolment(officer)
    # Password alone, or with a code before TOTP is confirmed: refused.
    for second in ("", code(officer, T0)):
        with pytest.raises(AuthenticationFailed, match=FAILED):
            service.login("sec.officer", PASSWORD, second, IP, T0)
    service.confirm_totp(officer.account_id, code(officer, T0), now=T0)
    at = T0 + timedelta(seconds=30)
    with pytest.raises(AuthenticationFailed):
        service.login("sec.officer", PASSWORD, "", IP, at)
    principal = service.login("sec.officer", PASSWORD, code(officer, at), IP, at)
    assert principal.kind is AccountKind.OPERATOR and principal.security_officer
    with pytest.raises(NotPermitted):
        service.choose_patient(principal, "anyone", now=at)

    # Operators' events are in the operator stream, none in the clinical one.
    assert [(i, o) for i, o, _ in events(platform, "operator")] == [
        ("enrol", "0"),
        ("login", "4"),
        ("login", "4"),
        ("enrol-confirm", "0"),
        ("login", "4"),
        ("login", "0"),
    ]
    enrol = next(r for r in records(platform, "operator") if r.interaction == "enrol")
    assert enrol.agent.who == "os-user:root" and enrol.detail["roles"] == "security_officer"
    assert events(platform, "clinical") == []


# --- passwords ----------------------------------------------------------------------------------


def test_change_password(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    secrets: Secrets,
) -> None:
    _, enrolment = enrolled_patient(service, uow, ctx, secrets)
    new = "seven lanterns by the Alzette"
    secrets.add(new)
    with pytest.raises(WeakPassword):
        service.change_password(enrolment.account_id, PASSWORD, "anne.muller-2026", now=T0)
    with pytest.raises(AuthenticationFailed):
        service.change_password(enrolment.account_id, "not my password", new, now=T0)
    service.change_password(enrolment.account_id, PASSWORD, new, client_ip=IP, now=T0)
    at = T0 + timedelta(seconds=30)
    with pytest.raises(AuthenticationFailed):
        service.login("anne.muller@example.lu", PASSWORD, code(enrolment, at), IP, at)
    service.login("anne.muller@example.lu", new, code(enrolment, at), IP, at)
    assert [e for e in events(platform) if e[0] == "password-change"] == [
        ("password-change", "4", "wrong-password"),
        ("password-change", "0", ""),
    ]


def test_an_old_hash_is_upgraded_at_the_next_sign_in(
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    settings: Settings,
    secrets: Secrets,
    engine: Engine,
) -> None:
    weak = make_service(
        uow, platform, settings, Argon2PasswordHasher(memory_cost=8192, time_cost=1)
    )
    _, enrolment = enrolled_patient(weak, uow, ctx, secrets)

    def stored_hash() -> str:
        with engine.connect() as connection:
            return str(connection.execute(select(t.account.c.password_hash)).scalar_one())

    assert stored_hash().startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    strong = make_service(uow, platform, settings, Argon2PasswordHasher())
    at = T0 + timedelta(seconds=30)
    strong.login("anne.muller@example.lu", PASSWORD, code(enrolment, at), IP, at)
    assert stored_hash().startswith("$argon2id$v=19$m=19456,t=2,p=1$")


# --- what the database and the audit log hold ---------------------------------------------------


def test_no_secret_in_the_database_or_the_audit_log(
    service: AccountService,
    uow: Units,
    ctx: DirectoryContext,
    platform: Platform,
    engine: Engine,
    secrets: Secrets,
) -> None:
    patient_id, enrolment = enrolled_patient(service, uow, ctx, secrets)
    login = "anne.muller@example.lu"
    # Every kind of event: success, failure, recovery-code use, lockout, password change.
    at = T0 + timedelta(seconds=30)
    service.login(login, PASSWORD, code(enrolment, at), IP, at)
    service.login(login, PASSWORD, enrolment.recovery_codes[0], IP, at)
    new = "a brand new passphrase here"
    secrets.add(new)
    service.change_password(enrolment.account_id, PASSWORD, new, client_ip=IP, now=at)
    wrong = "Wrong-Password-42"
    secrets.add(wrong)
    now = at
    for _ in range(10):
        with pytest.raises(AuthenticationFailed):
            service.login(login, wrong, "654321", IP, now)
        now += timedelta(hours=1)

    # The TOTP secret is stored sealed: neither its base32 text nor its bytes are in the table.
    secret = totp_secret(enrolment)
    with engine.connect() as connection:
        rows = connection.execute(select(t.account)).all()
    assert len(rows) == 1
    row_text = repr(tuple(rows[0]))
    sealed = bytes(rows[0].totp_secret)
    assert secret not in row_text and secret.lower() not in row_text
    assert secret.encode() not in sealed
    assert base64.b32decode(secret) not in sealed
    assert PASSWORD not in row_text and new not in row_text
    # Nor anywhere else in the database, in any table.
    with engine.connect() as connection:
        for table in t.metadata.sorted_tables:
            dump = repr(connection.execute(select(table)).all())
            for value in (secret, PASSWORD, new, *enrolment.recovery_codes):
                assert value not in dump, f"a secret is stored in clear in {table.name}"

    # Every event is in the audit log…
    mine = [AuditRecord.from_canonical(d) for _, d in platform.audit.patient_entries(patient_id)]
    interactions = {(r.interaction, r.outcome) for r in mine}
    assert {
        ("enrol", "0"),
        ("enrol-confirm", "0"),
        ("login", "0"),
        ("login", "4"),
        ("recovery-code-use", "0"),
        ("password-change", "0"),
        ("lockout", "8"),
    } <= interactions
    assert all(r.kind == "authentication" and r.patient == patient_id for r in mine)
    # …and no secret is in any entry of either stream; each one reads as a FHIR AuditEvent.
    for stream in ("clinical", "operator"):
        size = platform.audit.size(stream)
        for index, canonical in platform.audit.entries(stream, 0, size):
            validate_resource(
                audit_event(stream, index, AuditRecord.from_canonical(canonical)), "AuditEvent"
            )
            text = canonical.decode("utf-8")
            for value in secrets.values:
                assert value not in text, f"a secret leaked into the {stream} audit log"
                assert value.casefold() not in text.casefold()
