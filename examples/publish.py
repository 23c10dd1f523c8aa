"""Publish a signed PDF to a patient's record (IHE MHD ITI-65), as a professional's software
would, with PyJWT and httpx.

The Provide Document Bundle holds the SubmissionSet (a ``List``), the document's metadata (a
``DocumentReference`` with the affinity domain's codes), its bytes (a ``Binary``) and the
author's signature (IHE DSG: a second DocumentReference whose ``relatesTo`` ``signs`` the
first, holding a compact JWS with a detached payload, ES256, the author's chain in ``x5c``).
Prints the ids of the DocumentReferences created.

    .venv/bin/python examples/publish.py --token "$TOKEN" --card var/demo-card \\
        --patient <id> --author <practitioner id> --title "Consultation"
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.99"  # this software's own source id


def signature(content: bytes, card: Path) -> bytes:
    """RFC 7515 appendix F: the JWS of the exact bytes, the payload left out."""
    chain = [x509.load_pem_x509_certificate((card / n).read_bytes())
             for n in ("cert.pem", "chain.pem")]
    token = jwt.api_jws.PyJWS().encode(
        content, (card / "key.pem").read_bytes(), algorithm="ES256",
        headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]})
    header, _payload, signed = token.split(".")
    return f"{header}..{signed}".encode("ascii")


def oid() -> str:
    return f"urn:oid:1.2.826.0.1.3680043.10.1137.{uuid.uuid4().int % 10**16}"


def bundle(patient: str, author: str, content: bytes, title: str, card: Path) -> dict[str, Any]:
    doc, binary, sig, submission = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},  # consultation note
        "category": [{"coding": [{"system": LOINC, "code": "11488-4"}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "author": [{"reference": f"Practitioner/{author}"}],
        "securityLabel": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}],
        "context": {"practiceSetting": {"coding": [{"system": SNOMED, "code": "394802001"}]},
                    "facilityType": {"coding": [{"system": SNOMED, "code": "22232009"}]}},
    }
    document = {"resourceType": "DocumentReference", **common,
                "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": oid()},
                "content": [{"attachment": {
                    "contentType": "application/pdf", "url": binary, "title": title,
                    "size": len(content), "creation": now,
                    # FHIR R4 Attachment.hash is SHA-1 by definition (an integrity check).
                    "hash": base64.b64encode(
                        hashlib.sha1(content, usedforsecurity=False).digest()).decode()},
                    "format": {"system": FORMATS, "code": "urn:ihe:iti:xds-sd:pdf:2008"}}]}
    jws = signature(content, card)
    signed = {"resourceType": "DocumentReference", **common,
              "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": oid()},
              "relatesTo": [{"code": "signs", "target": {"reference": doc}}],
              "content": [{"attachment": {"contentType": "application/jose",
                                          "data": base64.b64encode(jws).decode(),
                                          "size": len(jws)},
                           "format": {"system": FORMATS,
                                      "code": "urn:ihe:iti:dsg:detached:2014"}}]}
    submission_set = {
        "resourceType": "List", "status": "current", "mode": "working", "date": now,
        "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                       "valueIdentifier": {"value": SOURCE}}],
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": oid()}],
        "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                             "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "entry": [{"item": {"reference": doc}}, {"item": {"reference": sig}}]}
    entries = [(submission, submission_set, "List"), (doc, document, "DocumentReference"),
               (binary, {"resourceType": "Binary", "contentType": "application/pdf",
                         "data": base64.b64encode(content).decode()}, "Binary"),
               (sig, signed, "DocumentReference")]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": kind}}
        for url, resource, kind in entries]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="CareVault's address")
    parser.add_argument("--token", required=True, help="the author's access token")
    parser.add_argument("--card", type=Path, required=True, help="the author's certificate")
    parser.add_argument("--patient", required=True, help="the patient's id")
    parser.add_argument("--author", required=True, help="the author's Practitioner id")
    parser.add_argument("--title", default="Consultation")
    args = parser.parse_args()
    content = (f"%PDF-1.7\n% {args.title}, written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
               "%%EOF\n").encode()
    answer = httpx.post(f"{args.base}/fhir", json=bundle(args.patient, args.author, content,
                                                        args.title, args.card),
                        headers={"Authorization": f"Bearer {args.token}",
                                 "Content-Type": "application/fhir+json"}, timeout=60.0)
    if answer.status_code != 200:
        sys.exit(f"refused ({answer.status_code}): {answer.text}")
    for entry in answer.json()["entry"]:
        location = entry["response"]["location"]
        if location.startswith("DocumentReference/") or "/DocumentReference/" in location:
            print(location.split("DocumentReference/")[1].split("/")[0])


if __name__ == "__main__":
    main()
