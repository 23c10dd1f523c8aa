"""The access history as the patient reads it, in the portal and through the API, in English
and French: their own visits, refusals, the order of the lines, which document, until when.

Everything goes through the platform's real doors (a professional's SMART token, the portal's
sign-in with password and TOTP, ITI-65 and ITI-68), on both databases.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.adapters.storage.account_store import AccountStore
from carevault.bootstrap import Platform
from carevault.demo.loader import enrol_demo_patient
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.web.record_home import HISTORY_PAGE
from support.accounts import PatientAccount, enrol_patient
from support.authorities import presence_code, with_presence
from support.documents import Pro, created_id, provide_bundle, publish
from support.tokens import account_token

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# A line of the history; an emergency or a refusal is marked by a class and a tag before it; a
# break-the-glass's line folds the entries recorded with it in a <details> after its text.
LINE = re.compile(r'<li data-leaf-index="(\d+)"(?: class="\w+")?>'
                  r'(?:<strong class="tag">[^<]+</strong> )?([^<]+?)\s*'
                  r'(?:<details class="related">.*?</details>)?</li>', re.S)
# An entry folded under a line: (the line's leaf index, its own, its text).
FOLDED = re.compile(r'<li data-part-of="(\d+)" data-leaf-index="(\d+)">([^<]+)</li>')
GP = "Theo HP-HISTORY-GP"  # as `support.tokens` registers a professional


def sign_in(client: TestClient, login: str, password: str, code: str) -> None:
    page = client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf
    signed = client.post("/login", data={"login": login, "password": password, "code": code,
                                         "csrf": csrf.group(1)}, follow_redirects=False)
    assert signed.status_code == 303, signed.text


def history(client: TestClient, language: str = "en") -> list[tuple[int, str]]:
    """The lines of the portal's history page, as shown: (leaf index, text)."""
    page = client.get("/me", params={"lang": language})
    assert page.status_code == 200, page.text
    return [(int(index), html.unescape(text)) for index, text in LINE.findall(page.text)]


def api_history(client: TestClient, platform: Platform, patient_id: str,
                language: str) -> list[str]:
    """The texts of the API's $access-history, read with an app token of the patient's own
    account (approved by them, as the authorization code grant does)."""
    with platform.unit_of_work() as uow:
        account = AccountStore(uow.directory.connection).by_patient(patient_id)
    assert account is not None
    token = account_token(platform, account.id, patient_id)
    answer = client.get(f"/fhir/Patient/{patient_id}/$access-history",
                        params={"language": language, "_count": "100"},
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return [next(p["valueString"] for p in entry["part"] if p["name"] == "text")
            for entry in answer.json()["parameter"] if entry["name"] == "entry"]


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Schmit")


# --- (a) the patient's own visits -----------------------------------------------------------


def test_the_patients_own_visits_read_as_their_own(client: TestClient, platform: Platform,
                                                    account: PatientAccount) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    history(client)  # the first visit is recorded ...
    english = history(client)  # ... and read on the next one
    assert english[0][1].startswith("You (from 127.0.0.1) viewed your access history, on ")
    french = history(client, "fr")
    assert french[0][1].startswith(
        "Vous (depuis 127.0.0.1) avez consulté votre historique d'accès, le ")
    # Four visits so far; each is read on the visits after it.
    assert sum("viewed your access history" in text for _, text in history(client)) == 3
    page = client.get("/me").text + client.get("/me", params={"lang": "fr"}).text
    assert "account:" not in page
    assert not any("access-history" in text for _, text in history(client) + french)
    texts = api_history(client, platform, account.patient_id, "en")
    assert "account:" not in " ".join(texts)
    assert any(t.startswith("You (from 127.0.0.1) viewed your access history") for t in texts)


# --- (b) what was refused ----------------------------------------------------------------------


def test_a_refused_call_says_what_was_refused(client: TestClient, platform: Platform,
                                              account: PatientAccount) -> None:
    # The professional of the `client` fixture has no access to this record.
    refused = client.get(f"/fhir/Patient/{account.patient_id}/$access-history")
    assert refused.status_code == 403
    sign_in(client, account.login, account.password, account.totp.now())
    english = [text for _, text in history(client)]
    assert any(t.startswith("Theo Tester was refused access to your access history, on ")
               for t in english), english
    french = [text for _, text in history(client, "fr")]
    assert any(t.startswith("Theo Tester s'est vu refuser de consulter votre historique "
                            "d'accès, le ") for t in french), french
    for text in english + french:
        assert "tried to open" not in text and "a tenté" not in text


# --- (c) the order of the lines ---------------------------------------------------------------


def _same_moment_entries(platform: Platform, patient_id: str) -> None:
    """Two entries of the same millisecond, then one whose clock was a little behind: the
    order they were recorded in is the log's, whatever their times say."""
    now = datetime.now(UTC)

    def entry(interaction: str, action: str, at: datetime) -> AuditRecord:
        return AuditRecord(stream="clinical", recorded=rfc3339_ms(at), kind="access",
                           action=action, interaction=interaction, outcome="0",
                           agent=Agent(who="Practitioner/unknown", role="practitioner"),
                           patient=patient_id, entity_type="Patient", entity_id=patient_id)

    platform.audit.append([entry("read", "R", now), entry("update", "U", now)])
    platform.audit.append([entry("vread", "R", now - timedelta(seconds=2))])


def test_lines_follow_the_log_newest_first(client: TestClient, platform: Platform,
                                           account: PatientAccount) -> None:
    _same_moment_entries(platform, account.patient_id)
    sign_in(client, account.login, account.password, account.totp.now())
    for language, words in (("en", ["read an earlier version of", "updated", "read your"]),
                            ("fr", ["a consulté une version antérieure de", "a modifié",
                                    "a consulté votre fiche"])):
        lines = history(client, language)
        indices = [index for index, _ in lines]
        assert indices == sorted(indices, reverse=True)
        texts = [text for _, text in lines]
        found = [next(i for i, t in enumerate(texts) if w in t) for w in words]
        assert found == sorted(found), (language, texts)


def test_the_page_shows_the_newest_entries(client: TestClient, platform: Platform,
                                           account: PatientAccount) -> None:
    for _ in range(HISTORY_PAGE + 5):
        assert client.get(f"/fhir/Patient/{account.patient_id}").status_code == 200
    sign_in(client, account.login, account.password, account.totp.now())
    lines = history(client)
    assert len(lines) == HISTORY_PAGE
    assert lines[0][1].startswith("You (from 127.0.0.1) signed in")  # the newest
    assert [i for i, _ in lines] == sorted((i for i, _ in lines), reverse=True)
    assert not any("created an account" in text for _, text in lines)  # the oldest


def test_the_demo_account_is_confirmed_after_it_is_created(
        client: TestClient, platform: Platform) -> None:
    from carevault.services import directory as svc
    from support.builders import patient

    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, 7)])[0].id
    demo: dict[str, Any] = {"patient_id": patient_id}
    enrol_demo_patient(platform.accounts, demo)
    portal = demo["portal"]
    sign_in(client, portal["login"], portal["password"], pyotp.TOTP(portal["totp_secret"]).now())
    for language, signed, confirmed, created in (
            ("en", "You (from 127.0.0.1) signed in", "You confirmed the account's second factor",
             "You created an account"),
            ("fr", "Vous (depuis 127.0.0.1) : connexion",
             "Vous : confirmation du second facteur", "Vous : création du compte")):
        texts = [text for _, text in history(client, language)]
        where = [next(i for i, t in enumerate(texts) if t.startswith(w))
                 for w in (signed, confirmed, created)]
        assert where == sorted(where), texts  # newest first: signed in, confirmed, created
        assert where[2] == len(texts) - 1, texts
    records = [AuditRecord.from_canonical(data)
               for _, data in platform.audit.patient_entries(patient_id)]
    times = [r.recorded for r in records if r.kind == "authentication"]
    assert times == sorted(times)  # the log's order and the times it shows agree


# --- (d) which document, (e) until when ----------------------------------------------------


@pytest.fixture
def seen_by_a_gp(client: TestClient, platform: Platform,
                 account: PatientAccount) -> tuple[Pro, datetime]:
    """A GP who records a care event with the patient (90 days of access from its start)."""
    gp = Pro(platform, "HP-HISTORY-GP")
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{account.patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": start.isoformat().replace("+00:00", "Z")}},
        presence_code(platform, account.patient_id)))
    assert seen.status_code == 201, seen.text
    return gp, start


def test_an_entry_about_a_document_names_its_kind(
        client: TestClient, platform: Platform, account: PatientAccount,
        seen_by_a_gp: tuple[Pro, datetime]) -> None:
    gp, _ = seen_by_a_gp
    consult = created_id(publish(client, gp, provide_bundle(account.patient_id, gp)))
    held = created_id(publish(client, gp, provide_bundle(
        account.patient_id, gp, type_code="11502-2", class_code="26436-6", held=True)))
    signature = next(
        e["resource"]["id"] for e in client.get(
            "/fhir/DocumentReference", headers=gp.headers,
            params={"patient": f"Patient/{account.patient_id}",
                    "related": f"DocumentReference/{consult}"}).json()["entry"]
        if e["resource"]["id"] != consult)
    for path in (f"DocumentReference/{consult}", f"Binary/{consult}", f"Binary/{signature}",
                 f"DocumentReference/{held}"):
        assert client.get(f"/fhir/{path}", headers=gp.headers).status_code == 200, path

    sign_in(client, account.login, account.password, account.totp.now())
    english = [text for _, text in history(client)]
    for words in (f"{GP} read your document “Consult note”, on ",
                  f"{GP} read the content of your document “Consult note”, on ",
                  f"{GP} read the author's signature of your document “Consult note”, on "):
        assert any(t.startswith(words) for t in english), (words, english)
    french = [text for _, text in history(client, "fr")]
    for words in (f"{GP} a consulté votre document « Compte rendu de consultation », le ",
                  f"{GP} a consulté le contenu de votre document « Compte rendu de "
                  "consultation », le "):
        assert any(t.startswith(words) for t in french), (words, french)
    # The held laboratory report is read too, but the patient may not know what it is yet.
    assert any(t.startswith(f"{GP} read a document of your record, on ")
               for t in english), english
    everything = " ".join(english + french)
    assert "Laboratory report" not in everything
    assert "biologiques" not in everything
    assert "MARKER-Title" not in everything  # a sealed title stays sealed
    api = api_history(client, platform, account.patient_id, "fr")
    assert any("votre document « Compte rendu de consultation »" in t for t in api)
    assert "biologiques" not in " ".join(api)

    # Released, the held report is named in the entries about it, old and new.
    assert client.post(f"/fhir/DocumentReference/{held}/$release", json={},
                       headers=gp.headers).status_code == 200
    assert any(t.startswith(f"{GP} read your document “Laboratory report”, on ")
               for _, t in history(client))


def test_a_care_event_says_until_when(client: TestClient, platform: Platform,
                                      account: PatientAccount,
                                      seen_by_a_gp: tuple[Pro, datetime]) -> None:
    _, start = seen_by_a_gp
    end = start + timedelta(days=platform.settings.care_relationship_days)
    months = {"en": end.strftime("%B"), "fr": ["janvier", "février", "mars", "avril", "mai",
                                                "juin", "juillet", "août", "septembre",
                                                "octobre", "novembre",
                                                "décembre"][end.month - 1]}
    sign_in(client, account.login, account.password, account.totp.now())
    english = [text for _, text in history(client)]
    expected = (f"{GP} recorded a care event with you, which gives them access to your "
                f"record until {end.day} {months['en']} {end.year} at {end:%H:%M} UTC, on ")
    assert any(t.startswith(expected) for t in english), (expected, english)
    french = [text for _, text in history(client, "fr")]
    expected = (f"{GP} a enregistré une prise en charge, qui lui donne accès à votre "
                f"dossier jusqu'au {end.day} {months['fr']} {end.year} à {end:%H:%M} UTC, le ")
    assert any(t.startswith(expected) for t in french), (expected, french)
    assert "for a while" not in " ".join(english)
    assert "pour un temps" not in " ".join(french)


def test_the_history_api_names_operations_for_what_they_are(
        client: TestClient, platform: Platform, account: PatientAccount) -> None:
    client.get(f"/fhir/Patient/{account.patient_id}/$access-history")  # refused
    for language, words in (("en", "Theo Tester was refused access to your access history"),
                            ("fr", "Theo Tester s'est vu refuser de consulter votre "
                                   "historique d'accès")):
        texts = api_history(client, platform, account.patient_id, language)
        assert any(t.startswith(words) for t in texts), texts
        assert not any("processed" in t or "a traité" in t or "$" in t for t in texts)


# --- (f) emergencies highlighted, filters, the chart, German ------------------------------------


@pytest.fixture
def emergency(client: TestClient, platform: Platform, account: PatientAccount) -> Pro:
    """An emergency physician breaks the glass on the record and reads the patient's identity
    under it; a professional with no access is refused."""
    er = Pro(platform, "HP-HISTORY-ER")
    glass = client.post(f"/fhir/Patient/{account.patient_id}/$emergency-access",
                        json={"resourceType": "Parameters", "parameter": [
                            {"name": "reason", "valueString": "unconscious on arrival"}]},
                        headers=er.headers)
    assert glass.status_code == 200, glass.text
    assert client.get("/fhir/Encounter", params={"patient": f"Patient/{account.patient_id}"},
                      headers=er.headers).status_code == 200
    refused = client.get(f"/fhir/Patient/{account.patient_id}/$access-history")
    assert refused.status_code == 403
    return er


def marked(page: str, mark: str) -> list[str]:
    """The texts of the lines the page marks as ``mark`` (emergency, refused)."""
    found = re.findall(rf'<li data-leaf-index="\d+" class="{mark}"><strong class="tag">'
                       r'[^<]+</strong> ([^<]+?)\s*(?:<details class="related">.*?</details>)?'
                       r'</li>', page, re.S)
    return [html.unescape(text) for text in found]


def test_emergencies_are_highlighted_with_their_reason(
        client: TestClient, platform: Platform, account: PatientAccount, emergency: Pro) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    page = client.get("/me", params={"lang": "en"}).text
    urgent = marked(page, "emergency")
    assert any("declared an emergency to open your record" in text for text in urgent), urgent
    assert any("emergency access: reason “unconscious on arrival”" in text for text in urgent)
    assert '<strong class="tag">Emergency</strong>' in page
    refused = marked(page, "refused")
    assert any("was refused access to your access history" in text for text in refused)
    # A line is marked an emergency exactly when it tells of one.
    lines = [html.unescape(text) for _, text in LINE.findall(page)]
    assert [t for t in lines if "emergency" in t] == urgent


def test_a_break_the_glass_is_one_line_with_the_entries_recorded_with_it_folded_under_it(
        client: TestClient, platform: Platform, account: PatientAccount, emergency: Pro) -> None:
    """The opening, the physician's request and the security officer's alert are three
    entries of the log (each still proven): the page tells them as one highlighted line, the
    declaration with its reason, and folds the other two under it, in each language."""
    sign_in(client, account.login, account.password, account.totp.now())
    for language, declared, alerted in (
            ("en", "declared an emergency to open your record", "security officer was alerted"),
            ("fr", "a déclaré une urgence pour ouvrir votre dossier", "sécurité a été alerté"),
            ("de", "hat einen Notfall erklärt, um Ihre Akte zu öffnen",
             "Sicherheitsbeauftragte wurde benachrichtigt")):
        page = client.get("/me", params={"lang": language}).text
        lines = {int(i): html.unescape(text) for i, text in LINE.findall(page)}
        declarations = [i for i, text in lines.items() if declared in text]
        assert len(declarations) == 1, (language, lines)
        line = declarations[0]
        assert "unconscious on arrival" in lines[line]
        assert f'<li data-leaf-index="{line}" class="emergency">' in page
        folded = [(int(under), int(i), html.unescape(text))
                  for under, i, text in FOLDED.findall(page)]
        assert [under for under, _, _ in folded] == [line, line], folded
        assert {i for _, i, _ in folded}.isdisjoint(lines)
        assert any(alerted in text for _, _, text in folded), folded
        assert '<details class="related"><summary>' in page


@pytest.mark.parametrize(("show", "each_has", "none_has"), [
    ("emergencies", "emergenc", "signed in"),
    ("refused", "refused", "declared an emergency"),
    ("yours", "You", "HP-HISTORY-ER"),
    ("others", "", "You "),
])
def test_a_filter_shows_only_what_was_asked(
        client: TestClient, platform: Platform, account: PatientAccount, emergency: Pro,
        show: str, each_has: str, none_has: str) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    everything = [text for _, text in history(client)]
    page = client.get("/me", params={"lang": "en", "show": show})
    assert page.status_code == 200
    lines = [html.unescape(text) for _, text in LINE.findall(page.text)]
    assert lines and len(lines) < len(everything), (show, lines)
    assert all(each_has in text for text in lines), (show, lines)
    assert not any(none_has in text for text in lines), (show, lines)
    assert f'<option value="{show}" selected>' in page.text


def test_a_month_shows_that_months_entries_and_the_chart_counts_them(
        client: TestClient, platform: Platform, account: PatientAccount, emergency: Pro) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    now = datetime.now(UTC)
    this_month, last_year = f"{now:%Y-%m}", f"{now.year - 1}-{now.month:02d}"
    page = client.get("/me", params={"lang": "en"}).text
    rows = re.findall(r'<tr data-month="([0-9-]+)"><th scope="row"><a href="([^"]+)">[^<]+</a>'
                      r'</th><td>(\d+)</td><td>(\d+)</td></tr>', page)
    assert len(rows) == 12 and rows[-1][0] == this_month and rows[0][0] != last_year
    accesses, emergencies = int(rows[-1][2]), int(rows[-1][3])
    # The patient's own visits (each reading of the page is one) are not counted.
    for _ in range(3):
        again = client.get("/me", params={"lang": "en"}).text
    assert f'<tr data-month="{this_month}">' in again
    assert re.search(rf'data-month="{this_month}">.*?<td>{accesses}</td><td>{emergencies}</td>',
                     again)
    # One break-the-glass (its opening, request and alert are three entries: one line, one
    # access, one emergency), the search under it and the refused call: the lines by others.
    lines = [text for _, text in LINE.findall(page)]
    assert emergencies == 1 and accesses == 3, rows[-1]
    assert accesses == len([t for t in lines if not t.startswith("You")]), lines
    assert all(int(r[2]) == 0 for r in rows[:-1]) or now.day == 1
    link = html.unescape(rows[-1][1])
    assert f"month={this_month}" in link and "show=all" in link
    same = client.get(link.split("#")[0])
    assert same.status_code == 200 and LINE.findall(same.text)
    empty = client.get("/me", params={"lang": "en", "month": f"{now.year - 1}-01"})
    assert empty.status_code == 200
    assert LINE.findall(empty.text) == [] and 'id="no-match"' in empty.text


@pytest.mark.parametrize(("parameter", "value", "words"), [
    ("show", "everything-and-more", "This choice of entries does not exist"),
    ("month", "2026-13", "A month is written year-month"),
    ("month", "26-1", "A month is written year-month"),
    ("month", "2026-11' OR 1=1", "A month is written year-month"),
])
def test_a_filter_the_page_never_offers_is_refused_in_words(
        client: TestClient, account: PatientAccount, parameter: str, value: str,
        words: str) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    page = client.get("/me", params={"lang": "en", parameter: value})
    assert page.status_code == 400
    assert words in page.text and "Traceback" not in page.text


def test_the_history_in_german(client: TestClient, platform: Platform,
                               account: PatientAccount, emergency: Pro) -> None:
    sign_in(client, account.login, account.password, account.totp.now())
    history(client, "de")
    page = client.get("/me", params={"lang": "de"}).text
    texts = [text for _, text in history(client, "de")]
    assert texts[0].startswith("Sie haben Ihr Zugriffsprotokoll gelesen, am ") or \
        texts[0].startswith("Sie (von 127.0.0.1) haben Ihr Zugriffsprotokoll gelesen, am "), texts
    assert any("Notfallzugriff: Grund „unconscious on arrival“" in t for t in texts), texts
    assert '<strong class="tag">Notfall</strong>' in page
    assert "Zugriffe auf Ihre Akte pro Monat" in page
    assert api_history(client, platform, account.patient_id, "de")
