"""The patient's say over their record, through the FHIR API and the service, on both
databases: grants and blocks as Consent, care relationships from Encounters, emergency access,
notifications as Communication, explanations — each applying to the very next request."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import (
    GrantLevel,
    MandateScope,
    Party,
    Subject,
    SubjectKind,
)
from carevault.domain.errors import NotFound, NotPermitted
from carevault.services.record_policy import Actor, Refused
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.tokens import officer_headers, patient_headers, professional_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


class Pro:
    """A practitioner's system: their token, and their id in the directory."""

    def __init__(self, platform: Platform, identifier: str, family: str,
                 profession: str = "physician", specialty: str | None = "cardiology") -> None:
        token = professional_token(platform, identifier=identifier, family=family,
                                   profession=profession, specialty=specialty)
        self.headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        with platform.unit_of_work() as uow:
            self.id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]


@pytest.fixture
def record(registrar: TestClient,
        client: TestClient, platform: Platform) -> tuple[str, dict[str, str]]:
    """A patient (registered by the test professional's system) and their app's headers."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 3),
                          headers=FHIR_JSON)
    assert created.status_code == 201
    patient_id = str(created.json()["id"])
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}


def consent(patient_id: str, kind: str, actor: str, labels: tuple[str, ...] = ("N",),
            period: dict[str, str] | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": kind,
        "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP"}]}, "reference": {"reference": actor}}]}
    if kind == "permit":
        provision["securityLabel"] = [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": c}
            for c in labels]
    if period:
        provision["period"] = period
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "provision": provision}


def encounter(patient_id: str, practitioner_id: str, start: str = "2026-11-20T09:00:00Z",
              code: str | None = None) -> dict[str, Any]:
    """An encounter, with the patient's presence code when given (the proof that opens the
    record; without one the encounter is a professional's own declaration, refused)."""
    made = {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
            "period": {"start": start}}
    return made if code is None else with_presence(made, code)


def search_encounters(client: TestClient, who: dict[str, str], patient_id: str) -> Any:
    return client.get("/fhir/Encounter", params={"patient": f"Patient/{patient_id}"},
                      headers=who)


def diagnostics(response: Any) -> str:
    return str(response.json()["issue"][0]["diagnostics"])


def test_a_grant_opens_the_record_and_its_withdrawal_closes_it_at_once(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    cardio = Pro(platform, "HP-CARDIO", "Cardio")
    refused = search_encounters(client, cardio.headers, patient_id)
    assert refused.status_code == 403
    assert "No active access" in diagnostics(refused)

    made = client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                     f"Practitioner/{cardio.id}", ("N", "R")),
                       headers=mine)
    assert made.status_code == 201, made.text
    grant = made.json()
    assert grant["provision"]["type"] == "permit"
    assert [label["code"] for label in grant["provision"]["securityLabel"]] == ["N", "R"]
    assert search_encounters(client, cardio.headers, patient_id).status_code == 200

    listed = client.get("/fhir/Consent", params={"patient": f"Patient/{patient_id}"},
                        headers=mine).json()
    ids = {entry["resource"]["id"] for entry in listed["entry"]}
    assert grant["id"] in ids and f"emergency-{patient_id}" in ids

    withdrawn = client.put(f"/fhir/Consent/{grant['id']}",
                           json={**grant, "status": "inactive"}, headers=mine)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "inactive"
    assert search_encounters(client, cardio.headers, patient_id).status_code == 403

    # Professionals neither read nor make consents; another patient cannot either.
    assert client.get("/fhir/Consent", params={"patient": f"Patient/{patient_id}"},
                      headers=cardio.headers).status_code == 403
    assert client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                     f"Practitioner/{cardio.id}"),
                       headers=cardio.headers).status_code == 403
    # The log keeps both changes.
    kinds = [AuditRecord.from_canonical(data).interaction for _, data in
             platform.audit.patient_entries(patient_id, limit=100)]
    assert "grant-create" in kinds and "grant-revoke" in kinds
    # The request that made the change is in the patient's entries too, with its rule path.
    requests = [AuditRecord.from_canonical(data) for _, data in
                platform.audit.patient_entries(patient_id, limit=100)]
    made_by_request = [r for r in requests if r.kind == "access" and r.entity_type == "Consent"
                       and r.interaction == "create"]
    assert made_by_request and made_by_request[0].rule is not None
    assert made_by_request[0].rule.endswith("permit (patient) — This is the patient's own record.")


def test_group_grants_need_an_end_and_bad_consents_are_refused(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    no_end = client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                       "Organization/unknown-org"),
                         headers=mine)
    assert no_end.status_code == 422 and "end date" in diagnostics(no_end)
    no_real_end = client.post("/fhir/Consent", json=consent(
        patient_id, "permit", "Organization/unknown-org", period={"end": "9999-12-31"}),
        headers=mine)
    assert no_real_end.status_code == 422
    assert "ends within five years" in diagnostics(no_real_end)
    unknown = client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                        "Practitioner/nobody"), headers=mine)
    assert unknown.status_code == 404 and "nobody" in diagnostics(unknown)
    wrong_label = consent(patient_id, "permit", "Practitioner/nobody", ("V",))
    assert client.post("/fhir/Consent", json=wrong_label, headers=mine).status_code == 400
    other = client.post("/fhir/Consent", json=consent("someone-else", "permit",
                                                      "Practitioner/nobody"), headers=mine)
    assert other.status_code == 403


def test_an_encounter_gives_a_care_relationship_the_patient_is_told_of(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    gp = Pro(platform, "HP-GP-2", "Generalist", specialty="general-practice")
    assert search_encounters(client, gp.headers, patient_id).status_code == 403
    made = client.post("/fhir/Encounter", json=encounter(
        patient_id, gp.id, code=presence_code(platform, patient_id)), headers=gp.headers)
    assert made.status_code == 201, made.text
    found = search_encounters(client, gp.headers, patient_id).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == made.json()["id"]

    grants = [e["resource"] for e in client.get(
        "/fhir/Consent", params={"patient": f"Patient/{patient_id}"}, headers=mine
    ).json()["entry"] if e["resource"]["provision"].get("actor")]
    care = [g for g in grants if g.get("sourceReference", {}).get("reference", "").startswith(
        "Encounter/")]
    assert len(care) == 1
    assert care[0]["provision"]["period"]["end"].startswith("2027-02-18")  # 90 days

    notices = client.get("/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
                         headers=mine).json()
    assert notices["total"] == 1
    texts = [p["contentString"] for p in notices["entry"][0]["resource"]["payload"]]
    assert "care event" in texts[0] and "prise en charge" in texts[1]

    # The patient withdraws it: the very next request is refused.
    assert client.put(f"/fhir/Consent/{care[0]['id']}", json={**care[0], "status": "inactive"},
                      headers=mine).status_code == 200
    assert search_encounters(client, gp.headers, patient_id).status_code == 403


def test_an_encounter_must_name_the_practitioner_and_not_be_in_the_future(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, _ = record
    gp = Pro(platform, "HP-GP-3", "Generalist", specialty="general-practice")
    someone = client.post("/fhir/Encounter", json=encounter(
        patient_id, "another", code=presence_code(platform, patient_id)), headers=gp.headers)
    assert someone.status_code == 400
    assert "participant" in someone.json()["issue"][0]["expression"][0]
    future = client.post("/fhir/Encounter",
                         json=encounter(patient_id, gp.id, "2999-01-01T00:00:00Z",
                                        presence_code(platform, patient_id)),
                         headers=gp.headers)
    assert future.status_code == 400
    old = client.post("/fhir/Encounter", json=encounter(
        patient_id, gp.id, "2020-01-01", presence_code(platform, patient_id)), headers=gp.headers)
    assert old.status_code == 422  # a care event older than 90 days gives nothing


def test_blocks_beat_care_events_and_emergencies_and_alert_the_officer(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    intruder = Pro(platform, "HP-BLOCKED", "Blocked")
    assert client.post("/fhir/Consent", json=consent(patient_id, "deny",
                                                     f"Practitioner/{intruder.id}"),
                       headers=mine).status_code == 201
    care = client.post("/fhir/Encounter", json=encounter(
        patient_id, intruder.id, code=presence_code(platform, patient_id)),
        headers=intruder.headers)
    assert care.status_code == 403 and "blocked" in diagnostics(care)
    glass = client.post(f"/fhir/Patient/{patient_id}/$emergency-access",
                        json={"resourceType": "Parameters", "parameter": [
                            {"name": "reason", "valueString": "unconscious"}]},
                        headers=intruder.headers)
    assert glass.status_code == 403 and "even in an emergency" in diagnostics(glass)
    alerts = [AuditRecord.from_canonical(data) for _, data in
              platform.audit.patient_entries(patient_id, limit=200)]
    assert [a.detail["decision"] for a in alerts if a.kind == "alert"] == ["deny"]


def test_emergency_access_opens_a_window_tells_the_patient_and_alerts(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    er = Pro(platform, "HP-ER", "Urgentiste", specialty="emergency-medicine")
    missing = client.post(f"/fhir/Patient/{patient_id}/$emergency-access",
                          json={"resourceType": "Parameters", "parameter": []},
                          headers=er.headers)
    assert missing.status_code == 400 and "reason" in diagnostics(missing)
    assert search_encounters(client, er.headers, patient_id).status_code == 403
    glass = client.post(f"/fhir/Patient/{patient_id}/$emergency-access",
                        json={"resourceType": "Parameters", "parameter": [
                            {"name": "reason", "valueString": "unconscious on arrival"}]},
                        headers=er.headers)
    assert glass.status_code == 200, glass.text
    assert glass.json()["parameter"][0]["name"] == "until"
    read = search_encounters(client, er.headers, patient_id)
    assert read.status_code == 200

    entries = [AuditRecord.from_canonical(data) for _, data in
               platform.audit.patient_entries(patient_id, limit=200)]
    alerts = [e for e in entries if e.kind == "alert"]
    assert [a.detail["decision"] for a in alerts] == ["permit"]
    declared = [e for e in entries if e.interaction == "emergency-access" and e.kind == "policy"]
    assert declared and declared[0].purpose_of_use == "EMER"
    assert declared[0].detail["reason"] == "unconscious on arrival"
    assert alerts[0].request_id is not None
    reads = [e for e in entries if e.entity_type == "Encounter" and e.outcome == "0"]
    assert reads and reads[-1].purpose_of_use == "EMER"

    notices = client.get("/fhir/Communication", params={"patient": f"Patient/{patient_id}"},
                         headers=mine).json()
    assert any("unconscious on arrival" in p["contentString"]
               for e in notices["entry"] for p in e["resource"]["payload"])

    # The patient turns emergency access off: the open window closes with it.
    turned_off = client.put(f"/fhir/Consent/emergency-{patient_id}", json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": {"type": "deny", "purpose": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "ETREAT"}]}}, headers=mine)
    assert turned_off.status_code == 200, turned_off.text
    assert search_encounters(client, er.headers, patient_id).status_code == 403
    other = Pro(platform, "HP-ER-2", "Second", specialty="emergency-medicine")
    again = client.post(f"/fhir/Patient/{patient_id}/$emergency-access",
                        json={"resourceType": "Parameters", "parameter": [
                            {"name": "reason", "valueString": "fall"}]},
                        headers=other.headers)
    assert again.status_code == 403 and "turned emergency access off" in diagnostics(again)


def test_the_security_officer_and_the_patient_can_explain_a_decision(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    cardio = Pro(platform, "HP-CARDIO-X", "Cardio")
    officer = officer_headers(platform)
    explained = client.get(f"/fhir/Patient/{patient_id}/$explain",
                           params={"practitioner": f"Practitioner/{cardio.id}"},
                           headers=officer)
    assert explained.status_code == 200, explained.text
    values = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
              for p in explained.json()["parameter"]}
    assert values["decision"] == "deny" and values["rule"] == "deny-by-default"
    assert values["path"].startswith("identity → record → blacklist")
    client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                              f"Practitioner/{cardio.id}"), headers=mine)
    mine_too = client.get(f"/fhir/Patient/{patient_id}/$explain",
                          params={"practitioner": cardio.id}, headers=mine)
    assert mine_too.status_code == 200
    assert {"name": "decision", "valueCode": "permit"} in mine_too.json()["parameter"]
    assert client.get(f"/fhir/Patient/{patient_id}/$explain",
                      params={"practitioner": cardio.id},
                      headers=cardio.headers).status_code == 403


def test_managing_is_the_patients_or_a_managing_representatives(
        platform: Platform, client: TestClient, record: tuple[str, dict[str, str]]) -> None:
    patient_id, _ = record
    cardio = Pro(platform, "HP-CARDIO-M", "Cardio")
    policy = platform.policy
    reader = Actor(Subject(SubjectKind.REPRESENTATIVE, "rep-reader"), "account:rep-reader")
    with pytest.raises(Refused) as refused:
        policy.grant(reader, patient_id, Party.PRACTITIONER, cardio.id, GrantLevel.NORMAL)
    assert refused.value.decision.rule == "mandate"
    doctor = Actor(Subject(SubjectKind.PRACTITIONER, cardio.id, "physician"),
                   f"Practitioner/{cardio.id}")
    with pytest.raises(Refused):
        policy.close_record(doctor, patient_id)
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    policy.grant(me, patient_id, Party.PRACTITIONER, cardio.id, GrantLevel.NORMAL)
    assert search_encounters(client, cardio.headers, patient_id).status_code == 200
    policy.close_record(me, patient_id)
    closed = search_encounters(client, cardio.headers, patient_id)
    assert closed.status_code == 403 and "closed" in diagnostics(closed)
    policy.reopen_record(me, patient_id)
    assert search_encounters(client, cardio.headers, patient_id).status_code == 200


def test_a_delegation_needs_the_patients_leave_and_ends_with_the_delegators_grant(
        platform: Platform, client: TestClient, record: tuple[str, dict[str, str]]) -> None:
    from datetime import UTC, datetime, timedelta

    patient_id, mine = record
    cardio = Pro(platform, "HP-DELEGATOR", "Cardio")
    colleague = Pro(platform, "HP-DELEGATE", "Locum")
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    doctor = Actor(Subject(SubjectKind.PRACTITIONER, cardio.id, "physician"),
                   f"Practitioner/{cardio.id}")
    grant = platform.policy.grant(me, patient_id, Party.PRACTITIONER, cardio.id,
                                  GrantLevel.NORMAL, delegable=True)
    week = datetime.now(UTC) + timedelta(days=7)
    with pytest.raises(NotPermitted, match="does not allow"):
        platform.care.delegate(doctor, patient_id, colleague.id, GrantLevel.NORMAL, week)
    platform.policy.allow_delegation(me, patient_id, True)
    platform.care.delegate(doctor, patient_id, colleague.id, GrantLevel.EXTENDED, week)
    assert search_encounters(client, colleague.headers, patient_id).status_code == 200
    # The patient's history says for how long.
    texts = [next(p["valueString"] for p in e["part"] if p["name"] == "text") for e in client.get(
        f"/fhir/Patient/{patient_id}/$access-history", headers=mine,
        params={"_count": "100"}).json()["parameter"] if e["name"] == "entry"]
    until = f"until {week.day} {week:%B} {week.year} at {week:%H:%M} UTC"
    assert any("passed their access to your record on to a colleague " + until in t
               for t in texts), texts
    # The delegator's access ends, and the delegate's with it.
    platform.policy.revoke_grant(me, patient_id, grant.id)
    assert search_encounters(client, colleague.headers, patient_id).status_code == 403


def test_representatives_named_and_removed_by_the_patient(
        platform: Platform, client: TestClient, record: tuple[str, dict[str, str]]) -> None:
    from support.tokens import account_token

    patient_id, _ = record
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    parent = platform.accounts.add_representative("parent@example.lu",
                                                  "orange kettle mountain 4471")
    mandate = platform.representatives.add(me, patient_id, parent.account_id,
                                                 MandateScope.READ)
    token = account_token(platform, parent.account_id, patient_id, kind="representative")
    theirs = {"Authorization": f"Bearer {token}", **FHIR_JSON}
    listed = client.get("/fhir/Consent", params={"patient": f"Patient/{patient_id}"},
                        headers=theirs)
    assert listed.status_code == 200
    cardio = Pro(platform, "HP-CARDIO-R", "Cardio")
    write = client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                      f"Practitioner/{cardio.id}"),
                        headers=theirs)
    assert write.status_code == 403 and "reading only" in diagnostics(write)
    platform.representatives.remove(me, patient_id, mandate.id)
    gone = client.get("/fhir/Consent", params={"patient": f"Patient/{patient_id}"},
                      headers=theirs)
    assert gone.status_code == 403 and "no longer" in diagnostics(gone)
    with pytest.raises(NotFound):
        platform.representatives.remove(me, patient_id, mandate.id)
    with pytest.raises(NotFound):  # a patient's own account is no representative's
        platform.representatives.add(me, patient_id, "no-such-account", MandateScope.READ)


def test_document_settings_change_what_a_search_finds_at_once(
        platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    """Hide, confidentiality, referring physician: the SQL filter sees the change at once."""
    from datetime import UTC, datetime

    from carevault.domain.authorization import Confidentiality, DocumentFacts

    patient_id, _ = record
    cardio = Pro(platform, "HP-CARDIO-D", "Cardio")
    gp = Pro(platform, "HP-GP-D", "Generalist", specialty="general-practice")
    now = datetime.now(UTC)
    with platform.unit_of_work() as uow:
        for n, level in enumerate(("N", "N", "R")):
            uow.records.add_document(patient_id, DocumentFacts(
                id=f"doc-{n}", author_id="someone-else", author_organization_id="org",
                class_code="consultation-report", confidentiality=Confidentiality(level)), now)
        uow.commit()
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    policy = platform.policy
    policy.grant(me, patient_id, Party.PRACTITIONER, cardio.id, GrantLevel.NORMAL)
    policy.grant(me, patient_id, Party.PRACTITIONER, gp.id, GrantLevel.NORMAL)

    def visible(practitioner_id: str) -> list[str]:
        with platform.unit_of_work() as uow:
            from carevault.services.record_policy import practitioner_subject
            subject = practitioner_subject(uow, practitioner_id)
            facts = policy.facts(uow, patient_id, datetime.now(UTC))
            total, found = uow.records.find_documents(
                patient_id, policy.visible(subject, facts, datetime.now(UTC)),
                offset=0, count=10)
        assert total == len(found)
        return [d.id for d in found]

    assert visible(cardio.id) == ["doc-0", "doc-1"]
    policy.hide_document(me, patient_id, "doc-0", True)
    assert visible(cardio.id) == ["doc-1"]
    policy.name_referring_physician(me, patient_id, gp.id)  # sees hidden, and R
    assert visible(gp.id) == ["doc-0", "doc-1", "doc-2"]
    policy.set_document_confidentiality(me, patient_id, "doc-1", Confidentiality.V)
    assert visible(gp.id) == ["doc-0", "doc-2"] and visible(cardio.id) == []
    policy.hide_document(me, patient_id, "doc-0", False)
    assert visible(cardio.id) == ["doc-0"]
    policy.set_default_confidentiality(me, patient_id, Confidentiality.R)
    with platform.unit_of_work() as uow:
        facts = policy.facts(uow, patient_id, datetime.now(UTC))
    assert facts is not None and facts.default_confidentiality is Confidentiality.R
    with pytest.raises(NotFound):
        policy.hide_document(me, patient_id, "no-such-document", True)
    kinds = [AuditRecord.from_canonical(data).interaction for _, data in
             platform.audit.patient_entries(patient_id, limit=200)]
    for change in ("document-hide", "document-unhide", "referring-physician",
                   "document-confidentiality", "default-confidentiality"):
        assert change in kinds


def test_an_assistant_is_refused_by_rule_1_until_the_directory_records_a_mandate(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    """Found by the access matrix: a medical assistant's card was taken for a practitioner's,
    so that a grant let them read the record, declare an emergency and record a care event.
    docs/authorization.md: an assistant's token is refused by rule 1 (identity-assistant)
    until the directory records who mandates them."""
    patient_id, mine = record
    assistant = Pro(platform, "HP-ASSISTANT", "Assistant", profession="medical-assistant",
                    specialty=None)
    assert client.post("/fhir/Consent", json=consent(patient_id, "permit",
                                                     f"Practitioner/{assistant.id}"),
                       headers=mine).status_code == 201
    refusals = [
        search_encounters(client, assistant.headers, patient_id),
        client.get(f"/fhir/Practitioner/{assistant.id}", headers=assistant.headers),
        client.post(f"/fhir/Patient/{patient_id}/$emergency-access", headers=assistant.headers,
                    json={"resourceType": "Parameters", "parameter": [
                        {"name": "reason", "valueString": "unconscious"}]}),
        client.post("/fhir/Encounter", headers=assistant.headers, json=encounter(
            patient_id, assistant.id, code=presence_code(platform, patient_id))),
    ]
    for refused in refusals:
        assert refused.status_code == 403, refused.text
        assert "assistant has no valid mandate" in diagnostics(refused)
    explained = client.get(f"/fhir/Patient/{patient_id}/$explain",
                           params={"practitioner": assistant.id}, headers=mine).json()
    assert {"name": "rule", "valueString": "identity"} in explained["parameter"]


def declare(client: TestClient, who: dict[str, str], patient_id: str) -> Any:
    return client.post(f"/fhir/Patient/{patient_id}/$emergency-access",
                       json={"resourceType": "Parameters", "parameter": [
                           {"name": "reason", "valueString": "found unconscious"}]},
                       headers=who)


def new_record(registrar: TestClient, platform: Platform, seq: int) -> str:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, seq),
                             headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_emergencies_beyond_the_quota_are_refused_and_alert_the_officer(
        client: TestClient, registrar: TestClient, platform: Platform) -> None:
    """Two declarations in 24 hours allowed: the third, on yet another record, is refused by
    the engine (403, OperationOutcome, the reason in words), nothing opens, and the security
    officer is alerted; another professional still declares."""
    platform.care.emergency_quota = 2
    er = Pro(platform, "HP-QUOTA", "Quota", specialty="emergency-medicine")
    first, second, third = (new_record(registrar, platform, n) for n in (21, 22, 23))
    assert declare(client, er.headers, first).status_code == 200
    assert declare(client, er.headers, second).status_code == 200
    refused = declare(client, er.headers, third)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "as many emergencies as the platform allows" in diagnostics(refused)
    assert search_encounters(client, er.headers, third).status_code == 403
    entries = [AuditRecord.from_canonical(data) for _, data in
               platform.audit.patient_entries(third, limit=200)]
    alerts = [e for e in entries if e.kind == "alert"]
    assert [(a.detail["decision"], a.detail["rule"]) for a in alerts] == [("deny", "emergency")]
    assert any("emergency" in (e.rule or "") and e.outcome != "0" for e in entries
               if e.kind == "access")
    colleague = Pro(platform, "HP-QUOTA-2", "Other", specialty="emergency-medicine")
    assert declare(client, colleague.headers, third).status_code == 200


def test_two_racing_declarations_cannot_pass_the_quota(
        registrar: TestClient, platform: Platform) -> None:
    """One place left, two declarations at the same instant on two records, each in its own
    thread and transaction: exactly one is let in (the second counts the first), on SQLite and
    on PostgreSQL; three rounds."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from carevault.services.record_policy import practitioner_subject

    er = Pro(platform, "HP-RACE-ER", "Racer", specialty="emergency-medicine")
    with platform.unit_of_work() as uow:
        subject = practitioner_subject(uow, er.id, now=datetime.now(UTC))
    actor = Actor(subject, f"Practitioner/{er.id}")
    records = [new_record(registrar, platform, 30 + n) for n in range(6)]
    for round_ in range(3):
        platform.care.emergency_quota = round_ + 1  # one place left each round
        start = threading.Barrier(2)

        def race(patient_id: str, start: threading.Barrier = start) -> str:
            start.wait()
            try:
                platform.care.declare_emergency(actor, patient_id, "two at once")
            except Refused as refused:
                return refused.decision.reason
            return "open"

        pair = records[2 * round_: 2 * round_ + 2]
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(race, pair))
        assert outcomes == ["emergency-quota", "open"], outcomes
