"""The directories (MPI and HPD) in memory: what services/directory.py, services/finder.py,
services/professionals.py and services/anomaly_detection.py ask of `DirectoryStore`, answered as
the real store answers (`tests/integration/test_store_contracts_directory.py` and, for the
detector's facts, `test_store_contracts_alerts.py` run the same checks on both).

Each table keeps its rows as the real one does: the resource as stored text (so a read returns a
fresh copy, as ``json.loads`` does) beside the index the store writes (the service's entry). The
database's constraints are kept too (an identifier given twice, a role of no practitioner, a
version written twice): where the real store's statement fails, which the unit of work turns
into `Conflict`, the fake raises that `Conflict` and changes nothing.

Searches filter in memory with the real ones' semantics: a prefix of the folded column (or of any
word of it), alternatives OR'ed and criteria AND'ed, ordered as the SQL orders them (strings by
code point: SQLite's order, and PostgreSQL's under the C collation) and then by id.

The parent `FakeDirectory`'s dicts (``patients``, ``organizations``, ``practitioners``) are kept
as views of these tables, so that its methods answer from the same rows and its planting helpers
(``add_patient``, ``add_organization``, ``add_practitioner``) write rows here.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from carevault import bootstrap
from carevault.adapters.storage.directory_store import (
    ActiveRole,
    PatientWrite,
    SearchResult,
    Stored,
    dump,
)
from carevault.domain.directory import DirectoryType, MergeState
from carevault.domain.errors import Conflict
from carevault.domain.mandates import AssistantMandate, CareTeam
from carevault.domain.queries import (
    Alternatives,
    DateRange,
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
)
from carevault.domain.text import fold
from carevault.fhirmodel.directory import OrganizationEntry, PractitionerEntry, RoleEntry
from carevault.services.directory import DirectoryContext
from carevault.settings import Settings
from support.fake_uow import FakeDirectory

# What `UnitOfWork` says when the database refuses a statement (an IntegrityError).
REFUSED = "the change conflicts with stored data (a duplicate identifier?)"

_TYPES = {
    "patient": "Patient",
    "practitioner": "Practitioner",
    "practitioner_role": "PractitionerRole",
    "organization": "Organization",
    "care_team": "CareTeam",
}
_NAMES: dict[str, str] = {kind: name for name, kind in _TYPES.items()}
_MANDATE_LIMIT = 1_000


@dataclass(frozen=True)
class PatientIndex:
    """The patient row's columns and its index rows (names, identifiers, postal codes)."""

    national_id: str
    birth_date: date | None
    gender: str | None
    active: bool
    merged_into: str | None
    names: tuple[tuple[str, str], ...]  # (family folded, given names folded and joined)
    identifiers: tuple[tuple[str, str], ...]  # (system, value), the national one first
    postal_codes: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    version_id: int
    resource: str  # as stored: `dump`
    index: Any  # PatientIndex, PractitionerEntry, RoleEntry, OrganizationEntry or CareTeam

    def stored(self, resource_id: str) -> Stored:
        return Stored(resource_id, self.version_id, json.loads(self.resource))


@dataclass(frozen=True)
class MandateRow:
    mandate: AssistantMandate
    created_at: datetime
    created_by: str
    ended_by: str | None = None


@dataclass
class MergeRow:
    patient_id: str
    survivor_id: str
    merged_at: datetime
    unmerged_at: datetime | None = None


def _refuse(broken: bool) -> None:
    if broken:
        raise Conflict(REFUSED)


def _unique(values: Iterable[object]) -> bool:
    seen = [v for v in values if v is not None]
    return len(seen) == len(set(seen))


def _prefix(column: str, value: str) -> bool:
    """SQL ``LIKE 'value%'`` (the value's wildcards escaped: literal)."""
    return column.startswith(value)


def _word_prefix(column: str, value: str) -> bool:
    """SQL ``LIKE 'value%' OR LIKE '% value%'``: a prefix of any space-separated word."""
    return column.startswith(value) or f" {value}" in column


def _any_of(alternatives: Alternatives, test: Callable[[str], bool]) -> bool:
    return any(test(value) for value in alternatives)


def _in_range(value: date | None, criterion: DateRange) -> bool:
    if value is None:  # NULL compares to nothing
        return False
    start, end = criterion.start, criterion.end
    return {
        "eq": start <= value < end,
        "ne": value < start or value >= end,
        "lt": value < start,
        "le": value < end,
        "gt": value >= end,
        "ge": value >= start,
    }[criterion.prefix]


def _page(found: list[tuple[str, Row]], page: Page) -> SearchResult:
    return SearchResult(
        len(found), [row.stored(i) for i, row in found[page.offset : page.offset + page.count]]
    )


class FakeDirectoryStore(FakeDirectory):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, Row]] = {name: {} for name in _TYPES}
        # (resource type, id, version) -> (resource as stored, recorded at)
        self.history_rows: dict[tuple[str, str, int], tuple[str, datetime]] = {}
        self.merges: list[MergeRow] = []
        self.mandate_rows: dict[str, MandateRow] = {}
        self.touched_patients: list[str] = []
        self.touched_professionals: list[str] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> FakeDirectoryStore:
        """A copy whose lists of what was written start empty: the unit of work keeps copies
        as its committed state and restores one when a block ends, so these lists hold what the
        current block wrote, as the real store (new at each ``with``) does."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for name, value in vars(self).items():
            setattr(clone, name, copy.deepcopy(value, memo))
        clone.touched_patients, clone.touched_professionals = [], []
        return clone

    # --- the parent's planting helpers, as rows -------------------------------------------

    def add_patient(self, patient_id: str, identifiers: list[dict[str, str]]) -> None:
        resource = {"resourceType": "Patient", "id": patient_id, "identifier": identifiers}
        pairs = tuple((i["system"], i["value"]) for i in identifiers)
        # Which of them is the national one is the services' to know: the id stands for it.
        index = PatientIndex(patient_id, None, None, True, None, (), pairs, ())
        self.tables["patient"][patient_id] = Row(1, dump(resource), index)
        self._sync()

    def add_organization(self, organization_id: str, patient_id_system: str | None = None,
                         resource: dict[str, Any] | None = None) -> None:
        resource = resource or {"resourceType": "Organization", "id": organization_id}
        entry = OrganizationEntry(organization_id, organization_id, patient_id_system, True)
        self.tables["organization"][organization_id] = Row(1, dump(resource), entry)
        self._sync()

    def add_practitioner(self, practitioner_id: str, identifier: str) -> None:
        resource = {"resourceType": "Practitioner", "id": practitioner_id}
        entry = PractitionerEntry(identifier, "", "", "active", True)
        self.tables["practitioner"][practitioner_id] = Row(1, dump(resource), entry)
        self._sync()

    def _sync(self) -> None:
        self.patients = {i: json.loads(r.resource) for i, r in self.tables["patient"].items()}
        self.organizations = {
            i: (json.loads(r.resource), r.index.patient_id_system)
            for i, r in self.tables["organization"].items()
        }
        self.practitioners = {r.index.identifier: i for i, r in self.tables["practitioner"].items()}

    # --- history and generic reads --------------------------------------------------------

    def history(self, resource_type: str, resource_id: str) -> list[Stored]:
        found = [
            Stored(resource_id, version, json.loads(text))
            for (kind, i, version), (text, _) in self.history_rows.items()
            if (kind, i) == (resource_type, resource_id)
        ]
        return sorted(found, key=lambda s: s.version_id, reverse=True)

    def version(self, resource_type: str, resource_id: str, version_id: int) -> Stored | None:
        found = self.history_rows.get((resource_type, resource_id, version_id))
        return None if found is None else Stored(resource_id, version_id, json.loads(found[0]))

    def read(self, resource_type: DirectoryType, resource_id: str) -> Stored | None:
        row = self.tables[_NAMES[resource_type]].get(resource_id)
        return None if row is None else row.stored(resource_id)

    def existing_ids(self, resource_type: DirectoryType, ids: Iterable[str]) -> set[str]:
        return set(ids) & set(self.tables[_NAMES[resource_type]])

    def count(self, resource_type: DirectoryType) -> int:
        return len(self.tables[_NAMES[resource_type]])

    def _write(self, name: str, rows: dict[str, Row], new: bool, now: datetime,
               unique: Sequence[Callable[[Any], object]] = ()) -> None:
        """Insert (``new``) or update rows and add a history row each, refused as the
        constraints refuse them (checked first: a refused write changes nothing). An update of
        an id the table does not hold changes no row, as an UPDATE of no row, but its history
        row is written all the same."""
        table = self.tables[name]
        _refuse(new and any(i in table for i in rows))
        written = rows if new else {i: row for i, row in rows.items() if i in table}
        after = {**table, **written}
        _refuse(any(not _unique(key(r.index) for r in after.values()) for key in unique))
        keys = [(_TYPES[name], i, row.version_id) for i, row in rows.items()]
        _refuse(any(k in self.history_rows for k in keys))
        table.update(written)
        for key, row in zip(keys, rows.values(), strict=True):
            self.history_rows[key] = (row.resource, now)
        self._sync()

    def _touch_professionals(self, ids: Iterable[str | None]) -> None:
        for practitioner_id in ids:
            if practitioner_id and practitioner_id not in self.touched_professionals:
                self.touched_professionals.append(practitioner_id)

    # --- patients -------------------------------------------------------------------------

    def patient_merge_state(self, patient_id: str) -> MergeState | None:
        row = self.tables["patient"].get(patient_id)
        return None if row is None else MergeState(patient_id, row.index.merged_into)

    def identifier_owners(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        wanted = set(pairs)
        return {
            pair: patient_id
            for patient_id, row in self.tables["patient"].items()
            for pair in row.index.identifiers
            if pair in wanted
        }

    def write_patients(self, writes: Sequence[PatientWrite], now: datetime, *,
                       national_system: str, new: bool) -> None:
        if not writes:
            return
        table = self.tables["patient"]
        rows = {}
        for w in writes:
            index = PatientIndex(
                national_id=w.entry.national_id,
                birth_date=w.entry.birth_date,
                gender=w.entry.gender,
                active=w.entry.active,
                merged_into=w.merged_into,
                names=tuple((fold(n.family), fold(" ".join(n.given))) for n in w.entry.names),
                identifiers=((national_system, w.entry.national_id),
                             *((i.system, i.value) for i in w.entry.local_ids)),
                postal_codes=tuple(code.strip().upper() for code in w.entry.postal_codes),
            )
            rows[w.id] = Row(w.version_id, dump(w.resource), index)
        # The index rows of an id the table does not hold break their foreign key; so does a
        # merge into a patient that does not exist.
        _refuse(not new and any(i not in table for i in rows))
        _refuse(any(r.index.merged_into not in (None, *table, *rows) for r in rows.values()))
        after = {**table, **rows}.values()
        _refuse(not _unique(r.index.national_id for r in after))
        _refuse(not _unique(pair for r in after for pair in r.index.identifiers))
        _refuse(not _unique(w.id for w in writes))
        self._write("patient", rows, new, now)
        self.touched_patients += [i for i in rows if i not in self.touched_patients]

    def record_merge(self, source_id: str, survivor_id: str, now: datetime) -> None:
        _refuse(not {source_id, survivor_id} <= set(self.tables["patient"]))
        self.merges.append(MergeRow(source_id, survivor_id, now))

    def record_unmerge(self, source_id: str, now: datetime) -> None:
        for merge in self.merges:
            if merge.patient_id == source_id and merge.unmerged_at is None:
                merge.unmerged_at = now

    def merged_into(self, survivor_id: str) -> list[str]:
        return sorted(
            i for i, row in self.tables["patient"].items() if row.index.merged_into == survivor_id
        )

    def patients_by_identifier(self, system: str, value: str) -> list[str]:
        return [
            i for i, row in self.tables["patient"].items()
            if (system, value) in row.index.identifiers
        ]

    def identifiers_of(self, patient_ids: Sequence[str]) -> list[tuple[str, str]]:
        table = self.tables["patient"]
        return sorted(pair for i in set(patient_ids) if i in table
                      for pair in table[i].index.identifiers)

    def search_patients(self, query: PatientQuery, page: Page) -> SearchResult:
        table = self.tables["patient"]
        owners: list[set[str]] = []
        for identifiers in query.identifier:
            # A merged entry's identifiers find its survivor.
            owners.append({
                row.index.merged_into or i
                for i, row in table.items()
                for system, value in row.index.identifiers
                if any(value == x.value and (not x.system or system == x.system)
                       for x in identifiers)
            })

        def named(ix: PatientIndex, alternatives: Alternatives,
                  test: Callable[[str, str, str], bool]) -> bool:
            """Some name row of the patient matches one of the alternatives."""
            return any(test(family, given, v)
                       for family, given in ix.names for v in alternatives)

        def matches(i: str, ix: PatientIndex) -> bool:
            return (
                ix.merged_into is None
                and all(i in ids for ids in query.ids)
                and all(named(ix, a, lambda f, _, v: _prefix(f, v)) for a in query.family)
                and all(named(ix, a, lambda _, g, v: _word_prefix(g, v)) for a in query.given)
                and all(named(ix, a, lambda f, g, v: _word_prefix(f, v) or _word_prefix(g, v))
                        for a in query.name)
                and all(_in_range(ix.birth_date, c) for c in query.birthdate)
                and all(ix.gender in a for a in query.gender)
                and all(i in found for found in owners)
                and all(any(_prefix(code, v.upper()) for code in ix.postal_codes for v in a)
                        for a in query.postal_code)
                and query.active in (None, ix.active)
            )

        found = sorted((i, row) for i, row in table.items() if matches(i, row.index))
        return _page(found, page)

    # --- what the security officer's detector reads -----------------------------------------

    def family_name_shares(self, at_least: float) -> dict[str, float]:
        """The share of patients bearing each family name (folded, each one's first name) that
        at least ``at_least`` of them bear, and at least two: `DirectoryStore`'s common names."""
        firsts = [row.index.names[0][0] for row in self.tables["patient"].values()
                  if row.index.names]
        if not firsts:
            return {}
        least = max(2, math.ceil(len(firsts) * at_least))
        return {name: firsts.count(name) / len(firsts) for name in set(firsts)
                if firsts.count(name) >= least}

    def professionals_as_patients(self, national_system: str) -> dict[str, frozenset[str]]:
        """Patients a Practitioner's national identifier (``national_system``) names, each with
        the organizations of that practitioner's active roles (none: an empty set)."""
        numbers: dict[str, str] = {}
        for practitioner_id, row in self.tables["practitioner"].items():
            for identifier in json.loads(row.resource).get("identifier", []):
                if identifier.get("system") == national_system and identifier.get("value"):
                    numbers[str(identifier["value"])] = practitioner_id
        organizations: dict[str, set[str]] = {}
        for row in self.tables["practitioner_role"].values():
            entry = row.index
            if entry.practitioner_id in numbers.values() and entry.active \
                    and entry.organization_id is not None:
                organizations.setdefault(entry.practitioner_id, set()).add(entry.organization_id)
        return {
            patient_id: frozenset(organizations.get(numbers[value], set()))
            for patient_id, row in self.tables["patient"].items()
            for system, value in row.index.identifiers
            if system == national_system and value in numbers
        }

    # --- organizations --------------------------------------------------------------------

    def write_organizations(self, writes: Sequence[tuple[Stored, OrganizationEntry]],
                            now: datetime, *, new: bool) -> None:
        rows = {s.id: Row(s.version_id, dump(s.resource), e) for s, e in writes}
        _refuse(not _unique(s.id for s, _ in writes))
        self._write("organization", rows, new, now,
                    unique=(lambda e: e.identifier, lambda e: e.patient_id_system))

    def organization_ids_by_identifier(self, values: Iterable[str]) -> dict[str, str]:
        wanted = set(values)
        return {
            row.index.identifier: i
            for i, row in self.tables["organization"].items()
            if row.index.identifier in wanted
        }

    def search_organizations(self, query: OrganizationQuery, page: Page) -> SearchResult:
        def matches(i: str, e: OrganizationEntry) -> bool:
            folded = fold(e.name)
            return (
                all(i in ids for ids in query.ids)
                and all(_any_of(a, lambda v: _word_prefix(folded, v)) for a in query.name)
                and all(e.identifier in a for a in query.identifier)
                and query.active in (None, e.active)
            )

        found = [(i, r) for i, r in self.tables["organization"].items() if matches(i, r.index)]
        return _page(sorted(found, key=lambda f: (fold(f[1].index.name), f[0])), page)

    # --- practitioners --------------------------------------------------------------------

    def write_practitioners(self, writes: Sequence[tuple[Stored, PractitionerEntry]],
                            now: datetime, *, new: bool) -> None:
        rows = {s.id: Row(s.version_id, dump(s.resource), e) for s, e in writes}
        _refuse(not _unique(s.id for s, _ in writes))
        self._write("practitioner", rows, new, now, unique=(lambda e: e.identifier,))
        self._touch_professionals(s.id for s, _ in writes)

    def search_practitioners(self, query: PractitionerQuery, page: Page) -> SearchResult:
        def matches(i: str, e: PractitionerEntry) -> bool:
            family, given = fold(e.family), fold(e.given)
            return (
                all(i in ids for ids in query.ids)
                and all(_any_of(a, lambda v: _prefix(family, v)) for a in query.family)
                and all(_any_of(a, lambda v: _word_prefix(given, v)) for a in query.given)
                and all(_any_of(a, lambda v: _word_prefix(family, v) or _word_prefix(given, v))
                        for a in query.name)
                and all(e.identifier in a for a in query.identifier)
                and query.active in (None, e.active)
            )

        found = [(i, r) for i, r in self.tables["practitioner"].items() if matches(i, r.index)]
        return _page(sorted(found, key=lambda f: (fold(f[1].index.family), f[0])), page)

    # --- practitioner roles ---------------------------------------------------------------

    def write_roles(self, writes: Sequence[tuple[Stored, RoleEntry]], now: datetime, *,
                    new: bool) -> None:
        rows = {s.id: Row(s.version_id, dump(s.resource), e) for s, e in writes}
        _refuse(not _unique(s.id for s, _ in writes))
        _refuse(any(e.practitioner_id not in self.tables["practitioner"] for _, e in writes))
        _refuse(any(e.organization_id not in (None, *self.tables["organization"])
                    for _, e in writes))
        self._write("practitioner_role", rows, new, now)
        self._touch_professionals(e.practitioner_id for _, e in writes)

    def search_roles(self, query: RoleQuery, page: Page) -> SearchResult:
        def matches(i: str, e: RoleEntry) -> bool:
            return (
                all(i in ids for ids in query.ids)
                and all(e.practitioner_id in a for a in query.practitioner)
                and all(e.organization_id in a for a in query.organization)
                and all(e.profession in a for a in query.role)
                and all(e.specialty in a for a in query.specialty)
                and query.active in (None, e.active)
            )

        found = [(i, r) for i, r in self.tables["practitioner_role"].items() if matches(i, r.index)]
        return _page(sorted(found, key=lambda f: f[0]), page)

    def practitioner(self, practitioner_id: str) -> Stored | None:
        return self.read("Practitioner", practitioner_id)

    def active_roles(self, practitioner_id: str) -> list[ActiveRole]:
        if practitioner_id not in self.tables["practitioner"]:
            return []
        return [
            ActiveRole(i, r.index.organization_id, r.index.profession, r.index.specialty)
            for i, r in sorted(self.tables["practitioner_role"].items())
            if r.index.practitioner_id == practitioner_id and r.index.active
        ]

    # --- assistants' mandates -------------------------------------------------------------

    def add_mandate(self, mandate: AssistantMandate, now: datetime, by: str) -> None:
        _refuse(mandate.id in self.mandate_rows)
        _refuse(not {mandate.mandator_id, mandate.assistant_id} <= set(self.tables["practitioner"]))
        # Stored as the real column holds it: the classes space-separated, no end yet.
        classes = (None if mandate.classes is None
                   else frozenset(" ".join(sorted(mandate.classes)).split()))
        self.mandate_rows[mandate.id] = MandateRow(
            replace(mandate, classes=classes, ended_at=None), now, by)

    def end_mandate(self, mandate_id: str, mandator_id: str, now: datetime, by: str) -> bool:
        row = self.mandate_rows.get(mandate_id)
        if (row is None or row.mandate.mandator_id != mandator_id
                or row.mandate.ended_at is not None or row.mandate.end <= now):
            return False
        self.mandate_rows[mandate_id] = replace(row, mandate=replace(row.mandate, ended_at=now),
                                                ended_by=by)
        return True

    def _mandates(self, test: Callable[[AssistantMandate], bool]) -> list[AssistantMandate]:
        found = sorted((r.mandate for r in self.mandate_rows.values() if test(r.mandate)),
                       key=lambda m: m.id)
        return sorted(found, key=lambda m: m.start, reverse=True)

    def mandates(self, *, assistant_id: str | None = None,
                 mandator_id: str | None = None) -> list[AssistantMandate]:
        return self._mandates(lambda m: assistant_id in (None, m.assistant_id)
                              and mandator_id in (None, m.mandator_id))[:_MANDATE_LIMIT]

    def active_mandates(self, assistant_id: str, now: datetime) -> list[AssistantMandate]:
        return self._mandates(lambda m: m.assistant_id == assistant_id and m.ended_at is None
                              and m.start <= now < m.end)

    # --- care teams -----------------------------------------------------------------------

    def write_care_team(self, stored: Stored, team: CareTeam, now: datetime, *,
                        new: bool) -> None:
        rows = {stored.id: Row(stored.version_id, dump(stored.resource), team)}
        _refuse(team.organization_id not in self.tables["organization"])
        _refuse(any(m.practitioner_id not in self.tables["practitioner"] for m in team.members))
        # Members of a team the table does not hold break their foreign key.
        _refuse(not new and bool(team.members) and stored.id not in self.tables["care_team"])
        self._write("care_team", rows, new, now)
        self._touch_professionals(m.practitioner_id for m in team.members)

    def care_team(self, team_id: str) -> CareTeam | None:
        row = self.tables["care_team"].get(team_id)
        return None if row is None else replace(row.index, id=team_id)

    def care_team_ids(self, practitioner_id: str, now: datetime) -> frozenset[str]:
        return frozenset(
            i for i, row in self.tables["care_team"].items()
            if row.index.reaches(practitioner_id, now)
        )

    def search_care_teams(self, ids: Sequence[Alternatives], organizations: Sequence[Alternatives],
                          participants: Sequence[Alternatives], page: Page, *,
                          names: Sequence[Alternatives] = (),
                          active: bool | None = None) -> SearchResult:
        def matches(i: str, team: CareTeam) -> bool:
            members = {m.practitioner_id for m in team.members}
            folded = fold(team.name)
            return (
                all(i in a for a in ids)
                and all(team.organization_id in a for a in organizations)
                and all(members & set(a) for a in participants)
                and all(_any_of(a, lambda v: _word_prefix(folded, v)) for a in names)
                and active in (None, team.active_status)
            )

        found = [(i, r) for i, r in self.tables["care_team"].items() if matches(i, r.index)]
        return _page(sorted(found, key=lambda f: (f[1].index.name, f[0])), page)


def directory_context(clock: Callable[[], datetime]) -> DirectoryContext:
    """The directory's context as `bootstrap` builds it with the default settings (the built-in
    professions, the default identifier systems), on the given clock."""
    settings = Settings(database_url="sqlite://", environment="dev",
                        _env_file=None)  # type: ignore[call-arg]
    return replace(bootstrap.directory_context(settings), clock=clock)
