"""A patient app connects with the SMART authorization code flow and PKCE, written as the app
would be: discovery, a browser round trip through sign-in and consent, the code exchange."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.errors import InvalidInput, NotFound
from carevault.services import directory as svc
from carevault.services.patient_apps import register_app, set_app_scopes
from support.accounts import PatientAccount, enrol_patient
from support.builders import patient
from support.operators import consent_fields, operator, operator_token

REDIRECT = "https://app.example/callback"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def app_id(platform: Platform) -> str:
    with platform.unit_of_work() as uow:
        return register_app(uow, "Mon Carnet Santé", [REDIRECT], datetime.now(UTC))


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def authorize_url(client_id: str, challenge: str, scope: str = "launch/patient openid "
                  "fhirUser patient/Patient.rs patient/AuditEvent.rs") -> str:
    return "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "scope": scope, "state": "xyz-123", "code_challenge": challenge,
        "code_challenge_method": "S256", "aud": "http://127.0.0.1:8000/fhir"})


def sign_in_through(client: TestClient, account: PatientAccount, url: str) -> Any:
    """Follow the browser: the authorization page sends us to sign in, then back."""
    to_login = client.get(url, follow_redirects=False)
    assert to_login.status_code == 303 and to_login.headers["location"].startswith("/login")
    page = client.get(to_login.headers["location"])
    csrf = CSRF.search(page.text)
    next_field = re.search(r'name="next" value="([^"]+)"', page.text)
    assert csrf and next_field
    back = client.post("/login", data={
        "login": account.login, "password": account.password, "code": account.totp.now(),
        "csrf": csrf.group(1), "next": next_field.group(1).replace("&amp;", "&")},
        follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"].startswith("/oauth/authorize")
    consent = client.get(back.headers["location"])
    assert consent.status_code == 200
    return consent


def consent_form(consent: Any) -> dict[str, str]:
    return consent_fields(consent.text)


def test_the_full_flow_gives_a_token_for_the_patients_own_record(
        client: TestClient, platform: Platform, account: PatientAccount, app_id: str) -> None:
    config = client.get("/.well-known/smart-configuration").json()
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["authorization_endpoint"].endswith("/oauth/authorize")
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    assert "Mon Carnet Santé" in consent.text and "patient/Patient.rs" in consent.text
    approved = client.post("/oauth/authorize", data={**consent_form(consent),
                                                     "decision": "approve"},
                           follow_redirects=False)
    assert approved.status_code == 303
    location = urlsplit(approved.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["xyz-123"]
    code = query["code"][0]
    wrong = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app_id, "code_verifier": pkce()[0]})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    granted = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app_id, "code_verifier": verifier})
    # A wrong verifier does not consume the code; the right one does, once.
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["patient"] == account.patient_id
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["fhirUser"].endswith(f"/Patient/{account.patient_id}")
    again = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app_id, "code_verifier": verifier})
    assert again.status_code == 400
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    own = client.get(f"/fhir/Patient/{account.patient_id}", headers=headers)
    assert own.status_code == 200
    history = client.get("/fhir/AuditEvent", headers=headers,
                         params={"patient": f"Patient/{account.patient_id}"})
    assert history.status_code == 200 and history.json()["total"] >= 1


def test_a_patient_app_cannot_reach_another_record(
        client: TestClient, platform: Platform, account: PatientAccount, app_id: str) -> None:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        other = svc.create_patient(uow, ctx, patient(ctx.systems, 9, family="Thill"))
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    approved = client.post("/oauth/authorize", data={**consent_form(consent),
                                                     "decision": "approve"},
                           follow_redirects=False)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    token = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app_id, "code_verifier": verifier}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    found = client.get("/fhir/Patient", headers=headers).json()  # a search finds only their own
    assert [e["resource"]["id"] for e in found["entry"]] == [account.patient_id]
    assert client.get("/fhir/Patient", params={"family": "Thill"},
                      headers=headers).json()["total"] == 0
    for path, params in ((f"/fhir/Patient/{other.id}", {}),
                         ("/fhir/AuditEvent", {"patient": f"Patient/{other.id}"}),
                         ("/fhir/AuditEvent", {}), ("/fhir/Practitioner", {})):
        refused = client.get(path, params=params, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome"


def test_declining_sends_the_app_an_error(client: TestClient, account: PatientAccount,
                                          app_id: str) -> None:
    consent = sign_in_through(client, account, authorize_url(app_id, pkce()[1]))
    declined = client.post("/oauth/authorize", data={**consent_form(consent),
                                                     "decision": "deny"},
                           follow_redirects=False)
    query = parse_qs(urlsplit(declined.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["xyz-123"]


@pytest.mark.parametrize(("change", "status", "where"), [
    ({"redirect_uri": "https://evil.example/steal"}, 400, "page"),
    ({"client_id": "app-unknown"}, 400, "page"),
    ({"code_challenge_method": "plain"}, 303, "redirect"),
    ({"scope": "patient/Patient.rs system/Patient.rs"}, 303, "redirect"),
    ({"scope": "admin"}, 303, "redirect"),
])
def test_bad_authorization_requests(client: TestClient, account: PatientAccount,
                                    app_id: str, change: dict[str, str], status: int,
                                    where: str) -> None:
    url = authorize_url(app_id, pkce()[1])
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()} | change
    response = client.get("/oauth/authorize?" + urlencode(query), follow_redirects=False)
    assert response.status_code == status
    if where == "page":
        # Never redirect to a URI the app did not register: say it to the person instead.
        assert "evil.example" not in response.headers.get("location", "")
        assert 'role="alert"' in response.text
    else:
        assert response.headers["location"].startswith(REDIRECT)
        assert "error=" in response.headers["location"]


def test_login_does_not_redirect_anywhere_else(client: TestClient,
                                               account: PatientAccount) -> None:
    page = client.get("/login", params={"next": "https://evil.example/"})
    assert 'name="next"' not in page.text


def test_a_patient_cannot_grant_system_scopes(client: TestClient, account: PatientAccount,
                                              platform: Platform) -> None:
    """Even through an app whose registration allows system scopes (an operators' console):
    the scopes are not for a patient's account."""
    with platform.unit_of_work() as uow:
        app_id = register_app(uow, "Console", [REDIRECT], datetime.now(UTC),
                              scopes="launch/patient patient/*.rs system/Patient.rs")
    url = authorize_url(app_id, pkce()[1], scope="system/Patient.rs")
    to_login = client.get(url, follow_redirects=False)
    page = client.get(to_login.headers["location"])
    csrf = CSRF.search(page.text)
    next_field = re.search(r'name="next" value="([^"]+)"', page.text)
    assert csrf and next_field
    back = client.post("/login", data={
        "login": account.login, "password": account.password, "code": account.totp.now(),
        "csrf": csrf.group(1), "next": next_field.group(1).replace("&amp;", "&")},
        follow_redirects=False)
    refused = client.get(back.headers["location"], follow_redirects=False)
    assert refused.status_code == 303
    assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["access_denied"]
    # The decision posted without the page: refused the same way, and no code is issued.
    assert_decision_refused(client, url, "system/Patient.rs")


def assert_decision_refused(client: TestClient, url: str, scope: str) -> None:
    """``POST /oauth/authorize`` with ``decision=approve`` and the session's own CSRF token,
    for the request of ``url``: answered ``access_denied``, with no code."""
    csrf = CSRF.search(client.get("/me").text)
    assert csrf
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    posted = client.post("/oauth/authorize", data={
        **params, "decision": "approve", "csrf": csrf.group(1), "allow-0": scope},
        follow_redirects=False)
    assert posted.status_code == 303
    answer = parse_qs(urlsplit(posted.headers["location"]).query)
    assert answer["error"] == ["access_denied"] and "code" not in answer


def test_a_representative_who_has_chosen_no_record_gets_no_code(
        client: TestClient, platform: Platform, app_id: str) -> None:
    """Signed in, a representative chooses whose record to act on; before that, an app's
    request is refused on the page and when the approval is posted without it."""
    enrolment = platform.accounts.add_representative("rep@apps.example",
                                                     "a representative's passphrase 9")
    secret = parse_qs(urlsplit(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    page = client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf
    signed_in = client.post("/login", data={
        "login": "rep@apps.example", "password": "a representative's passphrase 9",
        "code": pyotp.TOTP(secret).now(), "csrf": csrf.group(1)}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    url = authorize_url(app_id, pkce()[1])
    on_page = client.get(url, follow_redirects=False)
    assert on_page.status_code == 303
    assert parse_qs(urlsplit(on_page.headers["location"]).query)["error"] == ["access_denied"]
    assert_decision_refused(client, url, "patient/Patient.rs")


# --- narrowed scopes ----------------------------------------------------------------------
# A token's scopes never exceed what the app's registration, the account's role and the
# person's consent allow (PRODUCT.md): an app asking for more gets less, and the door refuses the
# wider action (403, OperationOutcome); an app asking only for what it may not have is refused
# with ``invalid_scope``; a scope the person unticks on the consent page is not in the token. On
# both databases, through the HTTP routes a real app uses.


def narrow_app(platform: Platform, scopes: str) -> str:
    with platform.unit_of_work() as uow:
        return register_app(uow, "Narrow app", [REDIRECT], datetime.now(UTC), scopes=scopes)


def token_for(client: TestClient, app_id: str, verifier: str, fields: dict[str, str]) -> Any:
    approved = client.post("/oauth/authorize", data={**fields, "decision": "approve"},
                           follow_redirects=False)
    assert approved.status_code == 303, approved.text
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    answer = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": app_id, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return answer.json()


def refused_by_scope(answer: Any) -> None:
    assert answer.status_code == 403, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "scopes do not allow" in outcome["issue"][0]["diagnostics"]


def test_an_app_asking_for_more_than_its_registration_gets_less(
        client: TestClient, platform: Platform) -> None:
    account = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(
        app_id, challenge, scope="launch/patient openid patient/*.cruds"))
    fields = consent_fields(consent.text)
    assert [v for k, v in fields.items() if k.startswith("allow-")] == ["patient/Patient.rs"]
    body = token_for(client, app_id, verifier, fields)
    assert body["scope"] == "launch/patient patient/Patient.rs"  # openid: not registered
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get(f"/fhir/Patient/{account.patient_id}", headers=headers).status_code == 200
    refused_by_scope(client.get("/fhir/AuditEvent", headers=headers,
                                params={"patient": f"Patient/{account.patient_id}"}))
    refused_by_scope(client.get("/fhir/DocumentReference", headers=headers,
                                params={"patient": f"Patient/{account.patient_id}"}))


def test_an_app_asking_only_for_what_it_may_not_have_gets_invalid_scope(
        client: TestClient, platform: Platform) -> None:
    """Told at the app's redirect URI before anyone signs in (RFC 6749 §4.1.2.1)."""
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    answer = client.get(authorize_url(app_id, pkce()[1], scope="launch/patient "
                                      "patient/DocumentReference.cu"), follow_redirects=False)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["error"] == ["invalid_scope"] and query["state"] == ["xyz-123"]
    assert "code" not in query


def test_a_scope_the_patient_unticks_is_not_granted(
        client: TestClient, platform: Platform) -> None:
    account: PatientAccount = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs patient/AuditEvent.rs")
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    fields = consent_fields(consent.text)
    unticked = {k: v for k, v in fields.items() if v != "patient/AuditEvent.rs"}
    assert len(unticked) == len(fields) - 1
    body = token_for(client, app_id, verifier, unticked)
    assert "patient/AuditEvent" not in body["scope"] and "patient/Patient.rs" in body["scope"]
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == body["scope"]
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    refused_by_scope(client.get("/fhir/AuditEvent", headers=headers,
                                params={"patient": f"Patient/{account.patient_id}"}))


def test_unticking_every_scope_gives_no_code(client: TestClient, platform: Platform) -> None:
    account = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    consent = sign_in_through(client, account, authorize_url(app_id, pkce()[1]))
    fields = {k: v for k, v in consent_fields(consent.text).items()
              if not k.startswith("allow-")}
    answer = client.post("/oauth/authorize", data={**fields, "decision": "approve"},
                         follow_redirects=False)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["access_denied"] and "code" not in query


def test_a_forged_box_cannot_add_a_scope(client: TestClient, platform: Platform) -> None:
    """A box posted for a scope the page did not show (the app's registration does not allow
    it) is ignored: consent only narrows."""
    account = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    fields = {**consent_fields(consent.text), "allow-7": "patient/*.cruds"}
    assert token_for(client, app_id, verifier, fields)["scope"] == \
        "launch/patient patient/Patient.rs"


def test_a_security_officers_token_holds_only_what_the_role_allows(
        client: TestClient, platform: Platform) -> None:
    """A console registered for every system scope, an officer asking for all of them: the
    token holds the officer's own (the audit trail, the alerts, the patients they name)."""
    totp = operator(platform, "officer.narrow", security_officer=True)
    token = operator_token(client, platform, "officer.narrow", totp, "system/*.cruds")
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["scope"] == ("system/AuditEvent.rs system/Patient.rs "
                               "system/DetectedIssue.rus")
    headers = {"Authorization": f"Bearer {token}"}
    refused_by_scope(client.get("/fhir/Practitioner", headers=headers))


def test_a_public_app_revokes_its_own_tokens_only(client: TestClient,
                                                   platform: Platform) -> None:
    """RFC 7009 §2.1 for a public client: its client_id authenticates it; another app (which
    somehow holds the token) is refused, and the token lives on until its own app revokes it."""
    account = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    other_app = narrow_app(platform, "launch/patient patient/Patient.rs")
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    token = token_for(client, app_id, verifier, consent_fields(consent.text))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    theirs = client.post("/oauth/revoke", data={"token": token, "client_id": other_app})
    assert (theirs.status_code, theirs.json()["error"]) == (400, "unauthorized_client")
    nobody = client.post("/oauth/revoke", data={"token": token})
    assert (nobody.status_code, nobody.json()["error"]) == (401, "invalid_client")
    assert client.get(f"/fhir/Patient/{account.patient_id}", headers=headers).status_code == 200
    own = client.post("/oauth/revoke", data={"token": token, "client_id": app_id})
    assert own.status_code == 200 and own.headers["cache-control"] == "no-store"
    assert client.get(f"/fhir/Patient/{account.patient_id}", headers=headers).status_code == 401
    metadata = client.get("/.well-known/smart-configuration").json()
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]


def test_an_operator_narrows_an_app_registered_with_every_scope(
        client: TestClient, platform: Platform) -> None:
    """An app registered before scopes were recorded kept every one: `set_app_scopes` (the
    `carevault apps set-scopes` command) narrows it, and the next token holds no more."""
    account = enrol_patient(platform)
    app_id = narrow_app(platform, "launch/patient openid fhirUser patient/*.cruds")
    with platform.unit_of_work() as uow:
        stored = set_app_scopes(uow, app_id, "patient/Patient.rs launch/patient")
    assert stored == "launch/patient patient/Patient.rs"
    verifier, challenge = pkce()
    consent = sign_in_through(client, account, authorize_url(app_id, challenge))
    body = token_for(client, app_id, verifier, consent_fields(consent.text))
    assert body["scope"] == "launch/patient patient/Patient.rs"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    refused_by_scope(client.get("/fhir/AuditEvent", headers=headers,
                                params={"patient": f"Patient/{account.patient_id}"}))


def test_narrowing_refuses_an_unknown_app_and_a_scope_that_is_not_one(platform: Platform) -> None:
    app_id = narrow_app(platform, "launch/patient patient/Patient.rs")
    with platform.unit_of_work() as uow, pytest.raises(NotFound):
        set_app_scopes(uow, "app-nope", "patient/Patient.rs")
    with platform.unit_of_work() as uow, pytest.raises(InvalidInput):
        set_app_scopes(uow, app_id, "everything please")
    with platform.unit_of_work() as uow, pytest.raises(InvalidInput):
        set_app_scopes(uow, app_id, "openid")  # no resource scope
    with platform.unit_of_work() as uow:
        assert uow.apps.client(app_id).scopes == "launch/patient patient/Patient.rs"
