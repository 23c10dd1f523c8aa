"""SQL storage of the passkeys (the professionals', bound to their card; the patients' and
representatives', a second factor of their account) and of the ceremonies' single-use
challenges.

A challenge is kept as its SHA-256 only, and is taken at most once: `take_challenge` marks it
used in the same statement that finds it, so two requests racing with one challenge cannot
both succeed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from carevault.adapters.storage import schema as t


@dataclass(frozen=True)
class StoredChallenge:
    challenge_hash: str
    purpose: str  # card | enrolment | register | signin | account-register | account-signin
    practitioner_id: str | None
    certificate_serial: str | None
    expires_at: datetime
    used_at: datetime | None = None
    account_id: str | None = None  # a patient's ceremony: the account it was opened for


@dataclass(frozen=True)
class StoredPasskey:
    credential_id: str  # base64url
    practitioner_id: str
    certificate_serial: str  # the card certificate it was enrolled with
    public_key: bytes  # COSE
    sign_count: int
    created_at: datetime
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class AccountPasskey:
    credential_id: str  # base64url
    account_id: str
    public_key: bytes  # COSE
    sign_count: int
    created_at: datetime
    last_used_at: datetime | None = None


class PasskeyStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # --- challenges -------------------------------------------------------------------------

    def add_challenge(self, challenge: StoredChallenge) -> None:
        """Store a challenge, and forget those that expired (they can only ever be refused)."""
        challenges = t.workspace_challenge
        # Challenges live minutes; those that ended an hour before this one's end are gone.
        floor = challenge.expires_at - timedelta(hours=1)
        self.connection.execute(delete(challenges).where(challenges.c.expires_at <= floor))
        self.connection.execute(
            insert(challenges).values(
                challenge_hash=challenge.challenge_hash,
                purpose=challenge.purpose,
                practitioner_id=challenge.practitioner_id,
                certificate_serial=challenge.certificate_serial,
                expires_at=challenge.expires_at,
                account_id=challenge.account_id,
            )
        )

    def take_challenge(
        self, challenge_hash: str, purpose: str, now: datetime
    ) -> StoredChallenge | None:
        """The unused, unexpired challenge of this purpose, now used; None otherwise."""
        table = t.workspace_challenge
        taken = self.connection.execute(
            update(table)
            .where(
                table.c.challenge_hash == challenge_hash,
                table.c.purpose == purpose,
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now)
        )
        if taken.rowcount != 1:
            return None
        row = self.connection.execute(
            select(table).where(table.c.challenge_hash == challenge_hash)
        ).one()
        return StoredChallenge(
            row.challenge_hash,
            row.purpose,
            row.practitioner_id,
            row.certificate_serial,
            row.expires_at,
            row.used_at,
            row.account_id,
        )

    # --- passkeys ---------------------------------------------------------------------------

    def add(self, passkey: StoredPasskey) -> None:
        self.connection.execute(
            insert(t.passkey).values(
                credential_id=passkey.credential_id,
                practitioner_id=passkey.practitioner_id,
                certificate_serial=passkey.certificate_serial,
                public_key=passkey.public_key,
                sign_count=passkey.sign_count,
                created_at=passkey.created_at,
            )
        )

    def get(self, credential_id: str) -> StoredPasskey | None:
        table = t.passkey
        row = self.connection.execute(
            select(table).where(table.c.credential_id == credential_id)
        ).first()
        return None if row is None else _passkey(row)

    def of_practitioner(self, practitioner_id: str) -> list[StoredPasskey]:
        table = t.passkey
        rows = self.connection.execute(
            select(table)
            .where(table.c.practitioner_id == practitioner_id)
            .order_by(table.c.created_at)
        )
        return [_passkey(row) for row in rows]

    def used(self, credential_id: str, sign_count: int, at: datetime) -> None:
        table = t.passkey
        self.connection.execute(
            update(table)
            .where(table.c.credential_id == credential_id)
            .values(sign_count=sign_count, last_used_at=at)
        )

    # --- the accounts' passkeys (a second factor) ---------------------------------------

    def add_for_account(self, passkey: AccountPasskey) -> None:
        self.connection.execute(
            insert(t.account_passkey).values(
                credential_id=passkey.credential_id,
                account_id=passkey.account_id,
                public_key=passkey.public_key,
                sign_count=passkey.sign_count,
                created_at=passkey.created_at,
            )
        )

    def account_passkey(self, credential_id: str) -> AccountPasskey | None:
        table = t.account_passkey
        row = self.connection.execute(
            select(table).where(table.c.credential_id == credential_id)
        ).first()
        return None if row is None else _account_passkey(row)

    def of_account(self, account_id: str) -> list[AccountPasskey]:
        table = t.account_passkey
        rows = self.connection.execute(
            select(table).where(table.c.account_id == account_id).order_by(table.c.created_at)
        )
        return [_account_passkey(row) for row in rows]

    def account_passkey_used(
        self, credential_id: str, old_count: int, new_count: int, at: datetime
    ) -> bool:
        """Record a sign-in with the passkey; False if another sign-in moved its counter
        first (the same assertion replayed in a race): the caller refuses."""
        table = t.account_passkey
        changed = self.connection.execute(
            update(table)
            .where(table.c.credential_id == credential_id, table.c.sign_count == old_count)
            .values(sign_count=new_count, last_used_at=at)
        ).rowcount
        return changed == 1

    def remove_account_passkey(self, account_id: str, credential_id: str) -> bool:
        keys = t.account_passkey
        removed = self.connection.execute(
            delete(keys).where(
                keys.c.account_id == account_id, keys.c.credential_id == credential_id
            )
        ).rowcount
        return removed == 1


def _account_passkey(row: Row[Any]) -> AccountPasskey:
    return AccountPasskey(
        row.credential_id,
        row.account_id,
        bytes(row.public_key),
        int(row.sign_count),
        row.created_at,
        row.last_used_at,
    )


def _passkey(row: Row[Any]) -> StoredPasskey:
    return StoredPasskey(
        row.credential_id,
        row.practitioner_id,
        row.certificate_serial,
        bytes(row.public_key),
        int(row.sign_count),
        row.created_at,
        row.last_used_at,
    )
