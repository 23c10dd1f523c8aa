"""Secure-messaging mailboxes published through mCSD (issue #22, item 1), on SQLite and
PostgreSQL: each professional who can receive has an ``Endpoint`` (secure-email, mailto:, their
encryption certificates), referenced from their PractitionerRoles and named in their
Practitioner's ``telecom``; found by address, by organization and with
``_include=PractitionerRole:endpoint``; a revocation shows in the very next answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build
from carevault.domain.errors import NotFound
from carevault.fhirmodel.directory import LICENCE_STATUS_URL
from carevault.fhirmodel.endpoint import (
    CONNECTION_TYPES,
    ENCRYPTION_CERTIFICATE_URL,
    MCSD_ENDPOINT,
    encryption_certificates,
)
from carevault.services import mail_directory, messaging, pki
from carevault.settings import Settings
from support.builders import patient
from support.messaging import World, build_world
from support.tokens import officer_headers, patient_headers, professional_token

JsonObject = dict[str, Any]


@dataclass
class Directory:
    platform: Platform
    world: World
    http: TestClient
    headers: dict[str, str]  # a professional's token that reads the directory

    def get(self, path: str, **params: str) -> JsonObject:
        answer = self.http.get(f"/fhir/{path}", params=params, headers=self.headers)
        assert answer.status_code == 200, answer.text
        body: JsonObject = answer.json()
        return body

    def endpoint_id(self, name: str) -> str:
        return "msg-" + self.world.people[name].practitioner_id

    def organization(self) -> str:
        role = self.get("PractitionerRole", practitioner=self.world.people["anne"].practitioner_id)
        return str(role["entry"][0]["resource"]["organization"]["reference"])


@pytest.fixture
def directory(settings: Settings, engine: Engine, tmp_path: Path) -> Iterator[Directory]:
    settings = settings.model_copy(update={"messaging_maildir": tmp_path / "mail"})
    platform = build(settings, engine)
    world = build_world(settings, engine, tmp_path / "people", ("anne", "paul", "lea"))
    token = professional_token(platform, identifier="HP-100000", family="Anne")
    with TestClient(platform.app) as http:
        yield Directory(platform, world, http, {"Authorization": f"Bearer {token}"})


def _pem(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM)


def _ids(bundle: JsonObject, kind: str) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == kind]


def test_an_endpoint_says_where_and_to_whom_to_encrypt(directory: Directory) -> None:
    paul = directory.world.people["paul"]
    endpoint = directory.get(f"Endpoint/{directory.endpoint_id('paul')}")
    assert endpoint["meta"]["profile"] == [MCSD_ENDPOINT]
    assert endpoint["status"] == "active"
    assert endpoint["connectionType"]["system"] == CONNECTION_TYPES
    assert endpoint["connectionType"]["code"] == "secure-email"
    assert endpoint["address"] == f"mailto:{paul.address}"
    assert endpoint["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                       "value": f"mailto:{paul.address}"}]
    assert endpoint["payloadMimeType"] == ["application/pkcs7-mime"]
    assert endpoint["managingOrganization"] == {"reference": directory.organization()}
    # The certificate published is the one Paul's key decrypts for, and the client reads it.
    assert encryption_certificates(endpoint) == [_pem(paul.encryption_certificate)]
    # The platform's own view of who can receive agrees.
    with directory.world.units() as uow:
        found = messaging.recipient(uow, directory.world.ctx, paul.address.upper())
    assert [r.serial for r in found.certificates] == [paul.encryption_serial]


def test_found_by_address_by_organization_and_through_the_roles(directory: Directory) -> None:
    people = directory.world.people
    lea = people["lea"]
    by_address = directory.get(
        "Endpoint", identifier=f"urn:ietf:rfc:3986|MAILTO:{lea.address.upper()}")
    assert _ids(by_address, "Endpoint") == [directory.endpoint_id("lea")]
    assert by_address["total"] == 1
    # An address of another platform, or no address at all, finds nothing (not an error).
    for value in ("mailto:hp-100002@elsewhere.example", "hp-100002", "urn:x|mailto:x@y"):
        assert directory.get("Endpoint", identifier=value)["total"] == 0

    organization = directory.organization()
    listed = directory.get("Endpoint", organization=organization)
    assert sorted(_ids(listed, "Endpoint")) == sorted(
        directory.endpoint_id(n) for n in ("anne", "paul", "lea"))
    assert directory.get("Endpoint", organization=organization, status="off")["total"] == 0
    assert directory.get(
        "Endpoint", **{"connection-type": f"{CONNECTION_TYPES}|secure-email"})["total"] == 3
    assert directory.get("Endpoint", **{"connection-type": "hl7-fhir-rest"})["total"] == 0
    assert directory.get("Endpoint", _id=directory.endpoint_id("anne"))["total"] == 1
    paged = directory.get("Endpoint", _count="2")
    assert paged["total"] == 3 and len(paged["entry"]) == 2

    # mCSD's way: the roles of an organization, with their Endpoints included.
    roles = directory.get("PractitionerRole", organization=organization,
                          _include="PractitionerRole:endpoint")
    included = [e for e in roles["entry"] if e["search"]["mode"] == "include"]
    assert sorted(e["resource"]["id"] for e in included) == sorted(
        directory.endpoint_id(n) for n in ("anne", "paul", "lea"))
    for entry in roles["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "PractitionerRole":
            practitioner = resource["practitioner"]["reference"].removeprefix("Practitioner/")
            assert resource["endpoint"] == [{"reference": f"Endpoint/msg-{practitioner}"}]

    # The Practitioner names the address (telecom), read or found.
    read = directory.get(f"Practitioner/{lea.practitioner_id}")
    assert {"system": "email", "value": lea.address, "use": "work"} in read["telecom"]
    found = directory.get("Practitioner", _id=lea.practitioner_id)
    assert found["entry"][0]["resource"]["telecom"] == read["telecom"]


def test_a_revocation_shows_in_the_next_answer(directory: Directory) -> None:
    paul = directory.world.people["paul"]
    with directory.world.units() as uow:
        pki.revoke(uow, paul.encryption_serial, "keyCompromise", datetime.now(UTC))
    endpoint = directory.get(f"Endpoint/{directory.endpoint_id('paul')}")
    assert endpoint["status"] == "off"
    assert "extension" not in endpoint and encryption_certificates(endpoint) == []
    assert ENCRYPTION_CERTIFICATE_URL not in str(endpoint)
    active = directory.get("Endpoint", status="active")
    assert directory.endpoint_id("paul") not in _ids(active, "Endpoint")
    assert _ids(directory.get("Endpoint", status="off"), "Endpoint") == [
        directory.endpoint_id("paul")]
    # No address is offered where nothing can be delivered; the role still shows the
    # Endpoint, whose status says why.
    practitioner = directory.get(f"Practitioner/{paul.practitioner_id}")
    assert "telecom" not in practitioner
    roles = directory.get("PractitionerRole", practitioner=paul.practitioner_id)
    assert roles["entry"][0]["resource"]["endpoint"] == [
        {"reference": f"Endpoint/{directory.endpoint_id('paul')}"}]
    with directory.world.units() as uow, pytest.raises(NotFound):
        messaging.recipient(uow, directory.world.ctx, paul.address)


def test_a_suspended_licence_suspends_the_mailbox(directory: Directory) -> None:
    lea = directory.world.people["lea"]
    current = directory.http.get(f"/fhir/Practitioner/{lea.practitioner_id}",
                                 headers=directory.headers).json()
    with directory.platform.unit_of_work() as uow:
        from carevault.services import directory as svc

        stored = svc.read_resource(uow, "Practitioner", lea.practitioner_id).resource
        stored["extension"] = [{"url": LICENCE_STATUS_URL, "valueCode": "suspended"}]
        svc.update_practitioner(uow, directory.platform.directory, lea.practitioner_id, stored)
    assert "telecom" in current
    endpoint = directory.get(f"Endpoint/{directory.endpoint_id('lea')}")
    assert endpoint["status"] == "suspended"
    assert "telecom" not in directory.get(f"Practitioner/{lea.practitioner_id}")


def test_no_certificate_no_mailbox(directory: Directory) -> None:
    """A professional with a card and no messaging certificate has no mailbox."""
    professional_token(directory.platform, identifier="HP-200000", family="Sanscle")
    found = directory.get("Practitioner", family="Sanscle")
    (practitioner,) = _ids(found, "Practitioner")
    assert "telecom" not in found["entry"][0]["resource"]
    assert "telecom" not in directory.get(f"Practitioner/{practitioner}")
    roles = directory.get("PractitionerRole", practitioner=practitioner,
                          _include="PractitionerRole:endpoint")
    assert [e["resource"]["resourceType"] for e in roles["entry"]] == ["PractitionerRole"]
    assert "endpoint" not in roles["entry"][0]["resource"]
    missing = directory.http.get(f"/fhir/Endpoint/msg-{practitioner}", headers=directory.headers)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("ident", ["msg-nobody", "nobody", "msg-" + "a" * 60])
def test_an_unknown_endpoint_is_404(directory: Directory, ident: str) -> None:
    answer = directory.http.get(f"/fhir/Endpoint/{ident}", headers=directory.headers)
    assert answer.status_code == 404
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_refusals(directory: Directory) -> None:
    path = f"/fhir/Endpoint/{directory.endpoint_id('anne')}"
    assert directory.http.get(path).status_code == 401
    assert directory.http.get("/fhir/Endpoint").status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert directory.http.get(path, headers=forged).status_code == 401
    # An operator (the security officer) is kept out of the directory; a token whose scopes
    # do not cover Endpoint is refused.
    assert directory.http.get(path, headers=officer_headers(directory.platform)).status_code \
        == 403
    narrow = professional_token(directory.platform, "system/Practitioner.rs",
                                identifier="HP-100001", family="Paul")
    refused = directory.http.get(path, headers={"Authorization": f"Bearer {narrow}"})
    assert refused.status_code == 403
    # A patient may read the directory (to choose whom to grant), mailboxes included.
    from carevault.services import directory as svc

    with directory.platform.unit_of_work() as uow:
        stored = svc.create_patient(uow, directory.platform.directory,
                                    patient(directory.platform.directory.systems, 7))
    as_patient = directory.http.get(
        path, headers=patient_headers(directory.platform, stored.id))
    assert as_patient.status_code == 200, as_patient.text
    bad = directory.http.get("/fhir/Endpoint", params={"address": "x"},
                             headers=directory.headers)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


# --- the client's side: finding whom to encrypt to ---------------------------------------------


def test_the_client_finds_and_checks_a_recipients_certificate(directory: Directory,
                                                              tmp_path: Path) -> None:
    from carevault.client import messaging as client
    from carevault.client import platform as api
    from carevault.domain.errors import CareVaultError

    people = directory.world.people
    token = directory.headers["Authorization"].removeprefix("Bearer ")
    trust = directory.world.trust()
    base = str(directory.http.base_url)
    for name in ("paul", "lea"):
        pems = api.mail_certificates(directory.http, base, token, people[name].address.upper())
        chosen = client.directory_certificate(people[name].address, pems, trust)
        assert chosen == people[name].encryption_certificate
    # The client checks what the directory says: a certificate for another address, or of
    # another CA, is not used.
    paul_pems = api.mail_certificates(directory.http, base, token, people["paul"].address)
    with pytest.raises(ValueError, match="no certificate published"):
        client.directory_certificate(people["lea"].address, paul_pems, trust)
    stranger = x509_ca_certificate(tmp_path, people["paul"].address)
    with pytest.raises(ValueError, match="no certificate published"):
        client.directory_certificate(people["paul"].address, [stranger], trust)
    # No mailbox, or one that cannot receive: said, not guessed.
    with pytest.raises(CareVaultError, match="has no mailbox"):
        api.mail_certificates(directory.http, base, token,
                              f"hp-999999@{directory.platform.settings.messaging_domain}")
    with directory.world.units() as uow:
        pki.revoke(uow, people["paul"].encryption_serial, "superseded", datetime.now(UTC))
    with pytest.raises(CareVaultError, match="cannot receive: its mailbox is off"):
        api.mail_certificates(directory.http, base, token, people["paul"].address)
    with pytest.raises(api.PlatformRefused) as refused:
        api.mail_certificates(directory.http, base, "not-a-token", people["lea"].address)
    assert refused.value.status == 401


def x509_ca_certificate(folder: Path, address: str) -> bytes:
    """A self-signed RSA certificate naming ``address``: not the platform's."""
    import subprocess

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=impostor", "-addext", f"subjectAltName=email:{address}",
         "-keyout", str(folder / "k.pem"),
         "-out", str(folder / "c.pem")], check=True, capture_output=True)
    return (folder / "c.pem").read_bytes()


def test_a_directory_wide_search_beyond_its_limit_is_refused_as_too_costly(
        directory: Directory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store counts the mailboxes (three here) on the real database; with the limit below
    that, a search that nothing narrows gets a 400 OperationOutcome ``too-costly`` that names
    the limit and what narrows it; so does one that only an organization of more
    professionals than the limit narrows, unless an identifier narrows it too."""
    with directory.world.units() as uow:
        assert uow.pki.count_encryption_holders() == 3
    monkeypatch.setattr(mail_directory, "MAX_UNNARROWED", 2)
    refused = directory.http.get("/fhir/Endpoint", params={"status": "active"},
                                 headers=directory.headers)
    assert refused.status_code == 400
    [issue] = refused.json()["issue"]
    assert issue["code"] == "too-costly"
    assert "3 mailboxes" in issue["diagnostics"] and "organization" in issue["diagnostics"]
    by_organization = directory.http.get(
        "/fhir/Endpoint", params={"organization": directory.organization()},
        headers=directory.headers)
    assert by_organization.status_code == 400
    assert "organization alone" in by_organization.json()["issue"][0]["diagnostics"]
    monkeypatch.setattr(mail_directory, "MAX_UNNARROWED", 3)  # at the limit: answered
    assert directory.get("Endpoint", organization=directory.organization())["total"] == 3
