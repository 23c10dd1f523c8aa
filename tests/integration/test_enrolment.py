"""A patient enrols in the portal with their national number and a one-time activation code,
sets a password, scans the TOTP code, confirms it, and signs in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.services import directory as svc
from carevault.services.invitations import invite
from support.builders import national_id, patient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "my own long passphrase 2026"


@pytest.fixture
def invited(platform: Platform) -> tuple[str, str]:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.create_patient(uow, ctx, patient(ctx.systems, 4,
                                                          family="Hoffmann")).id
    with platform.unit_of_work() as uow:
        code = invite(uow, patient_id, datetime.now(UTC))
    return patient_id, code


def enrol(client: TestClient, national: str, code: str, *, login: str = "jos@example.lu",
          password: str = PASSWORD, again: str | None = None) -> Any:
    page = client.get("/enrol")
    csrf = CSRF.search(page.text)
    assert csrf
    return client.post("/enrol", data={"csrf": csrf.group(1), "national_id": national,
                                       "activation": code, "login": login,
                                       "password": password,
                                       "password2": password if again is None else again})


def test_enrol_scan_confirm_sign_in(client: TestClient, invited: tuple[str, str]) -> None:
    _, code = invited
    done = enrol(client, national_id(4), code.lower().replace("-", " "))
    assert done.status_code == 200, done.text
    text = done.text
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in text
    uri = re.search(r'<code id="totp-uri">([^<]+)</code>', text)
    assert uri
    secret = re.search(r"secret=([A-Z2-7]+)", uri.group(1))
    assert secret
    totp = pyotp.TOTP(secret.group(1))
    codes = re.findall(r"<li><code>([^<]+)</code></li>", text)
    assert len(codes) >= 8
    csrf = CSRF.search(text)
    account = re.search(r'name="account_id" value="([^"]+)"', text)
    assert csrf and account
    wrong = client.post("/enrol/confirm", data={"csrf": csrf.group(1),
                                                "account_id": account.group(1),
                                                "code": "000000"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    ready = client.post("/enrol/confirm", data={"csrf": csrf.group(1),
                                                "account_id": account.group(1),
                                                "code": totp.at(earlier)})
    assert ready.status_code == 200 and 'id="ready"' in ready.text
    login_page = client.get("/login")
    login_csrf = CSRF.search(login_page.text)
    assert login_csrf
    signed_in = client.post("/login", data={"csrf": login_csrf.group(1),
                                            "login": "jos@example.lu", "password": PASSWORD,
                                            "code": totp.now()})
    assert signed_in.status_code == 200 and "Hoffmann" in signed_in.text
    # The code worked once.
    assert enrol(client, national_id(4), code, login="other@example.lu").status_code == 401


@pytest.mark.parametrize(("national", "code_ok", "status", "words"), [
    ("1980041200200", True, 401, "do not match"),  # someone else's (or a wrong) number
    (None, False, 401, "do not match"),  # a made-up code
])
def test_enrolment_needs_the_code_and_the_number(client: TestClient,
                                                 invited: tuple[str, str],
                                                 national: str | None, code_ok: bool,
                                                 status: int, words: str) -> None:
    _, code = invited
    response = enrol(client, national or national_id(4),
                     code if code_ok else "AAAA-BBBB-CCCC-DDDD-EEEE")
    assert response.status_code == status
    assert words in response.text


def test_enrolment_refusals_are_readable(client: TestClient, invited: tuple[str, str]) -> None:
    _, code = invited
    mismatch = enrol(client, national_id(4), code, again="something else entirely")
    assert "not the same" in mismatch.text
    weak = enrol(client, national_id(4), code, password="password1234")
    assert weak.status_code == 422
    assert "Traceback" not in weak.text
    forged = client.post("/enrol", data={"csrf": "forged", "national_id": national_id(4),
                                         "activation": code, "login": "x@y.lu",
                                         "password": PASSWORD, "password2": PASSWORD})
    assert forged.status_code == 403


def test_the_qr_code_carries_no_user_text(client: TestClient, invited: tuple[str, str]) -> None:
    _, code = invited
    done = enrol(client, national_id(4), code, login="<b>x</b>@example.lu")
    text = done.text
    svg = text[text.index("<svg"):text.index("</svg>")]
    assert "<b>" not in svg and "example.lu" not in svg
