"""The OAuth token endpoint's use cases (`TokenEndpoint`), on a unit of work in memory: each
runs in a unit of work of its own, commits what it grants or spends, and leaves nothing behind
when it refuses; a public client is a registered patient app in service. What the grants check
is tests/unit/services/test_tokens.py's (and test_patient_apps.py's); here, what the endpoint
adds: the transaction around each."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from carevault.services.patient_apps import AppRequest, InvalidGrant, approve, register_app
from carevault.services.pki import ClientIdentity
from carevault.services.token_endpoint import TokenEndpoint
from carevault.services.tokens import (
    ASSERTION_TYPE,
    InvalidClient,
    NotTheClients,
    ScopeRefused,
    TokenContext,
)
from support.builders import URN_SYSTEMS, hospital
from support.fake_professionals import FakeProfessionalDirectory
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = URN_SYSTEMS
BASE = "https://carevault.test"
TOKEN_URL = f"{BASE}/oauth/token"
INTROSPECT_URL = f"{BASE}/oauth/introspect"
REDIRECT = "https://app.example/cb"
VERIFIER = "v" * 64


class CountingUnitOfWork(FakeUnitOfWork):
    """The fake unit of work, counting the blocks opened and closed on it."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = FakeProfessionalDirectory()
        self.opened = self.closed = 0

    def __enter__(self) -> CountingUnitOfWork:
        self.opened += 1
        super().__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.closed += 1
        super().__exit__(kind, error, trace)


@dataclass(frozen=True)
class Card:
    client_id: str
    key_pem: bytes
    chain: list[bytes]  # DER, leaf first

    def assertion(self, audience: str = TOKEN_URL) -> str:
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "exp": int((NOW + timedelta(minutes=2)).timestamp()), "jti": uuid.uuid4().hex}
        x5c = [base64.b64encode(der).decode() for der in self.chain]
        return pyjwt.encode(claims, self.key_pem, algorithm="ES256", headers={"x5c": x5c})


@dataclass
class World:
    uow: CountingUnitOfWork = field(default_factory=CountingUnitOfWork)
    units_made: int = 0

    def __post_init__(self) -> None:
        self.ctx = TokenContext(TokenSigningKey(ec.generate_private_key(ec.SECP256R1())), BASE,
                                TOKEN_URL, f"{BASE}/fhir", lambda: NOW)
        self.endpoint = TokenEndpoint(self.units, self.ctx)
        self.pki = pki.PkiContext(SYSTEMS, b"ca password", lambda: NOW)
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        directory = self.uow.directory
        assert isinstance(directory, FakeProfessionalDirectory)
        directory.add_professional("pr-1", new_practitioner(
            SYSTEMS, identifier="HP-1", family="Tester", given=["Theo"]))
        directory.set_organization("org-1", hospital(SYSTEMS))
        directory.add_role("role-1", "pr-1", "org-1")
        delivered: list[pki.Credentials] = []
        with self.uow:
            record = pki.issue_practitioner_certificate(self.uow, self.pki, "pr-1",
                                                        delivered.append)
        chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            serialization.Encoding.DER) for pem in (record.certificate_pem,
                                                    delivered[0].chain_pem)]
        self.card = Card(record.client_id, delivered[0].private_key_pem, chain)
        self.uow.opened = self.uow.closed = self.uow.commits = 0

    def units(self) -> CountingUnitOfWork:
        self.units_made += 1
        return self.uow

    def token(self, scope: str = "system/*.rs") -> str:
        return self.endpoint.issue_backend_token(
            assertion_type=ASSERTION_TYPE, assertion=self.card.assertion(),
            scope=scope).access_token

    def code(self) -> tuple[str, str]:
        """A patient app and a code its patient approved: (client id, code)."""
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(VERIFIER.encode()).digest()).decode().rstrip("=")
        with self.uow:
            client_id = register_app(self.uow, "App", [REDIRECT], NOW)
        request = AppRequest(client_id, "App", REDIRECT, "launch/patient patient/*.rs", None,
                             challenge)
        with self.uow:
            location = approve(self.uow, request, "acc-1", "pat-1", NOW)
        self.uow.opened = self.uow.closed = self.uow.commits = 0
        return client_id, location.split("code=", 1)[1].split("&", 1)[0]


@pytest.fixture
def world() -> World:
    return World()


def _asker(client_id: str) -> ClientIdentity:
    return ClientIdentity(client_id, "practitioner", "pr-1", None, "1", NOW,
                          ec.generate_private_key(ec.SECP256R1()).public_key())


def test_each_use_case_opens_one_unit_of_work_and_closes_it(world: World) -> None:
    client_id, code = world.code()
    token = world.token()
    world.endpoint.exchange_code(code=code, redirect_uri=REDIRECT, client_id=client_id,
                                 code_verifier=VERIFIER)
    world.endpoint.authenticate_client(assertion_type=ASSERTION_TYPE,
                                       assertion=world.card.assertion(INTROSPECT_URL),
                                       audiences=(INTROSPECT_URL,))
    world.endpoint.introspect(token, _asker("HP-1"))
    world.endpoint.public_client(client_id)
    world.endpoint.revoke(token, "HP-1")
    assert world.units_made == 6
    assert (world.uow.opened, world.uow.closed) == (6, 6)


def test_a_backend_token_is_committed_with_its_spent_assertion(world: World) -> None:
    assertion = world.card.assertion()
    grant = world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE,
                                               assertion=assertion, scope="system/*.rs")
    assert world.uow.commits == 1
    [stored] = world.uow.oauth.tokens.values()
    assert (stored.client_id, stored.subject, stored.scope) == (
        "HP-1", "Practitioner/pr-1", "system/*.rs")
    jti = pyjwt.decode(assertion, options={"verify_signature": False})["jti"]
    assert list(world.uow.oauth.assertions) == [("HP-1", jti)]
    assert grant.client_id == "HP-1"


def test_a_token_refused_for_its_scope_issues_nothing_but_spends_its_assertion(
        world: World) -> None:
    """RFC 7523 §3: an assertion is used once. Refused for its scope, it may not be tried
    again with another scope."""
    assertion = world.card.assertion()
    with pytest.raises(ScopeRefused) as refused:  # a professional's card never writes patients
        world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE, assertion=assertion,
                                           scope="system/Patient.cu")
    assert refused.value.client_id == "HP-1"
    assert world.uow.commits == 1 and world.uow.oauth.tokens == {}
    jti = pyjwt.decode(assertion, options={"verify_signature": False})["jti"]
    assert list(world.uow.oauth.assertions) == [("HP-1", jti)]
    with pytest.raises(InvalidClient, match="already"):
        world.endpoint.issue_backend_token(assertion_type=ASSERTION_TYPE, assertion=assertion,
                                           scope="system/*.rs")
    assert world.uow.oauth.tokens == {}


def test_authenticating_a_client_commits_its_spent_assertion_and_a_refusal_spends_none(
        world: World) -> None:
    identity = world.endpoint.authenticate_client(
        assertion_type=ASSERTION_TYPE, assertion=world.card.assertion(INTROSPECT_URL),
        audiences=(INTROSPECT_URL,))
    assert (identity.client_id, identity.practitioner_id) == ("HP-1", "pr-1")
    assert world.uow.commits == 1 and len(world.uow.oauth.assertions) == 1
    with pytest.raises(InvalidClient, match="aud must be"):
        world.endpoint.authenticate_client(
            assertion_type=ASSERTION_TYPE, assertion=world.card.assertion(f"{BASE}/elsewhere"),
            audiences=(INTROSPECT_URL,))
    assert world.uow.commits == 1 and len(world.uow.oauth.assertions) == 1
    assert world.uow.oauth.tokens == {}


def test_a_code_is_exchanged_once_for_a_committed_token_of_its_patient(world: World) -> None:
    client_id, code = world.code()
    grant, patient = world.endpoint.exchange_code(code=code, redirect_uri=REDIRECT,
                                                  client_id=client_id, code_verifier=VERIFIER)
    assert patient == "pat-1" and grant.access_token
    assert world.uow.commits == 1
    [stored] = world.uow.oauth.tokens.values()
    assert (stored.client_id, stored.subject) == (client_id, "account:acc-1")
    [used] = world.uow.apps.codes.values()
    assert used.used_at == NOW


def test_a_refused_code_exchange_leaves_the_code_unused_and_issues_nothing(
        world: World) -> None:
    client_id, code = world.code()
    with pytest.raises(InvalidGrant, match="another client, redirect URI or verifier"):
        world.endpoint.exchange_code(code=code, redirect_uri=REDIRECT, client_id=client_id,
                                     code_verifier="w" * 64)
    assert world.uow.commits == 0 and world.uow.oauth.tokens == {}
    [unused] = world.uow.apps.codes.values()
    assert unused.used_at is None


@pytest.mark.parametrize("field", ["client_id", "redirect_uri"])
def test_a_code_exchanged_with_a_non_ascii_client_or_address_is_refused_as_another(
        world: World, field: str) -> None:
    """hmac.compare_digest refuses str holding non-ASCII characters (a TypeError, a 500);
    the values are compared as bytes, so they are simply not the code's."""
    client_id, code = world.code()
    given = {"client_id": client_id, "redirect_uri": REDIRECT}
    given[field] += "\u00e9"
    with pytest.raises(InvalidGrant, match="another client, redirect URI or verifier"):
        world.endpoint.exchange_code(code=code, code_verifier=VERIFIER, **given)
    assert world.uow.oauth.tokens == {}


def test_introspection_answers_without_writing_anything(world: World) -> None:
    token = world.token()
    commits, tokens = world.uow.commits, dict(world.uow.oauth.tokens)
    answer = world.endpoint.introspect(token, _asker("HP-1"))
    assert answer["active"] is True and answer["client_id"] == "HP-1"
    assert world.endpoint.introspect(token, _asker("HP-2")) == {"active": False}
    assert world.uow.commits == commits and world.uow.oauth.tokens == tokens


def test_a_public_client_is_a_registered_patient_app_in_service(world: World) -> None:
    client_id, _ = world.code()
    assert world.endpoint.public_client(client_id) is True
    assert world.endpoint.public_client("app-unknown") is False
    assert world.endpoint.public_client("HP-1") is False  # a card's client is no public one
    app = world.uow.apps.clients[client_id]
    world.uow.apps.clients[client_id] = replace(app, disabled_at=NOW)
    with world.uow:
        world.uow.commit()
    assert world.endpoint.public_client(client_id) is False
    assert world.uow.commits == 1  # the test's own: asking writes nothing


def test_revoking_is_committed_and_another_clients_revocation_is_not(world: World) -> None:
    token = world.token()
    [jti] = world.uow.oauth.tokens
    commits = world.uow.commits
    with pytest.raises(NotTheClients):
        world.endpoint.revoke(token, "HP-2")
    assert world.uow.commits == commits and world.uow.oauth.tokens[jti].revoked_at is None
    assert world.endpoint.revoke(token, "HP-1") == jti
    assert world.uow.commits == commits + 1 and world.uow.oauth.tokens[jti].revoked_at == NOW
