"""OWASP API7:2023 Server Side Request Forgery: every URL a client can hand CareVault (an
ITI-65 ``attachment.url``, a JOSE header's ``jku`` or ``x5u``, a URL inside a resource, an
OAuth ``redirect_uri``) is kept or refused, never fetched; the only addresses CareVault calls
are the ones its operator configured (the time-stamping authority, the ATNA repository), and
it follows no redirect there. Each attack points the URL at a socket listening on the loopback
and checks that nothing connected to it.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.timestamping import HttpTimeStampAuthority, TimestampError
from carevault.fhirmodel.directory import new_organization
from support.backend import assertion, token_request
from support.builders import patient
from support.documents import provide_bundle
from support.owasp import Findings, Impostor, Listener, Target, attempt, card, pdf

pytestmark = pytest.mark.security


def _documents(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DocumentReference"
            and not e["resource"].get("relatesTo")]


def attack_attachment_urls(target: Target) -> list[str]:
    """ITI-65 bundles whose document names its bytes by a URL instead of carrying them: an
    internal address, the cloud metadata address, a file. Refused, nothing fetched."""
    f, w, http = Findings(), target.world, target.http
    with Listener() as listener:
        for what, url in [("an internal address", f"{listener.url}/report.pdf"),
                          ("the cloud metadata address",
                           "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
                          ("a local file", "file:///etc/passwd"),
                          ("a gopher URL", f"gopher://127.0.0.1:{listener.port}/_SSRF")]:
            for who, headers in [("the physician", w.doctor.headers), ("A's app", w.app_a)]:
                author: Any = w.doctor if who == "the physician" else f"Patient/{w.patient_a}"
                bundle = provide_bundle(w.patient_a, author, pdf("remote"))
                bundle["entry"] = [e for e in bundle["entry"]
                                   if e["resource"]["resourceType"] != "Binary"]
                for document in _documents(bundle):
                    document["content"][0]["attachment"]["url"] = url
                attempt(f, target, f"{who}: an attachment at {what}",
                        lambda bundle=bundle, headers=headers: http.post(
                            "/fhir", json=bundle, headers=headers), 400, secrets=["root:x:0"])
        # The Binary of the bundle itself may carry an http fullUrl: its bytes are the ones
        # sent, never the ones at that address.
        bundle = provide_bundle(w.patient_a, f"Patient/{w.patient_a}", pdf("inline"))
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Binary":
                entry["fullUrl"] = f"{listener.url}/binary"
        for document in _documents(bundle):
            document["content"][0]["attachment"]["url"] = f"{listener.url}/binary"
        kept = http.post("/fhir", json=bundle, headers=w.app_a)
        if kept.status_code != 200:
            f.add(f"a Binary with an http fullUrl was refused: {kept.text[:200]}")
        if listener.connections():
            f.add(f"CareVault connected to {listener.url}")
    return f.items


def _signed(payload: bytes, key_pem: bytes | str, headers: dict[str, Any]) -> str:
    return pyjwt.api_jws.PyJWS().encode(payload, key_pem, algorithm="ES256", headers=headers)


def attack_urls_in_jose_headers(target: Target) -> list[str]:
    """JOSE lets a header name where its key lives (``jku``, ``x5u``): client assertions, an
    access token and an author's signature point there. CareVault uses only the keys it knows
    (the platform CA's chain in ``x5c``, its own token key) and fetches none."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    holder = card(platform, w.stranger.id)
    x5c = [base64.b64encode(der).decode() for der in holder.chain_der]
    with Listener() as listener:
        claims = pyjwt.decode(assertion(holder, platform), options={"verify_signature": False})
        for what, headers in [
            ("jku and x5u beside x5c", {"x5c": x5c, "jku": listener.url, "x5u": listener.url}),
            ("x5u instead of x5c", {"x5u": f"{listener.url}/chain.pem"}),
            ("jku instead of x5c", {"jku": f"{listener.url}/jwks.json", "kid": "k1"}),
        ]:
            fresh = {**claims, "jti": uuid.uuid4().hex}
            token_request(http, _signed(json.dumps(fresh).encode(), holder.key_pem, headers))
            if listener.connections():
                f.add(f"a client assertion with {what}: CareVault connected to {listener.url}")
        attacker = ec.generate_private_key(ec.SECP256R1())
        genuine = w.doctor.headers["Authorization"].removeprefix("Bearer ")
        forged = pyjwt.encode(pyjwt.decode(genuine, options={"verify_signature": False}),
                              attacker, algorithm="ES256",
                              headers={"jku": f"{listener.url}/jwks.json", "kid": "attacker"})
        attempt(f, target, "an access token naming its key by jku", lambda: http.get(
            "/fhir/Practitioner", headers={"Authorization": f"Bearer {forged}"}), 401)
        content = pdf("x5u-signed")
        signature = _signed(content, w.doctor.key_pem, {"x5u": f"{listener.url}/cert.pem"})
        header, _, tail = signature.split(".")
        bundle = provide_bundle(w.patient_a, w.doctor, content,
                                signature=f"{header}..{tail}".encode())
        attempt(f, target, "an author's signature naming its certificate by x5u",
                lambda: http.post("/fhir", json=bundle, headers=w.doctor.headers), 422)
        if listener.connections():
            f.add(f"CareVault connected to {listener.url}")
    return f.items


def attack_urls_inside_resources(target: Target) -> list[str]:
    """URLs are data in FHIR resources (a patient's photo, an organization's web site, a
    consent's scanned form): stored or refused as data, never opened."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    with Listener() as listener:
        systems = platform.directory.systems
        portrait = {**patient(systems, 7), "photo": [{"contentType": "image/png",
                                                       "url": f"{listener.url}/photo.png"}]}
        clinic = {**new_organization(systems, identifier="ORG-URL", name="Clinic"),
                  "telecom": [{"system": "url", "value": f"{listener.url}/"}]}
        for what, path, body, headers in [
            ("a patient's photo", "/fhir/Patient", portrait, w.registrar),
            ("an organization's web site", "/fhir/Organization", clinic, w.registrar),
            ("a consent's scanned form", "/fhir/Consent", {
                **grant_to(w.patient_a, w.stranger.id),
                "sourceAttachment": {"contentType": "application/pdf",
                                     "url": f"{listener.url}/consent.pdf"}}, w.app_a),
        ]:
            answer = http.post(path, json=body, headers=headers)
            if answer.status_code >= 500:
                f.add(f"{what}: {answer.status_code} {answer.text[:200]}")
            if listener.connections():
                f.add(f"{what}: CareVault connected to {listener.url}")
        # The browser is never sent to an address the app did not register.
        authorize = http.get("/oauth/authorize", params={
            "response_type": "code", "client_id": "app-unknown",
            "redirect_uri": f"{listener.url}/callback", "scope": "launch/patient",
            "code_challenge": "x" * 43, "code_challenge_method": "S256"},
            follow_redirects=False)
        if listener.url in authorize.headers.get("location", "") or authorize.status_code < 400:
            f.add(f"an unregistered redirect_uri: {authorize.status_code} "
                  f"{authorize.headers.get('location')}")
        if listener.connections():
            f.add(f"CareVault connected to {listener.url}")
    return f.items


def grant_to(patient_id: str, practitioner_id: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "provision": {"type": "permit", "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                "reference": {"reference": f"Practitioner/{practitioner_id}"}}]}}


def attack_a_time_stamping_authority_that_redirects(target: Target) -> list[str]:
    """The one address CareVault calls on its own (beside ATNA) is the operator's TSA. A TSA
    (or whoever answers in its place) that redirects to an internal address is not followed,
    and nothing it said is stored."""
    f, platform = Findings(), target.platform
    platform.audit.sign_tree_head("clinical")
    size = platform.audit.latest_tree_head("clinical").tree_size
    with Listener() as listener, Impostor(302, headers={
            "Location": f"{listener.url}/internal"}) as tsa:
        try:
            platform.audit.stamp_latest_tree_head("clinical", HttpTimeStampAuthority(tsa.url))
            f.add("a redirecting TSA was accepted")
        except TimestampError:
            pass
        if listener.connections():
            f.add(f"CareVault followed the TSA's redirect to {listener.url}")
    if platform.audit.timestamp_token("clinical", size) is not None:
        f.add("a time-stamp was stored from a redirect")
    return f.items


ATTACKS = [
    attack_attachment_urls,
    attack_urls_in_jose_headers,
    attack_urls_inside_resources,
    attack_a_time_stamping_authority_that_redirects,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_no_url_a_client_gives_is_fetched(attack: Any, target: Target) -> None:
    assert attack(target) == []
