"""Operators and security officers: their own accounts (TOTP mandatory), and tokens that never
reach clinical content. A security officer's token reads the audit trail, nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.services.patient_apps import register_app
from support.builders import patient

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
        client_id = register_app(uow, "Security console", [REDIRECT], datetime.now(UTC))
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
    back = client.post("/operator/login", data={"login": login, "password": PASSWORD,
                                       "code": totp.now(), "csrf": csrf.group(1),
                                       "next": next_field.group(1).replace("&amp;", "&")},
                       follow_redirects=False)
    consent = client.get(back.headers["location"])
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                             consent.text))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    approved = client.post("/oauth/authorize", data={**fields, "decision": "approve"},
                           follow_redirects=False)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    answer = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": client_id, "code_verifier": verifier}).json()
    assert "patient" not in answer
    return str(answer["access_token"])


@pytest.fixture
def a_patient(client: TestClient, platform: Platform) -> str:
    """A patient registered through the API, so the audit trail has entries about them."""
    created = client.post("/fhir/Patient", json=patient(platform.directory.systems, 1),
                          headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    return str(created.json()["id"])


def clinical_requests(platform: Platform, patient_id: str) -> list[tuple[str, dict[str, Any]]]:
    """One read and one search of every resource type the FHIR API serves but AuditEvent."""
    requests: list[tuple[str, dict[str, Any]]] = []
    for kind in sorted(platform.door.handlers):
        if kind == "AuditEvent":
            continue
        requests.append((f"/fhir/{kind}", {}))
        requests.append((f"/fhir/{kind}/{patient_id if kind == 'Patient' else 'x'}", {}))
    requests.append((f"/fhir/Patient/{patient_id}/$access-history", {}))
    return requests


def test_an_operator_token_gets_403_on_every_clinical_resource(
        client: TestClient, platform: Platform, a_patient: str) -> None:
    totp = operator(platform, "ops@carevault.test", security_officer=False)
    token = operator_token(client, platform, "ops@carevault.test", totp, "system/*.rs")
    headers = {"Authorization": f"Bearer {token}"}
    for path, params in [*clinical_requests(platform, a_patient), ("/fhir/AuditEvent", {})]:
        refused = client.get(path, params=params, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
        assert "operators never see clinical content" in refused.json()["issue"][0][
            "diagnostics"]
    assert client.get("/fhir/metadata", headers=headers).status_code == 200


def test_a_security_officer_reads_the_audit_trail_and_nothing_else(
        client: TestClient, platform: Platform, a_patient: str) -> None:
    totp = operator(platform, "so@carevault.test", security_officer=True)
    token = operator_token(client, platform, "so@carevault.test", totp,
                           "system/AuditEvent.rs")
    headers = {"Authorization": f"Bearer {token}"}
    trail = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{a_patient}"},
                       headers=headers)
    assert trail.status_code == 200 and trail.json()["total"] >= 1
    for path, params in clinical_requests(platform, a_patient):
        assert client.get(path, params=params, headers=headers).status_code == 403


def test_operators_sign_in_to_a_page_without_medical_content(
        client: TestClient, platform: Platform, a_patient: str) -> None:
    totp = operator(platform, "ops2@carevault.test", security_officer=False)
    patients_door = client.get("/login")
    csrf = CSRF.search(patients_door.text)
    assert csrf
    wrong_door = client.post("/login", data={"login": "ops2@carevault.test",
                                             "password": PASSWORD, "code": totp.now(),
                                             "csrf": csrf.group(1)})
    assert wrong_door.status_code == 401  # the same answer as a wrong password
    page = client.get("/operator/login")
    assert "Operators and security officers" in page.text
    csrf = CSRF.search(page.text)
    assert csrf
    later = datetime.now(UTC) + timedelta(seconds=30)  # the current step was just used
    signed_in = client.post("/operator/login", data={"login": "ops2@carevault.test",
                                                     "password": PASSWORD,
                                                     "code": totp.at(later),
                                                     "csrf": csrf.group(1)})
    assert signed_in.status_code == 200
    assert "Operators never see medical content" in signed_in.text
    assert "access-history" not in signed_in.text


def test_a_security_officer_token_reads_the_audit_entries_from_anywhere(
        client: TestClient, platform: Platform, a_patient: str) -> None:
    officer = operator(platform, "so2@carevault.test", security_officer=True)
    officer_token = operator_token(client, platform, "so2@carevault.test", officer,
                                   "system/AuditEvent.rs")
    plain = operator(platform, "ops3@carevault.test", security_officer=False)
    client.cookies.clear()  # another person at another browser
    plain_token = operator_token(client, platform, "ops3@carevault.test", plain,
                                 "system/AuditEvent.rs")
    with TestClient(platform.app, client=("198.51.100.77", 1)) as remote:
        params = {"start": 0, "end": 2}
        served = remote.get("/audit/entries", params=params,
                            headers={"Authorization": f"Bearer {officer_token}"})
        assert served.status_code == 200 and len(served.json()["entries"]) == 2
        for headers in ({"Authorization": f"Bearer {plain_token}"}, {}):
            assert remote.get("/audit/entries", params=params,
                              headers=headers).status_code == 401
    size = platform.audit.size("operator")
    reads = [AuditRecord.from_canonical(d) for _, d in platform.audit.entries(
        "operator", 0, size)]
    served_to = [r for r in reads if r.interaction == "audit-entries" and r.outcome == "0"]
    assert served_to[-1].agent.who is not None and served_to[-1].agent.who.startswith("account:")
