"""SQL storage of the registered directory authorities and the patients' presence codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from carevault.adapters.storage import schema as t
from carevault.domain.authorization import Authority


@dataclass(frozen=True)
class RegisteredAuthority:
    """An organization registered by an operator as an authority of one kind."""

    id: str
    organization_id: str
    kind: Authority
    assigning_authority: str | None  # an identity source's identifier system
    created_at: datetime
    created_by: str
    ended_at: datetime | None = None
    ended_by: str | None = None


_table = t.directory_authority
# Read on a directory write or a care event by a system: built once, bound at each execution.
_ACTIVE_OF: Final = select(_table).where(
    _table.c.organization_id == bindparam("organization_id"), _table.c.ended_at.is_(None)
)


def _authority(row: Row[tuple[object, ...]]) -> RegisteredAuthority:
    m = row._mapping
    return RegisteredAuthority(
        id=m["id"],
        organization_id=m["organization_id"],
        kind=Authority(m["kind"]),
        assigning_authority=m["assigning_authority"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        ended_at=m["ended_at"],
        ended_by=m["ended_by"],
    )


class AuthorityStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, authority: RegisteredAuthority) -> None:
        self.connection.execute(
            insert(_table).values(
                id=authority.id,
                organization_id=authority.organization_id,
                kind=authority.kind.value,
                assigning_authority=authority.assigning_authority,
                created_at=authority.created_at,
                created_by=authority.created_by,
            )
        )

    def end(self, authority_id: str, by: str, now: datetime) -> bool:
        """End an active registration; False if there is none by that id."""
        changed = self.connection.execute(
            update(_table)
            .where(_table.c.id == authority_id, _table.c.ended_at.is_(None))
            .values(ended_at=now, ended_by=by)
        ).rowcount
        return bool(changed)

    def active_of(self, organization_id: str) -> list[RegisteredAuthority]:
        rows = self.connection.execute(_ACTIVE_OF, {"organization_id": organization_id})
        return [_authority(row) for row in rows]

    def listing(self, *, include_ended: bool = False) -> list[RegisteredAuthority]:
        query = select(_table).order_by(_table.c.created_at, _table.c.id)
        if not include_ended:
            query = query.where(_table.c.ended_at.is_(None))
        return [_authority(row) for row in self.connection.execute(query)]


class PresenceCodeStore:
    """Presence codes, by their SHA-256 only: usable once, before they expire, for their
    patient alone."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(
        self, code_hash: str, patient_id: str, created_by: str, now: datetime, expires: datetime
    ) -> None:
        self.connection.execute(
            insert(t.presence_code).values(
                code_hash=code_hash,
                patient_id=patient_id,
                created_by=created_by,
                created_at=now,
                expires_at=expires,
            )
        )

    def usable(self, code_hash: str, patient_id: str, now: datetime) -> bool:
        table = t.presence_code
        row = self.connection.execute(
            select(table.c.code_hash).where(
                table.c.code_hash == code_hash,
                table.c.patient_id == patient_id,
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
        ).first()
        return row is not None

    def use(self, code_hash: str, patient_id: str, by: str, now: datetime) -> bool:
        """Spend the code, in one conditional statement: of two requests racing with the same
        code, exactly one gets True."""
        table = t.presence_code
        changed = self.connection.execute(
            update(table)
            .where(
                table.c.code_hash == code_hash,
                table.c.patient_id == patient_id,
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now, used_by=by)
        ).rowcount
        return bool(changed)
