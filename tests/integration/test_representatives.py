"""A representative signs in as themselves, chooses whose record to act on among their
mandates, and an app they approve gets a token that names both of them."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.services import directory as svc
from carevault.services.patient_apps import register_app
from support.builders import patient
from support.operators import consent_fields

PASSWORD = "a representative's own passphrase 3"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def representative(platform: Platform) -> tuple[pyotp.TOTP, str, str]:
    """A representative with a mandate for one patient (and none for another)."""
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        child, stranger = svc.register_patients(uow, ctx, [
            patient(ctx.systems, 1, family="Schmit", given=["Léa"]),
            patient(ctx.systems, 2, family="Thill")])
    enrolment = platform.accounts.add_representative("parent@example.lu", PASSWORD)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    totp = pyotp.TOTP(query["secret"][0])
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    platform.accounts.create_mandate(enrolment.account_id, child.id, "read",
                                     datetime.now(UTC) - timedelta(days=1), by="os-user:test")
    return totp, child.id, stranger.id


def sign_in(client: TestClient, totp: pyotp.TOTP) -> None:
    page = client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf
    assert client.post("/login", data={"login": "parent@example.lu", "password": PASSWORD,
                                       "code": totp.now(), "csrf": csrf.group(1)},
                       follow_redirects=False).status_code == 303


def test_a_representative_acts_for_a_patient_with_a_mandate(
        client: TestClient, platform: Platform,
        representative: tuple[pyotp.TOTP, str, str]) -> None:
    totp, child, stranger = representative
    sign_in(client, totp)
    choice = client.get("/me")
    assert "Léa Schmit" in choice.text and "Thill" not in choice.text
    csrf = CSRF.search(choice.text)
    assert csrf
    refused = client.post("/act-for", data={"csrf": csrf.group(1), "patient_id": stranger})
    assert refused.status_code == 403 and "no mandate" in refused.text
    chosen = client.post("/act-for", data={"csrf": csrf.group(1), "patient_id": child})
    assert chosen.status_code == 200
    assert "Léa Schmit" in chosen.text
    assert "Your representative" in chosen.text and "started acting on your behalf" in chosen.text


def test_an_app_approved_by_a_representative_names_both(
        client: TestClient, platform: Platform,
        representative: tuple[pyotp.TOTP, str, str]) -> None:
    totp, child, stranger = representative
    with platform.unit_of_work() as uow:
        app_id = register_app(uow, "Family app", ["https://family.example/cb"],
                              datetime.now(UTC))
    sign_in(client, totp)
    csrf = CSRF.search(client.get("/me").text)
    assert csrf
    client.post("/act-for", data={"csrf": csrf.group(1), "patient_id": child})
    verifier = "w" * 60
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    consent = client.get("/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": app_id, "redirect_uri": "https://family.example/cb",
        "scope": "launch/patient patient/Patient.rs", "code_challenge": challenge,
        "code_challenge_method": "S256"}))
    fields = consent_fields(consent.text)
    approved = client.post("/oauth/authorize", data={**fields, "decision": "approve"},
                           follow_redirects=False)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    answer = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code,
        "redirect_uri": "https://family.example/cb", "client_id": app_id,
        "code_verifier": verifier}).json()
    claims = pyjwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["patient"] == child
    assert claims["act"]["role"] == "representative"
    assert claims["act"]["sub"] == claims["sub"]
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    assert client.get(f"/fhir/Patient/{child}", headers=headers).status_code == 200
    assert client.get(f"/fhir/Patient/{stranger}", headers=headers).status_code == 403
