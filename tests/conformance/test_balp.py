"""The AuditEvents CareVault serves follow IHE BALP: each successful read, search and update of
the FHIR API claims its BALP profile (and the Patient variant when it concerns a patient), with
the client, server and user agents and the entities the profile requires; a refused request
claims nothing. The R4 layer (support.r4_profiles) checks every claimed profile's rules on each
AuditEvent these tests receive."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.builders import patient
from support.r4_profiles import BALP
from support.tokens import officer_headers

FHIR_JSON = {"Content-Type": "application/fhir+json"}
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _code(event: dict[str, Any]) -> str:
    return next(c["code"] for c in event["subtype"]
                if c["system"] == "http://hl7.org/fhir/restful-interaction")


def _agent(event: dict[str, Any], system: str, code: str) -> dict[str, Any]:
    [agent] = [a for a in event["agent"]
               if any(c["system"] == system and c["code"] == code for c in a["type"]["coding"])]
    return agent


def test_each_restful_event_claims_the_balp_profile_it_meets(
        registrar: TestClient, client: TestClient, platform: Platform) -> None:
    systems = platform.directory.systems
    created = registrar.post("/fhir/Patient", json=patient(systems, 1, family="Balpson"),
                             headers=FHIR_JSON).json()
    patient_id = created["id"]
    assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
    assert client.get("/fhir/Patient", params={"family": "Balpson"}).status_code == 200
    changed = registrar.put(f"/fhir/Patient/{patient_id}",
                            json=patient(systems, 1, family="Balpsen"), headers=FHIR_JSON)
    assert changed.status_code == 200
    assert client.get(f"/fhir/Patient/{patient_id}/$nope").status_code == 404  # refused

    trail = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{patient_id}"},
                       headers=officer_headers(platform))
    assert trail.status_code == 200
    events = [e["resource"] for e in trail.json()["entry"]]
    claims = {(_code(e), e["outcome"]): e.get("meta", {}).get("profile", []) for e in events}
    assert claims[("read", "0")] == [BALP + "Read", BALP + "PatientRead"]
    assert claims[("search-type", "0")] == [BALP + "Query", BALP + "PatientQuery"]
    assert claims[("update", "0")] == [BALP + "Update", BALP + "PatientUpdate"]
    assert claims[("operation", "4")] == []  # a failure follows no BALP success profile

    read = next(e for e in events if _code(e) == "read")
    client_agent = _agent(read, DCM, "110152")  # a read's client is the destination
    assert client_agent["network"] == {"address": "127.0.0.1", "type": "2"}
    assert client_agent["who"]["identifier"]["value"]
    server = _agent(read, DCM, "110153")
    assert server["network"]["type"] == "5" and server["network"]["address"].endswith("/fhir")
    user = _agent(read, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
    assert user["requestor"] is True and user["who"]["reference"].startswith("Practitioner/")
    search = next(e for e in events if _code(e) == "search-type")
    assert search["action"] == "E"
    assert _agent(search, DCM, "110153")["network"]["address"] == "127.0.0.1"  # client: source
    update = next(e for e in events if _code(e) == "update")
    assert _agent(update, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT")
    data = [e for e in update["entity"] if e.get("role", {}).get("code") == "4"]
    assert data[0]["what"] == {"reference": f"Patient/{patient_id}"}


def test_the_capability_statement_lists_the_balp_profiles(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert audit["supportedProfile"][0] == BALP + "Read"
    assert {BALP + "PatientQuery", BALP + "PatientUpdate"} <= set(audit["supportedProfile"])
