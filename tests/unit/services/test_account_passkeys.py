"""A patient's or representative's passkeys, on a unit of work in memory, with a software
authenticator (tests/support/passkeys.py) and the real `webauthn` verification: a passkey is
registered only over a challenge issued to that very account, once; removed by its owner only;
each change recorded in the audit stream. At sign-in the passkey's assertion stands where the
TOTP code would, always with the password, in one attempt that answers the same whatever was
wrong (the audit entry says why); an assertion works once, and only for its own account."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox
from carevault.adapters.storage.passkey_store import AccountPasskey, StoredPasskey
from carevault.domain.accounts import (
    AuthenticationFailed,
    Reauthenticated,
    ThrottlePolicy,
    account_key,
)
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import NotFound
from carevault.services.account_passkeys import MAX_PASSKEYS, AccountPasskeys
from carevault.services.accounts import FAILED, AccountService, Principal
from carevault.services.passkey_ceremony import PasskeyRefused, RelyingParty, challenge_hash
from support.fake_hasher import Hasher
from support.fake_passkeys import FakeAccountPasskeyStore
from support.fake_professionals import professional_unit_of_work
from support.fake_uow import FakeAuditStore, FakeUnitOfWork
from support.passkeys import SoftwareAuthenticator, b64

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
IP = "192.0.2.10"
ORIGIN = "http://localhost:8000"
PARTY = RelyingParty("localhost", "CareVault", (ORIGIN,))


class Audit:
    """The audit log's port: appends to the unit of work's store (committed with it)."""

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


class World:
    """Anne (a patient) and Rita (a representative), both enrolled with a TOTP code."""

    def __init__(self) -> None:
        self.uow: FakeUnitOfWork = professional_unit_of_work()
        self.uow.directory.add_patient("pat-1", [])
        self.clock = Clock()
        self.totp = TotpAuthenticator()
        self.box = TotpSecretBox(os.urandom(32))
        self.keys = AccountPasskeys(lambda: self.uow, Audit(), PARTY, self.clock)
        self.service = self._service(self.keys)
        self.anne = self._enrolled(self.service.enrol_patient(
            "anne@example.lu", PASSWORD, patient_id="pat-1", now=NOW).account_id)
        self.rita = self._enrolled(self.service.add_representative(
            "rita@example.lu", PASSWORD, now=NOW).account_id)

    def _service(self, passkeys: object) -> AccountService:
        return AccountService(
            lambda: self.uow, Audit(), hasher=Hasher(), totp=self.totp, secret_box=self.box,
            qr_code=lambda uri: "<svg/>", clock=self.clock,
            ip_policy=ThrottlePolicy(free_failures=20, lock_after=None),
            passkeys=passkeys)  # type: ignore[arg-type]

    def _enrolled(self, account_id: str) -> str:
        earlier = NOW - timedelta(seconds=30)
        secret = self.box.open(self.uow.accounts.rows[account_id].totp_secret, account_id)
        self.service.confirm_totp(account_id, self.totp.code_at(secret, self.totp.step_at(earlier)),
                                  now=earlier)
        return account_id

    def confirmed(self, account_id: str) -> Reauthenticated:
        """The holder typed their password again just now (`confirm_password`'s answer)."""
        return Reauthenticated(account_id, self.clock())

    @property
    def store(self) -> FakeAccountPasskeyStore:
        assert isinstance(self.uow.passkeys, FakeAccountPasskeyStore)
        return self.uow.passkeys

    @property
    def records(self) -> list[AuditRecord]:
        return list(self.uow.audit.records)

    def created(self, account_id: str, authenticator: SoftwareAuthenticator,
                origin: str | None = None) -> str:
        """The browser's new credential, over creation options issued to ``account_id``."""
        options = json.loads(self.keys.registration_options(self.confirmed(account_id)))
        return json.dumps(authenticator.create(options, origin=origin))

    def add(self, account_id: str, authenticator: SoftwareAuthenticator) -> AccountPasskey:
        return self.keys.register(account_id, self.created(account_id, authenticator), IP)

    def assertion(self, authenticator: SoftwareAuthenticator, origin: str | None = None) -> str:
        options = json.loads(self.keys.sign_in_options())
        return json.dumps(authenticator.get(options, origin=origin))

    def login(self, assertion: str, login: str = "anne@example.lu",
              password: str = PASSWORD) -> Principal:
        return self.service.login(login, password, "", IP, passkey=assertion)

    def refused(self, assertion: str, login: str = "anne@example.lu",
                password: str = PASSWORD) -> str | None:
        """Sign in, refused with the one message; the audit entry's reason."""
        with pytest.raises(AuthenticationFailed) as error:
            self.login(assertion, login, password)
        assert error.value.message == FAILED
        last = self.records[-1]
        assert (last.interaction, last.outcome) == ("login", "4")
        return last.detail.get("reason")


@pytest.fixture
def world() -> World:
    return World()


def authenticator() -> SoftwareAuthenticator:
    return SoftwareAuthenticator(ORIGIN)


def counterless() -> SoftwareAuthenticator:
    """An authenticator that keeps no signature counter (it always says 0), as many do."""

    class Counterless(SoftwareAuthenticator):
        def get(self, options: dict[str, object], *, origin: str | None = None
                ) -> dict[str, object]:
            self.sign_count = -1  # get() adds one: 0
            return super().get(options, origin=origin)

    return Counterless(ORIGIN)


# --- registration ----------------------------------------------------------------------------


def test_a_passkey_registered_by_its_account_is_stored_and_recorded(world: World) -> None:
    phone = authenticator()
    commits = world.uow.commits
    passkey = world.add(world.anne, phone)
    assert passkey == AccountPasskey(b64(phone.credential_id), world.anne, passkey.public_key,
                                     0, NOW)
    assert world.store.account_passkey(passkey.credential_id) == passkey
    assert world.keys.of_account(world.anne) == [passkey]
    assert world.keys.of_account(world.rita) == []
    assert world.uow.commits == commits + 2  # the options' challenge, then the passkey
    last = world.records[-1]
    assert (last.interaction, last.outcome, last.agent.who, last.patient) == (
        "passkey-add", "0", f"account:{world.anne}", "pat-1")
    # The holder is told (ASVS 6.3.7), by mail and in the app.
    assert [(n.patient_id, n.kind) for n in world.uow.records.notifications] == [
        ("pat-1", "passkey-added")]


def test_the_creation_options_ask_for_a_discoverable_verified_passkey_not_one_it_has(
        world: World) -> None:
    phone = world.add(world.anne, authenticator())
    options = json.loads(world.keys.registration_options(world.confirmed(world.anne)))
    assert options["rp"] == {"id": "localhost", "name": "CareVault"}
    assert options["user"]["name"] == "anne@example.lu"
    selection = options["authenticatorSelection"]
    assert (selection["residentKey"], selection["userVerification"]) == ("required", "required")
    assert [c["id"] for c in options["excludeCredentials"]] == [phone.credential_id]
    # The challenge is kept as its hash only, for this account and this ceremony.
    kept = world.store.challenges[challenge_hash(options["challenge"])]
    assert (kept.purpose, kept.account_id, kept.expires_at) == (
        "account-register", world.anne, NOW + timedelta(minutes=5))
    assert options["challenge"] not in {c for c in world.store.challenges}


def test_a_registration_over_another_accounts_challenge_is_refused(world: World) -> None:
    created = world.created(world.anne, authenticator())
    with pytest.raises(PasskeyRefused) as error:
        world.keys.register(world.rita, created, IP)
    assert error.value.message == "this registration was not asked for, or is too late"
    assert world.keys.of_account(world.rita) == [] and world.keys.of_account(world.anne) == []
    assert [r.interaction for r in world.records].count("passkey-add") == 0
    # The refusal spent nothing: Anne's own registration still holds.
    assert world.keys.register(world.anne, created, IP).account_id == world.anne


def test_a_registration_answers_its_challenge_once_and_in_time(world: World) -> None:
    phone = authenticator()
    created = world.created(world.anne, phone)
    world.keys.register(world.anne, created, IP)
    with pytest.raises(PasskeyRefused, match="not asked for, or is too late"):
        world.keys.register(world.anne, created, IP)
    late = world.created(world.anne, authenticator())
    world.clock.now = NOW + timedelta(minutes=5)
    with pytest.raises(PasskeyRefused, match="not asked for, or is too late"):
        world.keys.register(world.anne, late, IP)
    assert len(world.keys.of_account(world.anne)) == 1


def test_a_credential_made_for_another_origin_does_not_verify_and_leaves_nothing(
        world: World) -> None:
    created = world.created(world.anne, authenticator(), origin="https://evil.example")
    with pytest.raises(PasskeyRefused, match=r"^the passkey does not verify: "):
        world.keys.register(world.anne, created, IP)
    assert world.keys.of_account(world.anne) == []
    assert "passkey-add" not in [r.interaction for r in world.records]


def test_a_passkey_enrolled_already_here_is_refused(world: World) -> None:
    phone = authenticator()
    world.add(world.anne, phone)
    with pytest.raises(PasskeyRefused, match=r"^this passkey is already enrolled$"):
        world.add(world.rita, phone)
    assert world.keys.of_account(world.rita) == []
    # A professional's passkey with that credential id is refused as well.
    card = authenticator()
    world.store.add(StoredPasskey(b64(card.credential_id), "pr-1", "ab12", b"cose", 0, NOW))
    with pytest.raises(PasskeyRefused, match=r"^this passkey is already enrolled$"):
        world.add(world.rita, card)
    assert world.store.account_passkey(b64(card.credential_id)) is None


def test_a_disabled_or_unknown_account_or_a_full_one_adds_no_passkey(world: World) -> None:
    for passkey_number in range(MAX_PASSKEYS):
        world.store.add_for_account(AccountPasskey(f"cred-{passkey_number}", world.rita,
                                                   b"cose", 0, NOW))
    world.uow.commit()
    with pytest.raises(PasskeyRefused, match=rf"^an account holds at most {MAX_PASSKEYS} "):
        world.keys.registration_options(world.confirmed(world.rita))
    with pytest.raises(PasskeyRefused, match=r"^this account cannot add a passkey$"):
        world.keys.registration_options(world.confirmed("nobody"))
    created = world.created(world.anne, authenticator())
    rows = world.uow.accounts.rows
    rows[world.anne] = replace(rows[world.anne], disabled_at=NOW)
    world.uow.commit()
    with pytest.raises(PasskeyRefused, match=r"^this account cannot add a passkey$"):
        world.keys.registration_options(world.confirmed(world.anne))
    with pytest.raises(PasskeyRefused, match=r"^this account cannot add a passkey$"):
        world.keys.register(world.anne, created, IP)
    assert world.keys.of_account(world.anne) == []


def test_a_password_confirmed_more_than_a_minute_ago_vouches_for_no_passkey(
        world: World) -> None:
    """The options are asked for right after the password is typed again; an older
    confirmation (a minute or more) gets none, and nothing is kept."""
    stale = Reauthenticated(world.anne, NOW - timedelta(minutes=1))
    with pytest.raises(PasskeyRefused, match="confirmed too long ago"):
        world.keys.registration_options(stale)
    future = Reauthenticated(world.anne, NOW + timedelta(seconds=1))
    with pytest.raises(PasskeyRefused, match="confirmed too long ago"):
        world.keys.registration_options(future)
    assert world.store.challenges == {}
    json.loads(world.keys.registration_options(
        Reauthenticated(world.anne, NOW - timedelta(seconds=59))))


def test_only_its_owner_removes_a_passkey(world: World) -> None:
    anne_key = world.add(world.anne, authenticator())
    recorded = len(world.records)
    for who, which in ((world.rita, anne_key.credential_id), (world.anne, "nope"),
                       ("nobody", anne_key.credential_id)):
        with pytest.raises(NotFound, match=r"^no such passkey on this account$"):
            world.keys.remove(who, which, IP)
    assert world.keys.of_account(world.anne) == [anne_key]
    assert len(world.records) == recorded
    world.keys.remove(world.anne, anne_key.credential_id, IP)
    assert world.keys.of_account(world.anne) == []
    last = world.records[-1]
    assert (last.interaction, last.outcome, last.agent.who) == (
        "passkey-remove", "0", f"account:{world.anne}")
    assert [n.kind for n in world.uow.records.notifications][-1] == "passkey-removed"


# --- signing in ------------------------------------------------------------------------------


def test_a_passkey_stands_for_the_code_with_the_password(world: World) -> None:
    phone = authenticator()
    key = world.add(world.anne, phone)
    world.clock.now = NOW + timedelta(minutes=1)
    principal = world.login(world.assertion(phone))
    assert (principal.account_id, principal.second_factor, principal.acting_for) == (
        world.anne, "passkey", "pat-1")
    used = world.store.account_passkey(key.credential_id)
    assert (used.sign_count, used.last_used_at) == (1, NOW + timedelta(minutes=1))
    last = world.records[-1]
    assert (last.interaction, last.outcome, last.detail) == (
        "login", "0", {"second_factor": "passkey"})
    assert world.uow.accounts.throttles[account_key(world.anne)].failures == 0


def test_an_assertion_signs_in_once(world: World) -> None:
    phone = authenticator()
    world.add(world.anne, phone)
    assertion = world.assertion(phone)
    world.login(assertion)
    # Its counter no longer moves the stored one forward.
    assert world.refused(assertion) == "wrong-passkey"
    # Without a counter, the challenge is what it spent.
    quiet = counterless()
    world.add(world.rita, quiet)
    once = world.assertion(quiet)
    assert world.login(once, "rita@example.lu").second_factor == "passkey"
    assert world.refused(once, "rita@example.lu") == "replayed-code"


def test_a_wrong_password_with_a_good_passkey_is_refused_the_same_way(world: World) -> None:
    phone = authenticator()
    key = world.add(world.anne, phone)
    assert world.refused(world.assertion(phone), password="wrong horse") == "wrong-password"
    assert world.store.account_passkey(key.credential_id) == key  # nothing moved
    assert world.uow.accounts.throttles[account_key(world.anne)].failures == 1


def test_another_accounts_passkey_does_not_sign_in(world: World) -> None:
    phone = authenticator()
    key = world.add(world.anne, phone)
    assert world.refused(world.assertion(phone), "rita@example.lu") == "wrong-passkey"
    assert world.store.account_passkey(key.credential_id) == key


def test_a_passkey_assertion_that_does_not_hold_is_refused_the_same_way(world: World) -> None:
    phone = authenticator()
    world.add(world.anne, phone)
    stranger = authenticator()  # not enrolled here
    assert world.refused(world.assertion(phone, origin="https://evil.example")) == (
        "wrong-passkey")
    assert world.refused(world.assertion(stranger)) == "wrong-passkey"
    assert world.refused("not JSON") == "wrong-passkey"
    assert world.refused(json.dumps({"rawId": "", "response": {}})) == "wrong-passkey"
    assert world.refused(world.assertion(phone), "nobody@example.lu") == "unknown-account"
    # Another key's signature under this passkey's id: a forgery.
    forged = json.loads(world.assertion(phone))
    forged["response"]["signature"] = json.loads(world.assertion(stranger))["response"][
        "signature"]
    assert world.refused(json.dumps(forged)) == "wrong-passkey"


def test_an_assertion_over_a_challenge_not_issued_for_a_sign_in_is_refused(
        world: World) -> None:
    quiet = counterless()
    world.add(world.anne, quiet)
    invented = {"rpId": "localhost", "challenge": b64(os.urandom(32))}
    assert world.refused(json.dumps(quiet.get(invented))) == "replayed-code"
    registration = json.loads(world.keys.registration_options(world.confirmed(world.anne)))
    other_purpose = {"rpId": "localhost", "challenge": registration["challenge"]}
    assert world.refused(json.dumps(quiet.get(other_purpose))) == "replayed-code"
    late = world.assertion(quiet)
    world.clock.now = NOW + timedelta(minutes=5)
    assert world.refused(late) == "replayed-code"


def test_a_removed_passkey_no_longer_signs_in(world: World) -> None:
    phone = authenticator()
    key = world.add(world.anne, phone)
    world.keys.remove(world.anne, key.credential_id, IP)
    assert world.refused(world.assertion(phone)) == "wrong-passkey"


def test_without_passkeys_configured_an_assertion_never_signs_in(world: World) -> None:
    phone = authenticator()
    world.add(world.anne, phone)
    world.service = world._service(None)
    assert world.refused(world.assertion(phone)) == "wrong-passkey"


def test_two_sign_ins_racing_with_one_assertion_let_one_through(world: World) -> None:
    """The other sign-in moves the counter while this one checks: this one is refused."""
    phone = authenticator()
    key = world.add(world.anne, phone)

    class Raced:
        def verify(self, credential: str, passkey: AccountPasskey) -> int:
            count = world.keys.verify(credential, passkey)
            with world.uow:
                assert world.store.account_passkey_used(key.credential_id, 0, count, NOW)
                world.uow.commit()
            return count

    world.service = world._service(Raced())
    assert world.refused(world.assertion(phone)) == "replayed-code"
    assert world.store.account_passkey(key.credential_id).sign_count == 1
