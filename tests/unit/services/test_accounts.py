"""Accounts, on a unit of work in memory (no database): enrolment keeps hashes and a sealed
secret, never the secrets themselves; sign-in answers one message whatever was wrong, spends a
TOTP step or a recovery code once, is throttled per account and per address and tells the
holder of a locked account; mandates and acting for a patient are recorded in the patient's
history; every refusal leaves nothing behind but its audit entry."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox
from carevault.adapters.storage.oauth_store import IssuedToken
from carevault.adapters.storage.portal_store import StoredSession
from carevault.domain.accounts import (
    REGISTRAR,
    SECURITY_OFFICER,
    AccountKind,
    AuthenticationFailed,
    Reauthenticated,
    Throttled,
    ThrottlePolicy,
    ThrottleState,
    WeakPassword,
    account_key,
    client_key,
)
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from carevault.services.accounts import (
    FAILED,
    RECOVERY_CODES,
    AccountService,
    Enrolment,
    Principal,
)
from carevault.services.credentials import recovery_digest
from support.fake_hasher import Hasher
from support.fake_professionals import FakeProfessionalDirectory, professional_unit_of_work
from support.fake_uow import FakeAuditStore

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
IP = "192.0.2.10"
# A failure costs nothing, the second a wait of 2 s, the third 4 s; the fourth locks for an hour.
POLICY = ThrottlePolicy(free_failures=2, lock_after=4, base_delay=timedelta(seconds=2),
                        max_delay=timedelta(minutes=1), lock_duration=timedelta(hours=1))


class Audit:
    """The audit log's port: appends to the unit of work's store (committed with it)."""

    def __init__(self) -> None:
        self.fail = False

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        if self.fail:
            raise RuntimeError("the audit log is unavailable")
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


class World:
    def __init__(self, *, policy: ThrottlePolicy = POLICY,
                 ip_policy: ThrottlePolicy | None = None) -> None:
        self.uow = professional_unit_of_work()
        self.directory.add_patient("pat-1", [])
        self.directory.add_patient("pat-2", [])
        self.hasher = Hasher()
        self.totp = TotpAuthenticator()
        self.box = TotpSecretBox(os.urandom(32))
        self.audit = Audit()
        self.service = AccountService(
            lambda: self.uow, self.audit, hasher=self.hasher, totp=self.totp,
            secret_box=self.box, qr_code=lambda uri: f"<svg>{len(uri)}</svg>",
            clock=lambda: NOW, account_policy=policy,
            ip_policy=ip_policy or ThrottlePolicy(free_failures=20, lock_after=None))

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    @property
    def records(self) -> list[AuditRecord]:
        return list(self.uow.audit.records)

    def code(self, account_id: str, at: datetime = NOW) -> str:
        secret = self.box.open(self.uow.accounts.rows[account_id].totp_secret, account_id)
        return self.totp.code_at(secret, self.totp.step_at(at))

    def enrolled(self, login: str = "anne@example.lu", patient_id: str = "pat-1") -> Enrolment:
        """A patient's account, its second factor confirmed half a minute before NOW."""
        enrolment = self.service.enrol_patient(login, PASSWORD, patient_id=patient_id, now=NOW)
        earlier = NOW - timedelta(seconds=30)
        self.service.confirm_totp(enrolment.account_id, self.code(enrolment.account_id, earlier),
                                  now=earlier)
        return enrolment

    def representative(self, login: str = "rita@example.lu") -> str:
        return self.service.add_representative(login, PASSWORD, now=NOW).account_id


@pytest.fixture
def world() -> World:
    return World()


def interactions(records: list[AuditRecord]) -> list[tuple[str, str, str | None]]:
    return [(r.interaction, r.outcome, r.detail.get("reason")) for r in records]


# --- enrolment ----------------------------------------------------------------------------------


def test_an_enrolment_keeps_hashes_and_a_sealed_secret_never_the_secrets(world: World) -> None:
    enrolment = world.service.enrol_patient(" Anne@Example.LU ", PASSWORD, patient_id="pat-1",
                                            client_ip=IP, now=NOW)
    assert world.uow.commits == 1
    account = world.uow.accounts.rows[enrolment.account_id]
    assert (account.kind, account.login, account.patient_id) == (
        AccountKind.PATIENT, "anne@example.lu", "pat-1")
    assert account.password_hash == world.hasher.hash(PASSWORD)
    assert PASSWORD not in repr(world.uow.accounts.rows) + account.password_hash
    secret = world.box.open(account.totp_secret, account.id)
    assert secret.encode() not in account.totp_secret
    assert f"secret={secret}" in enrolment.totp_provisioning_uri
    assert len(set(enrolment.recovery_codes)) == RECOVERY_CODES
    assert set(world.uow.accounts.unused_recovery_codes(account.id)) == {
        recovery_digest(c) for c in enrolment.recovery_codes}
    stored = repr(world.uow.accounts.recovery_codes)
    assert not any(c.encode().hex() in stored or c in stored for c in enrolment.recovery_codes)
    shown = repr(enrolment)
    assert secret not in shown and enrolment.recovery_codes[0] not in shown
    [record] = world.records
    assert (record.stream, record.kind, record.interaction, record.outcome, record.patient,
            record.agent.who, record.agent.network) == (
        "clinical", "authentication", "enrol", "0", "pat-1", f"account:{account.id}", IP)
    assert not account.enrolled  # until a first code confirms the second factor


def test_a_patient_is_enrolled_by_national_identifier(world: World) -> None:
    world.uow.accounts.national_ids["1980041212345"] = "pat-2"
    enrolment = world.service.enrol_patient("bob@example.lu", PASSWORD,
                                            national_id=" 1980041212345 ", now=NOW)
    assert world.uow.accounts.rows[enrolment.account_id].patient_id == "pat-2"


def test_an_accounts_login_is_what_the_patients_page_names_it_by(world: World) -> None:
    enrolment = world.service.enrol_patient("Ana@Example.lu", PASSWORD, patient_id="pat-2",
                                            now=NOW)
    login = world.uow.accounts.rows[enrolment.account_id].login
    assert world.service.login_of(enrolment.account_id) == login
    assert world.service.login_of("acc-nobody") is None


def _merged(world: World) -> None:
    world.directory.merge("pat-2", "pat-1")


def _has_account(world: World) -> None:
    world.service.enrol_patient("first@example.lu", PASSWORD, patient_id="pat-2", now=NOW)


def _login_taken(world: World) -> None:
    world.representative("bob@example.lu")


@pytest.mark.parametrize(("login", "password", "names", "before", "error"), [
    ("bob@example.lu", PASSWORD, {}, None, InvalidInput),
    ("bob@example.lu", PASSWORD, {"patient_id": "pat-2", "national_id": "1"}, None,
     InvalidInput),
    ("bob@example.lu", PASSWORD, {"national_id": "0000"}, None, NotFound),
    ("bob@example.lu", PASSWORD, {"patient_id": "pat-unknown"}, None, NotFound),
    ("bob@example.lu", PASSWORD, {"patient_id": "pat-2"}, _merged, BusinessRuleViolation),
    ("bob@example.lu", PASSWORD, {"patient_id": "pat-2"}, _has_account, Conflict),
    ("BOB@example.lu", PASSWORD, {"patient_id": "pat-2"}, _login_taken, Conflict),
    ("bob@example.lu", "short", {"patient_id": "pat-2"}, None, WeakPassword),
    ("bob@example.lu", "bob@example.lu-2026", {"patient_id": "pat-2"}, None, WeakPassword),
    ("b b@example.lu", PASSWORD, {"patient_id": "pat-2"}, None, InvalidInput),
    ("bo", PASSWORD, {"patient_id": "pat-2"}, None, InvalidInput),
])
def test_a_refused_enrolment_stores_and_records_nothing(
        world: World, login: str, password: str, names: dict[str, str], before: object,
        error: type[Exception]) -> None:
    if callable(before):
        before(world)
    accounts, records, commits = dict(world.uow.accounts.rows), world.records, world.uow.commits
    with pytest.raises(error):
        world.service.enrol_patient(login, password, now=NOW, **names)
    assert world.uow.accounts.rows == accounts
    assert world.records == records and world.uow.commits == commits


def test_an_enrolment_whose_audit_entry_fails_leaves_no_account(world: World) -> None:
    world.audit.fail = True
    with pytest.raises(RuntimeError):
        world.service.enrol_patient("anne@example.lu", PASSWORD, patient_id="pat-1", now=NOW)
    assert world.uow.accounts.rows == {} and world.uow.accounts.recovery_codes == {}
    assert world.uow.commits == 0


def test_an_operator_is_recorded_in_the_operators_stream_with_who_created_it(
        world: World) -> None:
    officer = world.service.register_operator("olga", PASSWORD, security_officer=True,
                                              by="account:admin", now=NOW)
    clerk = world.service.register_operator("carl", PASSWORD, security_officer=False,
                                            registrar=True, by="account:admin", now=NOW)
    plain = world.service.register_operator("otto", PASSWORD, security_officer=False,
                                            by="account:admin", now=NOW)
    rows = world.uow.accounts.rows
    assert [rows[e.account_id].roles for e in (officer, clerk, plain)] == [
        frozenset({SECURITY_OFFICER}), frozenset({REGISTRAR}), frozenset()]
    assert all(rows[e.account_id].kind is AccountKind.OPERATOR for e in (officer, clerk, plain))
    first = world.records[0]
    assert (first.stream, first.agent.who, first.patient, first.detail) == (
        "operator", "account:admin", None, {"roles": SECURITY_OFFICER})
    assert world.records[2].detail == {}


def test_an_operator_is_not_both_security_officer_and_registrar(world: World) -> None:
    with pytest.raises(InvalidInput):
        world.service.register_operator("olga", PASSWORD, security_officer=True, registrar=True,
                                        by="account:admin", now=NOW)
    assert world.uow.accounts.rows == {} and world.uow.commits == 0


# --- the second factor's confirmation -------------------------------------------------------------


def test_an_account_signs_in_only_once_a_first_code_confirmed_its_second_factor(
        world: World) -> None:
    enrolment = world.service.enrol_patient("anne@example.lu", PASSWORD, patient_id="pat-1",
                                            now=NOW)
    account_id = enrolment.account_id
    with pytest.raises(AuthenticationFailed):
        world.service.login("anne@example.lu", PASSWORD, world.code(account_id), IP, now=NOW)
    assert world.records[-1].detail["reason"] == "enrolment-incomplete"
    world.service.confirm_totp(account_id, world.code(account_id), now=NOW)
    account = world.uow.accounts.rows[account_id]
    assert account.totp_last_step == world.totp.step_at(NOW)
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 0
    assert interactions(world.records)[-1] == ("enrol-confirm", "0", None)
    with pytest.raises(Conflict):
        world.service.confirm_totp(account_id, world.code(account_id), now=NOW)
    later = NOW + timedelta(minutes=1)
    principal = world.service.login("anne@example.lu", PASSWORD, world.code(account_id, later),
                                    IP, now=later)
    assert principal.account_id == account_id


def test_a_wrong_confirmation_code_is_refused_counted_and_recorded(world: World) -> None:
    account_id = world.service.enrol_patient("anne@example.lu", PASSWORD, patient_id="pat-1",
                                             now=NOW).account_id
    wrong = "000000" if world.code(account_id) != "000000" else "111111"
    commits = world.uow.commits
    with pytest.raises(AuthenticationFailed):
        world.service.confirm_totp(account_id, wrong, client_ip=IP, now=NOW)
    assert world.uow.commits == commits + 1  # the refusal is kept
    assert not world.uow.accounts.rows[account_id].enrolled
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 1
    assert interactions(world.records)[-1] == ("enrol-confirm", "4", "wrong-code")
    with pytest.raises(NotFound):
        world.service.confirm_totp("nobody", wrong, now=NOW)


def test_confirming_is_throttled_like_signing_in(world: World) -> None:
    account_id = world.service.enrol_patient("anne@example.lu", PASSWORD, patient_id="pat-1",
                                             now=NOW).account_id
    with pytest.raises(AuthenticationFailed):
        world.service.confirm_totp(account_id, "not-a-code", now=NOW)
    with pytest.raises(AuthenticationFailed):
        world.service.confirm_totp(account_id, "not-a-code", now=NOW)  # the first is free
    with pytest.raises(Throttled) as refused:
        world.service.confirm_totp(account_id, world.code(account_id), now=NOW)
    assert refused.value.retry_after == 2
    assert not world.uow.accounts.rows[account_id].enrolled
    assert interactions(world.records)[-1] == ("enrol-confirm", "4", "throttled")


# --- the password typed again -------------------------------------------------------------------


def test_a_password_typed_again_vouches_for_its_account_and_is_recorded(world: World) -> None:
    account_id = world.enrolled().account_id
    confirmed = world.service.confirm_password(account_id, PASSWORD, interaction="passkey-add",
                                               client_ip=IP, now=NOW)
    assert confirmed == Reauthenticated(account_id, NOW)
    assert interactions(world.records)[-1] == ("passkey-add", "0", "password-confirmed")


def test_the_password_typed_again_is_hashed_with_the_attempt_already_charged(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slow hash runs holding no lock: the attempt is charged and committed first (as at
    sign-in), so that attempts made at once are each counted and none waits on the row."""
    account_id = world.enrolled().account_id
    key = account_key(account_id)
    seen: list[int] = []
    verify = world.hasher.verify

    def checking(encoded: str, password: str) -> bool:
        committed = world.uow._committed["accounts"].throttles.get(key)
        seen.append(committed.failures if committed is not None else 0)
        return verify(encoded, password)

    monkeypatch.setattr(world.hasher, "verify", checking)
    with pytest.raises(AuthenticationFailed):
        world.service.confirm_password(account_id, "not the password",
                                       interaction="passkey-add", now=NOW)
    world.service.confirm_password(account_id, PASSWORD, interaction="passkey-add", now=NOW)
    assert seen == [1, 2]  # each hashed once its own attempt was counted
    assert world.uow.accounts.throttles[key].failures == 0  # the right one clears them


def test_a_wrong_password_typed_again_is_refused_recorded_and_throttled(world: World) -> None:
    """An open session is no oracle for the password: wrong ones count towards the account's
    throttle as failed sign-ins do (here two are free), and the right one is then refused too."""
    account_id = world.enrolled().account_id
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            world.service.confirm_password(account_id, "not the password",
                                           interaction="passkey-add", now=NOW)
    assert interactions(world.records)[-1] == ("passkey-add", "4", "wrong-password")
    with pytest.raises(Throttled) as refused:
        world.service.confirm_password(account_id, PASSWORD, interaction="passkey-add", now=NOW)
    assert refused.value.retry_after == 2
    assert interactions(world.records)[-1] == ("passkey-add", "4", "throttled")
    with pytest.raises(Throttled):  # and signing in waits as well: one throttle per account
        world.service.login("anne@example.lu", PASSWORD, world.code(account_id), IP, now=NOW)


def test_a_disabled_or_unknown_account_confirms_nothing(world: World) -> None:
    account_id = world.enrolled().account_id
    rows = world.uow.accounts.rows
    rows[account_id] = replace(rows[account_id], disabled_at=NOW)
    for who in (account_id, "nobody"):
        with pytest.raises(AuthenticationFailed):
            world.service.confirm_password(who, PASSWORD, interaction="passkey-add", now=NOW)


# --- signing in ---------------------------------------------------------------------------------


def test_a_patient_signs_in_with_password_and_code_and_acts_on_their_own_record(
        world: World) -> None:
    account_id = world.enrolled().account_id
    world.uow.accounts.throttles[account_key(account_id)] = ThrottleState(failures=1)
    principal = world.service.login(" ANNE@example.lu", PASSWORD, world.code(account_id), IP,
                                    now=NOW)
    assert principal == Principal(account_id, AccountKind.PATIENT, "pat-1", frozenset(), "totp",
                                  NOW, acting_for="pat-1", scope="manage")
    assert world.uow.accounts.rows[account_id].totp_last_step == world.totp.step_at(NOW)
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 0  # reset
    login = world.records[-1]
    assert (login.interaction, login.outcome, login.patient, login.detail) == (
        "login", "0", "pat-1", {"second_factor": "totp"})
    assert PASSWORD not in repr(world.records) and world.code(account_id) not in repr(
        world.records)


def test_a_code_signs_in_once(world: World) -> None:
    account_id = world.enrolled().account_id
    code = world.code(account_id)
    world.service.login("anne@example.lu", PASSWORD, code, IP, now=NOW)
    with pytest.raises(AuthenticationFailed, match=FAILED):
        world.service.login("anne@example.lu", PASSWORD, code, IP, now=NOW)
    assert interactions(world.records)[-1] == ("login", "4", "replayed-code")


def test_a_recovery_code_stands_for_a_code_once(world: World) -> None:
    enrolment = world.enrolled()
    spare = enrolment.recovery_codes[3]
    principal = world.service.login("anne@example.lu", PASSWORD, f" {spare.upper()} ", IP,
                                    now=NOW)
    assert principal.second_factor == "recovery-code"
    unused = world.uow.accounts.unused_recovery_codes(enrolment.account_id)
    assert len(unused) == RECOVERY_CODES - 1 and recovery_digest(spare) not in unused
    assert [(r.interaction, r.detail) for r in world.records[-2:]] == [
        ("login", {"second_factor": "recovery-code"}),
        ("recovery-code-use", {"recovery_codes_left": str(RECOVERY_CODES - 1)})]
    # The holder is told: one who did not use it learns that someone else can sign in as them.
    assert [(n.patient_id, n.kind) for n in world.uow.records.notifications] == [
        ("pat-1", "recovery-code-used")]
    with pytest.raises(AuthenticationFailed, match=FAILED):
        world.service.login("anne@example.lu", PASSWORD, spare, IP, now=NOW)
    assert interactions(world.records)[-1] == ("login", "4", "wrong-code")


def test_a_recovery_code_of_another_account_opens_nothing(world: World) -> None:
    world.enrolled()
    other = world.enrolled("bob@example.lu", "pat-2")
    with pytest.raises(AuthenticationFailed):
        world.service.login("anne@example.lu", PASSWORD, other.recovery_codes[0], IP, now=NOW)
    assert len(world.uow.accounts.unused_recovery_codes(other.account_id)) == RECOVERY_CODES


@pytest.mark.parametrize(("login", "password", "code", "reason"), [
    ("nobody@example.lu", PASSWORD, "right", "unknown-account"),
    ("x", PASSWORD, "right", "unknown-account"),  # not even a login
    ("anne@example.lu", PASSWORD + "!", "right", "wrong-password"),
    ("anne@example.lu", PASSWORD, "wrong", "wrong-code"),
    ("anne@example.lu", PASSWORD, "", "wrong-code"),
])
def test_whatever_was_wrong_the_answer_is_the_same_and_the_log_says_what(
        world: World, login: str, password: str, code: str, reason: str) -> None:
    account_id = world.enrolled().account_id
    right = world.code(account_id)
    submitted = right if code == "right" else "000000" if right != "000000" else "111111"
    submitted = "" if code == "" else submitted
    with pytest.raises(AuthenticationFailed) as refused:
        world.service.login(login, password, submitted, IP, now=NOW)
    assert refused.value.message == FAILED
    assert interactions(world.records)[-1] == ("login", "4", reason)
    assert world.uow.accounts.rows[account_id].totp_last_step < world.totp.step_at(NOW)
    assert world.uow.accounts.throttles[client_key(IP)].failures == 1


def test_an_unknown_or_disabled_account_costs_a_password_check_all_the_same(
        world: World) -> None:
    account_id = world.enrolled().account_id
    world.hasher.verified.clear()
    with pytest.raises(AuthenticationFailed):
        world.service.login("nobody@example.lu", PASSWORD, "123456", IP, now=NOW)
    rows = world.uow.accounts.rows
    rows[account_id] = replace(rows[account_id], disabled_at=NOW)
    with pytest.raises(AuthenticationFailed):
        world.service.login("anne@example.lu", PASSWORD, world.code(account_id), IP, now=NOW)
    assert len(world.hasher.verified) == 2
    assert rows[account_id].password_hash not in world.hasher.verified  # the dummy, twice
    assert interactions(world.records)[-1] == ("login", "4", "disabled")
    unknown = world.records[-2]
    assert unknown.agent.who is None and unknown.patient is None


def test_an_unknown_login_is_throttled_as_a_known_one_is(world: World) -> None:
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            world.service.login("nobody@example.lu", PASSWORD, "123456", IP, now=NOW)
    with pytest.raises(Throttled) as refused:
        world.service.login("nobody@example.lu", PASSWORD, "123456", IP, now=NOW)
    assert refused.value.retry_after == 2
    assert not any("nobody" in key for key in world.uow.accounts.throttles)  # hashed


def test_a_stale_password_hash_is_replaced_at_the_next_sign_in(world: World) -> None:
    account_id = world.enrolled().account_id
    accounts = world.uow.accounts
    current = accounts.rows[account_id].password_hash
    legacy = "argon2-old$" + current.partition("$")[2]
    accounts.rows[account_id] = replace(accounts.rows[account_id], password_hash=legacy)
    world.service.login("anne@example.lu", PASSWORD, world.code(account_id), IP, now=NOW)
    assert world.uow.accounts.rows[account_id].password_hash == current


# --- throttling -------------------------------------------------------------------------------


def test_failures_make_the_account_wait_then_lock_it_and_tell_its_holder(world: World) -> None:
    account_id = world.enrolled().account_id
    at = NOW
    waits = []
    for attempt in range(4):
        with pytest.raises(AuthenticationFailed):
            world.service.login("anne@example.lu", "wrong password!", "123456", IP, now=at)
        if attempt == 0:
            continue  # the first failure is free: nothing to wait for
        with pytest.raises(Throttled) as refused:  # the right password is refused meanwhile
            world.service.login("anne@example.lu", PASSWORD, world.code(account_id, at), IP,
                                now=at)
        waits.append(refused.value.retry_after)
        at += timedelta(seconds=refused.value.retry_after)
    assert waits == [2, 4, 3600]
    assert interactions(world.records)[-1] == ("login", "4", "throttled")
    [lockout] = [r for r in world.records if r.interaction == "lockout"]
    assert (lockout.outcome, lockout.detail["failures"]) == ("8", "4")
    [notice] = world.service.notifications(account_id)
    assert (notice.kind, notice.patient_id, notice.payload["failures"]) == (
        "account-locked", "pat-1", 4)
    assert notice.payload["until"] is not None
    # Once the lock is over, the right credentials sign in and the count starts again.
    at += timedelta(hours=1)
    world.service.login("anne@example.lu", PASSWORD, world.code(account_id, at), IP, now=at)
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 0
    assert len(world.service.notifications(account_id)) == 1


def test_failures_from_one_address_are_counted_across_accounts() -> None:
    world = World(ip_policy=ThrottlePolicy(free_failures=3, lock_after=None))
    world.enrolled()
    for login in ("a@example.lu", "b@example.lu", "anne@example.lu"):
        with pytest.raises(AuthenticationFailed):
            world.service.login(login, "wrong password!", "123456", IP, now=NOW)
    with pytest.raises(Throttled) as refused:
        world.service.login("c@example.lu", PASSWORD, "123456", IP, now=NOW)
    assert refused.value.retry_after == 2
    # Another address is not held back; nor is the address's count an account's.
    with pytest.raises(AuthenticationFailed):
        world.service.login("c@example.lu", PASSWORD, "123456", "198.51.100.7", now=NOW)
    assert world.uow.accounts.throttles[client_key(IP)].failures == 3


# --- representatives ---------------------------------------------------------------------------


def test_a_mandate_is_stored_and_recorded_in_the_patients_history(world: World) -> None:
    rita = world.representative()
    ends = NOW + timedelta(days=30)
    mandate = world.service.create_mandate(rita, "pat-1", "read", NOW, ends, by="account:p1",
                                           now=NOW)
    assert world.uow.accounts.mandates_of(rita) == [mandate]
    record = world.records[-1]
    assert (record.stream, record.kind, record.interaction, record.patient, record.agent.who) == (
        "clinical", "policy", "mandate-create", "pat-1", "account:p1")
    assert record.detail["representative"] == f"account:{rita}"
    assert record.detail["mandate"] == mandate.id and "ends_at" in record.detail


def _operator(world: World) -> str:
    return world.service.register_operator("otto", PASSWORD, security_officer=False,
                                           by="account:admin", now=NOW).account_id


@pytest.mark.parametrize(("holder", "patient", "scope", "error"), [
    (lambda w: "nobody", "pat-1", "read", NotFound),
    (_operator, "pat-1", "read", BusinessRuleViolation),
    (lambda w: w.enrolled().account_id, "pat-1", "read", BusinessRuleViolation),  # own record
    (lambda w: w.representative(), "pat-unknown", "read", NotFound),
    (lambda w: w.representative(), "pat-1", "write", BusinessRuleViolation),
])
def test_a_refused_mandate_leaves_nothing(world: World, holder: object, patient: str,
                                          scope: str, error: type[Exception]) -> None:
    assert callable(holder)
    account_id = holder(world)
    records, commits = world.records, world.uow.commits
    with pytest.raises(error):
        world.service.create_mandate(account_id, patient, scope, NOW, by="account:p1", now=NOW)
    assert world.uow.accounts.mandates == {}
    assert world.records == records and world.uow.commits == commits


def test_only_mandates_in_force_count(world: World) -> None:
    rita = world.representative()
    service = world.service
    past = service.create_mandate(rita, "pat-1", "manage", NOW - timedelta(days=9),
                                  NOW - timedelta(days=1), by="op", now=NOW)
    now = service.create_mandate(rita, "pat-1", "read", NOW - timedelta(days=1), by="op", now=NOW)
    coming = service.create_mandate(rita, "pat-2", "read", NOW + timedelta(days=1), by="op",
                                    now=NOW)
    assert service.mandates_of(rita, NOW) == [now]
    assert service.mandates_of(rita, NOW - timedelta(days=2)) == [past]
    assert service.mandates_of(rita, NOW + timedelta(days=1)) == [now, coming]


def _principal(world: World, account_id: str) -> Principal:
    account = world.uow.accounts.rows[account_id]
    return Principal(account.id, account.kind, account.patient_id, account.roles, "totp", NOW)


def test_a_representative_acts_for_a_patient_with_the_broadest_mandate_in_force(
        world: World) -> None:
    rita = world.representative()
    world.service.create_mandate(rita, "pat-1", "read", NOW, by="op", now=NOW)
    principal = _principal(world, rita)
    assert principal.acting_for is None
    reading = world.service.choose_patient(principal, "pat-1", client_ip=IP, now=NOW)
    assert (reading.acting_for, reading.scope) == ("pat-1", "read")
    world.service.create_mandate(rita, "pat-1", "manage", NOW, by="op", now=NOW)
    managing = world.service.choose_patient(principal, "pat-1", now=NOW)
    assert managing.scope == "manage"
    record = world.records[-1]
    assert (record.interaction, record.outcome, record.patient, record.agent.on_behalf_of,
            record.detail) == ("act-for", "0", "pat-1", "Patient/pat-1", {"scope": "manage"})


def test_acting_without_a_mandate_is_refused_and_the_refusal_kept(world: World) -> None:
    rita = world.representative()
    world.service.create_mandate(rita, "pat-1", "manage", NOW, NOW + timedelta(days=1), by="op",
                                 now=NOW)
    principal = _principal(world, rita)
    for patient, at in (("pat-2", NOW), ("pat-1", NOW + timedelta(days=1))):
        commits = world.uow.commits
        with pytest.raises(NotPermitted):
            world.service.choose_patient(principal, patient, now=at)
        assert world.uow.commits == commits + 1
        assert interactions(world.records)[-1] == ("act-for", "4", "no-active-mandate")
        assert world.records[-1].patient == patient


def test_a_patient_acts_on_their_own_record_and_an_operator_on_none(world: World) -> None:
    patient = _principal(world, world.enrolled().account_id)
    records = world.records
    assert world.service.choose_patient(patient, "pat-1", now=NOW).scope == "manage"
    assert world.records == records  # nothing to record: the record is theirs
    operator = _principal(world, _operator(world))
    with pytest.raises(NotPermitted):
        world.service.choose_patient(operator, "pat-1", now=NOW)


# --- sessions, passwords, notifications --------------------------------------------------------


def test_signing_out_everywhere_ends_every_session_of_the_account_only(world: World) -> None:
    account_id = world.enrolled().account_id
    later = NOW + timedelta(hours=1)
    for token, owner in (("s1", account_id), ("s2", account_id), ("s3", "other")):
        world.uow.sessions.add(StoredSession(token, owner, "patient", "pat-1", "c", NOW, later))
    # The apps the account allowed lose their tokens too; another account's keep theirs.
    for jti, subject in (("app-1", f"account:{account_id}"), ("app-2", "account:other")):
        world.uow.oauth.save_token(IssuedToken(jti, "app", None, subject, "patient/*.rs",
                                               NOW, later, None, None))
    assert world.service.sign_out_everywhere(account_id, client_ip=IP) == 2
    assert [world.uow.sessions.rows[t].ended_at for t in ("s1", "s2", "s3")] == [NOW, NOW, None]
    assert [world.uow.oauth.token(j).revoked_at for j in ("app-1", "app-2")] == [NOW, None]
    record = world.records[-1]
    assert (record.interaction, record.patient, record.detail) == (
        "logout-everywhere", "pat-1", {"sessions": "2", "app_tokens": "1", "app_codes": "0"})
    with pytest.raises(NotFound):
        world.service.sign_out_everywhere("nobody")


def test_a_password_is_changed_with_the_current_one_and_only_its_hash_kept(
        world: World) -> None:
    account_id = world.enrolled().account_id
    new = "a much longer new passphrase"
    world.service.change_password(account_id, PASSWORD, new, client_ip=IP, now=NOW)
    account = world.uow.accounts.rows[account_id]
    assert account.password_hash == world.hasher.hash(new) and new not in account.password_hash
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 0
    assert interactions(world.records)[-1] == ("password-change", "0", None)
    with pytest.raises(AuthenticationFailed):
        world.service.login("anne@example.lu", PASSWORD, world.code(account_id), IP, now=NOW)
    # The holder is told (ASVS 6.3.7), by mail and in the app: the notice goes to the outbox.
    [notice] = world.uow.records.notifications
    assert (notice.patient_id, notice.kind) == ("pat-1", "password-changed")
    assert "password" in notice.payload["en"] and new not in str(notice.payload)


def test_a_wrong_current_password_changes_nothing_but_is_counted(world: World) -> None:
    account_id = world.enrolled().account_id
    before = world.uow.accounts.rows[account_id].password_hash
    with pytest.raises(AuthenticationFailed):
        world.service.change_password(account_id, "not my password", "a much longer new one",
                                      now=NOW)
    assert world.uow.accounts.rows[account_id].password_hash == before
    assert world.uow.accounts.throttles[account_key(account_id)].failures == 1
    assert world.uow.records.notifications == []  # nothing changed, nothing to tell
    assert interactions(world.records)[-1] == ("password-change", "4", "wrong-password")


def test_a_weak_new_password_is_refused_before_anything_is_counted(world: World) -> None:
    account_id = world.enrolled().account_id
    throttles, records = dict(world.uow.accounts.throttles), world.records
    for weak in ("short", "anne@example.lu!!"):
        with pytest.raises(WeakPassword):
            world.service.change_password(account_id, PASSWORD, weak, now=NOW)
    assert world.uow.accounts.throttles == throttles and world.records == records
    with pytest.raises(NotFound):
        world.service.change_password("nobody", PASSWORD, "a much longer new passphrase")
