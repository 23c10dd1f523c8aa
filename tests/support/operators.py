"""Operators and security officers signing in the production way (password, TOTP, the
operators' door, authorization code + PKCE), for the tests that need their tokens."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.services.patient_apps import register_app

PASSWORD = "operators keep long passphrases 9"
REDIRECT = "https://ops.example/callback"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def operator(platform: Platform, login: str, *, security_officer: bool) -> pyotp.TOTP:
    enrolment = platform.accounts.register_operator(login, PASSWORD,
                                                    security_officer=security_officer,
                                                    by="os-user:test")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    totp = pyotp.TOTP(query["secret"][0])
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    return totp


def operator_token(client: TestClient, platform: Platform, login: str, totp: pyotp.TOTP,
                   scope: str) -> str:
    with platform.unit_of_work() as uow:
        client_id = register_app(uow, "Security console", [REDIRECT], datetime.now(UTC),
                                 scopes=scope)
    return authorize_operator(client, client_id, login, totp, scope)


def authorize_operator(client: httpx.Client, client_id: str, login: str, totp: pyotp.TOTP,
                       scope: str, password: str = PASSWORD) -> str:
    """The operator's browser steps, with any HTTP client (in-process or a real server): the
    authorization request, the operators' door, the consent page, the code for a token."""
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    url = "/oauth/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "scope": scope, "code_challenge": challenge.rstrip("="),
        "code_challenge_method": "S256"})
    to_login = client.get(url, follow_redirects=False).headers["location"]
    # Operators have their own door; the patients' page links to it, keeping "next".
    login_page = client.get(to_login.replace("/login", "/operator/login", 1))
    csrf = CSRF.search(login_page.text)
    next_field = re.search(r'name="next" value="([^"]+)"', login_page.text)
    assert csrf and next_field
    back = client.post("/operator/login", data={"login": login, "password": password,
                                       "code": totp.now(), "csrf": csrf.group(1),
                                       "next": next_field.group(1).replace("&amp;", "&")},
                       follow_redirects=False)
    consent = client.get(back.headers["location"])
    fields = consent_fields(consent.text)
    approved = client.post("/oauth/authorize", data={**fields, "decision": "approve"},
                           follow_redirects=False)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    answer = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": client_id, "code_verifier": verifier}).json()
    assert "patient" not in answer
    return str(answer["access_token"])


def consent_fields(page: str) -> dict[str, str]:
    """The consent form as a browser sends it when the person allows everything shown: its
    hidden fields and every scope box, ticked as the page shows them."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    fields.update(re.findall(
        r'<input type="checkbox" name="(allow-\d+)" value="([^"]*)"[^>]* checked>', page))
    return {k: v.replace("&amp;", "&") for k, v in fields.items()}


def security_officer_token(client: TestClient, platform: Platform,
                           login: str = "sec.officer") -> str:
    totp = operator(platform, login, security_officer=True)
    return operator_token(client, platform, login, totp, "system/AuditEvent.rs")
