"""ITI-65 Provide Document Bundles written by hand from the MHD profile (as a third-party
system would), and a practitioner's system for the document tests."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import jwt as pyjwt
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.tokens import professional_credentials

FHIR_JSON = {"Content-Type": "application/fhir+json"}
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
PDF = b"%PDF-1.7\n% Rapport de consultation: MARKER-Zo\xc3\xab-Kaiser-4417\n%%EOF\n"
SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.1"


def detached_jws(content: bytes, key_pem: str, chain: list[bytes]) -> bytes:
    """An author's signature as IHE DSG carries it in MHD: a compact JWS with a detached
    payload (RFC 7515 appendix F), ES256, the signer's chain in x5c — made with PyJWT."""
    token = pyjwt.api_jws.PyJWS().encode(
        content, key_pem, algorithm="ES256",
        headers={"x5c": [base64.b64encode(der).decode() for der in chain]})
    header, _payload, signature = token.split(".")  # appendix F: drop the encoded payload
    return f"{header}..{signature}".encode("ascii")


def provide_bundle(patient_id: str, author: Pro | str, content: bytes = PDF, *,
                   type_code: str = "11488-4", class_code: str = "11488-4",
                   confidentiality: str = "N", replaces: str | None = None,
                   content_type: str = "application/pdf", sha1: str | None = None,
                   title: str = "Consultation MARKER-Title-9931",
                   signature: bytes | None = None,
                   held: bool | str | None = None,
                   event: tuple[str, str] | None = None) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle, written from the MHD profile alone. A practitioner
    (``Pro``) signs the document; a string author (``Patient/…``) is a patient's upload."""
    doc_url, bin_url, set_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    attachment = {
        "contentType": content_type, "url": bin_url, "size": len(content),
        "hash": sha1 or base64.b64encode(hashlib.sha1(content).digest()).decode(),
        "title": title, "creation": "2026-11-20T10:00:00Z",
    }
    reference: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                             "value": f"urn:oid:1.2.3.{uuid.uuid4().int % 10**12}"},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code}]},
        "category": [{"coding": [{"system": LOINC, "code": class_code}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "author": [{"reference": author if isinstance(author, str)
                    else f"Practitioner/{author.id}"}],
        "securityLabel": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "code": confidentiality}]}],
        "content": [{"attachment": attachment, "format": {
            "system": FORMATS, "code": "urn:ihe:iti:xds-sd:pdf:2008"}}],
        "context": {"practiceSetting": {"coding": [{"system": SNOMED, "code": "394802001"}]},
                    "facilityType": {"coding": [{"system": SNOMED, "code": "22232009"}]},
                    "period": {"start": "2026-11-20T09:00:00Z"}},
    }
    if event is not None:
        reference["context"]["event"] = [{"coding": [{"system": event[0], "code": event[1]}]}]
    if held is not None:
        reference["extension"] = [{
            "url": "https://carevault.lu/fhir/StructureDefinition/not-yet-visible-to-patient",
            **({"valueBoolean": held} if isinstance(held, bool) else {"valueDateTime": held})}]
    if replaces:
        reference["relatesTo"] = [{"code": "replaces",
                                   "target": {"reference": f"DocumentReference/{replaces}"}}]
    submission_set = {
        "resourceType": "List",
        "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                       "valueUri": SOURCE}],
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": f"urn:oid:1.2.4.{uuid.uuid4().int % 10**12}"}],
        "status": "current", "mode": "working",
        "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                             "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": "2026-11-20T10:05:00Z",
        "entry": [{"item": {"reference": doc_url}}],
    }
    binary = {"resourceType": "Binary", "contentType": content_type,
              "data": base64.b64encode(content).decode()}
    entries = [
        {"fullUrl": set_url, "resource": submission_set,
         "request": {"method": "POST", "url": "List"}},
        {"fullUrl": doc_url, "resource": reference,
         "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": bin_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
    ]
    if isinstance(author, Pro) and signature is None:
        signature = detached_jws(content, author.key_pem, author.chain)
    if signature is not None:
        sig_url = f"urn:uuid:{uuid.uuid4()}"
        signed = {**reference, "masterIdentifier": {
            "system": "urn:ietf:rfc:3986",
            "value": f"urn:oid:1.2.5.{uuid.uuid4().int % 10**12}"},
            "relatesTo": [{"code": "signs", "target": {"reference": doc_url}}],
            "content": [{"attachment": {"contentType": "application/jose",
                                        "data": base64.b64encode(signature).decode(),
                                        "size": len(signature)},
                         "format": {"system": FORMATS,
                                    "code": "urn:ihe:iti:dsg:detached:2014"}}]}
        submission_set["entry"].append({"item": {"reference": sig_url}})
        entries.append({"fullUrl": sig_url, "resource": signed,
                        "request": {"method": "POST", "url": "DocumentReference"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class Pro:
    def __init__(self, platform: Platform, identifier: str, profession: str = "physician",
                 specialty: str | None = "general-practice") -> None:
        token, self.key_pem, self.chain = professional_credentials(
            platform, identifier=identifier, family=identifier, profession=profession,
            specialty=specialty)
        self.headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        with platform.unit_of_work() as uow:
            self.id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]



def grant(client: TestClient, mine: dict[str, str], patient_id: str, practitioner_id: str,
          *, extended: bool = False) -> None:
    """The patient gives a practitioner a normal access (N), or an extended one (N and R)."""
    labels = {"securityLabel": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": code}
        for code in ("N", "R")]} if extended else {}
    made = client.post("/fhir/Consent", headers=mine, json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": {"type": "permit", "actor": [{
            "role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP"}]},
            "reference": {"reference": f"Practitioner/{practitioner_id}"}}], **labels}})
    assert made.status_code == 201, made.text


def publish(client: TestClient, who: Pro, bundle: dict[str, Any]) -> Any:
    return client.post("/fhir", json=bundle, headers=who.headers)


def created_id(response: Any) -> str:
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    return next(loc.split("/")[-3] for loc in locations if "/DocumentReference/" in loc)

