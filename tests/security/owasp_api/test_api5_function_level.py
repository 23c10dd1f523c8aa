"""OWASP API5:2023 Broken Function Level Authorization: functions meant for one kind of caller
(registrars and the provider registry write the directories, the security officer reads the
whole audit trail, professionals break the glass and record care events, patients manage
their record) called by another kind, and tokens used beyond their scope.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from carevault.adapters.storage import schema
from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_organization, new_practitioner
from support.builders import HOSPITAL_SYSTEM, patient
from support.documents import provide_bundle
from support.owasp import (
    MARKER_A,
    Findings,
    Target,
    attempt,
    audit_sizes,
    encounter,
    hospital_system,
    pdf,
    records_since,
)
from support.tokens import account_token, professional_token

pytestmark = pytest.mark.security

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def merge(source: str, survivor: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{survivor}"}}]}


def _directory_writes(target: Target) -> list[tuple[str, str, str, Any]]:
    w, platform = target.world, target.platform
    systems = platform.directory.systems
    a = target.http.get(f"/fhir/Patient/{w.patient_a}", headers=w.doctor.headers).json()
    colleague = new_practitioner(systems, identifier="HP-OWASP-STRANGER", family="X",
                                 given=["Y"], licence_status="suspended")
    return [
        ("create a patient", "POST", "/fhir/Patient", patient(systems, 9)),
        ("rename patient A", "PUT", f"/fhir/Patient/{w.patient_a}",
         {**a, "name": [{"family": "Renamed"}]}),
        ("feed a patient (ITI-104)", "PUT", f"/fhir/Patient?identifier={HOSPITAL_SYSTEM}|H-1",
         {**a, "name": [{"family": "Fed"}]}),
        ("merge A into B", "POST", "/fhir/Patient/$merge", merge(w.patient_a, w.patient_b)),
        ("unmerge A", "POST", f"/fhir/Patient/{w.patient_a}/$unmerge", None),
        ("register a professional", "POST", "/fhir/Practitioner",
         new_practitioner(systems, identifier="HP-FAKE-1", family="Fake", given=["F"])),
        ("suspend a colleague", "PUT", f"/fhir/Practitioner/{w.stranger.id}",
         {**colleague, "id": w.stranger.id}),
        ("give oneself a role", "POST", "/fhir/PractitionerRole", {
            "resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": f"Practitioner/{w.doctor.id}"},
            "organization": {"reference": f"Organization/{w.hospital_id}"}}),
        ("register an organization", "POST", "/fhir/Organization",
         new_organization(systems, identifier="ORG-FAKE", name="Fake clinic")),
    ]


def attack_professionals_write_the_directories(target: Target) -> list[str]:
    """A physician's card, and the hospital's system while the hospital is registered as no
    authority, call each function of the registrars and the provider registry."""
    f, w, http = Findings(), target.world, target.http
    writes = _directory_writes(target)
    for who, headers in [("a physician's card", w.doctor.headers),
                         ("an unregistered hospital system", hospital_system(target))]:
        for what, method, url, body in writes:
            attempt(f, target, f"{who}: {what}", lambda method=method, url=url, body=body,
                    headers=headers: http.request(method, url, json=body, headers=headers), 403)
    return f.items


def attack_reading_the_whole_audit_trail(target: Target) -> list[str]:
    """The security officer's functions: the whole audit trail, anyone's entries, the rule
    path of anyone's decision, the audit log's entries, asked for by a physician, a patient's
    app and a registrar."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    for who, headers in [("a physician", w.doctor.headers), ("a patient's app", w.app_a),
                         ("a registrar", w.registrar)]:
        for what, path in [
            ("the whole trail", "/fhir/AuditEvent"),
            ("one entry by its id", "/fhir/AuditEvent/clinical-0"),
            ("a professional's entries", f"/fhir/AuditEvent?agent=Practitioner/{w.doctor.id}"),
            ("two patients' entries", f"/fhir/AuditEvent?patient=Patient/{w.patient_a},"
                                      f"Patient/{w.patient_b}"),
        ]:
            attempt(f, target, f"{who}: {what}", lambda path=path, headers=headers: http.get(
                path, headers=headers), 403, secrets=[w.patient_b])
        since = audit_sizes(platform)
        entries = http.get("/audit/entries", params={"start": "0", "end": "10"},
                           headers=headers)
        if entries.status_code != 401 or "leaf_input" in entries.text:
            f.add(f"{who}: the audit log's entries: {entries.status_code} {entries.text[:100]}")
        if not [r for r in records_since(platform, since)
                if r.interaction == "audit-entries" and r.outcome != "0"]:
            f.add(f"{who}: the refused read of the audit entries is not recorded")
    attempt(f, target, "a physician asks why a colleague may read A", lambda: http.get(
        f"/fhir/Patient/{w.patient_a}/$explain", params={"practitioner": w.stranger.id},
        headers=w.doctor.headers), 403)
    officer = http.get("/fhir/AuditEvent", params={"_count": "1"}, headers=w.officer)
    if officer.status_code != 200:
        f.add(f"the security officer cannot read the trail (control): {officer.text[:200]}")
    return f.items


def attack_operators_reach_for_clinical_functions(target: Target) -> list[str]:
    """Registrars and security officers run the platform; they never reach medical content
    nor act on a record."""
    f, w, http = Findings(), target.world, target.http
    for who, headers in [("a registrar", w.registrar), ("the security officer", w.officer)]:
        for what, method, url, body in [
            ("searches A's documents", "GET", f"/fhir/DocumentReference?patient=Patient/"
                                              f"{w.patient_a}", None),
            ("retrieves A's document", "GET", f"/fhir/Binary/{w.report_a}", None),
            ("reads A's consents", "GET", f"/fhir/Consent?patient=Patient/{w.patient_a}", None),
            ("breaks the glass", "POST", f"/fhir/Patient/{w.patient_a}/$emergency-access", {
                "resourceType": "Parameters",
                "parameter": [{"name": "reason", "valueString": "audit"}]}),
            ("publishes to A's record", "POST", "/fhir",
             provide_bundle(w.patient_a, f"Patient/{w.patient_a}", pdf("operator"))),
            ("reads A's access history", "GET",
             f"/fhir/Patient/{w.patient_a}/$access-history", None),
        ]:
            attempt(f, target, f"{who} {what}", lambda method=method, url=url, body=body,
                    headers=headers: http.request(method, url, json=body, headers=headers),
                    403, secrets=[MARKER_A, w.report_a])
    return f.items


def attack_a_patients_app_calls_professional_functions(target: Target) -> list[str]:
    """Patient A's app (patient/*.cruds) calls what only professionals and authorities do,
    on A's own record."""
    f, w, http = Findings(), target.world, target.http
    app = w.app_a
    for what, method, url, body in [
        ("breaks the glass on its own record", "POST",
         f"/fhir/Patient/{w.patient_a}/$emergency-access",
         {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "x"}]}),
        ("records a care event", "POST", "/fhir/Encounter", encounter(w.patient_a, w.doctor.id)),
        ("retracts the physician's document", "POST",
         f"/fhir/DocumentReference/{w.report_a}/$entered-in-error", None),
        ("releases the physician's document", "POST",
         f"/fhir/DocumentReference/{w.report_a}/$release", None),
        ("merges two patients", "POST", "/fhir/Patient/$merge", merge(w.patient_b, w.patient_a)),
        ("registers a professional", "POST", "/fhir/Practitioner", new_practitioner(
            target.platform.directory.systems, identifier="HP-APP", family="App", given=["A"])),
        ("asks why a physician may read another record", "GET",
         f"/fhir/Patient/{w.patient_b}/$explain?practitioner={w.doctor.id}", None),
    ]:
        attempt(f, target, f"A's app {what}", lambda method=method, url=url, body=body:
                http.request(method, url, json=body, headers=app), 403)
    introspect = http.post("/oauth/introspect", data={
        "token": w.doctor.headers["Authorization"].removeprefix("Bearer ")},
        headers={"Authorization": app["Authorization"]})
    if introspect.status_code != 401 or "active" in introspect.text:
        f.add(f"A's app introspects a physician's token: {introspect.status_code} "
              f"{introspect.text[:200]}")
    return f.items


def _account_of(platform: Platform, patient_id: str) -> str:
    with platform.engine.connect() as connection:
        return str(connection.execute(select(schema.account.c.id).where(
            schema.account.c.patient_id == patient_id)).scalar_one())


def attack_tokens_used_beyond_their_scope(target: Target) -> list[str]:
    """Tokens are bounds: a physician's token for the professional directory only, one for
    reading only, and a patient's app allowed to read the patient's identity only, each used
    for what its scope does not cover, on a record their holder may otherwise reach."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    directory_only = {"Authorization": "Bearer " + professional_token(
        platform, "system/Practitioner.rs", identifier="HP-OWASP-A"), **FHIR_JSON}
    read_only = {"Authorization": "Bearer " + professional_token(
        platform, "system/*.rs", identifier="HP-OWASP-A"), **FHIR_JSON}
    identity_only = {"Authorization": "Bearer " + account_token(
        platform, _account_of(platform, w.patient_a), w.patient_a,
        scope="launch/patient patient/Patient.rs"), **FHIR_JSON}
    documents = f"/fhir/DocumentReference?patient=Patient/{w.patient_a}"
    for what, method, url, body, headers in [
        ("a directory token searches A's documents", "GET", documents, None, directory_only),
        ("a directory token retrieves A's document", "GET", f"/fhir/Binary/{w.report_a}",
         None, directory_only),
        ("a directory token reads A's identity", "GET", f"/fhir/Patient/{w.patient_a}", None,
         directory_only),
        ("a read-only token publishes", "POST", "/fhir",
         provide_bundle(w.patient_a, w.doctor, pdf("read-only")), read_only),
        ("an identity-only app reads the documents", "GET", documents, None, identity_only),
        ("an identity-only app grants access", "POST", "/fhir/Consent", {
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{w.patient_a}"},
            "provision": {"type": "permit", "actor": [{"reference": {
                "reference": f"Practitioner/{w.stranger.id}"}}]}}, identity_only),
    ]:
        answer = attempt(f, target, what, lambda method=method, url=url, body=body,
                         headers=headers: http.request(method, url, json=body, headers=headers),
                         403, secrets=[MARKER_A, w.report_a, "Müller"])
        if answer.status_code == 403 and "scope" not in answer.text:
            f.add(f"{what}: refused, but not for its scope: {answer.text[:200]}")
    return f.items


def attack_methods_the_api_does_not_offer(target: Target) -> list[str]:
    """Deleting, patching, creating on an instance, updating what is never updated, searching
    what is only read, and asking for a method in a header."""
    f, w, http = Findings(), target.world, target.http
    mine = w.doctor.headers
    for what, method, url, headers in [
        ("delete a document", "DELETE", f"/fhir/DocumentReference/{w.report_a}", mine),
        ("delete a patient", "DELETE", f"/fhir/Patient/{w.patient_a}", w.registrar),
        ("patch a patient", "PATCH", f"/fhir/Patient/{w.patient_a}", w.registrar),
        ("update a document in place", "PUT", f"/fhir/DocumentReference/{w.report_a}", mine),
        ("post to an instance", "POST", f"/fhir/Patient/{w.patient_a}", w.registrar),
        ("search the bytes", "GET", f"/fhir/Binary?patient=Patient/{w.patient_a}", mine),
        ("delete the notifications", "DELETE", f"/fhir/Communication/{w.notice_b}", w.app_b),
    ]:
        attempt(f, target, what, lambda method=method, url=url, headers=headers: http.request(
            method, url, json={"resourceType": "Patient"}, headers=headers), 405)
    overridden = http.post(f"/fhir/DocumentReference/{w.report_a}/$release", headers={
        **mine, "X-HTTP-Method-Override": "DELETE"})
    still = http.get(f"/fhir/DocumentReference/{w.report_a}", headers=mine)
    if still.status_code != 200 or still.json().get("status") != "current":
        f.add(f"a method override changed the document: {overridden.status_code} "
              f"{still.text[:200]}")
    return f.items


ATTACKS = [
    attack_professionals_write_the_directories,
    attack_reading_the_whole_audit_trail,
    attack_operators_reach_for_clinical_functions,
    attack_a_patients_app_calls_professional_functions,
    attack_tokens_used_beyond_their_scope,
    attack_methods_the_api_does_not_offer,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_functions_are_for_who_they_are_for(attack: Any, target: Target) -> None:
    assert attack(target) == []
