"""A patient's passkey, over HTTP on both databases: added from a signed-in session, then
standing for the TOTP code at sign-in, always with the password, in one attempt that answers
the same whatever was wrong; used once per challenge; removed by its owner only; each change in
the patient's audit stream. A software authenticator plays the browser (tests/support/
passkeys.py); the browser's own ceremony: tests/e2e/test_patient_journeys.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import PatientAccount, enrol_patient
from support.passkeys import SoftwareAuthenticator

ORIGIN = "http://localhost:8000"  # the dev public address's relying party is localhost
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def web(platform: Platform) -> Iterator[TestClient]:
    with TestClient(platform.app, base_url=ORIGIN, client=("127.0.0.1", 50001)) as client:
        yield client


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Clé")


def csrf_of(web: TestClient, path: str) -> str:
    page = web.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found
    return found.group(1)


def sign_in(web: TestClient, account: PatientAccount, **fields: str) -> Any:
    token = csrf_of(web, "/login")
    return web.post("/login", data={"login": account.login, "password": account.password,
                                    "csrf": token, **fields}, follow_redirects=False)


def add_passkey(web: TestClient, authenticator: SoftwareAuthenticator,
                password: str) -> Any:
    token = csrf_of(web, "/me/passkeys")
    options = web.post("/me/passkeys/options", data={"csrf": token, "password": password})
    assert options.status_code == 200, options.text
    created = authenticator.create(options.json())
    return web.post("/me/passkeys", data={"csrf": token, "credential": json.dumps(created)})


def passkey_assertion(web: TestClient, authenticator: SoftwareAuthenticator,
                      origin: str | None = None) -> str:
    token = csrf_of(web, "/login")
    options = web.post("/login/passkey", data={"csrf": token})
    assert options.status_code == 200, options.text
    return json.dumps(authenticator.get(options.json(), origin=origin))


def events(platform: Platform, patient_id: str) -> list[AuditRecord]:
    return [AuditRecord.from_canonical(d)
            for _, d in platform.audit.patient_entries(patient_id, limit=100)]


def signed_in_with_code(web: TestClient, account: PatientAccount) -> None:
    done = sign_in(web, account, code=account.totp.now())
    assert done.status_code == 303, done.text


def test_a_passkey_added_in_the_portal_then_stands_for_the_code(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    signed_in_with_code(web, account)
    assert "id=\"no-passkey\"" in web.get("/me/passkeys").text
    authenticator = SoftwareAuthenticator(ORIGIN)
    added = add_passkey(web, authenticator, account.password)
    assert added.status_code == 200, added.text
    assert added.json()["next"].startswith("/me/passkeys")
    listed = web.get("/me/passkeys")
    assert 'id="passkeys"' in listed.text and "never" in listed.text
    web.cookies.clear()
    done = sign_in(web, account, passkey=passkey_assertion(web, authenticator))
    assert done.status_code == 303, done.text
    assert web.get("/me").status_code == 200
    kinds = [(e.interaction, e.detail.get("second_factor")) for e in events(platform,
                                                                          account.patient_id)
             if e.kind == "authentication" and e.outcome == "0"]
    assert ("passkey-add", None) in kinds and ("login", "passkey") in kinds


def test_a_passkey_never_replaces_the_password_and_every_refusal_reads_the_same(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    signed_in_with_code(web, account)
    authenticator = SoftwareAuthenticator(ORIGIN)
    assert add_passkey(web, authenticator, account.password).status_code == 200
    web.cookies.clear()
    wrong_password = sign_in(web, account, password="not the password",
                             passkey=passkey_assertion(web, authenticator))
    stranger = sign_in(web, account, passkey=passkey_assertion(web, SoftwareAuthenticator(ORIGIN)))
    phished = sign_in(web, account, passkey=passkey_assertion(
        web, authenticator, origin="http://localhost.evil:8000"))
    garbage = sign_in(web, account, passkey="{not json")
    answers = [wrong_password, stranger, phished, garbage]
    assert [a.status_code for a in answers] == [401] * 4
    messages = {re.search(r'id="error">([^<]+)<', a.text).group(1) for a in answers}  # type: ignore[union-attr]
    assert len(messages) == 1  # no answer tells which part was wrong
    assert web.get("/me", follow_redirects=False).status_code == 303  # still signed out
    reasons = {e.detail.get("reason") for e in events(platform, account.patient_id)
               if e.interaction == "login" and e.outcome != "0"}
    assert {"wrong-password", "wrong-passkey"} <= reasons


def test_an_assertion_signs_in_once(web: TestClient, platform: Platform,
                                    account: PatientAccount) -> None:
    signed_in_with_code(web, account)
    authenticator = SoftwareAuthenticator(ORIGIN)
    assert add_passkey(web, authenticator, account.password).status_code == 200
    web.cookies.clear()
    assertion = passkey_assertion(web, authenticator)
    assert sign_in(web, account, passkey=assertion).status_code == 303
    web.cookies.clear()
    replayed = sign_in(web, account, passkey=assertion)
    assert replayed.status_code == 401


def test_another_accounts_passkey_does_not_sign_in_and_cannot_be_removed(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    other = enrol_patient(platform, 2, family="Autre", login="other@example.lu")
    signed_in_with_code(web, other)
    theirs = SoftwareAuthenticator(ORIGIN)
    assert add_passkey(web, theirs, other.password).status_code == 200
    with platform.unit_of_work() as uow:
        (key,) = uow.passkeys.of_account(
            uow.accounts.by_login("other@example.lu").id)  # type: ignore[union-attr]
    web.cookies.clear()
    # The other's passkey with this account's password: refused.
    assert sign_in(web, account, passkey=passkey_assertion(web, theirs)).status_code == 401
    signed_in_with_code(web, account)
    token = csrf_of(web, "/me/passkeys")
    removed = web.post("/me/passkeys/remove", data={"csrf": token,
                                                    "credential_id": key.credential_id})
    assert removed.status_code == 404
    with platform.unit_of_work() as uow:
        assert uow.passkeys.account_passkey(key.credential_id) is not None


def test_the_owner_removes_a_passkey_and_it_signs_in_no_more(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    signed_in_with_code(web, account)
    authenticator = SoftwareAuthenticator(ORIGIN)
    assert add_passkey(web, authenticator, account.password).status_code == 200
    with platform.unit_of_work() as uow:
        (key,) = uow.passkeys.of_account(
            uow.accounts.by_login(account.login).id)  # type: ignore[union-attr]
    token = csrf_of(web, "/me/passkeys")
    forged = web.post("/me/passkeys/remove", data={"csrf": "forged",
                                                   "credential_id": key.credential_id})
    assert forged.status_code == 400
    removed = web.post("/me/passkeys/remove", data={"csrf": token,
                                                    "credential_id": key.credential_id},
                       follow_redirects=False)
    assert removed.status_code == 303
    web.cookies.clear()
    assert sign_in(web, account, passkey=passkey_assertion(web, authenticator)).status_code == 401
    assert any(e.interaction == "passkey-remove" for e in events(platform, account.patient_id))


def test_adding_a_passkey_needs_the_password_typed_again(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    """A session left open is not enough: without the account's password, or with a wrong one,
    no options (so no challenge, so no passkey); the refusal is recorded, and wrong passwords
    count towards the account's throttle (after five, even the right one waits)."""
    signed_in_with_code(web, account)
    token = csrf_of(web, "/me/passkeys")
    for typed in ("", "not the password"):
        refused = web.post("/me/passkeys/options", data={"csrf": token, "password": typed})
        assert refused.status_code == 401
        assert refused.json()["error"] == "This is not your password: the passkey was not added."
    with platform.unit_of_work() as uow:
        account_id = uow.accounts.by_login(account.login).id  # type: ignore[union-attr]
        assert uow.passkeys.of_account(account_id) == []
    refusals = [e for e in events(platform, account.patient_id)
                if e.interaction == "passkey-add" and e.outcome == "4"]
    assert [e.detail.get("reason") for e in refusals] == ["wrong-password"] * 2
    for _ in range(3):
        web.post("/me/passkeys/options", data={"csrf": token, "password": "still wrong"})
    waits = web.post("/me/passkeys/options", data={"csrf": token, "password": account.password})
    assert waits.status_code == 429 and int(waits.headers["Retry-After"]) > 0


def test_adding_a_passkey_needs_the_session_its_csrf_and_our_challenge(
        web: TestClient, platform: Platform, account: PatientAccount) -> None:
    anonymous = web.post("/me/passkeys/options", data={"csrf": "x"})
    assert anonymous.status_code == 401
    signed_in_with_code(web, account)
    assert web.post("/me/passkeys/options", data={"csrf": "forged"}).status_code == 400
    authenticator = SoftwareAuthenticator(ORIGIN)
    token = csrf_of(web, "/me/passkeys")
    # A challenge the server never issued: refused, nothing stored.
    unasked = authenticator.create({"rp": {"id": "localhost"}, "user": {"id": "dXNlcg"},
                                    "challenge": "bm90LW91cnM"})
    refused = web.post("/me/passkeys", data={"csrf": token, "credential": json.dumps(unasked)})
    assert refused.status_code == 401 and "error" in refused.json()
    assert web.post("/me/passkeys", data={"csrf": token,
                                          "credential": "x" * 7000}).status_code == 401
    with platform.unit_of_work() as uow:
        account_id = uow.accounts.by_login(account.login).id  # type: ignore[union-attr]
        assert uow.passkeys.of_account(account_id) == []
