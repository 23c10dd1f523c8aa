"""The portal's "my documents" and "who can see my record" pages over HTTP on both databases:
each action is a form with the session's CSRF token, applies at once (checked through the FHIR
API as a professional sees it), and a form without the token changes nothing. The pages speak
French, English and German."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import PatientAccount, enrol_patient
from support.authorities import presence_code, with_presence
from support.documents import Pro, created_id, provide_bundle, publish
from support.portal import csrf_of, seen_by

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Weber")


@pytest.fixture
def portal(platform: Platform, account: PatientAccount) -> TestClient:
    """A browser signed in as the patient (its own client: no bearer token)."""
    browser = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                         client=("127.0.0.1", 50010))
    page = browser.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf
    signed = browser.post("/login", data={"login": account.login, "password": account.password,
                                          "code": account.totp.now(), "csrf": csrf.group(1)},
                          follow_redirects=False)
    assert signed.status_code == 303
    return browser


def test_hiding_a_document_from_the_portal(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    gp = seen_by(platform, client, account.patient_id)
    document = created_id(publish(client, gp, provide_bundle(account.patient_id, gp)))
    colleague = Pro(platform, "HP-PORTAL-COLLEAGUE")
    client.post("/fhir/Encounter", headers=colleague.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{account.patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{colleague.id}"}}],
        "period": {"start": "2026-11-21T09:00:00Z"}}, presence_code(platform, account.patient_id)))
    reading = f"/fhir/DocumentReference/{document}"
    assert client.get(reading, headers=colleague.headers).status_code == 200
    page = portal.get("/me/documents")
    assert page.status_code == 200 and f'data-document="{document}"' in page.text
    assert document not in str(page.url)
    refused = portal.post("/me/documents", data={"document": document, "hidden": "true",
                                                 "csrf": "forged"})
    assert refused.status_code == 400
    assert client.get(reading, headers=colleague.headers).status_code == 200
    done = portal.post("/me/documents", data={"document": document, "hidden": "true",
                                              "csrf": csrf_of(page)}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get(reading, headers=colleague.headers).status_code == 403
    assert client.get(reading, headers=gp.headers).status_code == 200  # its author still does
    again = portal.get("/me/documents", params={"lang": "de"})
    assert "verborgen" in again.text and 'lang="de"' in again.text
    kinds = [AuditRecord.from_canonical(data).interaction
             for _, data in platform.audit.patient_entries(account.patient_id, limit=200)]
    assert "document-hide" in kinds and "documents" in kinds


def test_closing_naming_and_withdrawing_from_who_can_see_my_record(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    gp = seen_by(platform, client, account.patient_id)
    search = {"patient": f"Patient/{account.patient_id}"}
    page = portal.get("/me/access", params={"lang": "fr"})
    assert page.status_code == 200 and "Qui peut voir mon dossier" in page.text
    csrf = csrf_of(page)
    assert portal.post("/me/access", data={"do": "close", "csrf": "forged"}).status_code == 400
    assert client.get("/fhir/DocumentReference", params=search,
                      headers=gp.headers).status_code == 200
    closed = portal.post("/me/access", data={"do": "close", "csrf": csrf},
                         follow_redirects=False)
    assert closed.status_code == 303
    assert client.get("/fhir/DocumentReference", params=search,
                      headers=gp.headers).status_code == 403
    assert portal.post("/me/access", data={"do": "reopen", "csrf": csrf}).status_code == 200
    assert client.get("/fhir/DocumentReference", params=search,
                      headers=gp.headers).status_code == 200
    cardio = Pro(platform, "HP-PORTAL-CARDIO", specialty="cardiology")
    unknown = portal.post("/me/access", data={"do": "referring", "number": "HP-NOBODY",
                                              "csrf": csrf})
    assert unknown.status_code == 404
    named = portal.post("/me/access", data={"do": "referring", "number": "HP-PORTAL-CARDIO",
                                            "csrf": csrf})
    assert named.status_code == 200 and 'id="referring-name"' in named.text
    with platform.unit_of_work() as uow:
        facts = uow.records.load(account.patient_id, platform.policy.clock())
    assert facts is not None and facts.referring_physician_id == cardio.id
    assert portal.post("/me/access", data={"do": "confidentiality", "level": "Z",
                                           "csrf": csrf}).status_code == 400
    assert portal.post("/me/access", data={"do": "confidentiality", "level": "R",
                                           "csrf": csrf}).status_code == 200
    with platform.unit_of_work() as uow:
        facts = uow.records.load(account.patient_id, platform.policy.clock())
    assert facts is not None and facts.default_confidentiality.value == "R"


def test_the_pages_are_for_a_signed_in_person_only(client: TestClient,
                                                    platform: Platform) -> None:
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000")
    for path in ("/me/access", "/me/documents"):
        assert anonymous.get(path, follow_redirects=False).status_code == 303
        assert anonymous.post(path, data={"do": "close"},
                              follow_redirects=False).status_code == 303
