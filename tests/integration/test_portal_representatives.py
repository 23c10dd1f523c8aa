"""Representatives from the portal, on both databases: the patient names one (by the login of
their account), limits and ends the mandate; the representative acts on the record under a
banner that says for whom and as what, and loses it the moment the mandate ends. Each write is
refused without the session's CSRF token, with another patient's mandate, and to a
representative on their own mandate."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, date, datetime, timedelta

import pyotp
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.accounts import enrol_patient
from support.portal import csrf_of, signed_in

PASSWORD = "a representative's passphrase 9"


def representative(platform: Platform, login: str) -> tuple[str, pyotp.TOTP]:
    enrolment = platform.accounts.add_representative(login, PASSWORD)
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    totp = pyotp.TOTP(secret)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    return enrolment.account_id, totp


def test_the_patient_names_limits_and_ends_a_representative_who_acts_under_a_banner(
        platform: Platform) -> None:
    account = enrol_patient(platform, family="Weber")
    other = enrol_patient(platform, 2, family="Schmit", login="jos.schmit@example.lu")
    _parent_id, totp = representative(platform, "parent@portal.example")
    portal = signed_in(platform, account, port=50040)
    csrf = csrf_of(portal.get("/me/access"))
    url = "/me/access/representatives"
    name = {"do": "name", "login": "parent@portal.example", "scope": "manage",
            "end": (date.today() + timedelta(days=60)).isoformat()}
    assert portal.post(url, data={**name, "csrf": "forged"}).status_code == 400
    assert portal.post(url, data={**name, "login": "nobody@x", "csrf": csrf}).status_code == 404
    assert portal.post(url, data={**name, "scope": "all", "csrf": csrf}).status_code == 400
    assert platform.accounts.mandates_of(_parent_id) == []
    named = portal.post(url, data={**name, "csrf": csrf}, follow_redirects=False)
    assert named.status_code == 303
    [mandate] = platform.accounts.mandates_of(_parent_id)
    assert (mandate.patient_id, mandate.scope) == (account.patient_id, "manage")
    page = portal.get("/me/access")
    assert "parent@portal.example" in page.text and 'class="limit-mandate"' in page.text
    assert 'id="acting-banner"' not in page.text  # the patient acts for themselves

    parent = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50041))
    login = parent.post("/login", data={"login": "parent@portal.example", "password": PASSWORD,
                                        "code": totp.now(),
                                        "csrf": csrf_of(parent.get("/login"))},
                        follow_redirects=False)
    assert login.status_code == 303
    choose = parent.get("/me")
    chosen = parent.post("/act-for", data={"patient_id": account.patient_id,
                                           "csrf": csrf_of(choose)}, follow_redirects=False)
    assert chosen.status_code == 303
    theirs = parent.get("/me/access", params={"lang": "de"})
    assert theirs.status_code == 200 and 'id="acting-banner"' in theirs.text
    assert "Sie handeln für" in theirs.text and "verwalten" in theirs.text
    parent_csrf = csrf_of(theirs)
    own = parent.post(url, data={"do": "limit", "mandate": mandate.id, "scope": "read",
                                 "csrf": parent_csrf})
    assert own.status_code == 403  # nobody changes their own mandate
    # The patient narrows the mandate to reading: the banner says so, managing is refused.
    limited = portal.post(url, data={"do": "limit", "mandate": mandate.id, "scope": "read",
                                     "end": "", "csrf": csrf}, follow_redirects=False)
    assert limited.status_code == 303
    [mandate] = platform.accounts.mandates_of(_parent_id)
    assert (mandate.scope, mandate.ends_at) == ("read", None)
    documents = parent.get("/me/documents", params={"lang": "en"})
    assert "you may read their record" in documents.text
    assert parent.post("/me/access", data={"do": "close", "csrf": parent_csrf}
                       ).status_code == 403
    # Another patient's mandate is out of reach of this patient's forms.
    other_parent, _ = representative(platform, "uncle@portal.example")
    theirs_portal = signed_in(platform, other, port=50042)
    other_csrf = csrf_of(theirs_portal.get("/me/access"))
    assert theirs_portal.post(url, data={**name, "login": "uncle@portal.example",
                                         "csrf": other_csrf},
                              follow_redirects=False).status_code == 303
    [uncle] = platform.accounts.mandates_of(other_parent)
    assert portal.post(url, data={"do": "limit", "mandate": uncle.id, "scope": "manage",
                                  "csrf": csrf}).status_code == 404
    assert portal.post("/me/access", data={"do": "end-mandate", "mandate": uncle.id,
                                           "csrf": csrf}).status_code == 404
    assert [m.scope for m in platform.accounts.mandates_of(other_parent)] == ["manage"]
    # The patient ends the mandate: the representative is refused at once.
    ended = portal.post("/me/access", data={"do": "end-mandate", "mandate": mandate.id,
                                            "csrf": csrf}, follow_redirects=False)
    assert ended.status_code == 303
    refused = parent.get("/me/access")
    assert refused.status_code == 403 and 'id="acting-banner"' not in refused.text
