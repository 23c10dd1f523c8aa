"""OWASP API3:2023 Broken Object Property Level Authorization: a caller may write an object
but not every property of it (mass assignment), and may read an object but not every property
that comes with it (excessive data exposure). CareVault builds what it stores from what each
caller may say, and what it answers from what each caller may see.
"""

from __future__ import annotations

from typing import Any

import pytest

from carevault.domain.authorization import Authority
from support.authorities import presence_code, with_presence
from support.builders import HOSPITAL_SYSTEM, national_id
from support.documents import provide_bundle
from support.owasp import (
    TITLE_SECRET,
    Findings,
    Target,
    attempt,
    data_fingerprint,
    encounter,
    hospital_system,
    pdf,
)

pytestmark = pytest.mark.security


def _document_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "DocumentReference"
                and not e["resource"].get("relatesTo"))


def attack_a_patients_app_sets_what_it_may_not(target: Target) -> list[str]:
    """Patient A's app uploads a document naming its own id, version, date and a physician
    as author, holds it from the patient, rewrites the patient's identity, and grants access
    to secret documents or to another patient."""
    f, w, http = Findings(), target.world, target.http
    as_doctor = provide_bundle(w.patient_a, f"Practitioner/{w.doctor.id}", pdf("forged"))
    attempt(f, target, "an upload authored by a physician", lambda: http.post(
        "/fhir", json=as_doctor, headers=w.app_a), 422)
    held = provide_bundle(w.patient_a, f"Patient/{w.patient_a}", pdf("held"), held=True)
    attempt(f, target, "an upload held from the patient", lambda: http.post(
        "/fhir", json=held, headers=w.app_a), 400)
    chosen = provide_bundle(w.patient_a, f"Patient/{w.patient_a}", pdf("chosen"))
    _document_of(chosen).update({
        "id": "chosen-by-the-app", "date": "1999-01-01T00:00:00Z",
        "meta": {"versionId": "7", "lastUpdated": "1999-01-01T00:00:00Z"}})
    sent = http.post("/fhir", json=chosen, headers=w.app_a)
    if sent.status_code != 200:
        f.add(f"a plain upload with client-chosen id and meta was refused: {sent.text[:200]}")
    else:
        location = next(e["response"]["location"] for e in sent.json()["entry"]
                        if "/DocumentReference/" in e["response"]["location"])
        path = "/fhir" + location.split("/fhir", 1)[1].split("/_history")[0]
        stored = http.get(path, headers=w.app_a).json()
        if stored.get("id") == "chosen-by-the-app" or stored["meta"]["versionId"] != "1":
            f.add(f"the app chose the document's id or version: {stored.get('id')}, "
                  f"{stored.get('meta')}")
        if stored.get("date", "").startswith("1999") or \
                stored["meta"]["lastUpdated"].startswith("1999"):
            f.add("the app chose when the document was registered")
        if stored.get("author") != [{"reference": f"Patient/{w.patient_a}"}]:
            f.add(f"the upload's author is {stored.get('author')}")
    me = http.get(f"/fhir/Patient/{w.patient_a}", headers=w.app_a).json()
    for what, changed in [
        ("its own name", {**me, "name": [{"family": "Forged", "given": ["Name"]}]}),
        ("another patient's hospital number", {**me, "identifier": [
            *me["identifier"], {"system": HOSPITAL_SYSTEM, "value": "H-2"}]}),
        ("a national identifier", {**me, "identifier": [
            {"system": i["system"], "value": national_id(99)
             if i["system"] == "https://carevault.lu/fhir/sid/matricule" else i["value"]}
            for i in me["identifier"]]}),
        ("a link to patient B (a merge)", {**me, "link": [{
            "other": {"reference": f"Patient/{w.patient_b}"}, "type": "replaced-by"}]}),
        ("inactive", {**me, "active": False}),
    ]:
        attempt(f, target, f"A's app sets {what}", lambda changed=changed: http.put(
            f"/fhir/Patient/{w.patient_a}", json=changed, headers=w.app_a), 403)
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system":
                                     "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": f"Patient/{w.patient_a}"}}
    actor = {"role": {"coding": [{"code": "IRCP"}]},
             "reference": {"reference": f"Practitioner/{w.stranger.id}"}}
    for what, provision in [
        ("secret documents to a stranger", {"type": "permit", "actor": [actor], "securityLabel": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
             "code": "V"}]}),
        ("the record to another patient", {"type": "permit", "actor": [{
            **actor, "reference": {"reference": f"Patient/{w.patient_b}"}}]}),
    ]:
        attempt(f, target, f"A's app grants {what}", lambda provision=provision: http.post(
            "/fhir/Consent", json={**consent, "provision": provision}, headers=w.app_a), 400)
    return f.items


def attack_a_professional_names_someone_else(target: Target) -> list[str]:
    """Patient A's physician records a care event (with A's genuine presence code) naming a
    colleague or another organization, and publishes documents in a colleague's name, in an
    organization's name or in a status other than current."""
    f, w, http = Findings(), target.world, target.http
    code = presence_code(target.platform, w.patient_a)
    for what, changed in [
        ("a colleague as the participant", {"participant": [
            {"individual": {"reference": f"Practitioner/{w.stranger.id}"}}]}),
        ("a colleague beside themself", {"participant": [
            {"individual": {"reference": f"Practitioner/{w.doctor.id}"}},
            {"individual": {"reference": f"Practitioner/{w.stranger.id}"}}]}),
        ("an organization they do not work for", {"serviceProvider": {
            "reference": f"Organization/{w.hospital_id}"}}),
    ]:
        visit = with_presence({**encounter(w.patient_a, w.doctor.id), **changed}, code)
        attempt(f, target, f"an encounter naming {what}", lambda visit=visit: http.post(
            "/fhir/Encounter", json=visit, headers=w.doctor.headers), 400)
    # The code was not spent by the refused attempts: the genuine encounter still works, and
    # what the physician chose for its id and version is not what is stored.
    genuine = with_presence({**encounter(w.patient_a, w.doctor.id), "id": "chosen",
                             "meta": {"versionId": "9", "security": [{"code": "V"}]}}, code)
    made = http.post("/fhir/Encounter", json=genuine, headers=w.doctor.headers)
    if made.status_code != 201:
        f.add(f"the refused encounters spent the patient's code: {made.text[:200]}")
    elif made.json()["id"] == "chosen" or made.json()["meta"] != {
            "versionId": "1", "lastUpdated": made.json()["meta"]["lastUpdated"]}:
        f.add(f"the physician chose the encounter's id or meta: {made.json()['meta']}")
    for what, bundle, status in [
        ("in a colleague's name", _authored(w, f"Practitioner/{w.stranger.id}"), 422),
        ("in the name of an organization they do not work for",
         _authored(w, f"Practitioner/{w.doctor.id}", f"Organization/{w.hospital_id}"), 422),
        ("already superseded", _with(provide_bundle(w.patient_a, w.doctor, pdf("old")),
                                     status="superseded"), 400),
    ]:
        attempt(f, target, f"a document {what}", lambda bundle=bundle: http.post(
            "/fhir", json=bundle, headers=w.doctor.headers), status)
    return f.items


def _authored(w: Any, *authors: str) -> dict[str, Any]:
    bundle = provide_bundle(w.patient_a, w.doctor, pdf("authored"))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "DocumentReference":
            entry["resource"]["author"] = [{"reference": a} for a in authors]
    return bundle


def _with(bundle: dict[str, Any], **changes: Any) -> dict[str, Any]:
    _document_of(bundle).update(changes)
    return bundle


def attack_an_identity_source_rewrites_what_is_not_its_own(target: Target) -> list[str]:
    """The hospital, registered as an identity source for its own numbers, feeds patient A
    (whom it knows) with a national identifier changed, another hospital's number added, and
    a link merging A into B (whom it knows too, but whose record is not its to merge away)."""
    f, w, http = Findings(), target.world, target.http
    feed = hospital_system(target, Authority.IDENTITY_SOURCE)
    me = http.get(f"/fhir/Patient/{w.patient_a}", headers=feed).json()
    for what, changed in [
        ("a national identifier", [{**i, "value": national_id(98)}
                                   if i["system"].endswith("/matricule") else i
                                   for i in me["identifier"]]),
        ("another authority's number", [*me["identifier"], {
            "system": "https://carevault.lu/fhir/sid/local/other-hospital", "value": "O-1"}]),
    ]:
        attempt(f, target, f"the feed changes {what}", lambda changed=changed: http.put(
            f"/fhir/Patient/{w.patient_a}", json={**me, "identifier": changed}, headers=feed),
            403)
    return f.items


def attack_reading_more_than_may_be_seen(target: Target) -> list[str]:
    """What comes with an object a caller may read: a secret document's sealed title, the
    ids of documents a SubmissionSet holds, another patient's identifiers in PIXm, another
    patient in one's own audit trail."""
    f, w, http = Findings(), target.world, target.http
    mine = http.get(f"/fhir/DocumentReference/{w.secret_a}", headers=w.app_a)
    if TITLE_SECRET not in mine.text:
        f.add("the patient cannot read the title of their own secret document (control)")
    for who, headers in [("the pharmacist", w.pharmacist.headers),
                         ("the stranger", w.stranger.headers)]:
        for path in (f"/fhir/DocumentReference?patient=Patient/{w.patient_a}",
                     f"/fhir/List?patient=Patient/{w.patient_a}",
                     f"/fhir/DocumentReference/{w.secret_a}"):
            answer = http.get(path, headers=headers)
            f.absent(answer.text, [TITLE_SECRET, w.secret_a if "?" in path else ""],
                     f"{who}: {path}")
    # A physician resolves A's number: A's identifiers, nobody else's.
    pix = http.get("/fhir/Patient/$ihe-pix", params={
        "sourceIdentifier": f"{HOSPITAL_SYSTEM}|H-1"}, headers=w.doctor.headers)
    if pix.status_code != 200:
        f.add(f"PIXm for a physician: {pix.status_code} {pix.text[:200]}")
    f.absent(pix.text, [w.patient_b, "H-2", national_id(2)], "PIXm of A's number")
    # A physician searches by birth date and finds both patients; A's trail says a search
    # found A, not what else it asked for or found.
    found = http.get("/fhir/Patient", params={"birthdate": "1980-04-12", "family": "m"},
                     headers=w.doctor.headers)
    both = http.get("/fhir/Patient", params={"birthdate": "1980-04-12"},
                    headers=w.doctor.headers)
    if found.status_code != 200 or both.json().get("total") != 2:
        f.add(f"the physician's searches failed: {found.text[:120]} {both.text[:120]}")
    trail = http.get("/fhir/AuditEvent", params={"patient": f"Patient/{w.patient_a}",
                                                 "_count": "100"}, headers=w.app_a)
    if trail.status_code != 200 or not trail.json().get("entry"):
        f.add(f"A cannot read their own audit trail: {trail.text[:200]}")
    f.absent(trail.text, [w.patient_b, "Schmit", "1980-04-12", national_id(2)],
             "A's audit trail")
    before = data_fingerprint(target.platform)
    notices = http.get("/fhir/Communication", params={"patient": f"Patient/{w.patient_a}"},
                       headers=w.app_a)
    f.absent(notices.text, [w.patient_b, w.report_b], "A's notifications")
    f.unchanged(before, data_fingerprint(target.platform), "reading one's notifications")
    return f.items


ATTACKS = [
    attack_a_patients_app_sets_what_it_may_not,
    attack_a_professional_names_someone_else,
    attack_an_identity_source_rewrites_what_is_not_its_own,
    attack_reading_more_than_may_be_seen,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_properties_are_written_and_read_by_who_may(attack: Any, target: Target) -> None:
    assert attack(target) == []
