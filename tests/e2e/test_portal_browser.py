"""The portal in a real browser (Debian's Chromium driven by Playwright), against a real server.

Playwright's own browser downloads are never used: the system Chromium is launched by path.
Without it the tests skip, except under ``CI=true`` where a missing browser is a failure
(`support.requirements`).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from support.requirements import CHROMIUM, CHROMIUM_BROWSER, PLAYWRIGHT, require

from .conftest import CAREVAULT, carevault_env, previous_step_code, unused_totp

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(CHROMIUM_BROWSER, PLAYWRIGHT)
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def collect_problems(page: Any) -> list[str]:
    """Console errors and uncaught page errors, gathered as the page runs."""
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(
            f"console {message.type} at {message.location.get('url')}: {message.text}"
        )
        if message.type == "error"
        else None,
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def test_home_page(server: Any, page: Any, tmp_path: Path) -> None:
    problems = collect_problems(page)

    response = page.goto(server.base_url + "/", wait_until="load")

    assert response is not None
    assert response.status == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "CareVault" in page.title()
    heading = page.locator("h1")
    assert heading.count() == 1
    assert heading.inner_text().strip() == "CareVault"
    notice = page.get_by_role("status")
    assert notice.is_visible()
    assert re.search(r"patients sign in here", notice.inner_text(), re.IGNORECASE | re.DOTALL)
    assert server.fhir in page.locator("main").inner_text()
    screenshot = tmp_path / "home.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    scripts = [p for p in problems if p.startswith("page error")]
    assert scripts == [], "\n".join(scripts)


def test_home_page_styles_are_not_blocked(server: Any, page: Any) -> None:
    problems = collect_problems(page)

    page.goto(server.base_url + "/", wait_until="load")

    blocked = [p for p in problems if "Content Security Policy" in p]
    assert blocked == [], "\n".join(blocked)
    # home.html colours the h1 #0b5394; the browser's default is black.
    colour = page.locator("h1").evaluate("element => getComputedStyle(element).color")
    assert colour == "rgb(11, 83, 148)"


def test_home_page_has_no_console_error(server: Any, page: Any) -> None:
    problems = collect_problems(page)

    page.goto(server.base_url + "/", wait_until="load")
    page.wait_for_load_state("networkidle")

    assert problems == [], "\n".join(problems)


def test_capability_statement_link(server: Any, page: Any) -> None:
    problems = collect_problems(page)
    page.goto(server.base_url + "/", wait_until="load")
    link = page.locator("#capabilities-link")
    assert link.inner_text().strip() == "capability statement"

    with page.expect_navigation(wait_until="load"):
        link.click()

    assert page.url == server.base_url + "/fhir/metadata"
    text = page.locator("body").inner_text()
    assert "CapabilityStatement" in text
    assert '"fhirVersion"' in text
    # The JSON is shown, not downloaded, and it is the FHIR document itself.
    document = json.loads(page.locator("pre").first.inner_text())
    assert document["resourceType"] == "CapabilityStatement"
    scripts = [p for p in problems if p.startswith("page error")]
    assert scripts == [], "\n".join(scripts)


def test_a_patient_signs_in_sees_who_accessed_the_record_and_signs_out(
    server: Any, page: Any, tmp_path: Path
) -> None:
    demo = server.accounts["patients"][0]
    portal = demo["portal"]
    # A professional's system reads the record first (recorded in the patient's history).
    assert httpx.get(f"{server.fhir}/Patient/{demo['patient_id']}",
                     headers={"Authorization": f"Bearer {server.token()}"}).status_code == 200
    problems = collect_problems(page)
    page.goto(server.base_url + "/", wait_until="load")
    page.click("#signin-link")
    page.fill("#login", portal["login"])
    page.fill("#password", "not the password")
    page.fill("#code", "123456")
    page.click("#signin")
    assert "is not right" in page.locator("#error").inner_text()
    page.fill("#login", portal["login"])
    page.fill("#password", portal["password"])
    page.fill("#code", unused_totp(portal["totp_secret"]))
    with page.expect_navigation(wait_until="load"):
        page.click("#signin")
    assert page.url.startswith(server.base_url + "/me")
    assert demo["name"].split()[-1] in page.locator("#patient-name").inner_text()
    lines = page.locator("#access-history li").all_inner_texts()
    assert any("read your identity record" in line for line in lines)
    assert any("signed in" in line for line in lines)
    assert any("tried to sign in and failed" in line for line in lines)
    page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
    with page.expect_navigation(wait_until="load"):
        page.click("#signout")
    assert "/login" in page.url
    page.goto(server.base_url + "/me", wait_until="load")
    assert "/login" in page.url  # the session is over
    errors = [p for p in problems if p.startswith("page error")]
    assert errors == [], "\n".join(errors)


def test_a_patient_enrols_in_the_browser_then_signs_in(server: Any, page: Any) -> None:
    patient = server.accounts["patients"][1]
    invited = subprocess.run(
        [CAREVAULT, "accounts", "invite", patient["patient_id"], "--json"], cwd=server.workdir,
        env=carevault_env(server.workdir, server.base_url), capture_output=True, text=True,
        timeout=120, check=True)
    code = json.loads(invited.stdout)["activation_code"]
    page.goto(server.base_url + "/enrol", wait_until="load")
    page.fill("#national_id", patient["national_id"])
    page.fill("#activation", code)
    page.fill("#login", "browser.patient@example.lu")
    page.fill("#password", "a passphrase typed in a browser 7")
    page.fill("#password2", "a passphrase typed in a browser 7")
    with page.expect_navigation(wait_until="load"):
        page.click("#enrol")
    assert page.locator("#qr svg").is_visible()
    uri = page.locator("#totp-uri").inner_text()
    secret = re.search(r"secret=([A-Z2-7]+)", uri)
    assert secret
    totp = pyotp.TOTP(secret.group(1))
    assert len(page.locator("#recovery-codes li").all_inner_texts()) >= 8
    page.fill("#code", previous_step_code(totp))
    with page.expect_navigation(wait_until="load"):
        page.click("#confirm")
    assert page.locator("#ready").is_visible()
    page.click("#signin-now")
    page.fill("#login", "browser.patient@example.lu")
    page.fill("#password", "a passphrase typed in a browser 7")
    page.fill("#code", totp.now())
    with page.expect_navigation(wait_until="load"):
        page.click("#signin")
    assert patient["name"].split()[-1] in page.locator("#patient-name").inner_text()
