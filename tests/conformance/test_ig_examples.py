"""The IHE MHD IG's own example Provide Document Bundles, sent as published (see
``examples/README.md``) with only the patient reference and the affinity-domain codes
substituted, in JSON and in XML: each is accepted, or refused for the reason stated here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro
from support.tokens import patient_headers

EXAMPLES = Path(__file__).parent / "examples"
SNOMED = "http://snomed.info/sct"
# The affinity domain's codes for what the IG's examples code outside it.
FACILITY = {"coding": [{"system": SNOMED, "code": "22232009"}]}  # hospital
PRACTICE = {"coding": [{"system": SNOMED, "code": "394802001"}]}  # general medicine


def example(name: str, patient_id: str) -> dict[str, Any]:
    text = (EXAMPLES / f"Bundle-{name}.json").read_text(encoding="utf-8")
    bundle: dict[str, Any] = json.loads(text.replace("Patient/ex-patient", f"Patient/{patient_id}"))
    for entry in bundle["entry"]:
        context = entry["resource"].get("context")
        if entry["resource"]["resourceType"] == "DocumentReference" and context:
            context["facilityType"] = copy.deepcopy(FACILITY)
            context["practiceSetting"] = copy.deepcopy(PRACTICE)
    return bundle


@pytest.fixture
def setting(registrar: TestClient, client: TestClient, platform: Platform) -> tuple[str, Pro]:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 21),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-IG-EXAMPLES")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, gp


# name -> (status, the element named, why that is the right answer)
REFUSED = {
    "ex-minimalProvideDocumentBundleSimple": (
        400, "List.subject",
        "a push naming a Patient it carries itself (urn:uuid of its own entry): CareVault's "
        "patients come from the identity sources (PIXm feed), never from a document "
        "submission, so the subject must be a patient of the index"),
    "ex-comprehensiveProvideDocumentBundleComplete": (
        400, "Bundle.entry[1].resource.code",
        "it files the document in a Folder, and CareVault keeps no folders"),
    "ex-comprehensiveProvideDocumentBundleSimple": (
        422, "DocumentReference.relatesTo",
        "a professional's document carries the author's IHE DSG signature on this platform; the "
        "IG example has none"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_ig_example_refused_by_a_professional_for_the_stated_reason(
        client: TestClient, setting: tuple[str, Pro], name: str) -> None:
    patient_id, gp = setting
    status, expression, _why = REFUSED[name]
    answer = client.post("/fhir", json=example(name, patient_id), headers=gp.headers)
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == [expression], issue


def test_ig_comprehensive_simple_example_is_accepted_from_the_patients_own_app(
        client: TestClient, platform: Platform, setting: tuple[str, Pro]) -> None:
    """The same Comprehensive example sent by the patient's app (a patient's own upload needs
    no professional's signature): accepted as published, its metadata served back."""
    patient_id, _gp = setting
    mine = {**patient_headers(platform, patient_id), **FHIR_JSON}
    bundle = example("ex-comprehensiveProvideDocumentBundleSimple", patient_id)
    answer = client.post("/fhir", json=bundle, headers=mine)
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    assert [loc.split("/")[-4] for loc in locations] == ["List", "DocumentReference", "Binary"]
    document_id = locations[1].split("/")[-3]
    served = client.get(f"/fhir/DocumentReference/{document_id}", headers=mine).json()
    sent = bundle["entry"][1]["resource"]
    assert served["masterIdentifier"]["value"] == sent["masterIdentifier"]["value"]
    assert served["type"] == sent["type"] and served["category"] == sent["category"]
    assert served["content"][0]["attachment"]["language"] == "en"
    assert client.get(f"/fhir/Binary/{document_id}", headers=mine).content == b"Hello World"
    listed = client.get(f"/fhir/List/{locations[0].split('/')[-3]}", headers=mine).json()
    assert listed["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] == "225728007"
