"""The professionals' sign-in to the workspace, on a unit of work in memory with the platform's
real PKI and a software authenticator (tests/support/passkeys.py): the card proves possession
of its key by signing one of our challenges, once, and gets an enrolment code, once; the code
opens a passkey's registration bound to the card certificate; the passkey signs in while that
certificate and the licence stand. Every refusal says why and leaves nothing behind but a
challenge spent."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from carevault.services.passkey_ceremony import PasskeyRefused, RelyingParty, challenge_hash
from carevault.services.tokens import TokenContext
from carevault.services.workspace_signin import (
    CARD_ENROL_PATH,
    ENROLMENT_CODE_ALPHABET,
    CardRefused,
    EnrolmentCode,
    SignedIn,
    WorkspaceSignIn,
    binding_problem,
)
from support.builders import URN_SYSTEMS, hospital
from support.fake_passkeys import FakeAccountPasskeyStore
from support.fake_professionals import FakeProfessionalDirectory, professional_unit_of_work
from support.fake_uow import FakeUnitOfWork
from support.passkeys import SoftwareAuthenticator, b64

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = URN_SYSTEMS
BASE = "http://localhost:8000"
ORIGIN = BASE
PARTY = RelyingParty("localhost", "CareVault", (ORIGIN,))
CARD_AUDIENCE = BASE + CARD_ENROL_PATH


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Card:
    """A certificate of the platform and its key, as `carevault card enrol` holds them."""

    client_id: str
    serial: str
    key_pem: bytes
    chain: list[bytes]

    def signs(self, challenge: str | None, at: datetime, **changed: Any) -> str:
        claims: dict[str, Any] = {
            "iss": self.client_id, "sub": self.client_id, "aud": CARD_AUDIENCE,
            "iat": int(at.timestamp()), "exp": int((at + timedelta(minutes=2)).timestamp()),
            "jti": uuid.uuid4().hex, "challenge": challenge, **changed}
        return pyjwt.encode({k: v for k, v in claims.items() if v is not None}, self.key_pem,
                            algorithm="ES256",
                            headers={"x5c": [base64.b64encode(d).decode() for d in self.chain]})


class World:
    def __init__(self) -> None:
        self.uow: FakeUnitOfWork = professional_unit_of_work()
        self.clock = Clock()
        self.pki = pki.PkiContext(SYSTEMS, b"ca password", self.clock)
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        self.directory.add_professional("pr-1", new_practitioner(
            SYSTEMS, identifier="HP-1", family="Tester", given=["Theo"]))
        self.directory.add_professional("pr-2", new_practitioner(
            SYSTEMS, identifier="HP-2", family="Other", given=["Olga"]))
        self.directory.set_organization("org-1", hospital(SYSTEMS))
        tokens = TokenContext(TokenSigningKey(ec.generate_private_key(ec.SECP256R1())), BASE,
                              BASE + "/oauth/token", BASE + "/fhir", self.clock)
        self.signin = WorkspaceSignIn(lambda: self.uow, tokens, PARTY, self.clock)
        self.card = self.issue(lambda uow, ctx, give: pki.issue_practitioner_certificate(
            uow, ctx, "pr-1", give))

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    @property
    def store(self) -> FakeAccountPasskeyStore:
        assert isinstance(self.uow.passkeys, FakeAccountPasskeyStore)
        return self.uow.passkeys

    def issue(self, issue: Any) -> Card:
        delivered: list[pki.Credentials] = []
        with self.uow:
            record = issue(self.uow, self.pki, delivered.append)
        chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            serialization.Encoding.DER) for pem in (record.certificate_pem,
                                                    delivered[0].chain_pem)]
        return Card(record.client_id, record.serial, delivered[0].private_key_pem, chain)

    def revoke(self, card: Card) -> None:
        with self.uow:
            pki.revoke(self.uow, card.serial, "keyCompromise", self.clock())

    def suspend(self, practitioner_id: str = "pr-1") -> None:
        resource = self.directory.practitioner_resources[practitioner_id]
        resource["extension"] = [{**resource["extension"][0], "valueCode": "suspended"}]

    def code(self, card: Card | None = None) -> EnrolmentCode:
        challenge = self.signin.card_challenge()
        return self.signin.enrol_card((card or self.card).signs(challenge, self.clock()))

    def card_refused(self, assertion: str) -> str:
        with pytest.raises(CardRefused) as error:
            self.signin.enrol_card(assertion)
        return error.value.message

    def created(self, authenticator: SoftwareAuthenticator, code: str | None = None,
                origin: str | None = None) -> str:
        options = json.loads(self.signin.registration_options(code or self.code().code))
        return json.dumps(authenticator.create(options, origin=origin))

    def enrolled(self, authenticator: SoftwareAuthenticator) -> SignedIn:
        return self.signin.register(self.created(authenticator))

    def assertion(self, authenticator: SoftwareAuthenticator, origin: str | None = None) -> str:
        options = json.loads(self.signin.sign_in_options())
        return json.dumps(authenticator.get(options, origin=origin))

    def refused(self, call: Any, *args: Any) -> str:
        with pytest.raises(PasskeyRefused) as error:
            call(*args)
        return error.value.message


@pytest.fixture
def world() -> World:
    return World()


def authenticator() -> SoftwareAuthenticator:
    return SoftwareAuthenticator(ORIGIN)


# --- the card proof --------------------------------------------------------------------------


def test_a_card_signing_our_challenge_gets_an_enrolment_code_for_its_certificate(
        world: World) -> None:
    challenge = world.signin.card_challenge()
    kept = world.store.challenges[challenge_hash(challenge)]
    assert (kept.purpose, kept.expires_at, kept.used_at) == (
        "card", NOW + timedelta(minutes=5), None)
    assert challenge not in world.store.challenges  # only its hash is kept
    enrolment = world.signin.enrol_card(world.card.signs(challenge, NOW))
    assert (enrolment.practitioner_id, enrolment.certificate_serial, enrolment.expires_at) == (
        "pr-1", world.card.serial, NOW + timedelta(minutes=10))
    assert len(enrolment.code) == 10 and set(enrolment.code) <= set(ENROLMENT_CODE_ALPHABET)
    assert world.store.challenges[challenge_hash(challenge)].used_at == NOW
    code = world.store.challenges[challenge_hash(enrolment.code)]
    assert (code.purpose, code.practitioner_id, code.certificate_serial) == (
        "enrolment", "pr-1", world.card.serial)


def test_a_card_challenge_is_answered_once_and_in_time(world: World) -> None:
    challenge = world.signin.card_challenge()
    world.signin.enrol_card(world.card.signs(challenge, NOW))
    again = world.card.signs(challenge, NOW)
    assert world.card_refused(again) == (
        "the challenge is unknown, used or expired: ask for a new one")
    # The refused assertion's jti is not spent: the refusal wrote nothing.
    assert json.loads(base64.urlsafe_b64decode(again.split(".")[1] + "==")
                      )["jti"] not in {jti for _, jti in world.uow.oauth.assertions}
    late = world.signin.card_challenge()
    world.clock.now = NOW + timedelta(minutes=5)
    assert world.card_refused(world.card.signs(late, world.clock.now)) == (
        "the challenge is unknown, used or expired: ask for a new one")
    assert world.card_refused(world.card.signs("invented", world.clock.now)) == (
        "the challenge is unknown, used or expired: ask for a new one")


def test_a_card_proof_for_another_audience_or_without_our_challenge_is_refused(
        world: World) -> None:
    challenge = world.signin.card_challenge()
    assert world.card_refused(world.card.signs(challenge, NOW, aud=BASE + "/oauth/token")) == (
        f"aud must be {CARD_AUDIENCE}")
    assert world.card_refused(world.card.signs(None, NOW)) == (
        "the assertion must carry the server's challenge")
    assert world.card_refused(world.card.signs("x" * 101, NOW)) == (
        "the assertion must carry the server's challenge")
    # None of these spent the challenge.
    assert world.store.challenges[challenge_hash(challenge)].used_at is None


def test_only_a_licensed_professionals_valid_card_enrols(world: World) -> None:
    system = world.issue(lambda uow, ctx, give: pki.issue_system_certificate(
        uow, ctx, "org-1", give))
    assert world.card_refused(system.signs(world.signin.card_challenge(), NOW)) == (
        "only a professional's card enrols a passkey")
    world.suspend()
    assert "licence" in world.card_refused(world.card.signs(world.signin.card_challenge(), NOW))
    world.revoke(world.card)
    refusal = world.card_refused(world.card.signs(world.signin.card_challenge(), NOW))
    assert refusal.startswith("the client certificate was refused: ")
    assert f"certificate {world.card.serial} was revoked" in refusal
    assert not [c for c in world.store.challenges.values() if c.purpose == "enrolment"]


# --- registration ----------------------------------------------------------------------------


def test_an_enrolment_code_opens_one_registration_bound_to_the_card(world: World) -> None:
    phone = authenticator()
    code = world.code().code
    typed = "-".join((code[:5].lower(), code[5:]))  # as a person may type it
    options = json.loads(world.signin.registration_options(typed))
    assert options["user"]["name"] == "Theo Tester"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert world.refused(world.signin.registration_options, code) == (
        "this enrolment code is unknown, used or expired")
    signed_in = world.signin.register(json.dumps(phone.create(options)))
    assert signed_in == SignedIn("pr-1", world.card.serial, b64(phone.credential_id))
    stored = world.store.get(signed_in.credential_id)
    assert stored is not None
    assert (stored.practitioner_id, stored.certificate_serial, stored.sign_count,
            stored.created_at) == ("pr-1", world.card.serial, 0, NOW)
    # The next registration excludes it.
    again = json.loads(world.signin.registration_options(world.code().code))
    assert [c["id"] for c in again["excludeCredentials"]] == [signed_in.credential_id]


def test_an_enrolment_code_expires_after_ten_minutes(world: World) -> None:
    code = world.code().code
    world.clock.now = NOW + timedelta(minutes=10)
    assert world.refused(world.signin.registration_options, code) == (
        "this enrolment code is unknown, used or expired")
    assert world.refused(world.signin.registration_options, "ABCDEFGHJK") == (
        "this enrolment code is unknown, used or expired")


def test_a_card_revoked_after_its_code_was_given_registers_nothing(world: World) -> None:
    code = world.code().code
    world.revoke(world.card)
    assert world.refused(world.signin.registration_options, code) == (
        "the card certificate was revoked")
    # Revoked between the options and the credential: nothing is stored either.
    world.card = world.issue(lambda uow, ctx, give: pki.issue_practitioner_certificate(
        uow, ctx, "pr-1", give))
    created = world.created(authenticator())
    world.suspend()
    assert world.refused(world.signin.register, created) == (
        "the professional's licence is not active")
    assert world.store.rows == {}


def test_a_registration_not_asked_for_made_elsewhere_or_twice_is_refused(
        world: World) -> None:
    stranger = authenticator()
    invented = {"rp": {"id": "localhost"}, "user": {"id": b64(b"pr-1")},
                "challenge": b64(b"not ours")}
    assert world.refused(world.signin.register, json.dumps(stranger.create(invented))) == (
        "this registration was not asked for, or is too late")
    elsewhere = world.created(authenticator(), origin="https://evil.example")
    assert world.refused(world.signin.register, elsewhere).startswith(
        "the passkey does not verify: ")
    phone = authenticator()
    world.enrolled(phone)
    assert world.refused(world.signin.register, world.created(phone)) == (
        "this passkey is already enrolled")
    assert list(world.store.rows) == [b64(phone.credential_id)]


# --- signing in ------------------------------------------------------------------------------


def test_an_enrolled_passkey_signs_in_once_per_challenge(world: World) -> None:
    phone = authenticator()
    world.enrolled(phone)
    world.clock.now = NOW + timedelta(minutes=1)
    assertion = world.assertion(phone)
    assert world.signin.sign_in(assertion) == SignedIn("pr-1", world.card.serial,
                                                       b64(phone.credential_id))
    stored = world.store.get(b64(phone.credential_id))
    assert stored is not None
    assert (stored.sign_count, stored.last_used_at) == (1, NOW + timedelta(minutes=1))
    assert world.refused(world.signin.sign_in, assertion) == (
        "this sign-in was not asked for, or is too late")
    late = world.assertion(phone)
    world.clock.now += timedelta(minutes=5)
    assert world.refused(world.signin.sign_in, late) == (
        "this sign-in was not asked for, or is too late")


def test_a_passkey_not_enrolled_here_or_used_elsewhere_signs_no_one_in(world: World) -> None:
    phone = authenticator()
    world.enrolled(phone)
    assert world.refused(world.signin.sign_in, world.assertion(authenticator())) == (
        "this passkey is not enrolled here")
    assert world.refused(world.signin.sign_in, world.assertion(
        phone, origin="https://evil.example")).startswith("the passkey does not verify: ")
    assert world.refused(world.signin.sign_in, "{}") == "the credential has no clientDataJSON"
    stored = world.store.get(b64(phone.credential_id))
    assert stored is not None and stored.sign_count == 0 and stored.last_used_at is None


def test_a_revoked_card_an_expired_one_or_a_suspended_licence_signs_no_one_in(
        world: World) -> None:
    phone = authenticator()
    world.enrolled(phone)
    world.suspend()
    assertion = world.assertion(phone)
    assert world.refused(world.signin.sign_in, assertion) == (
        "the professional's licence is not active")
    # The challenge stays spent; the passkey's counter does not move.
    assert world.refused(world.signin.sign_in, assertion) == (
        "this sign-in was not asked for, or is too late")
    unmoved = world.store.get(b64(phone.credential_id))
    assert unmoved is not None and unmoved.sign_count == 0
    world.directory.add_professional("pr-1", new_practitioner(
        SYSTEMS, identifier="HP-1", family="Tester", given=["Theo"]))
    world.revoke(world.card)
    assert world.refused(world.signin.sign_in, world.assertion(phone)) == (
        "the card certificate was revoked")
    expired = World()
    key = authenticator()
    expired.enrolled(key)
    expired.clock.now = NOW + timedelta(days=365)
    assert expired.refused(expired.signin.sign_in, expired.assertion(key)) == (
        "the card certificate has expired")


def test_a_session_stands_only_on_the_professionals_own_card(world: World) -> None:
    other = world.issue(lambda uow, ctx, give: pki.issue_practitioner_certificate(
        uow, ctx, "pr-2", give))
    with world.uow:
        assert binding_problem(world.uow, "pr-1", world.card.serial, NOW) is None
        assert binding_problem(world.uow, "pr-1", None, NOW) == "the session is bound to no card"
        assert binding_problem(world.uow, "pr-1", other.serial, NOW) == (
            "the card certificate is not this professional's")
        assert binding_problem(world.uow, "pr-1", "abc", NOW) == (
            "the card certificate is not this professional's")
