"""The client side of secure messaging, for practice systems without S/MIME of their own.

Everything secret happens here, on the professional's machine: the messaging key is made here
(`keygen`; the platform receives only a certificate signing request), a message is signed with
the professional's card key and encrypted to each recipient's encryption certificate and to the
sender's own (`compose`), and opened and checked here (`read`). The platform carries the result
and can read none of it.

`read` raises `SignatureInvalid` for a message whose signature or encryption tag does not hold
(altered); what it cannot vouch for otherwise is said in `Opened.warnings`, never silently:
``signer-revoked`` (the sender's certificate is on the CRL), ``signer-untrusted`` (not issued by
this platform's CA), ``sender-mismatch`` (the signer is not the ``From`` of the message).
"""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from carevault.adapters.messaging import smime
from carevault.adapters.messaging.smime import MalformedMessage, NotForYou, SignatureInvalid
from carevault.adapters.pki.x509_authority import MIN_RSA_BITS, client_id_from_uri

__all__ = [
    "Attachment",
    "MalformedMessage",
    "NotForYou",
    "Opened",
    "SignatureInvalid",
    "Trust",
    "compose",
    "directory_certificate",
    "keygen",
    "read",
    "receipt",
]

OUTER_SUBJECT = "Message sécurisé / secure message"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # 'application/pdf'
    data: bytes


@dataclass(frozen=True)
class Trust:
    """What a reader checks a signer against: the platform's CA chain and its current CRL
    (``GET /pki/ca`` and ``GET /pki/crl``)."""

    issuing: x509.Certificate
    crl: x509.CertificateRevocationList | None = None

    @classmethod
    def from_files(cls, chain_pem: bytes, crl_der: bytes | None) -> Trust:
        issuing = x509.load_pem_x509_certificates(chain_pem)[0]
        crl = x509.load_der_x509_crl(crl_der) if crl_der else None
        if crl is not None:
            public_key = issuing.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or not (
                crl.is_signature_valid(public_key)
            ):
                raise ValueError("the CRL is not signed by the platform's issuing CA")
        return cls(issuing, crl)


@dataclass(frozen=True)
class Opened:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    sent_at: datetime | None
    body: str
    attachments: tuple[Attachment, ...]
    signer: x509.Certificate
    receipt_requested: bool
    message_id: str
    warnings: tuple[str, ...] = field(default=())
    receipt_for: str | None = None  # a read receipt: the Message-ID of the message it reports


def keygen(common_name: str) -> tuple[bytes, bytes]:
    """A new RSA messaging key (PKCS #8 PEM, for a 0600 file) and its CSR (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def compose(
    *,
    sender: str,
    signer_certificate: x509.Certificate,
    signer_key: ec.EllipticCurvePrivateKey,
    recipients: Sequence[tuple[str, x509.Certificate]],
    subject: str,
    body: str,
    attachments: Sequence[Attachment] = (),
    own_certificate: x509.Certificate | None = None,
    receipt_requested: bool = False,
    now: datetime,
) -> bytes:
    """The message as sent (RFC 5322 bytes): signed, then encrypted to every recipient's
    certificate and to ``own_certificate`` (the sender's copy) if given."""
    addresses = [address for address, _ in recipients]
    message_id = email.utils.make_msgid(domain=sender.partition("@")[2] or None)
    inner = EmailMessage(policy=email.policy.SMTP)
    inner["From"] = sender
    inner["To"] = ", ".join(addresses)
    inner["Subject"] = subject
    inner["Date"] = email.utils.format_datetime(now)
    inner["Message-ID"] = message_id
    if receipt_requested:
        inner["Disposition-Notification-To"] = sender
    inner.set_content(body, cte="quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        inner.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    targets = [certificate for _, certificate in recipients]
    if own_certificate is not None:
        targets.append(own_certificate)
    return _protect(inner, signer_certificate, signer_key, targets)


def _protect(
    inner: Message,
    signer_certificate: x509.Certificate,
    signer_key: ec.EllipticCurvePrivateKey,
    targets: Sequence[x509.Certificate],
) -> bytes:
    """Sign ``inner`` and envelope it to ``targets``; the outer headers say only who and when."""
    signed = smime.sign(inner.as_bytes(), signer_certificate, signer_key)
    signed_part = smime.pkcs7_part(signed, smime.SIGNED).as_bytes()
    outer = smime.pkcs7_part(smime.envelope(signed_part, targets), smime.AUTH_ENVELOPED)
    outer["From"] = str(inner["From"])
    outer["To"] = str(inner["To"])
    outer["Subject"] = OUTER_SUBJECT
    outer["Date"] = str(inner["Date"])
    outer["Message-ID"] = str(inner["Message-ID"])
    outer["MIME-Version"] = "1.0"
    # Headers first, as a mail client expects them.
    ordered = EmailMessage(policy=email.policy.SMTP)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        ordered[name] = outer[name]
    for name in ("Content-Type", "Content-Disposition", "Content-Transfer-Encoding"):
        ordered[name] = outer[name]
    ordered.set_payload(outer.get_payload())
    return ordered.as_bytes()


def _signer_address_ok(signer: x509.Certificate, sender: str) -> bool:
    try:
        names = signer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    ids = {
        client_id_from_uri(uri) for uri in names.get_values_for_type(x509.UniformResourceIdentifier)
    }
    local = sender.partition("@")[0].lower()
    return any(found is not None and found.lower() == local for found in ids)


def directory_certificate(address: str, pems: Sequence[bytes], trust: Trust) -> x509.Certificate:
    """The certificate to encrypt to for ``address``, of those the directory published (newest
    first): the first issued by the platform's CA, naming ``address``, and not on the CRL. The
    client checks rather than trusts the answer (`ValueError` if none holds)."""
    for pem in pems:
        try:
            certificate = x509.load_pem_x509_certificate(pem)
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (ValueError, x509.ExtensionNotFound):
            continue
        emails = {e.lower() for e in names.value.get_values_for_type(x509.RFC822Name)}
        if address.lower() not in emails or not isinstance(
            certificate.public_key(), rsa.RSAPublicKey
        ):
            continue
        warnings = _trust_warnings(certificate, trust)
        if not warnings:
            return certificate
    raise ValueError(f"{address}: no certificate published for it is a valid platform one")


def _trust_warnings(signer: x509.Certificate, trust: Trust | None) -> list[str]:
    if trust is None:
        return ["signer-untrusted"]
    warnings = []
    public_key = trust.issuing.public_key()
    try:
        if signer.issuer != trust.issuing.subject or not isinstance(
            public_key, ec.EllipticCurvePublicKey
        ):
            raise InvalidSignature
        signer.verify_directly_issued_by(trust.issuing)
    except (InvalidSignature, ValueError, TypeError):
        warnings.append("signer-untrusted")
    if trust.crl is not None and (
        trust.crl.get_revoked_certificate_by_serial_number(signer.serial_number) is not None
    ):
        warnings.append("signer-revoked")
    return warnings


def read(
    message: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    trust: Trust | None,
) -> Opened:
    """Decrypt, verify and take apart a message encrypted to ``certificate``."""
    outer = BytesParser(policy=email.policy.default).parsebytes(message)
    inner_entity = smime.open_envelope(
        smime.pkcs7_payload(outer, smime.AUTH_ENVELOPED), certificate, key
    )
    signed = smime.verify_signed(smime.pkcs7_payload(inner_entity, smime.SIGNED))
    inner = BytesParser(policy=email.policy.default).parsebytes(signed.content)
    sender = str(inner.get("From", ""))
    warnings = _trust_warnings(signed.signer, trust)
    if not _signer_address_ok(signed.signer, sender):
        warnings.append("sender-mismatch")
    body_part = inner.get_body(preferencelist=("plain", "html"))
    body = body_part.get_content() if body_part is not None else ""
    attachments = []
    for part in inner.iter_attachments():
        data = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                part.get_filename() or "attachment",
                part.get_content_type(),
                data if isinstance(data, bytes) else b"",
            )
        )
    date = inner.get("Date")
    receipt_for = None
    if inner.get_content_type() == "multipart/report":
        for part in inner.walk():
            if part.get_content_type() == "message/disposition-notification":
                fields = part.get_payload()
                if isinstance(fields, list) and fields and isinstance(fields[0], Message):
                    receipt_for = str(fields[0].get("Original-Message-ID", "")) or None
        if receipt_for is None:
            raise MalformedMessage("a report without its disposition notification")
    return Opened(
        sender=sender,
        recipients=tuple(
            address for _, address in email.utils.getaddresses([str(inner.get("To", ""))])
        ),
        subject=str(inner.get("Subject", "")),
        sent_at=email.utils.parsedate_to_datetime(str(date)) if date else None,
        body=str(body),
        attachments=tuple(attachments),
        signer=signed.signer,
        receipt_requested=inner.get("Disposition-Notification-To") is not None,
        message_id=str(inner.get("Message-ID", "")),
        warnings=tuple(warnings),
        receipt_for=receipt_for,
    )


def receipt(
    opened: Opened,
    *,
    reader: str,
    signer_certificate: x509.Certificate,
    signer_key: ec.EllipticCurvePrivateKey,
    sender_certificate: x509.Certificate,
    own_certificate: x509.Certificate | None = None,
    now: datetime,
) -> bytes:
    """A signed read receipt (RFC 8098 MDN, ``displayed``) for a message that asked for one,
    encrypted to its sender (``sender_certificate``, from the directory) and to the reader's
    own copy. It says which message was read, by whom and when, and repeats none of it."""
    if not opened.receipt_requested:
        raise ValueError("the message asked for no read receipt")
    report = MIMEMultipart(
        "report", report_type="disposition-notification", policy=email.policy.SMTP
    )
    report["From"] = reader
    report["To"] = opened.sender
    report["Subject"] = "Accusé de lecture / read receipt"
    report["Date"] = email.utils.format_datetime(now)
    report["Message-ID"] = email.utils.make_msgid(domain=reader.partition("@")[2] or None)
    report.attach(
        MIMEText(
            f"{reader} a lu votre message / has read your message {opened.message_id}.",
            "plain",
            "utf-8",
            policy=email.policy.SMTP,
        )
    )
    notification = MIMEBase("message", "disposition-notification", policy=email.policy.SMTP)
    notification.set_payload(
        "Reporting-UA: CareVault message client\r\n"
        f"Final-Recipient: rfc822;{reader}\r\n"
        f"Original-Message-ID: {opened.message_id}\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
    )
    report.attach(notification)
    targets = [sender_certificate] + ([own_certificate] if own_certificate else [])
    return _protect(report, signer_certificate, signer_key, targets)
