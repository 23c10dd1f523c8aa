"""OWASP API2:2023 Broken Authentication: forged, stale, misdirected and replayed credentials,
credentials that were good once (a revoked certificate, a suspended licence, a revoked token),
tokens where they end up in logs, and guessing passwords and second factors. Every attempt is
refused, leaves no token or data behind, and is in the audit log (`docs/authentication.md`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.adapters.pki.x509_authority import (
    LeafSubject,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
    new_key,
)
from carevault.adapters.storage import schema
from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from carevault.services.tokens import ASSERTION_TYPE
from support.accounts import enrol_patient
from support.backend import Holder, assertion, token_request
from support.owasp import Findings, Target, attempt, audit_sizes, card, records_since
from support.tokens import professional_credentials

pytestmark = pytest.mark.security

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(signature)}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    return f"{unsigned}.{b64url(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issued_tokens(platform: Platform) -> int:
    with platform.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(schema.oauth_token))
                   .scalar_one())


def attack_forged_access_tokens(target: Target) -> list[str]:
    """Tokens an attacker can make without the platform's key, and ones the platform made for
    somewhere or someone else: each is refused with 401 on the FHIR API and recorded."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    genuine = w.doctor.headers["Authorization"].removeprefix("Bearer ")
    header = pyjwt.get_unverified_header(genuine)
    claims = pyjwt.decode(genuine, options={"verify_signature": False})
    server_pem = platform.tokens.key.jwk.as_pem(private=True)
    public_pem = platform.tokens.key.public_jwk.as_pem(private=False)
    now = int(datetime.now(UTC).timestamp())
    attacker = ec.generate_private_key(ec.SECP256R1())
    elsewhere = TokenSigningKey.derive(os.urandom(32))  # another environment's key file
    forged = {
        "alg none": compact({**header, "alg": "none"}, claims),
        "alg none, upper case": compact({**header, "alg": "NONE"}, claims),
        "HS256 keyed with the public key (PEM)": hs256({**header, "alg": "HS256"}, claims,
                                                       public_pem),
        "HS256 keyed with the public JWK": hs256(
            {**header, "alg": "HS256"}, claims,
            json.dumps(platform.tokens.key.public_jwk.as_dict()).encode()),
        "ES256 with the attacker's key and the platform's kid": pyjwt.encode(
            claims, attacker, algorithm="ES256", headers={"kid": header["kid"]}),
        "another environment's key": pyjwt.encode(
            claims, elsewhere.jwk.as_pem(private=True), algorithm="ES256",
            headers={"kid": elsewhere.kid}),
        "the platform's key, another audience": pyjwt.encode(
            {**claims, "aud": "https://other-resource-server.example/fhir"}, server_pem,
            algorithm="ES256", headers={"kid": header["kid"]}),
        "the platform's key, another issuer": pyjwt.encode(
            {**claims, "iss": "https://idp.example"}, server_pem, algorithm="ES256",
            headers={"kid": header["kid"]}),
        "the platform's key, expired": pyjwt.encode(
            {**claims, "iat": now - 900, "exp": now - 600}, server_pem, algorithm="ES256",
            headers={"kid": header["kid"]}),
        "the platform's key, never issued (unknown jti)": pyjwt.encode(
            {**claims, "jti": "f" * 32, "scope": "system/*.cruds"}, server_pem,
            algorithm="ES256", headers={"kid": header["kid"]}),
        "the client assertion itself": assertion(card(platform, w.stranger.id), platform),
        "a truncated token": genuine[: len(genuine) // 2],
    }
    for what, token in forged.items():
        answer = attempt(f, target, what, lambda token=token: http.get(
            "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_a}"},
            headers=bearer(token)), 401, secrets=[w.report_a])
        if answer.status_code == 401 and "Bearer" not in answer.headers.get(
                "www-authenticate", ""):
            f.add(f"{what}: the 401 has no WWW-Authenticate: Bearer challenge")
    # A token the platform signed, for this professional, whose scope claim was widened: the
    # scope granted and stored when it was issued is what counts.
    narrow, _, _ = professional_credentials(platform, "system/Practitioner.rs",
                                            identifier="HP-OWASP-A")
    widened = pyjwt.encode(
        {**pyjwt.decode(narrow, options={"verify_signature": False}), "scope": "system/*.rs"},
        server_pem, algorithm="ES256", headers={"kid": header["kid"]})
    attempt(f, target, "the platform's key, the scope widened", lambda: http.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_a}"},
        headers=bearer(widened)), 403, secrets=[w.report_a])
    return f.items


def attack_forged_and_replayed_client_assertions(target: Target) -> list[str]:
    """At the token endpoint: assertions replayed, unsigned, signed with another key, aimed at
    another audience, too long-lived, naming another professional, or chained to another CA.
    None gives a token; each is refused 401 invalid_client and recorded."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    stolen = card(platform, w.stranger.id)
    used = assertion(stolen, platform)
    first = token_request(http, used)
    if first.status_code != 200:
        f.add(f"the genuine assertion was refused: {first.text[:200]}")
    thief = dataclasses.replace(stolen, key_pem=ec.generate_private_key(ec.SECP256R1())
                                .private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    claims = pyjwt.decode(assertion(stolen, platform), options={"verify_signature": False})
    x5c = [base64.b64encode(der).decode() for der in stolen.chain_der]
    forged = {
        "a replayed assertion (same jti)": used,
        "alg none": compact({"alg": "none", "x5c": x5c}, claims),
        "signed with a key that is not the certificate's": assertion(thief, platform),
        "aimed at the FHIR API instead of the token endpoint": assertion(
            stolen, platform, aud=platform.tokens.fhir_base),
        "living an hour": assertion(stolen, platform, lifetime=3600),
        "expired": assertion(stolen, platform, lifetime=-300),
        "naming another professional": assertion(stolen, platform, iss="HP-OWASP-A",
                                                 sub="HP-OWASP-A"),
        "chained to another CA": assertion(_rogue(stolen.client_id), platform),
    }
    for what, signed in forged.items():
        before = issued_tokens(platform)
        since = audit_sizes(platform)
        answer = token_request(http, signed)
        if f.status(answer, 401, what) and answer.json().get("error") != "invalid_client":
            f.add(f"{what}: the error is {answer.json().get('error')!r}, not invalid_client")
        if "access_token" in answer.text or issued_tokens(platform) != before:
            f.add(f"{what}: a token was issued")
        recorded = [r for r in records_since(platform, since)
                    if r.interaction == "token" and r.outcome != "0"]
        if not recorded:
            f.add(f"{what}: the refused token request is not in the audit log")
    return f.items


def _rogue(client_id: str) -> Holder:
    now = datetime.now(UTC)
    root_key, issuing_key, leaf_key = new_key(), new_key(), new_key()
    root = build_root(root_key, ca_name("Rogue Root"), now)
    issuing = build_issuing(issuing_key, ca_name("Rogue Issuing"), root, root_key, now)
    leaf = build_leaf(leaf_key.public_key(), LeafSubject("Someone", client_id, None), issuing,
                      issuing_key, now)
    return Holder(client_id, leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()),
        [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)], "0")


def attack_credentials_that_were_good_once(target: Target) -> list[str]:
    """A token whose certificate was revoked, whose holder's licence the provider registry
    suspended, or which its client revoked: each stops at once, not at its expiry."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    documents = {"patient": f"Patient/{w.patient_a}"}
    # A revoked certificate: the pharmacist's card is reported stolen.
    token, _, chain = professional_credentials(platform, identifier="HP-OWASP-PHARMA",
                                               profession="pharmacist", specialty=None)
    serial = format(_serial(chain[0]), "x")
    with platform.unit_of_work() as uow:
        pki.revoke(uow, serial, "keyCompromise", datetime.now(UTC))
    attempt(f, target, "a live token of a revoked certificate", lambda: http.get(
        "/fhir/DocumentReference", params=documents, headers=bearer(token)), 401)
    # A suspended licence: the registrar suspends the physician through the API.
    live = w.doctor.headers
    practitioner = http.get(f"/fhir/Practitioner/{w.doctor.id}", headers=live).json()
    suspended = new_practitioner(platform.directory.systems, identifier="HP-OWASP-A",
                                 family="HP-OWASP-A", given=["Theo"], licence_status="suspended")
    changed = http.put(f"/fhir/Practitioner/{w.doctor.id}", headers=w.registrar,
                       json={**suspended, "id": practitioner["id"]})
    if changed.status_code != 200:
        f.add(f"the registrar could not suspend the licence: {changed.text[:200]}")
    attempt(f, target, "a live token of a suspended professional", lambda: http.get(
        "/fhir/DocumentReference", params=documents, headers=live), 401,
        secrets=[w.report_a])
    # A token its client revoked (RFC 7009), after another client (the stranger's card) and an
    # unauthenticated caller tried to revoke it and were refused (§2.1).
    other = w.doctor_b.headers
    victim = other["Authorization"].removeprefix("Bearer ")

    def revoking(pro: Any, identifier: str) -> dict[str, str]:
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(
            Holder(identifier, pro.key_pem, pro.chain, ""), platform,
            aud=f"{platform.tokens.issuer}/oauth/revoke")}

    for what, form, expected in (
            ("no client authentication", {}, 401),
            ("another client's assertion", revoking(w.stranger, "HP-OWASP-STRANGER"), 400)):
        tried = http.post("/oauth/revoke", data={"token": victim, **form})
        if tried.status_code != expected or "error" not in tried.json():
            f.add(f"revoking another's token with {what}: {tried.status_code} {tried.text[:200]}")
    if http.get("/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_b}"},
                headers=other).status_code != 200:
        f.add("a refused revocation stopped the token all the same")
    revoked = http.post("/oauth/revoke", data={"token": victim,
                                               **revoking(w.doctor_b, "HP-OWASP-B")})
    if revoked.status_code != 200:
        f.add(f"revocation failed: {revoked.text[:200]}")
    attempt(f, target, "a revoked token", lambda: http.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_b}"},
        headers=other), 401)
    return f.items


def _serial(der: bytes) -> int:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def attack_tokens_in_urls(target: Target) -> list[str]:
    """A genuine token in the query string (RFC 6750 §2.3) or a form body: refused on every
    path, and kept nowhere, neither in the answer nor in the audit log."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    token = w.doctor.headers["Authorization"].removeprefix("Bearer ")
    since = audit_sizes(platform)
    for what, send in [
        ("FHIR search", lambda: http.get("/fhir/DocumentReference", params={
            "patient": f"Patient/{w.patient_a}", "access_token": token})),
        ("FHIR search, the name percent-encoded", lambda: http.get(
            f"/fhir/DocumentReference?patient=Patient/{w.patient_a}&%61ccess_token={token}")),
        ("POST _search with the token in the form", lambda: http.post(
            "/fhir/DocumentReference/_search",
            data={"patient": f"Patient/{w.patient_a}", "access_token": token})),
        ("the audit entries", lambda: http.get("/audit/entries", params={
            "start": "0", "end": "5", "access_token": token})),
    ]:
        attempt(f, target, what, send, 401, secrets=[token, w.report_a],
                recorded=what != "the audit entries")
    for record in records_since(platform, since):
        if token in record.canonical().decode():
            f.add(f"the audit log kept the token ({record.interaction})")
    return f.items


def attack_guessing_passwords_and_second_factors(target: Target) -> list[str]:
    """An attacker who knows a patient's login guesses the password, or (knowing it) the
    six-digit code, at the portal: after five failures the account backs off with 429 and
    Retry-After, the right answer is refused while it does, and every attempt is recorded. The
    accounts' clock is stopped, so that the throttle does not depend on the machine's speed."""
    f, platform = Findings(), target.platform
    accounts = platform.accounts
    clock = accounts.clock
    frozen = datetime.now(UTC)
    accounts.clock = lambda: frozen
    try:
        with target.client("198.51.100.99") as browser:
            for seq, what in [(3, "passwords"), (4, "second factors")]:
                account = enrol_patient(platform, seq, family=f"Guessed{seq}",
                                        login=f"guessed{seq}@example.lu")
                password, code = ((account.password, "000000") if what == "second factors"
                                  else ("wrong horse battery staple", account.totp.at(frozen)))
                since = audit_sizes(platform)
                statuses = [_sign_in(browser, account.login, password, code) for _ in range(7)]
                seen = [status for status, _ in statuses]
                if seen != [401] * 5 + [429] * 2 or not all(retry for _, retry in statuses[5:]):
                    f.add(f"guessing {what}: answered {seen} (expected 401 five times, then 429 "
                          "with Retry-After)")
                right = _sign_in(browser, account.login, account.password,
                                 account.totp.at(frozen))
                if right[0] != 429:
                    f.add(f"guessing {what}: the right answer got {right[0]} while throttled")
                failures = [r for r in records_since(platform, since)
                            if r.kind == "authentication" and r.outcome != "0"]
                if len(failures) != 8:
                    f.add(f"guessing {what}: {len(failures)} failures recorded, not 8")
    finally:
        accounts.clock = clock
    return f.items


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _sign_in(browser: Any, login: str, password: str, code: str) -> tuple[int, str | None]:
    page = browser.get("/login")
    csrf = _CSRF.search(page.text)
    assert csrf, page.text[:200]
    answer = browser.post("/login", data={"login": login, "password": password, "code": code,
                                          "csrf": csrf.group(1)}, follow_redirects=False)
    return answer.status_code, answer.headers.get("retry-after")


ATTACKS = [
    attack_forged_access_tokens,
    attack_forged_and_replayed_client_assertions,
    attack_credentials_that_were_good_once,
    attack_tokens_in_urls,
    attack_guessing_passwords_and_second_factors,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_authentication_cannot_be_forged_replayed_or_guessed(attack: Any,
                                                             target: Target) -> None:
    assert attack(target) == []
