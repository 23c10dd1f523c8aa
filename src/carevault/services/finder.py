"""Finding a professional, an organization or a care team in the directory, as a patient
chooses whom to give access to or to block: by a name, a profession, a city.

The directory holds no medical content and patients may read it (`decide_directory`). A
professional's city is that of the organizations they work for (the directory gives people no
address), a care team's those of its managing organization. A care team is shown with its
organization and how many members it has now, never who they are: the team, as its
organization keeps it up to date, is what the patient chooses. Every search is bounded: at
most ``CANDIDATES`` entries are read from the directory for one search, and at most ``limit``
of each kind are returned, so a search that matches more says so (``more``) and the person
narrows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carevault.domain.authorization import Party
from carevault.domain.directory import DirectoryType
from carevault.domain.errors import InvalidInput
from carevault.domain.queries import (
    OrganizationQuery,
    Page,
    PractitionerQuery,
    RoleQuery,
    Stored,
)
from carevault.domain.text import fold
from carevault.services.unit_of_work import UnitOfWork, Units

CANDIDATES = 200  # directory entries read for one search, at most
MAX_TERM = 64  # characters of a name or a city
MIN_NAME = 2  # letters of a name, at least, when it is the only criterion


@dataclass(frozen=True)
class FoundParty:
    """One entry a patient may grant (or block, but a care team)."""

    party: Party
    id: str
    name: str
    profession: str | None  # a professional's (their first active role's); None otherwise
    organizations: tuple[str, ...]  # a professional's organizations; a team's managing one
    cities: tuple[str, ...]
    members: int | None = None  # a care team's active members now; None otherwise


@dataclass(frozen=True)
class Found:
    parties: tuple[FoundParty, ...]
    more: bool  # more entries match than are shown: narrow the search


def person_name(resource: dict[str, Any]) -> str:
    """A practitioner's name as the directory writes it (prefix, given names, family)."""
    name = (resource.get("name") or [{}])[0]
    return " ".join(
        [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
    ).strip()


_DIRECTORY_TYPE: dict[Party, DirectoryType] = {
    Party.PRACTITIONER: "Practitioner",
    Party.ORGANIZATION: "Organization",
    Party.CARE_TEAM: "CareTeam",
}


def party_names(uow: UnitOfWork, parties: list[tuple[Party, str]]) -> dict[str, str]:
    """Names of professionals, organizations and care teams as the directory gives them, by
    id (an id the directory does not know is left out)."""
    names: dict[str, str] = {}
    for party, party_id in set(parties):
        stored = uow.directory.read(_DIRECTORY_TYPE[party], party_id)
        if stored is None:
            continue
        names[party_id] = (
            person_name(stored.resource)
            if party is Party.PRACTITIONER
            else str(stored.resource.get("name", party_id))
        )
    return names


def _cities(resource: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        a["city"] for a in resource.get("address", []) if isinstance(a, dict) and a.get("city")
    )


def _term(value: str, what: str) -> str:
    value = value.strip()
    if len(value) > MAX_TERM:
        raise InvalidInput(f"a {what} has at most {MAX_TERM} characters", expression=what)
    return value


def find_parties(
    uow: UnitOfWork,
    *,
    name: str = "",
    profession: str = "",
    city: str = "",
    limit: int = 20,
    now: datetime | None = None,
) -> Found:
    """Professionals, organizations and care teams matching every criterion given: ``name``
    the beginning of a word of their name (accents and case ignored), ``profession`` a
    profession code (then only professionals), ``city`` the beginning of a city of theirs. A
    name of at least ``MIN_NAME`` letters or a profession is needed; a city alone would read
    the whole directory. Care teams are those active at ``now`` (by default, the present)."""
    now = now or datetime.now(UTC)
    name, city = fold(_term(name, "name")), fold(_term(city, "city"))
    profession = _term(profession, "profession")
    if len(name) < MIN_NAME and not profession:
        raise InvalidInput(
            f"give at least {MIN_NAME} letters of a name, or a profession", expression="name"
        )
    directory = uow.directory
    organizations: dict[str, dict[str, Any] | None] = {}

    def organization(organization_id: str) -> dict[str, Any] | None:
        if organization_id not in organizations:
            stored = directory.read("Organization", organization_id)
            organizations[organization_id] = stored.resource if stored else None
        return organizations[organization_id]

    def in_city(cities: tuple[str, ...]) -> bool:
        return not city or any(fold(c).startswith(city) for c in cities)

    page = Page(0, CANDIDATES)
    cut = False  # entries beyond those read match: the search must say so
    if name:
        people = directory.search_practitioners(
            PractitionerQuery(name=[(name,)], active=True), page
        ).items
    else:
        found_roles = directory.search_roles(RoleQuery(role=[(profession,)], active=True), page)
        roles = found_roles.items
        # The roles read may all be of people not offered (who left, or several roles each).
        cut = found_roles.total > len(roles)
        ids = list(
            dict.fromkeys(
                r.resource["practitioner"]["reference"].split("/")[-1]
                for r in roles
                if "practitioner" in r.resource
            )
        )
        people = (
            directory.search_practitioners(
                PractitionerQuery(ids=[tuple(ids)], active=True), page
            ).items
            if ids
            else []
        )
    more = cut or len(people) >= CANDIDATES

    def practitioners() -> Iterator[FoundParty]:
        for person in people:
            active = directory.active_roles(person.id)
            if not active or (profession and all(r.profession != profession for r in active)):
                continue
            chosen = next(r for r in active if not profession or r.profession == profession)
            orgs = [organization(r.organization_id) for r in active if r.organization_id]
            cities = tuple(dict.fromkeys(c for o in orgs if o for c in _cities(o)))
            if in_city(cities):
                yield FoundParty(
                    Party.PRACTITIONER,
                    person.id,
                    person_name(person.resource),
                    chosen.profession,
                    tuple(dict.fromkeys(str(o.get("name", "")) for o in orgs if o)),
                    cities,
                )

    def organizations_named(orgs_found: list[Stored]) -> Iterator[FoundParty]:
        for stored in orgs_found:
            cities = _cities(stored.resource)
            if in_city(cities):
                name_ = str(stored.resource.get("name", ""))
                yield FoundParty(Party.ORGANIZATION, stored.id, name_, None, (), cities)

    def teams_named(teams: list[Stored]) -> Iterator[FoundParty]:
        for stored in teams:
            team = directory.care_team(stored.id)
            if team is None or not team.active(now):
                continue
            managing = organization(team.organization_id)
            cities = _cities(managing) if managing else ()
            if in_city(cities):
                yield FoundParty(
                    Party.CARE_TEAM,
                    team.id,
                    team.name,
                    None,
                    (str(managing.get("name", "")),) if managing else (),
                    cities,
                    sum(1 for m in team.members if m.active(now)),
                )

    found, beyond = _up_to(practitioners(), limit)
    more = more or beyond
    if name and not profession:
        orgs_found = directory.search_organizations(
            OrganizationQuery(name=[(name,)], active=True), page
        ).items
        teams = directory.search_care_teams([], [], [], page, names=[(name,)], active=True).items
        more = more or len(orgs_found) >= CANDIDATES or len(teams) >= CANDIDATES
        for candidates in (organizations_named(orgs_found), teams_named(teams)):
            taken, beyond = _up_to(candidates, limit)
            found += taken
            more = more or beyond
    return Found(tuple(found), more)


def _up_to(candidates: Iterator[FoundParty], limit: int) -> tuple[list[FoundParty], bool]:
    """The first ``limit`` candidates, and whether there is one more beyond them (the search
    then says that it shows only some)."""
    taken = list(itertools.islice(candidates, limit + 1))
    return taken[:limit], len(taken) > limit


def active_care_team(uow: UnitOfWork, team_id: str, now: datetime) -> bool:
    """Whether ``team_id`` is a care team of the directory, active at ``now``: the only teams
    the portal offers, and lets a patient give access to."""
    team = uow.directory.care_team(team_id)
    return team is not None and team.active(now)


# --- the same, each in a transaction of its own (the portal's pages) ---------------------------


def lookup_party_names(units: Units, parties: list[tuple[Party, str]]) -> dict[str, str]:
    """`party_names`, in a read of its own."""
    with units() as uow:
        return party_names(uow, parties)


def search_parties(
    units: Units, *, name: str = "", profession: str = "", city: str = "", now: datetime
) -> Found:
    """`find_parties`, in a read of its own."""
    with units() as uow:
        return find_parties(uow, name=name, profession=profession, city=city, now=now)


def practitioner_by_number(units: Units, number: str) -> str | None:
    """The practitioner whose professional number (an identifier's value, any system) this
    is, if one is: a patient names a professional by the number on their letterhead."""
    number = number.strip()
    if not number or len(number) > MAX_TERM:
        return None
    with units() as uow:
        return uow.directory.practitioner_ids_by_identifier([number]).get(number)


def care_team_is_active(units: Units, team_id: str, now: datetime) -> bool:
    """`active_care_team`, in a read of its own."""
    with units() as uow:
        return active_care_team(uow, team_id, now)


__all__ = [
    "CANDIDATES",
    "Found",
    "FoundParty",
    "active_care_team",
    "care_team_is_active",
    "find_parties",
    "lookup_party_names",
    "party_names",
    "person_name",
    "practitioner_by_number",
    "search_parties",
]
