"""Secure messaging, on a unit of work in memory with the platform's real PKI: professionals
enrol their own RSA keys with a CSR, and send S/MIME messages their client composes
(`carevault.client.messaging`); the service accepts only what is encrypted to valid platform
encryption certificates of the sender and of every recipient, records the envelope before it
delivers, and records a refusal with its reason, never the content. The mailboxes, the IMAP
passwords and the audit log are recording stand-ins written here."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carevault.adapters.pki.x509_authority import LEAF_LIFETIME
from carevault.api.access import TokenBucketLimiter
from carevault.client import messaging as client
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import (
    BusinessRuleViolation,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
)
from carevault.domain.messaging import (
    MAX_RECIPIENTS,
    DuplicateRecipient,
    TooManyRecipients,
    message_digest,
)
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import messaging, pki
from carevault.services.audit_log import AuditUnavailable
from carevault.services.messaging import MessagingContext, MessagingService, Sender
from support.builders import URN_SYSTEMS, hospital
from support.fake_messaging import messaging_unit_of_work
from support.fake_professionals import FakeProfessionalDirectory
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SENDER_RATE = 2  # messages a minute, on a limiter whose clock never moves
SYSTEMS = URN_SYSTEMS
DOMAIN = "msg.carevault.test"
BODY = "Patient seen today: suspected appendicitis, please call me."


@functools.cache
def messaging_key(name: str) -> tuple[bytes, bytes]:
    """A professional's messaging key and CSR, made once per test run (RSA 3072 is slow)."""
    return client.keygen(name)


def rsa_key(name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(messaging_key(name)[0], None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


class RecordingMailboxes:
    """The maildir stand-in: what was delivered to which mailbox, which mailboxes were made."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.ensured: list[str] = []

    def deliver(self, local_part: str, message: bytes) -> str:
        self.delivered.append((local_part, message))
        return f"{local_part}/new/{len(self.delivered)}"

    def ensure(self, local_part: str) -> object:
        self.ensured.append(local_part)
        return local_part


class RecordingPasswords:
    """The IMAP passwords stand-in: a new secret per call, remembered per mailbox."""

    def __init__(self) -> None:
        self.issued: list[tuple[str, str]] = []

    def issue(self, local_part: str) -> str:
        secret = f"secret-{len(self.issued) + 1}"
        self.issued.append((local_part, secret))
        return secret


class RecordingAudit:
    """The audit log's append, as the service is given it: keeps each batch, and how many
    messages had been delivered when it was called; or fails as an unreachable log does."""

    def __init__(self, mailboxes: RecordingMailboxes) -> None:
        self.mailboxes = mailboxes
        self.records: list[AuditRecord] = []
        self.delivered_before: list[int] = []
        self.down = False

    def __call__(self, records: Sequence[AuditRecord]) -> object:
        if self.down:
            raise AuditUnavailable("the audit log could not record this access")
        self.delivered_before.append(len(self.mailboxes.delivered))
        self.records += records
        return list(range(len(records)))


@dataclass(frozen=True)
class Person:
    practitioner_id: str
    address: str
    card_chain: list[bytes]  # DER, leaf first
    card: x509.Certificate
    card_key: ec.EllipticCurvePrivateKey
    encryption: x509.Certificate
    encryption_serial: str


PEOPLE = {"anne": ("pr-anne", "HP-1001", "Anne"), "paul": ("pr-paul", "HP-1002", "Paul"),
          "lea": ("pr-lea", "HP-1003", "Lea")}


@dataclass
class World:
    uow: FakeUnitOfWork = field(default_factory=messaging_unit_of_work)
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.pki = pki.PkiContext(SYSTEMS, b"ca password", self.clock)
        self.ctx = MessagingContext(self.pki, DOMAIN)
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        self.directory.set_organization("org-1", hospital(SYSTEMS))
        for practitioner_id, identifier, family in PEOPLE.values():
            self.directory.add_professional(practitioner_id, new_practitioner(
                SYSTEMS, identifier=identifier, family=family, given=["Dr"]))
            self.directory.add_role(f"role-{practitioner_id}", practitioner_id, "org-1")
        self.mailboxes = RecordingMailboxes()
        self.audit = RecordingAudit(self.mailboxes)
        self.rate = TokenBucketLimiter(SENDER_RATE, clock=lambda: 0.0)
        self.service = MessagingService(lambda: self.uow, self.ctx,  # type: ignore[arg-type,return-value]
                                        self.mailboxes, self.audit, sender_rate=self.rate.check)
        self.people = {name: self.enrol(name) for name in PEOPLE}

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    def enrol(self, name: str) -> Person:
        practitioner_id = PEOPLE[name][0]
        delivered: list[pki.Credentials] = []
        with self.uow:
            card = pki.issue_practitioner_certificate(self.uow, self.pki, practitioner_id,
                                                      delivered.append)
        with self.uow:
            record = messaging.issue_encryption_certificate(
                self.uow, self.ctx, practitioner_id, messaging_key(name)[1])
        card_certificate = x509.load_pem_x509_certificate(card.certificate_pem.encode())
        issuing = x509.load_pem_x509_certificate(delivered[0].chain_pem.encode())
        key = serialization.load_pem_private_key(delivered[0].private_key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return Person(practitioner_id, f"{PEOPLE[name][1].lower()}@{DOMAIN}",
                      [c.public_bytes(serialization.Encoding.DER)
                       for c in (card_certificate, issuing)],
                      card_certificate, key, messaging.encryption_certificate(record),
                      record.serial)

    def sender(self, name: str) -> Sender:
        return self.service.authenticate(self.people[name].card_chain, "10.0.0.7")

    def compose(self, sender: str, to: Sequence[str], *,
                encrypted_to: Sequence[x509.Certificate] | None = None,
                copy: bool = True) -> bytes:
        author = self.people[sender]
        targets = ([self.people[n].encryption for n in to] if encrypted_to is None
                   else list(encrypted_to))
        return client.compose(
            sender=author.address, signer_certificate=author.card, signer_key=author.card_key,
            recipients=[(f"r{i}@{DOMAIN}", c) for i, c in enumerate(targets)],
            subject="Avis", body=BODY, own_certificate=author.encryption if copy else None,
            now=self.clock())

    def suspend(self, practitioner_id: str) -> None:
        resource = self.directory.practitioner_resources[practitioner_id]
        resource["extension"] = [{**resource["extension"][0], "valueCode": "suspended"}]

    def refused_submission(self, sender: Sender, to: Sequence[str], message: bytes,
                           error: type[Exception] = InvalidInput) -> str:
        before = len(self.audit.records)
        with pytest.raises(error) as raised:
            self.service.submit(sender, to, message, "10.0.0.7")
        assert self.mailboxes.delivered == []
        [record] = self.audit.records[before:]
        assert (record.interaction, record.outcome, record.entity_id) == (
            "message-submit", "4", message_digest(message))
        assert record.detail["refused"] == " ".join(str(raised.value).split())[:300]
        assert BODY not in repr(record)
        return str(raised.value)


@pytest.fixture
def world() -> World:
    return World()


def address(world: World, name: str) -> str:
    return world.people[name].address


# --- encryption certificates ------------------------------------------------------------------


def test_an_encryption_certificate_carries_the_csrs_key_and_the_directorys_name_and_address(
        world: World) -> None:
    anne = world.people["anne"]
    certificate = anne.encryption
    public = certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == rsa_key("anne").public_key().public_numbers()
    # The CSR said "anne"; the subject comes from the directory.
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Dr Anne"
    emails = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.RFC822Name)
    assert emails == ["hp-1001@msg.carevault.test"]
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    stored = world.uow.pki.certificates[anne.encryption_serial]
    assert (stored.kind, stored.client_id, stored.practitioner_id, stored.organization_id) == (
        "encryption", "HP-1001", "pr-anne", None)
    assert stored.not_before == NOW and stored.not_after == NOW + LEAF_LIFETIME


def certificates_stored(world: World) -> int:
    return len(world.uow.pki.certificates)


def refused_csr(world: World, csr_pem: bytes, practitioner_id: str = "pr-anne",
                error: type[Exception] = InvalidInput) -> str:
    stored, commits = certificates_stored(world), world.uow.commits
    with world.uow, pytest.raises(error) as raised:
        messaging.issue_encryption_certificate(world.uow, world.ctx, practitioner_id, csr_pem)
    assert (certificates_stored(world), world.uow.commits) == (stored, commits)
    return str(raised.value)


def csr_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")]))
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)


def test_a_csr_that_is_not_pem_or_too_large_is_refused(world: World) -> None:
    assert refused_csr(world, b"hello") == "not a PEM certificate signing request"
    huge = messaging_key("anne")[1] + b"\n" * (16 * 1024)
    assert refused_csr(world, huge) == "a certificate signing request is at most 16 KiB"


def test_a_csr_whose_signature_does_not_verify_is_refused(world: World) -> None:
    request = x509.load_pem_x509_csr(messaging_key("paul")[1])
    der = bytearray(request.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    assert refused_csr(world, forged) == (
        "the certificate signing request's signature does not verify")


def test_only_an_rsa_key_of_3072_bits_or_more_is_certified_for_encryption(world: World) -> None:
    wanted = "an encryption key is an RSA key of at least 3072 bits"
    assert refused_csr(world, csr_of(ec.generate_private_key(ec.SECP256R1()))) == wanted
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused_csr(world, csr_of(small)) == wanted


def test_a_suspended_or_unknown_professional_gets_no_encryption_certificate(
        world: World) -> None:
    world.suspend("pr-paul")
    assert refused_csr(world, messaging_key("paul")[1], "pr-paul", BusinessRuleViolation) == (
        "Practitioner/pr-paul is not an active professional with an active licence")
    refused_csr(world, messaging_key("paul")[1], "pr-nobody", NotFound)


# --- the messaging directory ------------------------------------------------------------------


def test_an_address_names_its_professional_and_their_certificates_newest_first(
        world: World) -> None:
    world.clock.now = NOW + timedelta(days=1)
    with world.uow:
        renewed = messaging.issue_encryption_certificate(world.uow, world.ctx, "pr-paul",
                                                         messaging_key("paul")[1])
    with world.uow:
        found = messaging.recipient(world.uow, world.ctx, "<HP-1002@MSG.carevault.test>")
    assert (found.address, found.client_id, found.practitioner_id) == (
        address(world, "paul"), "HP-1002", "pr-paul")
    assert [c.serial for c in found.certificates] == [
        renewed.serial, world.people["paul"].encryption_serial]


def test_an_address_without_a_valid_encryption_certificate_cannot_receive(
        world: World) -> None:
    with world.uow, pytest.raises(NotFound) as unknown:
        messaging.recipient(world.uow, world.ctx, f"hp-9999@{DOMAIN}")
    assert str(unknown.value) == (
        f"hp-9999@{DOMAIN} has no valid encryption certificate: it cannot receive")
    with world.uow:
        pki.revoke(world.uow, world.people["paul"].encryption_serial, "keyCompromise", NOW)
    with world.uow, pytest.raises(NotFound, match="has no valid encryption certificate"):
        messaging.recipient(world.uow, world.ctx, address(world, "paul"))
    world.clock.now = NOW + LEAF_LIFETIME
    with world.uow, pytest.raises(NotFound, match="has no valid encryption certificate"):
        messaging.recipient(world.uow, world.ctx, address(world, "lea"))


def test_a_professional_no_longer_active_cannot_receive(world: World) -> None:
    world.suspend("pr-lea")
    with world.uow, pytest.raises(NotFound) as raised:
        messaging.recipient(world.uow, world.ctx, address(world, "lea"))
    assert str(raised.value) == (
        f"{address(world, 'lea')} cannot receive: not an active professional")


def test_an_address_of_another_domain_is_not_a_messaging_address(world: World) -> None:
    with world.uow, pytest.raises(InvalidInput, match="is not a messaging address of this"):
        messaging.recipient(world.uow, world.ctx, "hp-1002@gmail.com")


# --- senders ----------------------------------------------------------------------------------


def test_a_professionals_card_authenticates_them_as_a_sender(world: World) -> None:
    anne = world.people["anne"]
    sender = world.sender("anne")
    assert sender == Sender(anne.address, "pr-anne", format(anne.card.serial_number, "x"))
    assert world.audit.records == []  # a sender who is let in is not recorded here


def refused_sender(world: World, chain: list[bytes]) -> tuple[str, AuditRecord]:
    with pytest.raises(NotAuthenticated) as raised:
        world.service.authenticate(chain, "10.0.0.9")
    [record] = world.audit.records
    assert (record.kind, record.interaction, record.outcome, record.agent.network) == (
        "authentication", "message-sender", "8", "10.0.0.9")
    return str(raised.value), record


def test_an_organizations_system_certificate_may_not_send_messages(world: World) -> None:
    delivered: list[pki.Credentials] = []
    with world.uow:
        record = pki.issue_system_certificate(world.uow, world.pki, "org-1", delivered.append)
    chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER) for pem in (record.certificate_pem, delivered[0].chain_pem)]
    message, entry = refused_sender(world, chain)
    assert message == "only a professional's certificate may send messages"
    assert entry.detail == {"refused": message}


def test_a_suspended_professional_may_not_send_messages(world: World) -> None:
    world.suspend("pr-anne")
    message, entry = refused_sender(world, world.people["anne"].card_chain)
    assert message == "the sender is not an active professional"
    assert entry.detail == {"refused": message}


def test_a_revoked_card_may_not_send_messages_and_the_reason_is_recorded(world: World) -> None:
    serial = format(world.people["anne"].card.serial_number, "x")
    with world.uow:
        pki.revoke(world.uow, serial, "keyCompromise", NOW)
    message, entry = refused_sender(world, world.people["anne"].card_chain)
    assert message == (
        f"certificate {serial} was revoked on 2026-12-01T09:00:00+00:00 (keyCompromise)")
    assert entry.detail == {"refused": message}


def test_a_sender_past_their_message_rate_is_refused_and_the_refusal_recorded(
        world: World) -> None:
    anne, paul = world.sender("anne"), world.sender("paul")
    for _ in range(SENDER_RATE):
        world.service.admit_message(anne, "10.0.0.7")
    assert world.audit.records == []
    with pytest.raises(RateLimited) as raised:
        world.service.admit_message(anne, "10.0.0.7")
    world.service.admit_message(paul, "10.0.0.7")  # a bucket per sender
    [record] = world.audit.records
    assert str(raised.value) == f"{anne.address} sent too many messages; try again in 30 s"
    assert (record.interaction, record.outcome, record.entity_id, record.agent.who) == (
        "message-submit", "4", None, "Practitioner/pr-anne")
    assert record.detail["refused"] == str(raised.value)
    assert record.detail["recipients"] == ""


# --- IMAP credentials -------------------------------------------------------------------------


def test_an_imap_credential_opens_the_professionals_mailbox_and_its_secret_is_not_recorded(
        world: World) -> None:
    passwords = RecordingPasswords()
    credential = world.service.imap_credential("pr-paul", passwords)
    assert credential == messaging.ImapCredential(address(world, "paul"), "secret-1")
    assert world.mailboxes.ensured == ["hp-1002"]
    assert passwords.issued == [("hp-1002", "secret-1")]
    [record] = world.audit.records
    assert (record.stream, record.interaction, record.action, record.outcome, record.agent.who,
            record.entity_type, record.entity_id) == (
        "operator", "message-imap-credential", "U", "0", "Practitioner/pr-paul", "Mailbox",
        address(world, "paul"))
    assert "secret-1" not in repr(record)


def test_no_imap_credential_for_a_suspended_professional(world: World) -> None:
    world.suspend("pr-paul")
    passwords = RecordingPasswords()
    with pytest.raises(BusinessRuleViolation, match="is not an active professional"):
        world.service.imap_credential("pr-paul", passwords)
    assert (passwords.issued, world.mailboxes.ensured, world.audit.records) == ([], [], [])


def test_no_imap_credential_when_the_audit_log_cannot_record_it(world: World) -> None:
    world.audit.down = True
    passwords = RecordingPasswords()
    with pytest.raises(AuditUnavailable):
        world.service.imap_credential("pr-paul", passwords)
    assert (passwords.issued, world.mailboxes.ensured) == ([], [])


# --- recipients -------------------------------------------------------------------------------


def test_a_recipient_who_can_receive_is_admitted_without_a_record(world: World) -> None:
    found = world.service.admit_recipient(world.sender("anne"), address(world, "paul"), None)
    assert found.practitioner_id == "pr-paul"
    assert world.audit.records == []


def test_a_recipient_who_cannot_receive_is_refused_and_the_refusal_recorded(
        world: World) -> None:
    sender = world.sender("anne")
    for refused in (f"hp-9999@{DOMAIN}", "paul@elsewhere.example"):
        with pytest.raises(BusinessRuleViolation):
            world.service.admit_recipient(sender, refused, "10.0.0.7")
    unknown, elsewhere = world.audit.records
    assert (unknown.interaction, unknown.outcome, unknown.entity_id) == (
        "message-recipient", "4", None)
    assert unknown.detail["recipients"] == f"hp-9999@{DOMAIN}"
    assert unknown.detail["refused"] == (
        f"hp-9999@{DOMAIN} has no valid encryption certificate: it cannot receive")
    assert elsewhere.detail["refused"] == (
        "'paul@elsewhere.example' is not a messaging address of this platform")
    assert elsewhere.agent.who == "Practitioner/pr-anne"


def test_a_recipient_named_twice_is_refused_and_the_refusal_recorded(world: World) -> None:
    sender = world.sender("anne")
    paul = address(world, "paul")
    with pytest.raises(DuplicateRecipient) as raised:
        world.service.admit_recipient(sender, f" {paul.upper()}", "10.0.0.7", [paul])
    assert str(raised.value) == f"{paul} is already a recipient of this message"
    [record] = world.audit.records
    assert (record.interaction, record.outcome) == ("message-recipient", "4")
    assert record.detail["refused"] == str(raised.value)


def test_a_message_with_the_most_recipients_admits_no_more(world: World) -> None:
    sender = world.sender("anne")
    admitted = [f"hp-{n}@{DOMAIN}" for n in range(MAX_RECIPIENTS)]
    world.service.admit_recipient(sender, address(world, "paul"), None, admitted[1:])
    with pytest.raises(TooManyRecipients):
        world.service.admit_recipient(sender, address(world, "paul"), None, admitted)
    [record] = world.audit.records
    assert record.detail["refused"].startswith(
        f"a message has at most {MAX_RECIPIENTS} recipients")


# --- submission -------------------------------------------------------------------------------


def test_a_message_encrypted_to_its_recipients_is_recorded_then_delivered_to_each(
        world: World) -> None:
    sender = world.sender("anne")
    message = world.compose("anne", ["paul", "lea"])
    envelope = world.service.submit(sender, [address(world, "paul"), address(world, "lea")],
                                    message, "10.0.0.7")
    assert (envelope.sender, envelope.recipients, envelope.received_at, envelope.size) == (
        address(world, "anne"), (address(world, "paul"), address(world, "lea")), NOW,
        len(message))
    assert envelope.digest == message_digest(message)
    assert world.mailboxes.delivered == [("hp-1002", message), ("hp-1003", message)]
    [record] = world.audit.records
    assert world.audit.delivered_before == [0]  # recorded before anything was delivered
    assert (record.stream, record.kind, record.action, record.interaction, record.outcome,
            record.agent.who, record.agent.network, record.entity_type, record.entity_id) == (
        "clinical", "access", "C", "message-submit", "0", "Practitioner/pr-anne", "10.0.0.7",
        "Message", envelope.digest)
    assert record.detail == {
        "sender": address(world, "anne"),
        "recipients": f"{address(world, 'paul')},{address(world, 'lea')}",
        "size": str(len(message)), "sha256": envelope.digest,
        "certificate": sender.serial}
    assert BODY not in repr(record)


def test_a_message_without_the_senders_copy_is_accepted_too(world: World) -> None:
    message = world.compose("anne", ["paul"], copy=False)
    world.service.submit(world.sender("anne"), [address(world, "paul")], message, None)
    assert world.mailboxes.delivered == [("hp-1002", message)]


def test_nothing_is_delivered_when_the_audit_log_cannot_record_the_message(
        world: World) -> None:
    sender = world.sender("anne")
    world.audit.down = True
    with pytest.raises(AuditUnavailable):
        world.service.submit(sender, [address(world, "paul")], world.compose("anne", ["paul"]),
                             None)
    assert world.mailboxes.delivered == []


def test_a_plain_message_is_refused(world: World) -> None:
    plain = (f"From: {address(world, 'anne')}\r\nTo: {address(world, 'paul')}\r\n"
             f"Subject: hi\r\n\r\n{BODY}\r\n").encode()
    assert world.refused_submission(world.sender("anne"), [address(world, "paul")], plain) == (
        "the message is not S/MIME-encrypted")


def test_a_signed_only_message_is_refused(world: World) -> None:
    message = world.compose("anne", ["paul"])
    signed_only = message.replace(b"authEnveloped-data", b"signed-data")
    refusal = world.refused_submission(world.sender("anne"), [address(world, "paul")],
                                       signed_only)
    assert refusal.startswith("the message is not S/MIME-encrypted: not an S/MIME "
                              "authEnveloped-data message")


def test_a_message_larger_than_the_limit_is_refused(world: World) -> None:
    message = world.compose("anne", ["paul"])
    world.ctx = MessagingContext(world.pki, DOMAIN, max_message_bytes=len(message) - 1)
    world.service.ctx = world.ctx
    assert world.refused_submission(world.sender("anne"), [address(world, "paul")], message) == (
        f"a message is at most {len(message) - 1} bytes")


def test_a_message_has_one_to_fifty_recipients(world: World) -> None:
    sender = world.sender("anne")
    message = world.compose("anne", ["paul"])
    wanted = f"a message has 1 to {MAX_RECIPIENTS} recipients"
    assert world.refused_submission(sender, [], message) == wanted
    too_many = [address(world, "paul")] * (MAX_RECIPIENTS + 1)
    assert world.refused_submission(sender, too_many, message) == wanted
    assert world.audit.records[-1].detail["recipients"] == ",".join(too_many[:MAX_RECIPIENTS])


def test_a_message_naming_a_recipient_twice_is_refused(world: World) -> None:
    paul = address(world, "paul")
    refusal = world.refused_submission(world.sender("anne"), [paul, paul.upper()],
                                       world.compose("anne", ["paul"]))
    assert refusal == "a message names one of its recipients more than once"


def test_a_message_to_someone_who_cannot_receive_is_refused(world: World) -> None:
    world.suspend("pr-lea")
    message = world.compose("anne", ["paul", "lea"])
    refusal = world.refused_submission(
        world.sender("anne"), [address(world, "paul"), address(world, "lea")], message,
        BusinessRuleViolation)
    assert refusal == f"{address(world, 'lea')} cannot receive: not an active professional"


def test_a_message_not_encrypted_to_one_of_its_recipients_is_refused(world: World) -> None:
    message = world.compose("anne", ["paul"])
    refusal = world.refused_submission(
        world.sender("anne"), [address(world, "paul"), address(world, "lea")], message)
    assert refusal == f"the message is not encrypted to {address(world, 'lea')}"


def test_a_message_also_encrypted_to_a_platform_certificate_of_a_third_party_is_refused(
        world: World) -> None:
    people = world.people
    message = world.compose("anne", ["paul"],
                            encrypted_to=[people["paul"].encryption, people["lea"].encryption])
    refusal = world.refused_submission(world.sender("anne"), [address(world, "paul")], message)
    assert refusal == ("the message is encrypted to a certificate that is not a valid platform "
                       "encryption certificate of its sender or recipients")


def self_signed(key: rsa.RSAPrivateKey, serial: int) -> x509.Certificate:
    """A certificate of the same key and serial that this platform did not issue."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CareVault Issuing CA (dev)")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_a_message_encrypted_to_a_certificate_from_elsewhere_is_refused(world: World) -> None:
    paul = world.people["paul"]
    foreign = self_signed(rsa_key("paul"), paul.encryption.serial_number)
    message = world.compose("anne", ["paul"], encrypted_to=[paul.encryption, foreign])
    refusal = world.refused_submission(world.sender("anne"), [address(world, "paul")], message)
    assert refusal.startswith("the message is encrypted to a certificate that is not a valid")


def test_a_message_encrypted_to_a_revoked_certificate_is_refused_after_renewal(
        world: World) -> None:
    paul = world.people["paul"]
    message = world.compose("anne", ["paul"])
    with world.uow:
        pki.revoke(world.uow, paul.encryption_serial, "keyCompromise", NOW)
    with world.uow:
        messaging.issue_encryption_certificate(world.uow, world.ctx, "pr-paul",
                                               messaging_key("paul")[1])
    refusal = world.refused_submission(world.sender("anne"), [address(world, "paul")], message)
    assert refusal.startswith("the message is encrypted to a certificate that is not a valid")
