"""The platform's certificates and CRLs, as built by the pure X.509 functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from carevault.adapters.pki.x509_authority import (
    ISSUING_LIFETIME,
    LEAF_LIFETIME,
    REASONS,
    ROOT_LIFETIME,
    LeafSubject,
    RevokedEntry,
    build_crl,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
    client_id_from_uri,
    client_uri,
    is_certifiable,
    new_key,
    open_key,
    seal_key,
    unencrypted_key_pem,
)

NOW = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
START = NOW.replace(microsecond=0)


@dataclass
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key, issuing_key = new_key(), new_key()
    root = build_root(root_key, ca_name("Test Root CA"), NOW)
    issuing = build_issuing(issuing_key, ca_name("Test Issuing CA"), root, root_key, NOW)
    return Pki(root_key, root, issuing_key, issuing)


def leaf(pki: Pki, subject: LeafSubject | None = None, now: datetime = NOW) -> x509.Certificate:
    return build_leaf(new_key().public_key(),
                      subject or LeafSubject("Anne Müller", "HP-123456", "Hôpital Test"),
                      pki.issuing, pki.issuing_key, now)


def ext(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return certificate.extensions.get_extension_for_class(kind)


def ski(certificate: x509.Certificate) -> bytes:
    return ext(certificate, x509.SubjectKeyIdentifier).value.digest


def aki(certificate: x509.Certificate) -> bytes:
    return ext(certificate, x509.AuthorityKeyIdentifier).value.key_identifier


def test_the_root_is_a_self_signed_p256_ca_for_twenty_years(pki: Pki) -> None:
    root = pki.root
    assert root.subject == root.issuer == ca_name("Test Root CA")
    root.verify_directly_issued_by(root)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(root.public_key().curve, ec.SECP256R1)
    assert isinstance(root.signature_hash_algorithm, hashes.SHA256)
    assert root.not_valid_before_utc == START
    assert root.not_valid_after_utc - root.not_valid_before_utc == ROOT_LIFETIME
    assert timedelta(days=20 * 365) <= ROOT_LIFETIME
    constraints = ext(root, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length is None
    usage = ext(root, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ski(root) == x509.SubjectKeyIdentifier.from_public_key(pki.root_key.public_key()).digest
    assert aki(root) == ski(root)


def test_the_issuing_ca_is_signed_by_the_root_with_path_length_zero(pki: Pki) -> None:
    issuing = pki.issuing
    assert issuing.issuer == pki.root.subject
    assert issuing.subject == ca_name("Test Issuing CA")
    issuing.verify_directly_issued_by(pki.root)
    constraints = ext(issuing, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ext(issuing, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert issuing.not_valid_after_utc - issuing.not_valid_before_utc == ISSUING_LIFETIME
    assert timedelta(days=10 * 365) <= ISSUING_LIFETIME
    assert aki(issuing) == ski(pki.root)
    assert ski(issuing) != ski(pki.root)


def test_a_client_certificate_carries_the_client_id_in_subject_and_san(pki: Pki) -> None:
    certificate = leaf(pki)
    certificate.verify_directly_issued_by(pki.issuing)
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Anne Müller"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "HP-123456"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Hôpital Test"
    san = ext(certificate, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:carevault:client:HP-123456"]
    usage = ext(certificate, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_agreement
                or usage.value.content_commitment or usage.value.key_encipherment)
    assert list(ext(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = ext(certificate, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    assert certificate.not_valid_before_utc == START
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == LEAF_LIFETIME
    assert timedelta(days=365) == LEAF_LIFETIME
    assert aki(certificate) == ski(pki.issuing)
    assert ski(certificate) == x509.SubjectKeyIdentifier.from_public_key(
        certificate.public_key()).digest
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    assert certificate.serial_number > 0


def test_the_organization_is_left_out_when_unknown(pki: Pki) -> None:
    certificate = leaf(pki, LeafSubject("CHL (system)", "system:ORG-0001"))
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == (
        "system:ORG-0001")


def test_serial_numbers_are_random_and_distinct(pki: Pki) -> None:
    serials = {leaf(pki).serial_number for _ in range(20)}
    assert len(serials) == 20


def test_a_client_certificate_never_outlives_its_issuer(pki: Pki) -> None:
    short = build_issuing(new_key(), ca_name("Short"), pki.root, pki.root_key, NOW,
                          lifetime=timedelta(days=30))
    certificate = build_leaf(new_key().public_key(), LeafSubject("A", "HP-1"), short,
                             pki.issuing_key, NOW)
    assert certificate.not_valid_after_utc == short.not_valid_after_utc


def test_the_chain_passes_the_rfc5280_client_verifier(pki: Pki) -> None:
    from cryptography.x509 import verification  # cryptography >= 43 (pyproject.toml)

    verifier = (verification.PolicyBuilder().store(verification.Store([pki.root]))
                .time(NOW + timedelta(days=1)).build_client_verifier())
    verified = verifier.verify(leaf(pki), [pki.issuing])
    assert verified.subjects == [x509.UniformResourceIdentifier("urn:carevault:client:HP-123456")]
    assert verified.chain[-1] == pki.root


@pytest.mark.parametrize("client_id", ["HP_1", "HP-1\n", "", "x" * 65, "Müller", "a;b", "a@b"])
def test_client_ids_that_a_certificate_cannot_carry_are_refused(pki: Pki, client_id: str) -> None:
    assert not is_certifiable(client_id)
    with pytest.raises(ValueError, match="cannot be carried"):
        leaf(pki, LeafSubject("Name", client_id))


@pytest.mark.parametrize("client_id", ["HP-123456", "system:ORG-0001", "x" * 64, "A B (c)"])
def test_printable_client_ids_are_accepted(client_id: str) -> None:
    assert is_certifiable(client_id)


@given(st.text(min_size=1, max_size=80))
def test_the_client_uri_round_trips_and_stays_ascii(client_id: str) -> None:
    uri = client_uri(client_id)
    assert uri.isascii()
    assert " " not in uri
    assert client_id_from_uri(uri) == client_id


def test_other_uris_name_no_client() -> None:
    assert client_id_from_uri("urn:carevault:client:") is None
    assert client_id_from_uri("https://example.org/HP-1") is None
    assert client_uri("system:ORG-0001") == "urn:carevault:client:system:ORG-0001"


def test_names_are_shortened_to_what_x509_allows(pki: Pki) -> None:
    certificate = leaf(pki, LeafSubject("N" * 100, "HP-2", "O" * 100))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "N" * 64
    assert len(str(
        certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)) == 64


def test_naive_times_are_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="naive"):
        build_root(new_key(), ca_name("X"), datetime(2026, 1, 1))


def test_the_crl_lists_revoked_serials_with_their_reason(pki: Pki) -> None:
    revoked = [
        RevokedEntry(0x1234, NOW - timedelta(hours=1), "keyCompromise"),
        RevokedEntry(0xABCDEF, NOW - timedelta(minutes=3), "unspecified"),
        RevokedEntry(0x99, NOW, None),
    ]
    crl = build_crl(pki.issuing, pki.issuing_key, revoked, NOW, timedelta(minutes=5), 42)
    assert crl.is_signature_valid(pki.issuing.public_key())
    assert not crl.is_signature_valid(pki.root.public_key())
    assert crl.issuer == pki.issuing.subject
    assert crl.last_update_utc == START
    assert crl.next_update_utc == START + timedelta(minutes=5)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    assert crl.extensions.get_extension_for_class(
        x509.AuthorityKeyIdentifier).value.key_identifier == ski(pki.issuing)
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert len(crl) == 3
    first = crl.get_revoked_certificate_by_serial_number(0x1234)
    assert first is not None
    assert first.revocation_date_utc == (NOW - timedelta(hours=1)).replace(microsecond=0)
    assert first.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise)
    for serial in (0xABCDEF, 0x99):  # "unspecified" is said by leaving the reason out
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        with pytest.raises(x509.ExtensionNotFound):
            entry.extensions.get_extension_for_class(x509.CRLReason)
    assert crl.get_revoked_certificate_by_serial_number(0x5) is None
    der = crl.public_bytes(serialization.Encoding.DER)
    assert x509.load_der_x509_crl(der) == crl


def test_an_empty_crl_is_still_signed(pki: Pki) -> None:
    crl = build_crl(pki.issuing, pki.issuing_key, [], NOW, timedelta(minutes=5), 1)
    assert len(crl) == 0
    assert crl.is_signature_valid(pki.issuing.public_key())


def test_reasons_are_the_rfc5280_names_but_remove_from_crl() -> None:
    assert {"keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
            "certificateHold", "cACompromise", "privilegeWithdrawn"} <= set(REASONS)
    assert "removeFromCRL" not in REASONS


def test_sealed_keys_are_encrypted_pkcs8_and_open_with_their_password_only() -> None:
    key = new_key()
    sealed = seal_key(key, b"p" * 32)
    assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert "BEGIN PRIVATE KEY" not in sealed
    assert "BEGIN EC PRIVATE KEY" not in sealed
    assert open_key(sealed, b"p" * 32).private_numbers() == key.private_numbers()
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message varies by version
        open_key(sealed, b"q" * 32)
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(sealed.encode(), None)


def test_only_p256_keys_are_opened() -> None:
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"p" * 32)).decode()
    with pytest.raises(ValueError, match="P-256"):
        open_key(other, b"p" * 32)


def test_the_holders_key_is_plain_pkcs8() -> None:
    key = new_key()
    pem = unencrypted_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(pem, None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
