"""The security officer's journeys in Debian's Chromium against a real server with demo data:
a physician snoops on a celebrity's record through break-the-glass; the server's own chore
raises the alerts; the officer signs in at the operators' door, opens the alert, sees its
evidence, and closes it with a reason; the emergency access is reviewed. Every page of the
workspace is checked by axe-core in French, English and German.

The account is made with the command line, as an operator would; the celebrity label is set
by a registrar through the FHIR API (`registrar_token`).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest

from support.browser import axe_violations, chromium, new_page, page_errors
from support.operators import PASSWORD

from .conftest import (
    CAREVAULT,
    COMMAND_SECONDS,
    carevault_env,
    confirm_totp,
    registrar_token,
)

pytestmark = pytest.mark.e2e

LANGUAGES = ("fr", "en", "de")
PAGES = ("/officer", "/officer/emergencies", "/officer/audit", "/officer/integrity",
         "/officer/pki")
CELEBRITY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}
FHIR_JSON = "application/fhir+json"
SCAN_WAIT_SECONDS = 120.0  # the chore scans every 30 s; this bounds the wait, it proves nothing


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def cli(server: Any, *args: str, stdin: str | None = None) -> Any:
    done = subprocess.run([CAREVAULT, *args], cwd=server.workdir,
                          env=carevault_env(server.workdir, server.base_url), input=stdin,
                          capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.fixture(scope="module")
def officer(server: Any, browser: Any) -> Iterator[Any]:
    """A page signed in as a security officer made with the command line."""
    made = cli(server, "accounts", "add-operator", "--login", "sec.officer.e2e",
               "--security-officer", "--password-stdin", "--json", stdin=PASSWORD)
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(made["totp_uri"]).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    confirm_totp(server.workdir, carevault_env(server.workdir, server.base_url),
                 made["account_id"], totp)
    with new_page(browser) as page:
        page.goto(server.base_url + "/operator/login?lang=en", wait_until="load")
        page.fill("#login", "sec.officer.e2e")
        page.fill("#password", PASSWORD)
        page.fill("#code", totp.now())
        with page.expect_navigation(wait_until="load"):
            page.click("#signin")
        page.goto(server.base_url + "/me?lang=en", wait_until="load")
        assert "/officer" in page.url  # the officer's home is the workspace
        yield page


@pytest.fixture(scope="module")
def snooped(server: Any) -> str:
    """A demo patient the registrar labels a celebrity; the demo physician, who never saw
    them, breaks the glass and reads their record."""
    registrar = {"Authorization": f"Bearer {registrar_token(server.base_url, server.workdir)}",
                 "Content-Type": FHIR_JSON}
    known = {p["patient_id"] for p in server.accounts["patients"]}
    found = httpx.get(f"{server.fhir}/Patient", params={"_count": "10"}, headers=registrar,
                      timeout=30)
    assert found.status_code == 200, found.text
    star = next(e["resource"] for e in found.json()["entry"]
                if e["resource"]["id"] not in known)
    star["meta"] = {"security": [CELEBRITY]}
    labelled = httpx.put(f"{server.fhir}/Patient/{star['id']}", json=star, headers=registrar,
                         timeout=30)
    assert labelled.status_code == 200, labelled.text
    physician = {"Authorization": f"Bearer {server.token()}", "Content-Type": FHIR_JSON}
    glass = httpx.post(f"{server.fhir}/Patient/{star['id']}/$emergency-access",
                       headers=physician, timeout=30,
                       json={"resourceType": "Parameters", "parameter": [
                           {"name": "reason", "valueString": "unconscious on arrival"}]})
    assert glass.status_code == 200, glass.text
    read = httpx.get(f"{server.fhir}/Encounter", params={"patient": f"Patient/{star['id']}"},
                     headers=physician, timeout=30)
    assert read.status_code == 200, read.text
    return str(star["id"])


def wait_for_alert(page: Any, url: str, selector: str) -> None:
    """Reload the queue until the server's chore has raised the alert (bounded)."""
    deadline = time.monotonic() + SCAN_WAIT_SECONDS
    while True:
        page.goto(url, wait_until="load")
        if page.locator(selector).count() > 0:
            return
        assert time.monotonic() < deadline, f"no alert {selector} after {SCAN_WAIT_SECONDS} s"
        page.wait_for_timeout(2_000)


def test_every_workspace_page_is_accessible_in_three_languages(
        server: Any, officer: Any) -> None:
    page = officer
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


def test_a_snooped_celebrity_is_found_explained_and_closed(
        server: Any, officer: Any, snooped: str) -> None:
    page, star = officer, snooped
    problems = page_errors(page)
    wait_for_alert(page, f"{server.base_url}/officer?lang=en&kind=vip",
                   'tr[data-kind="vip"]')
    row = page.locator('tr[data-kind="vip"]', has_text=star)
    assert row.count() == 1
    with page.expect_navigation(wait_until="load"):
        row.locator("a.open-alert").click()
    assert "VIP" in page.locator("#explanation").inner_text()
    assert page.locator("#alert-patient").inner_text().strip() == star
    evidence = page.locator("#accesses tbody tr")
    assert evidence.count() >= 1
    assert "leaf_index=" in (evidence.first.locator("a").get_attribute("href") or "")
    assert axe_violations(page) == []
    with page.expect_navigation(wait_until="load"):
        page.click("#acknowledge")
    assert page.locator("#done").is_visible()
    page.fill("#assignee", "Ward investigation")
    with page.expect_navigation(wait_until="load"):
        page.click("#assign")
    assert page.locator("#alert-assignee").inner_text().strip() == "Ward investigation"
    page.check("#verdict-true-positive")
    page.fill("#note", "The physician had no care relationship; reported to the ward.")
    with page.expect_navigation(wait_until="load"):
        page.click("#close")
    assert "Closed" in page.locator("#alert-status").inner_text()
    assert page.locator("#close").count() == 0
    assert axe_violations(page) == []
    assert problems == [], "\n".join(problems)


def test_the_emergency_access_is_reviewed(server: Any, officer: Any, snooped: str) -> None:
    page, star = officer, snooped
    wait_for_alert(page, f"{server.base_url}/officer/emergencies?lang=fr",
                   f'#emergencies li:has-text("{star}")')
    item = page.locator("#emergencies li", has_text=star).first
    item.locator("textarea").fill("Patient amené inconscient : accès justifié.")
    with page.expect_navigation(wait_until="load"):
        item.locator("button.review").click()
    assert page.locator("#done").is_visible()
    assert page.locator("#emergencies li", has_text=star).count() == 0
    assert axe_violations(page) == []


def test_the_workspace_refuses_a_stranger_and_a_forged_form(
        server: Any, officer: Any, browser: Any) -> None:
    with new_page(browser) as stranger:
        stranger.goto(f"{server.base_url}/officer?lang=de", wait_until="load")
        assert "/operator/login" in stranger.url  # no session: sent to the operators' door
    alert = officer.request.get(f"{server.base_url}/officer?status=all&lang=en")
    assert alert.status == 200
    target = alert.text().split('class="open-alert"')[0].rsplit('href="', 1)[1].split("?")[0]
    forged = officer.request.post(f"{server.base_url}{target}",
                                  form={"do": "acknowledge"}, max_redirects=0)
    assert forged.status == 400  # the session's cookie alone is not enough: no CSRF token
