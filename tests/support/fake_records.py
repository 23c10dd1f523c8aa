"""The patient's record policy in memory: the part of `RecordStore` (``uow.records``), of
`AccountStore` (``uow.accounts``: representatives' accounts and mandates) and of the directory
that `carevault.services.record_policy` reads and writes.

In the database these stores share tables: the facts `RecordStore.load` returns join the
``patient`` table (only a live patient has a record) and the ``mandate`` table `AccountStore`
writes (a mandate is a representative of the record). Here the record store holds the same
objects as the directory (its patients) and the account store (its mandates), and
`FakeRecordUnitOfWork` snapshots all its stores in one copy, so that a rollback keeps them
shared. `tests/integration/test_store_contracts_records.py` runs the same checks on these fakes
and on the real stores, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from carevault.adapters.storage.account_store import AccountRecord
from carevault.adapters.storage.directory_store import Stored
from carevault.adapters.storage.record_store import UNSET, StoredBlock, StoredGrant, Unset
from carevault.domain.accounts import Mandate, check_account
from carevault.domain.authorization import (
    Block,
    Confidentiality,
    Delegation,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    RecordFacts,
    RecordModel,
    RecordState,
    Representative,
)
from carevault.domain.records import PartyDelegation, PartyEmergency, PartyGrant
from support.fake_uow import FakeDirectory, FakeRecords, FakeUnitOfWork


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class _Settings:
    """A ``record`` row: the settings the patient chose, and when they last changed."""

    state: RecordState
    referring_physician_id: str | None
    emergency_setting: EmergencySetting
    delegation_allowed: bool
    default_confidentiality: Confidentiality
    updated_at: datetime


@dataclass
class _Emergency:
    patient_id: str
    window: EmergencyWindow
    reason: str
    starts_at: datetime
    closed_at: datetime | None = None


@dataclass
class _MandateRow:
    """A ``mandate`` row, unchecked: `Mandate` checks its values when the account store reads
    it back, as the real one does."""

    id: str
    representative_account_id: str
    patient_id: str
    scope: str
    starts_at: datetime
    ends_at: datetime | None

    def mandate(self) -> Mandate:
        return Mandate(self.id, self.representative_account_id, self.patient_id, self.scope,
                       self.starts_at, self.ends_at)


@dataclass
class _Delegation:
    patient_id: str
    delegation: Delegation
    created_at: datetime
    revoked_at: datetime | None = None


class FakeRecordStore(FakeRecords):
    """A record's settings, grants, blocks, delegations and emergency windows, and the
    patients' notifications (`FakeRecords`), answering as `RecordStore` does.

    ``patients`` is the directory's (a record exists only for a patient in it who is not
    ``"active": false``); ``mandates`` is the account store's, read as the record's
    representatives."""

    def __init__(
        self,
        model: RecordModel = RecordModel.OPT_OUT,
        *,
        patients: dict[str, dict[str, Any]] | None = None,
        mandates: dict[str, _MandateRow] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.patients = patients if patients is not None else {}
        self.mandates = mandates if mandates is not None else {}
        self.settings: dict[str, _Settings] = {}
        self.grant_rows: dict[str, tuple[str, StoredGrant]] = {}
        self.block_rows: dict[str, tuple[str, StoredBlock]] = {}
        self.delegations: dict[str, _Delegation] = {}
        self.emergencies: dict[str, _Emergency] = {}

    def _live(self, patient_id: str) -> bool:
        found = self.patients.get(patient_id)
        return found is not None and found.get("active", True) is not False

    # --- the facts ------------------------------------------------------------------------

    def load(self, patient_id: str, now: datetime) -> RecordFacts | None:
        if not self._live(patient_id):
            return None
        row = self.settings.get(patient_id)
        if row is None and self.model is RecordModel.OPT_IN:
            return None
        grants = sorted(
            (
                stored.grant
                for owner, stored in self.grant_rows.values()
                if owner == patient_id
                and stored.revoked_at is None
                and (stored.grant.end is None or stored.grant.end > now)
            ),
            key=lambda g: (g.start, g.id),
        )
        blocks = sorted(
            (
                stored.block
                for owner, stored in self.block_rows.values()
                if owner == patient_id and stored.revoked_at is None
            ),
            key=lambda b: b.id,
        )
        delegations = sorted(
            (
                d.delegation
                for d in self.delegations.values()
                if d.patient_id == patient_id and d.revoked_at is None and d.delegation.end > now
            ),
            key=lambda d: (d.start, d.id),
        )
        windows = sorted(
            (
                e.window
                for e in self.emergencies.values()
                if e.patient_id == patient_id and e.closed_at is None and e.window.until > now
            ),
            key=lambda w: w.id,
        )
        representatives = [
            Representative(m.representative_account_id, MandateScope(m.scope), m.starts_at,
                           m.ends_at, m.id)
            for m in sorted(self.mandates.values(), key=lambda m: (m.starts_at, m.id))
            if m.patient_id == patient_id and (m.ends_at is None or m.ends_at > now)
        ]
        settings: dict[str, Any] = {}
        if row is not None:
            settings = {
                "state": row.state,
                "referring_physician_id": row.referring_physician_id,
                "emergency_setting": row.emergency_setting,
                "delegation_allowed": row.delegation_allowed,
                "default_confidentiality": row.default_confidentiality,
            }
        return RecordFacts(
            patient_id=patient_id,
            model=self.model,
            grants=tuple(grants),
            blocks=tuple(blocks),
            emergency_windows=tuple(windows),
            representatives=tuple(representatives),
            delegations=tuple(delegations),
            **settings,
        )

    def unopened(self, patient_id: str, now: datetime) -> bool:
        return (
            self.model is RecordModel.OPT_IN
            and self._live(patient_id)
            and patient_id not in self.settings
        )

    # --- the record's settings ------------------------------------------------------------

    def ensure_record(self, patient_id: str, now: datetime) -> None:
        if patient_id not in self.settings:
            defaults = RecordFacts(patient_id=patient_id)
            self.settings[patient_id] = _Settings(
                defaults.state, None, defaults.emergency_setting, defaults.delegation_allowed,
                defaults.default_confidentiality, now)

    def update_record(
        self,
        patient_id: str,
        now: datetime,
        *,
        state: RecordState | None = None,
        referring_physician_id: str | Unset | None = UNSET,
        emergency_setting: EmergencySetting | None = None,
        delegation_allowed: bool | None = None,
        default_confidentiality: Confidentiality | None = None,
    ) -> None:
        self.ensure_record(patient_id, now)
        row = self.settings[patient_id]
        row.updated_at = now
        if state is not None:
            row.state = state
        if not isinstance(referring_physician_id, Unset):
            row.referring_physician_id = referring_physician_id
        if emergency_setting is not None:
            row.emergency_setting = emergency_setting
        if delegation_allowed is not None:
            row.delegation_allowed = delegation_allowed
        if default_confidentiality is not None:
            row.default_confidentiality = default_confidentiality

    # --- grants ---------------------------------------------------------------------------

    def add_grant(
        self, patient_id: str, grant: Grant, now: datetime, source_ref: str | None = None
    ) -> str:
        grant_id = grant.id or _new_id()
        if grant_id in self.grant_rows:
            raise KeyError("a grant is stored once")
        stored = StoredGrant(replace(grant, id=grant_id), now, source_ref=source_ref)
        self.grant_rows[grant_id] = (patient_id, stored)
        return grant_id

    def _active_grant(self, patient_id: str, grant_id: str) -> StoredGrant | None:
        owner, stored = self.grant_rows.get(grant_id, (None, None))
        if owner != patient_id or stored is None or stored.revoked_at is not None:
            return None
        return stored

    def revoke_grant(self, patient_id: str, grant_id: str, now: datetime, by: str) -> bool:
        stored = self._active_grant(patient_id, grant_id)
        if stored is None:
            return False
        self.grant_rows[grant_id] = (patient_id, replace(stored, revoked_at=now, revoked_by=by))
        return True

    def update_grant(
        self,
        patient_id: str,
        grant_id: str,
        *,
        level: GrantLevel | None = None,
        end: datetime | Unset | None = UNSET,
    ) -> bool:
        stored = self._active_grant(patient_id, grant_id)
        if stored is None:
            return False
        grant = stored.grant
        if level is not None:
            grant = replace(grant, level=level)
        if not isinstance(end, Unset):
            grant = replace(grant, end=end)
        self.grant_rows[grant_id] = (patient_id, replace(stored, grant=grant))
        return True

    def grant(self, patient_id: str, grant_id: str) -> StoredGrant | None:
        owner, stored = self.grant_rows.get(grant_id, (None, None))
        return stored if owner == patient_id else None

    def grants(self, patient_id: str, include_revoked: bool = False) -> list[StoredGrant]:
        found = [
            stored for owner, stored in self.grant_rows.values()
            if owner == patient_id and (include_revoked or stored.revoked_at is None)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.grant.id))

    # --- blocks ---------------------------------------------------------------------------

    def add_block(self, patient_id: str, block: Block, now: datetime, by: str) -> str:
        block_id = block.id or _new_id()
        if block_id in self.block_rows:
            raise KeyError("a block is stored once")
        self.block_rows[block_id] = (patient_id, StoredBlock(replace(block, id=block_id), by, now))
        return block_id

    def revoke_block(self, patient_id: str, block_id: str, now: datetime, by: str) -> bool:
        owner, stored = self.block_rows.get(block_id, (None, None))
        if owner != patient_id or stored is None or stored.revoked_at is not None:
            return False
        self.block_rows[block_id] = (patient_id, replace(stored, revoked_at=now, revoked_by=by))
        return True

    def blocks(self, patient_id: str, include_revoked: bool = False) -> list[StoredBlock]:
        found = [
            stored for owner, stored in self.block_rows.values()
            if owner == patient_id and (include_revoked or stored.revoked_at is None)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.block.id))

    # --- delegations and emergency windows ---------------------------------------------------

    def add_delegation(self, patient_id: str, delegation: Delegation, now: datetime) -> str:
        delegation_id = delegation.id or _new_id()
        if delegation_id in self.delegations:
            raise KeyError("a delegation is stored once")
        self.delegations[delegation_id] = _Delegation(
            patient_id, replace(delegation, id=delegation_id), now)
        return delegation_id

    def revoke_delegation(self, patient_id: str, delegation_id: str, now: datetime) -> bool:
        found = self.delegations.get(delegation_id)
        if found is None or found.patient_id != patient_id or found.revoked_at is not None:
            return False
        found.revoked_at = now
        return True

    def open_emergency(
        self, patient_id: str, window: EmergencyWindow, reason: str, now: datetime
    ) -> str:
        window_id = window.id or _new_id()
        if window_id in self.emergencies:
            raise KeyError("an emergency window is stored once")
        self.emergencies[window_id] = _Emergency(
            patient_id, replace(window, id=window_id), reason, now)
        return window_id

    def emergencies_declared(self, practitioner_id: str, since: datetime) -> int:
        return sum(1 for e in self.emergencies.values()
                   if e.window.practitioner_id == practitioner_id and e.starts_at >= since)

    # --- a professional's accesses across records ------------------------------------------

    def grants_to(self, parties: Any, now: datetime, limit: int) -> list[PartyGrant]:
        named = {(party, party_id) for party, party_id in parties}
        found = [
            PartyGrant(owner, stored.grant) for owner, stored in self.grant_rows.values()
            if (stored.grant.party, stored.grant.party_id) in named and stored.revoked_at is None
            and (stored.grant.end is None or stored.grant.end > now) and self._live(owner)
        ]
        found.sort(key=lambda f: (f.grant.end is None, f.grant.end or now, f.grant.id))
        return found[:limit]

    def delegations_of(self, practitioner_id: str, now: datetime,
                       limit: int) -> list[PartyDelegation]:
        found = [
            PartyDelegation(d.patient_id, d.delegation) for d in self.delegations.values()
            if practitioner_id in (d.delegation.delegator_id, d.delegation.delegate_id)
            and d.revoked_at is None and d.delegation.end > now and self._live(d.patient_id)
        ]
        found.sort(key=lambda f: (f.delegation.end, f.delegation.id))
        return found[:limit]

    def emergencies_of(self, practitioner_id: str, now: datetime,
                       limit: int) -> list[PartyEmergency]:
        found = [
            PartyEmergency(e.window.id, e.patient_id, e.window.practitioner_id, e.reason,
                           e.starts_at, e.window.until)
            for e in self.emergencies.values()
            if e.window.practitioner_id == practitioner_id and e.closed_at is None
            and e.window.until > now and self._live(e.patient_id)
        ]
        found.sort(key=lambda f: (f.end, f.id))
        return found[:limit]


@dataclass
class FakeAccountStore:
    """Accounts by id and login, and the representatives' mandates (shared with the record
    store, which reads them as the record's representatives), as `AccountStore` keeps them."""

    mandates: dict[str, _MandateRow] = field(default_factory=dict)
    accounts: dict[str, AccountRecord] = field(default_factory=dict)

    def add(self, account: AccountRecord) -> None:
        check_account(account.kind, patient_id=account.patient_id, roles=account.roles,
                      has_second_factor=bool(account.totp_secret))
        if account.id in self.accounts or self.by_login(account.login) is not None:
            raise KeyError("an account and its login are stored once")
        self.accounts[account.id] = account

    def by_id(self, account_id: str) -> AccountRecord | None:
        return self.accounts.get(account_id)

    def by_login(self, login: str) -> AccountRecord | None:
        return next((a for a in self.accounts.values() if a.login == login), None)

    def add_mandate(self, mandate: Mandate, created_at: datetime) -> None:
        if mandate.id in self.mandates:
            raise KeyError("a mandate is stored once")
        self.mandates[mandate.id] = _MandateRow(
            mandate.id, mandate.representative_account_id, mandate.patient_id, mandate.scope,
            mandate.starts_at, mandate.ends_at)

    def _in_force(self, patient_id: str, mandate_id: str, at: datetime) -> _MandateRow | None:
        found = self.mandates.get(mandate_id)
        if (found is None or found.patient_id != patient_id or found.starts_at > at
                or (found.ends_at is not None and found.ends_at <= at)):
            return None
        return found

    def end_mandate(self, patient_id: str, mandate_id: str, at: datetime) -> bool:
        found = self._in_force(patient_id, mandate_id, at)
        if found is None or found.starts_at == at:
            return False
        found.ends_at = at
        return True

    def limit_mandate(
        self, patient_id: str, mandate_id: str, scope: str, ends_at: datetime | None, at: datetime
    ) -> bool:
        found = self._in_force(patient_id, mandate_id, at)
        if found is None:
            return False
        found.scope, found.ends_at = scope, ends_at
        return True

    def mandates_for(self, patient_id: str) -> list[Mandate]:
        found = sorted((m for m in self.mandates.values() if m.patient_id == patient_id),
                       key=lambda m: (m.starts_at, m.id))
        return [m.mandate() for m in found]


class FakeRecordDirectory(FakeDirectory):
    """`FakeDirectory`, which also reads practitioners by id (those `add_practitioner` named),
    as the grants, blocks and the referring physician check that their party exists."""

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        if resource_type != "Practitioner":
            return super().read(resource_type, resource_id)
        if resource_id not in self.practitioners.values():
            return None
        return Stored(resource_id, 1, {"resourceType": "Practitioner", "id": resource_id})


class FakeRecordUnitOfWork(FakeUnitOfWork):
    """`FakeUnitOfWork` with the record policy's stores: `FakeRecordStore` as ``records``,
    `FakeAccountStore` as ``accounts`` and `FakeRecordDirectory` as ``directory``. Its stores are
    copied together (at commit, and back at rollback), so that the record store still reads the
    directory's patients and the account store's mandates after a rollback."""

    directory: FakeRecordDirectory
    records: FakeRecordStore
    accounts: FakeAccountStore

    def __init__(self, model: RecordModel = RecordModel.OPT_OUT) -> None:
        super().__init__()
        self.accounts = FakeAccountStore()  # the representatives' accounts and mandates
        self.directory = FakeRecordDirectory()
        self.records = FakeRecordStore(
            model, patients=self.directory.patients, mandates=self.accounts.mandates)
        self._committed = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({name: getattr(self, name) for name in self._STORES})

    def rollback(self) -> None:
        for name, store in copy.deepcopy(self._committed).items():
            setattr(self, name, store)
