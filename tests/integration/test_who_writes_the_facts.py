"""Who may change the facts the engine trusts (issue #12, defects 1 to 3), over HTTP on both
databases: each test is an attack a professional or a patient's app could make, refused, and
the registered authority's legitimate write beside it.

- The directories are written by registered authorities only: a registrar, the provider
  registry, and identity sources within their own assigning authority. A professional's token
  is narrowed to what their kind of client may do, and the engine refuses their directory
  writes even with a wide token.
- A care event opens a record only when proved: by the organization's registered admission
  system, or by a presence code the patient gave.
- A patient's app resolves only the patient's own identifiers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import Authority, EmergencySetting, Subject, SubjectKind
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.authorities import end_authority
from carevault.services.presence import issue_presence_code
from carevault.services.record_policy import Actor
from carevault.settings import Settings
from support.authorities import authorize, presence_code, with_presence
from support.backend import Holder, assertion, get_token, holder, token_request
from support.builders import HOSPITAL_SYSTEM, hospital, national_id, patient
from support.tokens import patient_headers

FHIR_JSON = {"Content-Type": "application/fhir+json"}
OTHER_HOSPITAL = "https://carevault.lu/fhir/sid/local/other-hospital"


@dataclass
class World:
    """A hospital (its system's certificate), another hospital, two physicians of the first
    (their own cards), a patient known by each hospital's number, and that patient's app."""

    hospital_id: str
    other_hospital_id: str
    system: Holder
    doctor: Holder
    colleague: Holder
    patient_id: str
    shared_patient_id: str  # known by both hospitals' numbers
    app: dict[str, str]


@pytest.fixture
def world(platform: Platform, settings: Settings) -> World:
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems, ca_password=ca_key_password(settings.key_source),
                             clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki_ctx)
    with platform.unit_of_work() as uow:
        org = svc.create_organization(uow, ctx, hospital(ctx.systems))
    with platform.unit_of_work() as uow:
        other = svc.create_organization(uow, ctx, new_organization(
            ctx.systems, identifier="ORG-H2", name="Autre Hôpital", kind="hospital",
            patient_id_system=OTHER_HOSPITAL))
    people = [svc.NewProfessional(new_practitioner(ctx.systems, identifier=f"HP-W{n}",
                                                   family=f"Weber{n}", given=["Anne"]),
                                  "physician", "general-practice", org.id) for n in (1, 2)]
    with platform.unit_of_work() as uow:
        svc.register_professionals(uow, ctx, people)
    with platform.unit_of_work() as uow:
        ids = uow.directory.practitioner_ids_by_identifier(["HP-W1", "HP-W2"])
    issued: list[pki.Credentials] = []
    for identifier in ("HP-W1", "HP-W2"):
        with platform.unit_of_work() as uow:
            pki.issue_practitioner_certificate(uow, pki_ctx, ids[identifier], issued.append)
    with platform.unit_of_work() as uow:
        pki.issue_system_certificate(uow, pki_ctx, org.id, issued.append)
    doctor, colleague, system = (holder(c) for c in issued)
    with platform.unit_of_work() as uow:
        own = svc.create_patient(uow, ctx, patient(ctx.systems, 1, local="H-1"))
    shared = patient(ctx.systems, 2, local="H-2")
    shared["identifier"].append({"system": OTHER_HOSPITAL, "value": "O-2"})
    with platform.unit_of_work() as uow:
        both = svc.create_patient(uow, ctx, shared)
    return World(org.id, other.id, system, doctor, colleague, own.id, both.id,
                 {**patient_headers(platform, own.id), **FHIR_JSON})


@pytest.fixture
def http(platform: Platform) -> Any:
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=("198.51.100.7", 4100)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **FHIR_JSON}


def card(http: TestClient, who: Holder, platform: Platform,
         scope: str = "system/*.cruds") -> dict[str, str]:
    """A professional's own card asks for everything; what it gets is narrowed."""
    return bearer(get_token(http, who, platform, scope=scope))


def hospital_system(http: TestClient, world: World, platform: Platform,
                    scope: str = "system/*.cruds") -> dict[str, str]:
    """The hospital's system, acting for its first physician (the token's ``act``)."""
    return bearer(get_token(http, world.system, platform, scope=scope, act={"sub": "HP-W1"}))


def diagnostics(response: Any) -> str:
    return str(response.json()["issue"][0]["diagnostics"])


def entries(platform: Platform, stream: str = "clinical") -> list[AuditRecord]:
    size = platform.audit.size(stream)
    return [AuditRecord.from_canonical(data)
            for _, data in platform.audit.entries(stream, 0, size)]


def alerts(platform: Platform) -> list[AuditRecord]:
    return [r for stream in ("clinical", "operator") for r in entries(platform, stream)
            if r.kind == "alert"]


def role_of(platform: Platform, practitioner_id: str, organization_id: str) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
            "organization": {"reference": f"Organization/{organization_id}"},
            "code": [{"coding": [{"system": platform.directory.professions.profession_system,
                                  "code": "physician"}]}]}


def encounter(patient_id: str, practitioner_id: str | None) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
            "period": {"start": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}}


def documents(http: TestClient, headers: dict[str, str], patient_id: str) -> Any:
    return http.get("/fhir/DocumentReference", params={"patient": f"Patient/{patient_id}"},
                    headers=headers)


# --- defect 1: the directories ------------------------------------------------------------------


def test_a_professionals_token_is_narrowed_to_what_a_professional_may_do(
        world: World, http: TestClient, platform: Platform) -> None:
    answer = token_request(http, assertion(world.doctor, platform), "system/*.cruds")
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == (
        "system/*.rs system/DocumentReference.cu system/Encounter.c system/Task.cu")
    # Asking only for what may never be granted is refused, saying what may be.
    refused = token_request(http, assertion(world.doctor, platform),
                            "system/PractitionerRole.cud system/Patient.u")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"
    assert "system/*.rs" in refused.json()["error_description"]
    # The hospital's system, registered as nothing, is narrowed the same way.
    system = token_request(http, assertion(world.system, platform, act={"sub": "HP-W1"}),
                           "system/*.cruds")
    assert system.json()["scope"] == (
        "system/*.rs system/DocumentReference.cu system/Encounter.c system/Task.cu")


@pytest.mark.parametrize("attack", [
    "attach-self-to-another-organization", "become-a-pharmacist",
    "suspend-a-colleague", "rename-a-patient", "merge-two-patients", "feed-a-patient",
    "unmerge", "create-an-organization"])
def test_a_professional_never_writes_the_directories(
        world: World, http: TestClient, platform: Platform, attack: str) -> None:
    mine = card(http, world.doctor, platform)
    me = world.doctor.practitioner_id
    assert me is not None
    colleague = http.get(f"/fhir/Practitioner/{world.colleague.practitioner_id}",
                         headers=mine).json()
    victim = http.get(f"/fhir/Patient/{world.patient_id}", headers=mine).json()
    requests: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "attach-self-to-another-organization": (
            "POST", "/fhir/PractitionerRole", role_of(platform, me, world.other_hospital_id)),
        "become-a-pharmacist": ("POST", "/fhir/PractitionerRole", {
            **role_of(platform, me, world.hospital_id),
            "code": [{"coding": [{"system": platform.directory.professions.profession_system,
                                  "code": "pharmacist"}]}]}),
        "suspend-a-colleague": ("PUT", f"/fhir/Practitioner/{colleague['id']}", {
            **colleague, "active": False}),
        "rename-a-patient": ("PUT", f"/fhir/Patient/{world.patient_id}", {
            **victim, "name": [{"family": "Renamed", "given": ["Someone"]}]}),
        "merge-two-patients": ("POST", "/fhir/Patient/$merge", {
            "resourceType": "Parameters", "parameter": [
                {"name": "source-patient",
                 "valueReference": {"reference": f"Patient/{world.patient_id}"}},
                {"name": "target-patient",
                 "valueReference": {"reference": f"Patient/{world.shared_patient_id}"}}]}),
        "feed-a-patient": ("PUT", f"/fhir/Patient?identifier={HOSPITAL_SYSTEM}|H-1", {
            **victim, "name": [{"family": "Fed", "given": ["Someone"]}]}),
        "unmerge": ("POST", f"/fhir/Patient/{world.patient_id}/$unmerge", None),
        "create-an-organization": ("POST", "/fhir/Organization", new_organization(
            platform.directory.systems, identifier="ORG-FAKE", name="Fake")),
    }
    method, url, body = requests[attack]
    before = {
        "roles": http.get("/fhir/PractitionerRole", params={"practitioner": me},
                          headers=mine).json()["total"],
        "colleague": colleague["meta"]["versionId"],
        "patient": victim["meta"]["versionId"],
    }
    answer = http.request(method, url, json=body, headers=mine)
    assert answer.status_code == 403, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    refusal = entries(platform)[-1]
    assert refusal.outcome != "0" and refusal.status == 403
    # Nothing changed.
    assert http.get("/fhir/PractitionerRole", params={"practitioner": me},
                    headers=mine).json()["total"] == before["roles"]
    assert http.get(f"/fhir/Practitioner/{colleague['id']}",
                    headers=mine).json()["meta"]["versionId"] == before["colleague"]
    assert http.get(f"/fhir/Patient/{world.patient_id}",
                    headers=mine).json()["meta"]["versionId"] == before["patient"]


def test_the_engine_refuses_a_directory_write_even_with_a_wide_token(
        world: World, http: TestClient, platform: Platform) -> None:
    """Defence in depth: the hospital was the provider registry when its system got its token,
    then the registration ended; the token's scope still says PractitionerRole.cu, the engine
    says no at once, and the security officer is alerted."""
    registration = authorize(platform, world.hospital_id, Authority.PROVIDER_REGISTRY)
    feed = hospital_system(http, world, platform)
    assert get_scope(http, world, platform).count("PractitionerRole.cu") == 1
    me = world.doctor.practitioner_id
    assert me is not None
    made = http.post("/fhir/PractitionerRole", json=role_of(platform, me, world.hospital_id),
                     headers=feed)
    assert made.status_code == 201, made.text
    changed = [r for r in entries(platform) if r.entity_type == "PractitionerRole"]
    assert changed[-1].detail["directory-change"] == "providers"
    with platform.unit_of_work() as uow:
        end_authority(uow, registration, by="os-user:test", now=datetime.now(UTC))
    refused = http.post("/fhir/PractitionerRole",
                        json=role_of(platform, me, world.other_hospital_id), headers=feed)
    assert refused.status_code == 403
    assert "Only the authorities the platform registers" in diagnostics(refused)
    (alert,) = [a for a in alerts(platform) if a.entity_type == "PractitionerRole"]
    assert alert.detail["rule"] == "directory-authority"
    assert alert.detail["decision"] == "deny"


def get_scope(http: TestClient, world: World, platform: Platform) -> str:
    answer = token_request(http, assertion(world.system, platform, act={"sub": "HP-W1"}),
                           "system/*.cruds")
    return str(answer.json()["scope"])


def test_an_identity_source_writes_only_its_own_patients(
        world: World, http: TestClient, platform: Platform) -> None:
    authorize(platform, world.hospital_id, Authority.IDENTITY_SOURCE)
    feed = hospital_system(http, world, platform)
    systems = platform.directory.systems
    # Its own number: created, then updated (the other hospital's number is kept).
    fresh = patient(systems, 3, local="H-3")
    created = http.put("/fhir/Patient", params={"identifier": f"{HOSPITAL_SYSTEM}|H-3"},
                       json=fresh, headers=feed)
    assert created.status_code == 201, created.text
    shared = http.get(f"/fhir/Patient/{world.shared_patient_id}", headers=feed).json()
    mine_only = {**shared, "identifier": [i for i in shared["identifier"]
                                          if i["system"] != OTHER_HOSPITAL],
                 "name": [{"family": "Schmit", "given": ["Anne"]}]}
    updated = http.put(f"/fhir/Patient/{world.shared_patient_id}", json=mine_only, headers=feed)
    assert updated.status_code == 200, updated.text
    assert {"system": OTHER_HOSPITAL, "value": "O-2"} in updated.json()["identifier"]
    # Another authority's number, a patient it does not know, a national id it changes.
    refusals = [
        http.put("/fhir/Patient", params={"identifier": f"{OTHER_HOSPITAL}|O-9"},
                 json=patient(systems, 4), headers=feed),
        http.post("/fhir/Patient", json=patient(systems, 5), headers=feed),
        http.put(f"/fhir/Patient/{world.shared_patient_id}", json={
            **mine_only, "identifier": [*mine_only["identifier"],
                                        {"system": OTHER_HOSPITAL, "value": "O-77"}]},
                 headers=feed),
    ]
    for refused in refusals:
        assert refused.status_code == 403, refused.text
        assert "this identity source writes only" in diagnostics(refused)
    stranger = patient(systems, 6)
    with platform.unit_of_work() as uow:
        unknown = svc.create_patient(uow, platform.directory, stranger)
    renamed = http.put(f"/fhir/Patient/{unknown.id}", json={
        **unknown.resource, "name": [{"family": "X", "given": ["Y"]}]}, headers=feed)
    assert renamed.status_code == 403
    national = {**created.json(), "identifier": [
        {"system": systems.national, "value": national_id(7)},
        {"system": HOSPITAL_SYSTEM, "value": "H-3"}], "birthDate": "1980-04-12"}
    moved = http.put(f"/fhir/Patient/{created.json()['id']}", json=national, headers=feed)
    assert moved.status_code == 403 and "national identifier" in diagnostics(moved)
    # Merging: its own duplicate yes; a patient another hospital knows, no.
    merge = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient",
         "valueReference": {"reference": f"Patient/{world.shared_patient_id}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{world.patient_id}"}},
    ]}
    foreign = http.post("/fhir/Patient/$merge", json=merge, headers=feed)
    assert foreign.status_code == 403
    assert "another assigning authority" in diagnostics(foreign)
    merge["parameter"][0]["valueReference"]["reference"] = f"Patient/{created.json()['id']}"
    merged = http.post("/fhir/Patient/$merge", json=merge, headers=feed)
    assert merged.status_code == 200, merged.text
    assert next(r.detail.get("directory-change") for r in entries(platform)
            if r.query == "$merge" and r.outcome == "0") == "identity-links"
    # It is no provider registry.
    me = world.doctor.practitioner_id
    assert me is not None
    assert http.post("/fhir/PractitionerRole", json=role_of(platform, me, world.hospital_id),
                     headers=feed).status_code == 403


def test_a_registrar_writes_by_hand_and_the_security_officer_sees_it(
        world: World, registrar: TestClient, platform: Platform) -> None:
    me = world.doctor.practitioner_id
    assert me is not None
    made = registrar.post("/fhir/PractitionerRole",
                          json=role_of(platform, me, world.other_hospital_id),
                          headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    own = [r for r in entries(platform, "operator") if r.entity_type == "PractitionerRole"]
    assert own[-1].agent.role == "registrar" and own[-1].outcome == "0"
    assert own[-1].detail["directory-change"] == "providers"
    (alert,) = [a for a in alerts(platform) if a.entity_type == "PractitionerRole"]
    assert alert.detail["decision"] == "permit" and alert.detail["rule"] == "directory-authority"
    # A registrar reaches no record.
    refused = registrar.get("/fhir/DocumentReference",
                            params={"patient": f"Patient/{world.patient_id}"})
    assert refused.status_code == 403


def test_an_operator_command_that_changes_a_role_alerts_the_security_officer(
        world: World, platform: Platform, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from carevault.cli import context
    from carevault.cli.main import app

    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    try:
        done = CliRunner().invoke(app, [
            "directory", "add-practitioner", "--identifier", "HP-CLI", "--family", "Hand",
            "--given", "Made", "--profession", "physician", "--organization",
            world.hospital_id])
        assert done.exit_code == 0, done.output
        registered = CliRunner().invoke(app, [
            "authorities", "add", world.other_hospital_id, "--kind", "identity-source",
            "--json"])
        assert registered.exit_code == 0, registered.output
        listed = CliRunner().invoke(app, ["authorities", "list"])
        assert OTHER_HOSPITAL in listed.output and "identity-source" in listed.output
        unknown = CliRunner().invoke(app, ["authorities", "add", world.hospital_id,
                                           "--kind", "king"])
        assert unknown.exit_code == 1 and "is not one of" in unknown.output
    finally:
        context.engine_for(settings.database_url).dispose()
        context.engine_for.cache_clear()
    operator = entries(platform, "operator")
    added = [r for r in operator if r.interaction == "directory add-practitioner"]
    assert [r.kind for r in added] == ["operator", "alert"]
    assert added[0].detail["directory-change"] == "providers"
    assert any(r.interaction == "authorities add" for r in operator)


# --- defect 2: care events ------------------------------------------------------------------------


def test_a_self_declared_care_event_opens_nothing_and_alerts(
        world: World, http: TestClient, platform: Platform) -> None:
    # The patient even turned emergency access off: the attack used to get around it.
    patient_actor = Actor(Subject(SubjectKind.PATIENT, world.patient_id),
                          f"Patient/{world.patient_id}")
    platform.policy.set_emergency_setting(patient_actor, world.patient_id, EmergencySetting.OFF)
    mine = card(http, world.doctor, platform)
    declared = http.post("/fhir/Encounter",
                         json=encounter(world.patient_id, world.doctor.practitioner_id),
                         headers=mine)
    assert declared.status_code == 403
    assert "A care event opens the record only" in diagnostics(declared)
    assert documents(http, mine, world.patient_id).status_code == 403
    wrong = http.post("/fhir/Encounter", json=with_presence(
        encounter(world.patient_id, world.doctor.practitioner_id), "ABCDE-FGHJK"), headers=mine)
    assert wrong.status_code == 403
    assert documents(http, mine, world.patient_id).status_code == 403
    refused = [a for a in alerts(platform) if a.entity_type == "Encounter"]
    assert len(refused) == 2 and all(a.detail["decision"] == "deny" for a in refused)
    assert http.get("/fhir/Consent", params={"patient": f"Patient/{world.patient_id}"},
                    headers=world.app).json()["total"] <= 1  # no care-event grant


def test_the_patients_presence_code_proves_the_visit_once(
        world: World, http: TestClient, platform: Platform) -> None:
    made = http.post(f"/fhir/Patient/{world.patient_id}/$presence-code", headers=world.app)
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    values = {p["name"]: p for p in made.json()["parameter"]}
    code = values["code"]["valueString"]
    assert len(code) == 11 and code[5] == "-"
    mine = card(http, world.doctor, platform)
    # Typed loosely (lower case, spaces), it still works; the code is not stored.
    seen = http.post("/fhir/Encounter", json=with_presence(
        encounter(world.patient_id, world.doctor.practitioner_id),
        code.lower().replace("-", " ")), headers=mine)
    assert seen.status_code == 201, seen.text
    assert "extension" not in seen.json()
    assert documents(http, mine, world.patient_id).status_code == 200
    # Used once: a colleague who overheard it gets nothing.
    theirs = card(http, world.colleague, platform)
    again = http.post("/fhir/Encounter", json=with_presence(
        encounter(world.patient_id, world.colleague.practitioner_id), code), headers=theirs)
    assert again.status_code == 403
    assert documents(http, theirs, world.patient_id).status_code == 403
    # The patient sees the care event among the accesses to their record, and is told.
    consents = http.get("/fhir/Consent", params={"patient": f"Patient/{world.patient_id}"},
                        headers=world.app).json()
    care = [e["resource"] for e in consents["entry"]
            if e["resource"].get("sourceReference", {}).get("reference", "")
            .startswith("Encounter/")]
    assert len(care) == 1
    notices = http.get("/fhir/Communication", params={"patient": f"Patient/{world.patient_id}"},
                       headers=world.app).json()
    assert any("care event" in p["contentString"]
               for e in notices["entry"] for p in e["resource"]["payload"])
    # The security officer reads what proved it.
    recorded = [r for r in entries(platform) if r.entity_type == "Encounter" and r.outcome == "0"
                and r.interaction == "create"]
    assert recorded[0].detail["care-proof"] == "presence-code"


def test_a_presence_code_is_for_its_patient_only_and_expires(
        world: World, http: TestClient, platform: Platform) -> None:
    other = presence_code(platform, world.shared_patient_id)
    mine = card(http, world.doctor, platform)
    crossed = http.post("/fhir/Encounter", json=with_presence(
        encounter(world.patient_id, world.doctor.practitioner_id), other), headers=mine)
    assert crossed.status_code == 403
    with platform.unit_of_work() as uow:
        old = issue_presence_code(uow, world.patient_id, "account:test",
                                  datetime.now(UTC) - timedelta(minutes=11)).code
    expired = http.post("/fhir/Encounter", json=with_presence(
        encounter(world.patient_id, world.doctor.practitioner_id), old), headers=mine)
    assert expired.status_code == 403
    # Only the patient (or a managing representative) makes codes for their record.
    assert http.post(f"/fhir/Patient/{world.patient_id}/$presence-code",
                     headers=mine).status_code == 403
    assert http.post(f"/fhir/Patient/{world.shared_patient_id}/$presence-code",
                     headers=world.app).status_code == 403


def test_the_registered_admission_system_proves_the_visit(
        world: World, http: TestClient, platform: Platform) -> None:
    feed = hospital_system(http, world, platform)
    unproved = http.post("/fhir/Encounter",
                         json=encounter(world.patient_id, world.doctor.practitioner_id),
                         headers=feed)
    assert unproved.status_code == 403
    authorize(platform, world.hospital_id, Authority.ADMISSION_SYSTEM)
    admitted = http.post("/fhir/Encounter",
                         json=encounter(world.patient_id, world.doctor.practitioner_id),
                         headers=feed)
    assert admitted.status_code == 201, admitted.text
    recorded = [r for r in entries(platform) if r.entity_type == "Encounter" and r.outcome == "0"]
    assert recorded[-1].detail["care-proof"] == "admission-system"
    # The physician's own card now reaches the record through the care relationship.
    assert documents(http, card(http, world.doctor, platform), world.patient_id).status_code == 200


def test_a_deployment_may_require_the_patients_presence(
        world: World, platform: Platform, settings: Settings) -> None:
    from carevault.bootstrap import build

    strict = build(settings.model_copy(update={"care_event_proof": "presence-code"}),
                   platform.engine)
    authorize(strict, world.hospital_id, Authority.ADMISSION_SYSTEM)
    with TestClient(strict.app, base_url="http://127.0.0.1:8000",
                    client=("198.51.100.8", 4200)) as http:
        feed = hospital_system(http, world, strict)
        alone = http.post("/fhir/Encounter",
                          json=encounter(world.patient_id, world.doctor.practitioner_id),
                          headers=feed)
        assert alone.status_code == 403
        proved = http.post("/fhir/Encounter", json=with_presence(
            encounter(world.patient_id, world.doctor.practitioner_id),
            presence_code(strict, world.patient_id)), headers=feed)
        assert proved.status_code == 201, proved.text


# --- defect 3: PIXm for patient apps ------------------------------------------------------------


def test_a_patients_app_resolves_only_the_patients_own_identifiers(
        world: World, http: TestClient, platform: Platform) -> None:
    own = http.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{HOSPITAL_SYSTEM}|H-1"},
                   headers=world.app)
    assert own.status_code == 200, own.text
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{world.patient_id}"}
            } in own.json()["parameter"]
    someone = http.get("/fhir/Patient/$ihe-pix",
                       params={"sourceIdentifier": f"{HOSPITAL_SYSTEM}|H-2"}, headers=world.app)
    nobody = http.get("/fhir/Patient/$ihe-pix",
                      params={"sourceIdentifier": f"{HOSPITAL_SYSTEM}|H-{uuid.uuid4().hex[:6]}"},
                      headers=world.app)
    assert someone.status_code == nobody.status_code == 404
    # The same answer, word for word, but for the number asked about.
    assert diagnostics(someone).replace("H-2", "?") == diagnostics(nobody).rsplit("|", 1)[0] + "|?"
    assert world.shared_patient_id not in someone.text
    # A professional, who may identify any patient, still resolves it.
    mine = card(http, world.doctor, platform)
    assert http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": f"{HOSPITAL_SYSTEM}|H-2"}, headers=mine).status_code == 200
