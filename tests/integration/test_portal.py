"""The patient portal over HTTP on both databases: sign-in with password and TOTP, the access
history, CSRF, throttling, sessions that a database copy cannot open, sign-out."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import PatientAccount, enrol_patient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Müller<script>")


def login_form(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found
    return found.group(1)


def sign_in(client: TestClient, account: PatientAccount, *, code: str | None = None,
            password: str | None = None, csrf: str | None = None) -> Any:
    token = login_form(client) if csrf is None else csrf
    return client.post("/login", data={
        "login": account.login, "password": password or account.password,
        "code": code or account.totp.now(), "csrf": token}, follow_redirects=False)


def test_sign_in_then_see_who_accessed_the_record(client: TestClient, platform: Platform,
                                                  account: PatientAccount) -> None:
    client.get(f"/fhir/Patient/{account.patient_id}")  # someone reads the record
    response = sign_in(client, account)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/me")
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith("cv_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    page = client.get("/me")
    assert page.status_code == 200
    assert "Müller&lt;script&gt;" in page.text and "<script>" not in page.text
    history = re.findall(r'<li data-leaf-index="\d+"(?: class="\w+")?>'
                         r'(?:<strong class="tag">[^<]+</strong> )?([^<]+)</li>', page.text)
    assert any("read your identity record" in line for line in history)
    assert any("You (from 127.0.0.1) signed in" in line for line in history)
    french = client.get("/me", params={"lang": "fr"})
    assert "a consulté votre fiche d&#39;identité" in french.text


def test_a_wrong_password_or_code_gets_one_readable_answer(client: TestClient,
                                                           account: PatientAccount) -> None:
    wrong_password = sign_in(client, account, password="not the password at all")
    wrong_code = sign_in(client, account, code="000000")
    for response in (wrong_password, wrong_code):
        assert response.status_code == 401
        assert "The login, the password or the code is not right." in response.text
        assert "cv_session=" not in response.headers.get("set-cookie", "")
    assert client.get("/me", follow_redirects=False).status_code == 303


def test_a_recovery_code_works_once(client: TestClient, account: PatientAccount) -> None:
    code = account.recovery_codes[0]
    assert sign_in(client, account, code=code).status_code == 303
    assert sign_in(client, account, code=code).status_code == 401


def test_a_form_without_its_csrf_token_is_refused(client: TestClient,
                                                  account: PatientAccount) -> None:
    login_form(client)
    response = sign_in(client, account, csrf="forged")
    assert response.status_code == 403
    assert "out of date" in response.text
    assert sign_in(client, account).status_code == 303
    refused = client.post("/logout", data={"csrf": "forged"}, follow_redirects=False)
    assert refused.status_code == 303
    assert client.get("/me").status_code == 200  # the forged sign-out changed nothing


def test_repeated_failures_are_throttled(client: TestClient, account: PatientAccount) -> None:
    statuses = [sign_in(client, account, password="wrong password number x").status_code
                for _ in range(6)]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    last = sign_in(client, account)
    assert last.status_code == 429
    assert int(last.headers["retry-after"]) >= 1
    assert "Too many attempts" in last.text


def test_sign_out_ends_the_session(client: TestClient, account: PatientAccount) -> None:
    assert sign_in(client, account).status_code == 303
    page = client.get("/me")
    token = CSRF.search(page.text)
    assert token
    page = client.get("/me")
    assert page.headers["cache-control"] == "no-store"  # the history is not kept on disk
    out = client.post("/logout", data={"csrf": token.group(1)}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["clear-site-data"] == '"cache"'  # and what was kept is dropped
    assert client.get("/me", follow_redirects=False).headers["location"].startswith("/login")


def test_the_database_holds_no_usable_session_token(client: TestClient, engine: Engine,
                                                    account: PatientAccount) -> None:
    response = sign_in(client, account)
    token = response.cookies["cv_session"]
    with engine.connect() as connection:
        stored = connection.execute(select(t.portal_session.c.token_hash)).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in stored


def test_reading_the_history_is_itself_recorded(client: TestClient, platform: Platform,
                                                account: PatientAccount) -> None:
    sign_in(client, account)
    client.get("/me")
    size = platform.audit.size("clinical")
    last = AuditRecord.from_canonical(platform.audit.entries("clinical", size - 1, size)[0][1])
    assert (last.kind, last.interaction, last.patient) == (
        "patient-action", "access-history", account.patient_id)


def test_the_history_is_verified_complete_and_a_deleted_line_is_noticed(
        client: TestClient, platform: Platform, engine: Engine,
        account: PatientAccount) -> None:
    """The badge is the verifier's answer on the proof, not a sentence always shown: delete
    one line about the patient from the database and the next reading says so."""
    client.get(f"/fhir/Patient/{account.patient_id}")
    sign_in(client, account)
    page = client.get("/me")
    badge = re.search(r'<p class="badge complete" id="completeness" role="status">'
                      r'<strong>Complete between ([^<]+) and ([^<]+), verified</strong>', page.text)
    assert badge, page.text
    # Its times are written as the history's lines write theirs.
    assert badge.group(1).endswith(" UTC") and " at " in badge.group(1), badge.group(1)
    french = client.get("/me", params={"lang": "fr"})
    assert re.search(r"Complet entre le [^<]+ et le [^<]+, vérifié", french.text)
    german = client.get("/me", params={"lang": "de"})
    assert re.search(r"Vollständig zwischen [^<]+ und [^<]+, geprüft", german.text)
    with engine.begin() as connection:
        about = [int(i) for i in connection.execute(
            select(t.audit_entry.c.leaf_index).where(
                t.audit_entry.c.stream == "clinical",
                t.audit_entry.c.patient_id == account.patient_id)
            .order_by(t.audit_entry.c.leaf_index)).scalars()]
        assert len(about) >= 3
        connection.execute(t.audit_entry.delete().where(
            t.audit_entry.c.stream == "clinical", t.audit_entry.c.leaf_index == about[-2]))
    tampered = client.get("/me")
    assert tampered.status_code == 200
    assert 'id="completeness" role="alert">This history could not be verified complete.' in (
        tampered.text)
    assert "Complete between" not in tampered.text


def test_a_patient_cannot_use_the_operators_door(client: TestClient,
                                                 account: PatientAccount) -> None:
    page = client.get("/operator/login")
    csrf = CSRF.search(page.text)
    assert csrf
    refused = client.post("/operator/login", data={
        "login": account.login, "password": account.password, "code": account.totp.now(),
        "csrf": csrf.group(1)}, follow_redirects=False)
    assert refused.status_code == 401
    assert "cv_session=" not in refused.headers.get("set-cookie", "")


def test_the_patient_makes_a_presence_code_that_opens_the_record_to_the_professional_seen(
        client: TestClient, platform: Platform, account: PatientAccount) -> None:
    from support.documents import Pro

    assert sign_in(client, account).status_code == 303
    page = client.get("/me")
    assert "Make a code for my professional" in page.text
    csrf = CSRF.search(page.text)
    assert csrf
    refused = client.post("/me/presence-code", data={"csrf": "forged"})
    assert refused.status_code == 400
    made = client.post("/me/presence-code", data={"csrf": csrf.group(1)})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    found = re.search(r'id="presence-code"[^>]*>([0-9A-Z]{5}-[0-9A-Z]{5})<', made.text)
    assert found, made.text
    gp = Pro(platform, "HP-PORTAL-GP")
    visit = {"resourceType": "Encounter", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                       "code": "AMB"},
             "subject": {"reference": f"Patient/{account.patient_id}"},
             "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
             "period": {"start": "2026-11-20T09:00:00Z"},
             "extension": [{"url": "https://carevault.lu/fhir/StructureDefinition/presence-code",
                            "valueString": found.group(1)}]}
    seen = client.post("/fhir/Encounter", json=visit, headers=gp.headers)
    assert seen.status_code == 201, seen.text
    # The patient's history says a code was made; the code itself is recorded nowhere.
    size = platform.audit.size("clinical")
    data = b"".join(d for _, d in platform.audit.entries("clinical", 0, size))
    assert found.group(1).replace("-", "").encode() not in data
    made_entries = [AuditRecord.from_canonical(d) for _, d in
                    platform.audit.entries("clinical", 0, size)]
    assert any(r.interaction == "presence-code" and r.patient == account.patient_id
               for r in made_entries)


def test_an_operator_makes_no_presence_code(client: TestClient, platform: Platform) -> None:
    from support.operators import PASSWORD, operator

    totp = operator(platform, "desk.operator", security_officer=False)
    page = client.get("/operator/login")
    csrf = CSRF.search(page.text)
    assert csrf
    signed = client.post("/operator/login", data={
        "login": "desk.operator", "password": PASSWORD, "code": totp.now(),
        "csrf": csrf.group(1)}, follow_redirects=False)
    assert signed.status_code == 303
    me = client.get("/me")
    session_csrf = CSRF.search(me.text)
    assert session_csrf and "make-presence-code" not in me.text
    refused = client.post("/me/presence-code", data={"csrf": session_csrf.group(1)})
    assert refused.status_code == 403


@pytest.mark.parametrize(("path", "content"), [
    ("/me", 'id="access-history"'),
    ("/me/documents", 'id="upload-title"'),
    ("/me/access", 'id="close-record"'),
])
def test_a_page_whose_reading_cannot_be_recorded_shows_nothing(
        client: TestClient, platform: Platform, engine: Engine, account: PatientAccount,
        path: str, content: str) -> None:
    """The reading is recorded while the page is read and rendered; if the audit log cannot
    commit it, the page is not answered: 503 and nothing of the record (fail closed)."""
    assert sign_in(client, account).status_code == 303
    assert content in client.get(path).text
    # Take the log's next index behind its back: its next group commit fails.
    with engine.begin() as connection:
        size = connection.execute(select(t.audit_log_state.c.tree_size).where(
            t.audit_log_state.c.stream == "clinical")).scalar_one()
        connection.execute(t.audit_entry.insert().values(
            stream="clinical", leaf_index=size, patient_id=None,
            recorded_at=platform.audit.clock(), entry=b"{}"))
    refused = client.get(path)
    assert refused.status_code == 503
    assert content not in refused.text and "Traceback" not in refused.text
