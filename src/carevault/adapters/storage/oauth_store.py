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

    def revoke(self, jti: str, at: datetime) -> bool:
        changed = self.connection.execute(
            update(t.oauth_token)
            .where(t.oauth_token.c.jti == jti, t.oauth_token.c.revoked_at.is_(None))
            .values(revoked_at=at)
        ).rowcount
        return bool(changed)
