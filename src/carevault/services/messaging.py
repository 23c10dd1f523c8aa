"""Secure messaging between professionals: encryption certificates, the messaging directory,
and the submission of S/MIME messages the platform carries but cannot read.

The platform never holds a messaging private key: a professional's client makes its RSA key
and sends a certificate signing request (`issue_encryption_certificate`); the platform signs it
with its issuing CA. A message is submitted by an authenticated professional (their client
certificate, the card key) and accepted only if it is an S/MIME ``AuthEnvelopedData`` encrypted
exclusively to valid, unrevoked encryption certificates of this platform, one at least for each
recipient (`MessagingService.submit`). What is recorded in the audit log, before the message is
accepted, is its envelope: sender, recipients, time, size, digest.

Errors: `InvalidInput` for what is not a message of the right shape, `NotAuthenticated` for a
sender who is not a valid professional, `BusinessRuleViolation` for a recipient who cannot
receive (`TooManyRecipients` and `DuplicateRecipient` among them), `RateLimited` for a sender
past their message rate, `Unavailable` when the audit log or the mailboxes cannot take it now.
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.parser import BytesHeaderParser, BytesParser
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from carevault.adapters.messaging import smime
from carevault.adapters.pki.x509_authority import (
    MIN_RSA_BITS,
    LeafSubject,
    build_encryption_leaf,
    certificate_pem,
)
from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.domain.audit import ACTION_CREATE, Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import (
    BusinessRuleViolation,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
)
from carevault.domain.messaging import (
    MAX_MESSAGE_BYTES,
    MAX_RECIPIENTS,
    DuplicateRecipient,
    Envelope,
    TooManyRecipients,
    address_of,
    identifier_of,
    message_digest,
)
from carevault.fhirmodel.directory import practitioner_entry
from carevault.services import pki
from carevault.services.directory import read_resource
from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "ENCRYPTION",
    "ImapCredential",
    "Mailboxes",
    "MessagingContext",
    "MessagingService",
    "Passwords",
    "Recipient",
    "active_practitioner",
    "issue_encryption_certificate",
    "recipient",
]

ENCRYPTION = "encryption"
_MAX_CSR_BYTES = 16 * 1024


@dataclass(frozen=True)
class MessagingContext:
    pki: pki.PkiContext
    domain: str
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Recipient:
    """A messaging address as the directory publishes it: whom to encrypt to."""

    address: str
    client_id: str
    practitioner_id: str | None
    certificates: tuple[CertificateRecord, ...]  # valid and unrevoked, newest first


class Mailboxes(Protocol):
    """Where accepted messages are delivered (`carevault.adapters.messaging.maildir`)."""

    def deliver(self, local_part: str, message: bytes) -> str: ...

    def ensure(self, local_part: str) -> object: ...


class Passwords(Protocol):
    """The IMAP server's credentials (`carevault.adapters.messaging.dovecot.ImapPasswords`)."""

    def issue(self, local_part: str) -> str: ...


@dataclass(frozen=True)
class ImapCredential:
    username: str  # the messaging address
    secret: str  # shown once; only its digest is kept


def active_practitioner(uow: UnitOfWork, ctx: MessagingContext, practitioner_id: str) -> str:
    """The identifier of an active professional with an active licence
    (`BusinessRuleViolation` otherwise, `NotFound` for no such professional)."""
    stored = read_resource(uow, "Practitioner", practitioner_id)
    entry = practitioner_entry(stored.resource, ctx.pki.systems)
    if not entry.active or entry.licence_status != "active":
        raise BusinessRuleViolation(
            f"Practitioner/{practitioner_id} is not an active professional with an active licence"
        )
    return entry.identifier


def issue_encryption_certificate(
    uow: UnitOfWork, ctx: MessagingContext, practitioner_id: str, csr_pem: bytes
) -> CertificateRecord:
    """Sign a professional's certificate signing request for an encryption certificate.

    The CSR proves the holder has the key (its signature); only its public key is used: the
    subject and the address come from the directory."""
    if len(csr_pem) > _MAX_CSR_BYTES:
        raise InvalidInput("a certificate signing request is at most 16 KiB")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput("not a PEM certificate signing request") from None
    if not valid:
        raise InvalidInput("the certificate signing request's signature does not verify")
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RSA_BITS:
        raise InvalidInput(f"an encryption key is an RSA key of at least {MIN_RSA_BITS} bits")
    identifier = active_practitioner(uow, ctx, practitioner_id)
    address = address_of(identifier, ctx.domain)
    store = uow.pki
    authorities = pki.authorities(store)
    issuing_key = pki.open_ca_key(authorities.issuing_sealed_key, ctx.pki.ca_password)
    stored = read_resource(uow, "Practitioner", practitioner_id)
    entry = practitioner_entry(stored.resource, ctx.pki.systems)
    subject = LeafSubject(
        common_name=f"{entry.given} {entry.family}".strip(),
        client_id=pki.certifiable(identifier),
    )
    now = ctx.pki.clock()
    certificate = build_encryption_leaf(
        public_key, subject, address, authorities.issuing, issuing_key, now
    )
    record = CertificateRecord(
        serial=format(certificate.serial_number, "x"),
        client_id=identifier,
        kind=ENCRYPTION,
        practitioner_id=practitioner_id,
        organization_id=None,
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=certificate_pem(certificate),
    )
    store.add_certificate(record)
    uow.commit()
    return record


def recipient(uow: UnitOfWork, ctx: MessagingContext, address: str) -> Recipient:
    """Whom an address names and where to encrypt to; `NotFound` if it cannot receive now
    (unknown, no valid encryption certificate, or no longer an active professional)."""
    local = identifier_of(address, ctx.domain)
    records = uow.pki.encryption_certificates(local, ctx.pki.clock())
    if not records:
        raise NotFound(f"{address} has no valid encryption certificate: it cannot receive")
    practitioner_id = records[0].practitioner_id
    if practitioner_id is not None:
        try:
            active_practitioner(uow, ctx, practitioner_id)
        except (BusinessRuleViolation, NotFound):
            raise NotFound(f"{address} cannot receive: not an active professional") from None
    return Recipient(
        address_of(records[0].client_id, ctx.domain),
        records[0].client_id,
        practitioner_id,
        tuple(records),
    )


@dataclass(frozen=True)
class Sender:
    address: str
    practitioner_id: str
    serial: str


class MessagingService:
    """The submission side of messaging, for the SMTP server and the HTTP API alike."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        ctx: MessagingContext,
        mailboxes: Mailboxes,
        audit: Callable[[Sequence[AuditRecord]], object],
        *,
        sender_rate: Callable[[str], None],
    ) -> None:
        """``sender_rate`` is told a sender's address at each message they begin and raises
        `RateLimited` past their rate (bootstrap hands `carevault.api.access.TokenBucketLimiter`
        of ``messaging_sender_rate_per_minute``). It has no default: without it, one stolen
        card or runaway client fills the mailboxes and the audit log as fast as they write."""
        self.units = units
        self.ctx = ctx
        self.mailboxes = mailboxes
        self.audit = audit
        self.sender_rate = sender_rate

    @property
    def domain(self) -> str:
        return self.ctx.domain

    def authenticate(self, chain_der: Sequence[bytes], network: str | None = None) -> Sender:
        """The professional a client certificate chain names (`NotAuthenticated` otherwise,
        recorded with its reason)."""
        try:
            return self._authenticate(chain_der)
        except NotAuthenticated as error:
            now = self.ctx.pki.clock()
            self.audit(
                [
                    AuditRecord(
                        stream="clinical",
                        recorded=rfc3339_ms(now),
                        kind="authentication",
                        action="E",
                        interaction="message-sender",
                        outcome="8",
                        agent=Agent(network=network),
                        detail={"refused": " ".join(str(error).split())[:300]},
                    )
                ]
            )
            raise

    def _authenticate(self, chain_der: Sequence[bytes]) -> Sender:
        with self.units() as uow:
            identity = pki.validate_client_chain(uow, chain_der, self.ctx.pki.clock())
            if identity.kind != "practitioner" or identity.practitioner_id is None:
                raise NotAuthenticated("only a professional's certificate may send messages")
            try:
                active_practitioner(uow, self.ctx, identity.practitioner_id)
            except (BusinessRuleViolation, NotFound):
                raise NotAuthenticated("the sender is not an active professional") from None
            return Sender(
                address_of(identity.client_id, self.ctx.domain),
                identity.practitioner_id,
                identity.serial,
            )

    def imap_credential(self, practitioner_id: str, passwords: Passwords) -> ImapCredential:
        """A new IMAP credential for an active professional's mailbox (created if need be);
        any older one stops working at once. Recorded in the audit log, the secret is not."""
        with self.units() as uow:
            identifier = active_practitioner(uow, self.ctx, practitioner_id)
        address = address_of(identifier, self.ctx.domain)
        local = identifier_of(address, self.ctx.domain)
        now = self.ctx.pki.clock()
        self.audit(
            [
                AuditRecord(
                    stream="operator",
                    recorded=rfc3339_ms(now),
                    kind="operator",
                    action="U",
                    interaction="message-imap-credential",
                    outcome="0",
                    agent=Agent(who=f"Practitioner/{practitioner_id}"),
                    entity_type="Mailbox",
                    entity_id=address,
                )
            ]
        )
        self.mailboxes.ensure(local)
        return ImapCredential(address, passwords.issue(local))

    def admit_message(self, sender: Sender, network: str | None) -> None:
        """A sender's ``MAIL``: `RateLimited` past their message rate, before any recipient is
        looked up or any content sent, so that a sender over it costs nothing more. A refusal is
        recorded (``message-submit``, outcome 4, no recipients yet) with its reason."""
        try:
            self.sender_rate(sender.address)
        except RateLimited as error:
            wait = error.retry_after
            reason = f"{sender.address} sent too many messages; try again in {wait} s"
            now = self.ctx.pki.clock()
            refused = Envelope(sender.address, (), now, 0, "")
            self.audit([replace(_record(refused, sender, network, now, reason), entity_id=None)])
            raise RateLimited(reason, retry_after=wait) from None

    def admit_recipient(
        self, sender: Sender, address: str, network: str | None, admitted: Sequence[str] = ()
    ) -> Recipient:
        """`check_recipient` for a sender's ``RCPT``, ``admitted`` being the addresses the
        message already has: `TooManyRecipients` once it has `MAX_RECIPIENTS` (before any
        lookup), `DuplicateRecipient` for one of them again (compared as `address_of` writes
        them, without regard to case). A refusal is recorded with its reason."""
        try:
            if len(admitted) >= MAX_RECIPIENTS:
                raise TooManyRecipients(
                    f"a message has at most {MAX_RECIPIENTS} recipients; send to the others "
                    "in another message"
                )
            found = self.check_recipient(address)
            if found.address.lower() in {a.strip().lower() for a in admitted}:
                raise DuplicateRecipient(f"{found.address} is already a recipient of this message")
            return found
        except BusinessRuleViolation as error:
            now = self.ctx.pki.clock()
            refused = Envelope(sender.address, (address[:320],), now, 0, "")
            record = _record(refused, sender, network, now, str(error))
            self.audit([replace(record, interaction="message-recipient", entity_id=None)])
            raise

    def check_recipient(self, address: str) -> Recipient:
        try:
            with self.units() as uow:
                return recipient(uow, self.ctx, address)
        except (NotFound, InvalidInput) as error:
            raise BusinessRuleViolation(str(error)) from None

    def submit(
        self, sender: Sender, recipients: Sequence[str], message: bytes, network: str | None
    ) -> Envelope:
        """Check, record and deliver one message; the caller answers only after this returns.
        A refused message is recorded too (outcome 4, with the reason), its content never."""
        try:
            return self._submit(sender, recipients, message, network)
        except (InvalidInput, BusinessRuleViolation) as error:
            refused = Envelope(
                sender=sender.address,
                recipients=tuple(recipients[:MAX_RECIPIENTS]),
                received_at=self.ctx.pki.clock(),
                size=len(message),
                digest=message_digest(message),
            )
            self.audit([_record(refused, sender, network, refused.received_at, str(error))])
            raise

    def _submit(
        self, sender: Sender, recipients: Sequence[str], message: bytes, network: str | None
    ) -> Envelope:
        now = self.ctx.pki.clock()
        if len(message) > self.ctx.max_message_bytes:
            raise InvalidInput(f"a message is at most {self.ctx.max_message_bytes} bytes")
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise InvalidInput(f"a message has 1 to {MAX_RECIPIENTS} recipients")
        named = [self.check_recipient(address) for address in recipients]
        if len({target.address for target in named}) < len(named):
            # Each would get a copy: whatever the caller let through, never two.
            raise InvalidInput("a message names one of its recipients more than once")
        der = _envelope_of(message)
        try:
            info = smime.inspect_envelope(der)
        except smime.MalformedMessage as error:
            raise InvalidInput(str(error)) from None
        if info.content_encryption != "aes256_gcm" or set(info.key_transport) != {"rsaes_oaep"}:
            raise InvalidInput("messages are encrypted with AES-256-GCM and RSA-OAEP")
        self._check_encrypted_to(sender, named, info, now)
        envelope = Envelope(
            sender=sender.address,
            recipients=tuple(r.address for r in named),
            received_at=now,
            size=len(message),
            digest=message_digest(message),
        )
        self.audit([_record(envelope, sender, network, now)])
        for target in named:
            self.mailboxes.deliver(identifier_of(target.address, self.ctx.domain), message)
        return envelope

    def _check_encrypted_to(
        self,
        sender: Sender,
        named: Sequence[Recipient],
        info: smime.EnvelopeInfo,
        now: datetime,
    ) -> None:
        serials = {int(r.serial, 16) for target in named for r in target.certificates}
        with self.units() as uow:
            issuing = pki.authorities(uow.pki).issuing
            own = uow.pki.encryption_certificates(sender.address.partition("@")[0], now)
        issuer = issuing.subject.public_bytes()
        allowed = serials | {int(r.serial, 16) for r in own}
        for found in info.recipients:
            if found.issuer != issuer or found.serial not in allowed:
                raise InvalidInput(
                    "the message is encrypted to a certificate that is not a valid platform "
                    "encryption certificate of its sender or recipients"
                )
        present = {found.serial for found in info.recipients}
        for target in named:
            if not present & {int(r.serial, 16) for r in target.certificates}:
                raise InvalidInput(f"the message is not encrypted to {target.address}")


def _envelope_of(message: bytes) -> bytes:
    """The DER of a message's ``application/pkcs7-mime; smime-type=authEnveloped-data`` body;
    `InvalidInput` for anything else (a plain, signed-only or multipart message)."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(message)
    if headers.get("Content-Type") is None:
        raise InvalidInput("the message is not S/MIME-encrypted")
    parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    try:
        return smime.pkcs7_payload(parsed, smime.AUTH_ENVELOPED)
    except smime.MalformedMessage as error:
        raise InvalidInput(f"the message is not S/MIME-encrypted: {error}") from None


def _record(
    envelope: Envelope,
    sender: Sender,
    network: str | None,
    now: datetime,
    refusal: str | None = None,
) -> AuditRecord:
    reason = {"refused": " ".join(refusal.split())[:300]} if refusal else {}
    return AuditRecord(
        stream="clinical",
        recorded=rfc3339_ms(now),
        kind="access",
        action=ACTION_CREATE,
        interaction="message-submit",
        outcome="4" if refusal else "0",
        agent=Agent(who=f"Practitioner/{sender.practitioner_id}", network=network),
        entity_type="Message",
        entity_id=envelope.digest,
        detail={
            "sender": envelope.sender,
            "recipients": ",".join(envelope.recipients),
            "size": str(envelope.size),
            "sha256": envelope.digest,
            "certificate": sender.serial,
            **reason,
        },
    )


def encryption_certificate(record: CertificateRecord) -> x509.Certificate:
    return x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))


__all__ += ["Sender", "encryption_certificate"]
