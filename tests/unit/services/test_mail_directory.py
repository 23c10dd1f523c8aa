"""Secure-messaging mailboxes in the providers' directory (mCSD Endpoints), on a unit of work in
memory: a mailbox is derived on every read from the professional's encryption certificates and
their directory entry, so a revocation, a suspended licence or a deactivated entry shows in the
very next answer; only valid, unrevoked certificates are published; the managing organization
is the first of the holder's active roles, else the platform; practitioners and their roles are
served with their mailbox, and nothing is ever written."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.domain.errors import NotFound, TooCostly
from carevault.domain.queries import Page
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.fhirmodel.endpoint import ENCRYPTION_CERTIFICATE_URL
from carevault.services import directory as svc
from carevault.services import mail_directory
from carevault.services.mail_directory import (
    EndpointQuery,
    MailDirectory,
    endpoint_id,
    mail_endpoint,
    mail_endpoints,
    search_endpoints,
    serve_practitioners,
    serve_roles,
)
from support.fake_directory import directory_context
from support.fake_messaging import FakeMessagingPkiStore
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DOMAIN = "msg.carevault.test"
CTX = directory_context(lambda: NOW)
MAIL = MailDirectory(CTX.systems, DOMAIN, lambda: NOW)
PAGE = Page(0, 50)


@dataclass
class World:
    """Two organizations; Anne (HP-1) works for both, Paul (HP-2) for the second, Lea (HP-3)
    for none; Anne and Paul have an encryption certificate, Lea only a card."""

    uow: FakeUnitOfWork = field(default_factory=FakeUnitOfWork)
    serials: int = 0

    def __post_init__(self) -> None:
        self.uow.pki = FakeMessagingPkiStore()
        with self.uow:
            self.org_a, self.org_b = (o.id for o in svc.register_organizations(self.uow, CTX, [
                new_organization(CTX.systems, identifier="ORG-A", name="Hôpital A"),
                new_organization(CTX.systems, identifier="ORG-B", name="Clinique B")]))
        ((anne, _), (paul, _), (lea, _)) = self.register(
            ("HP-1", "Anne", self.org_b), ("HP-2", "Paul", self.org_b), ("HP-3", "Lea", None))
        self.anne, self.paul, self.lea = anne.id, paul.id, lea.id
        self.register_role(self.anne, self.org_a)
        self.anne_pem = self.certificate(self.anne, "HP-1")
        self.paul_pem = self.certificate(self.paul, "HP-2")
        self.certificate(self.lea, "HP-3", kind="practitioner")  # a card is no mailbox
        self.uow.commits = 0

    def register(self, *people: tuple[str, str, str | None]) -> list[tuple[svc.Stored,
                                                                            svc.Stored]]:
        with self.uow:
            return svc.register_professionals(self.uow, CTX, [
                svc.NewProfessional(new_practitioner(CTX.systems, identifier=identifier,
                                                     family="Doe", given=[given]),
                                    "physician", organization_id=organization)
                for identifier, given, organization in people])

    def register_role(self, practitioner_id: str, organization_id: str) -> None:
        with self.uow:
            svc.create_role(self.uow, CTX, {
                "resourceType": "PractitionerRole", "active": True,
                "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
                "organization": {"reference": f"Organization/{organization_id}"},
                "code": [{"coding": [{"system": CTX.professions.profession_system,
                                      "code": "physician"}]}]})

    def certificate(self, practitioner_id: str, client_id: str, *, kind: str = "encryption",
                    days_old: int = 1, days_left: int = 300) -> str:
        self.serials += 1
        pem = f"-----BEGIN CERTIFICATE-----\n{self.serials:04x}\n-----END CERTIFICATE-----\n"
        self.uow.pki.add_certificate(CertificateRecord(
            format(self.serials, "x"), client_id, kind, practitioner_id, None,
            f"CN={client_id}", NOW - timedelta(days=days_old),
            NOW + timedelta(days=days_left), pem))
        return pem

    def change(self, practitioner_id: str, **changes: Any) -> None:
        stored = self.uow.directory.practitioner(practitioner_id)
        assert stored is not None
        resource = copy.deepcopy(stored.resource)
        if "licence" in changes:
            resource["extension"][0]["valueCode"] = changes.pop("licence")
        resource.update(changes)
        with self.uow:
            svc.update_practitioner(self.uow, CTX, practitioner_id, resource)

    def endpoint(self, practitioner_id: str) -> dict[str, Any]:
        ident = endpoint_id(practitioner_id)
        assert ident is not None
        return mail_endpoint(self.uow, MAIL, ident).resource


@pytest.fixture
def world() -> World:
    return World()


def certificates(endpoint: dict[str, Any]) -> list[str]:
    return [e["valueString"] for e in endpoint.get("extension", [])
            if e["url"] == ENCRYPTION_CERTIFICATE_URL]


def test_a_professional_with_an_encryption_certificate_has_a_mailbox_at_their_address(
        world: World) -> None:
    endpoint = world.endpoint(world.paul)
    assert endpoint["id"] == f"msg-{world.paul}"
    assert endpoint["address"] == f"mailto:hp-2@{DOMAIN}"
    assert endpoint["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                       "value": f"mailto:hp-2@{DOMAIN}"}]
    assert endpoint["status"] == "active"
    assert endpoint["name"] == "Secure messaging: Paul Doe"
    assert certificates(endpoint) == [world.paul_pem]
    assert endpoint["managingOrganization"] == {"reference": f"Organization/{world.org_b}"}


def test_the_managing_organization_is_the_first_active_roles_else_the_platform(
        world: World) -> None:
    assert world.endpoint(world.anne)["managingOrganization"] == {
        "reference": f"Organization/{min(world.org_a, world.org_b)}"}
    lea_pem = world.certificate(world.lea, "HP-3")
    lea = world.endpoint(world.lea)
    assert certificates(lea) == [lea_pem]
    assert lea["managingOrganization"]["identifier"] == {"system": "urn:ietf:rfc:1035",
                                                         "value": DOMAIN}


def test_every_holders_organization_is_read_however_many_roles_there_are(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The roles are read a few practitioners and a page at a time: none is left out (one
    read of them all stopped at its page and gave the rest the platform's name)."""
    from carevault.services import mail_directory

    monkeypatch.setattr(mail_directory, "_ROLES_PAGE", 1)
    monkeypatch.setattr(mail_directory, "_PRACTITIONERS_AT_ONCE", 1)
    found = mail_endpoints(world.uow, MAIL, [world.anne, world.paul])
    assert found[world.anne].organization_id == min(world.org_a, world.org_b)
    assert found[world.paul].organization_id == world.org_b


def test_who_never_had_an_encryption_certificate_has_no_mailbox(world: World) -> None:
    with pytest.raises(NotFound, match=f"Endpoint/msg-{world.lea} is not known"):
        world.endpoint(world.lea)
    assert world.lea not in mail_endpoints(world.uow, MAIL, None)


@pytest.mark.parametrize("ident", ["msg-", "msg-nobody", "pr-1", "", "msg-" + "x" * 61])
def test_an_id_that_names_no_mailbox_is_not_found(world: World, ident: str) -> None:
    with pytest.raises(NotFound):
        mail_endpoint(world.uow, MAIL, ident)


def test_an_id_too_long_for_fhir_gets_no_mailbox() -> None:
    assert endpoint_id("x" * 60) == "msg-" + "x" * 60
    assert endpoint_id("x" * 61) is None


def test_only_valid_unrevoked_certificates_are_published_newest_first(world: World) -> None:
    expired = world.certificate(world.paul, "HP-2", days_old=400, days_left=-1)
    future = world.certificate(world.paul, "HP-2", days_old=-2)
    newer = world.certificate(world.paul, "HP-2", days_old=0)
    revoked = world.certificate(world.paul, "HP-2", days_old=0)
    world.uow.pki.revoke(format(world.serials, "x"), NOW, "keyCompromise")
    published = certificates(world.endpoint(world.paul))
    assert published == [newer, world.paul_pem]
    assert not {expired, future, revoked} & set(published)


def test_a_mailbox_whose_certificates_are_all_revoked_is_off_and_publishes_none(
        world: World) -> None:
    for record in list(world.uow.pki.certificates.values()):
        if record.practitioner_id == world.paul:
            world.uow.pki.revoke(record.serial, NOW, "superseded")
    endpoint = world.endpoint(world.paul)
    assert (endpoint["status"], certificates(endpoint)) == ("off", [])


def test_a_suspended_licence_suspends_the_mailbox_at_once(world: World) -> None:
    world.change(world.paul, licence="suspended")
    assert world.endpoint(world.paul)["status"] == "suspended"


def test_a_deactivated_entry_turns_the_mailbox_off(world: World) -> None:
    world.change(world.paul, active=False)
    assert world.endpoint(world.paul)["status"] == "off"


def test_reading_mailboxes_writes_nothing(world: World) -> None:
    before = copy.deepcopy((world.uow.pki.certificates, world.uow.directory.tables))
    world.endpoint(world.anne)
    search_endpoints(world.uow, MAIL, EndpointQuery(), PAGE)
    assert world.uow.commits == 0
    assert (world.uow.pki.certificates, world.uow.directory.tables) == before


# --- search -----------------------------------------------------------------------------------


def found(world: World, query: EndpointQuery, page: Page = PAGE) -> tuple[int, list[str]]:
    total, items = search_endpoints(world.uow, MAIL, query, page)
    return total, [s.id for s in items]


def test_every_mailbox_is_found_by_id_and_paged(world: World) -> None:
    anne, paul = f"msg-{world.anne}", f"msg-{world.paul}"
    assert found(world, EndpointQuery()) == (2, sorted([anne, paul]))
    assert found(world, EndpointQuery(), Page(1, 1)) == (2, sorted([anne, paul])[1:])
    assert found(world, EndpointQuery(ids=[(paul, "msg-nobody", "other")])) == (1, [paul])


def test_a_search_that_nothing_narrows_is_refused_beyond_its_limit(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page of a search without _id, identifier or organization derives every mailbox:
    over `MAX_UNNARROWED` of them it is refused as too costly, naming the limit and what
    narrows it, while a narrowed one is still answered."""
    assert world.uow.pki.count_encryption_holders() == 2  # Anne and Paul (Lea: a card only)
    monkeypatch.setattr(mail_directory, "MAX_UNNARROWED", 1)
    for query in (EndpointQuery(), EndpointQuery(status=[("active",)])):
        with pytest.raises(TooCostly, match=r"derive the 2 mailboxes.*more than the 1 allowed"):
            found(world, query)
    anne = f"msg-{world.anne}"
    assert found(world, EndpointQuery(ids=[(anne,)])) == (1, [anne])
    assert found(world, EndpointQuery(addresses=[(f"mailto:hp-1@{DOMAIN}",)])) == (1, [anne])
    monkeypatch.setattr(mail_directory, "MAX_UNNARROWED", 2)  # at the limit: answered
    assert found(world, EndpointQuery())[0] == 2
    # Anne's mailbox is managed by the first of her two organizations by id (random ids).
    managing = world.endpoint(world.anne)["managingOrganization"]["reference"]
    assert managing in (f"Organization/{world.org_a}", f"Organization/{world.org_b}")
    by_organization = EndpointQuery(organization=[(managing.partition("/")[2],)])
    assert anne in found(world, by_organization)[1]


def test_a_search_by_a_large_organization_alone_is_refused_beyond_the_limit(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An organization of more professionals than `MAX_UNNARROWED` would derive all their
    mailboxes on every page (and a role page of 10,000 cut the rest silently): refused,
    unless an identifier or address narrows it too."""
    monkeypatch.setattr(mail_directory, "MAX_UNNARROWED", 1)  # org B: Anne and Paul
    with pytest.raises(TooCostly, match=r"its 2 professionals, more than the 1 allowed"):
        found(world, EndpointQuery(organization=[(world.org_b,)]))
    paul = f"msg-{world.paul}"
    narrowed = EndpointQuery(organization=[(world.org_b,)], ids=[(paul,)])
    assert found(world, narrowed) == (1, [paul])
    address = EndpointQuery(organization=[(world.org_b,)],
                            addresses=[(f"mailto:hp-2@{DOMAIN}",)])
    assert found(world, address) == (1, [paul])
    assert found(world, EndpointQuery(organization=[(world.org_a,)]))[0] <= 1  # one role: asked


@pytest.mark.parametrize("address", [f"mailto:hp-2@{DOMAIN}", f"MAILTO:HP-2@{DOMAIN.upper()}",
                                     f" mailto:hp-2@{DOMAIN} "])
def test_a_mailbox_is_found_by_its_address_in_any_case(world: World, address: str) -> None:
    assert found(world, EndpointQuery(addresses=[(address,)])) == (1, [f"msg-{world.paul}"])


@pytest.mark.parametrize("address", ["mailto:hp-2@elsewhere.test", "hp-2@" + DOMAIN,
                                     f"mailto:hp-3@{DOMAIN}", "mailto:"])
def test_an_address_of_no_mailbox_here_finds_none(world: World, address: str) -> None:
    assert found(world, EndpointQuery(addresses=[(address,)])) == (0, [])


def test_addresses_and_criteria_combine_as_and_their_alternatives_as_or(world: World) -> None:
    anne, paul = f"msg-{world.anne}", f"msg-{world.paul}"
    both = (f"mailto:hp-1@{DOMAIN}", f"mailto:hp-2@{DOMAIN}")
    assert found(world, EndpointQuery(addresses=[both]))[0] == 2
    assert found(world, EndpointQuery(addresses=[both], ids=[(anne,)])) == (1, [anne])
    assert found(world, EndpointQuery(addresses=[both[:1], both[1:]])) == (0, [])
    world.change(world.paul, licence="suspended")
    assert found(world, EndpointQuery(status=[("active",)])) == (1, [anne])
    assert found(world, EndpointQuery(status=[("suspended", "off")])) == (1, [paul])


def test_a_mailbox_is_found_by_its_managing_organization_only(world: World) -> None:
    """Anne works for both organizations (ids are random: which is first varies), but her
    mailbox is managed by the first one's only; Paul's by the one he works for."""
    first, second = sorted([world.org_a, world.org_b])
    anne, paul = f"msg-{world.anne}", f"msg-{world.paul}"
    pauls = [paul] if world.org_b == first else []
    assert found(world, EndpointQuery(organization=[(first,)]))[1] == sorted([anne, *pauls])
    assert found(world, EndpointQuery(organization=[(second,)]))[1] == (
        [] if pauls else [paul])
    assert found(world, EndpointQuery(organization=[(first, second)]))[0] == 2
    assert found(world, EndpointQuery(organization=[("org-nobody",)])) == (0, [])


def test_a_mailbox_is_a_secure_email_connection_only(world: World) -> None:
    assert found(world, EndpointQuery(connection_type=[("secure-email",)]))[0] == 2
    assert found(world, EndpointQuery(connection_type=[("hl7-fhir-rest",)])) == (0, [])


# --- practitioners and roles as served --------------------------------------------------------


def test_a_practitioner_with_an_active_mailbox_is_served_with_its_address_once(
        world: World) -> None:
    stored = [world.uow.directory.practitioner(p) for p in (world.paul, world.lea)]
    items = [s for s in stored if s is not None]
    served = serve_practitioners(world.uow, MAIL, items)
    assert served[0].resource["telecom"] == [
        {"system": "email", "value": f"hp-2@{DOMAIN}", "use": "work"}]
    assert "telecom" not in served[1].resource  # Lea has no mailbox
    assert "telecom" not in items[0].resource  # the stored resource is not changed
    again = serve_practitioners(world.uow, MAIL, served)
    assert again[0].resource["telecom"] == served[0].resource["telecom"]
    assert served[0].version_id == items[0].version_id


def test_a_practitioner_whose_mailbox_cannot_receive_is_served_without_an_address(
        world: World) -> None:
    world.change(world.paul, licence="suspended")
    stored = world.uow.directory.practitioner(world.paul)
    assert stored is not None
    [served] = serve_practitioners(world.uow, MAIL, [stored])
    assert "telecom" not in served.resource


def test_roles_reference_their_practitioners_mailbox_and_bring_it_along(world: World) -> None:
    roles = world.uow.directory.search_roles(svc.RoleQuery(), PAGE).items
    served, endpoints = serve_roles(world.uow, MAIL, roles)
    by_practitioner = {r.resource["practitioner"]["reference"]: r for r in served}
    anne, paul = f"msg-{world.anne}", f"msg-{world.paul}"
    assert by_practitioner[f"Practitioner/{world.paul}"].resource["endpoint"] == [
        {"reference": f"Endpoint/{paul}"}]
    assert "endpoint" not in by_practitioner[f"Practitioner/{world.lea}"].resource
    assert [e.id for e in endpoints] == sorted([anne, paul])  # each once, though Anne has 2
    assert all("endpoint" not in r.resource for r in roles)  # the stored roles unchanged
    assert serve_roles(world.uow, MAIL, served)[0] == served  # referenced once
