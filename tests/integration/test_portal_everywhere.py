""""Sign out everywhere", on both databases: two browsers of one patient, one ends them both;
another person's session lives on; the form without the session's CSRF token ends nothing; the
patient reads it in their history."""

from __future__ import annotations

from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.accounts import enrol_patient
from support.portal import csrf_of, signed_in


def live(browser: TestClient) -> bool:
    return browser.get("/me", follow_redirects=False).status_code == 200


def test_signing_out_everywhere_ends_every_session_of_the_account(platform: Platform) -> None:
    account = enrol_patient(platform, family="Weber")
    other = enrol_patient(platform, 2, family="Schmit", login="jos.schmit@example.lu")
    laptop = signed_in(platform, account, port=50030)
    phone = signed_in(platform, account, port=50031, code=account.recovery_codes[0])
    someone = signed_in(platform, other, port=50032)
    assert live(laptop) and live(phone) and live(someone)
    csrf = csrf_of(laptop.get("/me"))
    forged = phone.post("/logout/everywhere", data={"csrf": "forged"}, follow_redirects=False)
    assert forged.status_code == 400
    theirs = someone.post("/logout/everywhere", data={"csrf": csrf}, follow_redirects=False)
    assert theirs.status_code == 400  # the laptop's token is not the other person's session's
    assert live(laptop) and live(phone) and live(someone)
    ended = laptop.post("/logout/everywhere?lang=de", data={"csrf": csrf},
                        follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == "/login?lang=de"
    assert not live(phone)  # the other browser, which did nothing
    assert not live(laptop)
    assert live(someone)
    entries = [AuditRecord.from_canonical(data)
               for _, data in platform.audit.patient_entries(account.patient_id, limit=200)]
    everywhere = [e for e in entries if e.interaction == "logout-everywhere"]
    assert len(everywhere) == 1 and everywhere[0].detail["sessions"] == "2"
    assert everywhere[0].agent.network == "127.0.0.1"
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000")
    assert anonymous.post("/logout/everywhere", data={"csrf": csrf},
                          follow_redirects=False).status_code == 303


def test_signing_out_everywhere_revokes_the_accounts_app_tokens_too(platform: Platform) -> None:
    """A phone app the patient approved holds a token: "sign out everywhere" (the lost phone)
    ends it at once; another person's app keeps working."""
    from support.tokens import account_token as app_token

    account = enrol_patient(platform, family="Weber")
    other = enrol_patient(platform, 2, family="Schmit", login="jos.schmit@example.lu")
    with platform.unit_of_work() as uow:
        mine = uow.accounts.by_login(account.login)
        theirs = uow.accounts.by_login(other.login)
    assert mine is not None and theirs is not None
    phone_app = app_token(platform, mine.id, account.patient_id)
    their_app = app_token(platform, theirs.id, other.patient_id)
    api = TestClient(platform.app, base_url="http://127.0.0.1:8000")

    def reads(token: str, patient_id: str) -> int:
        return api.get(f"/fhir/Patient/{patient_id}",
                       headers={"Authorization": f"Bearer {token}"}).status_code

    assert reads(phone_app, account.patient_id) == 200
    laptop = signed_in(platform, account, port=50033)
    csrf = csrf_of(laptop.get("/me"))
    assert laptop.post("/logout/everywhere", data={"csrf": csrf},
                       follow_redirects=False).status_code == 303
    assert reads(phone_app, account.patient_id) == 401
    assert reads(their_app, other.patient_id) == 200
    entries = [AuditRecord.from_canonical(data)
               for _, data in platform.audit.patient_entries(account.patient_id, limit=200)]
    (everywhere,) = [e for e in entries if e.interaction == "logout-everywhere"]
    assert everywhere.detail["app_tokens"] == "1"


def test_signing_out_everywhere_spends_a_code_not_yet_exchanged(platform: Platform) -> None:
    """The patient approved an app a moment ago and its code is on its way: after "sign out
    everywhere" the code gives no token (invalid_grant), so no app is left connected."""
    import base64
    import hashlib
    from datetime import UTC, datetime

    import pytest

    from carevault.services.patient_apps import (
        AppRequest,
        InvalidGrant,
        approve,
        exchange_code,
        register_app,
    )

    account = enrol_patient(platform, family="Weber")
    with platform.unit_of_work() as uow:
        mine = uow.accounts.by_login(account.login)
        assert mine is not None
        client_id = register_app(uow, "Phone app", ["https://app.example/cb"],
                                 datetime.now(UTC))
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    request = AppRequest(client_id, "Phone app", "https://app.example/cb",
                         "launch/patient patient/*.rs", None, challenge)
    with platform.unit_of_work() as uow:
        location = approve(uow, request, mine.id, account.patient_id, datetime.now(UTC))
    code = location.split("code=", 1)[1].split("&", 1)[0]
    laptop = signed_in(platform, account, port=50034)
    csrf = csrf_of(laptop.get("/me"))
    assert laptop.post("/logout/everywhere", data={"csrf": csrf},
                       follow_redirects=False).status_code == 303
    with platform.unit_of_work() as uow, pytest.raises(InvalidGrant):
        exchange_code(uow, platform.tokens, code=code, redirect_uri="https://app.example/cb",
                      client_id=client_id, code_verifier=verifier)
    entries = [AuditRecord.from_canonical(data)
               for _, data in platform.audit.patient_entries(account.patient_id, limit=200)]
    (everywhere,) = [e for e in entries if e.interaction == "logout-everywhere"]
    assert everywhere.detail["app_codes"] == "1"
