"""Giving a care team access from the portal, on both databases: the team is found in the
directory by a word of its name (with its organization and how many members it has, never who
they are), given access until a date, and the access reaches its member, as the member's FHIR
search shows; revoking it takes it back. Refused: a team that is not in the directory (or no
longer active), an access without end date, a block of a team, a form without the session's
CSRF token, and a representative whose mandate only lets them read."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.fhirmodel.directory import new_organization
from carevault.services import directory as svc
from support.accounts import PatientAccount, enrol_patient
from support.documents import FHIR_JSON, Pro, created_id, provide_bundle, publish
from support.portal import csrf_of, seen_by, signed_in

IN_30_DAYS = (date.today() + timedelta(days=30)).isoformat()
PASSWORD = "a representative's passphrase 9"


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Weber")


@pytest.fixture
def portal(platform: Platform, account: PatientAccount) -> TestClient:
    return signed_in(platform, account, port=50060)


def team_of(platform: Platform, registrar: TestClient, member: Pro, *,
            name: str = "Équipe Mobile de Gériatrie", status: str = "active") -> str:
    """A care team of the Hôpital Saint-Louis in Ettelbruck, written by the registrar."""
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        org = svc.register_organizations(uow, ctx, [new_organization(
            ctx.systems, identifier=f"ORG-{name[:6]}-{status}", name="Hôpital Saint-Louis",
            city="Ettelbruck", postal_code="9080")])[0].id
    made = registrar.post("/fhir/CareTeam", headers=FHIR_JSON, json={
        "resourceType": "CareTeam", "status": status, "name": name,
        "managingOrganization": [{"reference": f"Organization/{org}"}],
        "participant": [{"member": {"reference": f"Practitioner/{member.id}"}}]})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def searches(client: TestClient, who: Pro, patient_id: str) -> Any:
    return client.get("/fhir/DocumentReference", params={"patient": f"Patient/{patient_id}"},
                      headers=who.headers)


def test_a_care_team_found_given_access_that_reaches_its_member_then_revoked(
        portal: TestClient, client: TestClient, registrar: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    patient_id = account.patient_id
    gp = seen_by(platform, client, patient_id)
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    member = Pro(platform, "HP-TEAM-DOC")
    team = team_of(platform, registrar, member)
    assert searches(client, member, patient_id).status_code == 403
    csrf = csrf_of(portal.get("/me/access"))
    found = portal.post("/me/access/find?lang=fr", data={"name": "geriatrie", "csrf": csrf})
    assert found.status_code == 200
    assert f'data-party="care_team" data-party-id="{team}"' in found.text
    assert "Équipe Mobile de Gériatrie" in found.text and "Équipe de soins" in found.text
    assert "Hôpital Saint-Louis" in found.text and "Ettelbruck" in found.text
    assert "membres actuels : 1" in found.text
    assert "HP-TEAM-DOC" not in found.text  # the team, never its members
    assert 'value="block"' not in found.text and 'class="preview"' not in found.text
    assert ' required>' in found.text  # the end date, as for an organization
    elsewhere = portal.post("/me/access/find", data={"name": "geriatrie", "city": "esch",
                                                     "csrf": csrf})
    assert f'data-party-id="{team}"' not in elsewhere.text

    grant = {"do": "grant", "party": "care_team", "party_id": team, "level": "normal",
             "end": IN_30_DAYS, "csrf": csrf}
    assert portal.post("/me/access/share", data={**grant, "csrf": "forged"}).status_code == 400
    no_csrf = {k: v for k, v in grant.items() if k != "csrf"}
    assert portal.post("/me/access/share", data=no_csrf).status_code == 400
    assert portal.post("/me/access/share", data={**grant, "end": ""}).status_code == 400
    assert portal.post("/me/access/share", data={**grant, "do": "block"}).status_code == 400
    unknown = portal.post("/me/access/share?lang=en", data={**grant, "party_id": "no-such-team"})
    assert unknown.status_code == 404 and "not (or no longer) there" in unknown.text
    with platform.unit_of_work() as uow:
        assert [g for g in uow.records.grants(patient_id) if g.grant.party_id == team] == []
        assert uow.records.blocks(patient_id) == []
    assert searches(client, member, patient_id).status_code == 403

    given = portal.post("/me/access/share", data=grant, follow_redirects=False)
    assert given.status_code == 303
    seen = searches(client, member, patient_id)
    assert seen.status_code == 200 and document in seen.text
    listed = portal.get("/me/access", params={"lang": "en"})
    assert "Équipe Mobile de Gériatrie</span> (care team)" in listed.text
    with platform.unit_of_work() as uow:
        [stored] = [g.grant for g in uow.records.grants(patient_id) if g.grant.party_id == team]
    assert stored.end is not None and (stored.end - datetime.now(UTC)).days in (29, 30, 31)
    revoked = portal.post("/me/access", data={"do": "revoke", "grant": stored.id,
                                              "csrf": csrf}, follow_redirects=False)
    assert revoked.status_code == 303
    assert searches(client, member, patient_id).status_code == 403
    assert "Équipe Mobile de Gériatrie" not in portal.get("/me/access").text
    kinds = [AuditRecord.from_canonical(data).interaction
             for _, data in platform.audit.patient_entries(patient_id, limit=200)]
    assert {"grant-create", "grant-revoke"} <= set(kinds)


def test_an_inactive_care_team_is_neither_found_nor_given_access(
        portal: TestClient, registrar: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    member = Pro(platform, "HP-TEAM-DOC")
    team = team_of(platform, registrar, member, name="Équipe Dissoute", status="inactive")
    csrf = csrf_of(portal.get("/me/access"))
    found = portal.post("/me/access/find", data={"name": "dissoute", "csrf": csrf})
    assert found.status_code == 200 and f'data-party-id="{team}"' not in found.text
    refused = portal.post("/me/access/share", data={
        "do": "grant", "party": "care_team", "party_id": team, "level": "normal",
        "end": IN_30_DAYS, "csrf": csrf})
    assert refused.status_code == 404
    with platform.unit_of_work() as uow:
        assert list(uow.records.grants(account.patient_id)) == []


def test_a_representative_who_may_only_read_is_refused_by_the_engine(
        portal: TestClient, registrar: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    member = Pro(platform, "HP-TEAM-DOC")
    team = team_of(platform, registrar, member)
    enrolment = platform.accounts.add_representative("parent@portal.example", PASSWORD)
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    totp = pyotp.TOTP(secret)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    named = portal.post("/me/access/representatives", data={
        "do": "name", "login": "parent@portal.example", "scope": "read",
        "end": (date.today() + timedelta(days=60)).isoformat(),
        "csrf": csrf_of(portal.get("/me/access"))}, follow_redirects=False)
    assert named.status_code == 303
    parent = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50061))
    assert parent.post("/login", data={"login": "parent@portal.example", "password": PASSWORD,
                                       "code": totp.now(), "csrf": csrf_of(parent.get("/login"))},
                       follow_redirects=False).status_code == 303
    assert parent.post("/act-for", data={"patient_id": account.patient_id,
                                         "csrf": csrf_of(parent.get("/me"))},
                       follow_redirects=False).status_code == 303
    csrf = csrf_of(parent.get("/me/access"))
    assert parent.post("/me/access/find", data={"name": "geriatrie", "csrf": csrf}
                       ).status_code == 403
    refused = parent.post("/me/access/share", data={
        "do": "grant", "party": "care_team", "party_id": team, "level": "normal",
        "end": IN_30_DAYS, "csrf": csrf})
    assert refused.status_code == 403
    with platform.unit_of_work() as uow:
        assert list(uow.records.grants(account.patient_id)) == []
