"""The portal as a browser reaches it in integration tests: a signed-in client, the CSRF token
of a page, and a professional the patient has seen (a care event proven by a presence code)."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.accounts import PatientAccount
from support.authorities import presence_code, with_presence
from support.documents import Pro

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: Any) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def signed_in(platform: Platform, account: PatientAccount, port: int = 50010,
              code: str | None = None) -> TestClient:
    """A browser signed in as the patient (its own client: no bearer token; its own address,
    so that sign-in throttling of one test's browsers does not meet another's), with the
    authenticator's current code or ``code`` (a recovery code: a TOTP code is taken once)."""
    browser = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                         client=("127.0.0.1", port))
    csrf = csrf_of(browser.get("/login"))
    signed = browser.post("/login", data={"login": account.login, "password": account.password,
                                          "code": code or account.totp.now(), "csrf": csrf},
                          follow_redirects=False)
    assert signed.status_code == 303
    return browser


def seen_by(platform: Platform, client: TestClient, patient_id: str,
            identifier: str = "HP-PORTAL-GP") -> Pro:
    """A GP the patient saw (a care relationship: normal documents)."""
    gp = Pro(platform, identifier)
    made = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert made.status_code == 201, made.text
    return gp
