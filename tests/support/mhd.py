"""IHE MHD written by hand, as a third-party system writes it: ITI-65 Provide Document Bundles
(with the author's IHE DSG signature), a SMART Backend Services token, and the small helpers a
client needs to read the answers of ITI-65/66/67/68.

Nothing here imports CareVault: every resource is built from the MHD profile and FHIR R4 alone
(the "Comprehensive Metadata" option), tokens and signatures are made with PyJWT, so that the
tests that use it exercise the server the way an outside client does.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

JsonObject = dict[str, Any]

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
DEFAULT_SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.1"

PDF_FORMAT = "urn:ihe:iti:xds-sd:pdf:2008"
CDA_FORMAT = "urn:ihe:pcc:xds-ms:2007"  # IHE PCC Medical Summary (a CDA document)
CDA_MEDIA_TYPE = "application/hl7-v3+xml"
DSG_FORMAT = "urn:ihe:iti:dsg:detached:2014"
DSG_MEDIA_TYPE = "application/jose"


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def backend_token(base_url: str, credentials: Path, client_id: str,
                  scope: str = "system/*.cruds", **claims: Any) -> str:
    """A SMART Backend Services access token, the way a connecting system gets one: a client
    assertion signed with its certificate's key by a third-party JOSE library (PyJWT), with the
    chain in ``x5c``. ``credentials`` holds ``cert.pem``, ``chain.pem`` and ``key.pem``."""
    chain = [x509.load_pem_x509_certificate((credentials / name).read_bytes())
             for name in ("cert.pem", "chain.pem")]
    now = int(time.time())
    assertion = jwt.encode(
        {"iss": client_id, "sub": client_id, "aud": f"{base_url}/oauth/token", "iat": now,
         "exp": now + 120, "jti": uuid.uuid4().hex, **claims},
        (credentials / "key.pem").read_bytes(), algorithm="ES256",
        headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                         for c in chain]})
    response = httpx.post(f"{base_url}/oauth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, timeout=30)
    if response.status_code != 200:
        raise AssertionError(f"token endpoint: {response.status_code} {response.text}")
    return str(response.json()["access_token"])


class Signer:
    """An author's key and certificate chain (``key.pem``, ``cert.pem``, ``chain.pem`` as the
    platform issues them), signing documents as IHE DSG does in MHD."""

    def __init__(self, credentials: Path) -> None:
        self.key_pem = (credentials / "key.pem").read_bytes()
        self.chain = [x509.load_pem_x509_certificate((credentials / name).read_bytes())
                      for name in ("cert.pem", "chain.pem")]

    def detached_jws(self, content: bytes) -> bytes:
        """A compact JWS over ``content`` with a detached payload (RFC 7515 appendix F:
        ``header..signature``), ES256, the chain in ``x5c`` leaf first. PyJWT's own
        ``is_payload_detached`` would mean RFC 7797 (``b64: false``), which is not appendix F,
        so the encoded payload is cut out of an ordinary JWS instead."""
        token = jwt.api_jws.PyJWS().encode(
            content, self.key_pem, algorithm="ES256",
            headers={"typ": None, "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                                          for c in self.chain]})
        header, _payload, signature = token.split(".")
        return f"{header}..{signature}".encode("ascii")


def pdf(marker: str) -> bytes:
    """A small, well-formed-looking PDF whose bytes carry ``marker``."""
    return (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        + f"% {marker}\n".encode()
        + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def cda(marker: str) -> bytes:
    """A minimal CDA R2 ClinicalDocument (UTF-8, with a BOM-less XML declaration)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3">\n'
        '  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>\n'
        f'  <id root="2.25.{uuid.uuid4().int}"/>\n'
        '  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1"'
        ' displayName="Discharge summary"/>\n'
        f"  <title>Lettre de sortie — {marker}</title>\n"
        '  <effectiveTime value="20261120100000+0100"/>\n'
        '  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>\n'
        "  <component><structuredBody><component><section>\n"
        f"    <text>Évolution favorable. Séjour sans complication. {marker}</text>\n"
        "  </section></component></structuredBody></component>\n"
        "</ClinicalDocument>\n"
    ).encode()


def sha1_base64(data: bytes) -> str:
    """FHIR R4 ``Attachment.hash``: the SHA-1 of the bytes, base64."""
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def unique_oid(root: str = "1.2.3") -> str:
    """An XDS uniqueId: an OID under ``root`` (as ``urn:oid:``), unique per call."""
    return f"urn:oid:{root}.{uuid.uuid4().int % 10**18}"


def patient_subject(patient_id: str | None = None, *,
                    identifier: tuple[str, str] | None = None) -> JsonObject:
    """A reference to the patient: by id (``Patient/…``) or by a business identifier."""
    if identifier is not None:
        system, value = identifier
        return {"identifier": {"system": system, "value": value}}
    if patient_id is None:
        raise ValueError("name the patient by id or by identifier")
    return {"reference": f"Patient/{patient_id}"}


def encounter(patient_id: str, practitioner_id: str, presence_code: str) -> JsonObject:
    """A finished ambulatory visit: recording it gives its practitioner a care relationship
    with the patient (the right to publish to and read the record for a while), proved by the
    code the patient gave them (a CareVault extension)."""
    return {
        "extension": [{"url": "https://carevault.lu/fhir/StructureDefinition/presence-code",
                       "valueString": presence_code}],
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"},
    }


def provide_bundle(
    patient_id: str | None,
    practitioner_id: str | None,
    content: bytes,
    *,
    patient_identifier: tuple[str, str] | None = None,
    organization_id: str | None = None,
    content_type: str = "application/pdf",
    format_code: str = PDF_FORMAT,
    format_system: str = FORMAT_CODES,
    type_code: str = "11488-4",
    class_code: str = "11488-4",
    practice_setting: str = "394802001",
    facility_type: str = "22232009",
    confidentiality: str = "N",
    title: str | None = "Consultation",
    description: str | None = None,
    replaces: str | None = None,
    unique_id: str | None = None,
    submission_set_id: str | None = None,
    source_id: str = DEFAULT_SOURCE,
    sha1: str | None = None,
    size: int | None = None,
    inline: bool = False,
    signature: bytes | None = None,
    signature_unique_id: str | None = None,
) -> JsonObject:
    """An ITI-65 Provide Document Bundle with one document (Comprehensive Metadata).

    The content travels as a ``Binary`` entry referenced by ``attachment.url`` (or, with
    ``inline``, in ``attachment.data``). ``hash`` and ``size`` are computed from ``content``
    unless given. ``unique_id`` (the document's ``masterIdentifier``) and ``submission_set_id``
    are fresh OIDs unless given; `document_unique_id` reads the former back.

    With ``signature`` (a detached JWS over ``content``, see `Signer`), the author's signature
    follows IHE DSG as MHD carries it: a second DocumentReference (uniqueId
    ``signature_unique_id``) whose ``relatesTo`` ``signs`` targets the first one's fullUrl,
    with the JWS as its content (``application/jose``, format ``urn:ihe:iti:dsg:detached:2014``)
    and the signed document's other metadata; the SubmissionSet lists both.
    """
    subject = patient_subject(patient_id, identifier=patient_identifier)
    doc_url, bin_url, set_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    attachment: JsonObject = {
        "contentType": content_type,
        "size": len(content) if size is None else size,
        "hash": sha1 or sha1_base64(content),
        "creation": "2026-11-20T10:00:00Z",
    }
    if title is not None:
        attachment["title"] = title
    if inline:
        attachment["data"] = base64.b64encode(content).decode()
    else:
        attachment["url"] = bin_url
    authors: list[JsonObject] = []
    if practitioner_id is not None:
        authors.append({"reference": f"Practitioner/{practitioner_id}"})
    if organization_id is not None:
        authors.append({"reference": f"Organization/{organization_id}"})
    reference: JsonObject = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": unique_id or unique_oid()},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code}]},
        "category": [{"coding": [{"system": LOINC, "code": class_code}]}],
        "subject": subject,
        "author": authors,
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": confidentiality}]}],
        "content": [{"attachment": attachment,
                     "format": {"system": format_system, "code": format_code}}],
        "context": {
            "practiceSetting": {"coding": [{"system": SNOMED, "code": practice_setting}]},
            "facilityType": {"coding": [{"system": SNOMED, "code": facility_type}]},
            "period": {"start": "2026-11-20T09:00:00Z"},
        },
    }
    if description is not None:
        reference["description"] = description
    if replaces is not None:
        reference["relatesTo"] = [
            {"code": "replaces", "target": {"reference": f"DocumentReference/{replaces}"}}]
    submission_set: JsonObject = {
        "resourceType": "List",
        # MHD 4.1 and later: ihe-sourceId is an Identifier (1..1).
        "extension": [{"url": SOURCE_ID, "valueIdentifier": {"value": source_id}}],
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": submission_set_id or unique_oid("1.2.4")}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": subject,
        "date": "2026-11-20T10:05:00Z",
        "entry": [{"item": {"reference": doc_url}}],
    }
    entries: list[JsonObject] = [
        {"fullUrl": set_url, "resource": submission_set,
         "request": {"method": "POST", "url": "List"}},
        {"fullUrl": doc_url, "resource": reference,
         "request": {"method": "POST", "url": "DocumentReference"}},
    ]
    if not inline:
        entries.append({
            "fullUrl": bin_url,
            "resource": {"resourceType": "Binary", "contentType": content_type,
                         "data": base64.b64encode(content).decode()},
            "request": {"method": "POST", "url": "Binary"}})
    if signature is not None:
        sig_url = f"urn:uuid:{uuid.uuid4()}"
        signed: JsonObject = {
            **{k: v for k, v in reference.items() if k != "description"},
            "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                 "value": signature_unique_id or unique_oid("1.2.5")},
            "relatesTo": [{"code": "signs", "target": {"reference": doc_url}}],
            "content": [{"attachment": {"contentType": DSG_MEDIA_TYPE,
                                        "data": base64.b64encode(signature).decode(),
                                        "size": len(signature),
                                        "hash": sha1_base64(signature)},
                         "format": {"system": FORMAT_CODES, "code": DSG_FORMAT}}],
        }
        submission_set["entry"].append({"item": {"reference": sig_url}})
        entries.append({"fullUrl": sig_url, "resource": signed,
                        "request": {"method": "POST", "url": "DocumentReference"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def document_unique_id(bundle: JsonObject) -> str:
    """The masterIdentifier (XDS uniqueId) of the single DocumentReference of ``bundle``."""
    values = [e["resource"]["masterIdentifier"]["value"] for e in bundle["entry"]
              if e["resource"]["resourceType"] == "DocumentReference"
              and not is_signature(e["resource"])]
    if len(values) != 1:
        raise ValueError(f"the bundle holds {len(values)} DocumentReferences, not one")
    return str(values[0])


def is_signature(reference: JsonObject) -> bool:
    """Is this DocumentReference an author's signature of another (IHE DSG ``signs``)?"""
    return any(r.get("code") == "signs" for r in reference.get("relatesTo", []))


def created(response_bundle: JsonObject, resource_type: str) -> list[str]:
    """The ids a ``transaction-response`` gives to the created resources of one type, read
    from each entry's ``response.location`` (``[base]/Type/id/_history/n`` or ``Type/id``)."""
    ids = []
    for entry in response_bundle.get("entry", []):
        location = str(entry["response"]["location"])
        parts = location.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == resource_type:
            ids.append(parts[-1])
    return ids


def bundle_ids(searchset: JsonObject) -> list[str]:
    """The ids of the resources of one searchset page (``mode: match`` or no mode)."""
    return [e["resource"]["id"] for e in searchset.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"]


def next_link(searchset: JsonObject) -> str | None:
    return next((link["url"] for link in searchset.get("link", [])
                 if link.get("relation") == "next"), None)
