"""Giving access and blocking from the portal, on both databases: a professional or an
organization found in the directory (name, profession, city), an organization's access for 30
days, a block that wins over it, lifting it; and "what would they see?". Each action is checked
by its effect through the FHIR API as the professional sees it; each write is refused without
the session's CSRF token, and with another patient's ids."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from support.accounts import PatientAccount, enrol_patient
from support.documents import Pro, created_id, provide_bundle, publish
from support.portal import csrf_of, seen_by, signed_in

IN_30_DAYS = (date.today() + timedelta(days=30)).isoformat()


@pytest.fixture
def account(platform: Platform) -> PatientAccount:
    return enrol_patient(platform, family="Weber")


@pytest.fixture
def portal(platform: Platform, account: PatientAccount) -> TestClient:
    return signed_in(platform, account, port=50020)


def clinic_doctor(platform: Platform) -> tuple[str, Pro]:
    """The Clinique Sainte-Zita in Esch-sur-Alzette, and a physician who works there."""
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        org = svc.register_organizations(uow, ctx, [new_organization(
            ctx.systems, identifier="ORG-ZITA", name="Clinique Sainte-Zita",
            city="Esch-sur-Alzette", postal_code="4001")])[0].id
    with platform.unit_of_work() as uow:
        svc.register_professionals(uow, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier="HP-ZITA", family="Zitadoc",
                             given=["Anne"]), "physician", "cardiology", org)])
    return org, Pro(platform, "HP-ZITA")


def searches(client: TestClient, who: Pro, patient_id: str) -> Any:
    return client.get("/fhir/DocumentReference", params={"patient": f"Patient/{patient_id}"},
                      headers=who.headers)


def test_an_organization_for_30_days_then_a_block_that_wins(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    patient_id = account.patient_id
    gp = seen_by(platform, client, patient_id)
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    org, doctor = clinic_doctor(platform)
    assert searches(client, doctor, patient_id).status_code == 403
    page = portal.get("/me/access", params={"lang": "de"})
    assert page.status_code == 200 and 'id="find-form"' in page.text
    csrf = csrf_of(page)
    assert portal.post("/me/access/find", data={"name": "sainte", "csrf": "forged"}
                       ).status_code == 400
    assert portal.post("/me/access/find", data={"name": "s", "csrf": csrf}).status_code == 400
    found = portal.post("/me/access/find?lang=fr",
                        data={"name": "sainte", "city": "esch", "csrf": csrf})
    assert found.status_code == 200 and f'data-party-id="{org}"' in found.text
    assert "Clinique Sainte-Zita" in found.text and "Esch-sur-Alzette" in found.text
    elsewhere = portal.post("/me/access/find", data={"name": "sainte", "city": "diekirch",
                                                     "csrf": csrf})
    assert f'data-party-id="{org}"' not in elsewhere.text and 'id="nobody"' in elsewhere.text
    by_profession = portal.post("/me/access/find", data={"profession": "physician",
                                                         "city": "esch", "csrf": csrf})
    assert f'data-party-id="{doctor.id}"' in by_profession.text
    assert f'data-party-id="{gp.id}"' not in by_profession.text  # no organization, no city
    grant = {"do": "grant", "party": "organization", "party_id": org, "level": "normal",
             "csrf": csrf}
    # Refused, and nothing changes: no CSRF token, no end date, an end date in the past.
    assert portal.post("/me/access/share", data={**grant, "end": IN_30_DAYS, "csrf": "x"}
                       ).status_code == 400
    assert portal.post("/me/access/share", data={**grant, "end": ""}).status_code == 400
    assert portal.post("/me/access/share", data={**grant, "end": "2020-01-01"}
                       ).status_code == 400
    beyond = (date.today() + timedelta(days=5 * 366 + 2)).isoformat()  # past the five years
    assert portal.post("/me/access/share", data={**grant, "end": beyond}).status_code == 400
    assert searches(client, doctor, patient_id).status_code == 403
    given = portal.post("/me/access/share", data={**grant, "end": IN_30_DAYS},
                        follow_redirects=False)
    assert given.status_code == 303
    seen = searches(client, doctor, patient_id)
    assert seen.status_code == 200 and document in seen.text
    listed = portal.get("/me/access", params={"lang": "en"})
    assert "Clinique Sainte-Zita" in listed.text
    with platform.unit_of_work() as uow:
        grants = [g.grant for g in uow.records.grants(patient_id) if g.revoked_at is None]
    ends = [g.end for g in grants if g.party_id == org]
    assert len(ends) == 1 and ends[0] is not None
    # Through the 30th day after the day the end was chosen on (IN_30_DAYS, made when the
    # module was imported: the run may have crossed midnight since), local time.
    chosen_on = date.fromisoformat(IN_30_DAYS) - timedelta(days=30)
    assert (ends[0].date() - chosen_on).days in (30, 31)
    blocked = portal.post("/me/access/share", data={
        "do": "block", "party": "practitioner", "party_id": doctor.id, "csrf": csrf},
        follow_redirects=False)
    assert blocked.status_code == 303
    assert searches(client, doctor, patient_id).status_code == 403  # the block wins
    page = portal.get("/me/access")
    assert 'id="block-list"' in page.text and "Zitadoc" in page.text
    with platform.unit_of_work() as uow:
        block_id = uow.records.blocks(patient_id)[0].block.id
    assert portal.post("/me/access/share", data={"do": "unblock", "block": block_id,
                                                 "csrf": "forged"}).status_code == 400
    assert portal.post("/me/access/share", data={"do": "unblock", "block": block_id,
                                                 "csrf": csrf}).status_code == 200
    assert searches(client, doctor, patient_id).status_code == 200
    kinds = [AuditRecord.from_canonical(data).interaction
             for _, data in platform.audit.patient_entries(patient_id, limit=200)]
    assert {"grant-create", "block-create", "block-revoke"} <= set(kinds)


def test_another_patients_block_and_grant_are_out_of_reach(
        portal: TestClient, platform: Platform, account: PatientAccount) -> None:
    other = enrol_patient(platform, 2, family="Schmit", login="jos.schmit@example.lu")
    org, doctor = clinic_doctor(platform)
    theirs = signed_in(platform, other, port=50021)
    csrf = csrf_of(theirs.get("/me/access"))
    for form in ({"do": "block", "party": "practitioner", "party_id": doctor.id},
                 {"do": "grant", "party": "organization", "party_id": org, "level": "normal",
                  "end": IN_30_DAYS}):
        assert theirs.post("/me/access/share", data={**form, "csrf": csrf},
                           follow_redirects=False).status_code == 303
    with platform.unit_of_work() as uow:
        block_id = uow.records.blocks(other.patient_id)[0].block.id
        grant_id = next(g.grant.id for g in uow.records.grants(other.patient_id))
    mine = csrf_of(portal.get("/me/access"))
    assert portal.post("/me/access/share", data={"do": "unblock", "block": block_id,
                                                 "csrf": mine}).status_code == 404
    assert portal.post("/me/access", data={"do": "revoke", "grant": grant_id,
                                           "csrf": mine}).status_code == 404
    assert portal.post("/me/access/share", data={"do": "unblock", "block": block_id,
                                                 "csrf": csrf}).status_code == 400
    with platform.unit_of_work() as uow:
        assert [b.block.id for b in uow.records.blocks(other.patient_id)] == [block_id]
        assert [g.grant.id for g in uow.records.grants(other.patient_id)
                if g.revoked_at is None] == [grant_id]
    unknown = portal.post("/me/access/share", data={
        "do": "block", "party": "practitioner", "party_id": "nobody", "csrf": mine})
    assert unknown.status_code == 404
    anonymous = TestClient(platform.app, base_url="http://127.0.0.1:8000")
    for path in ("/me/access/share", "/me/access/find", "/me/access/preview"):
        assert anonymous.post(path, data={"do": "unblock", "block": block_id},
                              follow_redirects=False).status_code == 303


def test_what_would_they_see_is_the_engines_answer_and_is_recorded(
        portal: TestClient, client: TestClient, platform: Platform,
        account: PatientAccount) -> None:
    patient_id = account.patient_id
    gp = seen_by(platform, client, patient_id)
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    stranger = Pro(platform, "HP-PORTAL-STRANGER")
    csrf = csrf_of(portal.get("/me/access"))
    assert portal.post("/me/access/preview", data={"party_id": gp.id, "csrf": "x"}
                       ).status_code == 400
    theirs = portal.post("/me/access/preview?lang=en", data={"party_id": gp.id, "csrf": csrf})
    assert theirs.status_code == 200 and 'id="preview-documents"' in theirs.text
    assert theirs.headers["cache-control"] == "no-store"
    found = searches(client, gp, patient_id).json()
    total = found["total"]  # what the physician's own search finds: the preview says as much
    assert total >= 1 and document in {e["resource"]["id"] for e in found["entry"]}
    assert f"would see {total} of your documents" in theirs.text
    nothing = portal.post("/me/access/preview?lang=de",
                          data={"party_id": stranger.id, "csrf": csrf})
    assert nothing.status_code == 200 and "keines Ihrer Dokumente" in nothing.text
    assert searches(client, stranger, patient_id).status_code == 403
    hidden = portal.post("/me/documents", data={"document": document, "hidden": "true",
                                                "csrf": csrf}, follow_redirects=False)
    assert hidden.status_code == 303
    again = portal.post("/me/access/preview?lang=fr", data={"party_id": gp.id, "csrf": csrf})
    assert f"verrait {total} de vos documents" in again.text  # its author still sees it
    assert portal.post("/me/access/preview", data={"party_id": "nobody", "csrf": csrf}
                       ).status_code == 404
    previews = [AuditRecord.from_canonical(data)
                for _, data in platform.audit.patient_entries(patient_id, limit=200)]
    previews = [r for r in previews if r.interaction == "access-preview"]
    assert [r.entity_id for r in previews] == [gp.id, stranger.id, gp.id]
    assert [r.detail["documents"] for r in previews] == [str(total), "0", str(total)]
