"""Checking what a person signing in presents: the password (Argon2id), then a TOTP code, one
of their recovery codes, or a passkey's assertion. Pure checks, no storage and no lock: the
sign-in (`carevault.services.accounts.AccountService.login`) loads what they are checked
against, and records and spends what they return in its own transactions.

An unknown or disabled account's password is checked against a dummy hash of the same cost,
so that the time an answer takes tells nothing about whether the account exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.passkey_store import AccountPasskey
from carevault.domain.accounts import normalize_password
from carevault.domain.errors import NotAuthenticated
from carevault.domain.numbers import is_digits
from carevault.services.passkey_ceremony import challenge_hash, challenge_of, credential_id_of

TOTP_CODE = "totp"
RECOVERY_CODE = "recovery-code"
PASSKEY = "passkey"


# --- ports --------------------------------------------------------------------------------------


class PasswordHasher(Protocol):
    """`carevault.adapters.security.passwords.Argon2PasswordHasher`."""

    def hash(self, password: str) -> str: ...

    def verify(self, encoded: str, password: str) -> bool: ...

    def needs_rehash(self, encoded: str) -> bool: ...


class TotpVerifier(Protocol):
    """`carevault.adapters.security.totp.TotpAuthenticator`."""

    def new_secret(self) -> str: ...

    def provisioning_uri(self, secret: str, account_name: str) -> str: ...

    def verify(self, secret: str, code: str, at: datetime, last_step: int | None) -> int | None: ...


class SecretBox(Protocol):
    """`carevault.adapters.security.totp.TotpSecretBox`."""

    def seal(self, secret: str, account_id: str) -> bytes: ...

    def open(self, sealed: bytes, account_id: str) -> str: ...


class PasskeyVerifier(Protocol):
    """`carevault.services.account_passkeys.AccountPasskeys`."""

    def verify(self, credential: str, passkey: AccountPasskey) -> int: ...


# --- what a check returns -----------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialCheck:
    """The outcome of checking a password and a second factor (step 2 of a sign-in)."""

    ok: bool
    reason: str  # why it failed, for the audit log; or the second factor used
    step: int | None = None
    recovery_hash: bytes | None = None
    new_hash: str | None = None
    passkey_count: int | None = None  # a passkey's new signature counter


@dataclass(frozen=True)
class PasskeyAssertion:
    """A passkey's assertion as a sign-in reads it before checking: the credential JSON, the
    stored form of the challenge it answers, and which passkey it names. Malformed: no id."""

    credential: str = field(repr=False)
    challenge_hash: str = ""
    credential_id: str = ""

    @classmethod
    def read(cls, credential: str) -> PasskeyAssertion:
        try:
            return cls(
                credential, challenge_hash(challenge_of(credential)), credential_id_of(credential)
            )
        except NotAuthenticated:
            return cls(credential)


# --- recovery codes -----------------------------------------------------------------------------


# Recovery codes are 16 characters of base32: 80 bits from `secrets`. They are stored as plain
# SHA-256 digests, not Argon2: stretching protects low-entropy human passwords, and guessing one
# of these takes ~2**79 hash evaluations however fast the hash is. A fast hash also lets a
# sign-in compare the submitted code with every unused code of the account (in constant time,
# `hmac.compare_digest`), where Argon2 would cost ten slow hashes per attempt, a gift to anyone
# trying to exhaust the server.
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_RECOVERY_LENGTH = 16


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, _RECOVERY_LENGTH, 4))


def recovery_digest(code: str) -> bytes:
    canonical = "".join(ch for ch in code.casefold() if ch not in "- \t")
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def _is_totp_code(code: str) -> bool:
    compact = code.replace(" ", "")
    return len(compact) == 6 and is_digits(compact)


# --- the checks ---------------------------------------------------------------------------------


class Credentials:
    """The checks of a sign-in's step 2, over the platform's hasher, TOTP and passkeys."""

    def __init__(
        self,
        hasher: PasswordHasher,
        totp: TotpVerifier,
        secret_box: SecretBox,
        passkeys: PasskeyVerifier | None = None,
    ) -> None:
        self.hasher = hasher
        self.totp = totp
        self.secret_box = secret_box
        self.passkeys = passkeys  # None: no sign-in with a passkey
        # What an unknown login's password is checked against: the same Argon2 work as a real
        # check, so that the answer's timing does not reveal whether the account exists.
        self.dummy_hash = hasher.hash(base64.b64encode(secrets.token_bytes(24)).decode())

    def with_passkey(
        self,
        account: AccountRecord | None,
        password: str,
        assertion: PasskeyAssertion | None,
        passkey: AccountPasskey | None,
    ) -> CredentialCheck:
        """The password, then the passkey: the account's own, its assertion valid."""
        check = self.password(account, password)
        if not check.ok or account is None:
            return check
        if self.passkeys is None or assertion is None or not assertion.credential_id:
            return CredentialCheck(False, "wrong-passkey")
        if passkey is None or passkey.account_id != account.id:
            return CredentialCheck(False, "wrong-passkey")
        try:
            count = self.passkeys.verify(assertion.credential, passkey)
        except NotAuthenticated:
            return CredentialCheck(False, "wrong-passkey")
        return replace(check, reason=PASSKEY, passkey_count=count)

    def password(self, account: AccountRecord | None, password: str) -> CredentialCheck:
        """The password of an enrolled, enabled account (the same work for an unknown one);
        ok with the reason left to the second factor, and the password's new hash if due."""
        normalized = normalize_password(password)
        if account is None or account.disabled_at is not None:
            self.hasher.verify(self.dummy_hash, normalized)  # the same work, then refuse
            return CredentialCheck(False, "unknown-account" if account is None else "disabled")
        if not self.hasher.verify(account.password_hash, normalized):
            return CredentialCheck(False, "wrong-password")
        if not account.enrolled:
            return CredentialCheck(False, "enrolment-incomplete")
        rehash = (
            self.hasher.hash(normalized)
            if self.hasher.needs_rehash(account.password_hash)
            else None
        )
        return CredentialCheck(True, "", new_hash=rehash)

    def with_code(
        self,
        account: AccountRecord | None,
        password: str,
        code: str,
        now: datetime,
        unused_codes: Sequence[bytes],
    ) -> CredentialCheck:
        check = self.password(account, password)
        if not check.ok or account is None:
            return check
        secret = self.secret_box.open(account.totp_secret, account.id)
        submitted = (code or "").strip()
        if _is_totp_code(submitted):
            step = self.totp.verify(secret, submitted, now, account.totp_last_step)
            if step is None:
                replayed = self.totp.verify(secret, submitted, now, None) is not None
                return CredentialCheck(False, "replayed-code" if replayed else "wrong-code")
            return replace(check, reason=TOTP_CODE, step=step)
        digest = recovery_digest(submitted)
        matched: bytes | None = None
        for stored in unused_codes:  # every one compared, in constant time
            if hmac.compare_digest(stored, digest):
                matched = stored
        if matched is None or not submitted:
            return CredentialCheck(False, "wrong-code")
        return replace(check, reason=RECOVERY_CODE, recovery_hash=matched)
