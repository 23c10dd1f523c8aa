"""SQL storage of the directories (MPI and HPD), for SQLite and PostgreSQL alike.

A resource row is written together with its search index rows and a history row, inside the
caller's transaction; the store never commits. Writes take lists so that bulk loads (the demo
data, an initial identity feed) use ``executemany`` through the same code path as single writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.sql import escape_like
from carevault.domain.directory import DirectoryType, MergeState, PatientEntry
from carevault.domain.mandates import AssistantMandate, CareTeam, TeamMember
from carevault.domain.queries import (  # the store's answers, domain types
    Alternatives,
    DateRange,
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
    SearchResult,
    Stored,
)
from carevault.domain.text import fold
from carevault.fhirmodel.directory import OrganizationEntry, PractitionerEntry, RoleEntry

JsonObject = dict[str, Any]

# Bound on the values of one SQL IN list (SQLite allows 32,766 parameters).
IN_CHUNK = 500

# The table that holds each directory resource type: the services name the type, only this
# module knows where it is stored.
_TABLES: Final[dict[DirectoryType, Table]] = {
    "Patient": t.patient,
    "Practitioner": t.practitioner,
    "PractitionerRole": t.practitioner_role,
    "Organization": t.organization,
    "CareTeam": t.care_team,
}


def dump(resource: JsonObject) -> str:
    """The stored form of a resource: compact JSON with a stable key order."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class PatientWrite:
    id: str
    version_id: int
    entry: PatientEntry
    resource: JsonObject
    merged_into: str | None = None


def _like_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    return column.like(escape_like(prefix) + "%", escape="\\")  # type: ignore[no-any-return]


def _word_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """Match a prefix of any space-separated word of a folded column."""
    escaped = escape_like(prefix)
    return or_(
        column.like(escaped + "%", escape="\\"), column.like("% " + escaped + "%", escape="\\")
    )


def _any_of(alternatives: Alternatives, test: Any) -> ColumnElement[bool]:
    # No alternative left (all in another code system) matches nothing, never everything.
    if not alternatives:
        return false()
    return or_(*(test(value) for value in alternatives))


def _date_clause(column: Any, criterion: DateRange) -> ColumnElement[bool]:
    start, end = criterion.start, criterion.end
    match criterion.prefix:
        case "eq":
            return and_(column >= start, column < end)
        case "ne":
            return or_(column < start, column >= end)
        case "lt":
            return column < start  # type: ignore[no-any-return]
        case "le":
            return column < end  # type: ignore[no-any-return]
        case "gt":
            return column >= end  # type: ignore[no-any-return]
        case "ge":
            return column >= start  # type: ignore[no-any-return]
    raise ValueError(f"unknown date prefix {criterion.prefix}")


# Read on every request of a practitioner: built once, bound at each execution.
_PRACTITIONER_WITH_ROLES: Final = (
    select(
        t.practitioner.c.version_id,
        t.practitioner.c.resource,
        t.practitioner_role.c.id.label("role_id"),
        t.practitioner_role.c.organization_id,
        t.practitioner_role.c.profession,
        t.practitioner_role.c.specialty,
    )
    .select_from(
        t.practitioner.outerjoin(
            t.practitioner_role,
            and_(
                t.practitioner_role.c.practitioner_id == t.practitioner.c.id,
                t.practitioner_role.c.active == true(),
            ),
        )
    )
    .where(t.practitioner.c.id == bindparam("practitioner_id"))
    .order_by(t.practitioner_role.c.id)
)


# Every request of a practitioner asks it: built once (a statement built per call cost four
# times the CPU of the others, its cache key computed again each time).
_CARE_TEAMS_OF: Final = (
    select(t.care_team.c.id)
    .join(t.care_team_member, t.care_team_member.c.care_team_id == t.care_team.c.id)
    .where(
        t.care_team_member.c.practitioner_id == bindparam("practitioner_id"),
        t.care_team.c.active.is_(True),
        or_(t.care_team.c.period_start.is_(None), t.care_team.c.period_start <= bindparam("now")),
        or_(t.care_team.c.period_end.is_(None), t.care_team.c.period_end > bindparam("now")),
        or_(
            t.care_team_member.c.period_start.is_(None),
            t.care_team_member.c.period_start <= bindparam("now"),
        ),
        or_(
            t.care_team_member.c.period_end.is_(None),
            t.care_team_member.c.period_end > bindparam("now"),
        ),
    )
)


@dataclass(frozen=True)
class ActiveRole:
    """An active PractitionerRole: where the practitioner works, and as what."""

    id: str
    organization_id: str | None
    profession: str
    specialty: str | None


class DirectoryStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.touched_patients: list[str] = []  # patients written in this transaction
        # Professionals whose entry, roles or teams this transaction wrote: what they may
        # reach changed, and their audit entry says so (`Written`).
        self.touched_professionals: list[str] = []
        # A practitioner and their active roles as this transaction read them (every request
        # of a practitioner needs both: the licence, then the profession); any write forgets.
        self._practitioners: dict[str, tuple[Stored | None, list[ActiveRole]]] = {}

    # --- history --------------------------------------------------------------------------

    def _history(
        self,
        resource_type: str,
        rows: Sequence[dict[str, Any]],
        now: datetime,
        *,
        patient_scoped: bool = False,
    ) -> None:
        """One history row per written version; patient versions carry the patient key."""
        self.connection.execute(
            insert(t.resource_history),
            [
                {
                    "resource_type": resource_type,
                    "resource_id": row["id"],
                    "version_id": row["version_id"],
                    "patient_id": row["id"] if patient_scoped else None,
                    "resource": row["resource"],
                    "recorded_at": now,
                }
                for row in rows
            ],
        )

    def history(self, resource_type: str, resource_id: str) -> list[Stored]:
        rows = self.connection.execute(
            select(t.resource_history.c.version_id, t.resource_history.c.resource)
            .where(
                t.resource_history.c.resource_type == resource_type,
                t.resource_history.c.resource_id == resource_id,
            )
            .order_by(t.resource_history.c.version_id.desc())
        ).all()
        return [Stored(resource_id, row.version_id, json.loads(row.resource)) for row in rows]

    def version(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        row = self.connection.execute(
            select(t.resource_history.c.resource).where(
                t.resource_history.c.resource_type == resource_type,
                t.resource_history.c.resource_id == resource_id,
                t.resource_history.c.version_id == version_id,
            )
        ).first()
        return None if row is None else Stored(resource_id, version_id, json.loads(row.resource))

    # --- generic reads --------------------------------------------------------------------

    def read(self, resource_type: DirectoryType, resource_id: str) -> Stored | None:
        table = _TABLES[resource_type]
        row = self.connection.execute(
            select(table.c.version_id, table.c.resource).where(table.c.id == resource_id)
        ).first()
        return (
            None if row is None else Stored(resource_id, row.version_id, json.loads(row.resource))
        )

    def existing_ids(self, resource_type: DirectoryType, ids: Iterable[str]) -> set[str]:
        wanted = set(ids)
        if not wanted:
            return set()
        table = _TABLES[resource_type]
        rows = self.connection.execute(select(table.c.id).where(table.c.id.in_(wanted)))
        return {row.id for row in rows}

    def _page(
        self, table: Table, where: list[ColumnElement[bool]], page: Page, order: Any
    ) -> SearchResult:
        """One page and the total that matched. A page short of full tells the total itself
        (most searches: one patient by their number), so the matches are counted only when
        the page is full or past the end (PDQm's Bundle.total is 1..1: it is always given)."""
        condition = and_(true(), *where)
        # The page's ids first, in a subquery the indexes can answer alone, then only those
        # rows: a search matching thousands reads thousands of index entries, not of rows.
        page_ids = (
            select(table.c.id)
            .where(condition)
            .order_by(*order, table.c.id)
            .offset(page.offset)
            .limit(page.count)
        )
        rows = self.connection.execute(
            select(table.c.id, table.c.version_id, table.c.resource)
            .where(table.c.id.in_(page_ids.scalar_subquery()))
            .order_by(*order, table.c.id)
        ).all()
        if 0 < len(rows) < page.count or (not rows and page.offset == 0):
            total = page.offset + len(rows)
        else:
            total = self.connection.execute(
                select(func.count()).select_from(table).where(condition)
            ).scalar_one()
        return SearchResult(
            total, [Stored(r.id, r.version_id, json.loads(r.resource)) for r in rows]
        )

    # --- patients -------------------------------------------------------------------------

    def patient_merge_state(self, patient_id: str) -> MergeState | None:
        row = self.connection.execute(
            select(t.patient.c.merged_into).where(t.patient.c.id == patient_id)
        ).first()
        return None if row is None else MergeState(patient_id, row.merged_into)

    def identifier_owners(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Which patient holds each (system, value) now; one IN list per system and chunk."""
        by_system: dict[str, set[str]] = {}
        for system, value in pairs:
            by_system.setdefault(system, set()).add(value)
        pi = t.patient_identifier
        owners: dict[tuple[str, str], str] = {}
        for system, wanted in by_system.items():
            values = sorted(wanted)
            for start in range(0, len(values), IN_CHUNK):
                rows = self.connection.execute(
                    select(pi.c.value, pi.c.patient_id).where(
                        pi.c.system == system, pi.c.value.in_(values[start : start + IN_CHUNK])
                    )
                )
                owners.update({(system, r.value): r.patient_id for r in rows})
        return owners

    def organization_patient_id_system(self, organization_id: str) -> str | None:
        """The system of the patient identifiers an organization assigns, if it assigns any."""
        row = self.connection.execute(
            select(t.organization.c.patient_id_system).where(t.organization.c.id == organization_id)
        ).first()
        return None if row is None else row.patient_id_system

    def assigning_authorities(self) -> set[str]:
        rows = self.connection.execute(
            select(t.organization.c.patient_id_system).where(
                t.organization.c.patient_id_system.is_not(None)
            )
        )
        return {row.patient_id_system for row in rows}

    def write_patients(
        self, writes: Sequence[PatientWrite], now: datetime, *, national_system: str, new: bool
    ) -> None:
        """Insert (``new``) or replace patients, their index rows and a history row each."""
        if not writes:
            return
        self.touched_patients += [w.id for w in writes if w.id not in self.touched_patients]
        rows = [
            {
                "id": w.id,
                "version_id": w.version_id,
                "national_id": w.entry.national_id,
                "birth_date": w.entry.birth_date,
                "gender": w.entry.gender,
                "active": w.entry.active,
                "merged_into": w.merged_into,
                "resource": dump(w.resource),
                "updated_at": now,
            }
            for w in writes
        ]
        if new:
            self.connection.execute(insert(t.patient), rows)
        else:
            for row in rows:
                self.connection.execute(
                    update(t.patient).where(t.patient.c.id == row["id"]).values(**row)
                )
            ids = [w.id for w in writes]
            for table in (t.patient_name, t.patient_identifier, t.patient_postal_code):
                self.connection.execute(delete(table).where(table.c.patient_id.in_(ids)))
        names: list[dict[str, Any]] = []
        identifiers: list[dict[str, Any]] = []
        postal: list[dict[str, Any]] = []
        for w in writes:
            for position, name in enumerate(w.entry.names):
                names.append(
                    {
                        "patient_id": w.id,
                        "position": position,
                        "family_folded": fold(name.family),
                        "given_folded": fold(" ".join(name.given)),
                    }
                )
            identifiers.append(
                {"patient_id": w.id, "system": national_system, "value": w.entry.national_id}
            )
            identifiers.extend(
                {"patient_id": w.id, "system": i.system, "value": i.value}
                for i in w.entry.local_ids
            )
            postal.extend(
                {"patient_id": w.id, "postal_code": code.strip().upper()}
                for code in w.entry.postal_codes
            )
        for table, table_rows in (
            (t.patient_name, names),
            (t.patient_identifier, identifiers),
            (t.patient_postal_code, postal),
        ):
            if table_rows:
                self.connection.execute(insert(table), table_rows)
        self._history("Patient", rows, now, patient_scoped=True)

    def record_merge(self, source_id: str, survivor_id: str, now: datetime) -> None:
        self.connection.execute(
            insert(t.patient_merge).values(
                patient_id=source_id, survivor_id=survivor_id, merged_at=now
            )
        )

    def record_unmerge(self, source_id: str, now: datetime) -> None:
        pm = t.patient_merge
        self.connection.execute(
            update(pm)
            .where(pm.c.patient_id == source_id, pm.c.unmerged_at.is_(None))
            .values(unmerged_at=now)
        )

    def merged_into(self, survivor_id: str) -> list[str]:
        rows = self.connection.execute(
            select(t.patient.c.id)
            .where(t.patient.c.merged_into == survivor_id)
            .order_by(t.patient.c.id)
        )
        return [row.id for row in rows]

    def patients_by_identifier(self, system: str, value: str) -> list[str]:
        pi = t.patient_identifier
        rows = self.connection.execute(
            select(pi.c.patient_id).where(pi.c.system == system, pi.c.value == value)
        )
        return [row.patient_id for row in rows]

    def identifiers_of(self, patient_ids: Sequence[str]) -> list[tuple[str, str]]:
        pi = t.patient_identifier
        rows = self.connection.execute(
            select(pi.c.system, pi.c.value)
            .where(pi.c.patient_id.in_(patient_ids))
            .order_by(pi.c.system, pi.c.value)
        )
        return [(row.system, row.value) for row in rows]

    def search_patients(self, query: PatientQuery, page: Page) -> SearchResult:
        p, pn, pi, pc = t.patient, t.patient_name, t.patient_identifier, t.patient_postal_code
        where: list[ColumnElement[bool]] = [p.c.merged_into.is_(None)]

        def has_name(test: ColumnElement[bool]) -> ColumnElement[bool]:
            return p.c.id.in_(select(pn.c.patient_id).where(test))

        for ids in query.ids:
            where.append(p.c.id.in_(ids))
        for alternatives in query.family:
            where.append(
                has_name(_any_of(alternatives, lambda v: _like_prefix(pn.c.family_folded, v)))
            )
        for alternatives in query.given:
            where.append(
                has_name(_any_of(alternatives, lambda v: _word_prefix(pn.c.given_folded, v)))
            )
        for alternatives in query.name:
            where.append(
                has_name(
                    _any_of(
                        alternatives,
                        lambda v: or_(
                            _word_prefix(pn.c.family_folded, v), _word_prefix(pn.c.given_folded, v)
                        ),
                    )
                )
            )
        for criterion in query.birthdate:
            where.append(_date_clause(p.c.birth_date, criterion))
        for alternatives in query.gender:
            where.append(p.c.gender.in_(alternatives))
        for identifiers in query.identifier:
            # A merged entry's identifiers find its survivor.
            holder = t.patient.alias("holder")
            owners = (
                select(func.coalesce(holder.c.merged_into, holder.c.id))
                .select_from(pi.join(holder, holder.c.id == pi.c.patient_id))
                .where(
                    or_(
                        false(),
                        *(
                            and_(pi.c.system == i.system, pi.c.value == i.value)
                            if i.system
                            else pi.c.value == i.value
                            for i in identifiers
                        ),
                    )
                )
            )
            where.append(p.c.id.in_(owners))
        for alternatives in query.postal_code:
            where.append(
                p.c.id.in_(
                    select(pc.c.patient_id).where(
                        _any_of(alternatives, lambda v: _like_prefix(pc.c.postal_code, v.upper()))
                    )
                )
            )
        if query.active is not None:
            where.append(p.c.active == query.active)
        return self._page(p, where, page, order=())

    # --- organizations --------------------------------------------------------------------

    def write_organizations(
        self, writes: Sequence[tuple[Stored, OrganizationEntry]], now: datetime, *, new: bool
    ) -> None:
        rows = [
            {
                "id": s.id,
                "version_id": s.version_id,
                "identifier": e.identifier,
                "name": e.name,
                "name_folded": fold(e.name),
                "active": e.active,
                "patient_id_system": e.patient_id_system,
                "resource": dump(s.resource),
                "updated_at": now,
            }
            for s, e in writes
        ]
        self._write(t.organization, rows, new)
        self._history("Organization", rows, now)

    def _write(self, table: Table, rows: list[dict[str, Any]], new: bool) -> None:
        self._practitioners.clear()
        if not rows:
            return
        if new:
            self.connection.execute(insert(table), rows)
        else:
            for row in rows:
                self.connection.execute(update(table).where(table.c.id == row["id"]).values(**row))

    def organization_ids_by_identifier(self, values: Iterable[str]) -> dict[str, str]:
        org = t.organization
        rows = self.connection.execute(
            select(org.c.identifier, org.c.id).where(org.c.identifier.in_(set(values)))
        )
        return {row.identifier: row.id for row in rows}

    def search_organizations(self, query: OrganizationQuery, page: Page) -> SearchResult:
        org = t.organization
        where: list[ColumnElement[bool]] = []
        for ids in query.ids:
            where.append(org.c.id.in_(ids))
        for alternatives in query.name:
            where.append(_any_of(alternatives, lambda v: _word_prefix(org.c.name_folded, v)))
        for alternatives in query.identifier:
            where.append(org.c.identifier.in_(alternatives))
        if query.active is not None:
            where.append(org.c.active == query.active)
        return self._page(org, where, page, order=(org.c.name_folded,))

    # --- practitioners --------------------------------------------------------------------

    def write_practitioners(
        self, writes: Sequence[tuple[Stored, PractitionerEntry]], now: datetime, *, new: bool
    ) -> None:
        rows = [
            {
                "id": s.id,
                "version_id": s.version_id,
                "identifier": e.identifier,
                "family_folded": fold(e.family),
                "given_folded": fold(e.given),
                "licence_status": e.licence_status,
                "active": e.active,
                "resource": dump(s.resource),
                "updated_at": now,
            }
            for s, e in writes
        ]
        self._write(t.practitioner, rows, new)
        self._history("Practitioner", rows, now)
        self._touch_professionals(s.id for s, _ in writes)

    def _touch_professionals(self, ids: Iterable[str | None]) -> None:
        for practitioner_id in ids:
            if practitioner_id and practitioner_id not in self.touched_professionals:
                self.touched_professionals.append(practitioner_id)

    def family_name_shares(self, at_least: float) -> dict[str, float]:
        """The share of patients bearing each family name (folded, the first name of each)
        that at least ``at_least`` of them bear, and at least two: the common names. A name
        it leaves out is rare."""
        pn = t.patient_name
        total = self.connection.execute(
            select(func.count()).select_from(pn).where(pn.c.position == 0)
        ).scalar_one()
        if not total:
            return {}
        least = max(2, math.ceil(total * at_least))
        rows = self.connection.execute(
            select(pn.c.family_folded, func.count())
            .where(pn.c.position == 0)
            .group_by(pn.c.family_folded)
            .having(func.count() >= least)
        )
        return {str(name): int(count) / total for name, count in rows}

    def professionals_as_patients(self, national_system: str) -> dict[str, frozenset[str]]:
        """Patients who are health professionals: a Practitioner carrying a national
        identifier (``national_system``) that a patient bears, by patient id, with the
        organizations of that practitioner's active roles (the colleague rule's facts)."""
        numbers: dict[str, str] = {}
        for practitioner_id, text in self.connection.execute(
            select(t.practitioner.c.id, t.practitioner.c.resource)
        ):
            for identifier in json.loads(text).get("identifier", []):
                if identifier.get("system") == national_system and identifier.get("value"):
                    numbers[str(identifier["value"])] = str(practitioner_id)
        if not numbers:
            return {}
        pi = t.patient_identifier
        patients = self.connection.execute(
            select(pi.c.value, pi.c.patient_id).where(
                pi.c.system == national_system, pi.c.value.in_(list(numbers))
            )
        ).all()
        role = t.practitioner_role
        organizations: dict[str, set[str]] = {}
        for practitioner_id, organization_id in self.connection.execute(
            select(role.c.practitioner_id, role.c.organization_id).where(
                role.c.practitioner_id.in_(set(numbers.values())),
                role.c.active.is_(True),
                role.c.organization_id.is_not(None),
            )
        ):
            organizations.setdefault(str(practitioner_id), set()).add(str(organization_id))
        return {
            str(patient_id): frozenset(organizations.get(numbers[str(value)], set()))
            for value, patient_id in patients
        }

    def practitioner_ids_by_identifier(self, values: Iterable[str]) -> dict[str, str]:
        pr = t.practitioner
        rows = self.connection.execute(
            select(pr.c.identifier, pr.c.id).where(pr.c.identifier.in_(set(values)))
        )
        return {row.identifier: row.id for row in rows}

    def search_practitioners(self, query: PractitionerQuery, page: Page) -> SearchResult:
        pr = t.practitioner
        where: list[ColumnElement[bool]] = []
        for ids in query.ids:
            where.append(pr.c.id.in_(ids))
        for alternatives in query.family:
            where.append(_any_of(alternatives, lambda v: _like_prefix(pr.c.family_folded, v)))
        for alternatives in query.given:
            where.append(_any_of(alternatives, lambda v: _word_prefix(pr.c.given_folded, v)))
        for alternatives in query.name:
            where.append(
                _any_of(
                    alternatives,
                    lambda v: or_(
                        _word_prefix(pr.c.family_folded, v), _word_prefix(pr.c.given_folded, v)
                    ),
                )
            )
        for alternatives in query.identifier:
            where.append(pr.c.identifier.in_(alternatives))
        if query.active is not None:
            where.append(pr.c.active == query.active)
        return self._page(pr, where, page, order=(pr.c.family_folded,))

    # --- practitioner roles ---------------------------------------------------------------

    def write_roles(
        self, writes: Sequence[tuple[Stored, RoleEntry]], now: datetime, *, new: bool
    ) -> None:
        rows = [
            {
                "id": s.id,
                "version_id": s.version_id,
                "practitioner_id": e.practitioner_id,
                "organization_id": e.organization_id,
                "profession": e.profession,
                "specialty": e.specialty,
                "active": e.active,
                "resource": dump(s.resource),
                "updated_at": now,
            }
            for s, e in writes
        ]
        self._write(t.practitioner_role, rows, new)
        self._history("PractitionerRole", rows, now)
        self._touch_professionals(e.practitioner_id for _, e in writes)

    def search_roles(self, query: RoleQuery, page: Page) -> SearchResult:
        role = t.practitioner_role
        where: list[ColumnElement[bool]] = []
        for ids in query.ids:
            where.append(role.c.id.in_(ids))
        for alternatives in query.practitioner:
            where.append(role.c.practitioner_id.in_(alternatives))
        for alternatives in query.organization:
            where.append(role.c.organization_id.in_(alternatives))
        for alternatives in query.role:
            where.append(role.c.profession.in_(alternatives))
        for alternatives in query.specialty:
            where.append(role.c.specialty.in_(alternatives))
        if query.active is not None:
            where.append(role.c.active == query.active)
        return self._page(role, where, page, order=())

    def practitioner(self, practitioner_id: str) -> Stored | None:
        return self._practitioner_with_roles(practitioner_id)[0]

    def active_roles(self, practitioner_id: str) -> list[ActiveRole]:
        """The practitioner's active roles as the indexed columns hold them, by role id: what
        every request of a practitioner needs (no JSON to parse, no count)."""
        return self._practitioner_with_roles(practitioner_id)[1]

    def _practitioner_with_roles(
        self, practitioner_id: str
    ) -> tuple[Stored | None, list[ActiveRole]]:
        """One statement for both, remembered until this transaction writes."""
        known = self._practitioners.get(practitioner_id)
        if known is not None:
            return known
        rows = self.connection.execute(
            _PRACTITIONER_WITH_ROLES, {"practitioner_id": practitioner_id}
        ).all()
        stored = (
            None
            if not rows
            else Stored(practitioner_id, rows[0].version_id, json.loads(rows[0].resource))
        )
        roles = [
            ActiveRole(r.role_id, r.organization_id, r.profession, r.specialty)
            for r in rows
            if r.role_id is not None
        ]
        self._practitioners[practitioner_id] = (stored, roles)
        return stored, roles

    # --- assistants' mandates ---------------------------------------------------------------

    def add_mandate(self, mandate: AssistantMandate, now: datetime, by: str) -> None:
        self.connection.execute(
            insert(t.assistant_mandate).values(
                id=mandate.id,
                mandator_id=mandate.mandator_id,
                assistant_id=mandate.assistant_id,
                classes=" ".join(sorted(mandate.classes)) if mandate.classes is not None else None,
                starts_at=mandate.start,
                ends_at=mandate.end,
                created_at=now,
                created_by=by,
            )
        )

    def end_mandate(self, mandate_id: str, mandator_id: str, now: datetime, by: str) -> bool:
        """End a mandate of ``mandator_id`` that is still in force; False if there is none."""
        m = t.assistant_mandate
        result = self.connection.execute(
            update(m)
            .where(
                m.c.id == mandate_id,
                m.c.mandator_id == mandator_id,
                m.c.ended_at.is_(None),
                m.c.ends_at > now,
            )
            .values(ended_at=now, ended_by=by)
        )
        return result.rowcount == 1

    def mandates(
        self, *, assistant_id: str | None = None, mandator_id: str | None = None
    ) -> list[AssistantMandate]:
        """An assistant's or a practitioner's mandates, ended ones included, newest first."""
        m = t.assistant_mandate
        query = select(m).order_by(m.c.starts_at.desc(), m.c.id)
        if assistant_id is not None:
            query = query.where(m.c.assistant_id == assistant_id)
        if mandator_id is not None:
            query = query.where(m.c.mandator_id == mandator_id)
        return [_mandate(row) for row in self.connection.execute(query.limit(1_000))]

    def active_mandates(self, assistant_id: str, now: datetime) -> list[AssistantMandate]:
        m = t.assistant_mandate
        rows = self.connection.execute(
            select(m)
            .where(
                m.c.assistant_id == assistant_id,
                m.c.ended_at.is_(None),
                m.c.starts_at <= now,
                m.c.ends_at > now,
            )
            .order_by(m.c.starts_at.desc(), m.c.id)
        )
        return [_mandate(row) for row in rows]

    # --- care teams ---------------------------------------------------------------------------

    def write_care_team(self, stored: Stored, team: CareTeam, now: datetime, *, new: bool) -> None:
        row = {
            "id": stored.id,
            "version_id": stored.version_id,
            "organization_id": team.organization_id,
            "name": team.name,
            "name_folded": fold(team.name),
            "active": team.active_status,
            "period_start": team.start,
            "period_end": team.end,
            "resource": dump(stored.resource),
            "updated_at": now,
        }
        self._write(t.care_team, [row], new)
        self._history("CareTeam", [row], now)
        self._touch_professionals(m.practitioner_id for m in team.members)
        member = t.care_team_member
        self.connection.execute(delete(member).where(member.c.care_team_id == stored.id))
        if team.members:
            self.connection.execute(
                insert(member),
                [
                    {
                        "care_team_id": stored.id,
                        "position": position,
                        "practitioner_id": m.practitioner_id,
                        "period_start": m.start,
                        "period_end": m.end,
                    }
                    for position, m in enumerate(team.members)
                ],
            )

    def care_team(self, team_id: str) -> CareTeam | None:
        ct, member = t.care_team, t.care_team_member
        row = self.connection.execute(select(ct).where(ct.c.id == team_id)).first()
        if row is None:
            return None
        members = self.connection.execute(
            select(member).where(member.c.care_team_id == team_id).order_by(member.c.position)
        ).all()
        return CareTeam(
            row.id,
            row.organization_id,
            row.name,
            bool(row.active),
            row.period_start,
            row.period_end,
            tuple(TeamMember(m.practitioner_id, m.period_start, m.period_end) for m in members),
        )

    def care_team_ids(self, practitioner_id: str, now: datetime) -> frozenset[str]:
        """The teams ``practitioner_id`` is an active member of, at ``now``, in active teams."""
        rows = self.connection.execute(
            _CARE_TEAMS_OF, {"practitioner_id": practitioner_id, "now": now}
        )
        return frozenset(row.id for row in rows)

    def search_care_teams(
        self,
        ids: Sequence[Alternatives],
        organizations: Sequence[Alternatives],
        participants: Sequence[Alternatives],
        page: Page,
        *,
        names: Sequence[Alternatives] = (),
        active: bool | None = None,
    ) -> SearchResult:
        """Care teams matching every criterion: ``names`` folded beginnings of a word of the
        team's name, ``active`` its status (its period is not looked at)."""
        ct, member = t.care_team, t.care_team_member
        where: list[ColumnElement[bool]] = []
        for alternatives in ids:
            where.append(ct.c.id.in_(alternatives))
        for alternatives in names:
            where.append(_any_of(alternatives, lambda v: _word_prefix(ct.c.name_folded, v)))
        if active is not None:
            where.append(ct.c.active == active)
        for alternatives in organizations:
            where.append(ct.c.organization_id.in_(alternatives))
        for alternatives in participants:
            where.append(
                ct.c.id.in_(
                    select(member.c.care_team_id).where(member.c.practitioner_id.in_(alternatives))
                )
            )
        return self._page(ct, where, page, order=(ct.c.name,))

    def count(self, resource_type: DirectoryType) -> int:
        """How many resources of a type the directory holds (the demo's summary)."""
        counted = select(func.count()).select_from(_TABLES[resource_type])
        return int(self.connection.execute(counted).scalar_one())


def _mandate(row: Any) -> AssistantMandate:
    return AssistantMandate(
        id=row.id,
        mandator_id=row.mandator_id,
        assistant_id=row.assistant_id,
        start=row.starts_at,
        end=row.ends_at,
        classes=frozenset(row.classes.split()) if row.classes is not None else None,
        ended_at=row.ended_at,
    )
