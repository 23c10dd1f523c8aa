"""Writes that name an existing document pass the read of that document (pentest #12, finding
4): nobody replaces, retracts, hides or relabels a document they may not see, and the refusal
tells them nothing about it. SubmissionSets (ITI-66) show only what the caller may see
(finding 5). Over HTTP, on both databases, as a third-party system sends it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro, created_id, grant, provide_bundle, publish
from support.tokens import account_token, patient_headers

PSYCHIATRY_CONSULT = "34788-0"  # engine class "psychiatric": physicians only
MEDICATION_SUMMARY = "56445-0"  # engine class "medication": a pharmacist reads and writes it


@pytest.fixture
def setting(registrar: TestClient,
        client: TestClient, platform: Platform) -> tuple[str, dict[str, str], Pro]:
    """A patient, their app's headers, and a GP who saw them (a care relationship)."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 7),
                          headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-WRITES-GP")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}, gp


def status_of(client: TestClient, author: Pro, document_id: str) -> str:
    """The document's status, as its author (who always reads it) sees it."""
    answer = client.get(f"/fhir/DocumentReference/{document_id}", headers=author.headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def stored(platform: Platform) -> tuple[int, int]:
    """How many documents and SubmissionSets the database holds."""
    with platform.engine.connect() as connection:
        return (connection.execute(select(func.count()).select_from(t.document)).scalar_one(),
                connection.execute(select(func.count()).select_from(t.submission_set))
                .scalar_one())


def hide(client: TestClient, mine: dict[str, str], document_id: str) -> None:
    answer = client.post(f"/fhir/DocumentReference/{document_id}/$privacy", headers=mine,
                         json={"resourceType": "Parameters",
                               "parameter": [{"name": "hidden", "valueBoolean": True}]})
    assert answer.status_code == 200, answer.text


def refused_blindly(answer: Any, what: str, *secrets: str) -> None:
    """403, and the caller reads that the document is not theirs to see, nothing more."""
    assert answer.status_code == 403, answer.text
    diagnostics = answer.json()["issue"][0]["diagnostics"]
    assert diagnostics == f"the document to {what} is not one you may see", diagnostics
    for secret in secrets:
        assert secret not in diagnostics.lower()


def recorded_refusal(platform: Platform, before: int, interaction: str) -> AuditRecord:
    """The audit entry of the one refused request since ``before``."""
    rows = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    refused = [record for record in (AuditRecord.from_canonical(data) for _, data in rows)
               if record.interaction == interaction and record.status == 403]
    assert len(refused) == 1, refused
    return refused[0]


def test_a_colleague_does_not_replace_a_hidden_document(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    original = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    hide(client, mine, original)
    colleague = Pro(platform, "HP-WRITES-COLLEAGUE")
    grant(client, mine, patient_id, colleague.id)
    before, audit_before = stored(platform), platform.audit.size("clinical")

    answer = publish(client, colleague, provide_bundle(patient_id, colleague,
                                                       replaces=original))
    refused_blindly(answer, "replace", "hidden", "secret", "restricted")
    assert status_of(client, gp, original) == "current"
    assert stored(platform) == before  # the whole Bundle, atomically
    # The caller is told nothing; the audit keeps the rule that refused.
    entry = recorded_refusal(platform, audit_before, "transaction")
    assert entry.outcome != "0" and entry.rule is not None
    assert "deny (hidden)" in entry.rule, entry.rule

    # The author sees what the patient hid from others, and corrects it.
    corrected = publish(client, gp, provide_bundle(patient_id, gp, replaces=original))
    assert corrected.status_code == 200, corrected.text
    assert status_of(client, gp, original) == "superseded"


def test_an_invisible_documents_status_is_not_told_either(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """Replacing a hidden document that was already replaced: 403, not the 409 that would
    tell its status."""
    patient_id, mine, gp = setting
    original = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    assert publish(client, gp, provide_bundle(patient_id, gp, replaces=original)
                   ).status_code == 200
    hide(client, mine, original)
    colleague = Pro(platform, "HP-WRITES-LATE")
    grant(client, mine, patient_id, colleague.id)
    answer = publish(client, colleague, provide_bundle(patient_id, colleague,
                                                       replaces=original))
    refused_blindly(answer, "replace", "superseded", "replaced")


def test_a_secret_document_is_replaced_by_its_author_only(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    secret = created_id(publish(client, gp, provide_bundle(patient_id, gp, confidentiality="V")))
    colleague = Pro(platform, "HP-WRITES-V")
    grant(client, mine, patient_id, colleague.id, extended=True)  # even an extended access
    before = stored(platform)
    answer = publish(client, colleague, provide_bundle(patient_id, colleague, replaces=secret))
    refused_blindly(answer, "replace", "secret", "restricted")
    assert status_of(client, gp, secret) == "current"
    assert stored(platform) == before
    assert publish(client, gp, provide_bundle(patient_id, gp, replaces=secret)
                   ).status_code == 200


def test_a_restricted_document_needs_an_extended_access_to_be_replaced(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    restricted = created_id(publish(client, gp, provide_bundle(patient_id, gp,
                                                               confidentiality="R")))
    normal = Pro(platform, "HP-WRITES-NORMAL")
    grant(client, mine, patient_id, normal.id)
    before = stored(platform)
    answer = publish(client, normal, provide_bundle(patient_id, normal, replaces=restricted))
    refused_blindly(answer, "replace", "restricted", "extended")
    assert status_of(client, gp, restricted) == "current"
    assert stored(platform) == before
    # With an extended access the document is theirs to read, and so to correct.
    extended = Pro(platform, "HP-WRITES-EXTENDED")
    grant(client, mine, patient_id, extended.id, extended=True)
    replaced = publish(client, extended, provide_bundle(patient_id, extended,
                                                        confidentiality="R", replaces=restricted))
    assert replaced.status_code == 200, replaced.text
    assert status_of(client, gp, restricted) == "superseded"


def test_a_pharmacist_does_not_replace_a_psychiatric_report(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    report = created_id(publish(client, gp, provide_bundle(patient_id, gp,
                                                           type_code=PSYCHIATRY_CONSULT)))
    medication = created_id(publish(client, gp, provide_bundle(
        patient_id, gp, type_code=MEDICATION_SUMMARY, class_code=MEDICATION_SUMMARY)))
    pharmacist = Pro(platform, "HP-WRITES-PHARMA", "pharmacist", None)
    grant(client, mine, patient_id, pharmacist.id)
    before = stored(platform)
    answer = publish(client, pharmacist, provide_bundle(
        patient_id, pharmacist, type_code=MEDICATION_SUMMARY, class_code=MEDICATION_SUMMARY,
        replaces=report))
    refused_blindly(answer, "replace", "psychiatric", "category", "kind")
    assert status_of(client, gp, report) == "current"
    assert stored(platform) == before
    # A medication summary is within a pharmacist's profile: they may correct it.
    corrected = publish(client, pharmacist, provide_bundle(
        patient_id, pharmacist, type_code=MEDICATION_SUMMARY, class_code=MEDICATION_SUMMARY,
        replaces=medication))
    assert corrected.status_code == 200, corrected.text
    assert status_of(client, gp, medication) == "superseded"


def test_a_granted_physician_replaces_a_document_they_see(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    original = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    colleague = Pro(platform, "HP-WRITES-PEER")
    grant(client, mine, patient_id, colleague.id)
    replaced = publish(client, colleague, provide_bundle(patient_id, colleague,
                                                         replaces=original))
    assert replaced.status_code == 200, replaced.text
    assert status_of(client, gp, original) == "superseded"
    # A document that does not exist, or is in another record, is simply not found.
    unknown = publish(client, colleague, provide_bundle(patient_id, colleague,
                                                        replaces="no-such-document"))
    assert unknown.status_code == 404, unknown.text


def test_a_signature_signs_a_document_of_its_own_bundle_only(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """A signature cannot be pointed at a stored document (it would take its facts)."""
    patient_id, mine, gp = setting
    original = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    hide(client, mine, original)
    colleague = Pro(platform, "HP-WRITES-SIGNER")
    grant(client, mine, patient_id, colleague.id)
    bundle = provide_bundle(patient_id, colleague)
    bundle["entry"][3]["resource"]["relatesTo"] = [
        {"code": "signs", "target": {"reference": f"DocumentReference/{original}"}}]
    before = stored(platform)
    answer = publish(client, colleague, bundle)
    assert answer.status_code == 400, answer.text
    assert "of this Bundle" in answer.json()["issue"][0]["diagnostics"]
    assert stored(platform) == before


def test_a_colleague_does_not_retract_a_hidden_document(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    original = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    hide(client, mine, original)
    colleague = Pro(platform, "HP-WRITES-RETRACT")
    grant(client, mine, patient_id, colleague.id)
    audit_before = platform.audit.size("clinical")
    url = f"/fhir/DocumentReference/{original}/$entered-in-error"
    refused_blindly(client.post(url, json={}, headers=colleague.headers),
                    "mark entered-in-error", "hidden")
    assert status_of(client, gp, original) == "current"
    entry = recorded_refusal(platform, audit_before, "operation")
    assert entry.rule is not None and "deny (hidden)" in entry.rule, entry.rule
    # Nor release it (the author's act alone, on a document the caller may not even see).
    refused_blindly(client.post(f"/fhir/DocumentReference/{original}/$release", json={},
                                headers=colleague.headers), "release", "hidden")
    marked = client.post(url, json={}, headers=gp.headers)
    assert marked.status_code == 200 and marked.json()["status"] == "entered-in-error"


def test_the_privacy_of_a_document_is_changed_only_by_who_may_see_it(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """A representative does not read secret documents, so does not relabel one to read it;
    a patient does not hide what their doctor holds from them until they have talked."""
    from datetime import UTC, datetime, timedelta

    patient_id, mine, gp = setting
    secret = created_id(publish(client, gp, provide_bundle(patient_id, gp, confidentiality="V")))
    held = created_id(publish(client, gp, provide_bundle(patient_id, gp, held=True)))
    plain = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    parent = platform.accounts.add_representative("guardian@example.lu",
                                                  "orange kettle mountain 5583")
    platform.accounts.create_mandate(parent.account_id, patient_id, "manage",
                                     datetime.now(UTC) - timedelta(days=1), by="os-user:test")
    theirs = {"Authorization": "Bearer " + account_token(
        platform, parent.account_id, patient_id, kind="representative"), **FHIR_JSON}

    def privacy(headers: dict[str, str], document_id: str, name: str, value: Any) -> Any:
        kind = "valueBoolean" if name == "hidden" else "valueCode"
        return client.post(f"/fhir/DocumentReference/{document_id}/$privacy", headers=headers,
                           json={"resourceType": "Parameters",
                                 "parameter": [{"name": name, kind: value}]})

    def label(document_id: str) -> str:
        reference = client.get(f"/fhir/DocumentReference/{document_id}",
                               headers=gp.headers).json()
        return str(reference["securityLabel"][0]["coding"][0]["code"])

    audit_before = platform.audit.size("clinical")
    refused_blindly(privacy(theirs, secret, "confidentiality", "N"), "change", "secret")
    assert label(secret) == "V"
    assert client.get(f"/fhir/Binary/{secret}", headers=theirs).status_code == 403
    entry = recorded_refusal(platform, audit_before, "operation")
    assert entry.rule is not None and "deny (confidentiality)" in entry.rule, entry.rule
    refused_blindly(privacy(mine, held, "hidden", True), "change", "released")
    # What each of them sees is theirs to hide or relabel.
    assert privacy(theirs, plain, "confidentiality", "R").status_code == 200
    assert label(plain) == "R"
    assert privacy(mine, secret, "hidden", True).status_code == 200
    assert privacy(mine, "no-such-document", "hidden", True).status_code == 404


def test_a_submission_set_is_listed_only_to_who_sees_one_of_its_documents(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    hidden = publish(client, gp, provide_bundle(patient_id, gp))
    hide(client, mine, created_id(hidden))
    hidden_set = next(e["response"]["location"].split("/")[-3] for e in hidden.json()["entry"]
                      if "/List/" in e["response"]["location"])
    colleague = Pro(platform, "HP-WRITES-LISTS")
    grant(client, mine, patient_id, colleague.id)

    def lists(headers: dict[str, str]) -> Any:
        answer = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                            headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    seen = lists(colleague.headers)
    assert seen["total"] == 0 and not seen.get("entry"), seen
    assert client.get(f"/fhir/List/{hidden_set}", headers=colleague.headers).status_code == 404
    # The author and the patient see it, with its entries.
    for headers in (gp.headers, mine):
        theirs = lists(headers)
        assert theirs["total"] == 1, theirs
        assert len(theirs["entry"][0]["resource"]["entry"]) == 2  # the report, its signature
        assert client.get(f"/fhir/List/{hidden_set}", headers=headers).status_code == 200
    # Another submission, visible: counted and listed alone, on every page.
    visible = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    seen = lists(colleague.headers)
    assert seen["total"] == 1 and len(seen["entry"]) == 1, seen
    items = [i["item"]["reference"] for i in seen["entry"][0]["resource"]["entry"]]
    assert any(item.endswith(f"DocumentReference/{visible}") for item in items), items
    assert lists(gp.headers)["total"] == 2
    paged = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}", "_count": "1"},
                       headers=colleague.headers).json()
    assert paged["total"] == 1 and len(paged["entry"]) == 1


def test_submission_sets_stored_before_the_upgrade_are_listed_after_it(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    """Migration 0012 fills each document's SubmissionSet, which the ITI-66 filter reads."""
    from alembic import command

    from carevault.adapters.storage.database import alembic_config, upgrade

    patient_id, _, gp = setting
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    publish(client, gp, provide_bundle(patient_id, gp))
    command.downgrade(alembic_config(platform.engine), "0011")
    with platform.engine.connect() as connection:  # as revision 0011 stored them
        assert connection.execute(select(t.document_metadata.c.submission_set_id).where(
            t.document_metadata.c.submission_set_id.is_not(None))).first() is None
    upgrade(platform.engine)
    with platform.engine.connect() as connection:
        members = connection.execute(select(
            t.document_metadata.c.document_id, t.document_metadata.c.submission_set_id)).all()
    assert len(members) == 4 and all(set_id for _, set_id in members)
    found = client.get("/fhir/List", params={"patient": f"Patient/{patient_id}"},
                       headers=gp.headers).json()
    assert found["total"] == 2
    items = [i["item"]["reference"] for e in found["entry"] for i in e["resource"]["entry"]]
    assert any(item.endswith(f"DocumentReference/{document_id}") for item in items)
