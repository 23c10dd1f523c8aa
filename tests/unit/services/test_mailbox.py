"""A professional's own mailbox over the API (`MailboxService`), on a unit of work in memory
with the platform's real PKI and real access tokens: only the mailbox's owner reaches it, with
their own card's token that may read Communication; the mailbox is the token's, never one the
caller names; a message is handed back as delivered, and deleted for good, from the owner's
mailbox only. The Maildirs are an in-memory stand-in written here."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.domain.errors import InvalidInput, NotAuthenticated, NotFound, NotPermitted
from carevault.domain.messaging import message_digest
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from carevault.services.mailbox import (
    MailboxOwner,
    MailboxService,
    NotMailboxOwner,
    StoredMessage,
)
from carevault.services.messaging import MessagingContext
from carevault.services.patient_apps import AppRequest, approve, register_app
from carevault.services.token_endpoint import TokenEndpoint
from carevault.services.tokens import ASSERTION_TYPE, TokenContext
from support.builders import URN_SYSTEMS, hospital
from support.fake_messaging import messaging_unit_of_work
from support.fake_professionals import FakeProfessionalDirectory
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = URN_SYSTEMS
BASE = "https://carevault.test"
TOKEN_URL = f"{BASE}/oauth/token"
DOMAIN = "msg.carevault.test"
ENVELOPE_DER = b"\x30\x80 an AuthEnvelopedData, opaque to the platform"
SMIME = (b"MIME-Version: 1.0\r\n"
         b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n"
         + base64.encodebytes(ENVELOPE_DER))


class Boxes:
    """The Maildirs, in memory: messages by mailbox (local part) and id."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, bytes]] = {}

    def put(self, local_part: str, message_id: str, content: bytes) -> None:
        self.held.setdefault(local_part, {})[message_id] = content

    def listing(self, local_part: str) -> list[StoredMessage]:
        return [StoredMessage(i, len(c), NOW, False)
                for i, c in sorted(self.held.get(local_part, {}).items())]

    def read(self, local_part: str, message_id: str) -> bytes | None:
        return self.held.get(local_part, {}).get(message_id)

    def remove(self, local_part: str, message_id: str) -> bool:
        return self.held.get(local_part, {}).pop(message_id, None) is not None


@dataclass(frozen=True)
class Card:
    client_id: str
    key_pem: bytes
    chain: list[bytes]  # DER, leaf first

    def assertion(self, **claims: object) -> str:
        body = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL,
                "exp": int((NOW + timedelta(minutes=2)).timestamp()), "jti": uuid.uuid4().hex,
                **claims}
        x5c = [base64.b64encode(der).decode() for der in self.chain]
        return pyjwt.encode(body, self.key_pem, algorithm="ES256", headers={"x5c": x5c})


@dataclass
class World:
    uow: FakeUnitOfWork = field(default_factory=messaging_unit_of_work)
    boxes: Boxes = field(default_factory=Boxes)

    def __post_init__(self) -> None:
        self.pki = pki.PkiContext(SYSTEMS, b"ca password", lambda: NOW)
        self.tokens = TokenContext(TokenSigningKey(ec.generate_private_key(ec.SECP256R1())),
                                   BASE, TOKEN_URL, f"{BASE}/fhir", lambda: NOW)
        self.endpoint = TokenEndpoint(lambda: self.uow, self.tokens)
        self.service = MailboxService(lambda: self.uow, self.tokens,
                                      MessagingContext(self.pki, DOMAIN), self.boxes)
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        for practitioner_id, identifier in (("pr-1", "HP-1"), ("pr-2", "HP-2")):
            self.directory.add_professional(practitioner_id, new_practitioner(
                SYSTEMS, identifier=identifier, family="Tester", given=["Theo"]))
            self.directory.add_role(f"role-{practitioner_id}", practitioner_id, "org-1")
        self.directory.set_organization("org-1", hospital(SYSTEMS))
        self.boxes.put("hp-1", "m1", SMIME)
        self.boxes.put("hp-2", "m2", b"Subject: Paul's own\r\n\r\nnot for Theo")

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    def _card(self, issue: object) -> Card:
        delivered: list[pki.Credentials] = []
        with self.uow:
            record = issue(self.uow, self.pki, delivered.append)  # type: ignore[operator]
        chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            serialization.Encoding.DER) for pem in (record.certificate_pem,
                                                    delivered[0].chain_pem)]
        return Card(record.client_id, delivered[0].private_key_pem, chain)

    def token(self, practitioner_id: str = "pr-1", scope: str = "system/*.rs") -> str:
        card = self._card(lambda uow, ctx, deliver: pki.issue_practitioner_certificate(
            uow, ctx, practitioner_id, deliver))
        return self.endpoint.issue_backend_token(
            assertion_type=ASSERTION_TYPE, assertion=card.assertion(), scope=scope).access_token

    def system_token(self) -> str:
        card = self._card(lambda uow, ctx, deliver: pki.issue_system_certificate(
            uow, ctx, "org-1", deliver))
        return self.endpoint.issue_backend_token(
            assertion_type=ASSERTION_TYPE, assertion=card.assertion(act={"sub": "HP-1"}),
            scope="system/*.rs").access_token

    def patient_token(self) -> str:
        verifier = "v" * 64
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        redirect = "https://app.example/cb"
        client_id = register_app(self.uow, "App", [redirect], NOW)
        request = AppRequest(client_id, "App", redirect, "launch/patient patient/*.rs", None,
                             challenge)
        code = approve(self.uow, request, "acc-1", "pat-1", NOW).split("code=", 1)[1]
        grant, _ = self.endpoint.exchange_code(code=code.split("&", 1)[0], redirect_uri=redirect,
                                               client_id=client_id, code_verifier=verifier)
        return grant.access_token

    def suspend(self, practitioner_id: str) -> None:
        resource = self.directory.practitioner_resources[practitioner_id]
        resource["extension"] = [{**resource["extension"][0], "valueCode": "suspended"}]


@pytest.fixture
def world() -> World:
    return World()


THEO = MailboxOwner("pr-1", f"hp-1@{DOMAIN}")


def test_a_professionals_own_card_opens_their_own_mailbox_and_writes_nothing(
        world: World) -> None:
    token = world.token()
    commits = world.uow.commits
    owner = world.service.owner_of_token(token)
    assert owner == THEO
    assert [m.id for m in world.service.messages(owner)] == ["m1"]  # not Paul's m2
    assert world.uow.commits == commits


def test_a_token_that_reads_only_communication_opens_the_mailbox(world: World) -> None:
    assert world.service.owner_of_token(world.token(scope="system/Communication.r")) == THEO


@pytest.mark.parametrize("token", ["", "not.a.token", "x" * 20_000])
def test_no_usable_token_opens_no_mailbox(world: World, token: str) -> None:
    with pytest.raises(NotAuthenticated):
        world.service.owner_of_token(token)


def test_a_suspended_professionals_token_opens_no_mailbox(world: World) -> None:
    token = world.token()
    world.suspend("pr-1")
    with pytest.raises(NotAuthenticated, match="licence is not active"):
        world.service.owner_of_token(token)


def test_a_patients_token_opens_no_mailbox(world: World) -> None:
    with pytest.raises(NotMailboxOwner, match="a professional's") as refused:
        world.service.owner_of_token(world.patient_token())
    assert refused.value.who == "account:acc-1"
    assert isinstance(refused.value, NotPermitted)


def test_a_system_acting_for_a_professional_does_not_open_their_mailbox(world: World) -> None:
    with pytest.raises(NotMailboxOwner, match="own card") as refused:
        world.service.owner_of_token(world.system_token())
    assert refused.value.who.startswith("Practitioner/pr-1 (acting system system:")


def test_a_token_that_may_not_read_communication_opens_no_mailbox(world: World) -> None:
    token = world.token(scope="system/DocumentReference.cu")
    with pytest.raises(NotMailboxOwner, match="do not allow reading Communication") as refused:
        world.service.owner_of_token(token)
    assert refused.value.who == "Practitioner/pr-1"


def test_a_message_is_handed_back_as_delivered_with_its_digest(world: World) -> None:
    fetched = world.service.fetch(THEO, "m1")
    assert fetched.content == SMIME and fetched.size == len(SMIME)
    assert fetched.digest == message_digest(SMIME) == hashlib.sha256(SMIME).hexdigest()
    assert world.service.envelope(fetched) == ENVELOPE_DER


def test_another_professionals_message_is_not_in_ones_own_mailbox(world: World) -> None:
    for message_id in ("m2", "unknown"):
        with pytest.raises(NotFound, match="your mailbox holds no such message"):
            world.service.fetch(THEO, message_id)
        with pytest.raises(NotFound):
            world.service.delete(THEO, message_id)
    assert "m2" in world.boxes.held["hp-2"]


def test_a_message_without_an_smime_envelope_is_refused_as_one(world: World) -> None:
    world.boxes.put("hp-1", "plain", b"Subject: hello\r\n\r\nin the clear")
    with pytest.raises(InvalidInput, match="holds no S/MIME envelope"):
        world.service.envelope(world.service.fetch(THEO, "plain"))


def test_deleting_a_message_removes_it_for_good_and_says_what_it_was(world: World) -> None:
    deleted = world.service.delete(THEO, "m1")
    assert (deleted.id, deleted.digest, deleted.size) == ("m1", message_digest(SMIME), len(SMIME))
    assert world.boxes.held["hp-1"] == {}
    with pytest.raises(NotFound):
        world.service.delete(THEO, "m1")


def test_a_message_gone_between_reading_and_removing_is_not_found(world: World) -> None:
    """Another client (IMAP) deleted it in between: the removal says so, not success."""
    boxes = world.boxes
    real_remove = boxes.remove

    def raced(local_part: str, message_id: str) -> bool:
        real_remove(local_part, message_id)
        return False

    boxes.remove = raced  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        world.service.delete(THEO, "m1")
