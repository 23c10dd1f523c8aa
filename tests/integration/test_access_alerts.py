"""The security officer's alerts, wired up on both databases: each access records why it was
allowed (its basis), the detector reads the log and raises alerts, and the officer reviews them
through FHIR DetectedIssue; nobody else reaches them, and they hold no medical content."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.fhirmodel.directory import new_organization
from support.builders import patient
from support.tokens import officer_headers, patient_headers, professional_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


class Pro:
    def __init__(
        self, platform: Platform, identifier: str, family: str, specialty: str = "cardiology"
    ) -> None:
        token = professional_token(
            platform,
            identifier=identifier,
            family=family,
            profession="physician",
            specialty=specialty,
        )
        self.headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        with platform.unit_of_work() as uow:
            self.id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]


@pytest.fixture
def record(registrar: TestClient, platform: Platform) -> tuple[str, dict[str, str]]:
    created = registrar.post(
        "/fhir/Patient", json=patient(platform.directory.systems, 3), headers=FHIR_JSON
    )
    assert created.status_code == 201
    patient_id = str(created.json()["id"])
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}


def grant_to(client: TestClient, mine: dict[str, str], patient_id: str, who: str) -> None:
    # A grant to an organization or a team must end (PRODUCT.md): a month from now.
    ends = {"period": {"end": (datetime.now(UTC) + timedelta(days=30)).isoformat()}}
    made = client.post(
        "/fhir/Consent",
        headers=mine,
        json={
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "provision": {
                **(ends if not who.startswith("Practitioner/") else {}),
                "type": "permit",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "IRCP",
                                }
                            ]
                        },
                        "reference": {"reference": who},
                    }
                ],
                "securityLabel": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "N",
                    }
                ],
            },
        },
    )
    assert made.status_code == 201, made.text


def break_glass(client: TestClient, pro: Pro, patient_id: str) -> None:
    glass = client.post(
        f"/fhir/Patient/{patient_id}/$emergency-access",
        headers=pro.headers,
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "unconscious on arrival"}],
        },
    )
    assert glass.status_code == 200, glass.text


def encounters(client: TestClient, pro: Pro, patient_id: str) -> Any:
    return client.get(
        "/fhir/Encounter", params={"patient": f"Patient/{patient_id}"}, headers=pro.headers
    )


def entries(platform: Platform, patient_id: str) -> list[AuditRecord]:
    return [
        AuditRecord.from_canonical(data)
        for _, data in platform.audit.patient_entries(patient_id, limit=200)
    ]


def test_each_access_records_why_it_was_allowed(
    client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]
) -> None:
    patient_id, mine = record
    cardio = Pro(platform, "HP-BASIS-1", "Cardio")
    er = Pro(platform, "HP-BASIS-2", "Urgence", "emergency-medicine")
    assert encounters(client, cardio, patient_id).status_code == 403
    grant_to(client, mine, patient_id, f"Practitioner/{cardio.id}")
    assert encounters(client, cardio, patient_id).status_code == 200
    break_glass(client, er, patient_id)
    assert encounters(client, er, patient_id).status_code == 200
    reads = [
        (e.agent.who, e.outcome, e.detail.get("basis"))
        for e in entries(platform, patient_id)
        if e.kind == "access" and e.entity_type == "Encounter"
    ]
    assert sorted(reads, key=str) == sorted(
        [
            (f"Practitioner/{cardio.id}", "0", "grant"),
            (f"Practitioner/{er.id}", "0", "emergency"),
        ],
        key=str,
    )
    size = platform.audit.size("clinical")
    refused = [
        AuditRecord.from_canonical(d) for _, d in platform.audit.entries("clinical", 0, size)
    ]
    assert [r.detail.get("basis") for r in refused if r.outcome != "0"] == [None]
    granted = next(e for e in entries(platform, patient_id) if e.detail.get("basis") == "grant")
    assert granted.detail["basis-ref"]  # the Consent that carried it
    assert (
        next(
            e
            for e in entries(platform, patient_id)
            if e.kind == "access" and e.entity_type == "Consent"
        ).detail["basis"]
        == "patient"
    )


OFFICER_SCOPE = "system/AuditEvent.rs system/DetectedIssue.rus"
CELEBRITY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}


def vip_record(registrar: TestClient, platform: Platform) -> str:
    resource = patient(platform.directory.systems, 7, family="Star")
    resource["meta"] = {"security": [CELEBRITY]}
    created = registrar.post("/fhir/Patient", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def parameters(**values: str) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": k, "valueString": v} for k, v in values.items()]}


def alerts(client: TestClient, officer: dict[str, str], **params: str) -> list[dict[str, Any]]:
    found = client.get("/fhir/DetectedIssue", params=params, headers=officer)
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def test_a_snooped_celebrity_raises_an_alert_the_officer_reviews(
        client: TestClient, registrar: TestClient, platform: Platform) -> None:
    star = vip_record(registrar, platform)
    nosy = Pro(platform, "HP-NOSY", "Curieux")
    break_glass(client, nosy, star)
    assert encounters(client, nosy, star).status_code == 200
    assert platform.alerts is not None
    report = platform.alerts.scan()
    assert report.alerts >= 2 and report.position == platform.audit.size("clinical")
    assert platform.alerts.scan().alerts == 0  # the cursor moved: nothing twice

    officer = {**officer_headers(platform, OFFICER_SCOPE), **FHIR_JSON}
    vip = alerts(client, officer, code="vip")
    assert len(vip) == 1
    issue = vip[0]
    assert issue["patient"] == {"reference": f"Patient/{star}"}
    assert issue["implicated"] == [{"reference": f"Practitioner/{nosy.id}"}]
    assert issue["status"] == "preliminary" and issue["severity"] == "high"
    assert "VIP" in issue["detail"]
    evidence = [e["detail"][0]["reference"] for e in issue["evidence"]]
    assert evidence and all(r.startswith("AuditEvent/clinical-") for r in evidence)
    proof = issue["evidence"][0]["extension"][0]["valueUrl"]
    assert proof.startswith("/audit/proof/inclusion?stream=clinical&leaf_index=")
    # The evidence is the very entry of the access, readable as an AuditEvent.
    entry = client.get(f"/fhir/{evidence[0]}", headers=officer)
    assert entry.status_code == 200 and star in entry.text
    review = alerts(client, officer, code="emergency-access", status="open")
    assert review and review[0]["patient"]["reference"] == f"Patient/{star}"

    base = f"/fhir/DetectedIssue/{issue['id']}"
    acknowledged = client.post(f"{base}/$acknowledge", json=parameters(), headers=officer)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["mitigation"][0]["action"]["coding"][0]["code"] == "acknowledged"
    assigned = client.post(f"{base}/$assign", json=parameters(assignee="Lead investigator"),
                           headers=officer)
    assert assigned.status_code == 200
    assert "assigned to Lead investigator" in assigned.text
    told = client.post(f"{base}/$notify-patient", json=parameters(), headers=officer)
    assert told.status_code == 200
    again = client.post(f"{base}/$notify-patient", json=parameters(), headers=officer)
    assert again.status_code in (400, 422)
    with platform.unit_of_work() as uow:
        _, notices = uow.records.notifications(star, 0, 50)
    assert any(n.kind == "security-review" for n in notices)

    bad = client.post(f"{base}/$close", json=parameters(verdict="maybe"), headers=officer)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    closed = client.post(f"{base}/$close",
                         json=parameters(verdict="true-positive", note="confirmed"),
                         headers=officer)
    assert closed.status_code == 200 and closed.json()["status"] == "final"
    after = client.post(f"{base}/$acknowledge", json=parameters(), headers=officer)
    assert after.status_code in (400, 422)
    assert alerts(client, officer, code="vip", status="open") == []
    # No medical content, ever: the issue names people, times and reasons only.
    assert "Encounter" not in str(closed.json())


def test_a_label_given_after_the_detector_saw_the_patient_counts_from_then_on(
        client: TestClient, registrar: TestClient, platform: Platform) -> None:
    """The detector keeps what it read of a patient; the registrar's change of the patient's
    entry (in the log before the next access) makes it read them again."""
    resource = patient(platform.directory.systems, 8, family="Later")
    created = registrar.post("/fhir/Patient", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    later = created.json()
    nosy = Pro(platform, "HP-NOSY-LATER", "Curieux")
    break_glass(client, nosy, later["id"])
    assert encounters(client, nosy, later["id"]).status_code == 200
    assert platform.alerts is not None
    platform.alerts.scan()  # the detector reads the patient: not a VIP yet
    assert platform.alerts.search(kind=("vip",))[1] == []
    later["meta"] = {"security": [CELEBRITY]}
    labelled = registrar.put(f"/fhir/Patient/{later['id']}", json=later, headers=FHIR_JSON)
    assert labelled.status_code == 200, labelled.text
    assert encounters(client, nosy, later["id"]).status_code == 200
    platform.alerts.scan()
    [vip] = platform.alerts.search(kind=("vip",))[1]
    assert vip.patient_id == later["id"] and vip.professional == nosy.id


def test_nobody_but_a_security_officer_reaches_the_alerts(
        client: TestClient, registrar: TestClient, platform: Platform,
        record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    er = Pro(platform, "HP-ALERT-ER", "Urgence", "emergency-medicine")
    break_glass(client, er, patient_id)
    assert encounters(client, er, patient_id).status_code == 200
    assert platform.alerts is not None
    platform.alerts.scan()  # the app's own chore may have scanned the entries first
    assert platform.alerts.search()[0] >= 1
    officer = {**officer_headers(platform, OFFICER_SCOPE), **FHIR_JSON}
    issue = alerts(client, officer)[0]
    base = f"/fhir/DetectedIssue/{issue['id']}"
    narrow = {**officer_headers(platform), **FHIR_JSON}  # no DetectedIssue scope
    for who in (er.headers, mine, narrow):
        assert client.get("/fhir/DetectedIssue", headers=who).status_code == 403
        assert client.get(base, headers=who).status_code == 403
        for op in ("$acknowledge", "$close", "$notify-patient"):
            answer = client.post(f"{base}/{op}", json=parameters(verdict="false-positive"),
                                 headers=who)
            assert answer.status_code == 403, (op, answer.text)
            assert answer.json()["resourceType"] == "OperationOutcome"
    with TestClient(platform.app, client=("203.0.113.50", 1)) as outsider:
        assert outsider.get(base).status_code == 401
    assert client.get(base, headers=officer).json()["extension"][0]["extension"][0] == {
        "url": "state", "valueCode": "open"}  # nothing changed
    assert client.get("/fhir/DetectedIssue/unknown", headers=officer).status_code == 404
    # The refusals are in the audit trail like any other.
    size = platform.audit.size("clinical")
    refused = [AuditRecord.from_canonical(d) for _, d in platform.audit.entries("clinical", 0, size)
               if AuditRecord.from_canonical(d).entity_type == "DetectedIssue"]
    assert sum(1 for r in refused if r.outcome == "4") >= 12


def test_the_smart_configuration_lists_the_alert_scopes_and_they_mean_what_they_say(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    listed = client.get("/.well-known/smart-configuration").json()["scopes_supported"]
    assert {"system/DetectedIssue.rs", "system/DetectedIssue.rus"} <= set(listed)
    patient_id, _ = record
    er = Pro(platform, "HP-SCOPE-ER", "Urgence", "emergency-medicine")
    break_glass(client, er, patient_id)
    assert platform.alerts is not None
    platform.alerts.scan()  # the app's own chore may have scanned the entries first
    assert platform.alerts.search()[0] >= 1
    reader = {**officer_headers(platform, "system/AuditEvent.rs system/DetectedIssue.rs"),
              **FHIR_JSON}
    issue = alerts(client, reader)[0]
    base = f"/fhir/DetectedIssue/{issue['id']}"
    assert client.post(f"{base}/$acknowledge", json=parameters(),
                       headers=reader).status_code == 403  # reading is not reviewing
    reviewer = {**officer_headers(platform, "system/AuditEvent.rs system/DetectedIssue.rus"),
                **FHIR_JSON}
    assert client.post(f"{base}/$acknowledge", json=parameters(),
                       headers=reviewer).status_code == 200


def test_a_namesake_is_a_relative_only_when_the_name_is_rare_in_the_directory(
        client: TestClient, registrar: TestClient, platform: Platform) -> None:
    ids = {}
    for seq, family in ((21, "Weber"), (22, "Weber"), (23, "Zyxwabe")):
        made = registrar.post("/fhir/Patient", headers=FHIR_JSON,
                              json=patient(platform.directory.systems, seq, family=family))
        assert made.status_code == 201, made.text
        ids[seq] = str(made.json()["id"])
    # Two Webers among three patients: a common name here; one Zyxwabe: rare.
    weber = Pro(platform, "HP-NAME-WEBER", "Weber", "emergency-medicine")
    rare = Pro(platform, "HP-NAME-RARE", "Zyxwabe", "emergency-medicine")
    for pro, patient_id in ((weber, ids[21]), (rare, ids[23])):
        break_glass(client, pro, patient_id)
        assert encounters(client, pro, patient_id).status_code == 200
    assert platform.alerts is not None
    platform.alerts.warm()  # a detector built now reads the directory's name frequencies
    platform.alerts.scan()
    _, relatives = platform.alerts.search(kind=("relative",))
    assert [(a.professional, a.patient_id) for a in relatives] == [(rare.id, ids[23])]
    assert "rare family name" in relatives[0].explanation


def first_round_of_the_chores(platform: Platform) -> int:
    """Wait for the app's chores to have read the log once (they start a second after the
    app); the position they left the detector at."""
    size = platform.audit.size("clinical")
    for _ in range(300):
        with platform.unit_of_work() as uow:
            position = uow.alerts.cursor("clinical")
        if position >= size:
            return position
        time.sleep(0.1)
    raise AssertionError("the app's chores never read the audit log")


def test_the_chore_judges_every_access_at_its_next_round_with_the_isolation_forest(
        client: TestClient, registrar: TestClient, platform: Platform,
        record: tuple[str, dict[str, str]]) -> None:
    """An alert is raised at the first round of the chores after the access (they run every
    HOUSEKEEPING_SECONDS, under a minute), however many entries came before it; its severity
    is the rules' plus a tenth of the isolation forest's score, the model fitted on the
    ordinary traffic the detector read."""
    from carevault.services.anomaly_detection import MODEL_MIN_ROWS
    from carevault.services.chores import HOUSEKEEPING_SECONDS

    assert HOUSEKEEPING_SECONDS <= 60
    # The app's own chores run a second after it starts, then every HOUSEKEEPING_SECONDS:
    # the backlog this test reads must come after that first round, not be cut by it.
    start = first_round_of_the_chores(platform)
    patient_id, mine = record
    cardio = Pro(platform, "HP-FOREST-1", "Cardio")
    grant_to(client, mine, patient_id, f"Practitioner/{cardio.id}")
    for _ in range(MODEL_MIN_ROWS + 4):
        assert encounters(client, cardio, patient_id).status_code == 200
    alerts_ = platform.alerts
    assert alerts_ is not None and alerts_.model is not None
    assert not alerts_.model_fitted
    star = vip_record(registrar, platform)
    nosy = Pro(platform, "HP-FOREST-NOSY", "Curieux")
    break_glass(client, nosy, star)
    assert encounters(client, nosy, star).status_code == 200
    # One round of the chore, in batches far smaller than the backlog: all is read at once.
    report = alerts_.catch_up(limit=50)
    backlog = platform.audit.size("clinical") - start
    assert report.position == start + backlog and report.read == backlog > 50 * 5
    assert alerts_.model_fitted
    [vip] = alerts_.search(kind=("vip",))[1]
    assert "isolation-forest score" in vip.explanation
    assert 80 < vip.severity <= 90  # the rules' 0.8, ordered by the model's score
    assert alerts_.catch_up(limit=50).read == 0


# --- hand-made directory changes (the operators' stream) ------------------------------------


def clinic(registrar: TestClient, platform: Platform, identifier: str) -> str:
    resource = new_organization(platform.directory.systems, identifier=identifier,
                                name=f"Clinique {identifier}", kind="hospital")
    made = registrar.post("/fhir/Organization", json=resource, headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def role_at(platform: Platform, practitioner_id: str, organization_id: str) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
            "organization": {"reference": f"Organization/{organization_id}"},
            "code": [{"coding": [{"system": platform.directory.professions.profession_system,
                                  "code": "physician"}]}]}


def directory_alerts(platform: Platform) -> list[Any]:
    assert platform.alerts is not None
    platform.alerts.scan()
    return list(platform.alerts.search(kind=("directory",))[1])


def test_a_registrars_hand_made_role_then_an_access_through_its_organization_alerts(
        client: TestClient, registrar: TestClient, platform: Platform,
        record: tuple[str, dict[str, str]]) -> None:
    """The registrar's change is in the operators' stream, the access in the clinical one: the
    detector reads both, in time order, and the entry names whose roles changed."""
    patient_id, mine = record
    organization = clinic(registrar, platform, "ORG-DIR-1")
    grant_to(client, mine, patient_id, f"Organization/{organization}")
    newcomer = Pro(platform, "HP-DIR-1", "Neuer")
    assert encounters(client, newcomer, patient_id).status_code == 403
    made = registrar.post("/fhir/PractitionerRole",
                          json=role_at(platform, newcomer.id, organization), headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    size = platform.audit.size("operator")
    own = AuditRecord.from_canonical(platform.audit.entries("operator", size - 2, size)[0][1])
    assert own.agent.role == "registrar" and own.detail["professionals"] == newcomer.id
    assert directory_alerts(platform) == []  # a change alone is no access
    assert platform.alerts is not None
    platform.alerts.warm()  # a restart: what the detector knew is rebuilt from both streams
    assert encounters(client, newcomer, patient_id).status_code == 200
    [found] = directory_alerts(platform)
    assert found.professional == newcomer.id and "hand-made change" in found.explanation
    # Its evidence is the access itself, in the clinical stream.
    [(_, data)] = platform.audit.entries("clinical", found.evidence[0], found.evidence[0] + 1)
    access = AuditRecord.from_canonical(data)
    assert access.agent.who == f"Practitioner/{newcomer.id}" and access.patient == patient_id
    assert platform.alerts is not None and platform.alerts.scan().alerts == 0


def test_a_role_from_the_registry_raises_nothing_and_a_later_change_counts_from_its_time(
        client: TestClient, registrar: TestClient, platform: Platform,
        record: tuple[str, dict[str, str]]) -> None:
    """A role the provider registry's feed gave (not by hand) is ordinary; a hand-made change
    recorded after an access explains nothing of that access (the streams are merged in time
    order), and counts for the accesses after it."""
    from carevault.fhirmodel.directory import new_practitioner
    from carevault.services import directory as svc

    patient_id, mine = record
    organization = clinic(registrar, platform, "ORG-DIR-2")
    grant_to(client, mine, patient_id, f"Organization/{organization}")
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        ((fed, _),) = svc.register_professionals(uow, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier="HP-DIR-2", family="Alt", given=["Eva"]),
            "physician", "cardiology", organization)])
    regular = Pro(platform, "HP-DIR-2", "Alt")
    assert regular.id == fed.id
    assert encounters(client, regular, patient_id).status_code == 200
    elsewhere = clinic(registrar, platform, "ORG-DIR-3")
    made = registrar.post("/fhir/PractitionerRole",
                          json=role_at(platform, regular.id, elsewhere), headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    assert directory_alerts(platform) == []  # the access came before the change
    assert encounters(client, regular, patient_id).status_code == 200
    [found] = directory_alerts(platform)
    assert found.professional == regular.id


def test_an_operators_command_that_adds_a_professional_is_watched_too(
        client: TestClient, registrar: TestClient, platform: Platform, settings: Any,
        record: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from carevault.cli import context
    from carevault.cli.main import app

    patient_id, mine = record
    organization = clinic(registrar, platform, "ORG-DIR-4")
    grant_to(client, mine, patient_id, f"Organization/{organization}")
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    try:
        done = CliRunner().invoke(app, [
            "directory", "add-practitioner", "--identifier", "HP-DIR-CLI", "--family", "Hand",
            "--given", "Made", "--profession", "physician", "--organization", organization])
        assert done.exit_code == 0, done.output
    finally:
        context.engine_for(settings.database_url).dispose()
        context.engine_for.cache_clear()
    added = Pro(platform, "HP-DIR-CLI", "Hand")
    assert encounters(client, added, patient_id).status_code == 200
    [found] = directory_alerts(platform)
    assert found.professional == added.id
