"""OWASP API6:2023 Unrestricted Access to Sensitive Business Flows: the flows that open a
record or an account (a care event proved by the patient's presence code, breaking the glass,
enrolling with an activation code) and looking patients up, used the way an automated attacker
would: guessing, repeating, scraping. Each is refused or bounded, and each use is visible to
the security officer and the patient.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from carevault.services import directory as svc
from carevault.services.invitations import invite
from support.authorities import presence_code, with_presence
from support.builders import national_id, patient
from support.owasp import (
    MARKER_SECRET,
    Findings,
    Target,
    attempt,
    audit_sizes,
    data_fingerprint,
    encounter,
    records_since,
)

pytestmark = pytest.mark.security

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ETREAT_OFF = {"resourceType": "Consent", "status": "active",
              "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                    "code": "patient-privacy"}]},
              "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
              "provision": {"type": "deny", "purpose": [{
                  "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                  "code": "ETREAT"}]}}


def guess() -> str:
    code = "".join(secrets.choice(CROCKFORD) for _ in range(10))
    return f"{code[:5]}-{code[5:]}"


def attack_guessing_presence_codes(target: Target) -> list[str]:
    """A physician who never saw patient A records care events carrying guessed presence
    codes, B's genuine code, and a near miss of A's genuine one: none opens A's record, each
    alerts the security officer, and A's genuine code still works for the one it was for."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    genuine = presence_code(platform, w.patient_a)
    near = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    for what, code in [*((f"a guessed code ({n})", guess()) for n in range(5)),
                       ("B's genuine code", presence_code(platform, w.patient_b)),
                       ("a near miss of A's code", near),
                       ("no code at all", None)]:
        visit = encounter(w.patient_a, w.stranger.id)
        attempt(f, target, what, lambda visit=visit, code=code: http.post(
            "/fhir/Encounter", json=with_presence(visit, code) if code else visit,
            headers=w.stranger.headers), 403, alert=True)
    attempt(f, target, "the stranger then reads A's documents", lambda: http.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{w.patient_a}"},
        headers=w.stranger.headers), 403)
    seen = http.post("/fhir/Encounter", json=with_presence(
        encounter(w.patient_a, w.pharmacist.id), genuine), headers=w.pharmacist.headers)
    if seen.status_code != 201:
        f.add(f"the guesses spent or blocked A's genuine code: {seen.text[:200]}")
    return f.items


def attack_abusing_emergency_access(target: Target) -> list[str]:
    """Breaking the glass without a reason, with an empty or endless one, while blocked, and
    after the patient turned it off; and what a genuine emergency opens: normal documents
    only, with the patient told and the security officer alerted."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    url = f"/fhir/Patient/{w.patient_a}/$emergency-access"

    def reason(*values: Any) -> dict[str, Any]:
        return {"resourceType": "Parameters",
                "parameter": [{"name": "reason", "valueString": v} for v in values]}

    for what, body in [("no reason", {"resourceType": "Parameters"}),
                       ("a blank reason", reason("   ")),
                       ("a reason of 100 000 characters", reason("x" * 100_000)),
                       ("two reasons", reason("one", "two"))]:
        attempt(f, target, f"an emergency with {what}", lambda body=body: http.post(
            url, json=body, headers=w.stranger.headers), 400)
    attempt(f, target, "the stranger reads A after the refusals", lambda: http.get(
        f"/fhir/DocumentReference?patient=Patient/{w.patient_a}", headers=w.stranger.headers),
        403)
    # A genuine emergency: the patient is told and the security officer alerted.
    notices = _notices(target)
    since = audit_sizes(platform)
    declared = http.post(url, json=reason("unconscious in A&E"), headers=w.stranger.headers)
    if declared.status_code != 200:
        f.add(f"a genuine emergency was refused: {declared.text[:200]}")
    alerts = [r for r in records_since(platform, since) if r.kind == "alert"]
    if not alerts:
        f.add("the emergency alerted no security officer")
    if _notices(target) != notices + 1:
        f.add("the patient was not told of the emergency")
    attempt(f, target, "the emergency reaches a secret document", lambda: http.get(
        f"/fhir/Binary/{w.secret_a}", headers=w.stranger.headers), 403,
        secrets=[MARKER_SECRET])
    # The patient blocks one professional and turns emergencies off for everyone else.
    block = http.post("/fhir/Consent", headers=w.app_a, json={
        **ETREAT_OFF, "patient": {"reference": f"Patient/{w.patient_a}"}, "provision": {
            "type": "deny", "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                "reference": {"reference": f"Practitioner/{w.doctor_b.id}"}}]}})
    off = http.post("/fhir/Consent", headers=w.app_a, json={
        **ETREAT_OFF, "patient": {"reference": f"Patient/{w.patient_a}"}})
    if block.status_code != 201 or off.status_code != 201:
        f.add(f"the patient could not block or turn emergencies off: {block.text[:100]} "
              f"{off.text[:100]}")
    for who, headers in [("a blocked physician", w.doctor_b.headers),
                         ("any physician, emergencies off", w.pharmacist.headers)]:
        attempt(f, target, f"{who} breaks the glass", lambda headers=headers: http.post(
            url, json=reason("urgent"), headers=headers), 403)
    return f.items


def _notices(target: Target) -> int:
    w = target.world
    found = target.http.get("/fhir/Communication", params={
        "patient": f"Patient/{w.patient_a}", "_count": "100"}, headers=w.app_a)
    return int(found.json()["total"])


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def attack_guessing_activation_codes(target: Target) -> list[str]:
    """Someone who knows a patient's national number (they are not secret) guesses the
    one-time activation code the desk gave the patient: every guess is refused with the same
    answer, the address is slowed down, no account is opened, every attempt is recorded, and
    the patient's genuine code still works."""
    f, platform = Findings(), target.platform
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        invited = svc.create_patient(uow, ctx, patient(ctx.systems, 5, family="Invited"))
    with platform.unit_of_work() as uow:
        genuine = invite(uow, invited.id, ctx.clock())
    before = data_fingerprint(platform)
    since = audit_sizes(platform)
    statuses = []
    with target.client("198.51.100.5") as browser:
        for _ in range(12):
            code = "-".join(guess().replace("-", "")[:4] for _ in range(5))
            statuses.append(_enrol(browser, national_id(5), code, "guesser@example.lu"))
    if statuses[:10] != [401] * 10 or set(statuses[10:]) != {429}:
        f.add(f"guessed codes were answered {statuses} (expected 401 ten times, then 429)")
    f.unchanged(before, data_fingerprint(platform), "guessing activation codes")
    refused = [r for r in records_since(platform, since)
               if r.interaction == "enrol" and r.outcome != "0"]
    if len(refused) != len(statuses):
        f.add(f"{len(refused)} of {len(statuses)} refused enrolments are in the audit log")
    with target.client("198.51.100.6") as patient_browser:
        opened = _enrol(patient_browser, national_id(5), genuine, "invited@example.lu")
    if opened != 200:
        f.add(f"the genuine code no longer works: {opened}")
    return f.items


def _enrol(browser: Any, number: str, code: str, login: str) -> int:
    page = browser.get("/enrol")
    csrf = _CSRF.search(page.text)
    assert csrf, page.text[:200]
    password = "an enrolment passphrase 2026"
    return int(browser.post("/enrol", data={
        "csrf": csrf.group(1), "national_id": number, "activation": code, "login": login,
        "password": password, "password2": password}).status_code)


def attack_scraping_the_patient_index(target: Target) -> list[str]:
    """A professional walks the patient index page by page: a page holds at most 100 entries,
    the walk stops at an offset of a million, and every page is recorded, once for the
    security officer (the whole query) and once in each patient's history."""
    f, w, http, platform = Findings(), target.world, target.http, target.platform
    largest = platform.settings.max_page_size
    for what, params in [("a page of 101", {"_count": str(largest + 1)}),
                         ("an offset past a million", {"_offset": "1000001"})]:
        attempt(f, target, what, lambda params=params: http.get(
            "/fhir/Patient", params=params, headers=w.stranger.headers), 400)
    since = audit_sizes(platform)
    page = http.get("/fhir/Patient", params={"birthdate": "1980-04-12", "_count": "1"},
                    headers=w.stranger.headers)
    following = [link["url"] for link in page.json().get("link", [])
                 if link["relation"] == "next"]
    pages = [page] + [http.get(following[0].split("8000", 1)[1], headers=w.stranger.headers)
                      for _ in following]
    if [p.status_code for p in pages] != [200, 200] or not all(
            len(p.json().get("entry", [])) == 1 for p in pages):
        f.add(f"the walk did not go as expected: {[p.text[:100] for p in pages]}")
    entries = records_since(platform, since)
    searches = [r for r in entries if r.interaction == "search-type" and r.patient is None]
    per_patient = {r.patient for r in entries if r.interaction == "search-type" and r.patient}
    if len(searches) != 2 or "1980-04-12" not in (searches[0].query or ""):
        f.add(f"the security officer does not see both searches: {searches}")
    if per_patient != {w.patient_a, w.patient_b}:
        f.add(f"the patients found are not each told: {per_patient}")
    history = http.get(f"/fhir/Patient/{w.patient_a}/$access-history", headers=w.app_a)
    if "1980-04-12" in history.text:
        f.add("A's history shows what the professional asked about")
    return f.items


ATTACKS = [
    attack_guessing_presence_codes,
    attack_abusing_emergency_access,
    attack_guessing_activation_codes,
    attack_scraping_the_patient_index,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_sensitive_flows_resist_automation(attack: Any, target: Target) -> None:
    assert attack(target) == []
