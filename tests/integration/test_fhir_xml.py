"""FHIR XML at the door, for every interaction: ``application/fhir+xml`` in and out (an ITI-65
Provide Document Bundle and its transaction-response, reads, searches, refusals as
OperationOutcome), ``_format``, ``Accept`` negotiation, ``Prefer: return=…``, and hostile XML
(entities, external references, depth) refused before anything reads it."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from starlette.testclient import TestClient

from carevault.api.fhir.formats import Preference, negotiate, preferred_body
from carevault.bootstrap import Platform
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, Pro, provide_bundle

FHIR_XML = "application/fhir+xml"
NS = {"f": "http://hl7.org/fhir"}


def to_xml(resource: dict[str, Any]) -> bytes:
    """A FHIR resource as FHIR XML, written with lxml by the FHIR XML rules for the few
    shapes these tests send (so that the server's reader is not checked against itself)."""
    def element(name: str, value: Any, parent: etree._Element) -> None:
        if isinstance(value, list):
            for item in value:
                element(name, item, parent)
        elif isinstance(value, dict):
            if "resourceType" in value and name in ("resource", "contained"):
                holder = etree.SubElement(parent, f"{{{NS['f']}}}{name}")
                holder.append(root(value))
                return
            child = etree.SubElement(parent, f"{{{NS['f']}}}{name}")
            if "url" in value and name in ("extension", "modifierExtension"):
                child.set("url", value["url"])
            for key, inner in value.items():
                if not (key == "url" and name in ("extension", "modifierExtension")):
                    element(key, inner, child)
        else:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            etree.SubElement(parent, f"{{{NS['f']}}}{name}").set("value", text)

    def root(resource: dict[str, Any]) -> etree._Element:
        node = etree.Element(f"{{{NS['f']}}}{resource['resourceType']}", nsmap={None: NS["f"]})
        for key, value in resource.items():
            if key != "resourceType":
                element(key, value, node)
        return node

    return bytes(etree.tostring(root(resource), xml_declaration=True, encoding="UTF-8"))


def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))


@pytest.fixture
def setting(registrar: TestClient, client: TestClient, platform: Platform) -> tuple[str, Pro]:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 12),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-XML-GP")
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    return patient_id, gp


def xml_headers(pro: Pro) -> dict[str, str]:
    return {"Authorization": pro.headers["Authorization"], "Content-Type": FHIR_XML,
            "Accept": FHIR_XML}


def test_metadata_in_xml_by_accept_and_by_format(client: TestClient) -> None:
    answer = client.get("/fhir/metadata", headers={"Accept": FHIR_XML})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(FHIR_XML)
    root = parse(answer.content)
    assert root.tag == "{http://hl7.org/fhir}CapabilityStatement"
    formats = [f.get("value") for f in root.findall("f:format", NS)]
    assert "application/fhir+xml" in formats and "application/fhir+json" in formats
    by_param = client.get("/fhir/metadata", params={"_format": "xml"})
    assert parse(by_param.content).tag == root.tag
    assert client.get("/fhir/metadata").headers["content-type"].startswith("application/fhir+json")
    refused = client.get("/fhir/metadata", params={"_format": "text/turtle"})
    assert refused.status_code == 406


def test_publish_find_and_read_in_xml(client: TestClient, setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting
    bundle = provide_bundle(patient_id, gp)
    published = client.post("/fhir", content=to_xml(bundle), headers=xml_headers(gp))
    assert published.status_code == 200, published.text
    response = parse(published.content)
    assert response.tag == "{http://hl7.org/fhir}Bundle"
    assert response.find("f:type", NS).get("value") == "transaction-response"
    locations = [e.get("value") for e in response.iterfind(".//f:response/f:location", NS)]
    document = next(loc for loc in locations if "/DocumentReference/" in loc)
    document_id = document.split("/DocumentReference/")[1].split("/")[0]
    found = client.get("/fhir/DocumentReference", params={"patient": patient_id},
                       headers=xml_headers(gp))
    assert found.status_code == 200, found.text
    assert parse(found.content).find("f:type", NS).get("value") == "searchset"
    read = client.get(f"/fhir/DocumentReference/{document_id}", headers=xml_headers(gp))
    root = parse(read.content)
    assert root.find("f:id", NS).get("value") == document_id
    assert root.find("f:status", NS).get("value") == "current"


def test_refusals_are_operation_outcomes_in_xml(client: TestClient,
                                                setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting
    unknown = client.get("/fhir/Nonsense/1", headers=xml_headers(gp))
    assert unknown.status_code == 404
    assert parse(unknown.content).tag == "{http://hl7.org/fhir}OperationOutcome"
    bundle = provide_bundle(patient_id, gp)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "List":
            entry["resource"].pop("date")
    refused = client.post("/fhir", content=to_xml(bundle), headers=xml_headers(gp))
    assert refused.status_code == 400
    outcome = parse(refused.content)
    assert outcome.find("f:issue/f:expression", NS).get("value") == "List.date"


HOSTILE = {
    "entity expansion": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa">'
                        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
                        b'<Patient xmlns="http://hl7.org/fhir"><id value="&b;"/></Patient>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM '
                       b'"file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir">'
                       b'<gender value="&x;"/></Patient>',
    "not FHIR": b'<Patient><gender value="male"/></Patient>',
    "not well-formed": b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"></Patient>',
    "too deep": b'<Bundle xmlns="http://hl7.org/fhir">' + b"<entry>" * 400 + b"</entry>" * 400
                + b"</Bundle>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused_before_it_is_read(
        client: TestClient, setting: tuple[str, Pro], name: str) -> None:
    _patient_id, gp = setting
    answer = client.post("/fhir", content=HOSTILE[name], headers=xml_headers(gp))
    assert answer.status_code in (400, 413), answer.text
    assert b"root:" not in answer.content  # /etc/passwd was never read
    assert parse(answer.content).tag == "{http://hl7.org/fhir}OperationOutcome"


def test_prefer_return(client: TestClient, platform: Platform,
                       setting: tuple[str, Pro]) -> None:
    patient_id, gp = setting

    def encounter() -> dict[str, Any]:
        return with_presence({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
            "period": {"start": "2026-11-21T09:00:00Z"}}, presence_code(platform, patient_id))

    minimal = client.post("/fhir/Encounter", json=encounter(),
                          headers={**gp.headers, "Prefer": "return=minimal"})
    assert minimal.status_code == 201, minimal.text
    assert minimal.content == b"" and minimal.headers.get("location")
    outcome = client.post("/fhir/Encounter", json=encounter(),
                          headers={**gp.headers, "Prefer": "return=OperationOutcome",
                                   "Accept": FHIR_XML})
    assert outcome.status_code == 201, outcome.text
    assert parse(outcome.content).tag == "{http://hl7.org/fhir}OperationOutcome"
    full = client.post("/fhir/Encounter", json=encounter(),
                       headers={**gp.headers, "Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Encounter"


def test_negotiation_rules() -> None:
    assert negotiate((), "") == "json"
    assert negotiate((), "application/fhir+xml") == "xml"
    assert negotiate((), "application/fhir+json;q=0.5, application/fhir+xml") == "xml"
    assert negotiate((), "application/fhir+xml;q=0.2, application/json") == "json"
    assert negotiate((), "text/html, */*") == "json"
    assert negotiate((("_format", "xml"),), "application/fhir+json") == "xml"
    assert negotiate((("_format", "application/fhir json"),), FHIR_XML) == "json"
    assert Preference.of("return=minimal").value == "minimal"
    assert Preference.of('respond-async, return="OperationOutcome"').value == "OperationOutcome"
    assert Preference.of("return=everything").value == "representation"
    searchset = {"resourceType": "Bundle", "type": "searchset"}
    assert preferred_body("POST", 200, searchset, Preference("minimal")) == searchset


@pytest.mark.parametrize("authorization", [None, "Bearer not-one-of-ours"])
def test_an_xml_body_is_mapped_only_for_an_authenticated_caller(
        platform: Platform, setting: tuple[str, Pro], monkeypatch: pytest.MonkeyPatch,
        authorization: str | None) -> None:
    """Mapping XML to JSON costs seconds per megabyte: an anonymous caller, or one with a
    token that is not ours, is refused before the body is mapped (found by a review of
    resource limits: a 2.6 MB body without a token cost 11.6 s and 695 MB before its 401)."""
    import carevault.api.app as app_module

    mapped: list[int] = []
    original = app_module.xml_to_json

    def counting(body: bytes, **kwargs: Any) -> bytes:
        mapped.append(len(body))
        return original(body, **kwargs)

    monkeypatch.setattr(app_module, "xml_to_json", counting)
    patient_id, gp = setting
    body = to_xml(provide_bundle(patient_id, gp))
    remote = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("198.51.100.8", 4000))
    headers = {"Content-Type": FHIR_XML, "Accept": FHIR_XML}
    if authorization:
        headers["Authorization"] = authorization
    refused = remote.post("/fhir", content=body, headers=headers)
    assert refused.status_code == 401, refused.text
    assert mapped == []
    published = remote.post("/fhir", content=body, headers=xml_headers(gp))
    assert published.status_code == 200, published.text
    assert mapped == [len(body)]  # the same body, from an authenticated caller
