"""SMART Backend Services, tested as a third-party client would use them.

The client side (the signed assertion, the reading of tokens and keys) is written with PyJWT,
not with CareVault's code, so that the two JOSE implementations check each other.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.pki.x509_authority import (
    LeafSubject,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
    new_key,
)
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import CareVaultError
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.tokens import ASSERTION_TYPE, authenticate, issue_backend_token
from carevault.settings import Settings
from support.backend import Holder, assertion, get_token, holder, now, token_request
from support.builders import hospital

FHIR_JSON = {"Content-Type": "application/fhir+json"}
REMOTE = ("198.51.100.20", 4000)  # not loopback: only a token lets it in


@dataclasses.dataclass
class World:
    doctor: Holder
    colleague: Holder  # a second professional, for the suspension test
    system: Holder
    organization_id: str
    outsider_identifier: str  # a professional of no organization


@pytest.fixture
def world(platform: Platform, settings: Settings) -> World:
    units: Callable[[], SqlUnitOfWork] = platform.unit_of_work
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems, ca_password=ca_key_password(settings.key_source),
                             clock=now)
    with units() as uow:
        pki.init_pki(uow, pki_ctx)
    with units() as uow:
        org = svc.create_organization(uow, ctx, hospital(ctx.systems))
    people = [svc.NewProfessional(new_practitioner(ctx.systems, identifier=f"HP-{n}",
                                                   family=f"Weber{n}", given=["Anne"]),
                                  "physician", "cardiology", org.id if n < 3 else None)
              for n in (1, 2, 3)]
    with units() as uow:
        registered = svc.register_professionals(uow, ctx, people)
    issued: list[pki.Credentials] = []
    for practitioner, _role in registered[:2]:
        with units() as uow:
            pki.issue_practitioner_certificate(uow, pki_ctx, practitioner.id, issued.append)
    with units() as uow:
        pki.issue_system_certificate(uow, pki_ctx, org.id, issued.append)
    doctor, colleague, system = (holder(c) for c in issued)
    return World(doctor, colleague, system, org.id, "HP-3")


@pytest.fixture
def remote(platform: Platform) -> Any:
    with TestClient(platform.app, base_url="http://127.0.0.1:8000", client=REMOTE) as client:
        yield client


def fhir_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return dict(body["issue"][0])


def test_discovery_names_the_endpoints(remote: TestClient, platform: Platform) -> None:
    config = remote.get("/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == platform.tokens.token_endpoint
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["introspection_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "client_credentials" in config["grant_types_supported"]
    for key in ("introspection_endpoint", "revocation_endpoint", "jwks_uri"):
        assert config[key].startswith("http://127.0.0.1:8000/")
    assert remote.get("/.well-known/oauth-authorization-server").json() == config


def test_a_professional_obtains_a_token_and_reads_patients(
        world: World, remote: TestClient, platform: Platform) -> None:
    response = token_request(remote, assertion(world.doctor, platform))
    assert response.status_code == 200, response.text
    grant = response.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] <= 15 * 60
    assert grant["scope"] == "system/*.rs"
    # The token verifies with the published keys, read by a third-party library.
    jwk = remote.get("/.well-known/jwks.json").json()["keys"][0]
    public = pyjwt.PyJWK(jwk).key
    claims = pyjwt.decode(grant["access_token"], public, algorithms=["ES256"],
                          audience=platform.tokens.fhir_base)
    assert claims["sub"] == "HP-1"
    assert claims["fhirUser"].endswith(f"/Practitioner/{world.doctor.practitioner_id}")
    assert claims["exp"] - claims["iat"] <= 15 * 60
    read = remote.get("/fhir/Patient", headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert read.status_code == 200, read.text
    last = AuditRecord.from_canonical(platform.audit.entries(
        "clinical", platform.audit.size("clinical") - 1, platform.audit.size("clinical"))[0][1])
    assert last.agent.who == f"Practitioner/{world.doctor.practitioner_id}"
    assert last.detail == {"client_id": "HP-1"}


def test_without_a_token_a_remote_client_gets_401(world: World, remote: TestClient) -> None:
    response = remote.get("/fhir/Patient")
    issue = fhir_outcome(response, 401)
    assert issue["code"] == "login"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_expired_token_is_refused(world: World, remote: TestClient,
                                     platform: Platform) -> None:
    token = get_token(remote, world.doctor, platform)
    later = dataclasses.replace(platform.tokens, clock=lambda: now() + timedelta(minutes=6))
    with platform.unit_of_work() as uow, pytest.raises(CareVaultError, match="expired"):
        authenticate(uow, later, token)
    # The same token as the server would have issued ten minutes ago (its own key, PEM).
    claims = pyjwt.decode(token, options={"verify_signature": False})
    claims["iat"] -= 600
    claims["exp"] -= 600
    server_key = platform.tokens.key.jwk.as_pem(private=True)
    stale = pyjwt.encode(claims, server_key, algorithm="ES256",
                         headers={"kid": platform.tokens.key.kid})
    issue = fhir_outcome(remote.get("/fhir/Patient", headers={
        "Authorization": f"Bearer {stale}"}), 401)
    assert "expired" in issue["diagnostics"]


def test_an_expired_assertion_is_refused(world: World, remote: TestClient,
                                         platform: Platform) -> None:
    response = token_request(remote, assertion(world.doctor, platform, lifetime=-120))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    too_long = token_request(remote, assertion(world.doctor, platform, lifetime=3600))
    assert too_long.status_code == 401
    assert "5 minutes" in too_long.json()["error_description"]


def test_a_tampered_token_is_refused(world: World, remote: TestClient,
                                     platform: Platform) -> None:
    token = get_token(remote, world.doctor, platform)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    issue = fhir_outcome(remote.get("/fhir/Patient", headers={
        "Authorization": f"Bearer {header}.{payload}.{flipped}"}), 401)
    assert "does not verify" in issue["diagnostics"]
    forged_payload = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "==").replace(b"system/*.rs", b"system/*.cruds")
    ).decode().rstrip("=")
    fhir_outcome(remote.get("/fhir/Patient", headers={
        "Authorization": f"Bearer {header}.{forged_payload}.{signature}"}), 401)


def test_a_tampered_assertion_is_refused(world: World, remote: TestClient,
                                         platform: Platform) -> None:
    signed = assertion(world.doctor, platform)
    header, _payload, signature = signed.split(".")
    claims = pyjwt.decode(signed, options={"verify_signature": False})
    claims["sub"] = claims["iss"] = "HP-2"  # pretend to be the colleague
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    response = token_request(remote, f"{header}.{forged.rstrip('=')}.{signature}")
    assert response.status_code == 401


def test_a_certificate_from_another_ca_is_refused(world: World, remote: TestClient,
                                                  platform: Platform) -> None:
    root_key, issuing_key, leaf_key = new_key(), new_key(), new_key()
    root = build_root(root_key, ca_name("Rogue Root"), now())
    issuing = build_issuing(issuing_key, ca_name("Rogue Issuing"), root, root_key, now())
    leaf = build_leaf(leaf_key.public_key(), LeafSubject("Anne Weber1", "HP-1", None),
                      issuing, issuing_key, now())
    rogue = Holder("HP-1", leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()),
        [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)], "0")
    response = token_request(remote, assertion(rogue, platform))
    assert response.status_code == 401
    assert "certificate was refused" in response.json()["error_description"]


def test_a_key_that_is_not_the_certificates_is_refused(world: World, remote: TestClient,
                                                       platform: Platform) -> None:
    thief = dataclasses.replace(world.doctor, key_pem=ec.generate_private_key(
        ec.SECP256R1()).private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    assert token_request(remote, assertion(thief, platform)).status_code == 401


def test_a_revoked_certificate_stops_new_and_live_tokens(world: World, remote: TestClient,
                                                         platform: Platform) -> None:
    live = get_token(remote, world.doctor, platform)
    with platform.unit_of_work() as uow:
        pki.revoke(uow, world.doctor.serial, "keyCompromise", now())
    refused = token_request(remote, assertion(world.doctor, platform))
    assert refused.status_code == 401
    issue = fhir_outcome(remote.get("/fhir/Patient", headers={
        "Authorization": f"Bearer {live}"}), 401)
    assert "revoked" in issue["diagnostics"]


def test_a_reused_jti_is_refused(world: World, remote: TestClient, platform: Platform) -> None:
    signed = assertion(world.doctor, platform, jti="only-once-please")
    assert token_request(remote, signed).status_code == 200
    again = token_request(remote, signed)
    assert again.status_code == 401
    assert "replay" in again.json()["error_description"]


def test_a_suspended_professional_is_refused(world: World, remote: TestClient,
                                            platform: Platform) -> None:
    live = get_token(remote, world.colleague, platform)
    ctx = platform.directory
    suspended = new_practitioner(ctx.systems, identifier="HP-2", family="Weber2",
                                 given=["Anne"], licence_status="suspended")
    assert world.colleague.practitioner_id is not None
    with platform.unit_of_work() as uow:
        svc.update_practitioner(uow, ctx, world.colleague.practitioner_id, suspended)
    response = token_request(remote, assertion(world.colleague, platform))
    assert response.status_code == 401
    assert "licence" in response.json()["error_description"]
    fhir_outcome(remote.get("/fhir/Patient", headers={"Authorization": f"Bearer {live}"}), 401)


def test_a_system_acts_for_one_of_its_professionals(world: World, remote: TestClient,
                                                   platform: Platform) -> None:
    token = get_token(remote, world.system, platform, act={"sub": "HP-1"})
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["act"] == {"sub": world.system.client_id}
    assert claims["fhirUser"].endswith(f"/Practitioner/{world.doctor.practitioner_id}")
    assert remote.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    nobody = token_request(remote, assertion(world.system, platform))
    assert nobody.status_code == 401
    assert "act" in nobody.json()["error_description"]
    stranger = token_request(remote, assertion(world.system, platform,
                                               act={"sub": world.outsider_identifier}))
    assert stranger.status_code == 401
    assert "does not belong" in stranger.json()["error_description"]


def test_scopes_bound_the_token(world: World, remote: TestClient, platform: Platform) -> None:
    response = token_request(remote, assertion(world.doctor, platform),
                             scope="system/Practitioner.rs")
    token = response.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert remote.get("/fhir/Practitioner", headers=headers).status_code == 200
    issue = fhir_outcome(remote.get("/fhir/Patient", headers=headers), 403)
    assert "scopes" in issue["diagnostics"]
    bad = token_request(remote, assertion(world.doctor, platform), scope="admin")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_scope")
    user = token_request(remote, assertion(world.doctor, platform), scope="user/Patient.rs")
    assert (user.status_code, user.json()["error"]) == (400, "invalid_scope")


def test_an_assertion_refused_for_its_scope_is_spent(world: World, remote: TestClient,
                                                     platform: Platform) -> None:
    """RFC 7523 §3: an assertion is used once, whatever the answer; a copy of one refused for
    its scope cannot be tried again with another."""
    signed = assertion(world.doctor, platform)
    refused = token_request(remote, signed, scope="system/Patient.cu system/Organization.cu")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    again = token_request(remote, signed, scope="system/*.rs")
    assert (again.status_code, again.json()["error"]) == (401, "invalid_client")
    assert "access_token" not in again.json()


def test_a_client_asking_for_more_gets_less(world: World, remote: TestClient,
                                            platform: Platform) -> None:
    """A professional's card asking for every system scope gets a professional's: the response
    says so, and a directory write (the registered authorities') is refused by the scope."""
    response = token_request(remote, assertion(world.doctor, platform), scope="system/*.cruds")
    assert response.status_code == 200, response.text
    granted = response.json()["scope"]
    assert granted == ("system/*.rs system/DocumentReference.cu system/Encounter.c "
                       "system/Task.cu")
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert remote.get("/fhir/Practitioner", headers=headers).status_code == 200
    wider = remote.post("/fhir/Organization", headers={**headers,
                        "Content-Type": "application/fhir+json"},
                        json={"resourceType": "Organization", "name": "Not theirs"})
    issue = fhir_outcome(wider, 403)
    assert "scopes do not allow" in issue["diagnostics"]
    only_beyond = token_request(remote, assertion(world.doctor, platform),
                                scope="system/Organization.cu system/Patient.d")
    assert (only_beyond.status_code, only_beyond.json()["error"]) == (400, "invalid_scope")


def introspect(client: TestClient, holder: Holder, platform: Platform, token: str,
               **claims: Any) -> Any:
    """RFC 7662 as a resource server asks: the token, and a fresh client assertion."""
    return client.post("/oauth/introspect", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(holder, platform, **claims)})


def test_introspection_and_revocation(world: World, remote: TestClient,
                                      platform: Platform) -> None:
    token = get_token(remote, world.doctor, platform)
    # A registered resource server (a system certificate) learns about any token.
    active = introspect(remote, world.system, platform, token)
    assert active.status_code == 200, active.text
    assert active.headers["cache-control"] == "no-store"
    body = active.json()
    assert body["active"] is True
    assert body["client_id"] == "HP-1" and body["scope"] == "system/*.rs"
    # A professional's card learns about its own tokens, and nothing about anyone else's.
    own = introspect(remote, world.doctor, platform, token).json()
    assert own["active"] is True and own["client_id"] == "HP-1"
    assert introspect(remote, world.colleague, platform, token).json() == {"active": False}
    assert revoke(remote, token, world.doctor, platform).status_code == 200
    assert introspect(remote, world.system, platform, token).json() == {"active": False}
    fhir_outcome(remote.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}), 401)
    assert introspect(remote, world.system, platform, "garbage").json() == {"active": False}


def revoke(client: TestClient, token: str, holder: Holder | None, platform: Platform,
           **form: str) -> Any:
    """RFC 7009 as a confidential client asks: the token and a fresh client assertion (for the
    revocation endpoint), or what ``form`` says instead."""
    data = {"token": token, **form}
    if holder is not None:
        data |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(
            holder, platform, aud=f"{platform.tokens.issuer}/oauth/revoke")}
    return client.post("/oauth/revoke", data=data)


def test_revocation_needs_the_client_the_token_was_issued_to(
        world: World, remote: TestClient, platform: Platform) -> None:
    """RFC 7009 §2.1: no client authentication, a forged one, another client's assertion, a
    public client's id: each is refused and the token lives on; the client it was issued to
    revokes it. Another client's token is refused the same way whether it is live or not."""
    token = get_token(remote, world.doctor, platform)
    headers = {"Authorization": f"Bearer {token}"}

    def lives() -> bool:
        return remote.get("/fhir/Practitioner", headers=headers).status_code == 200

    anonymous = remote.post("/oauth/revoke", data={"token": token})
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "invalid_client")
    assert anonymous.headers["www-authenticate"].startswith("private_key_jwt")
    forged = revoke(remote, token, None, platform, client_assertion_type=ASSERTION_TYPE,
                    client_assertion="a.b.c")
    assert (forged.status_code, forged.json()["error"]) == (401, "invalid_client")
    unknown_app = revoke(remote, token, None, platform, client_id="app-0000000000000000")
    assert (unknown_app.status_code, unknown_app.json()["error"]) == (401, "invalid_client")
    claimed = revoke(remote, token, None, platform, client_id="HP-1")  # the card's id, no key
    assert (claimed.status_code, claimed.json()["error"]) == (401, "invalid_client")
    theirs = revoke(remote, token, world.colleague, platform)
    assert (theirs.status_code, theirs.json()["error"]) == (400, "unauthorized_client")
    assert "HP-1" not in theirs.text
    mismatched = revoke(remote, token, world.colleague, platform, client_id="HP-1")
    assert (mismatched.status_code, mismatched.json()["error"]) == (401, "invalid_client")
    assert lives()
    assert revoke(remote, token, world.doctor, platform).status_code == 200
    assert not lives()
    # Revoked now: the colleague is told the same as when it was live.
    again = revoke(remote, token, world.colleague, platform)
    assert (again.status_code, again.json()["error"]) == (400, "unauthorized_client")
    # An unknown or invalid token is no error for an authenticated client (§2.2).
    assert revoke(remote, "not-a-token", world.colleague, platform).status_code == 200
    size = platform.audit.size("clinical")
    entries = [AuditRecord.from_canonical(data)
               for _, data in platform.audit.entries("clinical", 0, size)]
    refused = [e for e in entries if e.interaction == "token-revocation" and e.outcome != "0"]
    assert len(refused) == 7


def test_introspection_answers_for_every_kind_of_token(world: World, remote: TestClient,
                                                       platform: Platform) -> None:
    from support.tokens import officer_headers

    officer = officer_headers(platform)["Authorization"].removeprefix("Bearer ")
    answer = introspect(remote, world.system, platform, officer)
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True and answer.json()["sub"].startswith("account:")
    acting = get_token(remote, world.system, platform, act={"sub": "HP-1"})
    body = introspect(remote, world.system, platform, acting).json()
    assert body["act"] == {"sub": world.system.client_id}


def test_introspection_needs_an_authenticated_client(world: World, remote: TestClient,
                                                     platform: Platform) -> None:
    """RFC 7662 §2.1: no token scanning by whoever asks."""
    token = get_token(remote, world.doctor, platform)
    before = platform.audit.size("clinical")
    anonymous = remote.post("/oauth/introspect", data={"token": token})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    assert "private_key_jwt" in anonymous.headers["www-authenticate"]
    assert "access_token" not in anonymous.text and token not in anonymous.text
    used = assertion(world.system, platform)
    assert remote.post("/oauth/introspect", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": used}).status_code == 200
    for data in (
        {"client_assertion_type": ASSERTION_TYPE, "client_assertion": used},  # jti replay
        {"client_assertion_type": ASSERTION_TYPE, "client_assertion": "a.b.c"},
        {"client_assertion_type": "urn:other", "client_assertion": assertion(
            world.system, platform)},
        {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(
            world.system, platform, lifetime=-300)},
    ):
        refused = remote.post("/oauth/introspect", data={"token": token, **data})
        assert refused.status_code == 401, data
        assert refused.json()["error"] == "invalid_client"
        assert refused.headers["www-authenticate"]
    # An assertion for another audience is refused; the introspection endpoint's own is fine.
    elsewhere = introspect(remote, world.system, platform, token, aud="https://elsewhere.example")
    assert elsewhere.status_code == 401
    here = introspect(remote, world.system, platform, token,
                      aud=f"{platform.tokens.issuer}/oauth/introspect")
    assert here.status_code == 200 and here.json()["active"] is True
    # A suspended professional's card introspects nothing.
    suspended = new_practitioner(platform.directory.systems, identifier="HP-2",
                                 family="Weber2", given=["Anne"], licence_status="suspended")
    assert world.colleague.practitioner_id is not None
    with platform.unit_of_work() as uow:
        svc.update_practitioner(uow, platform.directory, world.colleague.practitioner_id,
                                suspended)
    assert introspect(remote, world.colleague, platform, token).status_code == 401
    # Every attempt is in the audit log, without the token.
    entries = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    asked = [r for r in (AuditRecord.from_canonical(d) for _, d in entries)
             if r.interaction == "token-introspection"]
    assert [r.outcome for r in asked] == ["4", "0", "4", "4", "4", "4", "4", "0", "4"]
    assert asked[1].detail["client_id"] == world.system.client_id
    assert all(token.encode() not in data for _, data in entries)


def test_introspection_is_throttled_per_client(world: World, platform: Platform,
                                               settings: Settings) -> None:
    from carevault.bootstrap import build

    strict = build(settings.model_copy(update={"introspection_rate_per_minute": 2}),
                   platform.engine)
    with TestClient(strict.app, client=("198.51.100.40", 1)) as first, \
            TestClient(strict.app, client=("198.51.100.41", 1)) as second:
        token = get_token(first, world.doctor, strict)
        answers = [introspect(first, world.system, strict, token).status_code
                   for _ in range(2)]
        assert answers == [200, 200]
        held = introspect(second, world.system, strict, token)  # from another address too
        assert held.status_code == 429
        assert int(held.headers["retry-after"]) >= 1
        assert held.json()["error"] == "slow_down"
        other = introspect(second, world.doctor, strict, token)  # another client goes on
        assert other.status_code == 200 and other.json()["active"] is True


@pytest.mark.parametrize(("data", "status", "error"), [
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"grant_type": "client_credentials"}, 401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
      "client_assertion": "a.b.c", "scope": "system/*.rs"}, 401, "invalid_client"),
])
def test_malformed_token_requests(world: World, remote: TestClient, data: dict[str, str],
                                  status: int, error: str) -> None:
    response = remote.post("/oauth/token", data=data)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.headers["cache-control"] == "no-store"


def test_token_requests_must_be_forms_without_repeats(world: World, remote: TestClient) -> None:
    not_form = remote.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert not_form.json()["error"] == "invalid_request"
    repeated = remote.post("/oauth/token", content=b"grant_type=a&grant_type=b",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "twice" in repeated.json()["error_description"]


def test_every_token_request_is_audited(world: World, remote: TestClient,
                                        platform: Platform) -> None:
    before = platform.audit.size("clinical")
    get_token(remote, world.doctor, platform)
    token_request(remote, assertion(world.doctor, platform, lifetime=-300))
    records = [AuditRecord.from_canonical(d) for _, d in platform.audit.entries(
        "clinical", before, platform.audit.size("clinical"))]
    assert [(r.kind, r.interaction, r.outcome) for r in records] == [
        ("authentication", "token", "0"), ("authentication", "token", "4")]
    assert all(r.agent.network == REMOTE[0] for r in records)


@hypothesis_settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(
    st.text(max_size=300),
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                     max_size=80), min_size=1, max_size=4).map(".".join)))
def test_the_assertion_parser_never_crashes(world: World, platform: Platform,
                                           garbage: str) -> None:
    with platform.unit_of_work() as uow, pytest.raises(CareVaultError):
        issue_backend_token(uow, platform.tokens, assertion_type=ASSERTION_TYPE,
                            assertion=garbage, scope="system/*.rs")


def test_token_requests_are_throttled_per_client_and_per_address(
        world: World, platform: Platform, settings: Settings) -> None:
    from carevault.bootstrap import build

    strict = build(settings.model_copy(update={"rate_limit_per_minute": 3}), platform.engine)
    with TestClient(strict.app, client=("198.51.100.30", 1)) as first, \
            TestClient(strict.app, client=("198.51.100.31", 1)) as second:
        answers = [token_request(first, assertion(world.doctor, strict)).status_code
                   for _ in range(3)]
        assert answers == [200, 200, 200]
        # The same client from another address is still held back: the client is throttled.
        held = token_request(second, assertion(world.doctor, strict))
        assert held.status_code == 429
        assert int(held.headers["retry-after"]) >= 1
        assert held.json()["error"] == "slow_down"
        # Another client from that address may go on.
        other = token_request(second, assertion(world.colleague, strict))
        assert other.status_code == 200


def test_a_client_claimed_by_others_is_not_held_back(
        world: World, platform: Platform, settings: Settings) -> None:
    """Requests that only claim a client (its id, an assertion that does not verify) charge
    their addresses, not the client: charged for the claim, anyone could hold a hospital's
    token requests back by naming it (found by a review of resource limits)."""
    from carevault.bootstrap import build

    strict = build(settings.model_copy(update={"rate_limit_per_minute": 3}), platform.engine)
    doctor_id = world.doctor.client_id
    forged = assertion(world.doctor, strict, lifetime=-300)  # expired: it does not verify
    for address in ("198.51.100.50", "198.51.100.51"):
        with TestClient(strict.app, client=(address, 1)) as claimer:
            for _ in range(3):
                claimed = claimer.post("/oauth/token", data={
                    "grant_type": "client_credentials", "client_id": doctor_id,
                    "client_assertion_type": ASSERTION_TYPE, "client_assertion": forged,
                    "scope": "system/*.rs"})
                assert claimed.status_code == 401
    with TestClient(strict.app, client=("198.51.100.52", 1)) as real:
        assert token_request(real, assertion(world.doctor, strict)).status_code == 200


def test_a_refused_token_request_is_attributed_only_to_a_client_that_authenticated(
        world: World, remote: TestClient, platform: Platform) -> None:
    """The conformance sandbox counts a system's refused token requests against it: only
    those its client authenticated for (here a scope it may not have) name it as
    ``client_id``; one with a forged signature names the client it claims, apart
    (``claimed-client``), and `is_attempt_of` counts it against nobody."""
    from carevault.domain.conformance import is_attempt_of, is_unauthenticated_claim

    before = platform.audit.size("clinical")
    forged = assertion(world.doctor, platform)
    head, payload, _signature = forged.split(".")
    tampered = f"{head}.{payload}.{base64.urlsafe_b64encode(b'x' * 64).decode().rstrip('=')}"
    assert token_request(remote, tampered).status_code == 401
    scope = token_request(remote, assertion(world.doctor, platform), scope="system/Patient.d")
    assert (scope.status_code, scope.json()["error"]) == (400, "invalid_scope")
    entries = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    claimed, own = [r for r in (AuditRecord.from_canonical(d) for _, d in entries)
                    if r.interaction == "token"]
    client = world.doctor.client_id
    assert claimed.detail.get("claimed-client") == client and "client_id" not in claimed.detail
    assert not is_attempt_of(claimed, client) and is_unauthenticated_claim(claimed, client)
    assert own.detail.get("client_id") == client and is_attempt_of(own, client)
