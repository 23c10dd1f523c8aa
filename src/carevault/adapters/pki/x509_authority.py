"""Building the platform's certificates and CRLs (ECDSA P-256, SHA-256), with `cryptography`.

Pure functions: they take keys, names and the time, and return certificates, CRLs or PEM text;
nothing here reads a clock, a file or a database. The shapes are fixed:

* root CA: self-signed, 20 years, CA without a path length limit, keyCertSign + cRLSign;
* issuing CA: signed by the root, 10 years, pathLen 0 (it signs end entities only);
* client certificates: signed by the issuing CA, 1 year (never past the issuing CA), subject
  ``O`` (when known), ``CN`` (display name), ``serialNumber`` (the client_id), SAN URI
  ``urn:carevault:client:<client_id>``, digitalSignature (critical), EKU clientAuth.

* encryption certificates (secure messaging): signed by the issuing CA, 1 year, for an RSA key
  of at least 3072 bits that the holder generated (the platform sees only its CSR), the same
  subject as a client certificate, SAN ``rfc822Name`` (the messaging address) and the client
  URI, keyEncipherment (critical) and nothing else, EKU emailProtection: it cannot
  authenticate anyone, and a client certificate cannot receive messages.

Every certificate carries a subject key identifier and, but for the root, the authority key
identifier of its issuer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CLIENT_URI_PREFIX",
    "ISSUING_LIFETIME",
    "LEAF_LIFETIME",
    "MIN_RSA_BITS",
    "REASONS",
    "ROOT_LIFETIME",
    "LeafSubject",
    "RevokedEntry",
    "build_crl",
    "build_encryption_leaf",
    "build_issuing",
    "build_leaf",
    "build_root",
    "ca_name",
    "certificate_pem",
    "client_id_from_uri",
    "client_uri",
    "is_certifiable",
    "new_key",
    "open_key",
    "seal_key",
    "unencrypted_key_pem",
]

ROOT_LIFETIME = timedelta(days=7305)  # 20 years
ISSUING_LIFETIME = timedelta(days=3652)  # 10 years
LEAF_LIFETIME = timedelta(days=365)

CLIENT_URI_PREFIX = "urn:carevault:client:"

# The subject's serialNumber attribute is a PrintableString of at most 64 characters (X.520);
# a client_id that does not fit cannot be carried faithfully, so it is refused, not mangled.
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]{1,64}")
_MAX_NAME = 64  # ub-common-name, ub-organization-name

# RFC 5280 §5.3.1 reason codes an operator may give. removeFromCRL belongs to delta CRLs,
# which this PKI does not publish.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}


@dataclass(frozen=True)
class LeafSubject:
    """Who a client certificate names."""

    common_name: str
    client_id: str
    organization: str | None = None


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: str | None  # an RFC 5280 reason name, see `REASONS`


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def is_certifiable(client_id: str) -> bool:
    """Whether ``client_id`` fits a certificate's serialNumber attribute unchanged."""
    return _PRINTABLE.fullmatch(client_id) is not None


def client_uri(client_id: str) -> str:
    # Percent-encoding keeps the URN valid whatever the identifier; ':' may stay (RFC 8141).
    return CLIENT_URI_PREFIX + quote(client_id, safe=":-._~")


def client_id_from_uri(uri: str) -> str | None:
    if not uri.startswith(CLIENT_URI_PREFIX) or len(uri) == len(CLIENT_URI_PREFIX):
        return None
    return unquote(uri[len(CLIENT_URI_PREFIX) :])


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:_MAX_NAME] or "-"


def ca_name(common_name: str, organization: str = "CareVault") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _short(organization)),
            x509.NameAttribute(NameOID.COMMON_NAME, _short(common_name)),
        ]
    )


def _subject_name(subject: LeafSubject) -> x509.Name:
    if not is_certifiable(subject.client_id):
        raise ValueError(f"client_id {subject.client_id!r} cannot be carried in a certificate")
    attributes = []
    if subject.organization:
        attributes.append(
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _short(subject.organization))
        )
    attributes += [
        x509.NameAttribute(NameOID.COMMON_NAME, _short(subject.common_name)),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, subject.client_id),
    ]
    return x509.Name(attributes)


def _second(moment: datetime) -> datetime:
    # X.509 times have a one-second resolution; stored dates must equal the certificate's.
    if moment.tzinfo is None:
        raise ValueError("naive datetime: certificates are built from UTC times only")
    return moment.replace(microsecond=0)


def _ski(certificate: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def build_root(
    key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    now: datetime,
    lifetime: timedelta = ROOT_LIFETIME,
) -> x509.Certificate:
    start = _second(now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def build_issuing(
    key: ec.EllipticCurvePrivateKey,
    name: x509.Name,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    lifetime: timedelta = ISSUING_LIFETIME,
) -> x509.Certificate:
    start = _second(now)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + lifetime, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(root)),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


def build_leaf(
    public_key: ec.EllipticCurvePublicKey,
    subject: LeafSubject,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    lifetime: timedelta = LEAF_LIFETIME,
    serial: int | None = None,
) -> x509.Certificate:
    """A client certificate; it never outlives its issuer."""
    start = _second(now)
    return (
        x509.CertificateBuilder()
        .subject_name(_subject_name(subject))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + lifetime, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(client_uri(subject.client_id))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


MIN_RSA_BITS = 3072


def build_encryption_leaf(
    public_key: rsa.RSAPublicKey,
    subject: LeafSubject,
    address: str,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    lifetime: timedelta = LEAF_LIFETIME,
) -> x509.Certificate:
    """An S/MIME encryption certificate for ``address``; it never outlives its issuer."""
    if public_key.key_size < MIN_RSA_BITS:
        raise ValueError(f"an encryption key has at least {MIN_RSA_BITS} bits")
    start = _second(now)
    return (
        x509.CertificateBuilder()
        .subject_name(_subject_name(subject))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + lifetime, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.RFC822Name(address),
                    x509.UniformResourceIdentifier(client_uri(subject.client_id)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def build_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[RevokedEntry],
    now: datetime,
    next_update_in: timedelta,
    crl_number: int,
) -> x509.CertificateRevocationList:
    start = _second(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(start)
        .next_update(start + next_update_in)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
            critical=False,
        )
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(_second(entry.revoked_at))
        )
        # RFC 5280 §5.3.1: "unspecified" is said by leaving the reason code out.
        if entry.reason is not None and entry.reason != x509.ReasonFlags.unspecified.value:
            item = item.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(issuer_key, hashes.SHA256())


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def seal_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> str:
    """The key as encrypted PKCS #8 PEM (``BEGIN ENCRYPTED PRIVATE KEY``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    ).decode("ascii")


def open_key(sealed_pem: str, password: bytes) -> ec.EllipticCurvePrivateKey:
    """Decrypt a key made by `seal_key`; ``ValueError`` for a wrong password or another key."""
    key = serialization.load_pem_private_key(sealed_pem.encode("ascii"), password)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the stored CA key is not an ECDSA P-256 key")
    return key


def unencrypted_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The holder's copy of a client key (PKCS #8 PEM), for a file only its owner can read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
