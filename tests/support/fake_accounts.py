"""In-memory stores for the services of accounts and of access tokens (services/accounts.py,
services/tokens.py, services/token_endpoint.py), used by `support.fake_uow.FakeUnitOfWork`.

* `FakeAccountStore` (``uow.accounts``): accounts, recovery codes, mandates, the throttles'
  states and the account holders' notifications. A patient's national identifier is a column of
  the patient index in the real store; here the test says which patient holds it
  (`FakeAccountStore.national_ids`).
* `FakePkiStore` (``uow.pki``): the platform's two authorities and the certificates they
  issued, enough for `services.pki` to issue, check and revoke client certificates and to
  sign its CRL (checked against the real store in
  tests/integration/test_store_contracts_passkeys.py).
* `FakeOAuthStore` (``uow.oauth``): client assertion ids already used and issued access
  tokens; a token's certificate revocation is read from ``uow.pki``, as the real store's join
  reads it.

What these services read of the directory besides (practitioners by id, their roles, patients'
merge state) is in `support.fake_professionals`.

Each answers as its real store does: tests/integration/test_store_contracts_accounts.py runs
the same checks on both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from carevault.adapters.storage.account_store import AccountRecord, Notification
from carevault.adapters.storage.oauth_store import IssuedToken
from carevault.adapters.storage.pki_store import CertificateRecord, StoredAuthority
from carevault.domain.accounts import Mandate, ThrottleState, check_account


@dataclass
class _RecoveryCode:
    code_hash: bytes
    used_at: datetime | None = None


class FakeAccountStore:
    """`AccountStore`, in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, AccountRecord] = {}
        self.recovery_codes: dict[str, list[_RecoveryCode]] = {}
        self.mandates: dict[str, Mandate] = {}
        self.throttles: dict[str, ThrottleState] = {}
        self.notifications: list[Notification] = []
        self.national_ids: dict[str, str] = {}  # national identifier -> patient id

    # --- accounts -------------------------------------------------------------------------

    def add(self, account: AccountRecord) -> None:
        check_account(account.kind, patient_id=account.patient_id, roles=account.roles,
                      has_second_factor=bool(account.totp_secret))
        if account.id in self.rows or self.by_login(account.login) is not None or (
                account.patient_id is not None and self.by_patient(account.patient_id)):
            raise KeyError("an account, its login and its patient are stored once")
        self.rows[account.id] = account

    def by_id(self, account_id: str) -> AccountRecord | None:
        return self.rows.get(account_id)

    def by_login(self, login: str) -> AccountRecord | None:
        return next((a for a in self.rows.values() if a.login == login), None)

    def by_patient(self, patient_id: str) -> AccountRecord | None:
        return next((a for a in self.rows.values() if a.patient_id == patient_id), None)

    def login_taken(self, login: str) -> bool:
        return self.by_login(login) is not None

    def accept_totp_step(self, account_id: str, step: int) -> bool:
        found = self.rows.get(account_id)
        if found is None or (found.totp_last_step is not None and found.totp_last_step >= step):
            return False
        self.rows[account_id] = replace(found, totp_last_step=step)
        return True

    def set_password_hash(self, account_id: str, password_hash: str) -> None:
        if account_id in self.rows:
            self.rows[account_id] = replace(self.rows[account_id], password_hash=password_hash)

    def patient_id_by_national_id(self, national_id: str) -> str | None:
        return self.national_ids.get(national_id)

    # --- recovery codes -------------------------------------------------------------------

    def add_recovery_codes(self, account_id: str, code_hashes: Iterable[bytes]) -> None:
        codes = self.recovery_codes.setdefault(account_id, [])
        for code_hash in code_hashes:
            if any(c.code_hash == code_hash for c in codes):
                raise KeyError("a recovery code is stored once")
            codes.append(_RecoveryCode(bytes(code_hash)))

    def unused_recovery_codes(self, account_id: str) -> list[bytes]:
        return [c.code_hash for c in self.recovery_codes.get(account_id, []) if c.used_at is None]

    def use_recovery_code(self, account_id: str, code_hash: bytes, at: datetime) -> bool:
        for code in self.recovery_codes.get(account_id, []):
            if code.code_hash == code_hash and code.used_at is None:
                code.used_at = at
                return True
        return False

    # --- mandates -------------------------------------------------------------------------

    def add_mandate(self, mandate: Mandate, created_at: datetime) -> None:
        if mandate.id in self.mandates:
            raise KeyError("a mandate is stored once")
        self.mandates[mandate.id] = mandate

    def mandates_of(self, representative_account_id: str) -> list[Mandate]:
        found = [m for m in self.mandates.values()
                 if m.representative_account_id == representative_account_id]
        return sorted(found, key=lambda m: (m.starts_at, m.id))

    # --- throttling -----------------------------------------------------------------------

    def lock_throttle_states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        for key in keys:
            self.throttles.setdefault(key, ThrottleState())
        return {key: self.throttles[key] for key in sorted(set(keys))}

    def save_throttle_state(self, key: str, state: ThrottleState) -> None:
        if key in self.throttles:  # the real UPDATE changes no row that is not there
            self.throttles[key] = state

    # --- notifications --------------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        if any(n.id == notification.id for n in self.notifications):
            raise KeyError("a notification is stored once")
        # Stored as JSON text, read back as JSON: what the real store gives back.
        payload = json.loads(json.dumps(notification.payload, sort_keys=True))
        self.notifications.append(replace(notification, payload=payload))

    def notifications_of(self, account_id: str) -> list[Notification]:
        found = [n for n in self.notifications if n.account_id == account_id]
        return sorted(found, key=lambda n: (n.created_at, n.id))


class FakePkiStore:
    """`PkiStore`, in memory: what issuing, checking and revoking a certificate use."""

    def __init__(self) -> None:
        self.stored_authorities: dict[str, StoredAuthority] = {}
        self.certificates: dict[str, CertificateRecord] = {}

    def authorities(self) -> dict[str, StoredAuthority]:
        return dict(self.stored_authorities)

    def add_authorities(self, authorities: list[StoredAuthority]) -> bool:
        if any(a.name in self.stored_authorities for a in authorities):
            return False
        self.stored_authorities.update({a.name: a for a in authorities})
        return True

    def add_certificate(self, record: CertificateRecord) -> None:
        if record.serial in self.certificates:
            raise KeyError("a certificate is stored once")
        self.certificates[record.serial] = record

    def certificate(self, serial: str) -> CertificateRecord | None:
        return self.certificates.get(serial)

    def certificates_of(self, client_id: str) -> list[CertificateRecord]:
        found = [c for c in self.certificates.values() if c.client_id == client_id]
        return sorted(found, key=lambda c: (c.not_before, c.serial))

    def revoke(self, serial: str, at: datetime, reason: str) -> bool:
        found = self.certificates.get(serial)
        if found is None or found.revoked_at is not None:
            return False
        self.certificates[serial] = replace(found, revoked_at=at, revocation_reason=reason)
        return True

    def revoked_unexpired(self, now: datetime) -> list[CertificateRecord]:
        """What a CRL lists: the revoked certificates not expired at ``now``, by revocation
        time, then serial."""
        found = [c for c in self.certificates.values()
                 if c.revoked_at is not None and c.not_after > now]
        return sorted(found, key=lambda c: (c.revoked_at or now, c.serial))


@dataclass(frozen=True)
class _Token:
    jti: str
    client_id: str
    certificate_serial: str | None
    subject: str
    scope: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


class FakeOAuthStore:
    """`OAuthStore`, in memory. ``certificates`` reads a certificate of the same unit of work
    (its revocation shows on the tokens issued under it, as the real store's join shows it)."""

    def __init__(self, certificates: Callable[[str], CertificateRecord | None]) -> None:
        self._certificates = certificates
        self.assertions: dict[tuple[str, str], datetime] = {}
        self.tokens: dict[str, _Token] = {}

    def use_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        if (client_id, jti) in self.assertions:
            return False
        self.assertions[(client_id, jti)] = expires_at
        return True

    def save_token(self, token: IssuedToken) -> None:
        if token.jti in self.tokens:
            raise KeyError("a token is stored once")
        # What the real INSERT writes: never a revocation, of the token or of its certificate.
        self.tokens[token.jti] = _Token(token.jti, token.client_id, token.certificate_serial,
                                        token.subject, token.scope, token.issued_at,
                                        token.expires_at)

    def token(self, jti: str) -> IssuedToken | None:
        found = self.tokens.get(jti)
        if found is None:
            return None
        certificate = (None if found.certificate_serial is None
                       else self._certificates(found.certificate_serial))
        return IssuedToken(found.jti, found.client_id, found.certificate_serial, found.subject,
                           found.scope, found.issued_at, found.expires_at, found.revoked_at,
                           None if certificate is None else certificate.revoked_at)

    def revoke(self, jti: str, at: datetime) -> bool:
        found = self.tokens.get(jti)
        if found is None or found.revoked_at is not None:
            return False
        self.tokens[jti] = replace(found, revoked_at=at)
        return True

    def revoke_subject(self, subject: str, at: datetime) -> int:
        alive = [t for t in self.tokens.values()
                 if t.subject == subject and t.revoked_at is None and t.expires_at > at]
        for token in alive:
            self.tokens[token.jti] = replace(token, revoked_at=at)
        return len(alive)
