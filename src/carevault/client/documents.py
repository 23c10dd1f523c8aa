"""A document for a patient's record as the professional's client files it: an IHE MHD ITI-65
Provide Document Bundle (a SubmissionSet ``List``, the ``DocumentReference``, its ``Binary``)
signed by the filing professional with their card (IHE DSG: a second DocumentReference that
``signs`` the first, holding a compact JWS over the document's bytes with a detached payload,
RFC 7515 appendix F, ES256, the card's chain in ``x5c``).

The bundle names no author: the platform records the professional the token speaks for, and
checks that the signature is theirs. Whether they may add it to the record is the
authorization engine's decision, as for any submission.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carevault.client import card as card_client

__all__ = ["DocumentCodes", "provide_bundle"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
# This client's own source id (the SubmissionSet's sourceId, an OID of the platform's arc).
SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.22"
PDF_FORMAT = "urn:ihe:iti:xds-sd:pdf:2008"
ANY_FORMAT = "urn:ihe:iti:xds:2017:mimeTypeSufficient"


@dataclass(frozen=True)
class DocumentCodes:
    """The affinity domain's codes of a filed document (the defaults: a consultation note from
    general practice, normal confidentiality)."""

    type_code: str = "11488-4"  # LOINC
    class_code: str = "11488-4"  # LOINC
    practice_setting: str = "394802001"  # SNOMED CT
    facility_type: str = "22232009"  # SNOMED CT
    confidentiality: str = "N"


def _oid() -> str:
    # A UUID-derived OID (ITU-T X.667: 2.25 is the arc of UUIDs).
    return f"urn:oid:2.25.{uuid.uuid4().int}"


def provide_bundle(
    patient_id: str,
    content: bytes,
    content_type: str,
    title: str,
    card: Path,
    codes: DocumentCodes = DocumentCodes(),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ITI-65 transaction Bundle that files ``content`` into the patient's record."""
    moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document, binary, signature, submission = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    media = content_type.split(";")[0].strip().lower()
    common: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": codes.type_code}]},
        "category": [{"coding": [{"system": LOINC, "code": codes.class_code}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": codes.confidentiality}]}],
        "context": {
            "practiceSetting": {"coding": [{"system": SNOMED, "code": codes.practice_setting}]},
            "facilityType": {"coding": [{"system": SNOMED, "code": codes.facility_type}]},
        },
    }
    filed = {
        **common,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": _oid()},
        "content": [
            {
                "attachment": {
                    "contentType": media,
                    "url": binary,
                    "title": title,
                    "size": len(content),
                    "creation": moment,
                    # FHIR R4 defines Attachment.hash as SHA-1 (an integrity check only).
                    "hash": base64.b64encode(
                        hashlib.sha1(content, usedforsecurity=False).digest()
                    ).decode(),
                },
                "format": {
                    "system": FORMATS,
                    "code": PDF_FORMAT if media == "application/pdf" else ANY_FORMAT,
                },
            }
        ],
    }
    jws_bytes = card_client.sign(card, content)
    signed = {
        **common,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": _oid()},
        "relatesTo": [{"code": "signs", "target": {"reference": document}}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/jose",
                    "data": base64.b64encode(jws_bytes).decode(),
                    "size": len(jws_bytes),
                },
                "format": {"system": FORMATS, "code": "urn:ihe:iti:dsg:detached:2014"},
            }
        ],
    }
    submission_set = {
        "resourceType": "List",
        "extension": [{"url": SOURCE_ID, "valueIdentifier": {"value": SOURCE}}],
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": _oid()}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": moment,
        "entry": [{"item": {"reference": document}}, {"item": {"reference": signature}}],
    }
    entries = [
        (submission, submission_set, "List"),
        (document, filed, "DocumentReference"),
        (
            binary,
            {
                "resourceType": "Binary",
                "contentType": media,
                "data": base64.b64encode(content).decode(),
            },
            "Binary",
        ),
        (signature, signed, "DocumentReference"),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": kind}}
            for url, resource, kind in entries
        ],
    }
