"""A patient with documents, published the production way (ITI-65 over HTTP), for the tests
that need a record to back up, restore or purge."""

from __future__ import annotations

from datetime import date

from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.authorities import presence_code, registrar_token, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro, created_id, provide_bundle, publish


def patient_with_documents(platform: Platform, client: TestClient, count: int, *, number: int = 7,
                           author: str = "HP-DOC-RECORDS") -> tuple[str, list[str]]:
    """A new patient, seen by a new GP who publishes ``count`` reports (each with its
    signature, a document too): (patient id, the reports' ids)."""
    patient_id, gp = patient_and_author(platform, client, number=number, author=author)
    ids = []
    for n in range(count):
        content = b"%PDF-1.4\n% record document " + f"{number}-{n}".encode() + b"\n%%EOF\n"
        answer = publish(client, gp, provide_bundle(patient_id, gp, content))
        assert answer.status_code == 200, answer.text
        ids.append(created_id(answer))
    return patient_id, ids


def patient_and_author(platform: Platform, client: TestClient, *, number: int,
                       author: str) -> tuple[str, Pro]:
    """A new patient and a new GP who saw them (so the GP may publish to their record)."""
    gp = Pro(platform, author)
    return patient_seen_by(platform, client, gp, number=number), gp


def patient_seen_by(platform: Platform, client: TestClient, gp: Pro, *, number: int,
                    born: date = date(1980, 4, 12), registrar: str | None = None) -> str:
    """A new patient, registered the production way (by ``registrar``'s token, else a new
    registrar's), whom ``gp`` saw (an Encounter with the patient's presence code): the GP may
    publish to their record. Returns the patient's id."""
    registrar_headers = {**FHIR_JSON,
                         "Authorization": f"Bearer {registrar or registrar_token(platform)}"}
    made = client.post("/fhir/Patient", json=patient(platform.directory.systems, number, born=born),
                       headers=registrar_headers)
    assert made.status_code == 201, made.text
    patient_id = str(made.json()["id"])
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id
