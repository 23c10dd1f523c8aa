"""What professionals record about each other, through the FHIR API on both databases: an
assistant mandated by a physician reads in their name (the audit names both) and is refused
once the mandate ends or expires; a practitioner passes a delegable access on to a colleague
with ``$delegate``; a patient's grant to a care team reaches its active members. Each write has
its refusals: who may not mandate, delegate or write a care team."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.mandates import AssistantMandate
from support.builders import patient
from support.tokens import patient_headers, professional_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}
LABELS = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


class Pro:
    def __init__(self, platform: Platform, identifier: str, family: str,
                 profession: str = "physician", specialty: str | None = "cardiology") -> None:
        token = professional_token(platform, identifier=identifier, family=family,
                                   profession=profession, specialty=specialty)
        self.headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
        with platform.unit_of_work() as uow:
            self.id = uow.directory.practitioner_ids_by_identifier([identifier])[identifier]
        self.ref = f"Practitioner/{self.id}"


@pytest.fixture
def record(registrar: TestClient, platform: Platform) -> tuple[str, dict[str, str]]:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 5),
                             headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    patient_id = str(created.json()["id"])
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}


def grant(client: TestClient, mine: dict[str, str], patient_id: str, actor: str, *,
          delegable: bool = False, end: str | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP"}]}, "reference": {"reference": actor}}],
        "securityLabel": [{"system": LABELS, "code": "N"}]}
    if delegable:
        provision["extension"] = [{"url": "https://carevault.lu/fhir/StructureDefinition/delegable",
                                   "valueBoolean": True}]
    if end is not None:
        provision["period"] = {"end": end}
    made = client.post("/fhir/Consent", headers=mine, json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"}, "provision": provision})
    assert made.status_code == 201, made.text
    return dict(made.json())


def encounters(client: TestClient, who: dict[str, str], patient_id: str) -> Any:
    return client.get("/fhir/Encounter", params={"patient": f"Patient/{patient_id}"},
                      headers=who)


def parameters(**values: Any) -> dict[str, Any]:
    items = []
    for name, value in values.items():
        for one in value if isinstance(value, list) else [value]:
            kind = ("valueReference" if isinstance(one, dict) else
                    "valueDateTime" if name in ("end", "start") else
                    "valueCode" if name in ("scope", "level") else "valueString")
            items.append({"name": name, kind: one})
    return {"resourceType": "Parameters", "parameter": items}


def later(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def mandate(client: TestClient, who: Pro, assistant: Pro, *, end: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Any:
    return client.post(f"/fhir/Practitioner/{who.id}/$mandate-assistant",
                       headers=headers or who.headers,
                       json=parameters(assistant={"reference": assistant.ref},
                                       end=end or later(), **extra))


def test_an_assistant_reads_in_the_mandators_name_until_the_mandate_ends(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    doctor = Pro(platform, "HP-MANDATOR", "Mandator")
    assistant = Pro(platform, "HP-ASSISTANT", "Assist", "medical-assistant", None)
    grant(client, mine, patient_id, doctor.ref)
    refused = encounters(client, assistant.headers, patient_id)
    assert refused.status_code == 403 and "mandate" in refused.text

    made = mandate(client, doctor, assistant)
    assert made.status_code == 200, made.text
    mandate_id = made.json()["parameter"][0]["part"][0]["valueString"]
    assert encounters(client, assistant.headers, patient_id).status_code == 200
    # The audit entry names the assistant as the agent, acting for the physician.
    entries = [AuditRecord.from_canonical(data) for _, data in
               platform.audit.patient_entries(patient_id, limit=100)]
    read = [e for e in entries if e.agent.who == assistant.ref and e.entity_type == "Encounter"]
    assert read and read[-1].agent.on_behalf_of == doctor.ref and read[-1].status == 200
    # Never writes: an encounter in the physician's name is refused.
    written = client.post("/fhir/Encounter", headers=assistant.headers, json={
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": assistant.ref}}],
        "period": {"start": "2026-11-20T09:00:00Z"}})
    assert written.status_code == 403
    # Listed by the physician; ended now, refused from the next request.
    listed = client.get(f"/fhir/Practitioner/{doctor.id}/$mandates", headers=doctor.headers)
    assert listed.status_code == 200 and mandate_id in listed.text
    ended = client.post(f"/fhir/Practitioner/{doctor.id}/$end-mandate", headers=doctor.headers,
                        json=parameters(mandate=mandate_id))
    assert ended.status_code == 200, ended.text
    assert encounters(client, assistant.headers, patient_id).status_code == 403
    again = client.post(f"/fhir/Practitioner/{doctor.id}/$end-mandate", headers=doctor.headers,
                        json=parameters(mandate=mandate_id))
    assert again.status_code == 404


def test_an_expired_mandate_or_a_suspended_mandator_gives_nothing(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    doctor = Pro(platform, "HP-MANDATOR-2", "Mandator")
    assistant = Pro(platform, "HP-ASSISTANT-2", "Assist", "medical-assistant", None)
    grant(client, mine, patient_id, doctor.ref)
    now = datetime.now(UTC)
    with platform.unit_of_work() as uow:
        uow.directory.add_mandate(AssistantMandate(
            "expired-1", doctor.id, assistant.id, now - timedelta(days=10),
            now - timedelta(seconds=1)), now, "test")
        uow.commit()
    assert encounters(client, assistant.headers, patient_id).status_code == 403
    assert mandate(client, doctor, assistant).status_code == 200
    assert encounters(client, assistant.headers, patient_id).status_code == 200
    # The mandator's licence is suspended (by the registry): the assistant stops with them.
    from carevault.services import directory as svc
    with platform.unit_of_work() as uow:
        stored = uow.directory.practitioner(doctor.id)
        assert stored is not None
        resource = dict(stored.resource)
        resource["extension"] = [{
            "url": "https://carevault.lu/fhir/StructureDefinition/licence-status",
            "valueCode": "suspended"}]
        svc.update_practitioner(uow, platform.directory, doctor.id, resource)
    refused = encounters(client, assistant.headers, patient_id)
    assert refused.status_code == 403 and "mandate" in refused.text


def test_who_may_not_mandate(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    _patient_id, mine = record
    doctor = Pro(platform, "HP-MANDATOR-3", "Mandator")
    colleague = Pro(platform, "HP-COLLEAGUE-3", "Colleague")
    assistant = Pro(platform, "HP-ASSISTANT-3", "Assist", "medical-assistant", None)
    other = Pro(platform, "HP-ASSISTANT-4", "Other", "medical-assistant", None)
    assert mandate(client, doctor, assistant).status_code == 200
    # A colleague in the physician's name; the assistant (even mandated) for anyone; a patient.
    assert mandate(client, doctor, other, headers=colleague.headers).status_code == 403
    assert client.post(f"/fhir/Practitioner/{assistant.id}/$mandate-assistant",
                       headers=assistant.headers,
                       json=parameters(assistant={"reference": other.ref}, end=later())
                       ).status_code == 403
    assert mandate(client, doctor, other, headers={**mine}).status_code == 403
    # Only assistants are mandated; an end in the future, within a year; well-formed input.
    assert mandate(client, doctor, colleague).status_code == 422
    assert mandate(client, doctor, other, end=later(-1)).status_code == 400
    assert mandate(client, doctor, other, end=later(400)).status_code == 422
    assert mandate(client, doctor, other, end="tomorrow").status_code == 400
    assert mandate(client, doctor, other, scope=["*"]).status_code == 400
    unknown = {"resourceType": "Parameters", "parameter": [{"name": "end",
                                                             "valueDateTime": later()}]}
    assert client.post(f"/fhir/Practitioner/{doctor.id}/$mandate-assistant",
                       headers=doctor.headers, json=unknown).status_code == 400
    # Nobody ends another's mandate, nor lists it.
    mandate_id = client.get(f"/fhir/Practitioner/{doctor.id}/$mandates",
                            headers=doctor.headers).json()["parameter"][0]["part"][0][
                                "valueString"]
    assert client.post(f"/fhir/Practitioner/{doctor.id}/$end-mandate",
                       headers=colleague.headers,
                       json=parameters(mandate=mandate_id)).status_code == 403
    assert client.get(f"/fhir/Practitioner/{doctor.id}/$mandates",
                      headers=colleague.headers).status_code == 403
    with platform.unit_of_work() as uow:
        assert [m.id for m in uow.directory.mandates(mandator_id=doctor.id)] == [mandate_id]


def test_delegation_through_the_api_and_who_may_not_delegate(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    holder = Pro(platform, "HP-HOLDER", "Holder")
    plain = Pro(platform, "HP-PLAIN", "Plain")
    locum = Pro(platform, "HP-LOCUM", "Locum")
    assistant = Pro(platform, "HP-ASSISTANT-5", "Assist", "medical-assistant", None)
    grant(client, mine, patient_id, holder.ref, delegable=True)
    grant(client, mine, patient_id, plain.ref)

    def delegate(who: Pro | dict[str, str], to: Pro, end: str | None = None) -> Any:
        headers = who.headers if isinstance(who, Pro) else who
        return client.post(f"/fhir/Patient/{patient_id}/$delegate", headers=headers,
                           json=parameters(delegate={"reference": to.ref}, end=end or later(7)))

    refused = delegate(holder, locum)
    assert refused.status_code == 403 and "does not allow" in refused.text
    # The setting is the patient's (the portal's); through the service here.
    from carevault.domain.authorization import Subject, SubjectKind
    from carevault.services.record_policy import Actor
    platform.policy.allow_delegation(
        Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}"), patient_id,
        True)
    assert encounters(client, locum.headers, patient_id).status_code == 403
    made = delegate(holder, locum)
    assert made.status_code == 200, made.text
    assert encounters(client, locum.headers, patient_id).status_code == 200
    # The delegate cannot pass it on; a grant that is not delegable cannot; nor can an
    # assistant, a patient or someone without access; the end is in the future.
    assert delegate(locum, plain).status_code == 403
    assert delegate(plain, locum).status_code == 403
    assert delegate(assistant, locum).status_code == 403
    assert delegate(mine, locum).status_code == 403
    stranger = Pro(platform, "HP-STRANGER", "Stranger")
    assert delegate(stranger, locum).status_code == 403
    assert delegate(holder, locum, end=later(-1)).status_code == 400
    assert delegate(holder, holder).status_code == 400


def test_a_delegation_ends_through_the_api_by_its_delegator_or_the_patient(
        client: TestClient, platform: Platform, record: tuple[str, dict[str, str]]) -> None:
    from carevault.domain.authorization import Subject, SubjectKind
    from carevault.services.record_policy import Actor
    patient_id, mine = record
    holder = Pro(platform, "HP-HOLDER-E", "Holder")
    locum = Pro(platform, "HP-LOCUM-E", "Locum")
    stranger = Pro(platform, "HP-STRANGER-E", "Stranger")
    grant(client, mine, patient_id, holder.ref, delegable=True)
    grant(client, mine, patient_id, stranger.ref)
    platform.policy.allow_delegation(
        Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}"), patient_id,
        True)

    def delegated() -> str:
        made = client.post(f"/fhir/Patient/{patient_id}/$delegate", headers=holder.headers,
                           json=parameters(delegate={"reference": locum.ref}, end=later(7)))
        assert made.status_code == 200, made.text
        return str(made.json()["parameter"][0]["valueString"])

    def end(who: Pro | dict[str, str], delegation: Any) -> Any:
        headers = who.headers if isinstance(who, Pro) else who
        return client.post(f"/fhir/Patient/{patient_id}/$end-delegation", headers=headers,
                           json=parameters(delegation=delegation))

    first = delegated()
    assert encounters(client, locum.headers, patient_id).status_code == 200
    # Neither the delegate nor another professional of the record ends it.
    assert end(locum, first).status_code == 403
    assert end(stranger, first).status_code == 403
    assert end(holder, 12).status_code == 400  # not an id
    ended = end(holder, first)
    assert ended.status_code == 200, ended.text
    assert ended.json()["parameter"] == [{"name": "ended", "valueBoolean": True}]
    assert encounters(client, locum.headers, patient_id).status_code == 403
    second = delegated()
    assert end(mine, second).status_code == 200
    assert end(mine, second).status_code == 404  # once
    assert encounters(client, locum.headers, patient_id).status_code == 403
    ends = [AuditRecord.from_canonical(data) for _, data in
            platform.audit.patient_entries(patient_id, limit=100)]
    assert sorted(e.detail["by"] for e in ends if e.interaction == "delegation-end") == [
        "delegator", "record"]


def care_team(organization: str, members: list[str], *, end: str | None = None) -> dict[str, Any]:
    team: dict[str, Any] = {
        "resourceType": "CareTeam", "status": "active", "name": "Cardiology ward team",
        "managingOrganization": [{"reference": organization}],
        "participant": [{"member": {"reference": m}} for m in members]}
    if end is not None:
        team["period"] = {"end": end}
    return team


def test_a_grant_to_a_care_team_reaches_its_active_members(
        client: TestClient, registrar: TestClient, platform: Platform,
        record: tuple[str, dict[str, str]]) -> None:
    patient_id, mine = record
    member = Pro(platform, "HP-TEAM-1", "Member")
    outsider = Pro(platform, "HP-TEAM-2", "Outsider")
    organization = registrar.post("/fhir/Organization", headers=FHIR_JSON, json={
        "resourceType": "Organization", "name": "Hôpital du Nord", "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": "prov"}]}],
        "identifier": [{"system": platform.directory.systems.organization,
                        "value": "ORG-TEAM-1"}]})
    assert organization.status_code == 201, organization.text
    org_ref = f"Organization/{organization.json()['id']}"
    # Professionals do not write the directory: a care team is the authorities'.
    assert client.post("/fhir/CareTeam", headers=member.headers,
                       json=care_team(org_ref, [member.ref])).status_code == 403
    assert client.post("/fhir/CareTeam", headers=mine,
                       json=care_team(org_ref, [member.ref])).status_code == 403
    made = registrar.post("/fhir/CareTeam", headers=FHIR_JSON,
                          json=care_team(org_ref, [member.ref]))
    assert made.status_code == 201, made.text
    team = made.json()
    assert registrar.post("/fhir/CareTeam", headers=FHIR_JSON,
                          json=care_team("Organization/nope", [member.ref])).status_code == 422
    assert registrar.post("/fhir/CareTeam", headers=FHIR_JSON,
                          json=care_team(org_ref, ["Patient/x"])).status_code == 400

    grant(client, mine, patient_id, f"CareTeam/{team['id']}", end=later(30))
    assert encounters(client, member.headers, patient_id).status_code == 200
    assert encounters(client, outsider.headers, patient_id).status_code == 403
    found = client.get("/fhir/CareTeam", headers=member.headers,
                       params={"participant": member.ref})
    assert found.status_code == 200 and found.json()["total"] == 1
    # A member who leaves the team loses the access at once.
    changed = registrar.put(f"/fhir/CareTeam/{team['id']}", headers=FHIR_JSON,
                            json={**care_team(org_ref, [outsider.ref]), "id": team["id"]})
    assert changed.status_code == 200, changed.text
    assert encounters(client, member.headers, patient_id).status_code == 403
    assert encounters(client, outsider.headers, patient_id).status_code == 200
    history = client.get(f"/fhir/CareTeam/{team['id']}/_history", headers=member.headers)
    assert history.status_code == 200 and history.json()["total"] == 2
    # A team whose period ended reaches no one.
    registrar.put(f"/fhir/CareTeam/{team['id']}", headers=FHIR_JSON, json={
        **care_team(org_ref, [outsider.ref], end="2026-01-01T00:00:00Z"), "id": team["id"]})
    assert encounters(client, outsider.headers, patient_id).status_code == 403
