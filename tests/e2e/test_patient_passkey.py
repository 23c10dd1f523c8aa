"""A patient adds a passkey in Debian's Chromium (its virtual authenticator, CDP ``WebAuthn``)
and signs in with it instead of the code, the password still typed; the passkeys page is
axe-clean in French, English and German. WebAuthn refuses an IP address, so the browser uses
the server's ``localhost`` name (the dev relying party)."""

from __future__ import annotations

from typing import Any

import pytest

from support.browser import axe_violations, chromium, new_page, page_errors

pytestmark = pytest.mark.e2e


def authenticator(page: Any) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})


def test_add_a_passkey_then_sign_in_with_it_instead_of_the_code(server: Any) -> None:
    portal = server.accounts["patients"][0]["portal"]
    base = server.base_url.replace("127.0.0.1", "localhost")
    with chromium() as browser, new_page(browser) as page:
        problems = page_errors(page)
        authenticator(page)
        page.goto(f"{base}/login?lang=en")
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        page.fill("#code", portal["recovery_codes"][-3])  # the others' are the sharing journeys'
        with page.expect_navigation():
            page.click("#signin")
        page.click("#to-passkeys")
        page.wait_for_url(f"{base}/me/passkeys?lang=en")
        assert page.locator("#no-passkey").is_visible()
        for lang in ("fr", "de", "en"):
            page.goto(f"{base}/me/passkeys?lang={lang}")
            assert axe_violations(page) == []
        page.fill("#current-password", portal["password"])  # typed again to add a passkey
        page.click("#add-passkey")
        page.wait_for_url(f"{base}/me/passkeys?lang=en&added=1")
        assert page.locator("#passkeys tbody tr").count() == 1
        assert axe_violations(page) == []
        # Sign out, then in with the password and the passkey, no code typed.
        page.goto(f"{base}/me?lang=en")
        with page.expect_navigation():
            page.click("#signout")
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        assert page.locator("#passkey-second").is_visible()
        for lang in ("fr", "de", "en"):
            page.goto(f"{base}/login?lang={lang}")
            assert axe_violations(page) == []
        page.fill("#login", portal["login"])
        page.fill("#password", portal["password"])
        with page.expect_navigation():
            page.click("#passkey-second")
        assert "/me" in page.url
        page.goto(f"{base}/me/passkeys?lang=en")
        assert "never" not in page.inner_text("#passkeys")  # it was used just now
        # A wrong password with the passkey: refused, with the one message for every failure.
        with page.expect_navigation():
            page.click("#signout")
        page.fill("#login", portal["login"])
        page.fill("#password", "not the password")
        with page.expect_navigation():
            page.click("#passkey-second")
        assert page.locator("#error").is_visible()
        assert "/login" in page.url
        assert problems == []
