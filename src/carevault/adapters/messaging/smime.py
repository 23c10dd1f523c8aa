"""S/MIME 4.0 (RFC 8551) messages: signed by the sender, then enveloped to every recipient.

The layers, from the inside out:

1. the *content*: a MIME entity (text and attachments) carrying its own ``Subject``, ``From``,
   ``To`` and ``Date`` (the outer message's subject says nothing);
2. CMS ``SignedData`` (RFC 5652) over it, encapsulated (opaque signing survives any transfer
   encoding), built with `cryptography`'s `PKCS7SignatureBuilder` from the professional's card
   key (ECDSA P-256, SHA-256), the signer's certificate included;
3. CMS ``AuthEnvelopedData`` (RFC 5083) around that, content encrypted with AES-256-GCM
   (RFC 5084, 16-byte tag) under a fresh key, wrapped for each recipient with RSAES-OAEP
   (SHA-256, MGF1-SHA-256; RFC 8017, RFC 4055) in a ``KeyTransRecipientInfo`` naming the
   recipient's encryption certificate by issuer and serial number. `cryptography` builds
   ``EnvelopedData`` only (AES-CBC, RSA PKCS #1 v1.5 key transport), so this layer is built
   with `asn1crypto`; ``openssl cms -decrypt`` reads it (OpenSSL 3).

Nothing here touches storage or the network: the server uses `inspect_envelope` to check, without
decrypting, to whom a message is encrypted; the client uses the rest.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser

from asn1crypto import algos, cms, core  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = [
    "AUTH_ENVELOPED",
    "SIGNED",
    "EnvelopeInfo",
    "MalformedMessage",
    "NotForYou",
    "Recipient",
    "SignatureInvalid",
    "Signed",
    "envelope",
    "inspect_envelope",
    "open_envelope",
    "pkcs7_part",
    "pkcs7_payload",
    "sign",
    "verify_signed",
]

AUTH_ENVELOPED = "authEnveloped-data"
SIGNED = "signed-data"
_GCM_TAG = 16
_NONCE = 12
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class MalformedMessage(ValueError):
    """Not an S/MIME message of the expected shape."""


class NotForYou(ValueError):
    """The message is not encrypted to the given certificate, or its key does not open it."""


class SignatureInvalid(ValueError):
    """The signature does not verify over the content: the message was altered or forged."""


@dataclass(frozen=True)
class Recipient:
    """A ``KeyTransRecipientInfo``'s recipient: an encryption certificate's issuer and serial."""

    issuer: bytes  # DER of the issuer Name
    serial: int


@dataclass(frozen=True)
class EnvelopeInfo:
    recipients: tuple[Recipient, ...]
    content_encryption: str  # 'aes256_gcm', …
    key_transport: tuple[str, ...]


@dataclass(frozen=True)
class Signed:
    content: bytes
    signer: x509.Certificate
    signing_time: datetime | None


# --- MIME -------------------------------------------------------------------------------------


def pkcs7_part(der: bytes, smime_type: str) -> EmailMessage:
    """An ``application/pkcs7-mime`` entity carrying ``der`` (RFC 8551 §3.2)."""
    part = EmailMessage(policy=email.policy.SMTP)
    part["Content-Type"] = f'application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"'
    part["Content-Disposition"] = 'attachment; filename="smime.p7m"'
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64.encodebytes(der).decode("ascii").replace("\n", "\r\n"))
    return part


def pkcs7_payload(entity: bytes | Message, smime_type: str) -> bytes:
    """The DER of an ``application/pkcs7-mime`` entity of the given ``smime-type``."""
    message = (
        BytesParser(policy=email.policy.default).parsebytes(entity)
        if isinstance(entity, bytes)
        else entity
    )
    kind = message.get_content_type()
    if kind not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        raise MalformedMessage(f"not an S/MIME {smime_type} message (it is {kind})")
    found = (message.get_param("smime-type") or "").__str__().lower()
    if found != smime_type.lower():
        raise MalformedMessage(f"not an S/MIME {smime_type} message (smime-type={found or '-'})")
    payload = message.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise MalformedMessage("the S/MIME part is empty")
    return payload


# --- signing ----------------------------------------------------------------------------------


def sign(content: bytes, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``SignedData`` (DER ContentInfo) encapsulating ``content``, given as it is to be read
    (canonical CRLF MIME): it is signed byte for byte."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def _load(der: bytes, expected: str) -> core.Asn1Value:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != expected:
            raise MalformedMessage(f"CMS content is {info['content_type'].native}, not {expected}")
        content = info["content"]
        content.native  # noqa: B018 - parses every field now, so that errors surface here
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise MalformedMessage(f"not a CMS {expected}: {error}") from None
    return content


def verify_signed(der: bytes) -> Signed:
    """Check a ``SignedData``'s one signature over its content with the certificate it carries;
    `SignatureInvalid` if it does not hold. Whether that certificate is to be trusted (chain,
    revocation) is the caller's question."""
    signed = _load(der, "signed_data")
    try:
        content = signed["encap_content_info"]["content"].native
        infos = signed["signer_infos"]
        if not isinstance(content, bytes) or len(infos) != 1:
            raise MalformedMessage("a message carries its content and exactly one signature")
        info = infos[0]
        sid = info["sid"]
        if sid.name != "issuer_and_serial_number":
            raise MalformedMessage("the signer is not named by issuer and serial number")
        wanted = sid.chosen
        certificate = None
        for choice in signed["certificates"] or []:
            if choice.name != "certificate":
                continue
            candidate: asn1_x509.Certificate = choice.chosen
            if (
                candidate.serial_number == wanted["serial_number"].native
                and candidate.issuer.dump() == wanted["issuer"].dump()
            ):
                certificate = x509.load_der_x509_certificate(candidate.dump())
        if certificate is None:
            raise MalformedMessage("the message does not carry its signer's certificate")
        if info["digest_algorithm"]["algorithm"].native != "sha256":
            raise MalformedMessage("only SHA-256 signatures are accepted")
        attributes = info["signed_attrs"]
        if not attributes:
            raise MalformedMessage("the signature has no signed attributes")
        found: dict[str, list[object]] = {}
        for attribute in attributes:
            found.setdefault(attribute["type"].native, []).append(attribute["values"][0].native)
        digests = found.get("message_digest", [])
        times = found.get("signing_time", [])
        types = found.get("content_type", [])
        signature = info["signature"].native
        # The signature covers the attributes as a SET (tag 0x31), not as the [0] they are sent as.
        to_verify = b"\x31" + attributes.dump()[1:]
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise MalformedMessage(f"the signature cannot be read: {error}") from None
    if types != ["data"] or len(digests) != 1:
        raise MalformedMessage("the signed attributes lack their content type or digest")
    if digests[0] != hashlib.sha256(content).digest():
        raise SignatureInvalid("the content does not match its signed digest: it was altered")
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, to_verify, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, to_verify, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise MalformedMessage("the signer's key is neither ECDSA nor RSA")
    except InvalidSignature:
        raise SignatureInvalid("the signature does not verify: the message was altered") from None
    signing_time = times[0] if len(times) == 1 else None
    return Signed(
        content, certificate, signing_time if isinstance(signing_time, datetime) else None
    )


# --- enveloping -------------------------------------------------------------------------------


def _issuer_and_serial(certificate: x509.Certificate) -> cms.IssuerAndSerialNumber:
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    return cms.IssuerAndSerialNumber(
        {"issuer": parsed.issuer, "serial_number": parsed.serial_number}
    )


def _oaep_algorithm() -> cms.KeyEncryptionAlgorithm:
    sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
    return cms.KeyEncryptionAlgorithm(
        {
            "algorithm": "rsaes_oaep",
            "parameters": algos.RSAESOAEPParams(
                {
                    "hash_algorithm": sha256,
                    "mask_gen_algorithm": algos.MaskGenAlgorithm(
                        {"algorithm": "mgf1", "parameters": sha256}
                    ),
                }
            ),
        }
    )


def envelope(content: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """``AuthEnvelopedData`` (DER ContentInfo): ``content`` under AES-256-GCM, its key wrapped
    with RSA-OAEP for each recipient certificate (RSA keys only)."""
    if not recipients:
        raise ValueError("a message needs at least one recipient")
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE)
    infos = []
    for certificate in recipients:
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError(f"{certificate.subject.rfc4514_string()}: not an RSA encryption key")
        infos.append(
            cms.RecipientInfo(
                name="ktri",
                value=cms.KeyTransRecipientInfo(
                    {
                        "version": "v0",
                        "rid": cms.RecipientIdentifier(
                            name="issuer_and_serial_number", value=_issuer_and_serial(certificate)
                        ),
                        "key_encryption_algorithm": _oaep_algorithm(),
                        "encrypted_key": public_key.encrypt(key, _OAEP),
                    }
                ),
            )
        )
    sealed = AESGCM(key).encrypt(nonce, content, None)  # no authAttrs: the AAD is empty
    ciphertext, tag = sealed[:-_GCM_TAG], sealed[-_GCM_TAG:]
    body = cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": infos,
            "auth_encrypted_content_info": cms.EncryptedContentInfo(
                {
                    "content_type": "data",
                    "content_encryption_algorithm": algos.EncryptionAlgorithm(
                        {
                            "algorithm": "aes256_gcm",
                            # GCMParameters (RFC 5084) has CCMParameters' shape.
                            "parameters": algos.CcmParams(
                                {"aes_nonce": nonce, "aes_icvlen": _GCM_TAG}
                            ),
                        }
                    ),
                    "encrypted_content": ciphertext,
                }
            ),
            "mac": tag,
        }
    )
    info = cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": body})
    der: bytes = info.dump()
    return der


def inspect_envelope(der: bytes) -> EnvelopeInfo:
    """To whom an ``AuthEnvelopedData`` is encrypted, and how, without decrypting it."""
    body = _load(der, "authenticated_enveloped_data")
    try:
        recipients, transports = [], []
        for info in body["recipient_infos"]:
            if info.name != "ktri":
                raise MalformedMessage("only key transport recipients are accepted")
            rid = info.chosen["rid"]
            if rid.name != "issuer_and_serial_number":
                raise MalformedMessage("a recipient is not named by issuer and serial number")
            recipients.append(
                Recipient(rid.chosen["issuer"].dump(), rid.chosen["serial_number"].native)
            )
            transports.append(info.chosen["key_encryption_algorithm"]["algorithm"].native)
        algorithm = body["auth_encrypted_content_info"]["content_encryption_algorithm"]
        encryption = str(algorithm["algorithm"].native)
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise MalformedMessage(f"the envelope cannot be read: {error}") from None
    return EnvelopeInfo(tuple(recipients), encryption, tuple(transports))


def open_envelope(der: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """The content of an ``AuthEnvelopedData`` encrypted to ``certificate``; `NotForYou`
    otherwise, `SignatureInvalid` if its tag does not hold (altered in transit)."""
    body = _load(der, "authenticated_enveloped_data")
    mine = Recipient(_issuer_and_serial(certificate)["issuer"].dump(), certificate.serial_number)
    try:
        wrapped = None
        for info in body["recipient_infos"]:
            if info.name != "ktri":
                continue
            rid = info.chosen["rid"]
            if rid.name == "issuer_and_serial_number" and mine == Recipient(
                rid.chosen["issuer"].dump(), rid.chosen["serial_number"].native
            ):
                if info.chosen["key_encryption_algorithm"]["algorithm"].native != "rsaes_oaep":
                    raise MalformedMessage("only RSA-OAEP key transport is accepted")
                wrapped = info.chosen["encrypted_key"].native
        if wrapped is None:
            raise NotForYou("the message is not encrypted to this certificate")
        encrypted = body["auth_encrypted_content_info"]
        algorithm = encrypted["content_encryption_algorithm"]
        if algorithm["algorithm"].native != "aes256_gcm":
            raise MalformedMessage("only AES-256-GCM content encryption is accepted")
        parameters = algorithm["parameters"].parse(algos.CcmParams)
        nonce = parameters["aes_nonce"].native
        tag = body["mac"].native
        ciphertext = encrypted["encrypted_content"].native
        if body["auth_attrs"]:
            raise MalformedMessage("authenticated attributes are not accepted")
    except (MalformedMessage, NotForYou):
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise MalformedMessage(f"the envelope cannot be read: {error}") from None
    if len(tag) != _GCM_TAG or not isinstance(ciphertext, bytes):
        raise MalformedMessage("the envelope's tag or content is missing")
    try:
        content_key = key.decrypt(wrapped, _OAEP)
        opened: bytes = AESGCM(content_key).decrypt(nonce, ciphertext + tag, None)
        return opened
    except ValueError:
        raise NotForYou("this key does not open the message") from None
    except InvalidTag:
        raise SignatureInvalid("the encrypted content was altered") from None
