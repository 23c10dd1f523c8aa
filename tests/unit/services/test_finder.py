"""Finding a professional, an organization or a care team, as a patient does to grant (or
block) them, on a unit of work in memory: by the beginning of a word of a name (accents and case
ignored), a profession, a city of their organizations; bounded, and saying so when more match."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from carevault.adapters.storage.directory_store import Stored
from carevault.domain.authorization import Party
from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.directory import (
    new_organization,
    new_practitioner,
    new_role,
    practitioner_entry,
    role_entry,
)
from carevault.services import directory as svc
from carevault.services.directory import NewProfessional
from carevault.services.finder import (
    CANDIDATES,
    FoundParty,
    _up_to,
    active_care_team,
    care_team_is_active,
    find_parties,
    lookup_party_names,
    party_names,
    person_name,
    practitioner_by_number,
    search_parties,
)
from carevault.services.professionals import create_care_team
from support.fake_directory import directory_context
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CTX = directory_context(lambda: NOW)


class World:
    """Two hospitals and a practice in three towns; a cardiologist working in two of them, a
    nurse, a physician who left (inactive) and one with no role any more."""

    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        with self.uow as uow:
            self.kirchberg, self.esch, self.practice = (s.id for s in svc.register_organizations(
                uow, CTX, [
                    new_organization(CTX.systems, identifier="ORG-1", name="Hôpital Kirchberg",
                                     city="Luxembourg"),
                    new_organization(CTX.systems, identifier="ORG-2", name="Clinique d'Esch",
                                     city="Esch-sur-Alzette"),
                    new_organization(CTX.systems, identifier="ORG-3", name="Cabinet Müller",
                                     city="Ettelbruck")]))
            registered = svc.register_professionals(uow, CTX, [
                self.professional("HP-1", "Müller", "physician", self.kirchberg, "cardiology"),
                self.professional("HP-2", "Weber", "nurse", self.esch),
                self.professional("HP-3", "Mullet", "physician", self.kirchberg)])
            (self.muller, _), (self.weber, _), (self.mullet, _) = registered
            svc.create_role(uow, CTX, new_role(
                CTX.professions, practitioner_id=self.muller.id, profession="physician",
                organization_id=self.esch))
            left = {**self.mullet.resource, "active": False}
            svc.update_practitioner(uow, CTX, self.mullet.id, left)
            self.mulder = svc.create_practitioner(uow, CTX, new_practitioner(
                CTX.systems, identifier="HP-4", family="Mulder", given=["Eva"]))

    @staticmethod
    def professional(identifier: str, family: str, profession: str, organization_id: str,
                     specialty: str | None = None) -> NewProfessional:
        given = {"Müller": ["Anne"], "Weber": ["Jean"]}.get(family, ["Luc"])
        resource = new_practitioner(CTX.systems, identifier=identifier, family=family,
                                    given=given)
        return NewProfessional(resource, profession, specialty, organization_id)


@pytest.fixture
def world() -> World:
    return World()


def test_a_name_finds_the_professionals_and_organizations_it_begins_a_word_of(
        world: World) -> None:
    found = find_parties(world.uow, name="MUL")
    assert not found.more
    [doctor, practice] = found.parties
    assert doctor == FoundParty(Party.PRACTITIONER, world.muller.id, "Anne Müller", "physician",
                                doctor.organizations, doctor.cities)
    assert set(doctor.organizations) == {"Hôpital Kirchberg", "Clinique d'Esch"}
    assert set(doctor.cities) == {"Luxembourg", "Esch-sur-Alzette"}
    assert practice == FoundParty(Party.ORGANIZATION, world.practice, "Cabinet Müller", None,
                                  (), ("Ettelbruck",))
    # Accents and case are ignored; a part of a word inside it is not its beginning.
    assert [p.id for p in find_parties(world.uow, name="  müll ").parties] == [
        world.muller.id, world.practice]
    assert find_parties(world.uow, name="ller").parties == ()


def test_who_left_or_holds_no_active_role_is_not_offered(world: World) -> None:
    names = {p.name for p in find_parties(world.uow, name="mul").parties}
    assert "Luc Mullet" not in names and "Eva Mulder" not in names
    assert find_parties(world.uow, name="eva").parties == ()


def test_a_profession_alone_lists_its_professionals_and_no_organization(world: World) -> None:
    found = find_parties(world.uow, profession="nurse")
    assert found.parties == (FoundParty(Party.PRACTITIONER, world.weber.id, "Jean Weber",
                                        "nurse", ("Clinique d'Esch",), ("Esch-sur-Alzette",)),)
    assert [p.id for p in find_parties(world.uow, profession="physician").parties] == [
        world.muller.id]
    assert find_parties(world.uow, profession="midwife").parties == ()


def test_a_name_and_a_profession_must_both_hold(world: World) -> None:
    assert find_parties(world.uow, name="mul", profession="nurse").parties == ()
    [nurse] = find_parties(world.uow, name="jean", profession="nurse").parties
    assert (nurse.id, nurse.profession) == (world.weber.id, "nurse")


def test_a_city_is_the_beginning_of_a_city_of_theirs(world: World) -> None:
    in_esch = find_parties(world.uow, name="mul", city="Ésch")
    assert [p.id for p in in_esch.parties] == [world.muller.id]  # not the practice
    assert [p.id for p in find_parties(world.uow, name="mul", city="ettel").parties] == [
        world.practice]
    assert find_parties(world.uow, name="mul", city="alzette").parties == ()
    assert find_parties(world.uow, profession="nurse", city="lux").parties == ()


@pytest.mark.parametrize(("criteria", "message"), [
    ({"name": "m"}, "give at least 2 letters of a name, or a profession"),
    ({"name": "   ", "city": "Luxembourg"}, "give at least 2 letters of a name"),
    ({"name": "m" * 65}, "a name has at most 64 characters"),
    ({"name": "mul", "city": "x" * 65}, "a city has at most 64 characters"),
    ({"profession": "p" * 65}, "a profession has at most 64 characters"),
])
def test_a_search_that_would_read_the_whole_directory_is_refused(
        world: World, criteria: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        find_parties(world.uow, **criteria)


def test_one_letter_is_enough_beside_a_profession(world: World) -> None:
    assert [p.id for p in find_parties(world.uow, name="j", profession="nurse").parties] == [
        world.weber.id]


def test_at_most_the_limit_of_each_kind_is_shown_and_more_says_there_are_others(
        world: World) -> None:
    with world.uow as uow:
        svc.register_professionals(uow, CTX, [
            world.professional(f"HP-K{i}", f"Klein{i}", "physician", world.kirchberg)
            for i in range(3)])
    two = find_parties(world.uow, name="klein", limit=2)
    assert [p.name for p in two.parties] == ["Luc Klein0", "Luc Klein1"] and two.more
    three = find_parties(world.uow, name="klein", limit=3)
    assert len(three.parties) == 3 and not three.more


def test_professionals_beyond_the_roles_read_are_announced(world: World) -> None:
    """A profession's roles are read up to `CANDIDATES`; when more roles than that hold it,
    those read may all belong to people not offered (who left, here), and the nurse behind
    them is never looked at: the search must say there is more, not that there is nobody."""
    with world.uow as uow:
        for i in range(CANDIDATES):
            practitioner = new_practitioner(CTX.systems, identifier=f"HP-OLD-{i}",
                                            family="Retired", given=["Old"])
            practitioner["active"] = False
            stored = Stored(f"old-{i:03}", 1, practitioner)
            uow.directory.write_practitioners(
                [(stored, practitioner_entry(practitioner, CTX.systems))], NOW, new=True)
            role = new_role(CTX.professions, practitioner_id=stored.id, profession="midwife")
            uow.directory.write_roles([(Stored(f"0-role-{i:03}", 1, role),
                                        role_entry(role, CTX.professions))], NOW, new=True)
        svc.register_professionals(uow, CTX, [  # her role's random id sorts after "0-role-…"
            world.professional("HP-M", "Hebamme", "midwife", world.esch)])
        uow.commit()
    found = find_parties(world.uow, profession="midwife")
    assert found.parties == () and found.more


def test_party_names_are_the_directorys_and_unknown_ids_are_left_out(world: World) -> None:
    with world.uow as uow:
        names = party_names(uow, [
            (Party.PRACTITIONER, world.muller.id), (Party.ORGANIZATION, world.esch),
            (Party.PRACTITIONER, world.esch), (Party.ORGANIZATION, "nowhere"),
            (Party.PRACTITIONER, world.muller.id)])
    assert names == {world.muller.id: "Anne Müller", world.esch: "Clinique d'Esch"}


def test_a_persons_name_reads_prefix_given_names_and_family() -> None:
    assert person_name({"name": [{"prefix": ["Dr"], "given": ["Anne", "Marie"],
                                  "family": "Müller"}, {"family": "Other"}]}) == (
        "Dr Anne Marie Müller")
    assert person_name({"name": [{"given": ["Anne"]}]}) == "Anne"
    assert person_name({}) == ""


# --- care teams ------------------------------------------------------------------------------

def _team(world: World, name: str, members: list[tuple[str, str | None]], *,
          organization: str | None = None, status: str = "active",
          period_end: str | None = None) -> str:
    """A care team written as the registrar's API writes it; ``members`` are (practitioner,
    end of their membership or None)."""
    resource: dict[str, object] = {
        "resourceType": "CareTeam", "status": status, "name": name,
        "managingOrganization": [{"reference": f"Organization/{organization or world.esch}"}],
        "participant": [
            {"member": {"reference": f"Practitioner/{who}"},
             **({"period": {"end": end}} if end else {})}
            for who, end in members],
    }
    if period_end:
        resource["period"] = {"end": period_end}
    with world.uow as uow:
        return create_care_team(uow, resource, NOW).id


def test_a_name_finds_an_active_care_team_with_its_organization_and_member_count(
        world: World) -> None:
    team = _team(world, "Équipe Soins Palliatifs",
                 [(world.weber.id, None), (world.muller.id, None),
                  (world.mullet.id, "2026-11-01T00:00:00Z")])  # his membership ended
    [found] = find_parties(world.uow, name="equipe", now=NOW).parties
    assert found == FoundParty(Party.CARE_TEAM, team, "Équipe Soins Palliatifs", None,
                               ("Clinique d'Esch",), ("Esch-sur-Alzette",), 2)
    # Any word's beginning, accents and case ignored; never a member's name.
    assert [p.id for p in find_parties(world.uow, name="PALLI", now=NOW).parties] == [team]
    assert find_parties(world.uow, name="weber", now=NOW).parties[0].party is (
        Party.PRACTITIONER)
    assert team not in {p.id for p in find_parties(world.uow, name="weber", now=NOW).parties}
    assert find_parties(world.uow, name="atifs", now=NOW).parties == ()


def test_an_inactive_or_ended_care_team_is_not_offered(world: World) -> None:
    _team(world, "Equipe Ancienne", [(world.weber.id, None)], status="inactive")
    _team(world, "Equipe Finie", [(world.weber.id, None)], period_end="2026-11-30T00:00:00Z")
    assert find_parties(world.uow, name="equipe", now=NOW).parties == ()


def test_a_care_team_is_in_its_organizations_city_and_has_no_profession(world: World) -> None:
    team = _team(world, "Mulhouse Cardio", [(world.muller.id, None)],
                 organization=world.kirchberg)
    in_lux = find_parties(world.uow, name="mul", city="luxem", now=NOW).parties
    assert [(p.party, p.id) for p in in_lux] == [
        (Party.PRACTITIONER, world.muller.id), (Party.CARE_TEAM, team)]
    assert find_parties(world.uow, name="mulhouse", city="esch", now=NOW).parties == ()
    assert find_parties(world.uow, name="mulhouse", profession="physician",
                        now=NOW).parties == ()


def test_at_most_the_limit_of_care_teams_is_shown_and_more_says_so(world: World) -> None:
    for i in range(3):
        _team(world, f"Equipe {i}", [(world.weber.id, None)])
    two = find_parties(world.uow, name="equipe", limit=2, now=NOW)
    assert [p.name for p in two.parties] == ["Equipe 0", "Equipe 1"] and two.more
    assert not find_parties(world.uow, name="equipe", limit=3, now=NOW).more


def test_a_care_teams_name_is_the_directorys_and_only_an_active_one_may_be_chosen(
        world: World) -> None:
    team = _team(world, "Equipe Mobile", [(world.weber.id, None)])
    gone = _team(world, "Equipe Finie", [(world.weber.id, None)],
                 period_end="2026-11-30T00:00:00Z")
    with world.uow as uow:
        assert party_names(uow, [(Party.CARE_TEAM, team), (Party.CARE_TEAM, "nowhere"),
                                 (Party.ORGANIZATION, team)]) == {team: "Equipe Mobile"}
        assert active_care_team(uow, team, NOW)
        assert not active_care_team(uow, gone, NOW)
        assert not active_care_team(uow, "nowhere", NOW)
        assert not active_care_team(uow, world.esch, NOW)  # an organization is not a team


def test_a_kind_is_read_no_further_than_one_beyond_the_limit() -> None:
    """Each candidate may cost queries (its roles, its organizations): the finder reads one
    past the limit to know there are more, and no further."""
    read: list[int] = []

    def candidates() -> Iterator[FoundParty]:
        for n in range(100):
            read.append(n)
            yield FoundParty(Party.ORGANIZATION, f"o{n}", f"Org {n}", None, (), ())

    shown, more = _up_to(candidates(), 3)
    assert [p.id for p in shown] == ["o0", "o1", "o2"] and more and read == [0, 1, 2, 3]
    read.clear()
    few = iter([FoundParty(Party.ORGANIZATION, "o", "Org", None, (), ())])
    assert _up_to(few, 3) == ([FoundParty(Party.ORGANIZATION, "o", "Org", None, (), ())], False)


def test_the_portals_reads_open_their_own_unit_of_work(world: World) -> None:
    """What the portal's pages call (they open no unit of work themselves): the same answers,
    each read in a unit of work the service opens, with nothing committed."""
    team = _team(world, "Equipe Mobile", [(world.weber.id, None)])
    opened: list[FakeUnitOfWork] = []

    def units() -> FakeUnitOfWork:
        opened.append(world.uow)
        return world.uow

    commits = world.uow.commits
    assert search_parties(units, name="MUL", now=NOW) == find_parties(world.uow, name="MUL",
                                                                      now=NOW)
    assert lookup_party_names(units, [(Party.CARE_TEAM, team), (Party.CARE_TEAM, "nowhere")]) == {
        team: "Equipe Mobile"}
    assert care_team_is_active(units, team, NOW)
    assert not care_team_is_active(units, world.esch, NOW)
    assert practitioner_by_number(units, " HP-2 ") == world.weber.id
    assert practitioner_by_number(units, "HP-404") is None
    assert len(opened) == 6 and world.uow.commits == commits
    # A number no letterhead bears is not looked up at all.
    assert practitioner_by_number(units, "") is None
    assert practitioner_by_number(units, "H" * 65) is None
    assert len(opened) == 6
