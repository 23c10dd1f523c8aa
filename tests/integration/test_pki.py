"""The platform PKI on both databases: CAs sealed under the key source, client certificates for
the directory's professionals and systems, revocation, the CRL and CA chain over HTTP, and the
chain check the token endpoint relies on."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, select
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.pki.credential_files import CredentialFiles, write_credentials
from carevault.adapters.pki.x509_authority import (
    LeafSubject,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
    new_key,
    open_key,
)
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.pki_store import CertificateRecord, PkiStore, StoredAuthority
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import Platform, directory_context
from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from carevault.services.pki import (
    CRL_LIFETIME,
    CaKeyUnavailable,
    CertificateRejected,
    ClientIdentity,
    Credentials,
    PkiContext,
    PkiNotInitialized,
    ca_chain_pem,
    current_crl,
    init_pki,
    issue_practitioner_certificate,
    issue_system_certificate,
    revoke,
    validate_client_chain,
)
from carevault.settings import Settings
from support.builders import hospital

Units = Callable[[], SqlUnitOfWork]


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def pki_ctx(settings: Settings) -> PkiContext:
    return PkiContext(systems=directory_context(settings).systems,
                      ca_password=ca_key_password(settings.key_source), clock=now)


@pytest.fixture
def initialized(uow: Units, pki_ctx: PkiContext) -> PkiContext:
    with uow() as unit:
        assert init_pki(unit, pki_ctx)
    return pki_ctx


@dataclass(frozen=True)
class People:
    hospital_id: str
    closed_id: str  # an inactive organization
    active_id: str  # works at the hospital
    suspended_id: str
    freelance_id: str  # no organization


@pytest.fixture
def people(uow: Units, ctx: DirectoryContext) -> People:
    closed = new_organization(ctx.systems, identifier="ORG-OLD", name="Clinique Fermée")
    closed["active"] = False
    with uow() as unit:
        org, old = svc.register_organizations(unit, ctx, [hospital(ctx.systems, "ORG-0001"),
                                                          closed])
    with uow() as unit:
        pairs = svc.register_professionals(unit, ctx, [
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-123456",
                                                 family="Müller", given=["Anne"]),
                                "physician", organization_id=org.id),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-654321",
                                                 family="Weber", given=["Paul"],
                                                 licence_status="suspended"), "nurse"),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-777",
                                                 family="Schmit", given=["Lea"]), "dentist"),
        ])
    (active, _), (suspended, _), (freelance, _) = pairs
    return People(org.id, old.id, active.id, suspended.id, freelance.id)


def issue(uow: Units, ctx: PkiContext, out: Path, *, practitioner: str | None = None,
          organization: str | None = None) -> tuple[CertificateRecord, CredentialFiles]:
    written: list[CredentialFiles] = []

    def deliver(credentials: Credentials) -> None:
        written.append(write_credentials(out, credentials.record.certificate_pem,
                                         credentials.private_key_pem, credentials.chain_pem))

    with uow() as unit:
        if practitioner is not None:
            record = issue_practitioner_certificate(unit, ctx, practitioner, deliver)
        else:
            assert organization is not None
            record = issue_system_certificate(unit, ctx, organization, deliver)
    return record, written[0]


def chain_of(files: CredentialFiles) -> list[bytes]:
    """The chain as a client presents it (JOSE x5c): the certificate, then the issuing CA."""
    return [x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        serialization.Encoding.DER) for path in (files.certificate, files.chain)]


def validate(uow: Units, chain: list[bytes], at: datetime | None = None) -> ClientIdentity:
    with uow() as unit:
        return validate_client_chain(unit, chain, at or now())


def stored_rows(engine: Engine, table: Table) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table))]


def issuing_key(engine: Engine, ctx: PkiContext) -> tuple[x509.Certificate,
                                                          ec.EllipticCurvePrivateKey]:
    rows = {r["name"]: r for r in stored_rows(engine, t.pki_authority)}
    issuing = rows["issuing"]
    return (x509.load_pem_x509_certificate(str(issuing["certificate"]).encode()),
            open_key(str(issuing["encrypted_key"]), ctx.ca_password))


# --- the authorities --------------------------------------------------------------------------


def test_init_is_idempotent(uow: Units, pki_ctx: PkiContext, engine: Engine) -> None:
    with uow() as unit:
        assert init_pki(unit, pki_ctx) is True
    first = stored_rows(engine, t.pki_authority)
    with uow() as unit:
        assert init_pki(unit, pki_ctx) is False
    assert stored_rows(engine, t.pki_authority) == first
    assert sorted(r["name"] for r in first) == ["issuing", "root"]


def test_a_concurrent_init_that_loses_the_race_stores_nothing(
        initialized: PkiContext, uow: Units, engine: Engine) -> None:
    before = stored_rows(engine, t.pki_authority)
    with uow() as unit:
        late = [StoredAuthority(name, "certificate", "key", now()) for name in ("root", "issuing")]
        assert PkiStore(unit.directory.connection).add_authorities(late) is False
    assert stored_rows(engine, t.pki_authority) == before


def test_ca_keys_are_stored_encrypted_under_the_key_source(
        initialized: PkiContext, engine: Engine, tmp_path: Path) -> None:
    rows = stored_rows(engine, t.pki_authority)
    for row in rows:
        sealed = str(row["encrypted_key"])
        assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        for value in row.values():
            assert "BEGIN PRIVATE KEY" not in str(value)
            assert "BEGIN EC PRIVATE KEY" not in str(value)
        with pytest.raises(TypeError):  # a password is required
            serialization.load_pem_private_key(sealed.encode(), None)
        key = open_key(sealed, initialized.ca_password)
        certificate = x509.load_pem_x509_certificate(str(row["certificate"]).encode())
        assert certificate.public_key() == key.public_key()
    # Another environment's key file opens none of them.
    other = tmp_path / "other.key"
    create_key_file(other)
    other_password = ca_key_password(f"file:{other}")
    assert other_password != initialized.ca_password
    for row in rows:
        with pytest.raises(ValueError):  # noqa: PT011 - cryptography's wording varies
            open_key(str(row["encrypted_key"]), other_password)


def test_the_crl_needs_the_right_key_source(initialized: PkiContext, uow: Units,
                                            tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    create_key_file(other)
    with uow() as unit, pytest.raises(CaKeyUnavailable, match="key source"):
        current_crl(unit, ca_key_password(f"file:{other}"), now())


def test_nothing_is_issued_before_init(uow: Units, pki_ctx: PkiContext, people: People,
                                       tmp_path: Path, platform: Platform) -> None:
    with pytest.raises(PkiNotInitialized, match="pki init"):
        issue(uow, pki_ctx, tmp_path / "out", practitioner=people.active_id)
    assert not (tmp_path / "out").exists()
    # A bare client: the `client` fixture's token would have initialized the PKI.
    with TestClient(platform.app, client=("127.0.0.1", 1)) as bare:
        responses = [bare.get(path) for path in ("/pki/crl", "/pki/ca")]
    for response in responses:
        assert response.status_code == 404
        assert "not initialized" in response.json()["error"]
    with pytest.raises(CertificateRejected, match="not initialized"):
        validate(uow, [b"\x30\x00"])


# --- issuing ----------------------------------------------------------------------------------


def test_an_active_professional_gets_a_verifiable_certificate(
        initialized: PkiContext, uow: Units, people: People, tmp_path: Path,
        client: TestClient) -> None:
    out = tmp_path / "anne"
    record, files = issue(uow, initialized, out, practitioner=people.active_id)
    assert record.client_id == "HP-123456"
    assert record.kind == "practitioner"
    assert record.practitioner_id == people.active_id
    assert record.organization_id == people.hospital_id
    assert record.not_after - record.not_before == timedelta(days=365)
    assert sorted(os.listdir(out)) == ["cert.pem", "chain.pem", "key.pem"]
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert certificate.public_key() == key.public_key()
    assert format(certificate.serial_number, "x") == record.serial
    assert certificate.subject.rfc4514_string() == record.subject
    assert "CN=Anne Müller" in record.subject
    assert "O=Hôpital Test" in record.subject
    ca = client.get("/pki/ca")
    root = x509.load_pem_x509_certificates(ca.content)[-1]
    issuing = x509.load_pem_x509_certificate(files.chain.read_bytes())
    assert issuing == x509.load_pem_x509_certificates(ca.content)[0]

    from cryptography.x509 import verification  # cryptography >= 43 (pyproject.toml)

    verifier = (verification.PolicyBuilder().store(verification.Store([root])).time(now())
                .build_client_verifier())
    verified = verifier.verify(certificate, [issuing])
    assert verified.subjects == [
        x509.UniformResourceIdentifier("urn:carevault:client:HP-123456")]

    identity = validate(uow, chain_of(files))
    assert identity.client_id == "HP-123456"
    assert identity.kind == "practitioner"
    assert identity.practitioner_id == people.active_id
    assert identity.organization_id == people.hospital_id
    assert identity.serial == record.serial
    assert identity.public_key == key.public_key()
    # The leaf alone is enough: the platform knows its own issuing CA.
    assert validate(uow, chain_of(files)[:1]).client_id == "HP-123456"


def test_a_professional_without_an_organization_gets_no_o(
        initialized: PkiContext, uow: Units, people: People, tmp_path: Path) -> None:
    record, _ = issue(uow, initialized, tmp_path / "lea", practitioner=people.freelance_id)
    assert record.organization_id is None
    assert "O=" not in record.subject
    assert record.client_id == "HP-777"


def test_a_suspended_professional_is_refused(initialized: PkiContext, uow: Units,
                                             people: People, tmp_path: Path,
                                             engine: Engine) -> None:
    with pytest.raises(BusinessRuleViolation, match="suspended"):
        issue(uow, initialized, tmp_path / "out", practitioner=people.suspended_id)
    assert not (tmp_path / "out").exists()
    assert stored_rows(engine, t.pki_certificate) == []


@pytest.mark.parametrize("unknown", ["no-such-id", "Practitioner/x"])
def test_an_unknown_professional_is_refused(initialized: PkiContext, uow: Units,
                                            people: People, tmp_path: Path, unknown: str,
                                            engine: Engine) -> None:
    with pytest.raises(NotFound, match="not known"):
        issue(uow, initialized, tmp_path / "out", practitioner=unknown)
    with pytest.raises(NotFound):  # an organization's id is not a professional's
        issue(uow, initialized, tmp_path / "out", practitioner=people.hospital_id)
    assert stored_rows(engine, t.pki_certificate) == []


def test_a_system_certificate_names_the_organization(initialized: PkiContext, uow: Units,
                                                     people: People, tmp_path: Path) -> None:
    record, files = issue(uow, initialized, tmp_path / "his", organization=people.hospital_id)
    assert record.client_id == "system:ORG-0001"
    assert record.kind == "system"
    assert record.practitioner_id is None
    assert record.organization_id == people.hospital_id
    assert "O=Hôpital Test" in record.subject
    identity = validate(uow, chain_of(files))
    assert identity.client_id == "system:ORG-0001"
    assert identity.kind == "system"
    with pytest.raises(BusinessRuleViolation, match="not active"):
        issue(uow, initialized, tmp_path / "closed", organization=people.closed_id)
    with pytest.raises(NotFound):
        issue(uow, initialized, tmp_path / "nowhere", organization="no-such-org")


def test_an_identifier_a_certificate_cannot_carry_is_refused(
        initialized: PkiContext, uow: Units, ctx: DirectoryContext, tmp_path: Path) -> None:
    with uow() as unit:
        ((odd, _),) = svc.register_professionals(unit, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier="HP_1", family="X", given=["Y"]),
            "physician")])
    with pytest.raises(BusinessRuleViolation, match="cannot be carried in a certificate"):
        issue(uow, initialized, tmp_path / "out", practitioner=odd.id)


def test_existing_files_are_never_overwritten(initialized: PkiContext, uow: Units,
                                              people: People, tmp_path: Path,
                                              engine: Engine) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "key.pem").write_text("precious")
    with pytest.raises(Exception, match="refusing to overwrite"):
        issue(uow, initialized, out, practitioner=people.active_id)
    assert (out / "key.pem").read_text() == "precious"
    assert sorted(os.listdir(out)) == ["key.pem"]
    assert stored_rows(engine, t.pki_certificate) == []  # delivery failed: nothing recorded


# --- revocation -------------------------------------------------------------------------------


def test_a_revoked_certificate_is_refused_at_once_and_listed_on_the_crl(
        initialized: PkiContext, uow: Units, people: People, tmp_path: Path,
        client: TestClient) -> None:
    record, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    kept, _ = issue(uow, initialized, tmp_path / "his", organization=people.hospital_id)
    chain = chain_of(files)
    assert validate(uow, chain).serial == record.serial
    before = client.get("/pki/crl")
    assert before.status_code == 200
    assert len(x509.load_der_x509_crl(before.content)) == 0

    with uow() as unit:
        revoked = revoke(unit, record.serial.upper(), "keyCompromise", now())
    assert revoked.revoked_at is not None
    assert revoked.revocation_reason == "keyCompromise"
    with pytest.raises(CertificateRejected, match="revoked"):
        validate(uow, chain)

    response = client.get("/pki/crl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    issuing = x509.load_pem_x509_certificate(files.chain.read_bytes())
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.issuer == issuing.subject
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == CRL_LIFETIME == timedelta(minutes=5)
    assert abs(crl.last_update_utc - now()) < timedelta(minutes=1)
    entry = crl.get_revoked_certificate_by_serial_number(int(record.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise)
    assert crl.get_revoked_certificate_by_serial_number(int(kept.serial, 16)) is None
    # CRL numbers only grow.
    later = x509.load_der_x509_crl(client.get("/pki/crl").content)
    number = x509.CRLNumber
    assert (later.extensions.get_extension_for_class(number).value.crl_number
            >= crl.extensions.get_extension_for_class(number).value.crl_number)


def test_revocation_refusals(initialized: PkiContext, uow: Units, people: People,
                             tmp_path: Path) -> None:
    record, _ = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    with uow() as unit, pytest.raises(InvalidInput, match="unknown revocation reason"):
        revoke(unit, record.serial, "removeFromCRL", now())
    with uow() as unit, pytest.raises(InvalidInput, match="unknown revocation reason"):
        revoke(unit, record.serial, "because", now())
    with uow() as unit, pytest.raises(NotFound, match="no certificate with serial"):
        revoke(unit, "abcdef", "superseded", now())
    with uow() as unit, pytest.raises(InvalidInput, match="not a hexadecimal"):
        revoke(unit, "xyz", "superseded", now())
    # Colons and upper case, as openssl prints serials, name the same certificate.
    colons = ":".join(record.serial.zfill(40)[i:i + 2] for i in range(0, 40, 2)).upper()
    with uow() as unit:
        revoke(unit, colons, "superseded", now())
    with uow() as unit, pytest.raises(Conflict, match="already revoked"):
        revoke(unit, record.serial, "keyCompromise", now())


def test_expired_revoked_certificates_leave_the_crl(initialized: PkiContext, uow: Units,
                                                    people: People, tmp_path: Path) -> None:
    record, _ = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    with uow() as unit:
        revoke(unit, record.serial, "superseded", now())
    with uow() as unit:
        listed = x509.load_der_x509_crl(current_crl(unit, initialized.ca_password, now()))
        expired = x509.load_der_x509_crl(current_crl(
            unit, initialized.ca_password, record.not_after + timedelta(seconds=1)))
    assert listed.get_revoked_certificate_by_serial_number(int(record.serial, 16)) is not None
    assert len(expired) == 0


def test_get_ca_returns_the_issuing_then_the_root_certificate(
        initialized: PkiContext, client: TestClient, uow: Units) -> None:
    response = client.get("/pki/ca")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/pem-certificate-chain")
    issuing, root = x509.load_pem_x509_certificates(response.content)
    assert root.subject == root.issuer
    assert issuing.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    with uow() as unit:
        assert ca_chain_pem(unit) == response.text


# --- chains that must be refused --------------------------------------------------------------


def test_a_chain_from_another_ca_is_refused(initialized: PkiContext, uow: Units,
                                            people: People, tmp_path: Path) -> None:
    record, _ = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    root_key, issuing_key = new_key(), new_key()
    root = build_root(root_key, ca_name("CareVault Root CA (dev)"), now())
    issuing = build_issuing(issuing_key, ca_name("CareVault Issuing CA (dev)"), root, root_key,
                            now())
    # Same names, same client_id, even the same serial: only the keys differ.
    forged = build_leaf(new_key().public_key(), LeafSubject("Anne Müller", "HP-123456"),
                        issuing, issuing_key, now(), serial=int(record.serial, 16))
    der = [c.public_bytes(serialization.Encoding.DER) for c in (forged, issuing)]
    with pytest.raises(CertificateRejected, match="not this platform's issuing CA"):
        validate(uow, der)
    with pytest.raises(CertificateRejected, match="does not verify"):
        validate(uow, der[:1])


def test_an_expired_certificate_is_refused(initialized: PkiContext, uow: Units,
                                           engine: Engine) -> None:
    issuing, key = issuing_key(engine, initialized)
    expired = build_leaf(new_key().public_key(), LeafSubject("Old", "HP-123456"), issuing, key,
                         now() - timedelta(days=400))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in (expired, issuing)]
    with pytest.raises(CertificateRejected, match="expired"):
        validate(uow, chain)


def test_a_certificate_is_refused_before_it_is_valid(initialized: PkiContext, uow: Units,
                                                     people: People, tmp_path: Path) -> None:
    record, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    with pytest.raises(CertificateRejected, match="not valid before"):
        validate(uow, chain_of(files), record.not_before - timedelta(seconds=1))


def test_a_chain_checked_once_is_still_dated_on_every_check(
        initialized: PkiContext, uow: Units, people: People, tmp_path: Path) -> None:
    """A verified chain is remembered, its dates are not: the same certificate is refused once
    it has expired, or while it is not yet valid, after it has been accepted."""
    record, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    chain = chain_of(files)
    assert validate(uow, chain).serial == record.serial
    assert validate(uow, chain).serial == record.serial
    with pytest.raises(CertificateRejected, match="expired"):
        validate(uow, chain, record.not_after + timedelta(seconds=1))
    with pytest.raises(CertificateRejected, match="not valid before"):
        validate(uow, chain, record.not_before - timedelta(seconds=1))
    assert validate(uow, chain).serial == record.serial


def test_a_certificate_the_platform_never_recorded_is_refused(
        initialized: PkiContext, uow: Units, engine: Engine) -> None:
    # Signed with the real issuing key (as by someone who stole it) but never issued.
    issuing, key = issuing_key(engine, initialized)
    stray = build_leaf(new_key().public_key(), LeafSubject("Stray", "HP-123456"), issuing, key,
                       now())
    with pytest.raises(CertificateRejected, match="not issued by this platform"):
        validate(uow, [stray.public_bytes(serialization.Encoding.DER)])


def test_a_tampered_signature_is_refused(initialized: PkiContext, uow: Units, people: People,
                                         tmp_path: Path) -> None:
    _, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    leaf, issuing = chain_of(files)
    # The signature is the last field of the DER: change its last byte.
    tampered = leaf[:-1] + bytes([leaf[-1] ^ 0x01])
    with pytest.raises(CertificateRejected):
        validate(uow, [tampered, issuing])
    # A changed subject (the client_id itself) breaks the signature too.
    swapped = leaf.replace(b"HP-123456", b"HP-999999")
    assert swapped != leaf
    with pytest.raises(CertificateRejected, match="does not verify"):
        validate(uow, [swapped, issuing])


def test_ca_certificates_and_odd_chains_are_refused(initialized: PkiContext, uow: Units,
                                                    people: People, tmp_path: Path) -> None:
    _, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    leaf, issuing = chain_of(files)
    with uow() as unit:
        root = x509.load_pem_x509_certificates(ca_chain_pem(unit).encode())[-1]
    root_der = root.public_bytes(serialization.Encoding.DER)
    for chain in ([issuing], [issuing, root_der], [root_der], [leaf, leaf], [leaf, root_der],
                  [], [leaf, issuing, root_der], [issuing, leaf]):
        with pytest.raises(CertificateRejected):
            validate(uow, chain)


def test_a_certificate_with_an_invalid_version_is_refused(good_chain: list[bytes],
                                                          uow: Units) -> None:
    # Found by the fuzzing below: cryptography raises its own InvalidVersion for this one.
    leaf, issuing = good_chain
    version = leaf.index(b"\xa0\x03\x02\x01\x02") + 4
    wrong = leaf[:version] + b"\x03" + leaf[version + 1:]
    with pytest.raises(CertificateRejected, match="not a DER certificate"):
        validate(uow, [wrong, issuing])


def _garbled(data: st.DataObject, good: list[bytes]) -> list[bytes]:
    def element() -> bytes:
        choice = data.draw(st.sampled_from(["good", "random", "flipped", "truncated"]))
        if choice == "random":
            return data.draw(st.binary(max_size=600))
        original = good[data.draw(st.integers(0, len(good) - 1))]
        if choice == "truncated":
            return original[:data.draw(st.integers(0, len(original)))]
        if choice == "flipped":
            changed = bytearray(original)
            for _ in range(data.draw(st.integers(1, 4))):
                position = data.draw(st.integers(0, len(changed) - 1))
                changed[position] ^= data.draw(st.integers(1, 255))
            return bytes(changed)
        return original

    return [element() for _ in range(data.draw(st.integers(0, 3)))]


@pytest.fixture
def good_chain(initialized: PkiContext, uow: Units, people: People,
               tmp_path: Path) -> list[bytes]:
    _, files = issue(uow, initialized, tmp_path / "anne", practitioner=people.active_id)
    return chain_of(files)


@hypothesis_settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbled_chains_raise_only_certificate_rejected(good_chain: list[bytes], uow: Units,
                                                         data: st.DataObject) -> None:
    chain = _garbled(data, good_chain)
    try:
        identity = validate(uow, chain)
    except CertificateRejected:
        return
    # Only the genuine certificate (with or without its issuing CA) gets through.
    assert chain[0] == good_chain[0]
    assert identity.client_id == "HP-123456"
