"""Inputs at the edges, on both databases, each answered with a clear 4xx and nothing stored,
where they were 500s (found by a review of input handling): a NUL character in an address, a
form or a FHIR body (PostgreSQL refuses text with one); date-times at the edge of the years
Python holds (valid FHIR, an OverflowError when converted to UTC); directory values longer than
their columns (PostgreSQL refused them, SQLite stored them); and a date far in the future that
the API accepts, which the portal's pages then show instead of failing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.accounts import PatientAccount, enrol_patient
from support.builders import patient
from support.documents import FHIR_JSON, Pro
from support.portal import csrf_of, signed_in
from support.tokens import account_token


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Rand")


def mine(platform: Platform, account: PatientAccount) -> dict[str, str]:
    with platform.unit_of_work() as uow:
        found = uow.accounts.by_login(account.login)
        assert found is not None
    token = account_token(platform, found.id, account.patient_id)
    return {"Authorization": f"Bearer {token}", **FHIR_JSON}


def consent(patient_id: str, practitioner_id: str, end: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": {
            "type": "permit", "period": {"end": end},
            "actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP"}]}, "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
            "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                               "code": "N"}]}}


@pytest.mark.parametrize("url", ["/oauth/authorize?client_id=a%00", "/workspace/record/a%00",
                                 "/me/documents?lang=fr%00"])
def test_a_nul_character_in_an_address_is_no_500(client: TestClient, url: str) -> None:
    """PostgreSQL refuses to compare text with a NUL character: the refusal of the value is
    the request's fault (InvalidInput from the unit of work), never an incident."""
    answer = client.get(url, follow_redirects=False)
    assert answer.status_code < 500, answer.text


def test_a_nul_character_in_a_form_is_refused_as_the_form_is(
        platform: Platform, account: PatientAccount) -> None:
    portal = signed_in(platform, account, port=50031)
    csrf = csrf_of(portal.get("/me/access"))
    answer = portal.post("/me/access/find", data={"name": "Mu\x00ller", "csrf": csrf})
    assert answer.status_code == 400
    assert portal.post("/me/access/find", data={"name": "Muller", "csrf": csrf}
                       ).status_code == 200  # the same form without it is answered


def test_a_nul_character_in_a_fhir_body_is_an_operation_outcome(
        client: TestClient, platform: Platform, registrar: TestClient) -> None:
    resource = patient(platform.directory.systems, 5, family="Mu\x00ller")
    answer = registrar.post("/fhir/Patient", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["code"] == "invalid" and "NUL character" in issue["diagnostics"]
    assert client.get("/fhir/Patient").json()["total"] == 0


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: r.setdefault("address", []).append({"postalCode": "9" * 33}),
     "Patient.address.postalCode is at most 32 characters"),
    (lambda r: r["identifier"].append({"system": "urn:oid:1.2.3", "value": "7" * 129}),
     "Patient.identifier.value is at most 128 characters"),
    (lambda r: r["identifier"].append({"system": "urn:x:" + "s" * 250, "value": "7"}),
     "Patient.identifier.system is at most 255 characters"),
    (lambda r: r.__setitem__("name", [{"family": "Rand"}] * 21), "at most 20 Patient.name"),
])
def test_directory_values_longer_than_their_columns_are_refused_on_both_databases(
        client: TestClient, platform: Platform, registrar: TestClient, change: Any,
        words: str) -> None:
    resource = patient(platform.directory.systems, 6, family="Longo")
    change(resource)
    answer = registrar.post("/fhir/Patient", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient").json()["total"] == 0


@pytest.mark.parametrize("end", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_date_time_an_offset_moves_out_of_range_is_a_clear_400(
        client: TestClient, platform: Platform, account: PatientAccount, end: str) -> None:
    doctor = Pro(platform, "HP-EDGE-1")
    answer = client.post("/fhir/Consent", json=consent(account.patient_id, doctor.id, end),
                         headers=mine(platform, account))
    assert answer.status_code == 400, answer.text
    assert "out of range" in answer.json()["issue"][0]["diagnostics"]


def test_an_access_given_until_9999_through_the_api_is_shown_not_a_500(
        client: TestClient, platform: Platform, account: PatientAccount) -> None:
    """A practitioner's access may have no end, so an end in 9999 is accepted; the patient's
    page, which shows it in local time, used to fail on it."""
    doctor = Pro(platform, "HP-EDGE-2")
    given = client.post("/fhir/Consent", json=consent(account.patient_id, doctor.id,
                                                      "9999-12-31T23:30:00Z"),
                        headers=mine(platform, account))
    assert given.status_code == 201, given.text
    portal = signed_in(platform, account, port=50032)
    page = portal.get("/me/access", params={"lang": "fr"})
    assert page.status_code == 200 and "9999" in page.text


def _last_entry(platform: Platform) -> Any:
    from carevault.domain.audit import AuditRecord
    size = platform.audit.size("clinical")
    return AuditRecord.from_canonical(platform.audit.entries("clinical", size - 1, size)[0][1])


def test_a_long_parameter_is_refused_before_the_gate_and_recorded_cut(
        platform: Platform) -> None:
    """A parameter's value is at most 256 characters, refused before the token is even read
    (found by a review of resource limits: 20 values of 200 kB, sent without a token, were a
    4 MB entry kept for ever in the append-only log, at the rate limit's pace)."""
    remote = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("198.51.100.7", 4000))  # no token, not the developer's
    # Twenty values of 40 kB: under the 1 MiB a search form may take (a larger one is refused
    # whole, 413, before it is read: `test_api4_resource_consumption.py`).
    long = {f"p{i}": "x" * 40_000 for i in range(20)}
    refused = remote.post("/fhir/Patient/_search", data=long)
    assert refused.status_code == 400, refused.text
    assert "longer than 256" in refused.json()["issue"][0]["diagnostics"]
    entry = _last_entry(platform)
    assert entry.status == 400 and entry.query is not None
    assert len(entry.query) < 2_100 and entry.query.endswith("more characters not kept)")
    # At the bound, the value is read as before (here: the search asks for a token).
    assert remote.get("/fhir/Patient", params={"family": "x" * 256}).status_code == 401
