"""SQL storage of OAuth state: client assertion ids already used, and issued access tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from carevault.adapters.storage import schema as t


@dataclass(frozen=True)
class IssuedToken:
    jti: str
    client_id: str
    certificate_serial: str | None
    subject: str
    scope: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    certificate_revoked_at: datetime | None


# Read on every request: built once, bound at each execution.
_TOKEN: Final = (
    select(t.oauth_token, t.pki_certificate.c.revoked_at.label("certificate_revoked_at"))
    .select_from(
        t.oauth_token.outerjoin(
            t.pki_certificate, t.pki_certificate.c.serial == t.oauth_token.c.certificate_serial
        )
    )
    .where(t.oauth_token.c.jti == bindparam("jti"))
)


class OAuthStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def use_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record an assertion id; False if this client already used it (a replay)."""
        try:
            with self.connection.begin_nested():
                self.connection.execute(
                    insert(t.oauth_assertion).values(
                        client_id=client_id, jti=jti, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    def save_token(self, token: IssuedToken) -> None:
        self.connection.execute(
            insert(t.oauth_token).values(
                jti=token.jti,
                client_id=token.client_id,
                certificate_serial=token.certificate_serial,
                subject=token.subject,
                scope=token.scope,
                issued_at=token.issued_at,
                expires_at=token.expires_at,
            )
        )

    def token(self, jti: str) -> IssuedToken | None:
        row = self.connection.execute(_TOKEN, {"jti": jti}).first()
        if row is None:
            return None
        return IssuedToken(
            row.jti,
            row.client_id,
            row.certificate_serial,
            row.subject,
            row.scope,
            row.issued_at,
            row.expires_at,
            row.revoked_at,
            row.certificate_revoked_at,
        )

    def revoke_subject(self, subject: str, at: datetime) -> int:
        """Revoke every token of ``subject`` still in force (an account's "sign out
        everywhere" reaches its apps too); how many."""
        token = t.oauth_token
        return int(
            self.connection.execute(
                update(token)
                .where(
                    token.c.subject == subject,
                    token.c.revoked_at.is_(None),
                    token.c.expires_at > at,
                )
                .values(revoked_at=at)
            ).rowcount
        )

    def revoke(self, jti: str, at: datetime) -> bool:
        changed = self.connection.execute(
            update(t.oauth_token)
            .where(t.oauth_token.c.jti == jti, t.oauth_token.c.revoked_at.is_(None))
            .values(revoked_at=at)
        ).rowcount
        return bool(changed)


@dataclass(frozen=True)
class AppClient:
    """A patient app (a public client) registered by an operator."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None = None
    # The scopes its registration allows (a ceiling: see `patient_apps.register_app`).
    scopes: str = ""


@dataclass(frozen=True)
class AuthorizationCode:
    """A code of the authorization-code flow, by its SHA-256; usable once, within its minute."""

    code_hash: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    account_id: str
    kind: str  # patient | representative (acting for patient_id) | operator | security-officer
    patient_id: str | None
    expires_at: datetime
    used_at: datetime | None = None


class AppStore:
    """The patient apps and their authorization codes."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add_client(self, client: AppClient) -> None:
        self.connection.execute(
            insert(t.oauth_client).values(
                client_id=client.client_id,
                name=client.name,
                redirect_uris=" ".join(client.redirect_uris),
                created_at=client.created_at,
                scopes=client.scopes,
            )
        )

    def client(self, client_id: str) -> AppClient | None:
        table = t.oauth_client
        row = self.connection.execute(select(table).where(table.c.client_id == client_id)).first()
        if row is None:
            return None
        return AppClient(
            row.client_id,
            row.name,
            tuple(row.redirect_uris.split()),
            row.created_at,
            row.disabled_at,
            row.scopes,
        )

    def set_scopes(self, client_id: str, scopes: str) -> bool:
        """Replace a registration's scopes; False when there is no such client."""
        table = t.oauth_client
        changed = self.connection.execute(
            update(table).where(table.c.client_id == client_id).values(scopes=scopes)
        ).rowcount
        return bool(changed)

    def add_code(self, code: AuthorizationCode) -> None:
        self.connection.execute(
            insert(t.oauth_code).values(
                code_hash=code.code_hash,
                client_id=code.client_id,
                redirect_uri=code.redirect_uri,
                code_challenge=code.code_challenge,
                scope=code.scope,
                account_id=code.account_id,
                patient_id=code.patient_id,
                kind=code.kind,
                expires_at=code.expires_at,
            )
        )

    def code(self, code_hash: str) -> AuthorizationCode | None:
        table = t.oauth_code
        row = self.connection.execute(select(table).where(table.c.code_hash == code_hash)).first()
        if row is None:
            return None
        return AuthorizationCode(
            row.code_hash,
            row.client_id,
            row.redirect_uri,
            row.code_challenge,
            row.scope,
            row.account_id,
            row.kind,
            row.patient_id,
            row.expires_at,
            row.used_at,
        )

    def use_code(self, code_hash: str, at: datetime) -> bool:
        """Spend the code in one conditional statement: of two racing exchanges, one wins."""
        table = t.oauth_code
        changed = self.connection.execute(
            update(table)
            .where(table.c.code_hash == code_hash, table.c.used_at.is_(None))
            .values(used_at=at)
        ).rowcount
        return bool(changed)

    def spend_codes_of(self, account_id: str, at: datetime) -> int:
        """Spend every code of ``account_id`` not yet exchanged: "sign out everywhere" must not
        leave an app a code it can still trade for a fresh token; how many."""
        table = t.oauth_code
        return int(
            self.connection.execute(
                update(table)
                .where(
                    table.c.account_id == account_id,
                    table.c.used_at.is_(None),
                    table.c.expires_at > at,
                )
                .values(used_at=at)
            ).rowcount
        )
