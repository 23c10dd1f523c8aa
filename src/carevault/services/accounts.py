"""Use cases of accounts: enrolment, sign-in, representatives and their mandates, operators.

Every account signs in with a password (Argon2id) and a TOTP second factor, or one of its
single-use recovery codes instead of a TOTP code. Enrolment returns the TOTP provisioning URI,
its QR code and the recovery codes, once; it is complete only when `confirm_totp` has seen a
first valid code.

Sign-in (`AccountService.login`) runs in three steps, so that the slow password check holds
no database lock and yet concurrent guesses are all counted:

1. one short transaction checks the throttles of the account and of the client address and,
   if the attempt may go ahead, *charges* it to the account as a failure in advance;
2. the password and the code are checked, outside any transaction;
3. a second transaction records the outcome: a success resets the account's count and spends
   the TOTP step or the recovery code (a conditional update, so a code cannot be used twice
   even by two concurrent sign-ins); a failure is counted against the address too, and a
   failure that locked the account leaves a notification for its holder.

An unknown login, a wrong password and a wrong code get the same `AuthenticationFailed`, with
the same message; an unknown login is throttled under a key of its own exactly like a known
one, and its password is checked against a dummy Argon2 hash, so neither the answer nor its
timing tells whether an account exists. The audit log is precise where the caller is not: every
event is recorded, with the reason, in the transaction that makes it; never a password, TOTP
secret or code.

Audit streams: operator accounts' events go to the ``operator`` stream; patients' and
representatives' to ``clinical``, with kind ``authentication`` and, for a patient account, the
patient's id, so that the patient's access history shows every sign-in to their record.

Errors, besides the directory's `NotFound` and the unit of work's `Conflict`:

    CareVaultError
    ├── InvalidInput / BusinessRuleViolation
    │   └── WeakPassword            (carevault.domain.accounts)
    ├── NotAuthenticated
    │   └── AuthenticationFailed    (carevault.domain.accounts)
    ├── NotPermitted                acting for a patient without an active mandate
    └── RateLimited
        └── Throttled               (carevault.domain.accounts), with ``retry_after``
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NoReturn, Protocol

from carevault.adapters.storage.account_store import AccountRecord, AccountStore, Notification
from carevault.adapters.storage.audit_store import AuditStore
from carevault.domain.accounts import (
    ACCOUNT_POLICY,
    IP_POLICY,
    PERSON_KINDS,
    REGISTRAR,
    SECURITY_OFFICER,
    AccountKind,
    AuthenticationFailed,
    LoginThrottle,
    Mandate,
    Reauthenticated,
    Throttled,
    ThrottlePolicy,
    ThrottleState,
    WeakPassword,
    account_key,
    check_password,
    client_key,
    fold_login,
    login_key,
    normalize_password,
)
from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_EXECUTE,
    ACTION_UPDATE,
    Agent,
    AuditRecord,
    rfc3339_ms,
)
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from carevault.services.credentials import (
    RECOVERY_CODE,
    CredentialCheck,
    Credentials,
    PasskeyAssertion,
    PasskeyVerifier,
    PasswordHasher,
    SecretBox,
    TotpVerifier,
    new_recovery_code,
    recovery_digest,
)
from carevault.services.directory import read_patient
from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "FAILED",
    "AccountService",
    "AuditAppender",
    "AuthenticationFailed",
    "Enrolment",
    "Principal",
    "Reauthenticated",
    "Throttled",
    "WeakPassword",
]

log = logging.getLogger("carevault.accounts")

FAILED = "invalid login or password"
THROTTLED = "too many failed sign-ins: try again later"
RECOVERY_CODES = 10
# The purpose of a passkey sign-in's challenge: `account_passkeys` issues it, `login` takes it.
SIGN_IN = "account-signin"

# FHIR AuditEvent.outcome: a refused sign-in is a minor failure; a lock is serious.
_SUCCESS, _FAILURE, _SERIOUS = "0", "4", "8"
# What the holder of a patient account is told when its means of signing in change (ASVS
# 6.3.7), in the app's languages (a Communication's payload; the mail says the same): one who
# did not make the change learns that someone else can sign in as them.
ACCOUNT_NOTICES: dict[str, dict[str, str]] = {
    "password-changed": {
        "en": "The password of your account was changed.",
        "fr": "Le mot de passe de votre compte a été changé.",
        "de": "Das Passwort Ihres Kontos wurde geändert.",
    },
    "recovery-code-used": {
        "en": "A recovery code of your account was used to sign in.",
        "fr": "Un code de secours de votre compte a servi à se connecter.",
        "de": "Ein Wiederherstellungscode Ihres Kontos wurde zur Anmeldung verwendet.",
    },
    "passkey-added": {
        "en": "A passkey was added to your account.",
        "fr": "Une clé d'accès a été ajoutée à votre compte.",
        "de": "Ein Passkey wurde Ihrem Konto hinzugefügt.",
    },
    "passkey-removed": {
        "en": "A passkey was removed from your account.",
        "fr": "Une clé d'accès a été retirée de votre compte.",
        "de": "Ein Passkey wurde aus Ihrem Konto entfernt.",
    },
}
IF_NOT_YOU = {
    "en": "If it was not you, contact the help desk at once.",
    "fr": "Si ce n'était pas vous, contactez l'assistance sans attendre.",
    "de": "Wenn Sie es nicht waren, wenden Sie sich sofort an den Helpdesk.",
}


def notify_holder(uow: UnitOfWork, account: AccountRecord, kind: str, now: datetime) -> None:
    """Queue the notice of a change of the account's means of signing in (`ACCOUNT_NOTICES`),
    mailed and shown in the app, in the transaction of the change. Patient accounts only:
    representatives' and operators' logins are not known to be mail addresses."""
    if account.kind != AccountKind.PATIENT or account.patient_id is None:
        return
    words = {
        language: f"{text} {IF_NOT_YOU[language]}"
        for language, text in ACCOUNT_NOTICES[kind].items()
    }
    uow.records.notify(account.patient_id, kind, words, now, account_id=account.id)


# --- ports --------------------------------------------------------------------------------------


class AuditAppender(Protocol):
    """`carevault.services.audit_log.AuditLog`."""

    def append_with(self, store: AuditStore, records: Sequence[AuditRecord]) -> list[int]: ...


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """What a new account holder is shown once, and never again: the TOTP provisioning URI (it
    holds the secret), its QR code and the recovery codes. Kept out of ``repr``."""

    account_id: str
    totp_provisioning_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)
    recovery_codes: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """Who signed in. ``acting_for`` is the patient whose record they act on, and ``scope``
    how far: a patient acts for themselves with ``manage``; a representative acts for no one
    until `AccountService.choose_patient`; an operator never acts for a patient."""

    account_id: str
    kind: AccountKind
    patient_id: str | None
    roles: frozenset[str]
    second_factor: str  # 'totp', 'recovery-code' or 'passkey'
    authenticated_at: datetime
    acting_for: str | None = None
    scope: str | None = None

    @property
    def security_officer(self) -> bool:
        return SECURITY_OFFICER in self.roles

    @property
    def registrar(self) -> bool:
        return REGISTRAR in self.roles

    @property
    def who(self) -> str:
        """The identity reference audit records name."""
        return f"account:{self.account_id}"


def _new_id() -> str:
    return uuid.uuid4().hex


# --- the service --------------------------------------------------------------------------------


def authentication_record(
    account: AccountRecord | None,
    interaction: str,
    action: str,
    outcome: str,
    now: datetime,
    client_ip: str | None,
    *,
    reason: str | None = None,
    by: str | None = None,
    detail: dict[str, str] | None = None,
) -> AuditRecord:
    """An authentication event of ``account`` (None: a login that names no account)."""
    operator = account is not None and account.kind is AccountKind.OPERATOR
    details = dict(detail or {})
    if reason is not None:
        details["reason"] = reason
    return AuditRecord(
        stream="operator" if operator else "clinical",
        recorded=rfc3339_ms(now),
        kind="authentication",
        action=action,
        interaction=interaction,
        outcome=outcome,
        agent=Agent(
            who=by or (f"account:{account.id}" if account else None),
            role=account.kind.value if account else None,
            network=client_ip,
        ),
        # No entity: FHIR's "Account" is a billing resource, and the account already is
        # the agent.
        patient=account.patient_id if account else None,
        detail=details,
    )


class AccountService:
    """Accounts' use cases, each in its own transaction(s) through ``units``."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditAppender,
        *,
        hasher: PasswordHasher,
        totp: TotpVerifier,
        secret_box: SecretBox,
        qr_code: Callable[[str], str],
        clock: Callable[[], datetime],
        account_policy: ThrottlePolicy = ACCOUNT_POLICY,
        ip_policy: ThrottlePolicy = IP_POLICY,
        passkeys: PasskeyVerifier | None = None,
    ) -> None:
        self.units = units
        self.audit = audit
        self.hasher = hasher
        self.totp = totp
        self.secret_box = secret_box
        self.qr_code = qr_code
        self.clock = clock
        self.account_throttle = LoginThrottle(account_policy)
        self.ip_throttle = LoginThrottle(ip_policy)
        self.credentials = Credentials(hasher, totp, secret_box, passkeys)

    # --- enrolment --------------------------------------------------------------------------

    def enrol_patient(
        self,
        login: str,
        password: str,
        *,
        patient_id: str | None = None,
        national_id: str | None = None,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> Enrolment:
        """Create the account of a patient of the index, named by id or national identifier;
        one account per patient."""
        if (patient_id is None) == (national_id is None):
            raise InvalidInput("name the patient by exactly one of patient_id and national_id")

        def resolve(uow: UnitOfWork, store: AccountStore) -> str:
            pid = patient_id
            if pid is None:
                assert national_id is not None
                pid = store.patient_id_by_national_id(national_id.strip())
                if pid is None:
                    raise NotFound("no patient has this national identifier")
            read_patient(uow, pid)  # NotFound if the index does not know it
            state = uow.directory.patient_merge_state(pid)
            if state is not None and state.merged_into is not None:
                raise BusinessRuleViolation(
                    f"Patient/{pid} was merged into another entry: enrol with that one"
                )
            if store.by_patient(pid) is not None:
                raise Conflict("this patient already has an account")
            return pid

        return self._enrol(
            AccountKind.PATIENT, login, password, resolve, frozenset(), None, client_ip, now
        )

    def add_representative(
        self,
        login: str,
        password: str,
        *,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> Enrolment:
        """Create the account of a person who will act for patients under mandates."""
        return self._enrol(
            AccountKind.REPRESENTATIVE, login, password, None, frozenset(), None, client_ip, now
        )

    def register_operator(
        self,
        login: str,
        password: str,
        *,
        security_officer: bool,
        by: str,
        now: datetime | None = None,
        registrar: bool = False,
    ) -> Enrolment:
        """Create an operator account (TOTP mandatory, like every account); ``by`` names who
        created it, for the operator stream of the audit log."""
        if security_officer and registrar:
            raise InvalidInput("an operator is a security officer or a registrar, not both")
        roles = frozenset(
            {SECURITY_OFFICER} if security_officer else {REGISTRAR} if registrar else set()
        )
        return self._enrol(AccountKind.OPERATOR, login, password, None, roles, by, None, now)

    def _enrol(
        self,
        kind: AccountKind,
        login: str,
        password: str,
        resolve: Callable[[UnitOfWork, AccountStore], str] | None,
        roles: frozenset[str],
        by: str | None,
        client_ip: str | None,
        now: datetime | None,
    ) -> Enrolment:
        now = now or self.clock()
        folded = fold_login(login)
        check_password(password, context=(folded,))
        # The slow work happens before the transaction opens.
        password_hash = self.hasher.hash(normalize_password(password))
        account_id = _new_id()
        secret = self.totp.new_secret()
        codes = tuple(new_recovery_code() for _ in range(RECOVERY_CODES))
        with self.units() as uow:
            store = uow.accounts
            patient = resolve(uow, store) if resolve is not None else None
            if store.login_taken(folded):
                raise Conflict("this login is already taken", expression="login")
            account = AccountRecord(
                id=account_id,
                kind=kind,
                login=folded,
                password_hash=password_hash,
                totp_secret=self.secret_box.seal(secret, account_id),
                totp_last_step=None,
                patient_id=patient,
                roles=roles,
                created_at=now,
            )
            store.add(account)
            store.add_recovery_codes(account_id, [recovery_digest(c) for c in codes])
            detail = {"roles": " ".join(sorted(roles))} if roles else {}
            self._append(
                uow,
                authentication_record(
                    account, "enrol", ACTION_CREATE, _SUCCESS, now, client_ip, by=by, detail=detail
                ),
            )
            uow.commit()
        uri = self.totp.provisioning_uri(secret, folded)
        return Enrolment(account_id, uri, self.qr_code(uri), codes)

    def confirm_totp(
        self,
        account_id: str,
        code: str,
        *,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Complete an enrolment with a first valid TOTP code: until then the account cannot
        sign in. Wrong codes count towards the account's throttle like failed sign-ins."""
        now = now or self.clock()
        with self.units() as uow:
            store = uow.accounts
            account = store.by_id(account_id)
            if account is None:
                raise NotFound(f"Account/{account_id} is not known")
            if account.enrolled:
                raise Conflict("the second factor of this account is already confirmed")
            secret = self.secret_box.open(account.totp_secret, account.id)

            def accepted() -> bool:
                step = self.totp.verify(secret, code, now, None)
                return step is not None and store.accept_totp_step(account.id, step)

            if self._holder_knows(
                uow, account, "enrol-confirm", "wrong-code", accepted, client_ip, now
            ):
                store.save_throttle_state(account_key(account.id), self.account_throttle.succeed())
                self._append(
                    uow,
                    authentication_record(
                        account, "enrol-confirm", ACTION_UPDATE, _SUCCESS, now, client_ip
                    ),
                )
                uow.commit()
                return
        raise AuthenticationFailed("invalid code")

    def confirm_password(
        self,
        account_id: str,
        password: str,
        *,
        interaction: str,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> Reauthenticated:
        """The signed-in holder's password, typed again before a change of how they sign in
        (``interaction`` names it: ``passkey-add``). A wrong one counts towards the account's
        throttle like a failed sign-in, so that an open session is no oracle for the password;
        both outcomes are recorded. As at sign-in, the attempt is charged first and the slow
        hash checked holding no lock (`_password_proven`); a right password clears the
        throttle."""
        now = now or self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
        if account is None or account.disabled_at is not None:
            raise AuthenticationFailed("this account cannot confirm its password")
        if not self._password_proven(
            account,
            lambda: self.credentials.password(account, password).ok,
            interaction,
            client_ip,
            now,
        ):
            raise AuthenticationFailed("the password is not this account's")
        with self.units() as uow:
            self._clear_throttle(uow.accounts, account.id)
            self._append(
                uow,
                authentication_record(
                    account,
                    interaction,
                    ACTION_UPDATE,
                    _SUCCESS,
                    now,
                    client_ip,
                    reason="password-confirmed",
                ),
            )
            uow.commit()
        return Reauthenticated(account.id, now)

    # --- signing in -------------------------------------------------------------------------

    def login(
        self,
        login: str,
        password: str,
        code: str,
        client_ip: str,
        now: datetime | None = None,
        *,
        passkey: str = "",
    ) -> Principal:
        """Sign in with a password and a TOTP code, a recovery code, or a passkey's assertion
        (the browser's credential JSON), all checked in one attempt.

        Raises `Throttled` (with ``retry_after`` seconds) while the account or the address is
        backing off, and `AuthenticationFailed` with one message whatever was wrong."""
        now = now or self.clock()
        assertion = PasskeyAssertion.read(passkey) if passkey else None
        try:
            folded: str | None = fold_login(login)
        except InvalidInput:
            folded = None  # cannot name an account: handled exactly like an unknown login
        address = client_key(client_ip)

        # 1. Throttles, and the attempt charged in advance.
        with self.units() as uow:
            store = uow.accounts
            account = store.by_login(folded) if folded is not None else None
            key = account_key(account.id) if account else login_key(folded or login)
            states = store.lock_throttle_states([key, address])
            wait = max(
                self.account_throttle.retry_after(states[key], now),
                self.ip_throttle.retry_after(states[address], now),
            )
            if wait:
                self._refuse_throttled(uow, account, "login", ACTION_EXECUTE, wait, now, client_ip)
            before = states[key]
            charged = self.account_throttle.fail(before, now)
            store.save_throttle_state(key, charged)
            # Queried for an unknown login too, so that both paths do the same work.
            unused_codes = store.unused_recovery_codes(account.id if account else "")
            key_of_passkey = (
                uow.passkeys.account_passkey(assertion.credential_id)
                if assertion is not None and assertion.credential_id
                else None
            )
            uow.commit()

        # 2. The slow check, holding no lock.
        if passkey:
            check = self.credentials.with_passkey(account, password, assertion, key_of_passkey)
        else:
            check = self.credentials.with_code(account, password, code, now, unused_codes)

        # 3. The outcome.
        with self.units() as uow:
            store = uow.accounts
            if check.ok and account is not None:
                if check.passkey_count is not None:
                    assert assertion is not None
                    assert key_of_passkey is not None
                    won = uow.passkeys.take_challenge(
                        assertion.challenge_hash, SIGN_IN, now
                    ) is not None and uow.passkeys.account_passkey_used(
                        key_of_passkey.credential_id,
                        key_of_passkey.sign_count,
                        check.passkey_count,
                        now,
                    )
                elif check.step is not None:
                    won = store.accept_totp_step(account.id, check.step)
                else:
                    assert check.recovery_hash is not None
                    won = store.use_recovery_code(account.id, check.recovery_hash, now)
                if not won:
                    check = CredentialCheck(False, "replayed-code")
            if check.ok and account is not None:
                self._clear_throttle(store, account.id)
                if check.new_hash is not None:
                    store.set_password_hash(account.id, check.new_hash)
                events = [
                    authentication_record(
                        account,
                        "login",
                        ACTION_EXECUTE,
                        _SUCCESS,
                        now,
                        client_ip,
                        detail={"second_factor": check.reason},
                    )
                ]
                if check.reason == RECOVERY_CODE:
                    left = str(len(unused_codes) - 1)
                    events.append(
                        authentication_record(
                            account,
                            "recovery-code-use",
                            ACTION_UPDATE,
                            _SUCCESS,
                            now,
                            client_ip,
                            detail={"recovery_codes_left": left},
                        )
                    )
                    notify_holder(uow, account, "recovery-code-used", now)
                self._append(uow, *events)
                uow.commit()
                return self._principal(account, check.reason, now)
            ip_state = store.lock_throttle_states([address])[address]
            store.save_throttle_state(address, self.ip_throttle.fail(ip_state, now))
            self._record_failure(
                uow, store, account, "login", check.reason, before, charged, client_ip, now
            )
            uow.commit()
        raise AuthenticationFailed(FAILED)

    @staticmethod
    def _principal(account: AccountRecord, second_factor: str, now: datetime) -> Principal:
        own = account.patient_id if account.kind is AccountKind.PATIENT else None
        return Principal(
            account_id=account.id,
            kind=account.kind,
            patient_id=account.patient_id,
            roles=account.roles,
            second_factor=second_factor,
            authenticated_at=now,
            acting_for=own,
            scope="manage" if own else None,
        )

    # --- representatives --------------------------------------------------------------------

    def create_mandate(
        self,
        representative_account_id: str,
        patient_id: str,
        scope: str,
        starts_at: datetime,
        ends_at: datetime | None = None,
        *,
        by: str,
        now: datetime | None = None,
    ) -> Mandate:
        """Let a person account act on a patient's record; ``by`` names who granted it (the
        patient's account, an operator). Recorded in the patient's access history."""
        now = now or self.clock()
        with self.units() as uow:
            store = uow.accounts
            account = store.by_id(representative_account_id)
            if account is None:
                raise NotFound(f"Account/{representative_account_id} is not known")
            if account.kind not in PERSON_KINDS:
                raise BusinessRuleViolation("only a person's account can hold a mandate")
            if account.patient_id == patient_id:
                raise BusinessRuleViolation("a patient needs no mandate for their own record")
            read_patient(uow, patient_id)
            mandate = Mandate(_new_id(), account.id, patient_id, scope, starts_at, ends_at)
            store.add_mandate(mandate, now)
            detail = {"scope": scope, "starts_at": rfc3339_ms(starts_at)}
            if ends_at is not None:
                detail["ends_at"] = rfc3339_ms(ends_at)
            record = AuditRecord(
                stream="clinical",
                recorded=rfc3339_ms(now),
                kind="policy",
                action=ACTION_CREATE,
                interaction="mandate-create",
                outcome=_SUCCESS,
                agent=Agent(who=by),
                patient=patient_id,
                detail={"mandate": mandate.id, "representative": f"account:{account.id}", **detail},
            )
            self._append(uow, record)
            uow.commit()
        return mandate

    def login_of(self, account_id: str) -> str | None:
        """The login an account signs in with (a representative named on the patient's page),
        None if there is no such account."""
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
        return account.login if account is not None else None

    def mandates_of(self, account_id: str, now: datetime | None = None) -> list[Mandate]:
        """The mandates of an account that are in force at ``now``."""
        now = now or self.clock()
        with self.units() as uow:
            mandates = uow.accounts.mandates_of(account_id)
        return [m for m in mandates if m.active_at(now)]

    def choose_patient(
        self,
        principal: Principal,
        patient_id: str,
        *,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> Principal:
        """The signed-in person now acts on ``patient_id``'s record: their own, or one they
        hold an active mandate for (the broadest scope wins). Recorded in that patient's
        access history, refusals included."""
        now = now or self.clock()
        if principal.kind not in PERSON_KINDS:
            raise NotPermitted("operators do not act on a patient's record")
        if principal.patient_id == patient_id:
            return replace(principal, acting_for=patient_id, scope="manage")
        mandates = [
            m for m in self.mandates_of(principal.account_id, now) if m.patient_id == patient_id
        ]
        scope = (
            "manage"
            if any(m.scope == "manage" for m in mandates)
            else ("read" if mandates else None)
        )
        with self.units() as uow:
            record = AuditRecord(
                stream="clinical",
                recorded=rfc3339_ms(now),
                kind="authentication",
                action=ACTION_EXECUTE,
                interaction="act-for",
                outcome=_SUCCESS if scope else _FAILURE,
                agent=Agent(
                    who=principal.who,
                    role=principal.kind.value,
                    on_behalf_of=f"Patient/{patient_id}",
                    network=client_ip,
                ),
                patient=patient_id,
                entity_type="Patient",
                entity_id=patient_id,
                detail={"scope": scope} if scope else {"reason": "no-active-mandate"},
            )
            self._append(uow, record)
            uow.commit()
        if scope is None:
            raise NotPermitted("no mandate in force lets this account act for this patient")
        return replace(principal, acting_for=patient_id, scope=scope)

    def sign_out_everywhere(self, account_id: str, *, client_ip: str | None = None) -> int:
        """End every portal session of the account, in every browser and on every device, and
        revoke the access tokens its apps hold and spend the codes approved for them not yet
        exchanged, in one transaction with its audit entry (in the patient's history for a
        patient's account); how many sessions were ended."""
        now = self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
            if account is None:
                raise NotFound("no such account")
            ended = uow.sessions.end_all(account_id, now)
            tokens = uow.oauth.revoke_subject(f"account:{account_id}", now)
            # A code approved a moment ago and not yet traded would give an app a fresh token
            # after this: spent too. (There are no refresh tokens: an app signs in again.)
            codes = uow.apps.spend_codes_of(account_id, now)
            self._append(
                uow,
                authentication_record(
                    account,
                    "logout-everywhere",
                    ACTION_EXECUTE,
                    _SUCCESS,
                    now,
                    client_ip,
                    detail={
                        "sessions": str(ended),
                        "app_tokens": str(tokens),
                        "app_codes": str(codes),
                    },
                ),
            )
            uow.commit()
        return ended

    # --- passwords --------------------------------------------------------------------------

    def account_id_of(self, login: str) -> str:
        """The id of the account of ``login`` (folded as at sign-in); `NotFound` otherwise."""
        try:
            folded = fold_login(login)
        except InvalidInput:
            raise NotFound("no account has this login") from None
        with self.units() as uow:
            account = uow.accounts.by_login(folded)
        if account is None:
            raise NotFound("no account has this login")
        return account.id

    def change_password(
        self,
        account_id: str,
        current_password: str,
        new_password: str,
        *,
        client_ip: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Replace the password, proving the current one; throttled like a sign-in."""
        now = now or self.clock()
        with self.units() as uow:
            account = uow.accounts.by_id(account_id)
        if account is None:
            raise NotFound(f"Account/{account_id} is not known")
        check_password(new_password, context=(account.login,))  # refused before charging
        if not self._password_proven(
            account,
            lambda: self.hasher.verify(account.password_hash, normalize_password(current_password)),
            "password-change",
            client_ip,
            now,
        ):
            raise AuthenticationFailed("invalid password")
        new_hash = self.hasher.hash(normalize_password(new_password))
        with self.units() as uow:
            uow.accounts.set_password_hash(account.id, new_hash)
            self._clear_throttle(uow.accounts, account.id)
            self._append(
                uow,
                authentication_record(
                    account, "password-change", ACTION_UPDATE, _SUCCESS, now, client_ip
                ),
            )
            notify_holder(uow, account, "password-changed", now)
            uow.commit()

    # --- notifications ----------------------------------------------------------------------

    def notifications(self, account_id: str) -> list[Notification]:
        """What the account holder is to be told, oldest first."""
        with self.units() as uow:
            return uow.accounts.notifications_of(account_id)

    # --- audit ------------------------------------------------------------------------------

    def _password_proven(
        self,
        account: AccountRecord,
        check: Callable[[], bool],
        interaction: str,
        client_ip: str | None,
        now: datetime,
    ) -> bool:
        """A password typed again (``check``: its slow hash), under the account's throttle as
        at sign-in: the attempt is charged first, in a transaction of its own, so that the hash
        runs holding no lock and no connection and attempts made at once are each counted;
        refused (recorded) while the throttle waits; a wrong one recorded as
        ``wrong-password``. True when it passed: the caller clears the throttle
        (`_clear_throttle`) with what it records of the success."""
        key = account_key(account.id)
        with self.units() as uow:
            store = uow.accounts
            before = store.lock_throttle_states([key])[key]
            wait = self.account_throttle.retry_after(before, now)
            if wait:
                self._refuse_throttled(
                    uow, account, interaction, ACTION_UPDATE, wait, now, client_ip
                )
            charged = self.account_throttle.fail(before, now)
            store.save_throttle_state(key, charged)
            uow.commit()
        if check():
            return True
        with self.units() as uow:
            self._record_failure(
                uow,
                uow.accounts,
                account,
                interaction,
                "wrong-password",
                before,
                charged,
                client_ip,
                now,
            )
            uow.commit()
        return False

    def _clear_throttle(self, store: AccountStore, account_id: str) -> None:
        """A proven holder clears the account's throttle (its row locked, as every change)."""
        key = account_key(account_id)
        store.lock_throttle_states([key])
        store.save_throttle_state(key, self.account_throttle.succeed())

    def _holder_knows(
        self,
        uow: UnitOfWork,
        account: AccountRecord,
        interaction: str,
        failure: str,
        check: Callable[[], bool],
        client_ip: str | None,
        now: datetime,
    ) -> bool:
        """One quick ``check`` of what only the holder of the account knows (a first TOTP code,
        whose step is spent in ``uow``), under the account's throttle like a sign-in, its row
        locked meanwhile: refused while the throttle waits; a wrong answer charged to it,
        recorded as ``failure`` and committed. True when it passed: the caller records its
        success and commits. A slow check (a password's hash) is charged first instead
        (`_password_proven`), holding no lock."""
        store = uow.accounts
        key = account_key(account.id)
        before = store.lock_throttle_states([key])[key]
        wait = self.account_throttle.retry_after(before, now)
        if wait:
            self._refuse_throttled(uow, account, interaction, ACTION_UPDATE, wait, now, client_ip)
        if check():
            return True
        charged = self.account_throttle.fail(before, now)
        store.save_throttle_state(key, charged)
        self._record_failure(
            uow, store, account, interaction, failure, before, charged, client_ip, now
        )
        uow.commit()
        return False

    def _refuse_throttled(
        self,
        uow: UnitOfWork,
        account: AccountRecord | None,
        interaction: str,
        action: str,
        wait: int,
        now: datetime,
        client_ip: str | None,
    ) -> NoReturn:
        """Record a refusal of a throttled account or address, commit it, and refuse."""
        self._append(
            uow,
            authentication_record(
                account, interaction, action, _FAILURE, now, client_ip, reason="throttled"
            ),
        )
        uow.commit()
        raise Throttled(THROTTLED, retry_after=wait)

    def _record_failure(
        self,
        uow: UnitOfWork,
        store: AccountStore,
        account: AccountRecord | None,
        interaction: str,
        reason: str,
        before: ThrottleState,
        charged: ThrottleState,
        client_ip: str | None,
        now: datetime,
    ) -> None:
        """Record a refused attempt and, if it locked the account, the lock and a notice."""
        action = ACTION_EXECUTE if interaction == "login" else ACTION_UPDATE
        events = [
            authentication_record(
                account, interaction, action, _FAILURE, now, client_ip, reason=reason
            )
        ]
        if self.account_throttle.newly_locked(before, charged):
            until = charged.next_allowed_at
            detail = {"failures": str(charged.failures)}
            if until is not None:
                detail["until"] = rfc3339_ms(until)
            events.append(
                authentication_record(
                    account, "lockout", ACTION_EXECUTE, _SERIOUS, now, client_ip, detail=detail
                )
            )
            if account is not None:
                log.warning("account %s locked after %d failures", account.id, charged.failures)
                store.add_notification(
                    Notification(
                        id=_new_id(),
                        account_id=account.id,
                        patient_id=account.patient_id,
                        kind="account-locked",
                        created_at=now,
                        payload={
                            "failures": charged.failures,
                            "locked_at": rfc3339_ms(now),
                            "until": rfc3339_ms(until) if until else None,
                        },
                    )
                )
        self._append(uow, *events)

    def _append(self, uow: UnitOfWork, *records: AuditRecord) -> None:
        self.audit.append_with(uow.audit, records)
