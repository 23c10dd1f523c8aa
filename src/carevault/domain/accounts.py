"""Accounts, passwords, mandates and login throttling: the rules, with no storage or crypto.

Three kinds of account sign in to CareVault. A *patient* account is bound to one entry of the
master patient index. A *representative* is a person who acts for patients under a `Mandate`
(scope, start, end); they sign in as themselves and then choose whose record to act on. An
*operator* belongs to a separate directory; the role ``security_officer`` marks those who may
read the audit log. Every kind signs in with a password and a TOTP second factor.

Passwords follow NIST SP 800-63B (§5.1.1.2; 800-63B-4 §3.1.1.2): a minimum length, a generous
maximum, a check against commonly used, repetitive, sequential and context-specific values, and
*no* composition rules and no periodic change.

`LoginThrottle` is the arithmetic of abuse resistance, kept pure so it can be tested with
nothing but numbers: after a few free failures each further one doubles the wait, and past a
threshold the key is locked for a while. The same arithmetic runs once per account and once
per client address, each under its own key.

Errors, added to the domain's hierarchy (`carevault.domain.errors`):

    CareVaultError
    ├── InvalidInput
    │   └── BusinessRuleViolation
    │       └── WeakPassword            the password policy refuses a new password
    ├── NotAuthenticated
    │   └── AuthenticationFailed        wrong login, password or code: one message for all
    └── RateLimited
        └── Throttled                   too many failed attempts; ``retry_after`` seconds
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from carevault.domain.errors import (
    BusinessRuleViolation,
    InvalidInput,
    NotAuthenticated,
    RateLimited,
)

__all__ = [
    "ACCOUNT_POLICY",
    "IP_POLICY",
    "MANDATE_SCOPES",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "REGISTRAR",
    "ROLES",
    "SECURITY_OFFICER",
    "AccountKind",
    "AuthenticationFailed",
    "LoginThrottle",
    "Mandate",
    "Reauthenticated",
    "ThrottlePolicy",
    "ThrottleState",
    "Throttled",
    "WeakPassword",
    "account_key",
    "check_account",
    "check_password",
    "client_key",
    "fold_login",
    "login_key",
    "normalize_password",
]


class WeakPassword(BusinessRuleViolation):
    """The password policy refuses a new password; the message says which rule."""


class AuthenticationFailed(NotAuthenticated):
    """Sign-in refused. The message never says whether the login, the password or the code was
    wrong: saying so would tell an attacker which logins exist."""


class Throttled(RateLimited):
    """Too many failed sign-ins for this account or from this address."""


@dataclass(frozen=True)
class Reauthenticated:
    """The holder of a signed-in session typed their password again, at ``at``: what adding a
    way to sign in asks for (`AccountService.confirm_password`), so that a session left open
    on a shared computer is not enough to add one."""

    account_id: str
    at: datetime


# --- accounts -----------------------------------------------------------------------------------


class AccountKind(StrEnum):
    PATIENT = "patient"
    REPRESENTATIVE = "representative"
    OPERATOR = "operator"


SECURITY_OFFICER = "security_officer"
# An operator who keeps the directories by hand (patients' identities, professionals, roles,
# organizations, licences), through the API or the command line; never clinical content.
REGISTRAR = "registrar"
ROLES = frozenset({SECURITY_OFFICER, REGISTRAR})
# Kinds that must sign in with a second factor: all of them (patients and representatives
# reach health data; operators administer the platform).
SECOND_FACTOR_REQUIRED = frozenset(AccountKind)
PERSON_KINDS = frozenset({AccountKind.PATIENT, AccountKind.REPRESENTATIVE})

MAX_LOGIN_LENGTH = 254  # the longest e-mail address (RFC 5321 path limit less the brackets)


def fold_login(login: str) -> str:
    """The stored form of a login (an e-mail address or a user name): NFKC, trimmed,
    case-folded, so that ``Anne@Example.lu`` and ``anne@example.lu`` are one account."""
    folded = unicodedata.normalize("NFKC", login).strip().casefold()
    if not 3 <= len(folded) <= MAX_LOGIN_LENGTH:
        raise InvalidInput(f"a login has 3 to {MAX_LOGIN_LENGTH} characters", expression="login")
    if any(ch.isspace() or unicodedata.category(ch)[0] in "CZ" for ch in folded):
        raise InvalidInput("a login contains no spaces or control characters", expression="login")
    return folded


def check_account(
    kind: AccountKind, *, patient_id: str | None, roles: frozenset[str], has_second_factor: bool
) -> None:
    """The invariants of a stored account, checked before any account is written."""
    if kind is AccountKind.PATIENT and not patient_id:
        raise BusinessRuleViolation("a patient account is bound to a patient of the index")
    if kind is not AccountKind.PATIENT and patient_id:
        raise BusinessRuleViolation(f"a {kind.value} account is not bound to a patient")
    unknown = roles - ROLES
    if unknown:
        raise BusinessRuleViolation(f"unknown account roles {sorted(unknown)}")
    if roles and kind is not AccountKind.OPERATOR:
        raise BusinessRuleViolation("only operator accounts hold roles")
    if kind in SECOND_FACTOR_REQUIRED and not has_second_factor:
        raise BusinessRuleViolation(f"a {kind.value} account must have a TOTP second factor")


# --- passwords ----------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 12
# NIST asks that at least 64 characters be accepted; the cap only bounds the hashing work.
MAX_PASSWORD_LENGTH = 128

# Commonly used passwords of at least the minimum length (shorter ones fail on length first),
# from the public breach corpora's top lists, plus local favourites. Compared case-insensitively.
_COMMON = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "123123123123",
        "000000000000",
        "111111111111",
        "987654321000",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "1qaz2wsx3edc4rfv",
        "zaq12wsxcde3",
        "qazwsxedcrfv",
        "qwertyuiop123",
        "qwertyuiopasdf",
        "qwerty123456",
        "qwer1234asdf",
        "1234qwerasdf",
        "asdfghjkl123",
        "azertyuiop12",
        "azertyuiop123",
        "abc123abc123",
        "password1234",
        "password12345",
        "password123!",
        "passwordpassword",
        "passw0rd1234",
        "p@ssw0rd1234",
        "p@ssword1234",
        "iloveyou1234",
        "letmein12345",
        "welcome12345",
        "welcome@1234",
        "changeme1234",
        "administrator",
        "administrator1",
        "monkey123456",
        "football1234",
        "baseball1234",
        "sunshine1234",
        "princess1234",
        "trustno1trustno1",
        "superman1234",
        "starwars1234",
        "whatever1234",
        "motdepasse12",
        "motdepasse123",
        "motdepasse1234",
        "passwort1234",
        "passwort12345",
        "bonjour12345",
        "soleil123456",
        "luxembourg12",
        "luxembourg123",
        "luxembourg1234",
        "carevault123",
        "carevault1234",
    }
)
_CONTEXT_WORDS = ("carevault",)


def normalize_password(password: str) -> str:
    """NFKC, as NIST recommends, so that the same characters typed on different keyboards or
    systems hash the same. Hash and verify the normalized form only."""
    return unicodedata.normalize("NFKC", password)


def _repetitive(password: str) -> bool:
    """The whole password is one short unit repeated (``aaaa…``, ``abcabc…``, ``1212…``)."""
    n = len(password)
    return any(n % size == 0 and password == password[:size] * (n // size) for size in (1, 2, 3, 4))


def _sequential(password: str) -> bool:
    """Consecutive code points up or down all the way (``abcdefghijkl``, ``987654321…``)."""
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(password)}
    return steps in ({1}, {-1})


def check_password(password: str, *, context: tuple[str, ...] = ()) -> None:
    """Refuse a new password that breaks NIST SP 800-63B rules; ``context`` holds words specific
    to the account (its login) that the password may not contain."""
    password = normalize_password(password)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"a password has at least {MIN_PASSWORD_LENGTH} characters", expression="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(
            f"a password has at most {MAX_PASSWORD_LENGTH} characters", expression="password"
        )
    folded = password.casefold()
    if folded in _COMMON:
        raise WeakPassword("this password is too common: choose another", expression="password")
    if _repetitive(folded) or _sequential(folded):
        raise WeakPassword(
            "a password is not a repeated or sequential run of characters", expression="password"
        )
    words = [*_CONTEXT_WORDS]
    for item in context:
        folded_item = item.casefold()
        words.append(folded_item)
        words.append(folded_item.partition("@")[0])  # the name part of an e-mail address
    if any(len(word) >= 4 and word in folded for word in words):
        raise WeakPassword(
            "a password may not contain the login or the name of the service",
            expression="password",
        )


# --- mandates -----------------------------------------------------------------------------------

MANDATE_SCOPES = ("read", "manage")


@dataclass(frozen=True)
class Mandate:
    """A representative may act on a patient's record with ``scope`` from ``starts_at`` until
    (excluding) ``ends_at``; no end means until revoked. ``manage`` includes ``read``."""

    id: str
    representative_account_id: str
    patient_id: str
    scope: str
    starts_at: datetime
    ends_at: datetime | None

    def __post_init__(self) -> None:
        if self.scope not in MANDATE_SCOPES:
            raise BusinessRuleViolation(
                f"a mandate's scope is one of {', '.join(MANDATE_SCOPES)}", expression="scope"
            )
        if self.starts_at.tzinfo is None or (
            self.ends_at is not None and self.ends_at.tzinfo is None
        ):
            raise InvalidInput("mandate dates carry a time zone")
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise BusinessRuleViolation("a mandate ends after it starts", expression="ends_at")

    def active_at(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def allows(self, scope: str) -> bool:
        return self.scope == scope or (self.scope == "manage" and scope == "read")


# --- throttling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """``free_failures`` failures cost nothing; the next ones wait ``base_delay``, doubling each
    time up to ``max_delay``; at ``lock_after`` failures (if set) the key is locked for
    ``lock_duration``, and every further failure locks it again."""

    free_failures: int = 5
    lock_after: int | None = 10
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=15)
    lock_duration: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.free_failures < 1:
            raise ValueError("at least one failure is free")
        if self.lock_after is not None:
            if self.lock_after <= self.free_failures:
                raise ValueError("the lock comes after the free failures")
            if self.lock_duration < self.max_delay:
                raise ValueError("a lock lasts at least as long as the longest backoff")


# Per account: five free tries, then 2, 4, 8, 16, 32 s, then locked for an hour (and the
# patient is told). Per address: more lenient, because many patients share one address (a
# hospital's network, a carrier's NAT), and never a lock, so that an attacker cannot shut a
# whole hospital out; the backoff alone stops a credential-stuffing run across accounts.
ACCOUNT_POLICY = ThrottlePolicy()
IP_POLICY = ThrottlePolicy(free_failures=20, lock_after=None)


@dataclass(frozen=True)
class ThrottleState:
    """What is stored per key: consecutive failures, when the next try is allowed, and when the
    key was last locked."""

    failures: int = 0
    next_allowed_at: datetime | None = None
    locked_at: datetime | None = None


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy = ACCOUNT_POLICY) -> None:
        self.policy = policy

    def backoff(self, failures: int) -> timedelta:
        """How long to wait after ``failures`` consecutive failures; never decreases."""
        p = self.policy
        if p.lock_after is not None and failures >= p.lock_after:
            return p.lock_duration
        if failures < p.free_failures:
            return timedelta(0)
        doublings = failures - p.free_failures
        # Compare in float seconds first: base_delay * 2**1000 would overflow a timedelta.
        if p.base_delay.total_seconds() * 2.0 ** min(doublings, 64) >= p.max_delay.total_seconds():
            return p.max_delay
        return p.base_delay * (1 << doublings)

    def retry_after(self, state: ThrottleState, now: datetime) -> int:
        """Whole seconds until the next try is allowed; 0 if it is allowed now."""
        if state.next_allowed_at is None or state.next_allowed_at <= now:
            return 0
        return max(1, math.ceil((state.next_allowed_at - now).total_seconds()))

    def fail(self, state: ThrottleState, now: datetime) -> ThrottleState:
        failures = state.failures + 1
        wait = self.backoff(failures)
        locks = self.policy.lock_after is not None and failures >= self.policy.lock_after
        return ThrottleState(
            failures=failures,
            next_allowed_at=now + wait if wait else None,
            locked_at=now if locks else state.locked_at,
        )

    @staticmethod
    def succeed() -> ThrottleState:
        return ThrottleState()

    @staticmethod
    def newly_locked(before: ThrottleState, after: ThrottleState) -> bool:
        return after.locked_at is not None and after.locked_at != before.locked_at


def account_key(account_id: str) -> str:
    return f"account:{account_id}"


def login_key(login: str) -> str:
    """The throttle key of a login that matches no account. Throttling unknown logins exactly
    as known ones keeps their answers identical; hashing keeps attempted logins (which may be
    mistyped passwords) out of the table."""
    return "login:" + hashlib.sha256(login.encode("utf-8")).hexdigest()


def client_key(address: str) -> str:
    """The throttle key of a client address. An IPv6 client usually holds a whole /64, so the
    /64 is the unit; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return "ip:" + address.strip()[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"ip:{ip}"
