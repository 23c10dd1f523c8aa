"""A SMART app's sign-in (authorization code with PKCE), for a patient or an operator, with
the browser's part played by httpx: what an app on a phone does, minus the screen.

The app sends the person to CareVault's authorization page; the person signs in (password
and authenticator code: patients at /login, operators at /operator/login) and allows the app;
CareVault redirects back with a one-time code, which the app trades, with its PKCE verifier,
for a 5-minute access token. The token is printed. Register the app first:
``carevault apps register --name "My app" --redirect-uri http://127.0.0.1:9/callback``.

    .venv/bin/python examples/sign_in.py --client-id … --login … --password … \\
        --totp-secret … --scope 'launch/patient patient/*.rs'
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import re
import secrets
import sys
import urllib.parse

import httpx
import pyotp

REDIRECT = "http://127.0.0.1:9/callback"


def _field(page: str, name: str) -> str | None:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="CareVault's address")
    parser.add_argument("--client-id", required=True, help="as `carevault apps register` printed")
    parser.add_argument("--redirect-uri", default=REDIRECT)
    parser.add_argument("--scope", default="launch/patient patient/*.rs")
    parser.add_argument("--login", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--totp-secret", required=True, help="the authenticator app's secret")
    parser.add_argument("--operator", action="store_true", help="sign in at the operators' door")
    args = parser.parse_args()

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": args.client_id, "redirect_uri": args.redirect_uri,
        "scope": args.scope, "state": secrets.token_urlsafe(16),
        "code_challenge": challenge.decode().rstrip("="), "code_challenge_method": "S256"})
    with httpx.Client(base_url=args.base, timeout=30.0) as browser:
        to_login = browser.get(f"/oauth/authorize?{query}").headers.get("location", "")
        refused = urllib.parse.parse_qs(urllib.parse.urlsplit(to_login).query).get("error")
        if to_login.startswith(args.redirect_uri) and refused:
            # Sent back to the app before any sign-in: e.g. invalid_scope, when the app's
            # registration allows none of the scopes asked for.
            sys.exit(f"authorization refused: {refused[0]}")
        if args.operator:
            to_login = to_login.replace("/login", "/operator/login", 1)
        form = browser.get(to_login).text
        signed_in = browser.post(to_login.split("?")[0], data={
            "login": args.login, "password": args.password,
            "code": pyotp.TOTP(args.totp_secret).now(),
            "csrf": _field(form, "csrf") or "", "next": _field(form, "next") or ""})
        if signed_in.status_code != 303:
            sys.exit(f"sign-in refused ({signed_in.status_code})")
        consent = browser.get(signed_in.headers["location"]).text
        fields = {name: html.unescape(value) for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)">', consent)}
        # The scope boxes, as the page ticks them: the person allows everything shown.
        fields.update(re.findall(
            r'<input type="checkbox" name="(allow-\d+)" value="([^"]*)"[^>]* checked>', consent))
        allowed = browser.post("/oauth/authorize", data={**fields, "decision": "approve"})
        back = urllib.parse.urlsplit(allowed.headers.get("location", ""))
        code = urllib.parse.parse_qs(back.query).get("code")
        if not code:
            sys.exit(f"no code came back: {back.query or allowed.text[:200]}")
        answer = browser.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": code[0],
            "redirect_uri": args.redirect_uri, "client_id": args.client_id,
            "code_verifier": verifier})
    if answer.status_code != 200:
        sys.exit(f"token refused ({answer.status_code}): {answer.text}")
    print(answer.json()["access_token"])


if __name__ == "__main__":
    main()
