"""The checks of a sign-in's step 2 (`Credentials`), with the platform's real TOTP and secret box
and a fast stand-in for Argon2: a password is checked even for an unknown or disabled account
(against the dummy hash: the same work), a TOTP code once per step, a recovery code against
every unused one, a passkey only as its own account's; a failure names why, for the audit
log, and a success names the second factor and what the sign-in must then spend."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox
from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.passkey_store import AccountPasskey
from carevault.domain.accounts import AccountKind
from carevault.domain.errors import NotAuthenticated
from carevault.services.credentials import (
    PASSKEY,
    RECOVERY_CODE,
    TOTP_CODE,
    Credentials,
    PasskeyAssertion,
    new_recovery_code,
    recovery_digest,
)
from support.fake_hasher import Hasher

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


class Passkeys:
    """A passkey verifier that accepts one credential and returns its new counter."""

    def verify(self, credential: str, passkey: AccountPasskey) -> int:
        if credential != "good-assertion":
            raise NotAuthenticated("the passkey's signature does not verify")
        return passkey.sign_count + 1


class World:
    def __init__(self, *, passkeys: bool = True) -> None:
        self.hasher = Hasher()
        self.totp = TotpAuthenticator()
        self.box = TotpSecretBox(os.urandom(32))
        self.credentials = Credentials(self.hasher, self.totp, self.box,
                                       Passkeys() if passkeys else None)
        self.secret = self.totp.new_secret()
        self.account = AccountRecord(
            "acc-1", AccountKind.PATIENT, "anne@example.lu", self.hasher.hash(PASSWORD),
            self.box.seal(self.secret, "acc-1"), self.totp.step_at(NOW) - 2, "pat-1",
            frozenset(), NOW - timedelta(days=30))

    def code(self, at: datetime = NOW) -> str:
        return self.totp.code_at(self.secret, self.totp.step_at(at))


@pytest.fixture
def world() -> World:
    return World()


def test_a_password_is_checked_with_the_same_work_for_an_unknown_account(world: World) -> None:
    assert not world.credentials.password(None, PASSWORD).ok
    assert world.credentials.password(None, PASSWORD).reason == "unknown-account"
    assert world.hasher.verified[-1] == world.credentials.dummy_hash
    disabled = AccountRecord(**{**vars(world.account), "disabled_at": NOW})
    assert world.credentials.password(disabled, PASSWORD).reason == "disabled"
    assert world.hasher.verified[-1] == world.credentials.dummy_hash  # not the account's
    assert world.credentials.password(world.account, "wrong").reason == "wrong-password"
    not_enrolled = AccountRecord(**{**vars(world.account), "totp_last_step": None})
    assert world.credentials.password(not_enrolled, PASSWORD).reason == "enrolment-incomplete"
    checked = world.credentials.password(world.account, PASSWORD)
    assert checked.ok and checked.new_hash is None


def test_a_password_hashed_with_older_parameters_gets_a_new_hash(world: World) -> None:
    old = AccountRecord(**{**vars(world.account),
                           "password_hash": "old$" + hashlib.sha256(PASSWORD.encode()).hexdigest()})
    checked = world.credentials.password(old, PASSWORD)
    assert checked.ok and checked.new_hash == world.hasher.hash(PASSWORD)


def test_a_totp_code_is_taken_once_per_step(world: World) -> None:
    checked = world.credentials.with_code(world.account, PASSWORD, world.code(), NOW, [])
    assert checked.ok and checked.reason == TOTP_CODE
    assert checked.step == world.totp.step_at(NOW)
    spent = AccountRecord(**{**vars(world.account), "totp_last_step": checked.step})
    again = world.credentials.with_code(spent, PASSWORD, world.code(), NOW, [])
    assert not again.ok and again.reason == "replayed-code"
    wrong = str((int(world.code()) + 1) % 1_000_000).zfill(6)
    assert world.credentials.with_code(world.account, PASSWORD, wrong, NOW, []).reason == (
        "wrong-code")
    # The password first: a right code does not make up for a wrong password.
    assert world.credentials.with_code(world.account, "wrong", world.code(), NOW, []).reason == (
        "wrong-password")


def test_a_recovery_code_matches_one_of_the_unused_codes_in_any_case_and_spacing(
        world: World) -> None:
    codes = [new_recovery_code() for _ in range(3)]
    unused = [recovery_digest(c) for c in codes]
    typed = " " + codes[1].upper().replace("-", " ") + " "
    checked = world.credentials.with_code(world.account, PASSWORD, typed, NOW, unused)
    assert checked.ok and checked.reason == RECOVERY_CODE
    assert checked.recovery_hash == unused[1]
    assert world.credentials.with_code(world.account, PASSWORD, new_recovery_code(), NOW,
                                       unused).reason == "wrong-code"
    assert world.credentials.with_code(world.account, PASSWORD, "", NOW, []).reason == (
        "wrong-code")


def test_a_passkey_signs_in_only_its_own_account(world: World) -> None:
    own = AccountPasskey("cred-1", "acc-1", b"cose", 4, NOW - timedelta(days=1))
    assertion = PasskeyAssertion("good-assertion", "challenge", "cred-1")
    checked = world.credentials.with_passkey(world.account, PASSWORD, assertion, own)
    assert checked.ok and checked.reason == PASSKEY and checked.passkey_count == 5
    someone_elses = AccountPasskey("cred-2", "acc-2", b"cose", 4, NOW - timedelta(days=1))
    assert world.credentials.with_passkey(world.account, PASSWORD, assertion,
                                          someone_elses).reason == "wrong-passkey"
    forged = PasskeyAssertion("bad-assertion", "challenge", "cred-1")
    assert world.credentials.with_passkey(world.account, PASSWORD, forged, own).reason == (
        "wrong-passkey")
    assert world.credentials.with_passkey(world.account, PASSWORD, assertion, None).reason == (
        "wrong-passkey")
    assert world.credentials.with_passkey(world.account, "wrong", assertion, own).reason == (
        "wrong-password")
    without = World(passkeys=False)
    assert without.credentials.with_passkey(without.account, PASSWORD, assertion,
                                            own).reason == "wrong-passkey"


def test_a_malformed_assertion_names_no_passkey() -> None:
    read = PasskeyAssertion.read("{not json")
    assert read.credential_id == "" and read.challenge_hash == ""
