"""A few shared documents for the demo patient, published the way a hospital system does it.

The demo physician (who holds the demo card) records a care event with the demo patient, then
publishes two signed documents through the same use case as ITI-65: a consultation report and a
laboratory result, each with the author's detached JWS signature (IHE DSG) made with the card's
key. A newcomer then finds real documents, signatures and access history in the portal and API.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carevault.adapters.pki.credential_files import CHAIN_FILE, KEY_FILE
from carevault.adapters.storage.record_store import StoredEncounter
from carevault.client.card import detached_jws
from carevault.domain.authorization import CareProof
from carevault.fhirmodel.mhd import (
    CONFIDENTIALITY_SYSTEM,
    SOURCE_ID_EXTENSION,
    SUBMISSION_SET_SYSTEM,
    parse_provide_bundle,
)
from carevault.services.care_access import CareAccess
from carevault.services.documents import DocumentService
from carevault.services.record_policy import Actor, practitioner_subject
from carevault.services.unit_of_work import UnitOfWork

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
DEMO_SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.99"

# (class code, type code, title, text): LOINC codes of the built-in affinity domain.
_DOCUMENTS = (
    ("11488-4", "11488-4", "Consultation report", b"Cardiology consultation: no abnormality."),
    ("26436-6", "11502-2", "Laboratory report", b"Haemoglobin 14.2 g/dL; leukocytes 6.1 G/L."),
)


def _pdf(text: bytes) -> bytes:
    return b"%PDF-1.7\n% CareVault demo\n% " + text + b"\n%%EOF\n"


def _reference(
    patient_id: str, practitioner_id: str, codes: tuple[str, str], title: str, data: bytes
) -> dict[str, Any]:
    class_code, type_code = codes
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code}]},
        "category": [{"coding": [{"system": LOINC, "code": class_code}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "author": [{"reference": f"Practitioner/{practitioner_id}"}],
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": "N"}]}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": base64.b64encode(data).decode(),
                    "title": title,
                },
                "format": {"system": FORMATS, "code": "urn:ihe:iti:xds-sd:pdf:2008"},
            }
        ],
        "context": {
            "practiceSetting": {"coding": [{"system": SNOMED, "code": "394802001"}]},
            "facilityType": {"coding": [{"system": SNOMED, "code": "22232009"}]},
        },
    }


def publish_demo_documents(
    units: Callable[[], UnitOfWork],
    care: CareAccess,
    documents: DocumentService,
    practitioner_id: str,
    patient_id: str,
    card: Path,
    *,
    max_entries: int = 100,
) -> int:
    """Record a care event and publish the demo documents; returns how many were published."""
    key_pem = (card / KEY_FILE).read_bytes()
    chain = [
        certificate.public_bytes(serialization.Encoding.DER)
        for name in ("cert.pem", CHAIN_FILE)
        for certificate in x509.load_pem_x509_certificates((card / name).read_bytes())
    ]
    now = datetime.now(UTC)
    with units() as uow:
        # The visit comes from the physician's hospital's admission system, the proof of a
        # care relationship that opens the record (a professional's own word would not).
        subject = replace(
            practitioner_subject(uow, practitioner_id), care_proof=CareProof.ADMISSION_SYSTEM
        )
    actor = Actor(subject, f"Practitioner/{practitioner_id}")
    encounter_id = uuid.uuid4().hex
    start = now - timedelta(hours=1)
    resource = {
        "resourceType": "Encounter",
        "id": encounter_id,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
        "period": {"start": start.isoformat()},
    }
    care.open_encounter(
        actor,
        StoredEncounter(
            encounter_id, 1, patient_id, practitioner_id, None, start, None, resource, now
        ),
    )
    entries: list[dict[str, Any]] = []
    listed: list[dict[str, Any]] = []
    for class_code, type_code, title, text in _DOCUMENTS:
        codes = (class_code, type_code)
        data = _pdf(text)
        doc_url, sig_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
        reference = _reference(patient_id, practitioner_id, codes, title, data)
        signed = _reference(patient_id, practitioner_id, codes, title, data)
        signed["relatesTo"] = [{"code": "signs", "target": {"reference": doc_url}}]
        jws_bytes = detached_jws(data, key_pem, chain)
        signed["content"] = [
            {
                "attachment": {
                    "contentType": "application/jose",
                    "data": base64.b64encode(jws_bytes).decode(),
                },
                "format": {"system": FORMATS, "code": "urn:ihe:iti:dsg:detached:2014"},
            }
        ]
        for url, resource in ((doc_url, reference), (sig_url, signed)):
            entries.append(
                {
                    "fullUrl": url,
                    "resource": resource,
                    "request": {"method": "POST", "url": "DocumentReference"},
                }
            )
            listed.append({"item": {"reference": url}})
    submission_set = {
        "resourceType": "List",
        "extension": [{"url": SOURCE_ID_EXTENSION, "valueUri": DEMO_SOURCE}],
        "identifier": [
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}
        ],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": SUBMISSION_SET_SYSTEM, "code": "submissionset"}]},
        "date": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "subject": {"reference": f"Patient/{patient_id}"},
        "entry": listed,
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": submission_set,
                "request": {"method": "POST", "url": "List"},
            },
            *entries,
        ],
    }
    submission = parse_provide_bundle(bundle, documents.affinity.contains, max_entries=max_entries)
    with units() as uow:
        record = care.policy.facts(uow, patient_id, datetime.now(UTC))
        if record is None:
            return 0
        published = documents.publisher.publish(uow, subject, record, submission)
        uow.commit()
    return len([m for m in published.documents if m.signs is None])
