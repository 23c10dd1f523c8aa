"""The professional workspace's sign-in, over HTTP on both databases: the card proof (the
assertion `carevault card enrol` signs), a passkey's registration and sign-in with a software
authenticator, and the sessions ending at once when the card certificate is revoked or
expires or the licence is suspended. The browser's own ceremony: tests/e2e/test_workspace.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.client import card as card_client
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.workspace_signin import CARD_ENROL_PATH
from support.accounts import enrol_patient
from support.passkeys import Card, SoftwareAuthenticator, issue_card

BASE = "http://127.0.0.1:8000"  # the dev public address: the relying party is localhost
ORIGIN = "http://localhost:8000"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def card(platform: Platform, tmp_path: Path) -> Card:
    return issue_card(platform, tmp_path / "card")


def browser(platform: Platform) -> TestClient:
    return TestClient(platform.app, base_url=ORIGIN, client=("127.0.0.1", 50001))


@pytest.fixture
def web(platform: Platform) -> Iterator[TestClient]:
    with browser(platform) as client:
        yield client


def enrolment_code(web: TestClient, card: Card, *, audience: str | None = None,
                   challenge: str | None = None) -> Any:
    asked = web.post("/workspace/card/challenge")
    assert asked.status_code == 200
    signed = card_client.assertion(card.folder, audience or BASE + CARD_ENROL_PATH,
                                   challenge or asked.json()["challenge"])
    return web.post(CARD_ENROL_PATH, data={"client_assertion": signed})


def page_csrf(web: TestClient, path: str) -> str:
    page = web.get(path)
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found
    return found.group(1)


def enrol(web: TestClient, card: Card, authenticator: SoftwareAuthenticator) -> Any:
    answer = enrolment_code(web, card)
    assert answer.status_code == 200, answer.text
    csrf = page_csrf(web, "/workspace/enrol")
    options = web.post("/workspace/enrol/options",
                       data={"csrf": csrf, "code": answer.json()["code"]})
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json())
    return web.post("/workspace/enrol", data={"csrf": csrf, "credential": json.dumps(credential)})


def sign_in(web: TestClient, authenticator: SoftwareAuthenticator, **kwargs: Any) -> Any:
    csrf = page_csrf(web, "/workspace/login")
    options = web.post("/workspace/login/options", data={"csrf": csrf})
    assert options.status_code == 200, options.text
    credential = authenticator.get(options.json(), **kwargs)
    return web.post("/workspace/login", data={"csrf": csrf, "credential": json.dumps(credential)})


@dataclass
class Enrolled:
    card: Card
    authenticator: SoftwareAuthenticator


@pytest.fixture
def enrolled(platform: Platform, web: TestClient, card: Card) -> Enrolled:
    authenticator = SoftwareAuthenticator(ORIGIN)
    done = enrol(web, card, authenticator)
    assert done.status_code == 200, done.text
    return Enrolled(card, authenticator)


def test_the_card_enrols_a_passkey_which_then_signs_in(
        platform: Platform, web: TestClient, card: Card) -> None:
    authenticator = SoftwareAuthenticator(ORIGIN)
    done = enrol(web, card, authenticator)
    assert done.status_code == 200, done.text
    assert done.json()["next"].startswith("/workspace")
    home = web.get("/workspace")
    assert home.status_code == 200
    assert "Clara Kartenhalter" in home.text
    with platform.unit_of_work() as uow:
        stored = uow.passkeys.of_practitioner(card.practitioner_id)
    assert [p.certificate_serial for p in stored] == [card.serial]
    # Another browser, later: the passkey alone signs in.
    with browser(platform) as other:
        assert other.get("/workspace", follow_redirects=False).status_code == 303
        signed = sign_in(other, authenticator)
        assert signed.status_code == 200, signed.text
        assert "Clara Kartenhalter" in other.get("/workspace?lang=de").text
    # The audit log holds the card proof, the enrolment and the sign-in.
    with platform.engine.connect() as connection:
        entries = [json.loads(e) for e in connection.execute(
            select(t.audit_entry.c.entry)).scalars()]
    kinds = [(e.get("interaction"), e.get("outcome")) for e in entries]
    for expected in (("workspace-card", "0"), ("workspace-passkey", "0"),
                     ("workspace-sign-in", "0")):
        assert expected in kinds, kinds


def test_the_card_proof_is_refused_when_it_does_not_hold(
        platform: Platform, web: TestClient, card: Card) -> None:
    # A challenge the server never gave; one used twice; an assertion made for the token
    # endpoint (which must never work here, nor this one there).
    assert enrolment_code(web, card, challenge="made-up-challenge").status_code == 401
    asked = web.post("/workspace/card/challenge").json()["challenge"]
    assert enrolment_code(web, card, challenge=asked).status_code == 200
    again = enrolment_code(web, card, challenge=asked)
    assert again.status_code == 401 and "challenge" in again.json()["error"]
    wrong_audience = enrolment_code(web, card, audience=platform.tokens.token_endpoint)
    assert wrong_audience.status_code == 401
    assert "aud" in wrong_audience.json()["error"]
    # A revoked card enrols nothing.
    with platform.unit_of_work() as uow:
        pki.revoke(uow, card.serial, "keyCompromise", datetime.now(UTC))
    revoked = enrolment_code(web, card)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]


def test_an_enrolment_code_works_once(web: TestClient, card: Card) -> None:
    code = enrolment_code(web, card).json()["code"]
    csrf = page_csrf(web, "/workspace/enrol")
    first = web.post("/workspace/enrol/options", data={"csrf": csrf, "code": code})
    assert first.status_code == 200
    second = web.post("/workspace/enrol/options", data={"csrf": csrf, "code": code})
    assert second.status_code == 401
    assert "enrolment code" in second.json()["error"]


def test_a_sign_in_is_refused_without_its_csrf_or_with_a_forged_or_replayed_answer(
        platform: Platform, enrolled: Enrolled) -> None:
    with browser(platform) as other:
        csrf = page_csrf(other, "/workspace/login")
        assert other.post("/workspace/login/options", data={"csrf": "forged"}).status_code == 400
        options = other.post("/workspace/login/options", data={"csrf": csrf}).json()
        credential = enrolled.authenticator.get(options)
        assert other.post("/workspace/login", data={
            "credential": json.dumps(credential)}).status_code == 400  # no CSRF token
        # The same answer twice: its challenge is used.
        first = other.post("/workspace/login", data={"csrf": csrf,
                                                     "credential": json.dumps(credential)})
        assert first.status_code == 200
        replayed = other.post("/workspace/login", data={"csrf": csrf,
                                                        "credential": json.dumps(credential)})
        assert replayed.status_code == 401
        # Another origin's page asked for the assertion (phishing): refused.
        phished = sign_in(other, enrolled.authenticator, origin="http://localhost.evil:8000")
        assert phished.status_code == 401
        # A passkey nobody enrolled.
        stranger = sign_in(other, SoftwareAuthenticator(ORIGIN))
        assert stranger.status_code == 401


def test_a_patient_session_is_no_professional(platform: Platform) -> None:
    account = enrol_patient(platform, family="Patientin")
    with browser(platform) as patient:
        csrf = page_csrf(patient, "/login")
        signed = patient.post("/login", data={"login": account.login,
                                              "password": account.password,
                                              "code": account.totp.now(), "csrf": csrf},
                              follow_redirects=False)
        assert signed.status_code == 303
        refused = patient.get("/workspace")
        assert refused.status_code == 403
        assert "health professionals" in refused.text


def two_sessions(platform: Platform, enrolled: Enrolled) -> list[TestClient]:
    clients = [browser(platform) for _ in range(2)]
    for client in clients:
        client.__enter__()
        assert sign_in(client, enrolled.authenticator).status_code == 200
        assert client.get("/workspace").status_code == 200
    return clients


def ended_everywhere(platform: Platform, enrolled: Enrolled, clients: list[TestClient]) -> None:
    for client in clients:
        answer = client.get("/workspace", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/workspace/login")
        client.__exit__(None, None, None)
    with platform.engine.connect() as connection:
        live = connection.execute(select(t.portal_session.c.token_hash).where(
            t.portal_session.c.account_id == enrolled.card.practitioner_id,
            t.portal_session.c.ended_at.is_(None))).all()
    assert live == []
    with browser(platform) as again:
        assert sign_in(again, enrolled.authenticator).status_code == 401


def test_revoking_the_card_ends_every_session_at_once(
        platform: Platform, enrolled: Enrolled) -> None:
    clients = two_sessions(platform, enrolled)
    with platform.unit_of_work() as uow:
        pki.revoke(uow, enrolled.card.serial, "keyCompromise", datetime.now(UTC))
    ended_everywhere(platform, enrolled, clients)


def test_an_expired_card_ends_every_session(platform: Platform, enrolled: Enrolled) -> None:
    clients = two_sessions(platform, enrolled)
    # The certificate's end, as the platform recorded it when issuing, is now past (the
    # clock of a running server cannot be moved; the record is what the check reads).
    with platform.engine.begin() as connection:
        connection.execute(update(t.pki_certificate).where(
            t.pki_certificate.c.serial == enrolled.card.serial).values(
            not_after=datetime.now(UTC) - timedelta(seconds=1)))
    ended_everywhere(platform, enrolled, clients)


def test_a_suspended_licence_ends_every_session(platform: Platform, enrolled: Enrolled) -> None:
    clients = two_sessions(platform, enrolled)
    with platform.unit_of_work() as uow:
        stored = uow.directory.practitioner(enrolled.card.practitioner_id)
        assert stored is not None
        resource = dict(stored.resource)
        resource["extension"] = [{
            "url": "https://carevault.lu/fhir/StructureDefinition/licence-status",
            "valueCode": "suspended"}]
        svc.update_practitioner(uow, platform.directory, enrolled.card.practitioner_id,
                                resource)
    ended_everywhere(platform, enrolled, clients)
