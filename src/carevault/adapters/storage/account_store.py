"""SQL storage of accounts, recovery codes, mandates, login throttling state and notifications.

Like the other stores it works inside the caller's transaction and never commits. Writes that
must not race (accepting a TOTP step, spending a recovery code) are conditional updates that
report whether they won, so two concurrent sign-ins with the same code cannot both succeed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.sql import insert_if_absent
from carevault.domain.accounts import AccountKind, Mandate, ThrottleState, check_account


@dataclass(frozen=True)
class AccountRecord:
    id: str
    kind: AccountKind
    login: str  # case-folded
    password_hash: str
    totp_secret: bytes  # sealed (`carevault.adapters.security.totp.TotpSecretBox`)
    totp_last_step: int | None
    patient_id: str | None
    roles: frozenset[str]
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def enrolled(self) -> bool:
        """True once a first TOTP code has confirmed the second factor."""
        return self.totp_last_step is not None

    def __repr__(self) -> str:  # keep hashes and sealed secrets out of logs and tracebacks
        return f"AccountRecord(id={self.id!r}, kind={self.kind.value!r})"


@dataclass(frozen=True)
class Notification:
    id: str
    account_id: str
    patient_id: str | None
    kind: str
    created_at: datetime
    payload: dict[str, Any]
    read_at: datetime | None = None


class AccountStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # --- accounts ---------------------------------------------------------------------------

    def add(self, account: AccountRecord) -> None:
        """Store a new account; refuses one that breaks the account rules (an operator without
        a second factor, roles on a patient, …)."""
        check_account(
            account.kind,
            patient_id=account.patient_id,
            roles=account.roles,
            has_second_factor=bool(account.totp_secret),
        )
        self.connection.execute(
            insert(t.account).values(
                id=account.id,
                kind=account.kind.value,
                login=account.login,
                password_hash=account.password_hash,
                totp_secret=account.totp_secret,
                totp_last_step=account.totp_last_step,
                patient_id=account.patient_id,
                roles=" ".join(sorted(account.roles)),
                created_at=account.created_at,
                disabled_at=account.disabled_at,
            )
        )

    def by_id(self, account_id: str) -> AccountRecord | None:
        row = self.connection.execute(select(t.account).where(t.account.c.id == account_id)).first()
        return None if row is None else _account(row._mapping)

    def by_login(self, login: str) -> AccountRecord | None:
        row = self.connection.execute(select(t.account).where(t.account.c.login == login)).first()
        return None if row is None else _account(row._mapping)

    def by_patient(self, patient_id: str) -> AccountRecord | None:
        row = self.connection.execute(
            select(t.account).where(t.account.c.patient_id == patient_id)
        ).first()
        return None if row is None else _account(row._mapping)

    def login_taken(self, login: str) -> bool:
        return (
            self.connection.execute(
                select(t.account.c.id).where(t.account.c.login == login)
            ).first()
            is not None
        )

    def accept_totp_step(self, account_id: str, step: int) -> bool:
        """Record ``step`` as the last accepted one, unless a step at or after it already was
        (a replay, or a concurrent sign-in that won); True if recorded."""
        a = t.account
        done = self.connection.execute(
            update(a)
            .where(a.c.id == account_id)
            .where((a.c.totp_last_step.is_(None)) | (a.c.totp_last_step < step))
            .values(totp_last_step=step)
        )
        return done.rowcount == 1

    def set_password_hash(self, account_id: str, password_hash: str) -> None:
        self.connection.execute(
            update(t.account)
            .where(t.account.c.id == account_id)
            .values(password_hash=password_hash)
        )

    def patient_id_by_national_id(self, national_id: str) -> str | None:
        row = self.connection.execute(
            select(t.patient.c.id).where(t.patient.c.national_id == national_id)
        ).first()
        return None if row is None else str(row.id)

    # --- recovery codes ---------------------------------------------------------------------

    def add_recovery_codes(self, account_id: str, code_hashes: Iterable[bytes]) -> None:
        rows = [{"account_id": account_id, "code_hash": h, "used_at": None} for h in code_hashes]
        if rows:
            self.connection.execute(insert(t.recovery_code), rows)

    def unused_recovery_codes(self, account_id: str) -> list[bytes]:
        r = t.recovery_code
        rows = self.connection.execute(
            select(r.c.code_hash).where(r.c.account_id == account_id, r.c.used_at.is_(None))
        )
        return [bytes(row.code_hash) for row in rows]

    def use_recovery_code(self, account_id: str, code_hash: bytes, at: datetime) -> bool:
        """Spend a code; False if it was spent meanwhile."""
        r = t.recovery_code
        done = self.connection.execute(
            update(r)
            .where(r.c.account_id == account_id, r.c.code_hash == code_hash, r.c.used_at.is_(None))
            .values(used_at=at)
        )
        return done.rowcount == 1

    # --- mandates ---------------------------------------------------------------------------

    def add_mandate(self, mandate: Mandate, created_at: datetime) -> None:
        self.connection.execute(
            insert(t.mandate).values(
                id=mandate.id,
                representative_account_id=mandate.representative_account_id,
                patient_id=mandate.patient_id,
                scope=mandate.scope,
                starts_at=mandate.starts_at,
                ends_at=mandate.ends_at,
                created_at=created_at,
            )
        )

    def end_mandate(self, patient_id: str, mandate_id: str, at: datetime) -> bool:
        """End a mandate in force now (its history stays); False if none matches. One that
        started at this very instant is not ended at it: the stored mandate would end when it
        starts, which no mandate may (`Mandate`), and every later reading would fail."""
        m = t.mandate
        done = self.connection.execute(
            update(m)
            .where(
                m.c.id == mandate_id,
                m.c.patient_id == patient_id,
                m.c.starts_at < at,
                (m.c.ends_at.is_(None)) | (m.c.ends_at > at),
            )
            .values(ends_at=at)
        )
        return done.rowcount == 1

    def limit_mandate(
        self, patient_id: str, mandate_id: str, scope: str, ends_at: datetime | None, at: datetime
    ) -> bool:
        """Change the scope and end of a mandate in force now; False if none matches."""
        m = t.mandate
        done = self.connection.execute(
            update(m)
            .where(
                m.c.id == mandate_id,
                m.c.patient_id == patient_id,
                m.c.starts_at <= at,
                (m.c.ends_at.is_(None)) | (m.c.ends_at > at),
            )
            .values(scope=scope, ends_at=ends_at)
        )
        return done.rowcount == 1

    def mandates_for(self, patient_id: str) -> list[Mandate]:
        """Every mandate on a patient's record, ended ones too (the patient sees their
        history), oldest first."""
        m = t.mandate
        rows = self.connection.execute(
            select(m).where(m.c.patient_id == patient_id).order_by(m.c.starts_at, m.c.id)
        )
        return [_mandate(row) for row in rows]

    def mandates_of(self, representative_account_id: str) -> list[Mandate]:
        m = t.mandate
        rows = self.connection.execute(
            select(m)
            .where(m.c.representative_account_id == representative_account_id)
            .order_by(m.c.starts_at, m.c.id)
        )
        return [
            Mandate(
                id=row.id,
                representative_account_id=row.representative_account_id,
                patient_id=row.patient_id,
                scope=row.scope,
                starts_at=row.starts_at,
                ends_at=row.ends_at,
            )
            for row in rows
        ]

    # --- throttling -------------------------------------------------------------------------

    def lock_throttle_states(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """The states of ``keys``, created if new and locked until the transaction ends, so
        that concurrent attempts on one key are counted one after the other. Keys are taken
        in sorted order, so two transactions cannot deadlock on them."""
        ordered = sorted(set(keys))
        for key in ordered:
            self.connection.execute(
                insert_if_absent(
                    self.connection, t.login_attempt_state, {"key": key, "failures": 0}
                )
            )
        s = t.login_attempt_state
        rows = self.connection.execute(
            select(s).where(s.c.key.in_(ordered)).order_by(s.c.key).with_for_update()
        )
        return {
            row.key: ThrottleState(row.failures, row.next_allowed_at, row.locked_at) for row in rows
        }

    def save_throttle_state(self, key: str, state: ThrottleState) -> None:
        s = t.login_attempt_state
        self.connection.execute(
            update(s)
            .where(s.c.key == key)
            .values(
                failures=state.failures,
                next_allowed_at=state.next_allowed_at,
                locked_at=state.locked_at,
            )
        )

    # --- notifications ----------------------------------------------------------------------

    def add_notification(self, notification: Notification) -> None:
        self.connection.execute(
            insert(t.notification).values(
                id=notification.id,
                patient_id=notification.patient_id,
                account_id=notification.account_id,
                kind=notification.kind,
                created_at=notification.created_at,
                payload=json.dumps(notification.payload, sort_keys=True, separators=(",", ":")),
                read_at=notification.read_at,
            )
        )

    def notifications_of(self, account_id: str) -> list[Notification]:
        n = t.notification
        rows = self.connection.execute(
            select(n).where(n.c.account_id == account_id).order_by(n.c.created_at, n.c.id)
        )
        return [
            Notification(
                id=row.id,
                account_id=row.account_id,
                patient_id=row.patient_id,
                kind=row.kind,
                created_at=row.created_at,
                payload=json.loads(row.payload),
                read_at=row.read_at,
            )
            for row in rows
        ]


def _account(values: RowMapping) -> AccountRecord:
    return AccountRecord(
        id=values["id"],
        kind=AccountKind(values["kind"]),
        login=values["login"],
        password_hash=values["password_hash"],
        totp_secret=bytes(values["totp_secret"]),
        totp_last_step=values["totp_last_step"],
        patient_id=values["patient_id"],
        roles=frozenset(values["roles"].split()),
        created_at=values["created_at"],
        disabled_at=values["disabled_at"],
    )


def _mandate(row: Any) -> Mandate:
    return Mandate(
        id=row.id,
        representative_account_id=row.representative_account_id,
        patient_id=row.patient_id,
        scope=row.scope,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
    )
