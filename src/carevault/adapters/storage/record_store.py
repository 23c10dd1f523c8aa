"""SQL storage of a patient's record policy: the facts the authorization engine decides on.

`RecordStore.load` reads everything `carevault.domain.authorization.decide` needs about one
record — the record's settings, grants, blocks, delegations, open emergency windows and the
representatives' mandates — in a single statement: one ``SELECT`` per table shaped into the
same generic columns and joined by ``UNION ALL``, so that a decision costs one round trip
whatever the number of facts. `filter_clause` turns the engine's `DocumentFilter` into a
``WHERE`` clause, so that a search counts and returns only what a single read would permit:
hidden results never leave the database.

Like the other stores it works inside the caller's transaction and never commits. Revocations
and closings mark rows and never delete them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Row,
    Select,
    String,
    and_,
    bindparam,
    exists,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.sql.type_api import TypeEngine

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.directory_store import dump
from carevault.adapters.storage.sql import insert_if_absent
from carevault.domain.authorization import (
    Block,
    Confidentiality,
    Delegation,
    DocumentFacts,
    DocumentFilter,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Party,
    RecordFacts,
    RecordModel,
    RecordState,
    Representative,
)
from carevault.domain.records import (
    PartyDelegation,
    PartyEmergency,
    PartyGrant,
    StoredBlock,
    StoredEncounter,
    StoredGrant,
)

__all__ = [
    "UNSET",
    "PatientNotification",
    "RecordStore",
    "StoredBlock",
    "StoredEncounter",
    "StoredGrant",
    "filter_clause",
]


class Unset(Enum):
    """Marks an argument left out, where ``None`` is a value (clearing an optional column)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True)
class PatientNotification:
    """What a patient is told; ``account_id`` is None for a patient who has no account yet."""

    id: str
    patient_id: str
    account_id: str | None
    kind: str
    created_at: datetime
    payload: dict[str, Any]
    read_at: datetime | None = None


def _new_id() -> str:
    return uuid.uuid4().hex


# --- the facts in one statement -----------------------------------------------------------------

# The generic columns every branch of the UNION ALL fills (NULL where a kind has nothing to say).
_SHAPE: Final[dict[str, TypeEngine[Any]]] = {
    "id": t.ID,
    "party": String(64),
    "party_id": t.ID,
    "label": String(255),
    "source": String(16),
    "level": String(16),
    "starts": t.UTCDateTime(),
    "ends": t.UTCDateTime(),
    "flag": Boolean(),
}


def _branch(kind: str, table: Any, **columns: ColumnElement[Any]) -> Select[Any]:
    """One table's rows in the common shape. The first branch decides how SQLAlchemy reads the
    result (timestamps, booleans on SQLite), so every column is typed, NULLs included."""
    shaped: list[ColumnElement[Any]] = [literal_column(f"'{kind}'", String(16)).label("kind")]
    for name, column_type in _SHAPE.items():
        value = columns.pop(name, None)
        shaped.append(type_coerce(value if value is not None else null(), column_type).label(name))
    assert not columns, f"unknown columns {sorted(columns)}"
    return select(*shaped).select_from(table)


def _facts_query() -> Any:
    """The statement, built once: ``:patient_id`` and ``:now`` are bound at each execution (the
    construction costs more than the execution of the cached compiled form)."""
    patient_id = bindparam("patient_id", type_=String)
    now = bindparam("now", type_=t.record_grant.c.ends_at.type)
    p, r = t.patient, t.record
    g, b, d = t.record_grant, t.record_block, t.record_delegation
    e, m = t.emergency_access, t.mandate
    # Only a live patient has a record: an inactive or merged entry yields no "record" row.
    head = _branch(
        "record",
        p.outerjoin(r, r.c.patient_id == p.c.id),
        id=p.c.id,
        party=r.c.state,
        party_id=r.c.referring_physician_id,
        label=r.c.emergency_setting,
        level=r.c.default_confidentiality,
        starts=r.c.updated_at,  # NULL: no row, every setting is its default
        flag=r.c.delegation_allowed,
    ).where(p.c.id == patient_id, p.c.active == true(), p.c.merged_into.is_(None))
    grants = _branch(
        "grant",
        g,
        id=g.c.id,
        party=g.c.party,
        party_id=g.c.party_id,
        label=g.c.granted_by,
        source=g.c.source,
        level=g.c.level,
        starts=g.c.starts_at,
        ends=g.c.ends_at,
        flag=g.c.delegable,
    ).where(
        g.c.patient_id == patient_id,
        g.c.revoked_at.is_(None),
        or_(g.c.ends_at.is_(None), g.c.ends_at > now),
    )
    blocks = _branch("block", b, id=b.c.id, party=b.c.party, party_id=b.c.party_id).where(
        b.c.patient_id == patient_id, b.c.revoked_at.is_(None)
    )
    delegations = _branch(
        "delegation",
        d,
        id=d.c.id,
        party=d.c.delegator_id,
        party_id=d.c.delegate_id,
        level=d.c.level,
        starts=d.c.starts_at,
        ends=d.c.ends_at,
    ).where(d.c.patient_id == patient_id, d.c.revoked_at.is_(None), d.c.ends_at > now)
    emergencies = _branch(
        "emergency", e, id=e.c.id, party_id=e.c.practitioner_id, ends=e.c.ends_at
    ).where(e.c.patient_id == patient_id, e.c.closed_at.is_(None), e.c.ends_at > now)
    representatives = _branch(
        "representative",
        m,
        id=m.c.id,
        party_id=m.c.representative_account_id,
        level=m.c.scope,
        starts=m.c.starts_at,
        ends=m.c.ends_at,
    ).where(m.c.patient_id == patient_id, or_(m.c.ends_at.is_(None), m.c.ends_at > now))
    union = head.union_all(grants, blocks, delegations, emergencies, representatives)
    columns = union.selected_columns
    return union.order_by(columns.kind, columns.starts, columns.id)


_FACTS_QUERY: Final = _facts_query()


def _facts(patient_id: str, model: RecordModel, rows: Sequence[Row[Any]]) -> RecordFacts | None:
    head = next((row for row in rows if row.kind == "record"), None)
    if head is None:
        return None  # unknown, inactive or merged
    if head.starts is None and model is RecordModel.OPT_IN:
        return None  # under opt-in, a record exists only once the patient opened it
    grants: list[Grant] = []
    blocks: list[Block] = []
    delegations: list[Delegation] = []
    windows: list[EmergencyWindow] = []
    representatives: list[Representative] = []
    for row in rows:
        if row.kind == "grant":
            grants.append(
                Grant(
                    party=Party(row.party),
                    party_id=row.party_id,
                    level=GrantLevel(row.level),
                    start=row.starts,
                    end=row.ends,
                    granted_by=row.label,
                    delegable=bool(row.flag),
                    id=row.id,
                    source=row.source,
                )
            )
        elif row.kind == "block":
            blocks.append(Block(party=Party(row.party), party_id=row.party_id, id=row.id))
        elif row.kind == "delegation":
            delegations.append(
                Delegation(
                    delegator_id=row.party,
                    delegate_id=row.party_id,
                    level=GrantLevel(row.level),
                    start=row.starts,
                    end=row.ends,
                    id=row.id,
                )
            )
        elif row.kind == "emergency":
            windows.append(EmergencyWindow(practitioner_id=row.party_id, until=row.ends, id=row.id))
        elif row.kind == "representative":
            representatives.append(
                Representative(
                    person_id=row.party_id,
                    scope=MandateScope(row.level),
                    start=row.starts,
                    end=row.ends,
                    id=row.id,
                )
            )
    settings: dict[str, Any] = {}  # no row: every setting keeps its default
    if head.starts is not None:
        settings = {
            "state": RecordState(head.party),
            "referring_physician_id": head.party_id,
            "emergency_setting": EmergencySetting(head.label),
            "delegation_allowed": bool(head.flag),
            "default_confidentiality": Confidentiality(head.level),
        }
    return RecordFacts(
        patient_id=patient_id,
        model=model,
        grants=tuple(grants),
        blocks=tuple(blocks),
        emergency_windows=tuple(windows),
        representatives=tuple(representatives),
        delegations=tuple(delegations),
        **settings,
    )


# --- the search filter as SQL -------------------------------------------------------------------


def filter_clause(visible: DocumentFilter) -> ColumnElement[bool]:
    """`DocumentFilter.matches` as a condition on the ``document`` table, term for term."""
    d = t.document
    if visible.matches_nothing:
        return false()
    terms: list[ColumnElement[bool]] = []
    if not visible.include_hidden:
        terms.append(d.c.hidden == false())
    if not visible.include_not_yet_visible:
        shown: ColumnElement[bool] = d.c.not_yet_visible == false()
        if visible.released_by is not None:
            released = and_(d.c.held_until.is_not(None), d.c.held_until <= visible.released_by)
            shown = or_(shown, released)
        terms.append(shown)
    if visible.classes is not None:
        terms.append(d.c.class_code.in_(sorted(visible.classes)) if visible.classes else false())
    levels = sorted(level.value for level in visible.confidentiality)
    terms.append(d.c.confidentiality.in_(levels) if levels else false())
    clause = and_(*terms)
    if visible.author_id is not None:
        clause = or_(d.c.author_id == visible.author_id, clause)
    return clause


def _document(row: Row[Any]) -> DocumentFacts:
    return DocumentFacts(
        id=row.id,
        author_id=row.author_id,
        author_organization_id=row.author_organization_id,
        class_code=row.class_code,
        type_code=row.type_code,
        confidentiality=Confidentiality(row.confidentiality),
        hidden=bool(row.hidden),
        not_yet_visible_to_patient=bool(row.not_yet_visible),
        held_until=row.held_until,
    )


def _stored_grant(row: Row[Any]) -> StoredGrant:
    return StoredGrant(
        grant=Grant(
            party=Party(row.party),
            party_id=row.party_id,
            level=GrantLevel(row.level),
            start=row.starts_at,
            end=row.ends_at,
            granted_by=row.granted_by,
            delegable=bool(row.delegable),
            id=row.id,
            source=row.source,
        ),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        source_ref=row.source_ref,
    )


def _encounter(row: Row[Any]) -> StoredEncounter:
    return StoredEncounter(
        id=row.id,
        version_id=row.version_id,
        patient_id=row.patient_id,
        practitioner_id=row.practitioner_id,
        organization_id=row.organization_id,
        period_start=row.period_start,
        period_end=row.period_end,
        resource=json.loads(row.resource),
        created_at=row.created_at,
    )


def _closed_with_documents(closed_before: datetime) -> tuple[ColumnElement[bool], ...]:
    """A record closed and unchanged since before ``closed_before`` that holds documents."""
    r, d = t.record, t.document
    return (
        r.c.state == RecordState.CLOSED.value,
        r.c.updated_at <= closed_before,
        exists().where(d.c.patient_id == r.c.patient_id),
    )


def _notification(row: Row[Any]) -> PatientNotification:
    return PatientNotification(
        id=row.id,
        patient_id=row.patient_id,
        account_id=row.account_id,
        kind=row.kind,
        created_at=row.created_at,
        payload=json.loads(row.payload),
        read_at=row.read_at,
    )


# --- the store ---------------------------------------------------------------------------------


class RecordStore:
    """``model`` is the platform's record model: under opt-in a patient without a ``record`` row
    has no record at all; under opt-out every live patient has one, with default settings."""

    def __init__(self, connection: Connection, model: RecordModel = RecordModel.OPT_OUT) -> None:
        self.connection = connection
        self.model = model
        self.touched_patients: list[str] = []  # patients written in this transaction

    def _touch(self, patient_id: str) -> None:
        if patient_id not in self.touched_patients:
            self.touched_patients.append(patient_id)

    # --- the facts ------------------------------------------------------------------------

    def load(self, patient_id: str, now: datetime) -> RecordFacts | None:
        """The record's facts in one statement, or None when there is no record: the patient is
        unknown, inactive or merged into another, or (opt-in) never opened one. Revoked facts,
        grants, delegations and mandates that ended and closed or ended emergency windows are
        left out: the engine would ignore them at ``now``."""
        rows = self.connection.execute(_FACTS_QUERY, {"patient_id": patient_id, "now": now}).all()
        return _facts(patient_id, self.model, rows)

    def unopened(self, patient_id: str, now: datetime) -> bool:
        """True for a patient in the index, active and not merged, who has not opened a record
        under opt-in: their record is closed until they open it themselves."""
        if self.model is not RecordModel.OPT_IN:
            return False
        rows = self.connection.execute(_FACTS_QUERY, {"patient_id": patient_id, "now": now}).all()
        head = next((row for row in rows if row.kind == "record"), None)
        return head is not None and head.starts is None

    # --- the record's settings ------------------------------------------------------------

    def ensure_record(self, patient_id: str, now: datetime) -> None:
        """Open the record with every default setting, unless it exists already."""
        self._touch(patient_id)
        defaults = RecordFacts(patient_id=patient_id)
        self.connection.execute(
            insert_if_absent(
                self.connection,
                t.record,
                {
                    "patient_id": patient_id,
                    "state": defaults.state.value,
                    "referring_physician_id": None,
                    "emergency_setting": defaults.emergency_setting.value,
                    "delegation_allowed": defaults.delegation_allowed,
                    "default_confidentiality": defaults.default_confidentiality.value,
                    "updated_at": now,
                },
            )
        )

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
        """Change the settings given (``referring_physician_id=None`` clears the referring
        physician); the record is opened with defaults first if it has no row yet."""
        self._touch(patient_id)
        self.ensure_record(patient_id, now)
        values: dict[str, Any] = {"updated_at": now}
        if state is not None:
            values["state"] = state.value
        if referring_physician_id is not UNSET:
            values["referring_physician_id"] = referring_physician_id
        if emergency_setting is not None:
            values["emergency_setting"] = emergency_setting.value
        if delegation_allowed is not None:
            values["delegation_allowed"] = delegation_allowed
        if default_confidentiality is not None:
            values["default_confidentiality"] = default_confidentiality.value
        self.connection.execute(
            update(t.record).where(t.record.c.patient_id == patient_id).values(**values)
        )

    def closed_with_documents(self, closed_before: datetime, limit: int) -> list[str]:
        """Patients whose record is closed and unchanged since before ``closed_before`` and
        still holds documents: what the retention job purges (its last change, the closing
        or a later one, starts the retention period, so a later change only delays it)."""
        rows = self.connection.execute(
            select(t.record.c.patient_id)
            .where(*_closed_with_documents(closed_before))
            .order_by(t.record.c.patient_id)
            .limit(limit)
        )
        return [row.patient_id for row in rows]

    def due_for_purge(self, patient_id: str, closed_before: datetime) -> bool:
        """Whether this patient is among ``closed_with_documents(closed_before, …)``: read by
        the patient's key, not by scanning every closed record."""
        found = self.connection.execute(
            select(t.record.c.patient_id).where(
                t.record.c.patient_id == patient_id, *_closed_with_documents(closed_before)
            )
        ).first()
        return found is not None

    # --- grants -----------------------------------------------------------------------------

    def add_grant(
        self, patient_id: str, grant: Grant, now: datetime, source_ref: str | None = None
    ) -> str:
        """Store a grant under ``grant.id`` (a new id if empty); returns the id."""
        self._touch(patient_id)
        grant_id = grant.id or _new_id()
        self.connection.execute(
            insert(t.record_grant).values(
                id=grant_id,
                patient_id=patient_id,
                party=grant.party.value,
                party_id=grant.party_id,
                level=grant.level.value,
                starts_at=grant.start,
                ends_at=grant.end,
                granted_by=grant.granted_by,
                delegable=grant.delegable,
                source=grant.source,
                source_ref=source_ref,
                created_at=now,
            )
        )
        return grant_id

    def revoke_grant(self, patient_id: str, grant_id: str, now: datetime, by: str) -> bool:
        """False if the record has no such grant, or it was revoked already."""
        self._touch(patient_id)
        g = t.record_grant
        done = self.connection.execute(
            update(g)
            .where(g.c.patient_id == patient_id, g.c.id == grant_id, g.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_by=by)
        )
        return done.rowcount == 1

    def update_grant(
        self,
        patient_id: str,
        grant_id: str,
        *,
        level: GrantLevel | None = None,
        end: datetime | Unset | None = UNSET,
    ) -> bool:
        """Change a grant that is not revoked (``end=None``: no end date); False if none."""
        self._touch(patient_id)
        g = t.record_grant
        values: dict[str, Any] = {}
        if level is not None:
            values["level"] = level.value
        if end is not UNSET:
            values["ends_at"] = end
        where = (g.c.patient_id == patient_id, g.c.id == grant_id, g.c.revoked_at.is_(None))
        if not values:
            return self.connection.execute(select(g.c.id).where(*where)).first() is not None
        return self.connection.execute(update(g).where(*where).values(**values)).rowcount == 1

    def grant(self, patient_id: str, grant_id: str) -> StoredGrant | None:
        g = t.record_grant
        row = self.connection.execute(
            select(g).where(g.c.patient_id == patient_id, g.c.id == grant_id)
        ).first()
        return None if row is None else _stored_grant(row)

    def grants(self, patient_id: str, include_revoked: bool = False) -> list[StoredGrant]:
        """The record's grants, oldest first, expired ones included."""
        g = t.record_grant
        query = select(g).where(g.c.patient_id == patient_id)
        if not include_revoked:
            query = query.where(g.c.revoked_at.is_(None))
        rows = self.connection.execute(query.order_by(g.c.created_at, g.c.id))
        return [_stored_grant(row) for row in rows]

    # --- blocks -----------------------------------------------------------------------------

    def add_block(self, patient_id: str, block: Block, now: datetime, by: str) -> str:
        """Store a block under ``block.id`` (a new id if empty); returns the id."""
        self._touch(patient_id)
        block_id = block.id or _new_id()
        self.connection.execute(
            insert(t.record_block).values(
                id=block_id,
                patient_id=patient_id,
                party=block.party.value,
                party_id=block.party_id,
                created_by=by,
                created_at=now,
            )
        )
        return block_id

    def revoke_block(self, patient_id: str, block_id: str, now: datetime, by: str) -> bool:
        self._touch(patient_id)
        b = t.record_block
        done = self.connection.execute(
            update(b)
            .where(b.c.patient_id == patient_id, b.c.id == block_id, b.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_by=by)
        )
        return done.rowcount == 1

    def blocks(self, patient_id: str, include_revoked: bool = False) -> list[StoredBlock]:
        b = t.record_block
        query = select(b).where(b.c.patient_id == patient_id)
        if not include_revoked:
            query = query.where(b.c.revoked_at.is_(None))
        rows = self.connection.execute(query.order_by(b.c.created_at, b.c.id))
        return [
            StoredBlock(
                block=Block(party=Party(row.party), party_id=row.party_id, id=row.id),
                created_by=row.created_by,
                created_at=row.created_at,
                revoked_at=row.revoked_at,
                revoked_by=row.revoked_by,
            )
            for row in rows
        ]

    def consent_patient(self, consent_id: str) -> str | None:
        """Whose record a grant or a block (a FHIR Consent) belongs to: one indexed query."""
        g, b = t.record_grant, t.record_block
        query = (
            select(g.c.patient_id)
            .where(g.c.id == consent_id)
            .union_all(select(b.c.patient_id).where(b.c.id == consent_id))
        )
        row = self.connection.execute(query).first()
        return None if row is None else str(row[0])

    # --- delegations ------------------------------------------------------------------------

    def add_delegation(self, patient_id: str, delegation: Delegation, now: datetime) -> str:
        """Store a delegation under ``delegation.id`` (a new id if empty); returns the id."""
        self._touch(patient_id)
        delegation_id = delegation.id or _new_id()
        self.connection.execute(
            insert(t.record_delegation).values(
                id=delegation_id,
                patient_id=patient_id,
                delegator_id=delegation.delegator_id,
                delegate_id=delegation.delegate_id,
                level=delegation.level.value,
                starts_at=delegation.start,
                ends_at=delegation.end,
                created_at=now,
            )
        )
        return delegation_id

    def revoke_delegation(self, patient_id: str, delegation_id: str, now: datetime) -> bool:
        self._touch(patient_id)
        d = t.record_delegation
        done = self.connection.execute(
            update(d)
            .where(d.c.patient_id == patient_id, d.c.id == delegation_id, d.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return done.rowcount == 1

    # --- a professional's accesses across records (the workspace's home) ---------------------

    def _live_patients(self, patient_column: Any) -> ColumnElement[bool]:
        p = t.patient
        return exists().where(
            p.c.id == patient_column, p.c.active == true(), p.c.merged_into.is_(None)
        )

    def grants_to(
        self, parties: Sequence[tuple[Party, str]], now: datetime, limit: int
    ) -> list[PartyGrant]:
        """The grants in force or to come that name one of ``parties`` (a practitioner, their
        organizations, their care teams), on live patients' records; those ending first
        first, at most ``limit`` (indexed by party)."""
        if not parties:
            return []
        g = t.record_grant
        named = or_(*(and_(g.c.party == party.value, g.c.party_id == i) for party, i in parties))
        rows = self.connection.execute(
            select(g)
            .where(
                named,
                g.c.revoked_at.is_(None),
                or_(g.c.ends_at.is_(None), g.c.ends_at > now),
                self._live_patients(g.c.patient_id),
            )
            .order_by(g.c.ends_at.is_(None), g.c.ends_at, g.c.id)
            .limit(limit)
        )
        return [PartyGrant(row.patient_id, _stored_grant(row).grant) for row in rows]

    def delegations_of(
        self, practitioner_id: str, now: datetime, limit: int
    ) -> list[PartyDelegation]:
        """The delegations in force or to come that ``practitioner_id`` gave or received, on
        live patients' records; those ending first first, at most ``limit``."""
        d = t.record_delegation
        rows = self.connection.execute(
            select(d)
            .where(
                or_(d.c.delegator_id == practitioner_id, d.c.delegate_id == practitioner_id),
                d.c.revoked_at.is_(None),
                d.c.ends_at > now,
                self._live_patients(d.c.patient_id),
            )
            .order_by(d.c.ends_at, d.c.id)
            .limit(limit)
        )
        return [
            PartyDelegation(
                row.patient_id,
                Delegation(
                    row.delegator_id,
                    row.delegate_id,
                    GrantLevel(row.level),
                    row.starts_at,
                    row.ends_at,
                    row.id,
                ),
            )
            for row in rows
        ]

    def emergencies_of(
        self, practitioner_id: str, now: datetime, limit: int
    ) -> list[PartyEmergency]:
        """The emergency windows ``practitioner_id`` opened that are still open, ending first
        first, at most ``limit``."""
        e = t.emergency_access
        rows = self.connection.execute(
            select(e)
            .where(
                e.c.practitioner_id == practitioner_id,
                e.c.closed_at.is_(None),
                e.c.ends_at > now,
                self._live_patients(e.c.patient_id),
            )
            .order_by(e.c.ends_at, e.c.id)
            .limit(limit)
        )
        return [
            PartyEmergency(
                row.id, row.patient_id, row.practitioner_id, row.reason, row.starts_at, row.ends_at
            )
            for row in rows
        ]

    # --- emergency access -------------------------------------------------------------------

    def emergencies_declared(self, practitioner_id: str, since: datetime) -> int:
        """How many emergencies ``practitioner_id`` declared from ``since`` on, on any record
        (closed early or not: each was a declaration). The professional's directory row is
        locked first (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes
        writers already), so that two declarations of one professional count one after the
        other: the quota cannot be passed by racing."""
        self.connection.execute(
            select(t.practitioner.c.id)
            .where(t.practitioner.c.id == practitioner_id)
            .with_for_update()
        )
        e = t.emergency_access
        return int(
            self.connection.execute(
                select(func.count())
                .select_from(e)
                .where(e.c.practitioner_id == practitioner_id, e.c.starts_at >= since)
            ).scalar_one()
        )

    def open_emergency(
        self, patient_id: str, window: EmergencyWindow, reason: str, now: datetime
    ) -> str:
        """Record a break-the-glass window from ``now`` until ``window.until``; returns its id."""
        self._touch(patient_id)
        window_id = window.id or _new_id()
        self.connection.execute(
            insert(t.emergency_access).values(
                id=window_id,
                patient_id=patient_id,
                practitioner_id=window.practitioner_id,
                reason=reason,
                starts_at=now,
                ends_at=window.until,
            )
        )
        return window_id

    def close_emergency(self, patient_id: str, window_id: str, now: datetime) -> bool:
        """End a window early; False if there is no such window or it was closed already."""
        self._touch(patient_id)
        e = t.emergency_access
        done = self.connection.execute(
            update(e)
            .where(e.c.patient_id == patient_id, e.c.id == window_id, e.c.closed_at.is_(None))
            .values(closed_at=now)
        )
        return done.rowcount == 1

    # --- documents --------------------------------------------------------------------------

    def add_document(self, patient_id: str, document: DocumentFacts, now: datetime) -> None:
        self._touch(patient_id)
        self.connection.execute(
            insert(t.document).values(
                id=document.id,
                patient_id=patient_id,
                author_id=document.author_id,
                author_organization_id=document.author_organization_id,
                class_code=document.class_code,
                type_code=document.type_code,
                confidentiality=document.confidentiality.value,
                hidden=document.hidden,
                not_yet_visible=document.not_yet_visible_to_patient,
                held_until=document.held_until,
                created_at=now,
            )
        )

    def document(self, patient_id: str, document_id: str) -> DocumentFacts | None:
        d = t.document
        row = self.connection.execute(
            select(d).where(d.c.patient_id == patient_id, d.c.id == document_id)
        ).first()
        return None if row is None else _document(row)

    def set_document_hidden(self, patient_id: str, document_id: str, hidden: bool) -> bool:
        return self._update_document(patient_id, document_id, hidden=hidden)

    def set_document_confidentiality(
        self, patient_id: str, document_id: str, level: Confidentiality
    ) -> bool:
        return self._update_document(patient_id, document_id, confidentiality=level.value)

    def set_document_released(self, patient_id: str, document_id: str) -> bool:
        """Make a document visible to the patient (and their representatives)."""
        return self._update_document(
            patient_id, document_id, not_yet_visible=False, held_until=None
        )

    def _update_document(self, patient_id: str, document_id: str, **values: Any) -> bool:
        """Change a document's facts, and its signatures' with it: a signature shows what it
        signs, so whoever may not see a document may not see its signature either."""
        self._touch(patient_id)
        d, m = t.document, t.document_metadata
        found = self.connection.execute(
            update(d).where(d.c.patient_id == patient_id, d.c.id == document_id).values(**values)
        )
        if found.rowcount != 1:
            return False
        signatures = select(m.c.document_id).where(m.c.signs == document_id)
        self.connection.execute(
            update(d).where(d.c.patient_id == patient_id, d.c.id.in_(signatures)).values(**values)
        )
        return True

    def find_documents(
        self, patient_id: str, visible: DocumentFilter, *, offset: int, count: int
    ) -> tuple[int, list[DocumentFacts]]:
        """The number of documents of the record ``visible`` matches, and the page from
        ``offset`` (at most ``count``), oldest first; both are computed by the database."""
        if visible.matches_nothing:
            return 0, []
        d = t.document
        where = (d.c.patient_id == patient_id, filter_clause(visible))
        total = self.connection.execute(select(func.count()).select_from(d).where(*where))
        rows = self.connection.execute(
            select(d).where(*where).order_by(d.c.created_at, d.c.id).offset(offset).limit(count)
        )
        return int(total.scalar_one()), [_document(row) for row in rows]

    # --- encounters -------------------------------------------------------------------------

    def add_encounter(self, record: StoredEncounter) -> None:
        self._touch(record.patient_id)
        self.connection.execute(
            insert(t.encounter).values(
                id=record.id,
                version_id=record.version_id,
                patient_id=record.patient_id,
                practitioner_id=record.practitioner_id,
                organization_id=record.organization_id,
                period_start=record.period_start,
                period_end=record.period_end,
                resource=dump(record.resource),
                created_at=record.created_at,
            )
        )

    def encounter(self, encounter_id: str) -> StoredEncounter | None:
        e = t.encounter
        row = self.connection.execute(select(e).where(e.c.id == encounter_id)).first()
        return None if row is None else _encounter(row)

    def encounters(
        self, patient_id: str, offset: int, count: int
    ) -> tuple[int, list[StoredEncounter]]:
        """The patient's encounters, most recent first, and their number."""
        e = t.encounter
        total = self.connection.execute(
            select(func.count()).select_from(e).where(e.c.patient_id == patient_id)
        )
        rows = self.connection.execute(
            select(e)
            .where(e.c.patient_id == patient_id)
            .order_by(e.c.period_start.desc(), e.c.id)
            .offset(offset)
            .limit(count)
        )
        return int(total.scalar_one()), [_encounter(row) for row in rows]

    # --- notifications ----------------------------------------------------------------------

    def notify(
        self,
        patient_id: str,
        kind: str,
        payload: dict[str, Any],
        now: datetime,
        account_id: str | None = None,
    ) -> str:
        """Queue a notification for the patient (to their account, if known); returns its id."""
        self._touch(patient_id)
        notification_id = _new_id()
        self.connection.execute(
            insert(t.notification),
            {
                "id": notification_id,
                "patient_id": patient_id,
                "account_id": account_id,
                "kind": kind,
                "created_at": now,
                "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
            },
        )
        return notification_id

    def notification(self, notification_id: str) -> PatientNotification | None:
        n = t.notification
        row = self.connection.execute(select(n).where(n.c.id == notification_id)).first()
        return None if row is None or row.patient_id is None else _notification(row)

    def unmailed(self, limit: int) -> list[tuple[PatientNotification, str]]:
        """Notifications not mailed yet, oldest first, with the login (an e-mail address) of
        the patient's account; patients without an account are not mailed."""
        n, a = t.notification, t.account
        rows = self.connection.execute(
            select(n, a.c.login.label("login"))
            .join(a, (a.c.patient_id == n.c.patient_id) & (a.c.kind == "patient"))
            .where(n.c.mailed_at.is_(None))
            .order_by(n.c.created_at, n.c.id)
            .limit(limit)
        )
        return [(_notification(row), row.login) for row in rows]

    def mark_mailed(self, notification_ids: Sequence[str], now: datetime) -> None:
        if notification_ids:
            n = t.notification
            self.connection.execute(
                update(n).where(n.c.id.in_(list(notification_ids))).values(mailed_at=now)
            )

    def notifications(
        self, patient_id: str, offset: int, count: int
    ) -> tuple[int, list[PatientNotification]]:
        """The patient's notifications, newest first, and their number."""
        n = t.notification
        total = self.connection.execute(
            select(func.count()).select_from(n).where(n.c.patient_id == patient_id)
        )
        rows = self.connection.execute(
            select(n)
            .where(n.c.patient_id == patient_id)
            .order_by(n.c.created_at.desc(), n.c.id.desc())
            .offset(offset)
            .limit(count)
        )
        return int(total.scalar_one()), [_notification(row) for row in rows]
