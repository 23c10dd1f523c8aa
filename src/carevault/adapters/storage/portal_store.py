"""SQL storage of the portal's sessions and the patients' enrolment invitations.

Both keep only hashes of what they were handed (a cookie, an activation code): the services
hash, the stores compare."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from carevault.adapters.storage import schema as t


@dataclass(frozen=True)
class StoredSession:
    token_hash: str
    account_id: str
    kind: str  # patient | representative | operator | security-officer
    patient_id: str | None
    csrf: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    certificate_serial: str | None = None  # a professional's: the card it stands on
    acting_for: str | None = None  # an assistant's: the mandating practitioner chosen


@dataclass(frozen=True)
class StoredInvitation:
    code_hash: str
    patient_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class SessionStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, session: StoredSession) -> None:
        self.connection.execute(
            insert(t.portal_session).values(
                token_hash=session.token_hash,
                account_id=session.account_id,
                kind=session.kind,
                patient_id=session.patient_id,
                csrf=session.csrf,
                created_at=session.created_at,
                expires_at=session.expires_at,
                certificate_serial=session.certificate_serial,
            )
        )

    def get(self, token_hash: str) -> StoredSession | None:
        table = t.portal_session
        row = self.connection.execute(select(table).where(table.c.token_hash == token_hash)).first()
        if row is None:
            return None
        return StoredSession(
            row.token_hash,
            row.account_id,
            row.kind,
            row.patient_id,
            row.csrf,
            row.created_at,
            row.expires_at,
            row.ended_at,
            row.certificate_serial,
            row.acting_for,
        )

    def extend(self, token_hash: str, expires_at: datetime) -> None:
        table = t.portal_session
        self.connection.execute(
            update(table).where(table.c.token_hash == token_hash).values(expires_at=expires_at)
        )

    def act_for(self, token_hash: str, patient_id: str) -> None:
        """A representative's session now acts on ``patient_id`` (other kinds are left as they
        are)."""
        table = t.portal_session
        self.connection.execute(
            update(table)
            .where(table.c.token_hash == token_hash, table.c.kind == "representative")
            .values(patient_id=patient_id)
        )

    def act_for_practitioner(self, token_hash: str, practitioner_id: str | None) -> None:
        """A professional's session now acts for ``practitioner_id`` (an assistant under that
        practitioner's mandate, checked by the caller), or for nobody but themselves."""
        table = t.portal_session
        self.connection.execute(
            update(table)
            .where(table.c.token_hash == token_hash, table.c.kind == "practitioner")
            .values(acting_for=practitioner_id)
        )

    def end(self, token_hash: str, at: datetime) -> None:
        table = t.portal_session
        self.connection.execute(
            update(table)
            .where(table.c.token_hash == token_hash, table.c.ended_at.is_(None))
            .values(ended_at=at)
        )

    def end_all(self, account_id: str, at: datetime) -> int:
        """End every session of the account not ended yet; how many were ended."""
        table = t.portal_session
        result = self.connection.execute(
            update(table)
            .where(table.c.account_id == account_id, table.c.ended_at.is_(None))
            .values(ended_at=at)
        )
        return int(result.rowcount)


class InvitationStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, invitation: StoredInvitation) -> None:
        self.connection.execute(
            insert(t.enrolment_invitation).values(
                code_hash=invitation.code_hash,
                patient_id=invitation.patient_id,
                created_at=invitation.created_at,
                expires_at=invitation.expires_at,
            )
        )

    def get(self, code_hash: str) -> StoredInvitation | None:
        table = t.enrolment_invitation
        row = self.connection.execute(select(table).where(table.c.code_hash == code_hash)).first()
        if row is None:
            return None
        return StoredInvitation(
            row.code_hash, row.patient_id, row.created_at, row.expires_at, row.used_at
        )

    def use(self, code_hash: str, at: datetime) -> None:
        table = t.enrolment_invitation
        self.connection.execute(
            update(table)
            .where(table.c.code_hash == code_hash, table.c.used_at.is_(None))
            .values(used_at=at)
        )
