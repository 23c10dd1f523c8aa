"""The professional workspace in Debian's Chromium against a real server: the professional
proves their card with the real `carevault card enrol` command, enrols a passkey with
Chromium's virtual authenticator (CDP ``WebAuthn``), signs in with it in a fresh browser
context, and loses the session the moment the card is revoked. Each page is axe-clean in
French, English and German."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

from .conftest import CAREVAULT, Installation, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Installation, str]]:
    setup = Installation(tmp_path_factory.mktemp("workspace")).prepare()
    # WebAuthn refuses an IP address: the public address (the relying party) is localhost.
    base = f"http://localhost:{free_port()}"
    setup.serve("server", base, ["--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1]])
    try:
        yield setup, base
    finally:
        setup.stop()


def authenticator(page: Any) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})


def card_enrol(setup: Installation, base: str) -> str:
    done = subprocess.run([CAREVAULT, "card", "enrol", "--card", str(setup.card), "--base", base,
                           "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["code"])


def test_enrol_with_the_card_sign_in_with_the_passkey_and_lose_it_with_the_card(
        installation: tuple[Installation, str], tmp_path: Path) -> None:
    setup, base = installation
    with chromium() as browser, new_page(browser) as page:
        problems = page_errors(page)
        authenticator(page)
        for lang in ("fr", "de", "en"):
            page.goto(f"{base}/workspace/enrol?lang={lang}")
            assert axe_violations(page) == []
        page.fill("#code", card_enrol(setup, base))
        page.click("#enrol")
        page.wait_for_url(f"{base}/workspace?lang=en")
        assert "Anne Weber" in page.inner_text("#who")
        for lang in ("fr", "de", "en"):
            page.goto(f"{base}/workspace?lang={lang}")
            assert axe_violations(page) == []
        # Sign out, then in again with the passkey (the authenticator survives reloads).
        page.click("#signout")
        page.wait_for_url(f"{base}/workspace/login?lang=en")
        for lang in ("fr", "de", "en"):
            page.goto(f"{base}/workspace/login?lang={lang}")
            assert axe_violations(page) == []
        page.click("#signin")
        page.wait_for_url(f"{base}/workspace?lang=en")
        assert page.locator("#who").inner_text() == "Anne Weber"
        # The operator revokes the card: the very next page is the sign-in page.
        setup.cli("pki", "revoke", setup.card_serial, "--reason", "keyCompromise")
        page.goto(f"{base}/workspace")
        assert page.url.startswith(f"{base}/workspace/login")
        page.click("#signin")
        page.locator("#status").filter(has_text="passkey").wait_for()
        assert page.url.startswith(f"{base}/workspace/login")
        assert problems == []
