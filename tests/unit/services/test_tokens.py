"""Access tokens (SMART Backend Services) and the token endpoint, on a unit of work in memory:
a real platform CA issues the client certificates, the client signs its assertions with PyJWT
(not CareVault's JOSE code), and every refusal leaves no token and no spent assertion behind;
a token is checked again on every use (revocation of the token or its certificate, a suspended
licence, expiry)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.domain.authorization import Authority
from carevault.domain.errors import InvalidInput
from carevault.domain.scopes import parse_scopes
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from carevault.services.patient_apps import AppRequest, InvalidGrant, approve, register_app
from carevault.services.pki import ClientIdentity
from carevault.services.token_endpoint import TokenEndpoint
from carevault.services.tokens import (
    ASSERTION_TYPE,
    TOKEN_LIFETIME,
    InvalidClient,
    InvalidToken,
    NotTheClients,
    TokenContext,
    authenticate,
)
from support.builders import URN_SYSTEMS, hospital
from support.fake_professionals import FakeProfessionalDirectory, professional_unit_of_work
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = URN_SYSTEMS
BASE = "https://carevault.test"
TOKEN_ENDPOINT = f"{BASE}/oauth/token"


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Card:
    """A client's certificate: its key (PEM) and chain (DER, leaf first)."""

    client_id: str
    serial: str
    key_pem: bytes
    chain: list[bytes]

    def assertion(self, **changed: Any) -> str:
        claims: dict[str, Any] = {
            "iss": self.client_id, "sub": self.client_id, "aud": TOKEN_ENDPOINT,
            "iat": int(NOW.timestamp()), "exp": int((NOW + timedelta(minutes=2)).timestamp()),
            "jti": uuid.uuid4().hex}
        key = changed.pop("key", self.key_pem)
        headers = changed.pop("headers", {
            "x5c": [base64.b64encode(der).decode() for der in self.chain]})
        claims.update(changed)
        return pyjwt.encode({k: v for k, v in claims.items() if v is not None}, key,
                            algorithm="ES256", headers=headers)


@dataclass
class World:
    uow: FakeUnitOfWork = field(default_factory=professional_unit_of_work)
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.ctx = TokenContext(TokenSigningKey(ec.generate_private_key(ec.SECP256R1())), BASE,
                                TOKEN_ENDPOINT, f"{BASE}/fhir", self.clock)
        self.endpoint = TokenEndpoint(lambda: self.uow, self.ctx)
        self.pki = pki.PkiContext(SYSTEMS, b"ca password", self.clock)
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        self.directory.add_professional("pr-1", new_practitioner(
            SYSTEMS, identifier="HP-1", family="Tester", given=["Theo"]))
        self.directory.add_professional("pr-2", new_practitioner(
            SYSTEMS, identifier="HP-2", family="Other", given=["Olga"]))
        self.directory.set_organization("org-1", hospital(SYSTEMS))
        self.directory.add_role("role-1", "pr-1", "org-1")

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    def _card(self, issue: Any) -> Card:
        delivered: list[pki.Credentials] = []
        with self.uow:
            record = issue(self.uow, self.pki, delivered.append)
        chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            serialization.Encoding.DER) for pem in (record.certificate_pem,
                                                    delivered[0].chain_pem)]
        return Card(record.client_id, record.serial, delivered[0].private_key_pem, chain)

    def card(self, practitioner_id: str = "pr-1") -> Card:
        return self._card(lambda uow, ctx, deliver: pki.issue_practitioner_certificate(
            uow, ctx, practitioner_id, deliver))

    def system(self) -> Card:
        return self._card(lambda uow, ctx, deliver: pki.issue_system_certificate(
            uow, ctx, "org-1", deliver))

    def token(self, card: Card, scope: str = "system/*.rs", **claims: Any) -> str:
        grant = self.endpoint.issue_backend_token(
            assertion_type=ASSERTION_TYPE, assertion=card.assertion(**claims), scope=scope)
        return grant.access_token

    def caller(self, token: str) -> Any:
        with self.uow:
            return authenticate(self.uow, self.ctx, token)

    def suspend(self, practitioner_id: str) -> None:
        resource = self.directory.practitioner_resources[practitioner_id]
        resource["extension"] = [{**resource["extension"][0], "valueCode": "suspended"}]


@pytest.fixture
def world() -> World:
    return World()


def test_a_professionals_card_gets_a_token_that_is_recorded_and_checked(world: World) -> None:
    card = world.card()
    assertion = card.assertion()
    grant = world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE,
                                               assertion=assertion, scope="system/*.rs")
    assert (grant.scope, grant.expires_in) == ("system/*.rs", 300)
    [stored] = world.uow.oauth.tokens.values()
    assert (stored.client_id, stored.certificate_serial, stored.subject, stored.scope) == (
        "HP-1", card.serial, "Practitioner/pr-1", "system/*.rs")
    assert (stored.issued_at, stored.expires_at) == (NOW, NOW + TOKEN_LIFETIME)
    assert grant.access_token not in repr(world.uow.oauth.tokens)
    jti = pyjwt.decode(assertion, options={"verify_signature": False})["jti"]
    assert ("HP-1", jti) in world.uow.oauth.assertions
    caller = world.caller(grant.access_token)
    assert (caller.client_id, caller.fhir_user, caller.organization, caller.acting_system,
            caller.token_id) == ("HP-1", "Practitioner/pr-1", None, None, stored.jti)
    assert caller.scopes == parse_scopes("system/*.rs")


def test_an_assertion_is_used_once(world: World) -> None:
    card = world.card()
    assertion = card.assertion()
    world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE, assertion=assertion,
                                       scope="system/*.rs")
    with pytest.raises(InvalidClient, match="already used"):
        world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE, assertion=assertion,
                                           scope="system/*.rs")
    assert len(world.uow.oauth.tokens) == 1


def _other_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


LATER = int((NOW + timedelta(minutes=2)).timestamp())


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "HP-2"}, "iss and sub"),
    ({"sub": "HP-2"}, "iss and sub"),
    ({"aud": f"{BASE}/fhir"}, "aud must be"),
    ({"aud": None}, "aud must be"),
    ({"exp": int((NOW - timedelta(minutes=2)).timestamp())}, "expired"),
    ({"exp": int((NOW + timedelta(minutes=10)).timestamp())}, "at most 5 minutes"),
    ({"exp": None}, "numeric 'exp'"),
    ({"exp": str(LATER)}, "numeric 'exp'"),
    ({"iat": int((NOW + timedelta(minutes=5)).timestamp())}, "in the future"),
    ({"jti": "short"}, "jti of 8 to 255"),
    ({"jti": None}, "jti of 8 to 255"),
    ({"key": _other_key()}, "signature does not verify"),
    ({"headers": {}}, "x5c"),
    ({"headers": {"x5c": "not a list"}}, "x5c"),
    ({"headers": {"x5c": ["***"]}}, "base64 DER"),
    ({"headers": {"x5c": [base64.b64encode(b"not a certificate").decode()]}},
     "certificate was refused"),
])
def test_a_bad_assertion_is_refused_and_leaves_nothing(
        world: World, claims: dict[str, Any], reason: str) -> None:
    card = world.card()
    commits = world.uow.commits
    with pytest.raises(InvalidClient, match=reason):
        world.token(card, **claims)
    assert world.uow.oauth.tokens == {} and world.uow.oauth.assertions == {}
    assert world.uow.commits == commits


@pytest.mark.parametrize(("assertion_type", "assertion", "reason"), [
    ("urn:ietf:params:oauth:client-assertion-type:saml2-bearer", None, "client_assertion_type"),
    (ASSERTION_TYPE, "x" * 20_000, "too large"),
    (ASSERTION_TYPE, "not.a.jws", "not a compact JWS"),
])
def test_what_is_no_client_assertion_is_refused(world: World, assertion_type: str,
                                                assertion: str | None, reason: str) -> None:
    with pytest.raises(InvalidClient, match=reason):
        world.endpoint.issue_backend_token(assertion_type=assertion_type,
                                           assertion=assertion or world.card().assertion(),
                                           scope="system/*.rs")
    assert world.uow.oauth.tokens == {} and world.uow.oauth.assertions == {}


def test_an_assertion_signed_with_another_algorithm_is_refused(world: World) -> None:
    card = world.card()
    forged = pyjwt.encode({"iss": "HP-1", "sub": "HP-1", "aud": TOKEN_ENDPOINT, "exp": LATER,
                           "jti": uuid.uuid4().hex}, "a shared secret of 32 bytes or more!",
                          algorithm="HS256",
                          headers={"x5c": [base64.b64encode(d).decode() for d in card.chain]})
    with pytest.raises(InvalidClient, match="ES256"):
        world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE, assertion=forged,
                                           scope="system/*.rs")


def test_a_revoked_certificate_or_a_suspended_licence_gets_no_token(world: World) -> None:
    card, other = world.card(), world.card("pr-2")
    with world.uow:
        pki.revoke(world.uow, card.serial, "keyCompromise", NOW)
    with pytest.raises(InvalidClient, match="revoked"):
        world.token(card)
    world.suspend("pr-2")
    with pytest.raises(InvalidClient, match="licence is not active"):
        world.token(other)
    assert world.uow.oauth.tokens == {}


def test_a_backend_gets_no_more_than_a_professionals_scopes(world: World) -> None:
    card = world.card()
    grant = world.endpoint.issue_backend_token(
        assertion_type=ASSERTION_TYPE, assertion=card.assertion(),
        scope="system/*.rs system/Patient.cu system/DocumentReference.cu")
    assert grant.scope == "system/*.rs system/DocumentReference.cu"
    for scope, reason in (("system/Patient.cu", "none of the scopes"),
                          ("user/*.rs", "system/ scopes only"),
                          ("patient/*.rs system/*.rs", "system/ scopes only")):
        with pytest.raises(InvalidInput, match=reason):
            world.token(card, scope)
    assert len(world.uow.oauth.tokens) == 1


def test_a_system_acts_for_a_professional_of_its_organization(world: World) -> None:
    system = world.system()
    token = world.token(system, act={"sub": "HP-1"})
    caller = world.caller(token)
    assert (caller.client_id, caller.fhir_user, caller.organization, caller.acting_system) == (
        system.client_id, "Practitioner/pr-1", "Organization/org-1", system.client_id)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["act"] == {"sub": system.client_id}


@pytest.mark.parametrize(("act", "reason"), [
    (None, "must name the professional"),
    ({"sub": ""}, "must name the professional"),
    ("HP-1", "must name the professional"),
    ({"sub": "HP-UNKNOWN"}, "not in the directory"),
    ({"sub": "HP-2"}, "does not belong to this organization"),
])
def test_a_system_must_act_for_a_professional_of_its_own(world: World, act: Any,
                                                          reason: str) -> None:
    system = world.system()
    with pytest.raises(InvalidClient, match=reason):
        world.token(system, act=act)
    # No token; the assertion is spent all the same (RFC 7523 §3: used once, whatever the
    # answer), so that it cannot be tried again for another professional.
    assert world.uow.oauth.tokens == {}
    assert [client for client, _ in world.uow.oauth.assertions] == [system.client_id]


def test_a_system_of_a_registered_authority_gets_its_scopes(world: World) -> None:
    system = world.system()
    with pytest.raises(InvalidInput):
        world.token(system, "system/Patient.cu", act={"sub": "HP-1"})
    with world.uow:
        world.uow.authorities.add(RegisteredAuthority(
            "auth-1", "org-1", Authority.IDENTITY_SOURCE, "urn:test:hospital", NOW, "op"))
        world.uow.commit()
    token = world.token(system, "system/Patient.cu", act={"sub": "HP-1"})
    assert world.caller(token).scopes == parse_scopes("system/Patient.cu")


# --- every use --------------------------------------------------------------------------------


def test_a_token_stops_when_it_expires(world: World) -> None:
    token = world.token(world.card())
    world.clock.now = NOW + TOKEN_LIFETIME - timedelta(seconds=1)
    world.caller(token)
    world.clock.now = NOW + TOKEN_LIFETIME
    with pytest.raises(InvalidToken, match="expired"):
        world.caller(token)


def test_a_token_stops_at_once_when_it_its_certificate_or_its_licence_is_revoked(
        world: World) -> None:
    card = world.card()
    revoked, of_revoked_card, of_suspended = world.token(card), world.token(card), None
    assert world.endpoint.revoke(revoked, "HP-1") is not None
    with pytest.raises(InvalidToken, match="token was revoked"):
        world.caller(revoked)
    world.caller(of_revoked_card)
    with world.uow:
        pki.revoke(world.uow, card.serial, "keyCompromise", NOW)
    with pytest.raises(InvalidToken, match="certificate was revoked"):
        world.caller(of_revoked_card)
    of_suspended = world.token(world.card("pr-2"))
    world.suspend("pr-2")
    with pytest.raises(InvalidToken, match="licence is not active"):
        world.caller(of_suspended)


def test_a_token_not_issued_here_opens_nothing(world: World) -> None:
    token = world.token(world.card())
    elsewhere = World()
    with pytest.raises(InvalidToken, match="does not verify"):
        elsewhere.caller(token)  # another signing key
    other_issuer = TokenContext(world.ctx.key, "https://other.test", TOKEN_ENDPOINT,
                                world.ctx.fhir_base, world.clock)
    with world.uow, pytest.raises(InvalidToken, match="not issued for this server"):
        authenticate(world.uow, other_issuer, token)
    world.uow.oauth.tokens.clear()
    with pytest.raises(InvalidToken, match="not known"):
        world.caller(token)
    for garbage in ("", "a.b.c", "x" * 20_000):
        with pytest.raises(InvalidToken):
            world.caller(garbage)


def _asker(client_id: str, kind: str) -> ClientIdentity:
    return ClientIdentity(client_id, kind, None, None, "1", NOW,
                          ec.generate_private_key(ec.SECP256R1()).public_key())


def test_introspection_tells_a_card_of_its_own_tokens_and_a_resource_server_of_any(
        world: World) -> None:
    token = world.token(world.card())
    own = world.endpoint.introspect(token, _asker("HP-1", "practitioner"))
    assert (own["active"], own["client_id"], own["sub"], own["scope"], own["token_type"]) == (
        True, "HP-1", "HP-1", "system/*.rs", "Bearer")
    assert own["fhirUser"] == f"{BASE}/fhir/Practitioner/pr-1"
    assert own["exp"] == int((NOW + TOKEN_LIFETIME).timestamp())
    assert world.endpoint.introspect(token, _asker("HP-2", "practitioner")) == {"active": False}
    assert world.endpoint.introspect(token, _asker("system:ORG-H9", "system"))["active"] is True
    world.endpoint.revoke(token, "HP-1")
    assert world.endpoint.introspect(token, _asker("HP-1", "practitioner")) == {"active": False}
    assert world.endpoint.introspect("garbage", _asker("HP-1", "practitioner")) == {
        "active": False}


def test_revoking_is_committed_once_and_an_unknown_token_is_no_error(world: World) -> None:
    token = world.token(world.card())
    jti = world.caller(token).token_id
    commits = world.uow.commits
    with pytest.raises(NotTheClients):  # another client's, whatever it asks
        world.endpoint.revoke(token, "HP-2")
    assert world.uow.oauth.tokens[jti].revoked_at is None
    assert world.endpoint.revoke(token, "HP-1") == jti
    assert world.uow.commits == commits + 1
    assert world.uow.oauth.tokens[jti].revoked_at == NOW
    world.clock.now = NOW + timedelta(minutes=1)
    assert world.endpoint.revoke(token, "HP-1") is None
    assert world.uow.oauth.tokens[jti].revoked_at == NOW  # revoked once
    with pytest.raises(NotTheClients):  # revoked or not, the same answer to another client
        world.endpoint.revoke(token, "HP-2")
    commits = world.uow.commits
    assert world.endpoint.revoke("not a token", "HP-2") is None
    assert world.uow.commits == commits


# --- the endpoint's other grants --------------------------------------------------------------


def test_authenticating_a_client_at_another_endpoint_spends_its_assertion(world: World) -> None:
    card = world.card()
    audience = f"{BASE}/oauth/introspect"
    assertion = card.assertion(aud=audience)
    commits = world.uow.commits
    identity = world.endpoint.authenticate_client(assertion_type=ASSERTION_TYPE,
                                                  assertion=assertion, audiences=(audience,))
    assert (identity.client_id, identity.kind, identity.practitioner_id, identity.serial) == (
        "HP-1", "practitioner", "pr-1", card.serial)
    assert world.uow.commits == commits + 1 and len(world.uow.oauth.assertions) == 1
    with pytest.raises(InvalidClient, match="already used"):
        world.endpoint.authenticate_client(assertion_type=ASSERTION_TYPE, assertion=assertion,
                                           audiences=(audience,))
    with pytest.raises(InvalidClient, match="aud must be"):
        world.endpoint.authenticate_client(assertion_type=ASSERTION_TYPE,
                                           assertion=card.assertion(aud=audience), audiences=())
    assert len(world.uow.oauth.assertions) == 1


def test_a_patient_apps_code_is_exchanged_for_a_token_of_that_patient(world: World) -> None:
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    redirect = "https://app.example/cb"
    client_id = register_app(world.uow, "App", [redirect], NOW)
    request = AppRequest(client_id, "App", redirect, "launch/patient patient/*.rs", None,
                         challenge)
    location = approve(world.uow, request, "acc-1", "pat-1", NOW)
    code = location.split("code=", 1)[1].split("&", 1)[0]
    grant, _ = world.endpoint.exchange_code(code=code, redirect_uri=redirect,
                                            client_id=client_id, code_verifier=verifier)
    caller = world.caller(grant.access_token)
    assert (caller.client_id, caller.fhir_user, caller.patient, caller.representative) == (
        client_id, "account:acc-1", "pat-1", False)
    [stored] = world.uow.oauth.tokens.values()
    assert (stored.subject, stored.certificate_serial) == ("account:acc-1", None)
    with pytest.raises(InvalidGrant):
        world.endpoint.exchange_code(code=code, redirect_uri=redirect, client_id=client_id,
                                     code_verifier=verifier)
    assert len(world.uow.oauth.tokens) == 1
