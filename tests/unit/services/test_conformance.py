"""The conformance sandbox (services/conformance.py), on a unit of work and an audit log in
memory with the platform's real PKI: registering a vendor's system makes its organization,
physician, authorities and system certificate, in the sandbox's environment only, once per name;
a report is what the audit log says the system's client did since its registration, signed by the
platform's key; a report allows production credentials only when it verifies under that key
alone, was made in the sandbox, is for that very system and passes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.authorization import Authority
from carevault.domain.conformance import STEP_KEYS
from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.fhirmodel.directory import new_organization
from carevault.services import conformance as svc
from carevault.services import pki
from carevault.services.conformance import Registration, ReportRejected, SandboxContext
from support.fake_audit_log import FakeAuditLog
from support.fake_directory import directory_context
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CTX = directory_context(lambda: NOW)
SYSTEM = "Demo HIS 4.2"
CLIENT = "system:SANDBOX-DEMO-HIS-4-2"
DENY = "identity → record → access: deny (access) — You have no access to this record."


class Signer:
    """The platform's Ed25519 key (what signs dispense receipts)."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def public_key_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def clinical(interaction: str, entity: str | None = None, status: int = 200, *,
             client: str = CLIENT, rule: str | None = None, request_id: str | None = None,
             kind: str = "access", **detail: str) -> AuditRecord:
    return AuditRecord(
        stream="clinical", recorded=rfc3339_ms(NOW), kind=kind, action="R",
        interaction=interaction, outcome="0" if status < 400 else "4", agent=Agent(),
        entity_type=entity, status=status, rule=rule, request_id=request_id,
        detail={"client_id": client, **detail} if client else detail)


# One request of each step of the scenario, each done right.
EVERY_STEP = [
    clinical("token", kind="authentication"),
    clinical("conditional-update", "Patient"),
    clinical("create", "Encounter", 201),
    clinical("transaction", "Bundle"),
    clinical("transaction", "Bundle", replaces="doc-1"),
    clinical("search-type", "DocumentReference"),
    clinical("read", "Binary"),
    clinical("read", "Binary", signs="doc-1"),
    clinical("read", "DocumentReference", 403, rule=DENY),
]


@dataclass
class World:
    uow: FakeUnitOfWork = field(default_factory=FakeUnitOfWork)
    log: FakeAuditLog = field(default_factory=FakeAuditLog)
    signer: Signer = field(default_factory=Signer)
    delivered: list[pki.Credentials] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = pki.PkiContext(CTX.systems, b"ca password", lambda: NOW, "integration")
        self.ctx = SandboxContext(CTX, self.pki, "integration")
        with self.uow:
            assert pki.init_pki(self.uow, self.pki)
        self.uow.commits = 0

    def register(self, name: str = SYSTEM, ctx: SandboxContext | None = None,
                 detail: dict[str, str] | None = None) -> Registration:
        """`register_system` as the command runs it, with its operator entry recorded (the
        audited units record ``detail`` at each commit: the last one is the registration)."""
        detail = {} if detail is None else detail
        registration = svc.register_system(
            lambda: self.uow, ctx or self.ctx, name, self.delivered.append, detail=detail,
            clinical_size=lambda: self.log.size("clinical"))
        self.log.append(AuditRecord(
            stream="operator", recorded=rfc3339_ms(NOW), kind="operator", action="C",
            interaction=svc.REGISTER, outcome="0", agent=Agent(), detail=dict(detail)), NOW)
        return registration

    def report(self, registration: Registration, environment: str = "integration"
               ) -> dict[str, Any]:
        return svc.build_report(self.log, registration, self.signer, environment=environment,
                                platform="https://sandbox.carevault.test", now=NOW)

    def requests(self, *records: AuditRecord) -> None:
        for record in records:
            self.log.append(record, NOW)

    def written(self) -> tuple[int, int, int, int]:
        """Organizations, practitioners, authorities and certificates stored."""
        return (len(self.uow.directory.tables["organization"]),
                len(self.uow.directory.tables["practitioner"]),
                len(self.uow.authorities.rows), len(self.uow.pki.certificates))


@pytest.fixture
def world() -> World:
    return World()


# --- registering ------------------------------------------------------------------------------


def test_a_registered_system_gets_an_organization_a_physician_its_authorities_and_a_card(
        world: World) -> None:
    world.requests(clinical("read", "Patient"))  # before the run: not the system's
    detail: dict[str, str] = {}
    registration = world.register(detail=detail)
    assert (registration.system, registration.client_id) == (SYSTEM, CLIENT)
    assert registration.organization_identifier == "SANDBOX-DEMO-HIS-4-2"
    assert registration.practitioner_identifier == "SANDBOX-DEMO-HIS-4-2-HP"
    assert registration.patient_id_system == \
        "urn:carevault:conformance:demo-his-4-2:patient-id"
    assert registration.run_start == 1
    organization = world.uow.directory.read("Organization", registration.organization_id)
    assert organization is not None
    assert world.uow.directory.organization_patient_id_system(
        registration.organization_id) == registration.patient_id_system
    assert world.uow.directory.practitioner_ids_by_identifier(["SANDBOX-DEMO-HIS-4-2-HP"]) == {
        "SANDBOX-DEMO-HIS-4-2-HP": registration.practitioner_id}
    [role] = world.uow.directory.active_roles(registration.practitioner_id)
    assert (role.organization_id, role.profession) == (registration.organization_id,
                                                       "physician")
    authorities = world.uow.authorities.active_of(registration.organization_id)
    assert {a.kind for a in authorities} == {Authority.IDENTITY_SOURCE,
                                              Authority.ADMISSION_SYSTEM}
    [credentials] = world.delivered
    assert credentials.record.client_id == CLIENT and credentials.record.kind == "system"
    assert credentials.record.serial == registration.serial
    assert world.uow.pki.certificate(registration.serial) is not None
    # Organization, physician, two authorities, certificate: five transactions.
    assert world.uow.commits == 5
    assert detail == {"step": "certificate", **registration.detail()}


def test_the_sandbox_registers_in_the_integration_environment_only(world: World) -> None:
    production = SandboxContext(CTX, world.pki, "production")
    with pytest.raises(BusinessRuleViolation, match="'integration' environment only"):
        world.register(ctx=production)
    assert world.written() == (0, 0, 0, 0) and world.delivered == []
    assert world.uow.commits == 0


@pytest.mark.parametrize("name", ["", " Demo", "Demo/HIS", "Démo HIS", "x" * 65, "-Demo"])
def test_a_system_name_that_is_not_a_products_name_is_refused(world: World,
                                                               name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.register(name)
    assert refused.value.expression == "SYSTEM"
    assert world.written() == (0, 0, 0, 0) and world.uow.commits == 0


@pytest.mark.parametrize("again", [SYSTEM, "demo his 4.2", "Demo-HIS (4.2)"])
def test_a_system_is_registered_once_under_a_name(world: World, again: str) -> None:
    """Names that give the same identifier are the same system's: the new version of a
    system is registered under a name of its own."""
    world.register()
    written, commits = world.written(), world.uow.commits
    with pytest.raises(Conflict, match="already registered"):
        world.register(again)
    assert world.written() == written and world.uow.commits == commits
    assert len(world.delivered) == 1


def test_a_new_version_is_a_new_system(world: World) -> None:
    first = world.register()
    second = world.register("Demo HIS 4.3")
    assert second.client_id == "system:SANDBOX-DEMO-HIS-4-3"
    assert second.organization_id != first.organization_id
    assert second.run_start == first.run_start == 0


def test_a_registration_refused_at_the_certificate_says_it_failed_there(world: World) -> None:
    """The platform has no CA yet: the steps before were made (each its own transaction), the
    certificate was not, and the record of the refusal names the certificate's step."""
    world.uow.pki.stored_authorities.clear()
    detail: dict[str, str] = {}
    with pytest.raises(pki.PkiNotInitialized):
        world.register(detail=detail)
    assert world.written() == (1, 1, 2, 0) and world.delivered == []
    assert detail["step"] == "certificate"


def test_a_registration_stopped_at_the_certificate_is_finished_by_the_next_attempt(
        world: World) -> None:
    """The CA was missing; once it is there, the same name finishes the registration with what
    the first attempt made (no second organization, physician or authority), and its entry says
    what was resumed."""
    authorities = dict(world.uow.pki.stored_authorities)
    world.uow.pki.stored_authorities.clear()
    with pytest.raises(pki.PkiNotInitialized):
        world.register()
    [organization_id] = world.uow.directory.organization_ids_by_identifier(
        ["SANDBOX-DEMO-HIS-4-2"]).values()
    world.uow.pki.stored_authorities.update(authorities)
    commits = world.uow.commits
    detail: dict[str, str] = {}
    registration = world.register(detail=detail)
    assert world.written() == (1, 1, 2, 1) and len(world.delivered) == 1
    assert world.uow.commits == commits + 1  # the certificate's transaction only
    assert registration.organization_id == organization_id
    assert registration.client_id == CLIENT
    assert detail == {"step": "certificate", **registration.detail(),
                      "resumed": "organization professional identity-source admission-system"}
    assert svc.find_registration(world.log, SYSTEM).serial == registration.serial
    with pytest.raises(Conflict, match="already registered"):  # and now it is registered
        world.register()


def test_a_registration_stopped_after_its_organization_goes_on_from_there(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop between the organization's transaction and the physician's (here, the process
    dying): the next attempt makes the physician, the authorities and the certificate for the
    organization that was made."""
    def dies(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(svc.svc, "register_professionals", dies)
    with pytest.raises(KeyboardInterrupt):
        world.register()
    assert world.written() == (1, 0, 0, 0)
    monkeypatch.undo()
    detail: dict[str, str] = {}
    registration = world.register(detail=detail)
    assert world.written() == (1, 1, 2, 1)
    [role] = world.uow.directory.active_roles(registration.practitioner_id)
    assert role.organization_id == registration.organization_id
    assert detail["resumed"] == "organization"


def test_an_organization_that_only_bears_the_sandboxs_identifier_is_not_adopted(
        world: World) -> None:
    """An organization named SANDBOX-DEMO-HIS-4-2 that is not the sandbox's for this system
    (another patient-identifier system) is refused, not given the system's authorities."""
    with world.uow:
        svc.svc.create_organization(world.uow, CTX, new_organization(
            CTX.systems, identifier="SANDBOX-DEMO-HIS-4-2", name="Someone else",
            patient_id_system="urn:example:someone-else"))
    before = world.written()
    theirs = re.escape("not the sandbox's organization for 'Demo HIS 4.2'")
    with pytest.raises(Conflict, match=theirs):
        world.register()
    assert world.written() == before and world.delivered == []


def test_two_long_names_that_begin_alike_are_two_systems(world: World) -> None:
    """Identifiers are at most 48 characters (``system:`` and the identifier fit a
    certificate's 64): a longer one keeps its beginning and a digest of the whole name, where
    cutting it made the second system a duplicate of the first."""
    common = "Hopital Universitaire Grand Est Dossier Patient Informatise"  # 59 characters
    first, second = world.register(common + " 4.2"), world.register(common + " 4.3")
    assert first.organization_identifier != second.organization_identifier
    assert first.organization_id != second.organization_id
    for registration in (first, second):
        assert len(registration.organization_identifier) == 48
        assert registration.organization_identifier.startswith(
            "SANDBOX-HOPITAL-UNIVERSITAIRE-GRAND-E")
        assert registration.client_id == "system:" + registration.organization_identifier
    assert svc.sandbox_identifier("DEMO-HIS-4-2") == "SANDBOX-DEMO-HIS-4-2"  # short: as before
    with pytest.raises(Conflict, match="already registered"):
        world.register(common + " 4.2")


# --- the registration, found again ------------------------------------------------------------


def test_a_systems_registration_is_found_in_the_operators_stream(world: World) -> None:
    registration = world.register()
    found = svc.find_registration(world.log, SYSTEM)
    assert found == Registration(**{**registration.__dict__, "registered": rfc3339_ms(NOW)})


def test_an_unregistered_system_or_a_refused_registration_is_not_found(world: World) -> None:
    world.log.append(AuditRecord(
        stream="operator", recorded=rfc3339_ms(NOW), kind="operator", action="C",
        interaction=svc.REGISTER, outcome="4", agent=Agent(),
        detail={"system": SYSTEM, "step": "certificate", "result": "refused"}), NOW)
    with pytest.raises(NotFound, match=re.escape("no system named 'Demo HIS 4.2' is registered")):
        svc.find_registration(world.log, SYSTEM)
    world.register()
    with pytest.raises(NotFound):
        svc.find_registration(world.log, "Demo HIS 4.3")


def test_the_latest_registration_of_a_system_counts(world: World) -> None:
    first = world.register()
    later = {**first.detail(), "step": "certificate", "serial": "abc", "run-start": "7"}
    world.log.append(AuditRecord(
        stream="operator", recorded=rfc3339_ms(NOW), kind="operator", action="C",
        interaction=svc.REGISTER, outcome="0", agent=Agent(), detail=later), NOW)
    found = svc.find_registration(world.log, SYSTEM)
    assert (found.serial, found.run_start) == ("abc", 7)


# --- the report -------------------------------------------------------------------------------


def test_a_report_counts_the_systems_own_requests_since_its_registration(world: World) -> None:
    world.requests(clinical("search-type", "DocumentReference"))  # before: not counted
    registration = world.register()
    world.requests(
        clinical("token", kind="authentication"),
        clinical("search-type", "DocumentReference", request_id="r1"),
        clinical("search-type", "DocumentReference", request_id="r1"),  # the patient's copy
        clinical("search-type", "DocumentReference", client="system:OTHER"),
        clinical("token", 401, client="", kind="authentication", **{"claimed-client": CLIENT}),
        clinical("create", "Encounter", 422, error="processing: no such patient"),
    )
    document = world.report(registration)
    report = document["report"]
    assert report["evidence"] == {"stream": "clinical", "from-entry": 1, "to-entry": 7,
                                  "requests": 3, "unauthenticated-token-attempts": 1}
    steps = {s["step"]: s for s in report["steps"]}
    assert [s["step"] for s in report["steps"]] == list(STEP_KEYS)
    assert (steps["authenticate"]["status"], steps["find"]["status"]) == ("passed", "passed")
    assert steps["find"]["attempts"] == 1
    assert steps["care-event"]["status"] == "failed"
    assert steps["care-event"]["errors"][0]["error"] == "HTTP 422: processing: no such patient"
    assert steps["publish"]["status"] == "not-attempted"
    assert report["passed"] is False
    assert (report["system"], report["client_id"], report["organization"]) == (
        SYSTEM, CLIENT, "SANDBOX-DEMO-HIS-4-2")
    assert report["issued"] == rfc3339_ms(NOW)
    assert [a.index for a in svc.attempts_of(world.log, registration)] == [1, 2, 6]


def test_a_report_is_signed_by_the_platforms_key_and_verifies_under_it_alone(
        world: World) -> None:
    registration = world.register()
    world.requests(*EVERY_STEP)
    document = world.report(registration)
    assert document["report"]["passed"] is True
    checked = svc.verify_report(document, world.signer.public_key_pem())
    assert checked == document["report"]
    assert svc.passing_report(document, world.signer.public_key_pem(), SYSTEM) == checked
    assert svc.report_digest(document) == hashlib.sha256(
        document["signature"].encode()).hexdigest()


def test_a_tampered_report_or_another_key_is_refused(world: World) -> None:
    registration = world.register()
    world.requests(clinical("token", kind="authentication"))
    document = world.report(registration)
    forged = json.loads(json.dumps(document))
    forged["report"]["passed"] = True
    with pytest.raises(ReportRejected, match="differs from the one that was signed"):
        svc.verify_report(forged, world.signer.public_key_pem())
    with pytest.raises(ReportRejected, match="signature does not verify"):
        svc.verify_report(document, Signer().public_key_pem())
    with pytest.raises(ReportRejected, match="public key cannot be read"):
        svc.verify_report(document, b"not a key")
    another_kind = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ReportRejected, match="not the platform's signing key"):
        svc.verify_report(document, another_kind)
    with pytest.raises(ReportRejected, match="no signature"):
        svc.verify_report({"report": document["report"]}, world.signer.public_key_pem())


def test_a_signed_mapping_that_is_no_report_is_refused(world: World) -> None:
    key = world.signer.public_key_pem()
    with pytest.raises(ReportRejected, match="not a conformance report"):
        svc.verify_report(svc.sign_report(world.signer, {"type": "receipt"}), key)
    registration = world.register()
    report = world.report(registration)["report"]
    lying = {**report, "passed": True}  # signed, but its steps did not pass
    with pytest.raises(ReportRejected, match="passed is true while a step did not pass"):
        svc.verify_report(svc.sign_report(world.signer, lying), key)


def test_production_credentials_need_a_passing_sandbox_report_of_that_very_system(
        world: World) -> None:
    key = world.signer.public_key_pem()
    registration = world.register()
    world.requests(*EVERY_STEP[:-1])  # never read an access decision
    failing = world.report(registration)
    with pytest.raises(ReportRejected, match="does not pass: access-decision not performed"):
        svc.passing_report(failing, key, SYSTEM)
    world.requests(EVERY_STEP[-1])
    passing = world.report(registration)
    with pytest.raises(ReportRejected, match=re.escape("is for 'Demo HIS 4.2', not for 'Other'")):
        svc.passing_report(passing, key, "Other")
    elsewhere = world.report(registration, environment="dev")
    with pytest.raises(ReportRejected, match="made in the 'dev' environment"):
        svc.passing_report(elsewhere, key, SYSTEM)
    assert svc.passing_report(passing, key, SYSTEM)["passed"] is True


@pytest.mark.parametrize(("data", "reason"), [
    (b"x" * (svc.MAX_REPORT_BYTES + 1), "too large"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "holds no 'signature'"),
    (b'{"report": {}, "signature": 7}', "holds no 'signature'"),
    (b"[" * 100_000, "not JSON"),
])
def test_a_file_that_is_no_signed_report_is_refused_readably(data: bytes, reason: str) -> None:
    with pytest.raises(ReportRejected, match=reason):
        svc.parse_report_file(data)


def test_a_report_file_is_read_back_as_written(world: World) -> None:
    document = world.report(world.register())
    assert svc.parse_report_file(json.dumps(document).encode()) == document


# --- production credentials -------------------------------------------------------------------


def test_granting_issues_the_organization_a_system_certificate(world: World) -> None:
    registration = world.register()
    commits = world.uow.commits
    with world.uow:
        record = svc.grant_credentials(world.uow, world.pki, registration.organization_id,
                                       world.delivered.append)
    assert (record.client_id, record.kind, record.organization_id) == (
        CLIENT, "system", registration.organization_id)
    assert world.uow.pki.certificate(record.serial) == record
    assert world.delivered[-1].record == record and world.uow.commits == commits + 1


def test_no_credentials_for_an_organization_not_in_the_directory(world: World) -> None:
    with world.uow, pytest.raises(NotFound):
        svc.grant_credentials(world.uow, world.pki, "org-nobody", world.delivered.append)
    assert world.uow.pki.certificates == {} and world.delivered == []


def test_the_longest_name_registers_and_its_identifiers_stay_within_bounds(
        world: World) -> None:
    name = "Very Long Hospital Information System Product Name Release 10.42"
    assert len(name) == 64
    registration = world.register(name)
    assert len(registration.organization_identifier) == 48
    assert registration.client_id == f"system:{registration.organization_identifier}"
    assert world.written() == (1, 1, 2, 1)
