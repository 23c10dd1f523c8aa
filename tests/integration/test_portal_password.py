"""A patient changes their password in the portal (`web/password_page.py`), on both databases:
the current password proves it is them, the new one passes the enrolment's policy and is typed
twice; refusals change nothing and say why in the page's language; the change and each failed
attempt are recorded; the old password no longer signs in, the new one does."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import PatientAccount, enrol_patient
from support.portal import csrf_of, signed_in

NEW = "a lantern over the Alzette"


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Wagner", login="lea.wagner@example.lu")


def attempts(platform: Platform) -> list[tuple[str, str]]:
    log = platform.audit
    rows = log.entries("clinical", 0, log.size("clinical"))
    found = [AuditRecord.from_canonical(data) for _, data in rows]
    return [(r.outcome, r.detail.get("reason", "")) for r in found
            if r.kind == "authentication" and r.interaction == "password-change"]


def sign_in_with(platform: Platform, account: PatientAccount, password: str, code: str,
                 port: int) -> int:
    browser = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                         client=("127.0.0.1", port))
    csrf = csrf_of(browser.get("/login"))
    return browser.post("/login", data={"login": account.login, "password": password,
                                        "code": code, "csrf": csrf},
                        follow_redirects=False).status_code


def test_the_password_is_changed_with_the_current_one_and_the_new_one_twice(
        platform: Platform, account: PatientAccount) -> None:
    browser = signed_in(platform, account, port=50061)
    page = browser.get("/me/password?lang=de")
    assert page.status_code == 200 and "Mein Passwort" in page.text
    assert page.headers["cache-control"] == "no-store"
    changed = browser.post("/me/password?lang=de", data={
        "csrf": csrf_of(page), "current": account.password, "new": NEW, "again": NEW},
        follow_redirects=False)
    assert changed.status_code == 303
    assert changed.headers["location"] == "/me/password?lang=de&done=1"
    assert 'id="changed"' in browser.get(changed.headers["location"]).text
    assert attempts(platform) == [("0", "")]
    codes = account.recovery_codes
    assert sign_in_with(platform, account, account.password, codes[0], 50062) != 303
    assert sign_in_with(platform, account, NEW, codes[1], 50063) == 303


@pytest.mark.parametrize(("form", "status", "said"), [
    ({"current": "not my password at all", "new": NEW, "again": NEW}, 401,
     "Ce n’est pas votre mot de passe actuel"),
    ({"current": "<the account's>", "new": NEW, "again": NEW + "!"}, 400,
     "Les deux nouveaux mots de passe diffèrent"),
    ({"current": "<the account's>", "new": "short", "again": "short"}, 422,
     "at least 12 characters"),
    ({"current": "<the account's>", "new": "lea.wagner-2026!", "again": "lea.wagner-2026!"},
     422, "may not contain the login"),
])
def test_a_refused_change_changes_nothing_and_says_why(
        platform: Platform, account: PatientAccount, form: dict[str, str], status: int,
        said: str) -> None:
    browser = signed_in(platform, account, port=50064)
    page = browser.get("/me/password?lang=fr")
    posted = {k: account.password if v == "<the account's>" else v for k, v in form.items()}
    refused = browser.post("/me/password?lang=fr", data={"csrf": csrf_of(page), **posted},
                           follow_redirects=False)
    assert refused.status_code == status
    assert said in refused.text and 'id="error"' in refused.text
    # Only a wrong current password is a failed attempt, counted and recorded.
    assert attempts(platform) == ([("4", "wrong-password")] if status == 401 else [])
    assert sign_in_with(platform, account, account.password, account.recovery_codes[0],
                        50065) == 303  # the password is still the old one


def test_without_the_pages_csrf_token_nothing_changes(
        platform: Platform, account: PatientAccount) -> None:
    browser = signed_in(platform, account, port=50066)
    refused = browser.post("/me/password", data={
        "csrf": "forged", "current": account.password, "new": NEW, "again": NEW},
        follow_redirects=False)
    assert refused.status_code == 400
    assert attempts(platform) == []


def test_without_a_session_the_page_is_the_sign_in(client: TestClient) -> None:
    assert client.get("/me/password", follow_redirects=False).headers[
        "location"].startswith("/login")
    refused = client.post("/me/password", data={"current": "x", "new": NEW, "again": NEW},
                          follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
