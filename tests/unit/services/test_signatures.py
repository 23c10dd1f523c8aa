"""Authors' signatures (IHE DSG), on a unit of work in memory with the platform's real PKI: a
detached JWS over the document's exact bytes, by a certificate this platform issued and did not
revoke, names its signer; anything else is refused as an `InvalidSignature` saying why."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from carevault.fhirmodel.directory import IdentitySystems
from carevault.services import pki
from carevault.services.signatures import MAX_SIGNATURE_BYTES, InvalidSignature, verify_detached
from support.builders import hospital
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = IdentitySystems(
    national="https://carevault.lu/fhir/sid/matricule",
    professional="https://carevault.lu/fhir/sid/hpd",
    organization="https://carevault.lu/fhir/sid/organization",
)
REPORT = b"%PDF-1.7\n% discharge letter\n%%EOF\n"


@dataclass(frozen=True)
class Signer:
    """A system holding a certificate of the platform: its key and its chain (DER, leaf first)."""

    serial: str
    key: ec.EllipticCurvePrivateKey
    chain: list[bytes]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws(content: bytes, key: ec.EllipticCurvePrivateKey, header: dict[str, Any]) -> bytes:
    """A compact ES256 JWS over ``content`` with its payload detached (RFC 7515 appendix F),
    made by hand so that a test may write any header."""
    encoded = b64url(json.dumps(header).encode())
    der = key.sign(f"{encoded}.{b64url(content)}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{encoded}..{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}".encode("ascii")


def x5c(chain: list[bytes]) -> list[str]:
    return [base64.b64encode(der).decode("ascii") for der in chain]


def signed(content: bytes, signer: Signer, **header: Any) -> bytes:
    return jws(content, signer.key, {"alg": "ES256", "x5c": x5c(signer.chain), **header})


def platform_with_signer(organization_identifier: str = "ORG-H1") -> tuple[FakeUnitOfWork, Signer]:
    """A platform whose PKI issued a certificate to a hospital's system (the real PKI code)."""
    uow = FakeUnitOfWork()
    uow.directory.add_organization("org-1", resource=hospital(SYSTEMS, organization_identifier))
    ctx = pki.PkiContext(SYSTEMS, b"ca password", lambda: NOW)
    delivered: list[pki.Credentials] = []
    with uow:
        assert pki.init_pki(uow, ctx)
    with uow:
        record = pki.issue_system_certificate(uow, ctx, "org-1", delivered.append)
    [credentials] = delivered
    key = serialization.load_pem_private_key(credentials.private_key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))
    issuing = x509.load_pem_x509_certificate(credentials.chain_pem.encode("ascii"))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)]
    return uow, Signer(record.serial, key, chain)


@pytest.fixture(scope="module")
def platform() -> tuple[FakeUnitOfWork, Signer]:
    return platform_with_signer()


def refused(uow: FakeUnitOfWork, signature: bytes, content: bytes = REPORT,
            now: datetime = NOW) -> str:
    with uow, pytest.raises(InvalidSignature) as error:
        verify_detached(uow, signature, content, now)
    return error.value.message


def test_a_signature_over_the_documents_exact_bytes_names_its_signer(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    with uow:
        identity = verify_detached(uow, signed(REPORT, signer), REPORT, NOW)
    assert (identity.client_id, identity.kind, identity.organization_id, identity.serial) == (
        "system:ORG-H1", "system", "org-1", signer.serial)
    assert identity.practitioner_id is None
    # The leaf alone is enough: the platform knows its issuing CA.
    with uow:
        alone = signed(REPORT, Signer(signer.serial, signer.key, signer.chain[:1]))
        assert verify_detached(uow, alone, REPORT, NOW).serial == signer.serial


def test_a_document_altered_by_one_byte_no_longer_verifies(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    altered = REPORT.replace(b"discharge", b"dischargf")
    assert refused(uow, signed(REPORT, signer), altered) == (
        "the signature does not verify over the document's bytes")


def test_a_signature_made_with_another_key_under_the_signers_chain_is_refused(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    forger = Signer(signer.serial, ec.generate_private_key(ec.SECP256R1()), signer.chain)
    assert refused(uow, signed(REPORT, forger)) == (
        "the signature does not verify over the document's bytes")


def test_a_header_changed_after_signing_breaks_the_signature(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    _header, _, value = signed(REPORT, signer).decode().split(".")
    other = b64url(json.dumps({"alg": "ES256", "x5c": x5c(signer.chain), "kid": "x"}).encode())
    assert refused(uow, f"{other}..{value}".encode()) == (
        "the signature does not verify over the document's bytes")


def test_a_signature_truncated_or_empty_is_refused(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    header, _, value = signed(REPORT, signer).decode().split(".")
    for broken in (value[:-4], ""):
        assert refused(uow, f"{header}..{broken}".encode()) == (
            "the signature does not verify over the document's bytes")


def test_an_eddsa_header_is_refused_as_a_signature_not_a_crash(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    """The platform certifies ECDSA keys only: a header naming EdDSA over such a certificate
    cannot verify, and is refused as any bad signature is (it raised joserfc's
    InvalidKeyTypeError, an internal error, before the fix)."""
    uow, signer = platform
    assert refused(uow, signed(REPORT, signer, alg="EdDSA")) == (
        "the signature does not verify over the document's bytes")


def test_an_attached_payload_is_refused(platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    header, _, value = signed(REPORT, signer).decode().split(".")
    attached = f"{header}.{b64url(REPORT)}.{value}".encode()
    assert refused(uow, attached) == (
        "the signature's JWS payload must be detached (RFC 7515 appendix F)")


@pytest.mark.parametrize(("signature", "message"), [
    (b"a" * (MAX_SIGNATURE_BYTES + 1), f"the signature is larger than {MAX_SIGNATURE_BYTES} bytes"),
    ("é..x".encode(), "the signature is not a compact JWS (ASCII)"),
    (b"header.signature", "the signature is not a compact JWS (header.payload.signature)"),
    (b"a..b..c", "the signature is not a compact JWS (header.payload.signature)"),
    (b"AAAAA..AAAA", "the signature's header is not base64url"),  # 5 characters
    (b64url(b"{not json").encode() + b"..AAAA", "the signature's header is not JSON"),
    (b64url(b"[" * 20_000).encode() + b"..AAAA", "the signature's header is not JSON"),
    (b64url(b'["ES256"]').encode() + b"..AAAA", "the signature's alg must be one of ES256, EdDSA"),
])
def test_what_is_not_a_compact_detached_jws_is_refused_before_any_key_is_read(
        signature: bytes, message: str) -> None:
    uow = FakeUnitOfWork()  # no PKI at all: these are refused before it is asked
    assert refused(uow, signature) == message


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES384", None])
def test_only_es256_and_eddsa_are_accepted(
        platform: tuple[FakeUnitOfWork, Signer], alg: str | None) -> None:
    uow, signer = platform
    assert refused(uow, signed(REPORT, signer, alg=alg)) == (
        "the signature's alg must be one of ES256, EdDSA")


def test_an_unencoded_payload_is_refused(platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    assert refused(uow, signed(REPORT, signer, b64=False, crit=["b64"])) == (
        "unencoded payloads (b64: false) are not accepted")


@pytest.mark.parametrize("chain", [None, [], "MIIB", ["a", "b", "c"]])
def test_the_header_must_carry_the_signers_chain_of_one_or_two_certificates(
        platform: tuple[FakeUnitOfWork, Signer], chain: Any) -> None:
    uow, signer = platform
    header = {"alg": "ES256"} if chain is None else {"alg": "ES256", "x5c": chain}
    assert refused(uow, jws(REPORT, signer.key, header)) == (
        "the signature's header needs x5c: the signer's chain, leaf first")


def test_the_chain_must_be_base64_der_certificates(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, signer = platform
    assert refused(uow, signed(REPORT, signer, x5c=["not base64!"])) == (
        "x5c must hold base64 DER certificates")
    assert refused(uow, signed(REPORT, signer, x5c=[base64.b64encode(b"junk").decode()])) == (
        "the signer's certificate is not accepted: "
        "the chain holds something that is not a DER certificate")


def test_a_certificate_of_another_platform_is_refused(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    uow, _signer = platform
    _elsewhere, stranger = platform_with_signer()
    message = refused(uow, signed(REPORT, Signer(stranger.serial, stranger.key,
                                                 stranger.chain[:1])))
    assert message.startswith("the signer's certificate is not accepted: the certificate chain "
                              "does not verify up to the platform root")
    assert refused(uow, signed(REPORT, stranger)) == (
        "the signer's certificate is not accepted: "
        "the chain's CA certificate is not this platform's issuing CA")


def test_a_platform_without_its_pki_accepts_no_signature(
        platform: tuple[FakeUnitOfWork, Signer]) -> None:
    _uow, signer = platform
    assert refused(FakeUnitOfWork(), signed(REPORT, signer)) == (
        "the signer's certificate is not accepted: "
        "the platform PKI is not initialized: run 'carevault pki init'")


def test_a_certificate_unknown_to_the_platforms_records_is_refused() -> None:
    uow, signer = platform_with_signer("ORG-H2")
    uow.pki.certificates.clear()  # issued by this CA, but not recorded (a stolen CA key)
    assert refused(uow, signed(REPORT, signer)) == (
        f"the signer's certificate is not accepted: "
        f"certificate {signer.serial} was not issued by this platform")


def test_a_revoked_certificate_signs_nothing_from_its_revocation() -> None:
    uow, signer = platform_with_signer("ORG-H3")
    signature = signed(REPORT, signer)
    with uow:
        pki.revoke(uow, signer.serial, "keyCompromise", NOW + timedelta(hours=1))
    assert refused(uow, signature, now=NOW + timedelta(hours=2)) == (
        f"the signer's certificate is not accepted: certificate {signer.serial} was revoked "
        f"on 2026-12-01T10:00:00+00:00 (keyCompromise)")


def test_a_certificate_signs_nothing_once_expired() -> None:
    uow, signer = platform_with_signer("ORG-H4")
    signature = signed(REPORT, signer)
    with uow:
        assert verify_detached(uow, signature, REPORT, NOW + timedelta(days=364)).serial == (
            signer.serial)
    assert refused(uow, signature, now=NOW + timedelta(days=366)) == (
        "the signer's certificate is not accepted: "
        "the client certificate expired on 2027-12-01T09:00:00+00:00")
