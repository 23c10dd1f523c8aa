"""The patient's sharing journeys in Debian's Chromium against a real server with demo data:
give a hospital access for 30 days (its physician then finds the record), block that physician
(refused at once, the hospital's access notwithstanding), see what they would see, lift the
block; a representative acting under the banner; sign out everywhere from a second browser.
Each effect is checked through the FHIR API as the hospital's physician's system sees it, and
every page by axe-core in French, English and German.

The demo patient signs in with recovery codes (each works once): the other browser tests of
the session use the authenticator's codes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest

from support.browser import axe_violations, chromium, new_page

from .conftest import CAREVAULT, COMMAND_SECONDS, carevault_env, previous_step_code

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def cli(server: Any, *args: str, stdin: str | None = None) -> Any:
    done = subprocess.run([CAREVAULT, *args], cwd=server.workdir, input=stdin, text=True,
                          env=carevault_env(server.workdir, server.base_url),
                          capture_output=True, timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def sign_in(page: Any, server: Any, login: str, password: str, code: str) -> None:
    page.goto(server.base_url + "/login?lang=en", wait_until="load")
    page.fill("#login", login)
    page.fill("#password", password)
    page.fill("#code", code)
    with page.expect_navigation(wait_until="load"):
        page.click("#signin")
    assert "/me" in page.url, page.url


@pytest.fixture(scope="module")
def patient(server: Any, browser: Any) -> Iterator[Any]:
    portal = server.accounts["patients"][0]["portal"]
    with new_page(browser) as page:
        sign_in(page, server, portal["login"], portal["password"], portal["recovery_codes"][-1])
        yield page


@pytest.fixture(scope="module")
def hospital(server: Any) -> tuple[dict[str, Any], Any, str]:
    """A demo hospital whose physician has never seen the demo patient, with a card of the
    platform CA for that physician's system (`carevault pki issue-practitioner`)."""
    demo = server.accounts["professionals"][0]
    found = next(h for h in server.accounts["hospitals"] if h["member_id"]
                 and h["member_id"] != demo["practitioner_id"]
                 and h["name"] != demo["organization"])  # the other modules' physician
    card = server.workdir / f"card-{found['member']}"
    cli(server, "pki", "issue-practitioner", found["member_id"], "--out", str(card))
    colleague = dataclasses.replace(server, card=card, client_id=found["member"])
    practitioner = httpx.get(f"{server.fhir}/Practitioner/{found['member_id']}", timeout=30,
                             headers={"Authorization": f"Bearer {colleague.token()}"}).json()
    return found, colleague, practitioner["name"][0]["family"]


def finds(colleague: Any, patient_id: str) -> int:
    return httpx.get(f"{colleague.fhir}/DocumentReference",
                     params={"patient": f"Patient/{patient_id}"}, timeout=30,
                     headers={"Authorization": f"Bearer {colleague.token()}"}).status_code


def search(page: Any, server: Any, lang: str, name: str) -> None:
    page.goto(f"{server.base_url}/me/access?lang={lang}", wait_until="load")
    page.fill("#find-name", name)
    with page.expect_navigation(wait_until="load"):
        page.click("#find-submit")
    assert axe_violations(page) == []


def test_a_hospital_for_30_days_then_a_block_that_wins_and_a_preview(
        server: Any, patient: Any, hospital: tuple[dict[str, Any], Any, str]) -> None:
    page, patient_id = patient, server.accounts["patients"][0]["patient_id"]
    found, colleague, family = hospital
    assert finds(colleague, patient_id) == 403  # never seen, never granted
    word = max(found["name"].split(), key=len)
    search(page, server, "de", word)
    entry = page.locator(f'li[data-party-id="{found["organization_id"]}"]')
    assert entry.locator("input.end").input_value()  # 30 days ahead, proposed
    with page.expect_navigation(wait_until="load"):
        entry.locator("button.grant").click()
    assert page.locator("#done").is_visible() and found["name"] in page.inner_text("#grant-list")
    assert axe_violations(page) == []
    assert finds(colleague, patient_id) == 200  # a member of the hospital now finds it
    search(page, server, "fr", family)
    with page.expect_navigation(wait_until="load"):
        page.locator(f'li[data-party-id="{found["member_id"]}"] button.block').click()
    assert family in page.inner_text("#block-list")
    assert axe_violations(page) == []
    assert finds(colleague, patient_id) == 403  # the block wins over the hospital's access
    search(page, server, "en", family)
    with page.expect_navigation(wait_until="load"):
        page.locator(f'li[data-party-id="{found["member_id"]}"] button.preview').click()
    assert "would see none of your documents" in page.inner_text("#preview-summary")
    assert axe_violations(page) == []
    page.goto(f"{server.base_url}/me/access?lang=en", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.locator("#block-list button.unblock").first.click()
    assert finds(colleague, patient_id) == 200
    search(page, server, "en", family)
    with page.expect_navigation(wait_until="load"):
        page.locator(f'li[data-party-id="{found["member_id"]}"] button.preview').click()
    assert "would see" in page.inner_text("#preview-summary")
    assert axe_violations(page) == []
    # Withdrawn again, for the other journeys of this server.
    page.goto(f"{server.base_url}/me/access?lang=en", wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.locator("#grant-list li", has_text=found["name"]).locator("button.revoke").click()
    assert finds(colleague, patient_id) == 403


def test_a_representative_acts_under_a_banner_in_three_languages(
        server: Any, browser: Any) -> None:
    patient_id = server.accounts["patients"][0]["patient_id"]
    login, password = f"parent-{int(time.time())}@demo.test", "a parent's long passphrase 4"
    made = cli(server, "accounts", "add-representative", "--login", login, "--password-stdin",
               "--json", stdin=password)
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(made["totp_uri"]).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    cli(server, "accounts", "confirm", made["account_id"], "--code", previous_step_code(totp))
    cli(server, "accounts", "mandate", made["account_id"], patient_id, "--scope", "read")
    with new_page(browser) as page:
        sign_in(page, server, login, password, totp.now())
        with page.expect_navigation(wait_until="load"):
            page.locator("#mandates button.act-for").first.click()
        for lang, words in (("fr", "Vous agissez pour"), ("en", "You are acting for"),
                            ("de", "Sie handeln für")):
            for path in ("/me", "/me/documents", "/me/access"):
                page.goto(f"{server.base_url}{path}?lang={lang}", wait_until="load")
                assert words in page.inner_text("#acting-banner"), (path, lang)
                assert axe_violations(page) == []


def test_signing_out_everywhere_from_a_second_browser(
        server: Any, browser: Any, patient: Any) -> None:
    """Last of the module: it ends the first browser's session too."""
    portal = server.accounts["patients"][0]["portal"]
    page = patient
    page.goto(server.base_url + "/me?lang=en", wait_until="load")
    assert "/me" in page.url
    with new_page(browser) as other:
        sign_in(other, server, portal["login"], portal["password"], portal["recovery_codes"][-2])
        assert axe_violations(other) == []
        with other.expect_navigation(wait_until="load"):
            other.click("#signout-everywhere")
        assert "/login" in other.url
    page.goto(server.base_url + "/me?lang=en", wait_until="load")
    assert "/login" in page.url  # the first browser did nothing, and is signed out
