"""Typed directory searches, parsed from FHIR search parameters by the API layer.

Within one parameter, several values are alternatives (FHIR's comma = OR); repeating a
parameter combines with AND. Each string criterion is a tuple of alternatives; each query field
is a list of such criteria, all of which must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from carevault.domain.directory import Identifier

Alternatives = tuple[str, ...]


@dataclass(frozen=True)
class DateRange:
    """A FHIR date search: ``prefix`` applied to the half-open day range [start, end)."""

    prefix: str  # eq, ne, lt, le, gt, ge
    start: date
    end: date


@dataclass(frozen=True)
class Stored:
    """A resource as stored: its JSON (with ``id`` and ``meta``) and its current version."""

    id: str
    version_id: int
    resource: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    """One page of a search: the total that matched, and the page's resources."""

    total: int
    items: list[Stored]


@dataclass(frozen=True)
class Page:
    offset: int
    count: int


@dataclass
class PatientQuery:
    ids: list[Alternatives] = field(default_factory=list)
    family: list[Alternatives] = field(default_factory=list)  # folded prefixes
    given: list[Alternatives] = field(default_factory=list)  # folded prefixes
    name: list[Alternatives] = field(default_factory=list)  # folded, family or given
    birthdate: list[DateRange] = field(default_factory=list)
    gender: list[Alternatives] = field(default_factory=list)
    identifier: list[tuple[Identifier, ...]] = field(default_factory=list)
    postal_code: list[Alternatives] = field(default_factory=list)
    active: bool | None = None


@dataclass
class PractitionerQuery:
    ids: list[Alternatives] = field(default_factory=list)
    family: list[Alternatives] = field(default_factory=list)
    given: list[Alternatives] = field(default_factory=list)
    name: list[Alternatives] = field(default_factory=list)
    identifier: list[Alternatives] = field(default_factory=list)
    active: bool | None = None


@dataclass
class RoleQuery:
    ids: list[Alternatives] = field(default_factory=list)
    practitioner: list[Alternatives] = field(default_factory=list)
    organization: list[Alternatives] = field(default_factory=list)
    role: list[Alternatives] = field(default_factory=list)
    specialty: list[Alternatives] = field(default_factory=list)
    active: bool | None = None


@dataclass
class OrganizationQuery:
    ids: list[Alternatives] = field(default_factory=list)
    name: list[Alternatives] = field(default_factory=list)
    identifier: list[Alternatives] = field(default_factory=list)
    active: bool | None = None
