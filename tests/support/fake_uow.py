"""A unit of work in memory, for testing services without a database.

It lives with the tests, not in the package: nothing in production may ever be wired to it,
and the real stores keep their own suite on SQLite and PostgreSQL (tests/integration). Each fake
store answers as its real one does (`tests/integration/test_store_contracts.py` runs the same
checks on both), and the unit of work keeps its promise: leaving the block without `commit`
puts every store back as it was at the last commit.

Stores faked so far: `authorities` and `presence_codes` (services/authorities.py,
services/presence.py), `sessions` (services/portal_sessions.py), and the part of `directory`
those services read (organizations). A service that reaches for anything else fails loudly
with AttributeError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any

from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.adapters.storage.directory_store import Stored
from carevault.adapters.storage.portal_store import StoredSession


class FakeDirectory:
    """Organizations only: enough for registering authorities."""

    def __init__(self) -> None:
        self.organizations: dict[str, tuple[dict[str, Any], str | None]] = {}

    def add_organization(self, organization_id: str, patient_id_system: str | None = None) -> None:
        resource = {"resourceType": "Organization", "id": organization_id}
        self.organizations[organization_id] = (resource, patient_id_system)

    def read(self, table: Any, resource_id: str) -> Stored | None:
        if table.name != "organization":
            raise NotImplementedError(f"the fake directory holds no {table.name}")
        found = self.organizations.get(resource_id)
        return None if found is None else Stored(resource_id, 1, found[0])

    def organization_patient_id_system(self, organization_id: str) -> str | None:
        found = self.organizations.get(organization_id)
        return None if found is None else found[1]

    def assigning_authorities(self) -> set[str]:
        return {system for _, system in self.organizations.values() if system is not None}


class FakeAuthorityStore:
    def __init__(self) -> None:
        self.rows: dict[str, RegisteredAuthority] = {}

    def add(self, authority: RegisteredAuthority) -> None:
        if authority.id in self.rows:
            raise KeyError(f"authority {authority.id} exists")
        self.rows[authority.id] = authority

    def end(self, authority_id: str, by: str, now: datetime) -> bool:
        found = self.rows.get(authority_id)
        if found is None or found.ended_at is not None:
            return False
        self.rows[authority_id] = replace(found, ended_at=now, ended_by=by)
        return True

    def active_of(self, organization_id: str) -> list[RegisteredAuthority]:
        return [
            a for a in self.rows.values()
            if a.organization_id == organization_id and a.ended_at is None
        ]

    def listing(self, *, include_ended: bool = False) -> list[RegisteredAuthority]:
        found = [a for a in self.rows.values() if include_ended or a.ended_at is None]
        return sorted(found, key=lambda a: (a.created_at, a.id))


@dataclass
class _Code:
    patient_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str | None = None


@dataclass
class FakePresenceCodeStore:
    codes: dict[str, _Code] = field(default_factory=dict)

    def add(self, code_hash: str, patient_id: str, created_by: str, now: datetime,
            expires: datetime) -> None:
        if code_hash in self.codes:
            raise KeyError("a presence code is stored once")
        self.codes[code_hash] = _Code(patient_id, created_by, now, expires)

    def usable(self, code_hash: str, patient_id: str, now: datetime) -> bool:
        code = self.codes.get(code_hash)
        return (code is not None and code.patient_id == patient_id and code.used_at is None
                and code.expires_at > now)

    def use(self, code_hash: str, patient_id: str, by: str, now: datetime) -> bool:
        if not self.usable(code_hash, patient_id, now):
            return False
        code = self.codes[code_hash]
        code.used_at, code.used_by = now, by
        return True


class FakeSessionStore:
    def __init__(self) -> None:
        self.rows: dict[str, StoredSession] = {}

    def add(self, session: StoredSession) -> None:
        if session.token_hash in self.rows:
            raise KeyError("a session is stored once")
        self.rows[session.token_hash] = session

    def get(self, token_hash: str) -> StoredSession | None:
        return self.rows.get(token_hash)

    def extend(self, token_hash: str, expires_at: datetime) -> None:
        if token_hash in self.rows:
            self.rows[token_hash] = replace(self.rows[token_hash], expires_at=expires_at)

    def act_for(self, token_hash: str, patient_id: str) -> None:
        found = self.rows.get(token_hash)
        if found is not None and found.kind == "representative":
            self.rows[token_hash] = replace(found, patient_id=patient_id)

    def end(self, token_hash: str, at: datetime) -> None:
        found = self.rows.get(token_hash)
        if found is not None and found.ended_at is None:
            self.rows[token_hash] = replace(found, ended_at=at)


class FakeUnitOfWork:
    """Stands where `UnitOfWork` does; ``commits`` counts the commits, for the tests."""

    _STORES = ("directory", "authorities", "presence_codes", "sessions")

    def __init__(self) -> None:
        self.directory = FakeDirectory()
        self.authorities = FakeAuthorityStore()
        self.presence_codes = FakePresenceCodeStore()
        self.sessions = FakeSessionStore()
        self.commits = 0
        self._committed = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self._STORES}

    def __enter__(self) -> FakeUnitOfWork:
        self._committed = self._snapshot()
        return self

    def commit(self) -> None:
        self.commits += 1
        self._committed = self._snapshot()

    def rollback(self) -> None:
        for name, store in self._committed.items():
            setattr(self, name, copy.deepcopy(store))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.rollback()
