"""The professional workspace's journeys in Debian's Chromium against a real server on demo
data, each checked by its effect: the demo physician enrols a passkey with their card
(`carevault card enrol`, Chromium's virtual authenticator), finds the demo patient by name and
by hospital number, reads a document whose signature shows as verified, publishes a document
signed with `carevault card sign` that the patient then sees in their portal; the patient hides
a document, and a second physician, without access, breaks the glass with a reason, sees the
record but "1 document not visible", and the patient reads the reason in their history. Every
page is axe-clean in French, English and German.

With ``CAREVAULT_SCREENSHOTS=1`` the journeys also save the pages shown in the documentation
(docs/screenshots/workspace-*.png)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

from .conftest import unused_totp
from .workspace_site import Site, demo_site, each_language, enrol

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with demo_site(tmp_path_factory.mktemp("workspace-journeys")) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def shoot(page: Any, name: str) -> None:
    if os.environ.get("CAREVAULT_SCREENSHOTS") == "1":
        page.set_viewport_size({"width": 1000, "height": 800})
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def patient_signed_in(site: Site, browser: Any) -> Any:
    portal = site.patient["portal"]
    context = new_page(browser)
    page = context.__enter__()
    page.goto(f"{site.base}/login?lang=en", wait_until="load")
    page.fill("#login", portal["login"])
    page.fill("#password", portal["password"])
    page.fill("#code", unused_totp(portal["totp_secret"]))
    with page.expect_navigation(wait_until="load"):
        page.click("#signin")
    assert "/me" in page.url, page.url
    return context, page


def test_the_physician_finds_reads_publishes_and_is_told_what_is_hidden(
        site: Site, browser: Any, tmp_path: Path) -> None:
    patient = site.patient
    family = patient["name"].split()[-1]
    with new_page(browser) as page:
        problems = page_errors(page)
        enrol(site, page, site.demo_card)
        # Find the patient by name, then by a hospital's number: never in the address bar.
        each_language(page, f"{site.base}/workspace/patients")
        page.fill("#family", family)
        page.fill("#given", patient["name"].split()[0])
        with page.expect_navigation(wait_until="load"):
            page.click("#search")
        assert page.url == f"{site.base}/workspace/patients?lang=en"
        assert page.locator(f'li[data-patient="{patient["patient_id"]}"]').count() == 1
        assert axe_violations(page) == []
        shoot(page, "workspace-find-en.png")
        assert patient["local_ids"], "the demo patient has a hospital number"
        page.goto(f"{site.base}/workspace/patients?lang=en")
        page.fill("#hospital_number", patient["local_ids"][0]["value"])
        with page.expect_navigation(wait_until="load"):
            page.click("#search")
        with page.expect_navigation(wait_until="load"):
            page.locator(f'li[data-patient="{patient["patient_id"]}"] a').click()
        record = page.url.split("?")[0]
        assert record == f"{site.base}/workspace/record/{patient['patient_id']}"
        assert page.locator("#documents tbody tr").count() == 2
        assert page.locator("#not-visible").count() == 0
        each_language(page, record)
        # Read a document: its author's signature is checked now, and shown as verified.
        with page.expect_navigation(wait_until="load"):
            page.locator("#documents tbody tr", has_text="Laboratory").locator("a").click()
        assert page.locator("#signature").get_attribute("data-verified") == "true"
        each_language(page, page.url.split("?")[0])
        shoot(page, "workspace-document-en.png")
        # Publish a letter signed with the card: the patient then sees it in their portal.
        letter = tmp_path / "letter.pdf"
        letter.write_bytes(b"%PDF-1.7\n% a letter from the workspace\n%%EOF\n")
        site.cli("card", "sign", str(letter), "--card", str(site.demo_card))
        each_language(page, f"{record}/publish")
        page.set_input_files("#publish-file", str(letter))
        page.set_input_files("#publish-signature", str(letter) + ".jws")
        page.fill("#publish-title", "Letter after the visit")
        with page.expect_navigation(wait_until="load"):
            page.click("#publish-button")
        assert page.locator("#published").is_visible()
        assert page.locator("#documents tbody tr", has_text="Letter after the visit").count() == 1
        context, mine = patient_signed_in(site, browser)
        try:
            mine.goto(f"{site.base}/me/documents?lang=en", wait_until="load")
            assert "Letter after the visit" in mine.inner_text("#documents")
        finally:
            context.__exit__(None, None, None)
        assert problems == []


def test_a_physician_without_access_breaks_the_glass_and_the_patient_reads_why(
        site: Site, browser: Any) -> None:
    patient = site.patient
    other = [p for p in site.accounts["professionals"] if p["profession"] == "physician"][1]
    card = site.workdir / "card-2"
    site.cli("pki", "issue-practitioner", other["practitioner_id"], "--out", str(card))
    reason = "Unconscious at the emergency department, no relative reachable"
    context, mine = patient_signed_in(site, browser)
    # The patient hides the laboratory report from everyone but its author.
    mine.goto(f"{site.base}/me/documents?lang=en", wait_until="load")
    with mine.expect_navigation(wait_until="load"):
        mine.locator("#documents tbody tr", has_text="Laboratory").locator("button.hide").click()
    with new_page(browser) as page:
        enrol(site, page, card)
        record = f"{site.base}/workspace/record/{patient['patient_id']}"
        page.goto(f"{record}?lang=en", wait_until="load")
        assert page.locator("#refusal").is_visible()
        assert page.locator("#documents").count() == 0
        each_language(page, record)
        with page.expect_navigation(wait_until="load"):
            page.click("#emergency-link")
        each_language(page, f"{record}/emergency")
        shoot(page, "workspace-emergency-en.png")
        page.fill("#reason", reason)
        with page.expect_navigation(wait_until="load"):
            page.click("#declare")
        assert "Emergency access" in page.inner_text("#emergency-banner")
        # The emergency opens the normal documents, not the one the patient hid: the
        # physician is told it exists, and to ask the patient.
        assert page.locator("#documents tbody tr", has_text="Consultation").count() == 1
        assert page.locator("#documents tbody tr", has_text="Laboratory").count() == 0
        assert "1 document of this record is not visible to you" in page.inner_text(
            "#not-visible")
        shoot(page, "workspace-record-en.png")
        each_language(page, record)
    try:
        mine.goto(f"{site.base}/me?lang=en", wait_until="load")
        assert reason in mine.inner_text("main")
    finally:
        context.__exit__(None, None, None)


def test_an_assistant_acts_in_the_physicians_name_and_the_history_names_both(
        site: Site, browser: Any) -> None:
    patient = site.patient
    physician = next(p for p in site.accounts["professionals"] if p["profession"] == "physician")
    made = json.loads(site.cli("directory", "add-practitioner", "--identifier", "HP-ASSIST-E2E",
                               "--family", "Assistent", "--given", "Alex", "--profession",
                               "medical-assistant", "--json"))
    card = site.workdir / "card-assistant"
    site.cli("pki", "issue-practitioner", made["id"], "--out", str(card))
    # The physician mandates the assistant from their own home page, with their own card.
    with new_page(browser) as page:
        enrol(site, page, site.demo_card)
        page.fill("#assistant-id", "HP-ASSIST-E2E")
        page.fill("#mandate-end", (date.today() + timedelta(days=90)).isoformat())
        with page.expect_navigation(wait_until="load"):
            page.click("#mandate")
        assert "Alex Assistent" in page.inner_text("#mandates")
    with new_page(browser) as page:
        enrol(site, page, card)
        assert page.locator("#acting-banner").count() == 0
        with page.expect_navigation(wait_until="load"):
            page.click("#act-for")
        assert physician["name"] in page.inner_text("#acting-banner")
        record = f"{site.base}/workspace/record/{patient['patient_id']}"
        page.goto(f"{record}?lang=en", wait_until="load")
        assert physician["name"] in page.inner_text("#acting-banner")
        with page.expect_navigation(wait_until="load"):
            page.locator("#documents tbody tr", has_text="Consultation").locator("a").click()
        assert page.locator("#signature").get_attribute("data-verified") == "true"
        each_language(page, record)
        shoot(page, "workspace-acting-en.png")
    context, mine = patient_signed_in(site, browser)
    try:
        mine.goto(f"{site.base}/me?lang=en", wait_until="load")
        history = mine.inner_text("main")
        assert f"Alex Assistent, on behalf of {physician['name']}" in history, history
    finally:
        context.__exit__(None, None, None)
