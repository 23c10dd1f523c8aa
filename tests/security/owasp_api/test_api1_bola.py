"""OWASP API1:2023 Broken Object Level Authorization: a caller names an object (a document, a
consent, an encounter, a notice, a record) that is not theirs, by id, by identifier or in a
link, and must get nothing of it. Every object-level decision in CareVault is the engine's,
on the object's own record (`docs/authorization.md`); these attacks check it from outside.

Each attack is a callable returning its findings (see `support.owasp`); the tests expect
none, and `test_planted_bugs.py` runs some of them against weakened variants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from support.builders import HOSPITAL_SYSTEM
from support.documents import provide_bundle
from support.owasp import MARKER_B, MARKER_SECRET, Findings, Target, attempt, pdf
from support.tokens import account_token

pytestmark = pytest.mark.security

TITLE = "MARKER-Title-9931"  # every document's title in the world (sealed at rest)


def attack_a_professional_reads_another_record_by_id(target: Target) -> list[str]:
    """Patient A's physician names patient B's objects by their ids."""
    f, w, http = Findings(), target.world, target.http
    mine = w.doctor.headers
    for what, path in [
        ("B's DocumentReference", f"/fhir/DocumentReference/{w.report_b}"),
        ("B's DocumentReference, version 1", f"/fhir/DocumentReference/{w.report_b}/_history/1"),
        ("B's document bytes", f"/fhir/Binary/{w.report_b}"),
        ("B's SubmissionSet", f"/fhir/List/{w.set_b}"),
        ("B's Encounter", f"/fhir/Encounter/{w.encounter_b}"),
        ("B's Consent", f"/fhir/Consent/{w.consent_b}"),
        ("B's notification", f"/fhir/Communication/{w.notice_b}"),
        ("B's access history", f"/fhir/Patient/{w.patient_b}/$access-history"),
        ("B's documents", f"/fhir/DocumentReference?patient=Patient/{w.patient_b}"),
        ("B's SubmissionSets", f"/fhir/List?patient=Patient/{w.patient_b}"),
        ("B's encounters", f"/fhir/Encounter?patient=Patient/{w.patient_b}"),
    ]:
        attempt(f, target, what, lambda path=path: http.get(path, headers=mine), 403,
                secrets=[MARKER_B, TITLE, *([w.report_b] if w.report_b not in path else [])])
    return f.items


def attack_a_patients_app_names_another_patient(target: Target) -> list[str]:
    """Patient A's app asks for patient B's record in every way a SMART app can."""
    f, w, http = Findings(), target.world, target.http
    b = w.patient_b
    for what, path in [
        ("B's identity", f"/fhir/Patient/{b}"),
        ("B's identity history", f"/fhir/Patient/{b}/_history"),
        ("B's documents", f"/fhir/DocumentReference?patient=Patient/{b}"),
        ("B's document", f"/fhir/DocumentReference/{w.report_b}"),
        ("B's document bytes", f"/fhir/Binary/{w.report_b}"),
        ("B's consents", f"/fhir/Consent?patient=Patient/{b}"),
        ("B's notifications", f"/fhir/Communication?patient=Patient/{b}"),
        ("B's encounters", f"/fhir/Encounter?patient=Patient/{b}"),
        ("B's audit events", f"/fhir/AuditEvent?patient=Patient/{b}"),
        ("B's access history", f"/fhir/Patient/{b}/$access-history"),
        ("who may read B's record", f"/fhir/Patient/{b}/$explain?practitioner={w.doctor_b.id}"),
    ]:
        attempt(f, target, what, lambda path=path: http.get(path, headers=w.app_a), 403,
                secrets=[MARKER_B, TITLE, "Schmit"])
    attempt(f, target, "a presence code for B's record",
            lambda: http.post(f"/fhir/Patient/{b}/$presence-code", headers=w.app_a), 403)
    # PIXm resolves A's own numbers only: B's is answered as a number nobody has.
    answers = [http.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": number},
                        headers=w.app_a) for number in (f"{HOSPITAL_SYSTEM}|H-2",
                                                        f"{HOSPITAL_SYSTEM}|H-404")]
    if [a.status_code for a in answers] != [404, 404] or b in answers[0].text:
        f.add(f"PIXm of B's number for A's app: {answers[0].status_code} "
              f"{answers[0].text[:200]}")
    # A search that would find B by B's own numbers finds nobody.
    found = http.get("/fhir/Patient", params={"identifier": f"{HOSPITAL_SYSTEM}|H-2"},
                     headers=w.app_a)
    if found.status_code != 200 or found.json().get("total") != 0 or b in found.text:
        f.add(f"A's app searching B's number found something: {found.text[:200]}")
    return f.items


def attack_an_identifier_tells_a_patients_app_who_exists(target: Target) -> list[str]:
    """A patient's app names a record by a hospital number (ITI-65, 66, 67 accept
    ``patient.identifier``): another patient's number must be answered exactly as a number
    nobody has, or the app learns who is in the index (numbers can be guessed)."""
    f, w, http = Findings(), target.world, target.http
    someone, nobody = f"{HOSPITAL_SYSTEM}|H-2", f"{HOSPITAL_SYSTEM}|H-404"

    def bundle(identifier: str) -> dict[str, object]:
        system, _, value = identifier.partition("|")
        sent = provide_bundle(w.patient_a, f"Patient/{w.patient_a}", pdf("probe"))
        for entry in sent["entry"]:
            if entry["resource"]["resourceType"] in ("List", "DocumentReference"):
                entry["resource"]["subject"] = {"identifier": {"system": system, "value": value}}
        return sent

    for what, send in [
        ("ITI-67 by patient.identifier", lambda i: http.get(
            "/fhir/DocumentReference", params={"patient.identifier": i}, headers=w.app_a)),
        ("ITI-66 by patient.identifier", lambda i: http.get(
            "/fhir/List", params={"patient.identifier": i}, headers=w.app_a)),
        ("ITI-65 naming the patient by identifier", lambda i: http.post(
            "/fhir", json=bundle(i), headers=w.app_a)),
    ]:
        answers = [attempt(f, target, f"{what} ({i})", lambda i=i, send=send: send(i), 403)
                   for i in (someone, nobody)]
        told = [(a.status_code, a.text.replace(someone, "?").replace(nobody, "?"))
                for a in answers]
        if told[0] != told[1]:
            f.add(f"{what}: another patient's number and an unknown one are answered "
                  f"differently: {told[0][0]} {told[0][1][:120]} / {told[1][0]} "
                  f"{told[1][1][:120]}")
    return f.items


def attack_paging_and_relation_links_to_another_record(target: Target) -> list[str]:
    """Links a server writes carry ids: the physician edits the ``next`` link of a search of
    A's record to point at B's, and asks A's record for documents related to B's."""
    f, w, http = Findings(), target.world, target.http
    page = http.get("/fhir/DocumentReference", params={
        "patient": f"Patient/{w.patient_a}", "_count": "1"}, headers=w.doctor.headers)
    links = {link["relation"]: link["url"] for link in page.json().get("link", [])}
    if "next" not in links:
        f.add(f"the physician's own search gave no next link to tamper with: {page.text[:200]}")
        return f.items
    tampered = links["next"].replace(w.patient_a, w.patient_b).split("/fhir", 1)[1]
    attempt(f, target, "the next link pointed at B's record",
            lambda: http.get(f"/fhir{tampered}", headers=w.doctor.headers), 403,
            secrets=[MARKER_B, w.report_b])
    related = http.get("/fhir/DocumentReference", params={
        "patient": f"Patient/{w.patient_a}", "related": f"DocumentReference/{w.report_b}"},
        headers=w.doctor.headers)
    if related.status_code != 200 or related.json().get("total") != 0:
        f.add(f"A's documents related to B's: {related.status_code} {related.text[:200]}")
    return f.items


def attack_a_pharmacist_reads_beyond_the_profession(target: Target) -> list[str]:
    """A pharmacist with a normal access to A's record asks for a consultation report (not a
    pharmacist's class) and a secret document, by id and by searching."""
    f, w, http = Findings(), target.world, target.http
    mine = w.pharmacist.headers
    for what, document in [("A's consultation report", w.report_a),
                           ("A's secret document", w.secret_a)]:
        for kind in ("DocumentReference", "Binary"):
            answer = attempt(f, target, f"{what} ({kind})",
                             lambda kind=kind, document=document: http.get(
                                 f"/fhir/{kind}/{document}", headers=mine), 403,
                             secrets=[MARKER_SECRET, TITLE, "confidentiality"])
            if answer.status_code == 403 and "You may not read this document." not in answer.text:
                f.add(f"{what}: the refusal tells why: {answer.text[:200]}")
    for path in (f"/fhir/DocumentReference?patient=Patient/{w.patient_a}",
                 f"/fhir/List?patient=Patient/{w.patient_a}"):
        found = http.get(path, headers=mine)
        if found.status_code != 200 or found.json().get("total") != 0:
            f.add(f"{path}: the pharmacist's search counts or shows what they may not read: "
                  f"{found.text[:200]}")
        f.absent(found.text, [w.report_a, w.secret_a], path)
    return f.items


def attack_a_representative_outside_the_mandate(target: Target) -> list[str]:
    """A representative whose mandate ended, one whose mandate is to read only, and a token
    chosen for A used on B."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    now = datetime.now(UTC)

    def representative(scope: str, ends: datetime | None) -> dict[str, str]:
        person = platform.accounts.add_representative(
            f"rep-{scope}-{now.timestamp()}@example.lu", "a representative's passphrase 31")
        platform.accounts.create_mandate(person.account_id, w.patient_a, scope,
                                         now - timedelta(days=30), ends, by="os-user:test")
        token = account_token(platform, person.account_id, w.patient_a, kind="representative")
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    ended = representative("manage", now - timedelta(days=1))
    reader = representative("read", None)
    attempt(f, target, "a mandate that ended reads A's documents", lambda: http.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_a}"},
        headers=ended), 403, secrets=[w.report_a])
    attempt(f, target, "a mandate that ended reads A's consents", lambda: http.get(
        f"/fhir/Consent?patient=Patient/{w.patient_a}", headers=ended), 403)
    attempt(f, target, "a read-only mandate gives the stranger access", lambda: http.post(
        "/fhir/Consent", headers=reader, json=grant_to(w.patient_a, w.stranger.id)), 403)
    attempt(f, target, "a token chosen for A reads B's documents", lambda: http.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_b}"},
        headers=reader), 403, secrets=[w.report_b])
    return f.items


def grant_to(patient_id: str, practitioner_id: str) -> dict[str, object]:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "provision": {"type": "permit", "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                "reference": {"reference": f"Practitioner/{practitioner_id}"}}]}}


def attack_writes_that_name_another_records_objects(target: Target) -> list[str]:
    """Writes aimed at B's objects from A's side: withdrawing B's grant, retracting B's
    document, replacing it from a bundle on A's record, granting oneself B's record."""
    f, w, http = Findings(), target.world, target.http
    withdraw = {"resourceType": "Consent", "id": w.consent_b, "status": "inactive",
                "scope": {"coding": [{"code": "patient-privacy"}]},
                "category": [{"coding": [{"code": "59284-0"}]}]}
    attempt(f, target, "A's physician withdraws B's consent", lambda: http.put(
        f"/fhir/Consent/{w.consent_b}", json=withdraw, headers=w.doctor.headers), 403)
    attempt(f, target, "A's app withdraws B's consent", lambda: http.put(
        f"/fhir/Consent/{w.consent_b}", json=withdraw, headers=w.app_a), 403)
    attempt(f, target, "A's app grants a stranger B's record", lambda: http.post(
        "/fhir/Consent", json=grant_to(w.patient_b, w.stranger.id), headers=w.app_a), 403)
    attempt(f, target, "A's physician retracts B's document", lambda: http.post(
        f"/fhir/DocumentReference/{w.report_b}/$entered-in-error",
        headers=w.doctor.headers), 403, secrets=[MARKER_B])
    replacing = provide_bundle(w.patient_a, w.doctor, pdf("replacement"), replaces=w.report_b)
    attempt(f, target, "a bundle on A's record replaces B's document", lambda: http.post(
        "/fhir", json=replacing, headers=w.doctor.headers), (403, 404), secrets=[MARKER_B])
    still = http.get(f"/fhir/DocumentReference/{w.report_b}", headers=w.doctor_b.headers)
    if still.status_code != 200 or still.json().get("status") != "current":
        f.add(f"B's document changed: {still.text[:200]}")
    return f.items


ATTACKS = [
    attack_a_professional_reads_another_record_by_id,
    attack_a_patients_app_names_another_patient,
    attack_an_identifier_tells_a_patients_app_who_exists,
    attack_paging_and_relation_links_to_another_record,
    attack_a_pharmacist_reads_beyond_the_profession,
    attack_a_representative_outside_the_mandate,
    attack_writes_that_name_another_records_objects,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_objects_of_another_record_are_out_of_reach(attack: object, target: Target) -> None:
    assert callable(attack)
    assert attack(target) == []
