"""The patient's controls through the FHIR API, on both databases, each checked by its effect
as a professional sees it: the referring physician, closing, reopening and (opt-in) opening the
record, the default confidentiality of new documents, representatives named, limited and ended
by the patient, and the export of everything. Each write has its refusals: who may not do it,
and bad input that changes nothing."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from lxml import etree
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build
from carevault.domain.audit import AuditRecord
from carevault.settings import Settings
from support.authorities import presence_code, registrar_token, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, PDF, Pro, created_id, provide_bundle, publish
from support.tokens import account_token, patient_headers


@pytest.fixture
def setting(registrar: TestClient, client: TestClient,
            platform: Platform) -> tuple[str, dict[str, str], Pro]:
    """A patient, their app's headers, and a GP who saw them (a care relationship: normal
    documents only)."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 11),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-CONTROLS-GP")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, {**patient_headers(platform, patient_id), **FHIR_JSON}, gp


def parameters(**values: Any) -> dict[str, Any]:
    kinds = {bool: "valueBoolean"}
    made = []
    for name, value in values.items():
        name = name.replace("_", "-")
        if isinstance(value, dict):
            made.append({"name": name, "valueReference": value})
        elif isinstance(value, bool):
            made.append({"name": name, kinds[bool]: value})
        elif name in ("login", "mandate"):
            made.append({"name": name, "valueString": value})
        elif name == "end":
            made.append({"name": name, "valueDateTime": value})
        else:
            made.append({"name": name, "valueCode": value})
    return {"resourceType": "Parameters", "parameter": made}


def settings_of(client: TestClient, who: dict[str, str], patient_id: str) -> dict[str, Any]:
    answer = client.get(f"/fhir/Patient/{patient_id}/$record-settings", headers=who)
    assert answer.status_code == 200, answer.text
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in answer.json()["parameter"] if p["name"] != "representative"}


def change(client: TestClient, who: dict[str, str], patient_id: str, **values: Any) -> Any:
    return client.post(f"/fhir/Patient/{patient_id}/$record-settings", headers=who,
                       json=parameters(**values))


def interactions(platform: Platform, patient_id: str) -> list[str]:
    return [AuditRecord.from_canonical(data).interaction
            for _, data in platform.audit.patient_entries(patient_id, limit=500)]


def reads(client: TestClient, pro: Pro, document_id: str) -> int:
    return client.get(f"/fhir/DocumentReference/{document_id}", headers=pro.headers).status_code


def test_the_referring_physician_sees_restricted_documents_until_removed(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    restricted = created_id(publish(client, gp, provide_bundle(patient_id, gp,
                                                               confidentiality="R")))
    cardio = Pro(platform, "HP-CONTROLS-CARDIO", specialty="cardiology")
    assert reads(client, cardio, restricted) == 403
    named = change(client, mine, patient_id,
                   referring_physician={"reference": f"Practitioner/{cardio.id}"})
    assert named.status_code == 200, named.text
    assert settings_of(client, mine, patient_id)["referring-physician"] == {
        "reference": f"Practitioner/{cardio.id}"}
    assert reads(client, cardio, restricted) == 200  # extended by default: N and R
    assert change(client, mine, patient_id, remove_referring_physician=True).status_code == 200
    assert "referring-physician" not in settings_of(client, mine, patient_id)
    assert reads(client, cardio, restricted) == 403
    assert interactions(platform, patient_id).count("referring-physician") == 2


def test_the_default_confidentiality_applies_to_new_documents(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    before = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    assert change(client, mine, patient_id, default_confidentiality="R").status_code == 200
    assert settings_of(client, mine, patient_id)["default-confidentiality"] == "R"
    after = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    labels = client.get(f"/fhir/DocumentReference/{after}", headers=mine).json()["securityLabel"]
    assert [c["code"] for label in labels for c in label["coding"]] == ["R"]
    # The GP's care relationship opens normal documents only: the new one is now beyond it,
    # the earlier one is unchanged.
    colleague = Pro(platform, "HP-CONTROLS-COLLEAGUE")
    client.post("/fhir/Encounter", headers=colleague.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{colleague.id}"}}],
        "period": {"start": "2026-11-21T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert reads(client, colleague, before) == 200
    assert reads(client, colleague, after) == 403


def test_closing_hides_the_record_from_everyone_at_once_and_reopening_restores_it(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    search = {"patient": f"Patient/{patient_id}"}
    assert client.get("/fhir/DocumentReference", params=search, headers=gp.headers
                      ).status_code == 200
    assert change(client, mine, patient_id, state="closed").status_code == 200
    assert settings_of(client, mine, patient_id)["state"] == "closed"
    assert client.get("/fhir/DocumentReference", params=search, headers=gp.headers
                      ).status_code == 403
    assert client.get(f"/fhir/DocumentReference/{document}", headers=mine).status_code == 200
    assert change(client, mine, patient_id, state="active").status_code == 200
    assert client.get("/fhir/DocumentReference", params=search, headers=gp.headers
                      ).status_code == 200
    kinds = interactions(platform, patient_id)
    assert "record-close" in kinds and "record-reopen" in kinds


def test_bad_input_changes_nothing_and_is_told(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, _gp = setting
    for body, expected in (
        (parameters(default_confidentiality="R", state="sleeping"), 400),
        (parameters(default_confidentiality="X"), 400),
        (parameters(referring_physician={"reference": "Practitioner/nobody"}), 404),
        (parameters(referring_physician={"reference": "Organization/x"}), 400),
        (parameters(default_confidentiality="R", remove_referring_physician=True,
                    referring_physician={"reference": "Practitioner/x"}), 400),
        ({"resourceType": "Parameters", "parameter": [{"name": "colour", "valueCode": "R"}]}, 400),
        ({"resourceType": "Parameters", "parameter": []}, 400),
        ({"resourceType": "Patient"}, 400),
    ):
        answer = client.post(f"/fhir/Patient/{patient_id}/$record-settings", headers=mine,
                             json=body)
        assert answer.status_code == expected, (body, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert settings_of(client, mine, patient_id)["default-confidentiality"] == "N"


def representative(platform: Platform, login: str) -> str:
    enrolment = platform.accounts.add_representative(login, "a representative's passphrase 9")
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    return enrolment.account_id


def acting(platform: Platform, account_id: str, patient_id: str) -> dict[str, str]:
    token = account_token(platform, account_id, patient_id, kind="representative")
    return {"Authorization": f"Bearer {token}", **FHIR_JSON}


def mandates(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [{p["name"]: next(v for k, v in p.items() if k.startswith("value"))
             for p in m["part"]} for m in answer.json()["parameter"]
            if m["name"] == "representative"]


def test_the_patient_names_limits_and_ends_a_representative(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, _gp = setting
    parent = representative(platform, "parent@controls.example")
    url = f"/fhir/Patient/{patient_id}/$representative"
    named = mandates(client.post(url, headers=mine, json=parameters(
        action="name", login="parent@controls.example", scope="read")))
    assert [(m["account"], m["scope"], m["active"]) for m in named] == [
        ({"reference": f"account:{parent}"}, "read", True)]
    mandate = named[0]["mandate"]
    theirs = acting(platform, parent, patient_id)
    assert client.get(f"/fhir/Patient/{patient_id}", headers=theirs).status_code == 200
    # A reading representative changes nothing.
    assert change(client, theirs, patient_id, state="closed").status_code == 403
    end = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    limited = mandates(client.post(url, headers=mine, json=parameters(
        action="limit", mandate=mandate, scope="manage", end=end)))
    assert (limited[0]["scope"], limited[0]["end"][:10]) == ("manage", end[:10])
    assert change(client, theirs, patient_id, delegation_allowed=True).status_code == 200
    # A managing representative does not lengthen their own mandate.
    later = (datetime.now(UTC) + timedelta(days=3000)).strftime("%Y-%m-%dT%H:%M:%SZ")
    own = client.post(url, headers=theirs, json=parameters(
        action="limit", mandate=mandate, scope="manage", end=later))
    assert own.status_code == 403, own.text
    ended = mandates(client.post(url, headers=mine, json=parameters(
        action="end", mandate=mandate)))
    assert ended[0]["active"] is False
    assert client.get(f"/fhir/Patient/{patient_id}", headers=theirs).status_code == 403
    kinds = interactions(platform, patient_id)
    assert {"mandate-create", "mandate-limit", "mandate-end"} <= set(kinds)


def test_who_may_not_touch_the_settings_or_the_representatives(
        client: TestClient, registrar: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    other = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 12),
                           headers=FHIR_JSON).json()["id"]
    another_patient = {**patient_headers(platform, other), **FHIR_JSON}
    representative(platform, "stranger@controls.example")
    for who in (gp.headers, another_patient):
        assert change(client, who, patient_id, state="closed").status_code == 403
        assert client.get(f"/fhir/Patient/{patient_id}/$record-settings",
                          headers=who).status_code == 403
        assert client.post(f"/fhir/Patient/{patient_id}/$representative", headers=who,
                           json=parameters(action="name", login="stranger@controls.example")
                           ).status_code == 403
        assert client.get(f"/fhir/Patient/{patient_id}/$everything",
                          headers=who).status_code == 403
    # The registrar writes identities, never a record's settings.
    assert registrar.post(f"/fhir/Patient/{patient_id}/$record-settings", headers=FHIR_JSON,
                          json=parameters(state="closed")).status_code == 403
    assert settings_of(client, mine, patient_id)["state"] == "active"
    unknown = client.post(f"/fhir/Patient/{patient_id}/$representative", headers=mine,
                          json=parameters(action="name", login="nobody@controls.example"))
    assert unknown.status_code == 404


def test_the_export_holds_everything_the_patient_may_see(
        client: TestClient, platform: Platform,
        setting: tuple[str, dict[str, str], Pro]) -> None:
    patient_id, mine, gp = setting
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    answer = client.get(f"/fhir/Patient/{patient_id}/$everything", headers=mine)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"].startswith("attachment;")
    bundle = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resources = [entry["resource"] for entry in bundle["entry"]]
    kinds = {r["resourceType"] for r in resources}
    assert {"Patient", "DocumentReference", "Binary", "Consent", "Parameters"} <= kinds
    binary = next(r for r in resources if r["resourceType"] == "Binary" and r["id"] == document)
    assert base64.b64decode(binary["data"]) == PDF
    history = [p["part"] for r in resources if r["resourceType"] == "Parameters"
               for p in r["parameter"] if "part" in p]
    assert history  # the access history in plain words is part of it


def test_the_export_in_xml_holds_the_same_entries_as_in_json(
        client: TestClient, setting: tuple[str, dict[str, str], Pro]) -> None:
    """``_format=xml``: the same Bundle, written entry by entry in FHIR XML (it was converted
    whole, the record held in memory twice over)."""
    patient_id, mine, gp = setting
    document = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    in_json = client.get(f"/fhir/Patient/{patient_id}/$everything", headers=mine).json()
    answer = client.get(f"/fhir/Patient/{patient_id}/$everything", headers=mine,
                        params={"_format": "xml"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+xml")
    root = etree.fromstring(answer.content)
    fhir = "{http://hl7.org/fhir}"
    assert root.tag == f"{fhir}Bundle"
    assert root.find(f"{fhir}type").get("value") == "collection"
    entries = root.findall(f"{fhir}entry")
    # The access history grows with each export (its own reading is in it): its entries
    # aside, the same resources in the same order.
    kinds = [next(iter(e.find(f"{fhir}resource"))).tag.removeprefix(fhir) for e in entries]
    assert [k for k in kinds if k != "Parameters"] == [
        e["resource"]["resourceType"] for e in in_json["entry"]
        if e["resource"]["resourceType"] != "Parameters"]
    [binary] = [e.find(f"{fhir}resource/{fhir}Binary") for e in entries
                if e.find(f"{fhir}resource/{fhir}Binary/{fhir}id") is not None
                and e.find(f"{fhir}resource/{fhir}Binary/{fhir}id").get("value") == document]
    assert base64.b64decode(binary.find(f"{fhir}data").get("value")) == PDF


@pytest.fixture
def opt_in(database_url: str, tmp_path: Path, engine: Engine) -> Iterator[
        tuple[Platform, TestClient]]:
    from carevault.adapters.keys.local_file import create_key_file

    key_file = tmp_path / "opt-in" / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=database_url, key_source=f"file:{key_file}",
                        environment="dev", record_model="opt-in",
                        _env_file=None)  # type: ignore[call-arg]
    platform = build(settings, engine)
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50002),
                    headers={"Authorization": f"Bearer {registrar_token(platform)}"}) as http:
        yield platform, http


def test_under_opt_in_only_the_patient_opens_their_record(
        opt_in: tuple[Platform, TestClient]) -> None:
    platform, http = opt_in
    created = http.post("/fhir/Patient", json=patient(platform.directory.systems, 13),
                        headers=FHIR_JSON)
    patient_id = created.json()["id"]
    mine = {**patient_headers(platform, patient_id), **FHIR_JSON}
    before = settings_of(http, mine, patient_id)
    assert (before["opened"], before["state"], before["model"]) == (False, "closed", "opt-in")
    early = change(http, mine, patient_id, default_confidentiality="R")
    assert early.status_code == 422 and "open it first" in early.text
    gp = Pro(platform, "HP-OPTIN-GP")
    assert change(http, gp.headers, patient_id, state="active").status_code == 403
    opened = change(http, mine, patient_id, state="active")
    assert opened.status_code == 200, opened.text
    after = settings_of(http, mine, patient_id)
    assert (after["opened"], after["state"]) == (True, "active")
    assert "record-open" in interactions(platform, patient_id)
