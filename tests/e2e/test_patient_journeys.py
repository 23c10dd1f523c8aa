"""The patient's journeys in Debian's Chromium against a real server with demo data, each
checked by its effect through the FHIR API as the demo physician's system sees it, and every
page checked by axe-core (no serious or critical violation) in French, English and German.

One browser for the module (`support.browser`); the demo physician has seen the demo patient
(a care event) and published their documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from support.browser import axe_violations, chromium, new_page, page_errors
from support.documents import PDF, detached_jws, provide_bundle

from .conftest import unused_totp

pytestmark = pytest.mark.e2e

LANGUAGES = ("fr", "en", "de")
PAGES = ("/me", "/me/documents", "/me/access", "/me/password")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def signed_in(server: Any, browser: Any) -> Iterator[Any]:
    """A page signed in as the demo patient (password and TOTP, as a person types them), once
    for the module: a TOTP code is accepted once, and its 30 seconds would be waited for."""
    portal = server.accounts["patients"][0]["portal"]
    with new_page(browser) as page:
        page.goto(server.base_url + "/login?lang=fr", wait_until="load")
        assert axe_violations(page) == []
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        page.fill("#code", unused_totp(portal["totp_secret"]))
        with page.expect_navigation(wait_until="load"):
            page.click("#signin")
        assert "/me" in page.url
        yield page


class Physician:
    """The demo physician's system, as `support.documents.provide_bundle` signs for it."""

    def __init__(self, server: Any) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        found = next(p for p in server.accounts["professionals"]
                     if p["profession"] == "physician")
        self.id, self.identifier = found["practitioner_id"], found["identifier"]
        self.key_pem = (server.card / "key.pem").read_text()
        self.chain = [c.public_bytes(Encoding.DER) for name in ("cert.pem", "chain.pem")
                      for c in x509.load_pem_x509_certificates((server.card / name).read_bytes())]
        self.headers = {"Authorization": f"Bearer {server.token()}",
                        "Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def seen(server: Any, signed_in: Any) -> tuple[Physician, str]:
    """The patient shows the physician a presence code made in the portal; the physician's
    visit (an Encounter carrying it) opens the record to them; they publish a signed report."""
    page, patient_id = signed_in, server.accounts["patients"][0]["patient_id"]
    physician = Physician(server)
    assert physician_searches(server) == 403  # not yet seen
    page.goto(server.base_url + "/me?lang=en", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.click("#make-presence-code")
    assert axe_violations(page) == []
    code = page.locator("#presence-code").inner_text().strip()
    visit = httpx.post(f"{server.fhir}/Encounter", headers=physician.headers, timeout=30, json={
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{physician.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"},
        "extension": [{"url": "https://carevault.lu/fhir/StructureDefinition/presence-code",
                       "valueString": code}]})
    assert visit.status_code == 201, visit.text
    published = httpx.post(server.fhir, headers=physician.headers, timeout=60,
                           json=provide_bundle(patient_id, f"Practitioner/{physician.id}",
                                               signature=detached_jws(PDF, physician.key_pem,
                                                                      physician.chain)))
    assert published.status_code == 200, published.text
    locations = [e["response"]["location"] for e in published.json()["entry"]]
    document = next(loc.split("/")[-3] for loc in locations if "/DocumentReference/" in loc)
    return physician, document


def physician_searches(server: Any) -> int:
    patient_id = server.accounts["patients"][0]["patient_id"]
    return httpx.get(f"{server.fhir}/DocumentReference",
                     params={"patient": f"Patient/{patient_id}"},
                     headers={"Authorization": f"Bearer {server.token()}"},
                     timeout=30).status_code


def test_every_page_is_accessible_in_three_languages(server: Any, signed_in: Any) -> None:
    page = signed_in
    problems = page_errors(page)
    violations: list[str] = []
    for lang in LANGUAGES:
        for path in PAGES:
            response = page.goto(f"{server.base_url}{path}?lang={lang}", wait_until="load")
            assert response is not None and response.status == 200, (path, lang)
            assert page.locator("html").get_attribute("lang") == lang
            violations += axe_violations(page)
    assert violations == [], "\n".join(violations)
    assert problems == [], "\n".join(problems)


def test_closing_and_reopening_the_record_in_the_browser(
        server: Any, signed_in: Any, seen: tuple[Physician, str]) -> None:
    page = signed_in
    assert physician_searches(server) == 200
    page.goto(server.base_url + "/me/access?lang=en", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.click("#close-record")
    assert page.locator("#done").is_visible()
    assert axe_violations(page) == []
    assert physician_searches(server) == 403  # closed: refused at once
    with page.expect_navigation(wait_until="load"):
        page.click("#reopen-record")
    assert physician_searches(server) == 200


def test_naming_a_referring_physician_and_hiding_a_document(
        server: Any, signed_in: Any, seen: tuple[Physician, str]) -> None:
    page = signed_in
    physician, _document = seen
    page.goto(server.base_url + "/me/access?lang=de", wait_until="load")
    page.fill("#number", physician.identifier)
    with page.expect_navigation(wait_until="load"):
        page.click("#name-referring")
    assert page.locator("#referring-name").inner_text().strip()
    assert axe_violations(page) == []
    page.goto(server.base_url + "/me/documents?lang=fr", wait_until="load")
    rows = page.locator("#documents tbody tr")
    assert rows.count() > 0
    first = rows.first.get_attribute("data-document")
    with page.expect_navigation(wait_until="load"):
        rows.first.locator("button.hide").click()
    hidden = page.locator(f'tr[data-document="{first}"]')
    assert "masqué" in hidden.inner_text()
    assert axe_violations(page) == []
    # The document's author still reads it; the patient sees it hidden in their list.
    answer = httpx.get(f"{server.fhir}/DocumentReference/{first}",
                       headers={"Authorization": f"Bearer {server.token()}"}, timeout=30)
    assert answer.status_code == 200
    with page.expect_navigation(wait_until="load"):
        hidden.locator("button.unhide").click()
    assert "visible" in page.locator(f'tr[data-document="{first}"]').inner_text()


def test_the_history_highlights_an_emergency_and_is_verified_complete(
        server: Any, signed_in: Any, seen: tuple[Physician, str]) -> None:
    """Last of the module (an emergency stays in the record's history): the physician breaks
    the glass; the patient reads it highlighted with its reason in three languages, narrows
    the history to emergencies, and finds it counted in this month's bar of the chart."""
    page = signed_in
    physician, _document = seen
    patient_id = server.accounts["patients"][0]["patient_id"]
    glass = httpx.post(f"{server.fhir}/Patient/{patient_id}/$emergency-access",
                       headers=physician.headers, timeout=30,
                       json={"resourceType": "Parameters", "parameter": [
                           {"name": "reason", "valueString": "found unconscious at home"}]})
    assert glass.status_code == 200, glass.text
    problems = page_errors(page)
    for lang, tag in (("en", "Emergency"), ("fr", "Urgence"), ("de", "Notfall")):
        page.goto(f"{server.base_url}/me?lang={lang}", wait_until="load")
        urgent = page.locator("#access-history > li.emergency")
        assert urgent.count() >= 1, lang
        # The declaration, and what was read under it with the physician's reason.
        assert any("found unconscious at home" in text for text in urgent.all_inner_texts())
        assert urgent.first.locator(".tag").text_content() == tag
        # The break-the-glass is one line; its request and the security officer's alert are
        # folded under it, shown when the patient opens them.
        glass = page.locator("#access-history > li.emergency", has=page.locator("details"))
        assert glass.count() == 1, lang
        folded = glass.locator("details.related li")
        assert folded.count() == 2 and not folded.first.is_visible(), lang
        glass.locator("summary").click()
        assert folded.first.is_visible() and folded.nth(1).is_visible(), lang
        assert page.locator("#completeness.complete").is_visible(), lang
        assert axe_violations(page) == [], lang
    page.goto(f"{server.base_url}/me?lang=en", wait_until="load")
    page.select_option("#show", "emergencies")
    with page.expect_navigation(wait_until="load"):
        page.click("#apply-filter")
    assert "show=emergencies" in page.url
    lines = page.locator("#access-history > li")
    assert lines.count() >= 1
    assert lines.count() == page.locator("#access-history > li.emergency").count()
    this_month = page.locator(f'#accesses-per-month tr[data-month="{datetime.now(UTC):%Y-%m}"] td')
    assert int(this_month.nth(1).inner_text()) >= 1  # the emergency, counted
    assert axe_violations(page) == []
    assert problems == [], "\n".join(problems)


def test_exporting_the_record_with_its_progress_and_opening_the_bundle(
        server: Any, signed_in: Any, seen: tuple[Physician, str], tmp_path: Any) -> None:
    """The export streams; the page counts the documents as they arrive, then saves the
    Bundle, which opens as FHIR JSON with the physician's document and its content."""
    import base64
    import json

    page = signed_in
    problems = page_errors(page)
    _physician, document = seen
    page.goto(server.base_url + "/me/documents?lang=en", wait_until="load")
    with page.expect_download() as arriving:
        page.click("#export")
    saved = tmp_path / "record.json"
    arriving.value.save_as(saved)
    page.locator("#export-status").filter(has_text="downloaded").wait_for()
    assert page.locator("#export-progress").get_attribute("value") == page.locator(
        "#export-progress").get_attribute("max")
    bundle = json.loads(saved.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resources = {(e["resource"]["resourceType"], e["resource"].get("id")): e["resource"]
                 for e in bundle["entry"]}
    assert ("DocumentReference", document) in resources
    assert base64.b64decode(resources[("Binary", document)]["data"]) == PDF
    assert axe_violations(page) == []
    assert problems == []


def test_adding_my_own_document_which_the_physician_then_reads(
        server: Any, signed_in: Any, seen: tuple[Physician, str], tmp_path: Any) -> None:
    page = signed_in
    problems = page_errors(page)
    letter = tmp_path / "letter.pdf"
    letter.write_bytes(b"%PDF-1.7\n% Lettre du Dr Rossi, Milan\n%%EOF\n")
    page.goto(server.base_url + "/me/documents?lang=fr", wait_until="load")
    assert axe_violations(page) == []
    page.set_input_files("#upload-file", str(letter))
    page.fill("#upload-title-input", "Lettre du Dr Rossi (Milan)")
    page.select_option("#upload-kind", "consultation")
    with page.expect_navigation(wait_until="load"):
        page.click("#upload-button")
    assert page.locator("#added").is_visible()
    assert "Lettre du Dr Rossi (Milan)" in page.inner_text("main")
    assert axe_violations(page) == []
    patient_id = server.accounts["patients"][0]["patient_id"]
    found = httpx.get(f"{server.fhir}/DocumentReference",
                      params={"patient": f"Patient/{patient_id}"},
                      headers={"Authorization": f"Bearer {server.token()}"}, timeout=30)
    assert found.status_code == 200
    mine = [e["resource"] for e in found.json()["entry"]
            if e["resource"]["author"][0]["reference"] == f"Patient/{patient_id}"]
    assert mine and any("Rossi" in str(r) for r in mine)
    assert problems == []


def test_the_password_page_refuses_two_different_new_passwords_and_says_so(
        server: Any, signed_in: Any) -> None:
    """Reached from the record's page; a refusal that changes nothing (the demo patient's
    password is every other test's), read out as an alert and accessible."""
    page = signed_in
    problems = page_errors(page)
    page.goto(server.base_url + "/me?lang=de", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.click("#to-password")
    assert "/me/password" in page.url
    portal = server.accounts["patients"][0]["portal"]
    page.fill("#current", portal["password"])
    page.fill("#new", "a lantern over the Alzette")
    page.fill("#again", "a lantern over the Sauer")
    with page.expect_navigation(wait_until="load"):
        page.click("#change-password")
    assert "Die beiden neuen Passwörter sind verschieden" in page.inner_text("#error")
    assert page.locator("#error").get_attribute("role") == "alert"
    assert axe_violations(page) == []
    assert problems == []
