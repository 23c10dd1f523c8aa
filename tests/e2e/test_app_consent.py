"""A patient allows an app to reach their record, in Debian's Chromium against a real server:
the consent page says in their words what the app asks for (in French, English and German,
axe-clean), the patient unticks one thing, and the token the app gets holds no more than what
was left ticked (a write it then tries is refused)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

from .conftest import CAREVAULT, COMMAND_SECONDS, carevault_env, unused_totp

pytestmark = pytest.mark.e2e

CALLBACK = "http://127.0.0.1:9/callback"
ASKED = "launch/patient patient/*.rs patient/Patient.u"
LEGEND = {
    "fr": "Ce que l'application pourra faire",
    "en": "What the app may do",
    "de": "Was die App tun darf",
}
SEE_ALL = {"fr": "voir : tout votre dossier", "en": "see: your whole record",
           "de": "sehen: Ihre ganze Akte"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def register_app(server: Any) -> str:
    done = subprocess.run(
        [CAREVAULT, "apps", "register", "--name", "Health diary", "--redirect-uri", CALLBACK,
         "--scope", ASKED, "--json"],
        cwd=server.workdir, env=carevault_env(server.workdir, server.base_url),
        capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["client_id"])


def test_a_patient_allows_an_app_less_than_it_asked_for(server: Any, browser: Any) -> None:
    client_id = register_app(server)
    demo = server.accounts["patients"][0]
    portal = demo["portal"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")

    def authorize(lang: str) -> str:
        return server.base_url + "/oauth/authorize?" + urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK,
            "scope": ASKED, "state": "diary-1", "code_challenge": challenge,
            "code_challenge_method": "S256", "lang": lang})

    with new_page(browser) as page:
        problems = page_errors(page)
        page.goto(authorize("en"), wait_until="load")
        assert "/login" in page.url  # sign in first, then back to the question
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        page.fill("#code", unused_totp(portal["totp_secret"]))
        with page.expect_navigation(wait_until="load"):
            page.click("#signin")
        for lang in ("fr", "de", "en"):
            page.goto(authorize(lang), wait_until="load")
            assert page.locator("#approve").is_visible()
            assert page.locator("#scopes legend").inner_text().startswith(LEGEND[lang])
            boxes = page.locator("#scopes input[type=checkbox]")
            assert boxes.count() == 2  # launch/patient is no resource: shown, not a box
            assert SEE_ALL[lang] in page.locator("#scopes").inner_text()
            assert axe_violations(page) == []

        # Reading, yes; changing the identity details, no.
        page.uncheck("input[value='patient/Patient.u']")
        reached: list[str] = []

        def the_app(route: Any) -> None:
            reached.append(route.request.url)
            route.fulfill(status=200, content_type="text/plain", body="the app")

        page.route("http://127.0.0.1:9/**", the_app)
        page.click("#approve")
        page.wait_for_url("http://127.0.0.1:9/**")
        assert problems == []

    back = urllib.parse.parse_qs(urllib.parse.urlsplit(reached[0]).query)
    assert back["state"] == ["diary-1"]
    token = httpx.post(f"{server.base_url}/oauth/token", data={
        "grant_type": "authorization_code", "code": back["code"][0], "redirect_uri": CALLBACK,
        "client_id": client_id, "code_verifier": verifier}, timeout=30.0)
    assert token.status_code == 200, token.text
    granted = token.json()["scope"].split()
    assert "patient/*.rs" in granted and "patient/Patient.u" not in granted
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    patient_url = f"{server.fhir}/Patient/{demo['patient_id']}"
    mine = httpx.get(patient_url, headers=headers, timeout=30.0)
    assert mine.status_code == 200
    changed = httpx.put(patient_url, headers={**headers, "Content-Type": "application/fhir+json",
                                              "If-Match": mine.headers.get("ETag", "")},
                        content=mine.content, timeout=30.0)
    assert changed.status_code == 403, changed.text
    assert changed.json()["resourceType"] == "OperationOutcome"
