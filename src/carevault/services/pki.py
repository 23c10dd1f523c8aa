"""Use cases of the platform PKI: the CAs, client certificates, revocation, and the check of a
client's certificate chain that the token endpoint relies on.

A client certificate names a *client_id*: a professional's directory identifier (``HP-123456``)
or, for an organization's information system, ``system:`` followed by the organization's
identifier (``system:ORG-0001``). Only an active professional with an active licence, or an
active organization, gets one. The CA keys are stored encrypted (see
`carevault.adapters.keys.pki_keys`); a client's private key is handed to the caller's
``deliver`` function, inside the transaction that records the certificate, and kept nowhere.

Errors, besides the directory's `NotFound` for an unknown professional or organization:

    CareVaultError
    ├── NotFound
    │   └── PkiNotInitialized       no CA yet: run 'carevault pki init'
    ├── NotAuthenticated
    │   └── CertificateRejected     `validate_client_chain` refuses a presented chain
    └── Unavailable
        └── CaKeyUnavailable        the stored CA key does not open with this key file
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from carevault.adapters.pki.x509_authority import (
    REASONS,
    LeafSubject,
    RevokedEntry,
    build_crl,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
    certificate_pem,
    client_id_from_uri,
    is_certifiable,
    new_key,
    open_key,
    seal_key,
    unencrypted_key_pem,
)
from carevault.adapters.storage.pki_store import CertificateRecord, PkiStore, StoredAuthority
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    Unavailable,
)
from carevault.domain.queries import Page, RoleQuery
from carevault.fhirmodel.directory import IdentitySystems, organization_entry, practitioner_entry
from carevault.services.bounded_memo import BoundedMemo
from carevault.services.directory import read_resource
from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "CRL_LIFETIME",
    "KINDS",
    "SYSTEM_PREFIX",
    "CaKeyUnavailable",
    "CertificateRejected",
    "ClientIdentity",
    "Credentials",
    "Deliver",
    "PkiContext",
    "PkiNotInitialized",
    "PublicDocuments",
    "ca_chain_pem",
    "current_crl",
    "init_pki",
    "issue_practitioner_certificate",
    "issue_system_certificate",
    "parse_serial",
    "revoke",
    "validate_client_chain",
]

KINDS = ("practitioner", "system")
SYSTEM_PREFIX = "system:"
# A CRL is good for five minutes, the longest life of an access token: a relying party that
# re-fetches it when it expires stops honouring a revoked certificate within a token's life.
CRL_LIFETIME = timedelta(minutes=5)
ROOT, ISSUING = "root", "issuing"


class PkiNotInitialized(NotFound):
    """The platform has no certificate authority yet."""


class CertificateRejected(NotAuthenticated):
    """A presented certificate chain does not identify a client of this platform."""


class CaKeyUnavailable(Unavailable):
    """The stored CA key cannot be opened with the configured key source."""


@dataclass(frozen=True)
class PkiContext:
    """What the PKI use cases need besides storage."""

    systems: IdentitySystems
    ca_password: bytes  # from `carevault.adapters.keys.pki_keys.ca_key_password`
    clock: Callable[[], datetime]
    environment: str = "dev"


@dataclass(frozen=True)
class Credentials:
    """What the holder of a new certificate receives; the private key exists nowhere else."""

    record: CertificateRecord
    private_key_pem: bytes  # PKCS #8, unencrypted: for a file only its owner may read
    chain_pem: str  # the issuing CA's certificate


Deliver = Callable[[Credentials], None]


@dataclass(frozen=True)
class ClientIdentity:
    """Who a valid client certificate chain identifies."""

    client_id: str
    kind: str  # 'practitioner' or 'system'
    practitioner_id: str | None
    organization_id: str | None
    serial: str
    not_after: datetime
    public_key: ec.EllipticCurvePublicKey


# --- the authorities ---------------------------------------------------------------------------


def init_pki(uow: UnitOfWork, ctx: PkiContext) -> bool:
    """Create the root and issuing CAs; False (and nothing written) if they already exist."""
    store = uow.pki
    if store.authorities():
        return False
    now = ctx.clock()
    root_key, issuing_key = new_key(), new_key()
    label = f"({ctx.environment})"
    root = build_root(root_key, ca_name(f"CareVault Root CA {label}"), now)
    issuing = build_issuing(
        issuing_key, ca_name(f"CareVault Issuing CA {label}"), root, root_key, now
    )
    stored = store.add_authorities(
        [
            StoredAuthority(ROOT, certificate_pem(root), seal_key(root_key, ctx.ca_password), now),
            StoredAuthority(
                ISSUING, certificate_pem(issuing), seal_key(issuing_key, ctx.ca_password), now
            ),
        ]
    )
    if not stored:  # a concurrent 'pki init' won the race
        return False
    uow.commit()
    return True


@dataclass(frozen=True)
class _Authorities:
    root: x509.Certificate
    issuing: x509.Certificate
    issuing_sealed_key: str


def _authorities(store: PkiStore) -> _Authorities:
    found = store.authorities()
    if ROOT not in found or ISSUING not in found:
        raise PkiNotInitialized("the platform PKI is not initialized: run 'carevault pki init'")
    return _parsed_authorities(
        found[ROOT].certificate_pem,
        found[ISSUING].certificate_pem,
        found[ISSUING].encrypted_key_pem,
    )


@functools.lru_cache(maxsize=4)
def _parsed_authorities(root_pem: str, issuing_pem: str, issuing_sealed_key: str) -> _Authorities:
    # The rows are read on every check (a new 'pki init' takes effect at once); parsing the
    # same PEM again would only cost time.
    return _Authorities(
        x509.load_pem_x509_certificate(root_pem.encode("ascii")),
        x509.load_pem_x509_certificate(issuing_pem.encode("ascii")),
        issuing_sealed_key,
    )


@functools.lru_cache(maxsize=4)
def _open_ca_key(sealed_pem: str, password: bytes) -> ec.EllipticCurvePrivateKey:
    # Opening costs a key derivation (~20 ms); the CRL is signed on every request, so the
    # opened key is kept, as the audit log's signing keys are, in this process's memory.
    try:
        return open_key(sealed_pem, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CaKeyUnavailable(
            "the CA key cannot be opened with the configured key source "
            "(was the key file replaced since 'carevault pki init'?)"
        ) from None


def ca_chain_pem(uow: UnitOfWork) -> str:
    """The issuing CA's certificate followed by the root's, PEM."""
    authorities = _authorities(uow.pki)
    return certificate_pem(authorities.issuing) + certificate_pem(authorities.root)


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# --- issuing ---------------------------------------------------------------------------------


def _certifiable(client_id: str) -> str:
    if not is_certifiable(client_id):
        raise BusinessRuleViolation(
            f"identifier {client_id!r} cannot be carried in a certificate: at most 64 letters, "
            "digits, spaces and ' ( ) + , - . / : = ?"
        )
    return client_id


def issue_practitioner_certificate(
    uow: UnitOfWork, ctx: PkiContext, practitioner_id: str, deliver: Deliver
) -> CertificateRecord:
    """A client certificate for a professional with an active licence."""
    stored = read_resource(uow, "Practitioner", practitioner_id)
    entry = practitioner_entry(stored.resource, ctx.systems)
    if entry.licence_status != "active":
        raise BusinessRuleViolation(
            f"Practitioner/{practitioner_id} has a {entry.licence_status} licence: "
            "no certificate is issued"
        )
    if not entry.active:
        raise BusinessRuleViolation(
            f"Practitioner/{practitioner_id} is not active: no certificate is issued"
        )
    organization_id, organization_name = _sole_organization(uow, ctx, practitioner_id)
    subject = LeafSubject(
        common_name=f"{entry.given} {entry.family}".strip(),
        client_id=_certifiable(entry.identifier),
        organization=organization_name,
    )
    return _issue(uow, ctx, subject, "practitioner", practitioner_id, organization_id, deliver)


def _sole_organization(
    uow: UnitOfWork, ctx: PkiContext, practitioner_id: str
) -> tuple[str | None, str | None]:
    """The organization the professional works for, if their active roles name exactly one."""
    roles = uow.directory.search_roles(
        RoleQuery(practitioner=[(practitioner_id,)], active=True), Page(0, 100)
    )
    references = {
        str(role.resource.get("organization", {}).get("reference", "")) for role in roles.items
    }
    references.discard("")
    if len(references) != 1:
        return None, None
    kind, _, organization_id = references.pop().partition("/")
    if kind != "Organization":
        return None, None
    stored = read_resource(uow, "Organization", organization_id)
    entry = organization_entry(stored.resource, ctx.systems)
    return (organization_id, entry.name) if entry.active else (None, None)


def issue_system_certificate(
    uow: UnitOfWork, ctx: PkiContext, organization_id: str, deliver: Deliver
) -> CertificateRecord:
    """A client certificate for an active organization's information system."""
    stored = read_resource(uow, "Organization", organization_id)
    entry = organization_entry(stored.resource, ctx.systems)
    if not entry.active:
        raise BusinessRuleViolation(
            f"Organization/{organization_id} is not active: no certificate is issued"
        )
    subject = LeafSubject(
        common_name=f"{entry.name} (system)",
        client_id=_certifiable(SYSTEM_PREFIX + entry.identifier),
        organization=entry.name,
    )
    return _issue(uow, ctx, subject, "system", None, organization_id, deliver)


def _issue(
    uow: UnitOfWork,
    ctx: PkiContext,
    subject: LeafSubject,
    kind: str,
    practitioner_id: str | None,
    organization_id: str | None,
    deliver: Deliver,
) -> CertificateRecord:
    store = uow.pki
    authorities = _authorities(store)
    now = ctx.clock()
    if (
        not authorities.issuing.not_valid_before_utc
        <= now
        < authorities.issuing.not_valid_after_utc
    ):
        raise BusinessRuleViolation("the issuing CA is not valid now: no certificate is issued")
    issuing_key = _open_ca_key(authorities.issuing_sealed_key, ctx.ca_password)
    key = new_key()
    certificate = build_leaf(key.public_key(), subject, authorities.issuing, issuing_key, now)
    record = CertificateRecord(
        serial=format(certificate.serial_number, "x"),
        client_id=subject.client_id,
        kind=kind,
        practitioner_id=practitioner_id,
        organization_id=organization_id,
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=certificate_pem(certificate),
    )
    store.add_certificate(record)
    # Delivered before the commit: if the key cannot be handed over, nothing is recorded.
    deliver(Credentials(record, unencrypted_key_pem(key), certificate_pem(authorities.issuing)))
    uow.commit()
    return record


# --- revocation ------------------------------------------------------------------------------


HEX_DIGITS = "0123456789abcdef"


def parse_serial(text: str) -> str:
    """A serial number as stored (lowercase hex); accepts ``0x``, colons and upper case."""
    cleaned = text.strip().lower().replace(":", "").removeprefix("0x")
    # Hex digits only: int() alone would also take a sign, underscores and spaces.
    if not 0 < len(cleaned) <= 64 or cleaned.strip(HEX_DIGITS):
        raise InvalidInput(f"serial {text!r} is not a hexadecimal serial number")
    return format(int(cleaned, 16), "x")


def revoke(uow: UnitOfWork, serial: str, reason: str, now: datetime) -> CertificateRecord:
    """Revoke a certificate at once: it is refused from now on and listed on the CRL."""
    if reason not in REASONS:
        raise InvalidInput(f"unknown revocation reason {reason!r}: use one of {', '.join(REASONS)}")
    key = parse_serial(serial)
    store = uow.pki
    record = store.certificate(key)
    if record is None:
        raise NotFound(f"no certificate with serial {key} was issued by this platform")
    if record.revoked_at is not None:
        raise Conflict(
            f"certificate {key} was already revoked on {_when(record.revoked_at)} "
            f"({record.revocation_reason})"
        )
    if not store.revoke(key, now, reason):
        raise Conflict(f"certificate {key} was revoked meanwhile")
    uow.commit()
    return replace(record, revoked_at=now, revocation_reason=reason)


def current_crl(uow: UnitOfWork, ca_password: bytes, now: datetime) -> bytes:
    """A CRL (DER) signed now by the issuing CA, good for `CRL_LIFETIME`.

    It lists the revoked certificates that have not expired yet (an expired one is refused
    anyway). Its number is the signing time in milliseconds, so numbers only grow.
    """
    store = uow.pki
    authorities = _authorities(store)
    key = _open_ca_key(authorities.issuing_sealed_key, ca_password)
    revoked = [
        RevokedEntry(int(r.serial, 16), r.revoked_at, r.revocation_reason)
        for r in store.revoked_unexpired(now)
        if r.revoked_at is not None
    ]
    crl = build_crl(
        authorities.issuing, key, revoked, now, CRL_LIFETIME, int(now.timestamp() * 1000)
    )
    return crl.public_bytes(serialization.Encoding.DER)


# --- checking a client's chain ---------------------------------------------------------------

# What `cryptography` raises on a certificate it cannot make sense of (found by fuzzing too).
_MALFORMED = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    InvalidSignature,
    x509.InvalidVersion,
    x509.AttributeNotFound,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def validate_client_chain(
    uow: UnitOfWork, chain_der: Sequence[bytes], now: datetime
) -> ClientIdentity:
    """Check a presented chain (the client certificate first, then optionally the issuing CA,
    as in a JOSE ``x5c``) up to this platform's root, at ``now``.

    Checked: the signatures and validity dates up the chain (with `cryptography`'s RFC 5280
    verifier), the client certificate's key usage, extended key usage and client_id, that
    this platform issued it and that it is not revoked. Whatever is wrong raises
    `CertificateRejected`, and nothing else.
    """
    if not 1 <= len(chain_der) <= 2:
        raise CertificateRejected(
            "present the client certificate, optionally followed by the issuing CA certificate"
        )
    store = uow.pki
    try:
        authorities = _authorities(store)
    except PkiNotInitialized as error:
        raise CertificateRejected(str(error)) from None
    try:
        with warnings.catch_warnings():
            # What cryptography only warns about today (a non-positive serial, RFC 5280
            # §4.1.2.2) is refused here: it is no certificate this platform issues.
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            chain = [x509.load_der_x509_certificate(bytes(der)) for der in chain_der]
    except (*_MALFORMED, CryptographyDeprecationWarning):
        raise CertificateRejected(
            "the chain holds something that is not a DER certificate"
        ) from None
    leaf, *presented_cas = chain
    if any(ca != authorities.issuing for ca in presented_cas):
        raise CertificateRejected("the chain's CA certificate is not this platform's issuing CA")
    try:
        checked = _checked_leaf(authorities, leaf, now)
    except _MALFORMED as error:
        raise CertificateRejected(f"the client certificate is malformed: {error}") from None
    return _identify(store, checked)


@dataclass(frozen=True)
class _CheckedLeaf:
    """What a client certificate's verification up to the root established: the part of the
    check that depends only on the certificates, and the dates between which it holds."""

    client_id: str
    serial: str
    pem: str
    public_key: ec.EllipticCurvePublicKey
    valid_from: datetime
    valid_until: datetime


def _check_leaf(authorities: _Authorities, leaf: x509.Certificate, now: datetime) -> _CheckedLeaf:
    if now >= leaf.not_valid_after_utc:
        raise CertificateRejected(
            f"the client certificate expired on {leaf.not_valid_after_utc.isoformat()}"
        )
    if now < leaf.not_valid_before_utc:
        raise CertificateRejected(
            f"the client certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
        )
    verifier = (
        PolicyBuilder()
        .store(Store([authorities.root]))
        .time(now)
        .max_chain_depth(1)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, [authorities.issuing])
    except VerificationError as error:
        raise CertificateRejected(
            f"the certificate chain does not verify up to the platform root: {error}"
        ) from None
    _check_usage(leaf)
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateRejected("the client certificate's key is not an ECDSA key")
    chain = (leaf, authorities.issuing, authorities.root)
    return _CheckedLeaf(
        client_id=_client_id(leaf),
        serial=format(leaf.serial_number, "x"),
        pem=certificate_pem(leaf),
        public_key=public_key,
        valid_from=max(c.not_valid_before_utc for c in chain),
        valid_until=min(c.not_valid_after_utc for c in chain),
    )


# Client certificates whose chain verified. Verifying a chain costs two ECDSA verifications
# and the parsing of its extensions, and its outcome depends only on the certificates, so a
# client presenting the same certificate again (on every token request, on every signed
# document) is not verified again while all three certificates are valid. Revocation and the
# platform's record of the certificate are read fresh on every check (`_identify`): those
# change without the certificate changing.
_CHECKED: BoundedMemo[tuple[bytes, ...], _CheckedLeaf] = BoundedMemo(10_000)


def _checked_leaf(authorities: _Authorities, leaf: x509.Certificate, now: datetime) -> _CheckedLeaf:
    key = tuple(
        c.fingerprint(hashes.SHA256()) for c in (leaf, authorities.issuing, authorities.root)
    )
    found = _CHECKED.get(key)
    if found is not None and found.valid_from <= now < found.valid_until:
        return found
    checked = _check_leaf(authorities, leaf, now)  # outside the dates: for the exact reason
    _CHECKED.add(key, checked)
    return checked


def _identify(store: PkiStore, checked: _CheckedLeaf) -> ClientIdentity:
    serial = checked.serial
    record = store.certificate(serial)
    if record is None or record.certificate_pem != checked.pem:
        raise CertificateRejected(f"certificate {serial} was not issued by this platform")
    if record.revoked_at is not None:
        raise CertificateRejected(
            f"certificate {serial} was revoked on {_when(record.revoked_at)} "
            f"({record.revocation_reason})"
        )
    if record.client_id != checked.client_id:
        raise CertificateRejected(f"certificate {serial} does not name its recorded client")
    return ClientIdentity(
        client_id=checked.client_id,
        kind=record.kind,
        practitioner_id=record.practitioner_id,
        organization_id=record.organization_id,
        serial=serial,
        not_after=record.not_after,
        public_key=checked.public_key,
    )


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(leaf: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    try:
        return leaf.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        raise CertificateRejected(
            f"the client certificate has no {kind.__name__} extension"
        ) from None


def _check_usage(leaf: x509.Certificate) -> None:
    if _extension(leaf, x509.BasicConstraints).value.ca:
        raise CertificateRejected("a CA certificate is not a client certificate")
    usage = _extension(leaf, x509.KeyUsage)
    if not (usage.critical and usage.value.digital_signature):
        raise CertificateRejected("the client certificate is not for digital signatures")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in _extension(leaf, x509.ExtendedKeyUsage).value:
        raise CertificateRejected("the client certificate is not for client authentication")


def _client_id(leaf: x509.Certificate) -> str:
    uris = _extension(leaf, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    named = {found for found in map(client_id_from_uri, uris) if found is not None}
    in_subject = {
        str(attribute.value)
        for attribute in leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    }
    if len(named) != 1 or named != in_subject:
        raise CertificateRejected("the client certificate does not name exactly one client_id")
    return named.pop()


# --- for the messaging use cases, which issue encryption certificates with the same CA -------

authorities = _authorities
open_ca_key = _open_ca_key
certifiable = _certifiable


@dataclass(frozen=True)
class PublicDocuments:
    """The PKI's public documents, each read in a transaction of its own: what the HTTP layer
    serves, without a unit of work or the CA key's password in its hands."""

    units: Callable[[], UnitOfWork]
    ca_password: bytes
    clock: Callable[[], datetime]

    def crl(self) -> bytes:
        with self.units() as uow:
            return current_crl(uow, self.ca_password, self.clock())

    def chain_pem(self) -> str:
        with self.units() as uow:
            return ca_chain_pem(uow)

    def status(self) -> PkiStatus:
        """The CA certificates' validity and the CRL's, for the security officer's workspace
        (signing a CRL now, as a relying party fetching it would get it)."""
        now = self.clock()
        with self.units() as uow:
            try:
                authorities = _authorities(uow.pki)
            except PkiNotInitialized:
                return PkiStatus(initialized=False, checked_at=now)
            crl = x509.load_der_x509_crl(current_crl(uow, self.ca_password, now))
            revoked = uow.pki.revoked_unexpired(now)
        return PkiStatus(
            initialized=True,
            checked_at=now,
            authorities=tuple(
                CertificateStatus(
                    role,
                    certificate.subject.rfc4514_string(),
                    format(certificate.serial_number, "x"),
                    certificate.not_valid_before_utc,
                    certificate.not_valid_after_utc,
                )
                for role, certificate in (
                    (ROOT, authorities.root),
                    (ISSUING, authorities.issuing),
                )
            ),
            crl_issued=crl.last_update_utc,
            crl_next=crl.next_update_utc,
            crl_signature_valid=crl.is_signature_valid(authorities.issuing.public_key()),  # type: ignore[arg-type]
            revoked=len(revoked),
        )


@dataclass(frozen=True)
class CertificateStatus:
    role: str  # root | issuing
    subject: str
    serial: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class PkiStatus:
    initialized: bool
    checked_at: datetime
    authorities: tuple[CertificateStatus, ...] = ()
    crl_issued: datetime | None = None
    crl_next: datetime | None = None
    crl_signature_valid: bool = False
    revoked: int = 0
