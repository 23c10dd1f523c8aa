"""MHD 4.2 Comprehensive Metadata over HTTP, on both databases: what a SubmissionSet says
beyond the searched columns (designationType, intendedRecipient, a contained author and its
authorOrg, title, note) is kept and returned by ITI-66; a literal author naming someone else is
refused; an element CareVault does not keep is refused by name and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro, provide_bundle, publish

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
SNOMED = "http://snomed.info/sct"


@pytest.fixture
def setting(registrar: TestClient, client: TestClient, platform: Platform) -> tuple[str, Pro]:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 11),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-MHD-COMPREHENSIVE")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, gp


def submission_set(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "List")


def test_the_comprehensive_submission_set_is_kept_and_returned(
        client: TestClient, setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting
    bundle = provide_bundle(patient_id, gp)
    s = submission_set(bundle)
    s["contained"] = [
        {"resourceType": "Practitioner", "id": "rcpt",
         "telecom": [{"system": "email", "value": "dr.weber@example.lu"}]},
        {"resourceType": "Practitioner", "id": "auth", "name": [{"family": "Muller"}]},
        {"resourceType": "Organization", "id": "org", "name": "Cabinet Muller"}]
    s["extension"] += [
        {"url": MHD + "ihe-designationType",
         "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "225728007"}]}},
        {"url": MHD + "ihe-intendedRecipient", "valueReference": {"reference": "#rcpt"}}]
    s["source"] = {"reference": "#auth", "extension": [
        {"url": MHD + "ihe-authorOrg", "valueReference": {"reference": "#org"}}]}
    s["title"] = "Lettre de sortie"
    s["note"] = [{"text": "Pour le médecin traitant"}]
    published = publish(client, gp, bundle)
    assert published.status_code == 200, published.text
    found = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                       headers=gp.headers).json()
    served = found["entry"][0]["resource"]
    assert served["title"] == "Lettre de sortie"
    assert served["note"] == [{"text": "Pour le médecin traitant"}]
    assert served["source"]["reference"] == "#auth"
    assert {c["id"] for c in served["contained"]} == {"rcpt", "auth", "org"}
    urls = [e["url"] for e in served["extension"]]
    assert urls == [MHD + "ihe-sourceId", MHD + "ihe-designationType",
                    MHD + "ihe-intendedRecipient"]
    again = client.get(f"/fhir/List/{served['id']}", headers=gp.headers).json()
    assert again["title"] == "Lettre de sortie"


def test_a_literal_submission_set_author_must_be_the_caller(
        client: TestClient, platform: Platform, setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting
    other = Pro(platform, "HP-MHD-OTHER")
    bundle = provide_bundle(patient_id, gp)
    submission_set(bundle)["source"] = {"reference": f"Practitioner/{other.id}"}
    refused = publish(client, gp, bundle)
    assert refused.status_code in (400, 422), refused.text
    assert refused.json()["issue"][0]["expression"] == ["List.source"]
    bundle = provide_bundle(patient_id, gp)
    submission_set(bundle)["source"] = {"reference": f"Practitioner/{gp.id}"}
    assert publish(client, gp, bundle).status_code == 200


def test_an_element_not_kept_is_refused_by_name_and_nothing_is_stored(
        client: TestClient, setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting
    bundle = provide_bundle(patient_id, gp)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "DocumentReference" and "relatesTo" not in resource:
            resource["context"]["related"] = [{"identifier": {
                "system": "urn:ietf:rfc:3986", "value": "urn:uuid:7d5bb8ac-68ee-4926"}}]
    refused = publish(client, gp, bundle)
    assert refused.status_code == 400, refused.text
    assert refused.json()["issue"][0]["expression"] == ["DocumentReference.context.related"]
    found = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                       headers=gp.headers).json()
    assert found["total"] == 0
