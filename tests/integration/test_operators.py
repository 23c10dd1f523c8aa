"""Operators and security officers: their own accounts (TOTP mandatory), and tokens that never
reach clinical content. A security officer's token reads the audit trail, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.builders import patient
from support.operators import CSRF, PASSWORD, operator, operator_token


@pytest.fixture
def a_patient(registrar: TestClient, client: TestClient, platform: Platform) -> str:
    """A patient registered through the API, so the audit trail has entries about them."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 1),
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
    for path, params in clinical_requests(platform, a_patient):
        refused = client.get(path, params=params, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
        assert "operators never have access to medical content" in refused.json()["issue"][0][
            "diagnostics"]
    trail = client.get("/fhir/AuditEvent", headers=headers)
    assert trail.status_code == 403
    assert "operators never have access" in trail.json()["issue"][0]["diagnostics"]
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
        # Refused by the engine; an id that does not exist is simply not found.
        expected = {403, 404} if path.endswith("/x") else {403}
        assert client.get(path, params=params, headers=headers).status_code in expected


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
