"""The medication list and repeat prescriptions over HTTP, on both databases (issue #18):
``MedicationRequest`` and ``MedicationDispense`` searches of the last 12 months — the patient's
own, a prescriber's own, a pharmacy's own dispenses — decided by the engine and recorded in the
audit log, each refusal with its reason; repeat prescriptions as linked tasks, each with its
own validity window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.fhirmodel.validate import validate_resource
from support.builders import patient
from support.documents import Pro, grant
from support.erezept import (
    ACCESS_CODE,
    CREATE,
    SECRET,
    Pharmacist,
    Scene,
    dispense,
    identifier,
    pharmacy,
    prescription_bundle,
    sign,
)


@pytest.fixture
def scene(platform: Platform, client: TestClient, registrar: TestClient) -> Scene:
    return Scene(platform, client, registrar)


def reason(answer: Any) -> str:
    return str(answer.json()["issue"][0]["diagnostics"])


def found(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def dispensed(scene: Scene) -> str:
    """A prescription the scene's pharmacist accepted and closed: its task id."""
    task_id, code = scene.ready()
    taken = scene.client.post(f"/fhir/Task/{task_id}/$accept", params={"ac": code},
                              headers=scene.pharmacist.headers)
    assert taken.status_code == 200, taken.text
    secret = identifier(taken.json()["entry"][0]["resource"], SECRET)
    closed = scene.client.post(f"/fhir/Task/{task_id}/$close", params={"secret": secret},
                               json=dispense(task_id, scene.national_id, scene.patient_system),
                               headers=scene.pharmacist.headers)
    assert closed.status_code == 200, closed.text
    return task_id


def audit_since(platform: Platform, before: int) -> list[AuditRecord]:
    rows = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    return [AuditRecord.from_canonical(data) for _, data in rows]


def test_the_patient_sees_their_prescriptions_and_dispenses(scene: Scene,
                                                            platform: Platform) -> None:
    done = dispensed(scene)
    waiting, _code = scene.ready()
    before = platform.audit.size("clinical")
    mine = {"patient": f"Patient/{scene.patient_id}"}
    requests = found(scene.client.get("/fhir/MedicationRequest", params=mine,
                                      headers=scene.patient_headers))
    assert [r["id"] for r in requests] == [waiting, done]  # newest first
    assert [r["status"] for r in requests] == ["active", "completed"]
    for resource in requests:
        validate_resource(resource, "MedicationRequest")
        assert resource["subject"] == {"reference": f"Patient/{scene.patient_id}"}
        assert resource["requester"] == {"reference": f"Practitioner/{scene.gp.id}"}
        codes = {c["code"] for c in resource["medicationCodeableConcept"]["coding"]}
        assert codes == {"1000002", "J01CA04"}  # the national product code and the ATC code
        assert resource["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 3
    dispenses = found(scene.client.get("/fhir/MedicationDispense", params=mine,
                                       headers=scene.patient_headers))
    assert [d["id"] for d in dispenses] == [done]
    validate_resource(dispenses[0], "MedicationDispense")
    assert dispenses[0]["authorizingPrescription"] == [{"reference": f"MedicationRequest/{done}"}]
    assert {"actor": {"reference": f"Organization/{scene.pharmacy_id}"}} in (
        dispenses[0]["performer"])
    # Each search is recorded, in the patient's own audit trail too.
    searches = {(r.entity_type, r.outcome) for r in audit_since(platform, before)
                if r.interaction == "search-type" and r.patient == scene.patient_id}
    assert searches == {("MedicationRequest", "0"), ("MedicationDispense", "0")}


def test_the_list_goes_back_twelve_months(scene: Scene, platform: Platform) -> None:
    old = dispensed(scene)
    recent, _code = scene.ready()
    long_ago = datetime.now(UTC) - timedelta(days=366)
    with platform.engine.begin() as connection:
        connection.execute(text("UPDATE prescription_task SET created_at = :at, updated_at = :at "
                                "WHERE id = :id"), {"at": long_ago, "id": old})
    mine = {"patient": scene.patient_id}
    requests = found(scene.client.get("/fhir/MedicationRequest", params=mine,
                                      headers=scene.patient_headers))
    assert [r["id"] for r in requests] == [recent]
    assert found(scene.client.get("/fhir/MedicationDispense", params=mine,
                                  headers=scene.patient_headers)) == []


def test_professionals_see_it_under_the_engine_rules(scene: Scene, platform: Platform) -> None:
    done = dispensed(scene)
    params = {"patient": scene.patient_id}
    # The GP the patient gave access to sees it; the pharmacist, with no access, does not.
    assert [r["id"] for r in found(scene.client.get(
        "/fhir/MedicationRequest", params=params, headers=scene.gp.headers))] == [done]
    refused = scene.client.get("/fhir/MedicationDispense", params=params,
                               headers=scene.pharmacist.headers)
    assert refused.status_code == 403, refused.text
    stranger = Pro(platform, "HP-ERX-STRANGER")
    refused = scene.client.get("/fhir/MedicationRequest", params=params, headers=stranger.headers)
    assert refused.status_code == 403, refused.text
    # Once the patient gives the pharmacist access, the medication list is theirs to see too.
    grant(scene.client, scene.patient_headers, scene.patient_id, scene.pharmacist.id)
    assert [d["id"] for d in found(scene.client.get(
        "/fhir/MedicationDispense", params=params, headers=scene.pharmacist.headers))] == [done]
    # A patient's app reaches its own record only.
    other = scene.client.get("/fhir/MedicationRequest", params={"patient": "someone-else"},
                             headers=scene.patient_headers)
    assert other.status_code in (403, 404), other.text


def test_a_prescriber_lists_their_own_prescriptions_only(scene: Scene,
                                                         platform: Platform) -> None:
    task_id, _code = scene.ready()
    mine = found(scene.client.get("/fhir/MedicationRequest",
                                  params={"requester": f"Practitioner/{scene.gp.id}"},
                                  headers=scene.gp.headers))
    assert [r["id"] for r in mine] == [task_id]
    other = Pro(platform, "HP-ERX-OTHER-GP")
    assert found(scene.client.get("/fhir/MedicationRequest",
                                  params={"requester": f"Practitioner/{other.id}"},
                                  headers=other.headers)) == []
    before = platform.audit.size("clinical")
    refused = scene.client.get("/fhir/MedicationRequest",
                               params={"requester": f"Practitioner/{scene.gp.id}"},
                               headers=other.headers)
    assert refused.status_code == 403
    assert "their own prescriptions" in reason(refused)
    [entry] = [r for r in audit_since(platform, before) if r.entity_type == "MedicationRequest"]
    assert (entry.outcome, entry.rule) != ("0", None)
    refused = scene.client.get("/fhir/MedicationRequest",
                               params={"requester": f"Practitioner/{scene.pharmacist.id}"},
                               headers=scene.pharmacist.headers)
    assert refused.status_code == 403, refused.text  # a pharmacist prescribes nothing
    both = scene.client.get("/fhir/MedicationRequest", headers=scene.gp.headers, params={
        "requester": f"Practitioner/{scene.gp.id}", "patient": scene.patient_id})
    assert both.status_code == 400


def test_a_pharmacy_lists_what_it_dispensed_only(scene: Scene, platform: Platform) -> None:
    done = dispensed(scene)
    ours = found(scene.client.get("/fhir/MedicationDispense",
                                  params={"performer": f"Organization/{scene.pharmacy_id}"},
                                  headers=scene.pharmacist.headers))
    assert [d["id"] for d in ours] == [done]
    elsewhere = pharmacy(platform, "ORG-PHARMACY-2")
    colleague = Pharmacist(platform, "HP-ERX-PHARMA-2", elsewhere)
    refused = scene.client.get("/fhir/MedicationDispense",
                               params={"performer": f"Organization/{scene.pharmacy_id}"},
                               headers=colleague.headers)
    assert refused.status_code == 403
    assert "not another" in reason(refused)
    refused = scene.client.get("/fhir/MedicationDispense",
                               params={"performer": f"Organization/{scene.pharmacy_id}"},
                               headers=scene.gp.headers)
    assert refused.status_code == 403  # a physician dispenses nothing


# --- repeat prescriptions ----------------------------------------------------------------------


def repeat_of(scene: Scene, first: str, who: Pro | None = None) -> Any:
    body = {**CREATE, "parameter": [*CREATE["parameter"], {
        "name": "repeatOf", "valueReference": {"reference": f"Task/{first}"}}]}
    return scene.client.post("/fhir/Task/$create", json=body, headers=(who or scene.gp).headers)


def test_a_repeat_is_a_linked_task_with_its_own_validity_window(scene: Scene) -> None:
    first, first_code = scene.ready()
    made = repeat_of(scene, first)
    assert made.status_code == 201, made.text
    repeat = made.json()
    assert repeat["basedOn"] == [{"reference": f"Task/{first}"}]
    code = identifier(repeat, ACCESS_CODE)
    later = sign(scene.bundle(repeat["id"], starts_in_days=30, valid_days=28), scene.gp.key_pem,
                 scene.gp.chain)
    activated = scene.activate(repeat["id"], later)
    assert activated.status_code == 200, activated.text
    until = activated.json()["restriction"]["period"]["end"]
    assert until[:10] == (datetime.now(UTC) + timedelta(days=58)).date().isoformat()
    # Not before its window opens: the pharmacy is told from when; the first one is dispensed.
    early = scene.client.post(f"/fhir/Task/{repeat['id']}/$accept", params={"ac": code},
                              headers=scene.pharmacist.headers)
    assert early.status_code == 409, early.text
    assert "may be dispensed from" in reason(early)
    taken = scene.client.post(f"/fhir/Task/{first}/$accept", params={"ac": first_code},
                              headers=scene.pharmacist.headers)
    assert taken.status_code == 200, taken.text
    listed = found(scene.client.get("/fhir/MedicationRequest",
                                    params={"patient": scene.patient_id},
                                    headers=scene.patient_headers))
    linked = {r["id"]: r.get("basedOn") for r in listed}
    assert linked == {repeat["id"]: [{"reference": f"MedicationRequest/{first}"}], first: None}


def test_a_repeat_follows_the_prescribers_own_activated_prescription(
    scene: Scene, platform: Platform, registrar: TestClient
) -> None:
    first, _code = scene.ready()
    other = Pro(platform, "HP-ERX-OTHER-GP")
    refused = repeat_of(scene, first, other)
    assert refused.status_code == 403 and "prescriber's own" in reason(refused)
    assert repeat_of(scene, "no-such-task").status_code == 404
    bad = scene.client.post("/fhir/Task/$create", headers=scene.gp.headers, json={
        "resourceType": "Parameters",
        "parameter": [{"name": "repeatOf", "valueReference": {"reference": "Patient/x"}}]})
    assert bad.status_code == 400
    # The first must be activated, and the repeat is for the same patient.
    draft, _code, _task = scene.create()
    after_draft = repeat_of(scene, draft).json()["id"]
    answer = scene.activate(after_draft, sign(scene.bundle(after_draft), scene.gp.key_pem,
                                              scene.gp.chain))
    assert answer.status_code == 422 and "activate the first" in reason(answer)
    systems = platform.directory.systems
    someone = patient(systems, 47)
    created = registrar.post("/fhir/Patient", json=someone,
                             headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    national = identifier(someone, scene.patient_system)
    assert national is not None
    from support.tokens import patient_headers
    theirs = {**patient_headers(platform, created.json()["id"]),
              "Content-Type": "application/fhir+json"}
    grant(scene.client, theirs, created.json()["id"], scene.gp.id)
    wrong = repeat_of(scene, first).json()["id"]
    elsewhere = prescription_bundle(
        patient_system=scene.patient_system, patient_id_value=national,
        practitioner_system=platform.settings.professional_id_system,
        practitioner_id_value="HP-ERX-GP", number=scene.number(wrong))
    answer = scene.activate(wrong, sign(elsewhere, scene.gp.key_pem, scene.gp.chain))
    assert answer.status_code == 422 and "patient of the prescription" in reason(answer)
