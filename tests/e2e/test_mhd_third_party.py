"""A third-party document source and consumer uses IHE MHD against a running CareVault with
nothing but ``httpx``, PyJWT and Bundles written by hand from the MHD profile (no CareVault code
on the client's side): it discovers the affinity domain's codes, publishes a PDF and a CDA
document with their author's signature (ITI-65), finds them (ITI-67), reads their metadata,
retrieves their exact bytes (ITI-68), checks the author's signature against the platform CA,
replaces one, and lists the SubmissionSets (ITI-66).

The operator's side (a new patient in the index) is done with the ``carevault`` command line,
as an operator would; the physician is the demo physician whose certificate the ``server``
fixture issued. The physician records a visit (``Encounter``) first: that care relationship is
what lets them publish to the patient's record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from support.authorities import presence_code_in
from support.builders import national_id
from support.mhd import (
    CDA_FORMAT,
    CDA_MEDIA_TYPE,
    CONFIDENTIALITY,
    DSG_FORMAT,
    DSG_MEDIA_TYPE,
    FHIR_JSON,
    FORMAT_CODES,
    LOINC,
    PDF_FORMAT,
    SNOMED,
    Signer,
    backend_token,
    bundle_ids,
    cda,
    created,
    document_unique_id,
    encounter,
    is_signature,
    next_link,
    pdf,
    provide_bundle,
)

from .conftest import CAREVAULT, RunningServer, carevault_env

pytestmark = pytest.mark.e2e

NATIONAL_ID = "https://carevault.lu/fhir/sid/matricule"
PDF_TYPE = "11488-4"  # LOINC Consult note
CDA_TYPE = "18842-5"  # LOINC Discharge summary
JsonObject = dict[str, Any]


class Client:
    """The third party's FHIR client: httpx with a SMART Backend Services token (PyJWT)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.token = backend_token(server.base_url, server.card, server.client_id)
        self.http = httpx.Client(base_url=server.fhir, timeout=30.0, headers={
            "Authorization": f"Bearer {self.token}", "Accept": FHIR_JSON})

    def get(self, url: str, **params: str) -> httpx.Response:
        return self.http.get(url, params=params or None)

    def retrieve(self, url: str) -> httpx.Response:
        """ITI-68: the document itself, so the client accepts any media type (with FHIR JSON
        it would get a Binary resource, as FHIR R4 asks)."""
        return self.http.get(url, headers={"Accept": "*/*"})

    def post(self, url: str, resource: JsonObject) -> httpx.Response:
        return self.http.post(url, content=json.dumps(resource).encode(),
                              headers={"Content-Type": FHIR_JSON})

    def search(self, resource_type: str, **params: str) -> list[JsonObject]:
        """Every match of a search, following the ``next`` links."""
        found: list[JsonObject] = []
        answer = self.get(f"/{resource_type}", **params)
        while True:
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
            matches = set(bundle_ids(page))
            found += [e["resource"] for e in page.get("entry", [])
                      if e["resource"]["id"] in matches]
            link = next_link(page)
            if link is None:
                return found
            answer = self.http.get(link)


@dataclass(frozen=True)
class Published:
    """One ITI-65 submission as the client made it, and what the server answered."""

    bundle: JsonObject
    content: bytes
    signature: bytes
    answer: httpx.Response
    document_id: str  # the report's DocumentReference (and Binary) id
    signature_id: str  # its signature's


@dataclass(frozen=True)
class Record:
    patient_id: str
    national_id: str
    author_id: str
    client: Client
    signer: Signer
    pdf: Published
    cda: Published


def publish(client: Client, signer: Signer, patient_id: str | None, author_id: str,
            content: bytes, **metadata: Any) -> Published:
    """ITI-65, then read the answer the way a client must: the transaction-response's
    locations, each DocumentReference read back to tell the report from its signature."""
    signature = signer.detached_jws(content)
    bundle = provide_bundle(patient_id, author_id, content, signature=signature, **metadata)
    answer = client.post("", bundle)
    assert answer.status_code == 200, answer.text
    ids = created(answer.json(), "DocumentReference")
    read = {i: client.get(f"/DocumentReference/{i}").json() for i in ids}
    unique_id = document_unique_id(bundle)
    document_id = next(i for i, r in read.items() if r["masterIdentifier"]["value"] == unique_id)
    signature_id = next(i for i, r in read.items() if is_signature(r))
    return Published(bundle, content, signature, answer, document_id, signature_id)


@pytest.fixture(scope="module")
def record(server: RunningServer) -> Iterator[Record]:
    """A new patient (entered by the operator), a visit by the demo physician, and two
    documents the physician's system published: a PDF consult note (patient named by id) and a
    CDA discharge summary (patient named by national identifier, content inline)."""
    author_id = next(p["practitioner_id"] for p in server.accounts["professionals"]
                     if p["identifier"] == server.client_id)
    for sequence in range(913, 1000):  # a number no demo patient happens to hold
        matricule = national_id(sequence, date(1936, 2, 29))
        done = subprocess.run(
            [CAREVAULT, "directory", "add-patient", "--national-id", matricule, "--family",
             "Tiers-Partie", "--given", "Léon", "--birthdate", "1936-02-29", "--gender", "male",
             "--json"], cwd=server.workdir, capture_output=True, text=True, timeout=120,
            check=False, env=carevault_env(server.workdir, server.base_url))
        if done.returncode == 0:
            patient_id = str(json.loads(done.stdout)["id"])
            break
    else:
        pytest.fail("no free national identifier for the test patient")
    client = Client(server)
    signer = Signer(server.card)
    code = presence_code_in(carevault_env(server.workdir)["CAREVAULT_DATABASE_URL"], patient_id)
    seen = client.post("/Encounter", encounter(patient_id, author_id, code))
    assert seen.status_code == 201, seen.text
    report = publish(client, signer, patient_id, author_id,
                     pdf("Compte rendu de consultation, M. Tiers-Partie"),
                     title="Consultation de cardiologie", type_code=PDF_TYPE,
                     class_code=PDF_TYPE, practice_setting="394579002")
    letter = publish(client, signer, None, author_id, cda("Sortie le 20/11/2026"),
                     patient_identifier=(NATIONAL_ID, matricule), content_type=CDA_MEDIA_TYPE,
                     format_code=CDA_FORMAT, type_code=CDA_TYPE, class_code=CDA_TYPE,
                     title="Lettre de sortie", facility_type="22232009", inline=True)
    try:
        yield Record(patient_id, matricule, author_id, client, signer, report, letter)
    finally:
        client.http.close()


def _coding(concept: JsonObject) -> tuple[str, str]:
    coding = concept["coding"][0]
    return coding["system"], coding["code"]


# --- the affinity domain ---------------------------------------------------------------------


@pytest.mark.parametrize(("valueset", "codes"), [
    ("xds-typecode", {(LOINC, PDF_TYPE), (LOINC, CDA_TYPE)}),
    ("xds-classcode", {(LOINC, PDF_TYPE), (LOINC, CDA_TYPE)}),
    ("xds-formatcode", {(FORMAT_CODES, PDF_FORMAT), (FORMAT_CODES, CDA_FORMAT),
                        (FORMAT_CODES, DSG_FORMAT)}),
    ("xds-practicesettingcode", {(SNOMED, "394802001"), (SNOMED, "394579002")}),
    ("xds-healthcarefacilitytypecode", {(SNOMED, "22232009")}),
    ("xds-confidentialitycode", {(CONFIDENTIALITY, "N"), (CONFIDENTIALITY, "R"),
                                 (CONFIDENTIALITY, "V")}),
])
def test_the_value_sets_publish_the_codes_a_source_needs(
        record: Record, valueset: str, codes: set[tuple[str, str]]) -> None:
    expanded = record.client.get(f"/ValueSet/{valueset}/$expand")
    assert expanded.status_code == 200, expanded.text
    assert expanded.headers["content-type"].startswith(FHIR_JSON)
    body = expanded.json()
    assert body["resourceType"] == "ValueSet" and body["id"] == valueset
    contains = body["expansion"]["contains"]
    offered = {(c["system"], c["code"]) for c in contains}
    assert codes <= offered
    assert all(c.get("display") for c in contains)
    assert body["expansion"].get("total", len(contains)) >= len(contains)
    read = record.client.get(f"/ValueSet/{valueset}")
    assert read.status_code == 200 and read.json()["url"] == body["url"]


def test_the_type_codes_expand_with_a_filter(record: Record) -> None:
    expanded = record.client.get("/ValueSet/xds-typecode/$expand", filter="discharge")
    assert expanded.status_code == 200, expanded.text
    codes = {c["code"] for c in expanded.json()["expansion"].get("contains", [])}
    assert CDA_TYPE in codes and PDF_TYPE not in codes


# --- ITI-65 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pdf", "cda"])
def test_publishing_answers_a_transaction_response(record: Record, which: str) -> None:
    published: Published = getattr(record, which)
    body = published.answer.json()
    assert published.answer.headers["content-type"].startswith(FHIR_JSON)
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    assert all(e["response"]["status"].startswith("201") for e in body["entry"])
    assert all(e["response"]["location"].startswith(f"{record.client.server.fhir}/")
               for e in body["entry"])
    assert set(created(body, "DocumentReference")) == {published.document_id,
                                                       published.signature_id}
    for document_id in created(body, "DocumentReference"):
        read = record.client.get(f"/DocumentReference/{document_id}")
        assert read.status_code == 200, read.text
    (set_id,) = created(body, "List")
    sets = record.client.search("List", patient=f"Patient/{record.patient_id}")
    assert set_id in {s["id"] for s in sets}


def test_the_transaction_response_follows_the_request_entry_for_entry(record: Record) -> None:
    request_types = [e["resource"]["resourceType"] for e in record.pdf.bundle["entry"]]
    response_types = [e["response"]["location"].split("/_history/")[0].rsplit("/", 2)[-2]
                      for e in record.pdf.answer.json()["entry"]]
    assert response_types == request_types


def test_every_location_of_the_transaction_response_can_be_read_as_given(
        record: Record) -> None:
    for entry in record.pdf.answer.json()["entry"]:
        location = entry["response"]["location"]
        assert record.client.http.get(location).status_code == 200, location


# --- ITI-67 ----------------------------------------------------------------------------------


def test_find_by_patient_and_by_national_identifier(record: Record) -> None:
    by_id = record.client.search("DocumentReference", patient=f"Patient/{record.patient_id}")
    by_identifier = record.client.search(
        "DocumentReference", **{"patient.identifier": f"{NATIONAL_ID}|{record.national_id}"})
    mine = {record.pdf.document_id, record.pdf.signature_id, record.cda.document_id,
            record.cda.signature_id}
    assert mine <= {r["id"] for r in by_id}
    assert {r["id"] for r in by_identifier} == {r["id"] for r in by_id}
    assert all(r["subject"]["reference"] == f"Patient/{record.patient_id}" for r in by_id)


@pytest.mark.parametrize(("code", "finds", "misses"), [
    (f"{LOINC}|{PDF_TYPE}", "pdf", "cda"),
    (CDA_TYPE, "cda", "pdf"),  # a code in any system
])
def test_find_by_type(record: Record, code: str, finds: str, misses: str) -> None:
    found = record.client.search("DocumentReference", patient=f"Patient/{record.patient_id}",
                                 type=code)
    ids = {r["id"] for r in found}
    assert getattr(record, finds).document_id in ids
    assert getattr(record, misses).document_id not in ids
    assert all(_coding(r["type"])[1] == code.rpartition("|")[2] for r in found)


def test_find_by_status(record: Record) -> None:
    current = record.client.search("DocumentReference", patient=f"Patient/{record.patient_id}",
                                   status="current")
    assert {record.pdf.document_id, record.cda.document_id} <= {r["id"] for r in current}
    assert all(r["status"] == "current" for r in current)
    retired = record.client.search("DocumentReference", patient=f"Patient/{record.patient_id}",
                                   status="superseded,entered-in-error")
    assert all(r["status"] in ("superseded", "entered-in-error") for r in retired)
    assert record.pdf.document_id not in {r["id"] for r in retired}


def test_find_the_signature_of_a_document(record: Record) -> None:
    related = record.client.search("DocumentReference", patient=f"Patient/{record.patient_id}",
                                   format=f"{FORMAT_CODES}|{DSG_FORMAT}")
    signatures = {r["id"]: r for r in related}
    assert {record.pdf.signature_id, record.cda.signature_id} <= set(signatures)
    assert signatures[record.pdf.signature_id]["relatesTo"] == [
        {"code": "signs", "target": {"reference": f"DocumentReference/{record.pdf.document_id}"}}]


# --- the DocumentReference -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pdf", "cda"])
def test_the_document_reference_says_what_was_sent(record: Record, which: str) -> None:
    published: Published = getattr(record, which)
    answer = record.client.get(f"/DocumentReference/{published.document_id}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(FHIR_JSON)
    read = answer.json()
    sent = next(e["resource"] for e in published.bundle["entry"]
                if e["resource"]["resourceType"] == "DocumentReference"
                and not is_signature(e["resource"]))
    assert read["resourceType"] == "DocumentReference" and read["id"] == published.document_id
    assert read["masterIdentifier"]["value"] == sent["masterIdentifier"]["value"]
    assert read["status"] == "current"
    assert read["subject"] == {"reference": f"Patient/{record.patient_id}"}
    assert {"reference": f"Practitioner/{record.author_id}"} in read["author"]
    for path in ("type", "securityLabel"):
        assert _coding(read[path] if path == "type" else read[path][0]) == _coding(
            sent[path] if path == "type" else sent[path][0])
    assert _coding(read["category"][0]) == _coding(sent["category"][0])
    for setting in ("practiceSetting", "facilityType"):
        assert _coding(read["context"][setting]) == _coding(sent["context"][setting])
    attachment, given = read["content"][0]["attachment"], sent["content"][0]["attachment"]
    for field in ("contentType", "size", "hash", "title"):
        assert attachment[field] == given[field], field
    assert attachment["url"] == f"{record.client.server.fhir}/Binary/{published.document_id}"
    assert read["content"][0]["format"]["code"] == sent["content"][0]["format"]["code"]
    assert "date" in read


# --- ITI-68 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "media_type"), [("pdf", "application/pdf"),
                                                    ("cda", CDA_MEDIA_TYPE)])
def test_retrieve_gives_the_exact_bytes(record: Record, which: str, media_type: str) -> None:
    published: Published = getattr(record, which)
    reference = record.client.get(f"/DocumentReference/{published.document_id}").json()
    url = reference["content"][0]["attachment"]["url"]
    first = record.client.http.get(url, headers={"Accept": "*/*"})
    assert first.status_code == 200, first.text
    assert first.content == published.content
    assert first.headers["content-type"].split(";")[0].strip() == media_type
    assert int(first.headers["content-length"]) == len(published.content)
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["content-disposition"].startswith("attachment")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"'), etag  # a strong validator
    again = record.client.retrieve(url)
    assert again.content == published.content and again.headers["etag"] == etag
    other = record.cda if which == "pdf" else record.pdf
    assert record.client.retrieve(f"/Binary/{other.document_id}").headers["etag"] != etag
    # What the DocumentReference promised is what came.
    attachment = reference["content"][0]["attachment"]
    assert attachment["size"] == len(first.content)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(first.content).digest()).decode()


@pytest.mark.parametrize("which", ["pdf", "cda"])
def test_the_authors_signature_verifies_without_trusting_carevault(
        record: Record, which: str) -> None:
    """The signature is retrieved like any document and checked with PyJWT and the platform
    CA's certificate alone: the leaf in ``x5c`` was issued by the CA, names the author, and
    signed exactly the retrieved bytes."""
    published: Published = getattr(record, which)
    jws = record.client.retrieve(f"/Binary/{published.signature_id}")
    assert jws.status_code == 200 and jws.content == published.signature
    assert jws.headers["content-type"].split(";")[0] == DSG_MEDIA_TYPE
    document = record.client.retrieve(f"/Binary/{published.document_id}").content
    header_segment, payload_segment, signature_segment = jws.content.decode().split(".")
    assert payload_segment == ""  # detached (RFC 7515 appendix F)
    header = jwt.get_unverified_header(jws.content.decode())
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    authorities = x509.load_pem_x509_certificates(
        httpx.get(f"{record.client.server.base_url}/pki/ca").content)
    issuer = next(ca for ca in authorities if ca.subject == chain[0].issuer)
    chain[0].verify_directly_issued_by(issuer)
    assert record.client.server.client_id in chain[0].subject.rfc4514_string()
    public_key = chain[0].public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    attached = ".".join([header_segment, jwt.utils.base64url_encode(document).decode(),
                         signature_segment])
    assert jwt.api_jws.PyJWS().decode(attached, public_key, algorithms=["ES256"]) == document


# --- replacement -----------------------------------------------------------------------------


def test_a_replacement_supersedes_and_the_old_version_stays_retrievable(record: Record) -> None:
    client = record.client
    original = publish(client, record.signer, record.patient_id, record.author_id,
                       pdf("Résultats, version 1"), title="Bilan v1")
    corrected = publish(client, record.signer, record.patient_id, record.author_id,
                        pdf("Résultats, version 2 (corrigée)"), title="Bilan v2",
                        replaces=original.document_id)
    new = client.get(f"/DocumentReference/{corrected.document_id}").json()
    assert new["status"] == "current"
    assert {"code": "replaces",
            "target": {"reference": f"DocumentReference/{original.document_id}"}
            } in new["relatesTo"]
    old = client.get(f"/DocumentReference/{original.document_id}")
    assert old.status_code == 200 and old.json()["status"] == "superseded"
    retrieved = client.retrieve(f"/Binary/{original.document_id}")
    assert retrieved.status_code == 200 and retrieved.content == original.content
    assert client.retrieve(f"/Binary/{corrected.document_id}").content == corrected.content

    patient = f"Patient/{record.patient_id}"
    current = {r["id"] for r in client.search("DocumentReference", patient=patient,
                                              status="current")}
    assert corrected.document_id in current and original.document_id not in current
    superseded = {r["id"] for r in client.search("DocumentReference", patient=patient,
                                                 status="superseded")}
    assert original.document_id in superseded
    related = {r["id"] for r in client.search(
        "DocumentReference", patient=patient,
        related=f"DocumentReference/{original.document_id}")}
    assert corrected.document_id in related
    # A superseded document cannot be replaced a second time.
    again = client.post("", provide_bundle(
        record.patient_id, record.author_id, pdf("v3"), replaces=original.document_id,
        signature=record.signer.detached_jws(pdf("v3"))))
    assert again.status_code == 409, again.text
    assert again.json()["resourceType"] == "OperationOutcome"


# --- ITI-66 ----------------------------------------------------------------------------------


def test_find_the_submission_sets(record: Record) -> None:
    sets = record.client.search("List", patient=f"Patient/{record.patient_id}")
    listed = {}
    for submission_set in sets:
        assert submission_set["resourceType"] == "List"
        assert _coding(submission_set["code"]) == (
            "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset")
        assert submission_set["subject"] == {"reference": f"Patient/{record.patient_id}"}
        listed[submission_set["identifier"][0]["value"]] = {
            e["item"]["reference"].rsplit("/", 1)[-1] for e in submission_set["entry"]}
    for published in (record.pdf, record.cda):
        sent = next(e["resource"] for e in published.bundle["entry"]
                    if e["resource"]["resourceType"] == "List")
        assert listed[sent["identifier"][0]["value"]] == {published.document_id,
                                                          published.signature_id}
    by_identifier = record.client.search(
        "List", code="submissionset",
        **{"patient.identifier": f"{NATIONAL_ID}|{record.national_id}"})
    assert {s["id"] for s in by_identifier} == {s["id"] for s in sets}
