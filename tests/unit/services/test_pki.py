"""The platform PKI, on a unit of work in memory: `init_pki` makes a root and an issuing CA once,
their keys sealed; a certificate goes only to a professional with an active licence or to an
active organization's system, names them (and the professional's sole organization), and is
recorded only if its key was handed over; a revocation is at once refused by the chain check
and listed on the CRL; the public documents (CRL, chain, status) are read each in a
transaction of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import pki
from support.builders import URN_SYSTEMS, hospital
from support.fake_professionals import FakeProfessionalDirectory, professional_unit_of_work
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SYSTEMS = URN_SYSTEMS
PASSWORD = b"ca password"


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    """A platform whose directory knows two professionals (pr-1 works at org-1), and the
    credentials its PKI delivered."""

    uow: FakeUnitOfWork = field(default_factory=professional_unit_of_work)
    clock: Clock = field(default_factory=Clock)
    delivered: list[pki.Credentials] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctx = pki.PkiContext(SYSTEMS, PASSWORD, self.clock, environment="test")
        self.directory.add_professional("pr-1", new_practitioner(
            SYSTEMS, identifier="HP-1", family="Tester", given=["Theo"]))
        self.directory.add_professional("pr-2", new_practitioner(
            SYSTEMS, identifier="HP-2", family="Other", given=["Olga"]))
        self.directory.set_organization("org-1", hospital(SYSTEMS, "ORG-H1"))
        self.directory.set_organization("org-2", hospital(SYSTEMS, "ORG-H2"))
        self.directory.add_role("role-1", "pr-1", "org-1")

    @property
    def directory(self) -> FakeProfessionalDirectory:
        assert isinstance(self.uow.directory, FakeProfessionalDirectory)
        return self.uow.directory

    def init(self) -> World:
        with self.uow:
            assert pki.init_pki(self.uow, self.ctx)
        return self

    def practitioner(self, practitioner_id: str = "pr-1") -> pki.CertificateRecord:
        with self.uow:
            return pki.issue_practitioner_certificate(self.uow, self.ctx, practitioner_id,
                                                      self.delivered.append)

    def system(self, organization_id: str = "org-1") -> pki.CertificateRecord:
        with self.uow:
            return pki.issue_system_certificate(self.uow, self.ctx, organization_id,
                                                self.delivered.append)

    def check(self, record: pki.CertificateRecord, at: datetime = NOW) -> pki.ClientIdentity:
        with self.uow:
            return pki.validate_client_chain(self.uow, [der(record.certificate_pem)], at)

    def refused(self, record: pki.CertificateRecord, at: datetime = NOW) -> str:
        with pytest.raises(pki.CertificateRejected) as error:
            self.check(record, at)
        return error.value.message


@pytest.fixture
def world() -> World:
    return World().init()


def der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def crl_of(world: World, at: datetime = NOW) -> x509.CertificateRevocationList:
    with world.uow:
        return x509.load_der_x509_crl(pki.current_crl(world.uow, PASSWORD, at))


# --- the authorities -------------------------------------------------------------------------


def test_init_makes_a_root_and_an_issuing_ca_whose_keys_are_stored_sealed() -> None:
    world = World()
    with world.uow:
        assert pki.init_pki(world.uow, world.ctx) is True
    assert world.uow.commits == 1
    stored = world.uow.pki.authorities()
    assert sorted(stored) == ["issuing", "root"]
    root, issuing = (certificate(stored[n].certificate_pem) for n in ("root", "issuing"))
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "CareVault Root CA (test)")
    assert issuing.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    for authority in stored.values():
        assert authority.created_at == NOW
        assert "ENCRYPTED" in authority.encrypted_key_pem
        with pytest.raises(TypeError):  # no key opens without the password
            serialization.load_pem_private_key(authority.encrypted_key_pem.encode(), None)
    with world.uow:
        assert pki.ca_chain_pem(world.uow) == (stored["issuing"].certificate_pem
                                               + stored["root"].certificate_pem)


def test_init_a_second_time_changes_nothing() -> None:
    world = World().init()
    before = world.uow.pki.authorities()
    with world.uow:
        assert pki.init_pki(world.uow, world.ctx) is False
    assert world.uow.commits == 1
    assert world.uow.pki.authorities() == before


def test_before_init_there_is_no_certificate_no_chain_and_no_crl() -> None:
    world = World()
    with pytest.raises(pki.PkiNotInitialized, match="run 'carevault pki init'"):
        world.practitioner()
    with world.uow, pytest.raises(pki.PkiNotInitialized):
        pki.ca_chain_pem(world.uow)
    with world.uow, pytest.raises(pki.PkiNotInitialized):
        pki.current_crl(world.uow, PASSWORD, NOW)
    assert world.delivered == [] and world.uow.pki.certificates == {}
    assert world.uow.commits == 0


# --- issuing ---------------------------------------------------------------------------------


def test_a_licensed_professional_gets_a_certificate_naming_them_and_their_organization(
        world: World) -> None:
    record = world.practitioner()
    assert world.uow.commits == 2
    assert (record.client_id, record.kind, record.practitioner_id, record.organization_id) == (
        "HP-1", "practitioner", "pr-1", "org-1")
    assert world.uow.pki.certificate(record.serial) == record
    issued = certificate(record.certificate_pem)
    assert format(issued.serial_number, "x") == record.serial
    assert record.subject == issued.subject.rfc4514_string()
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Theo Tester"
    assert issued.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Hôpital Test")
    assert (record.not_before, record.not_after) == (NOW, NOW + timedelta(days=365))
    # The private key was handed over, and matches the certificate; the chain is the issuing CA.
    [credentials] = world.delivered
    assert credentials.record == record
    key = serialization.load_pem_private_key(credentials.private_key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == issued.public_key()
    assert credentials.chain_pem == world.uow.pki.authorities()["issuing"].certificate_pem
    identity = world.check(record)
    assert (identity.client_id, identity.kind, identity.practitioner_id,
            identity.organization_id, identity.serial) == (
        "HP-1", "practitioner", "pr-1", "org-1", record.serial)


def test_a_professional_whose_active_roles_name_no_single_organization_gets_none(
        world: World) -> None:
    assert world.practitioner("pr-2").organization_id is None  # no role
    world.directory.add_role("role-2", "pr-2", "org-1")
    world.directory.add_role("role-3", "pr-2", "org-2")
    two = world.practitioner("pr-2")
    assert two.organization_id is None
    assert not certificate(two.certificate_pem).subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)
    world.directory.add_role("role-3", "pr-2", "org-2", active=False)
    assert world.practitioner("pr-2").organization_id == "org-1"


def test_a_suspended_licence_or_an_inactive_professional_gets_no_certificate(
        world: World) -> None:
    world.directory.add_professional("pr-3", new_practitioner(
        SYSTEMS, identifier="HP-3", family="Sus", given=["Pen"], licence_status="suspended"))
    with pytest.raises(BusinessRuleViolation) as suspended:
        world.practitioner("pr-3")
    assert suspended.value.message == (
        "Practitioner/pr-3 has a suspended licence: no certificate is issued")
    world.directory.practitioner_resources["pr-2"]["active"] = False
    with pytest.raises(BusinessRuleViolation) as inactive:
        world.practitioner("pr-2")
    assert inactive.value.message == "Practitioner/pr-2 is not active: no certificate is issued"
    with pytest.raises(NotFound, match="Practitioner/nobody is not known"):
        world.practitioner("nobody")
    assert world.delivered == [] and world.uow.pki.certificates == {}
    assert world.uow.commits == 1


def test_an_identifier_a_certificate_cannot_carry_gets_no_certificate(world: World) -> None:
    world.directory.add_professional("pr-4", new_practitioner(
        SYSTEMS, identifier="HP_4", family="Under", given=["Score"]))
    with pytest.raises(BusinessRuleViolation, match="'HP_4' cannot be carried"):
        world.practitioner("pr-4")
    assert world.uow.pki.certificates == {} and world.delivered == []


def test_an_organizations_system_gets_a_certificate_named_after_it(world: World) -> None:
    record = world.system("org-2")
    assert (record.client_id, record.kind, record.practitioner_id, record.organization_id) == (
        "system:ORG-H2", "system", None, "org-2")
    issued = certificate(record.certificate_pem)
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Hôpital Test (system)")
    identity = world.check(record)
    assert (identity.client_id, identity.kind, identity.organization_id) == (
        "system:ORG-H2", "system", "org-2")


def test_an_inactive_or_unknown_organization_gets_no_certificate(world: World) -> None:
    world.directory.set_organization("org-3", {**hospital(SYSTEMS, "ORG-H3"), "active": False})
    with pytest.raises(BusinessRuleViolation) as inactive:
        world.system("org-3")
    assert inactive.value.message == (
        "Organization/org-3 is not active: no certificate is issued")
    with pytest.raises(NotFound):
        world.system("org-9")
    assert world.uow.pki.certificates == {} and world.delivered == []


def test_a_key_that_cannot_be_handed_over_leaves_no_certificate_recorded(world: World) -> None:
    def lost(credentials: pki.Credentials) -> None:
        raise OSError("the disk is full")

    with world.uow, pytest.raises(OSError, match="disk is full"):
        pki.issue_practitioner_certificate(world.uow, world.ctx, "pr-1", lost)
    assert world.uow.pki.certificates == {}
    assert world.uow.commits == 1


def test_no_certificate_is_issued_outside_the_issuing_cas_validity(world: World) -> None:
    issuing = certificate(world.uow.pki.authorities()["issuing"].certificate_pem)
    for moment in (issuing.not_valid_after_utc, NOW - timedelta(seconds=1)):
        world.clock.now = moment
        with pytest.raises(BusinessRuleViolation) as error:
            world.practitioner()
        assert error.value.message == "the issuing CA is not valid now: no certificate is issued"
    assert world.uow.pki.certificates == {} and world.delivered == []


def test_a_ca_key_sealed_under_another_password_is_unavailable(world: World) -> None:
    other = pki.PkiContext(SYSTEMS, b"another password", world.clock)
    with world.uow, pytest.raises(pki.CaKeyUnavailable, match="cannot be opened"):
        pki.issue_practitioner_certificate(world.uow, other, "pr-1", world.delivered.append)
    with world.uow, pytest.raises(pki.CaKeyUnavailable):
        pki.current_crl(world.uow, b"another password", NOW)
    assert world.uow.pki.certificates == {} and world.delivered == []


# --- revocation and the CRL ------------------------------------------------------------------


def test_a_revoked_certificate_is_refused_at_once_and_listed_on_the_crl(world: World) -> None:
    record = world.practitioner()
    kept = world.system()
    later = NOW + timedelta(hours=1)
    with world.uow:
        revoked = pki.revoke(world.uow, record.serial.upper(), "keyCompromise", later)
    assert (revoked.revoked_at, revoked.revocation_reason) == (later, "keyCompromise")
    assert world.uow.pki.certificate(record.serial) == revoked
    assert world.uow.commits == 4
    assert world.refused(record, later) == (
        f"certificate {record.serial} was revoked on {later.isoformat(timespec='seconds')} "
        "(keyCompromise)")
    assert world.check(kept, later).serial == kept.serial
    crl = crl_of(world, later)
    [entry] = list(crl)
    assert format(entry.serial_number, "x") == record.serial
    assert entry.revocation_date_utc == later
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise)


def test_a_serial_is_read_in_any_usual_spelling(world: World) -> None:
    record = world.practitioner()
    even = record.serial.rjust(len(record.serial) + len(record.serial) % 2, "0")
    colons = ":".join(even[i:i + 2] for i in range(0, len(even), 2))
    assert pki.parse_serial(f" 0x{record.serial.upper()} ") == record.serial
    assert pki.parse_serial(colons.upper()) == record.serial
    assert pki.parse_serial("00ff") == "ff"
    for bad in ("", "0x", "xyz", "1" * 65, "-1", "1_2", "+ff", "1 2"):
        with pytest.raises(InvalidInput, match="is not a hexadecimal serial number"):
            pki.parse_serial(bad)


def test_revoking_twice_an_unknown_serial_or_an_unknown_reason_is_refused(world: World) -> None:
    record = world.practitioner()
    with world.uow, pytest.raises(InvalidInput, match="unknown revocation reason 'lost'"):
        pki.revoke(world.uow, record.serial, "lost", NOW)
    with world.uow, pytest.raises(NotFound) as unknown:
        pki.revoke(world.uow, "abc", "keyCompromise", NOW)
    assert unknown.value.message == "no certificate with serial abc was issued by this platform"
    assert world.uow.pki.certificate(record.serial).revoked_at is None
    with world.uow:
        pki.revoke(world.uow, record.serial, "superseded", NOW)
    commits = world.uow.commits
    with world.uow, pytest.raises(Conflict) as twice:
        pki.revoke(world.uow, record.serial, "keyCompromise", NOW + timedelta(days=1))
    assert twice.value.message == (
        f"certificate {record.serial} was already revoked on "
        f"{NOW.isoformat(timespec='seconds')} (superseded)")
    assert world.uow.pki.certificate(record.serial).revocation_reason == "superseded"
    assert world.uow.commits == commits


def test_a_revocation_that_another_one_overtook_is_a_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    record = world.practitioner()
    store = world.uow.pki
    read = store.certificate

    def overtaken(serial: str) -> pki.CertificateRecord | None:
        found = read(serial)
        store.revoke(serial, NOW, "superseded")  # another transaction, between read and write
        return found

    monkeypatch.setattr(store, "certificate", overtaken)
    commits = world.uow.commits
    with world.uow, pytest.raises(Conflict) as error:
        pki.revoke(world.uow, record.serial, "keyCompromise", NOW)
    assert error.value.message == f"certificate {record.serial} was revoked meanwhile"
    assert world.uow.commits == commits


def test_the_crl_lives_five_minutes_is_signed_by_the_issuing_ca_and_forgets_expired_ones(
        world: World) -> None:
    record = world.practitioner()
    with world.uow:
        pki.revoke(world.uow, record.serial, "superseded", NOW)
    issuing = certificate(world.uow.pki.authorities()["issuing"].certificate_pem)
    crl = crl_of(world)
    assert crl.issuer == issuing.subject
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + pki.CRL_LIFETIME)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == int(NOW.timestamp() * 1000)
    assert [format(e.serial_number, "x") for e in crl] == [record.serial]
    # Once the certificate has expired, it is refused anyway: the CRL no longer lists it.
    after = record.not_after + timedelta(seconds=1)
    assert list(crl_of(world, after)) == []


# --- checking a chain ------------------------------------------------------------------------


def test_a_chain_that_is_no_certificate_of_this_platform_is_refused(world: World) -> None:
    record = world.practitioner()
    issuing = world.uow.pki.authorities()["issuing"].certificate_pem
    root = world.uow.pki.authorities()["root"].certificate_pem

    def refused(chain: list[bytes], at: datetime = NOW) -> str:
        with world.uow, pytest.raises(pki.CertificateRejected) as error:
            pki.validate_client_chain(world.uow, chain, at)
        return error.value.message

    assert refused([]) == (
        "present the client certificate, optionally followed by the issuing CA certificate")
    assert refused([der(record.certificate_pem), der(issuing), der(root)]).startswith("present")
    assert refused([b"not a certificate"]) == (
        "the chain holds something that is not a DER certificate")
    assert refused([der(record.certificate_pem), der(root)]) == (
        "the chain's CA certificate is not this platform's issuing CA")
    assert refused([der(record.certificate_pem), der(issuing)],
                   record.not_after).startswith("the client certificate expired on")
    assert refused([der(record.certificate_pem)], NOW - timedelta(seconds=1)).startswith(
        "the client certificate is not valid before")
    # With the issuing CA after it, the chain is the same client.
    with world.uow:
        assert pki.validate_client_chain(
            world.uow, [der(record.certificate_pem), der(issuing)], NOW).serial == record.serial


def test_a_certificate_of_another_platform_or_unrecorded_here_is_refused(world: World) -> None:
    elsewhere = World().init()
    theirs = elsewhere.practitioner()
    assert world.refused(theirs).startswith(
        "the certificate chain does not verify up to the platform root")
    ours = world.practitioner()
    del world.uow.pki.certificates[ours.serial]
    assert world.refused(ours) == f"certificate {ours.serial} was not issued by this platform"


def test_before_init_a_chain_is_refused_not_an_error() -> None:
    world = World()
    with world.uow, pytest.raises(pki.CertificateRejected, match="not initialized"):
        pki.validate_client_chain(world.uow, [b"whatever"], NOW)


# --- the public documents --------------------------------------------------------------------


def test_the_public_documents_are_the_chain_the_crl_and_the_status(world: World) -> None:
    record = world.practitioner()
    world.system()
    with world.uow:
        pki.revoke(world.uow, record.serial, "keyCompromise", NOW)
    documents = pki.PublicDocuments(lambda: world.uow, PASSWORD, world.clock)
    commits = world.uow.commits
    stored = world.uow.pki.authorities()
    assert documents.chain_pem() == (stored["issuing"].certificate_pem
                                     + stored["root"].certificate_pem)
    crl = x509.load_der_x509_crl(documents.crl())
    assert [format(e.serial_number, "x") for e in crl] == [record.serial]
    status = documents.status()
    assert (status.initialized, status.checked_at, status.revoked) == (True, NOW, 1)
    assert (status.crl_issued, status.crl_next, status.crl_signature_valid) == (
        NOW, NOW + pki.CRL_LIFETIME, True)
    assert [(a.role, a.not_before) for a in status.authorities] == [
        ("root", NOW), ("issuing", NOW)]
    root = certificate(stored["root"].certificate_pem)
    assert status.authorities[0].serial == format(root.serial_number, "x")
    assert status.authorities[0].subject == root.subject.rfc4514_string()
    assert world.uow.commits == commits  # reading writes nothing


def test_the_status_of_a_platform_without_pki_says_so() -> None:
    world = World()
    status = pki.PublicDocuments(lambda: world.uow, PASSWORD, world.clock).status()
    assert status == pki.PkiStatus(initialized=False, checked_at=NOW)
