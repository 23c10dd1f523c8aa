"""The patient's e-prescriptions in Debian's Chromium against a real server with demo data
(issue #18, "the patient sees their prescriptions and codes in the portal"): a physician of
the directory, whom the demo patient shows a presence code, prescribes with the published
E-Rezept workflow (``$create``, then ``$activate`` with the Bundle they sign with their card,
`support.erezept`); the demo patient signs in and finds it on "My prescriptions", with its
number, its access code and its printout, in French, English and German, each page checked by
axe-core; the code the page shows is the prescription's (its prescriber cancels it with it).

The physician is one of this module's own (`carevault directory add-practitioner`), so that
the other journeys' physicians still have never seen the demo patient.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from support.browser import axe_violations, chromium, new_page, page_errors
from support.erezept import ACCESS_CODE, CREATE, PRESCRIPTION_ID, activation, identifier, sign
from support.erezept import prescription_bundle as bundle_for

from .conftest import CAREVAULT, COMMAND_SECONDS, carevault_env, unused_totp

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
NATIONAL = "https://carevault.lu/fhir/sid/matricule"
HPD = "https://carevault.lu/fhir/sid/hpd"
WORDS = {"fr": ("Mes ordonnances", "3 fois par jour", "Code d'accès"),
         "en": ("My prescriptions", "3 times every 1 day", "Access code"),
         "de": ("Meine Rezepte", "3-mal pro Tag", "Zugangscode")}


def cli(server: Any, *args: str) -> Any:
    done = subprocess.run([CAREVAULT, *args], cwd=server.workdir, text=True,
                          env=carevault_env(server.workdir, server.base_url),
                          capture_output=True, timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def patient(server: Any, browser: Any) -> Iterator[Any]:
    """The demo patient signed in (password and TOTP, as they type them)."""
    portal = server.accounts["patients"][0]["portal"]
    with new_page(browser) as page:
        page.goto(server.base_url + "/login?lang=en", wait_until="load")
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        page.fill("#code", unused_totp(portal["totp_secret"]))
        with page.expect_navigation(wait_until="load"):
            page.click("#signin")
        assert "/me" in page.url, page.url
        yield page


class Prescriber:
    """A physician of this module, with a card of the platform CA and their system's token."""

    def __init__(self, server: Any) -> None:
        self.identifier = f"HP-E2E-RX-{uuid.uuid4().hex[:6].upper()}"
        made = cli(server, "directory", "add-practitioner", "--identifier", self.identifier,
                   "--family", "Rezept", "--given", "Rita", "--profession", "physician",
                   "--specialty", "general-practice", "--json")
        self.id = str(made["id"])
        card = server.workdir / f"card-{self.identifier}"
        cli(server, "pki", "issue-practitioner", self.id, "--out", str(card))
        self.key_pem = (card / "key.pem").read_text()
        self.chain = [c.public_bytes(Encoding.DER) for name in ("cert.pem", "chain.pem")
                      for c in x509.load_pem_x509_certificates((card / name).read_bytes())]
        system = dataclasses.replace(server, card=card, client_id=self.identifier)
        self.headers = {"Authorization": f"Bearer {system.token()}", "Content-Type": FHIR_JSON}


def test_the_patient_sees_their_ready_prescription_with_its_code_in_three_languages(
        server: Any, patient: Any) -> None:
    page, demo = patient, server.accounts["patients"][0]
    problems = page_errors(page)
    prescriber = Prescriber(server)
    # The patient shows the physician a presence code: their visit opens the record to them.
    page.goto(server.base_url + "/me?lang=en", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.click("#make-presence-code")
    presence = page.locator("#presence-code").inner_text().strip()
    visit = httpx.post(f"{server.fhir}/Encounter", headers=prescriber.headers, timeout=30, json={
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{demo['patient_id']}"},
        "participant": [{"individual": {"reference": f"Practitioner/{prescriber.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"},
        "extension": [{"url": "https://carevault.lu/fhir/StructureDefinition/presence-code",
                       "valueString": presence}]})
    assert visit.status_code == 201, visit.text

    # The physician's software: $create, then the Bundle signed for its number, $activate.
    created = httpx.post(f"{server.fhir}/Task/$create", json=CREATE, headers=prescriber.headers,
                         timeout=30)
    assert created.status_code == 201, created.text
    task = created.json()
    number, code = identifier(task, PRESCRIPTION_ID), identifier(task, ACCESS_CODE)
    assert number is not None and code is not None
    signed = sign(bundle_for(patient_system=NATIONAL, patient_id_value=demo["national_id"],
                             practitioner_system=HPD, practitioner_id_value=prescriber.identifier,
                             number=number), prescriber.key_pem, prescriber.chain)
    activated = httpx.post(f"{server.fhir}/Task/{task['id']}/$activate",
                           json=activation(signed), headers=prescriber.headers, timeout=30)
    assert activated.status_code == 200, activated.text

    for lang, (title, dosage, code_label) in WORDS.items():
        page.goto(f"{server.base_url}/me?lang={lang}", wait_until="load")
        with page.expect_navigation(wait_until="load"):
            page.click("#nav-prescriptions")
        assert page.url.endswith(f"/me/prescriptions?lang={lang}")
        assert page.locator("h2").inner_text().strip() == title
        item = page.locator(f'li[data-prescription="{task["id"]}"]')
        assert item.get_attribute("data-status") == "ready"
        assert "Amoxicillin 1 g" in item.locator("h3").inner_text()
        assert dosage in item.locator(".dosage").inner_text()
        assert "Anna Arzt" in item.locator(".prescriber").inner_text()
        assert item.locator(".number").inner_text().strip() == number
        assert code_label in item.inner_text()
        assert item.locator(".access-code").inner_text().strip() == code
        assert axe_violations(page) == []
    # No medical data in the address: the printout is asked for by the task's opaque id.
    link = page.locator(f'li[data-prescription="{task["id"]}"] a.print')
    href = link.get_attribute("href") or ""
    assert href == f"/me/prescriptions/print?lang=de&prescription={task['id']}"
    printed = page.request.get(server.base_url + href)
    assert printed.status == 200
    assert printed.headers["content-type"] == "application/pdf"
    assert printed.body().startswith(b"%PDF")
    assert problems == [], "\n".join(problems)

    # The code the page shows opens the prescription: its prescriber cancels it with it (no
    # pharmacy of the other journeys is involved); the page then shows neither code nor link.
    cancelled = httpx.post(f"{server.fhir}/Task/{task['id']}/$abort", params={"ac": code},
                           headers=prescriber.headers, timeout=30)
    assert cancelled.status_code == 204, cancelled.text
    page.goto(f"{server.base_url}/me/prescriptions?lang=en", wait_until="load")
    item = page.locator(f'li[data-prescription="{task["id"]}"]')
    assert item.get_attribute("data-status") == "cancelled"
    assert code not in page.content() and item.locator("a.print").count() == 0
    assert axe_violations(page) == []
