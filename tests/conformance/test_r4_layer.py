"""The all-responses-valid layer (support.r4_responses, support.r4_profiles) itself: it finds
what it claims to find, passes what is valid, and sees the responses of every TestClient."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from support import r4_profiles
from support.r4_responses import COLLECTOR, check_body

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"


def problems(resource: dict[str, Any], path: str = "/fhir/Basic/1") -> list[str]:
    return check_body(path, FHIR_JSON, json.dumps(resource).encode())


def outcome(**issue: Any) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", **issue}]}


def test_a_valid_answer_has_no_finding() -> None:
    assert problems(outcome(diagnostics="no")) == []
    assert problems({"resourceType": "Bundle", "type": "searchset", "total": 0}) == []
    # fhir.resources cuts TaskStatus short ("draft", ... "+"): "ready" is R4 all the same.
    assert problems({"resourceType": "Task", "status": "ready", "intent": "order"}) == []


@pytest.mark.parametrize(("resource", "found"), [
    ({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []},
     "Bundle.entry: an empty array"),
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
                                                     "diagnostics": ""}]},
     "issue[0].diagnostics: an empty string"),
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
                                                     "details": None}]}, ": null"),
    (outcome(unknown=1), "Extra inputs are not permitted"),
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "bad", "code": "invalid"}]},
     "'bad' is not in the required value set"),
    (outcome(code="made-up"), "'made-up' is not an IssueType code"),
    ({"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}, "code"),
    ({"resourceType": "Patient", "extension": [{"url": "urn:x"}]}, "ext-1"),
    ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueString": "a",
                                                "extension": [{"url": "y", "valueCode": "b"}]}]},
     "ext-1"),
    ({"resourceType": "Bundle", "type": "searchset",
      "entry": [{"resource": outcome(), "request": {"method": "GET", "url": "x"}}]}, "bdl-3"),
    ({"resourceType": "Bundle", "type": "collection", "total": 1}, "bdl-1"),
    ({"resourceType": "Bundle", "type": "searchset",
      "entry": [{"fullUrl": "http://x/Basic/1", "resource": outcome()},
                {"fullUrl": "http://x/Basic/1", "resource": outcome()}]}, "bdl-7"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o",
                                                "name": "n"}]}, "dom-3"),
    ({"resourceType": "SubscriptionTopic", "url": "http://x", "status": "active"},
     "exists in R4B, not in R4"),
    ({"resourceType": "NotAResource"}, "not a FHIR resource type"),
    ({"issue": []}, "resourceType: missing"),
])
def test_the_r4_rules_find_what_they_claim(resource: dict[str, Any], found: str) -> None:
    assert any(found in p for p in problems(resource)), problems(resource)


def test_xml_answers_are_checked() -> None:
    good = (b'<OperationOutcome xmlns="http://hl7.org/fhir"><issue><severity value="error"/>'
            b'<code value="invalid"/></issue></OperationOutcome>')
    assert check_body("/fhir/x", FHIR_XML, good) == []
    empty = good.replace(b'<code value="invalid"/>', b'<code value="invalid"/><details/>')
    assert any("ele-1" in p for p in check_body("/fhir/x", FHIR_XML, empty))
    foreign = good.replace(b"http://hl7.org/fhir", b"urn:other")
    assert any("FHIR namespace" in p for p in check_body("/fhir/x", FHIR_XML, foreign))
    wrong_code = good.replace(b"invalid", b"made-up")
    assert any("IssueType" in p for p in check_body("/fhir/x", FHIR_XML, wrong_code))
    assert any("not XML" in p for p in check_body("/fhir/x", FHIR_XML, b"<a>"))


def test_a_non_fhir_media_type_is_a_finding() -> None:
    assert check_body("/fhir/Patient/1", "text/html", b"<p>oops</p>") == [
        "the body's media type text/html is not a FHIR format"]


MHD = r4_profiles.MHD


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"},
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/Binary/1"}}],
    }
    doc.update(changes)
    return doc


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


CLIENT_READ = {"type": coded(r4_profiles.DCM, "110152"), "who": {"display": "app"},
               "requestor": False, "network": {"address": "192.0.2.1", "type": "2"}}
SERVER_READ = {"type": coded(r4_profiles.DCM, "110153"), "who": {"display": "https://x/fhir"},
               "requestor": False, "network": {"address": "https://x/fhir", "type": "5"}}
USER = {"type": coded(r4_profiles.PARTICIPATION, "IRCP"), "who": {"reference": "Practitioner/1"},
        "requestor": True}


def balp_read(**changes: Any) -> dict[str, Any]:
    """An AuditEvent meeting IHE.BasicAudit.Read, with ``changes`` (None removes, lists of
    agents with a None element lose it)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "meta": {"profile": [r4_profiles.BALP_READ]},
        "type": {"system": r4_profiles.EVENT_TYPE, "code": "rest"},
        "subtype": [{"system": r4_profiles.RESTFUL, "code": "read"}], "action": "R",
        "recorded": "2024-01-01T00:00:00Z", "outcome": "0",
        "agent": [CLIENT_READ, SERVER_READ, USER],
        "source": {"observer": {"display": "x"}},
        "entity": [{"type": {"system": r4_profiles.ENTITY_TYPE, "code": "2"},
                    "role": {"system": r4_profiles.OBJECT_ROLE, "code": "4"},
                    "what": {"reference": "Encounter/1"}}],
    }
    event.update(changes)
    event["agent"] = [{k: v for k, v in a.items() if v is not None} for a in event["agent"]]
    return event


def test_a_conformant_balp_read_passes_the_layer() -> None:
    """The cases below fail for the reason they name, not for another."""
    assert problems(balp_read(), "/fhir/AuditEvent/1") == []


@pytest.mark.parametrize(("resource", "path", "found"), [
    (document(masterIdentifier=None), "/fhir/DocumentReference/1",
     "MHD Minimal DocumentReference: 1..1, found 0"),
    (document(content=[{"attachment": {"contentType": "text/plain", "data": "YQ=="}}]),
     "/fhir/DocumentReference/1", "attachment.url: MHD Minimal DocumentReference"),
    (document(subject={"reference": "Group/g"}), "/fhir/DocumentReference/1",
     "only Reference(Patient)"),
    (document(meta={"profile": [MHD + "IHE.MHD.Comprehensive.DocumentReference"]}),
     "/fhir/DocumentReference/1", "context.sourcePatientInfo: MHD Comprehensive"),
    ({"resourceType": "List", "status": "current", "mode": "working", "date": "2024-01-01",
      "code": {"coding": [{"system": r4_profiles.MHD_LIST_TYPES, "code": "submissionset"}]},
      "extension": [{"url": r4_profiles.SOURCE_ID, "valueUri": "urn:oid:1.2"}]},
     "/fhir/List", "extension[sourceId]: MHD Minimal SubmissionSet"),
    ({"resourceType": "Patient", "name": [{"family": "F"}]}, "/fhir/Patient/1",
     "identifier: PDQm Patient: 1..*"),
    ({"resourceType": "Patient", "identifier": [{"value": "1"}], "name": [{"use": "official"}]},
     "/fhir/Patient/1", "iti-pdqm-patname"),
    ({"resourceType": "Bundle", "type": "searchset"}, "/fhir/Patient",
     "total: PDQm Query Patient Resource Response"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "targetIdentifier", "valueIdentifier": {"value": "1"}}]},
     "/fhir/Patient/$ihe-pix", "PIXm Query Parameters Out"),
    ({"resourceType": "Organization", "name": "N"}, "/fhir/Organization/1",
     "type: mCSD Organization: 1..*"),
    ({"resourceType": "PractitionerRole"}, "/fhir/PractitionerRole/1",
     "code: mCSD PractitionerRole: 1..*"),
    ({"resourceType": "Endpoint", "status": "active", "address": "mailto:a@b.example",
      "connectionType": {"code": "secure-email"}, "payloadType": [{"text": "any"}]},
     "/fhir/Endpoint/1", "managingOrganization: mCSD Endpoint: 1..1"),
    ({"resourceType": "AuditEvent", "type": {"system": r4_profiles.EVENT_TYPE, "code": "rest"},
      "subtype": [{"system": r4_profiles.RESTFUL, "code": "read"}], "action": "C",
      "recorded": "2024-01-01T00:00:00Z", "agent": [{"requestor": True}],
      "source": {"observer": {"display": "x"}}}, "/fhir/AuditEvent/1", "a read is action R"),
    (balp_read(agent=[]), "/fhir/AuditEvent/1", "agent[client]: BALP Read"),
    (balp_read(agent=[CLIENT_READ, {**SERVER_READ, "network": None}]), "/fhir/AuditEvent/1",
     "agent[server].network: BALP Read"),
    (balp_read(meta={"profile": [r4_profiles.BALP + "PatientRead"]}), "/fhir/AuditEvent/1",
     "entity[patient]: BALP PatientRead"),
    (balp_read(agent=[CLIENT_READ, SERVER_READ, {**USER, "network": {"address": "h"}}]),
     "/fhir/AuditEvent/1", "agent[user].network: BALP Read"),
    (balp_read(meta={"profile": [r4_profiles.BALP + "Query"]}), "/fhir/AuditEvent",
     "action: BALP Query (IHE.BasicAudit.Query): fixed E"),
    (balp_read(meta={"profile": [r4_profiles.BALP + "Query"]}, action="E",
               subtype=[{"system": r4_profiles.RESTFUL, "code": "search-type"}]),
     "/fhir/AuditEvent", "entity[query].role: BALP Query"),
    (balp_read(outcome="4"), "/fhir/AuditEvent/1", "outcome: BALP Read"),
    (balp_read(meta={"profile": [r4_profiles.BALP + "Create"]}, action="C",
               subtype=[{"system": r4_profiles.RESTFUL, "code": "create"}],
               agent=[{**CLIENT_READ, "type": coded(r4_profiles.DCM, "110153")},
                      {**SERVER_READ, "type": coded(r4_profiles.DCM, "110152")}, USER]),
     "/fhir/AuditEvent/1", "agent[user].type: BALP Create"),
])
def test_the_profile_rules_find_what_they_claim(resource: dict[str, Any], path: str,
                                                found: str) -> None:
    resource = {k: v for k, v in resource.items() if v is not None}
    assert any(found in p for p in problems(resource, path)), problems(resource, path)


def test_every_test_client_response_to_fhir_is_seen() -> None:
    """The transport hook: an invalid body on /fhir is collected; other paths are not."""
    def bad(request: Request) -> Response:
        return Response(b'{"resourceType": "Bundle", "type": "searchset", "entry": []}',
                        media_type=FHIR_JSON)

    app = Starlette(routes=[Route("/fhir/Patient", bad), Route("/portal", bad)])
    saved, COLLECTOR.findings = COLLECTOR.findings, []
    try:
        with TestClient(app) as client:
            client.get("/portal")
            client.get("/fhir/Patient", params={"family": "x"})
        seen = COLLECTOR.findings
    finally:
        COLLECTOR.findings = saved
    assert seen == ["GET /fhir/Patient?family=x → 200: Bundle.entry: an empty array (FHIR "
                    "JSON leaves out an element with no value)",
                    "GET /fhir/Patient?family=x → 200: Bundle.total: PDQm Query Patient "
                    "Resource Response (ITI-78): 1..1, found 0"]


# What CareVault claims in its CapabilityStatement's supportedProfile, and what the layer does
# with each claim: checked by support.r4_profiles, or stated as not checked (and why).
CHECKED_PROFILES = {
    MHD + "IHE.MHD.Comprehensive.DocumentReference": "MHD Minimal always; Comprehensive if claimed",
    "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Patient": "PDQm Patient",
    "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Practitioner": "mCSD",
    "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.PractitionerRole": "mCSD",
    "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Organization": "mCSD",
    **{r4_profiles.BALP + name: "BALP, where an event claims it"
       for name in ("Read", "PatientRead", "Query", "PatientQuery", "Create", "PatientCreate",
                    "Update", "PatientUpdate")},
    "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Endpoint": "mCSD",
}
NOT_CHECKED_PROFILES = {
    "https://profiles.ihe.net/ITI/PCF/StructureDefinition/IHE.PCF.consent":
        "PCF is outside issue #17's profile list (MHD, PDQm, PIXm, mCSD, BALP)",
}


def test_every_profile_the_server_claims_is_known_to_the_layer(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    claimed = {p for r in statement["rest"][0]["resource"] for p in r.get("supportedProfile", [])}
    assert claimed == set(CHECKED_PROFILES) | set(NOT_CHECKED_PROFILES)
