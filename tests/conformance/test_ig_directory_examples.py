"""The IHE PDQm, PIXm and mCSD implementation guides' published examples (see
``examples/{pdqm,pixm,mcsd}/README.md``), sent to the server as published, or with only the
patient reference and the affinity-domain codes substituted where a test says so: each is
accepted, or refused for the reason stated beside it.

CareVault's patient index is the national one: every Patient carries exactly one national
identification number (the affinity domain's master identifier). The IGs' example patients
come from test domains (``http://example.org/exampleSystem``; the Connectathon RED, GREEN and
BLUE domains ``urn:oid:1.3.6.1.4.1.21367.13.20.{1000,2000,3000}``) and carry no such number,
so, as published, a write of one is refused for that reason. Substituted, the example's own
domain identifier becomes the national one (its system and value: the affinity-domain code
and a matricule of the example's birth date), and the transactions run as the IGs show.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from starlette.testclient import TestClient

from carevault.api.fhir.formats import json_to_xml, xml_to_json
from carevault.bootstrap import Platform
from carevault.domain.national_id import make_luxembourg_national_id
from carevault.fhirmodel.directory import new_organization
from support.documents import FHIR_JSON

EXAMPLES = Path(__file__).parent / "examples"
FHIR_XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
NS = "{http://hl7.org/fhir}"
RED = "urn:oid:1.3.6.1.4.1.21367.13.20.1000"
GREEN = "urn:oid:1.3.6.1.4.1.21367.13.20.2000"
BLUE = "urn:oid:1.3.6.1.4.1.21367.13.20.3000"
EXAMPLE_SYSTEM = "http://example.org/exampleSystem"


def published(profile: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / profile / name).read_text(encoding="utf-8"))
    return loaded


def published_xml(name: str) -> dict[str, Any]:
    """A PIXm example published in XML, read through the server's own XML mapping."""
    body = (EXAMPLES / "pixm" / name).read_bytes()
    loaded: dict[str, Any] = json.loads(xml_to_json(body, max_depth=32))
    return loaded


def substituted(resource: dict[str, Any], domains: dict[tuple[str, str], tuple[str, str]],
                ) -> dict[str, Any]:
    """The resource with the identifiers of ``domains`` replaced (system and value), wherever
    they appear (``identifier``, ``link.other.identifier``); nothing else changes."""
    text = json.dumps(resource)
    for (system, value), (new_system, new_value) in domains.items():
        text = text.replace(json.dumps({"system": system, "value": value})[1:-1],
                            json.dumps({"system": new_system, "value": new_value})[1:-1])
    changed: dict[str, Any] = json.loads(text)
    return changed


def diagnostics(answer: Any) -> tuple[str, str]:
    issue = answer.json()["issue"][0]
    return issue.get("expression", [""])[0], str(issue.get("diagnostics", ""))


def assigning_authority(platform: Platform, registrar: TestClient, system: str, code: str,
                        ) -> None:
    """A hospital of the affinity domain that assigns ``system`` (the IG's GREEN or BLUE
    domain): registered once, as an operator would, so its numbers may be cross-referenced."""
    organization = new_organization(platform.directory.systems, identifier=f"ORG-{code}",
                                    name=f"Hospital {code}", kind="hospital",
                                    patient_id_system=system)
    answer = registrar.post("/fhir/Organization", json=organization, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text


def without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """What the client sent, as the server stores it: the logical id and the version
    metadata are the server's (FHIR RESTful API, create)."""
    kept = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in kept.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**kept, "meta": meta} if meta else {k: v for k, v in kept.items() if k != "meta"}


# --- PDQm 3.2.0 -----------------------------------------------------------------------------


def test_pdqm_patients_as_published_are_refused_for_their_missing_national_number(
        registrar: TestClient, platform: Platform) -> None:
    """Creating the PDQm example patients as published: refused (422) because CareVault's
    index is the national one, and neither carries a national identification number."""
    national = platform.directory.systems.national
    for name in ("Patient-ex-patient.json", "Patient-ex-patient-mothers-maiden-name.json"):
        answer = registrar.post("/fhir/Patient", json=published("pdqm", name), headers=FHIR_JSON)
        assert answer.status_code == 422, answer.text
        expression, words = diagnostics(answer)
        assert expression == "Patient.identifier" and national in words, words


def _pdqm_patients(registrar: TestClient, platform: Platform) -> str:
    national = platform.directory.systems.national
    domains = {
        (EXAMPLE_SYSTEM, "8675309"): (national, make_luxembourg_national_id(date(1923, 7, 25), 1)),
        (EXAMPLE_SYSTEM, "90210"): (national, make_luxembourg_national_id(date(1932, 7, 25), 2)),
    }
    sent = substituted(published("pdqm", "Patient-ex-patient.json"), domains)
    created = registrar.post("/fhir/Patient", json=sent, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert without_server_fields(created.json()) == without_server_fields(sent)
    other = substituted(published("pdqm", "Patient-ex-patient-mothers-maiden-name.json"), domains)
    second = registrar.post("/fhir/Patient", json=other, headers=FHIR_JSON)
    assert second.status_code == 201, second.text
    assert second.json()["extension"] == other["extension"]  # the mother's maiden name kept
    return str(created.json()["id"])


@pytest.mark.parametrize("encoding", ["json", "xml"])
def test_pdqm_query_answers_as_the_published_response_message(
        registrar: TestClient, client: TestClient, platform: Platform, encoding: str) -> None:
    """ITI-78 ``Patient?family=Schmidt`` (the query of the IG's Query Patient Resource
    Response example), after the two example patients are registered with their domain
    identifier substituted by the national one: the answer is the published message (a
    searchset of total 1 holding ex-patient as registered), in JSON and in XML."""
    patient_id = _pdqm_patients(registrar, platform)
    headers = FHIR_XML if encoding == "xml" else {}
    answer = client.get("/fhir/Patient", params={"family": "Schmidt"}, headers=headers)
    assert answer.status_code == 200, answer.text
    found = (json.loads(xml_to_json(answer.content, max_depth=64)) if encoding == "xml"
             else answer.json())
    expected = published("pdqm", "Bundle-ex-QueryPatientResourceResponseMessage.json")
    assert found["type"] == expected["type"] and found["total"] == expected["total"] == 1
    (entry,) = found["entry"]
    assert entry["resource"]["id"] == patient_id
    assert entry["fullUrl"].endswith(f"/Patient/{patient_id}")
    sent = without_server_fields(expected["entry"][0]["resource"])
    served = without_server_fields(entry["resource"])
    assert {k: v for k, v in served.items() if k != "identifier"} == {
        k: v for k, v in sent.items() if k != "identifier"}
    assert [i["system"] for i in served["identifier"]] == [platform.directory.systems.national]


def test_pdqm_match_input_is_refused_as_an_operation_not_offered(
        registrar: TestClient, client: TestClient) -> None:
    """The ITI-119 ``$match`` example input: refused (404, operation not defined) because
    CareVault's supplier does not implement the Patient Demographics Match option, and its
    CapabilityStatement does not list ``$match``. (Sent by a registrar, whose token may
    invoke operations on Patient; a professional's token, which may not, is refused before
    that, 403.)"""
    answer = registrar.post("/fhir/Patient/$match", headers=FHIR_JSON,
                            json=published("pdqm", "Parameters-ex-match-input-patient-only.json"))
    assert answer.status_code == 404, answer.text
    assert "operation $match is not defined" in answer.json()["issue"][0]["diagnostics"]
    operations = {o["name"] for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]
                  if r["type"] == "Patient" for o in r.get("operation", [])}
    assert "match" not in operations


# --- PIXm 3.1.0 -----------------------------------------------------------------------------


def test_pixm_feeds_as_published_are_refused_for_their_missing_national_number(
        registrar: TestClient, platform: Platform) -> None:
    """ITI-104 Add or Revise Patient, each domain's example patient as published
    (``PUT Patient?identifier=<its domain>|<its number>``): refused (422), none carrying a
    national identification number."""
    for name in ("Patient-MohrAlice-Red.json", "Patient-MohrAlice-Green.json",
                 "Patient-MohrAlice-Blue.json", "Patient-MaidenAlice-Red.json"):
        resource = published("pixm", name)
        (identifier,) = resource["identifier"]
        answer = registrar.put("/fhir/Patient", json=resource, headers=FHIR_JSON, params={
            "identifier": f"{identifier['system']}|{identifier['value']}"})
        assert answer.status_code == 422, (name, answer.text)
        assert diagnostics(answer)[0] == "Patient.identifier"


@pytest.fixture
def pixm(registrar: TestClient, platform: Platform) -> dict[tuple[str, str], tuple[str, str]]:
    """The RED domain played by the national one (RED's numbers substituted by matricules of
    the examples' birth date, 1958-01-30); GREEN and BLUE are hospitals of the affinity domain,
    registered as the assigning authorities of their numbers, which stay as published."""
    assigning_authority(platform, registrar, GREEN, "GREEN")
    assigning_authority(platform, registrar, BLUE, "BLUE")
    national = platform.directory.systems.national
    born = date(1958, 1, 30)
    return {(RED, "IHERED-994"): (national, make_luxembourg_national_id(born, 11)),
            (RED, "IHERED-m94"): (national, make_luxembourg_national_id(born, 12))}


def _feed(registrar: TestClient, resource: dict[str, Any], encoding: str = "json",
          system: str | None = None) -> Any:
    """ITI-104 Add, Revise or Resolve Duplicate: a conditional update on the resource's
    identifier of ``system`` (by default its first: the domain examples carry one)."""
    first = next(i for i in resource["identifier"] if system in (None, i["system"]))
    params = {"identifier": f"{first['system']}|{first['value']}"}
    if encoding == "xml":
        return registrar.put("/fhir/Patient", params=params, content=json_to_xml(resource),
                             headers=FHIR_XML)
    return registrar.put("/fhir/Patient", params=params, json=resource, headers=FHIR_JSON)


def _pix(client: TestClient, params: list[tuple[str, str]], xml: bool = False) -> dict[str, Any]:
    answer = client.get("/fhir/Patient/$ihe-pix", params=params,
                        headers=FHIR_XML if xml else {})
    assert answer.status_code == 200, answer.text
    if xml:
        assert etree.fromstring(answer.content).tag == f"{NS}Parameters"
        loaded: dict[str, Any] = json.loads(xml_to_json(answer.content, max_depth=32))
        return loaded
    loaded = answer.json()
    return loaded


def _query(request: dict[str, Any], domains: dict[tuple[str, str], tuple[str, str]],
           ) -> list[tuple[str, str]]:
    """An ITI-83 request example (a Parameters resource) as the query string ITI-83 sends,
    with the RED source identifier substituted."""
    params = []
    for parameter in request["parameter"]:
        value = parameter["valueString"]
        if parameter["name"] == "sourceIdentifier":
            system, _, number = value.partition("|")
            value = "|".join(domains.get((system, number), (system, number)))
        params.append((parameter["name"], value))
    return params


def _answered(parameters: dict[str, Any]) -> tuple[set[tuple[str, str]], set[str]]:
    identifiers = {(p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
                   for p in parameters["parameter"] if p["name"] == "targetIdentifier"}
    ids = {p["valueReference"]["reference"] for p in parameters["parameter"]
           if p["name"] == "targetId"}
    return identifiers, ids


def test_pixm_feed_query_and_resolve_duplicate_as_the_ig_shows(
        registrar: TestClient, client: TestClient, platform: Platform,
        pixm: dict[tuple[str, str], tuple[str, str]]) -> None:
    """ITI-104 then ITI-83, the IG's story of Alice Mohr, with RED substituted (fixture):

    - Add Mohr Alice (RED) and Maiden Alice (RED, a duplicate): created (201), the second in
      XML; Revise her as Mohr Alissa: updated (200); the consolidated Mohr Alice with her GREEN
      and BLUE numbers: updated (200).
    - ITI-83 ``pixm-request-mohralice-red-all``: answers her GREEN and BLUE numbers, as
      ``pixm-response-mohralice-red-all`` does. CareVault keeps one Patient per person (a
      golden record), so its one ``targetId`` is that Patient, where the IG's example
      answers one Patient resource per domain.
    - ``pixm-request-mohralice-red-to-blue`` (XML, ``_format`` in the query): its Parameters
      ask for BLUE and GREEN, and CareVault answers both, as ITI-83 §2:3.83.4.1.2.2 requires;
      the published response lists BLUE only, which is what its page's narrative query (BLUE
      alone) gets, and CareVault answers that too.
    - Resolve Duplicate Patient: Maiden Alice ``replaced-by`` the identifier of Mohr Alice
      (``link.other.identifier``, §2:3.104.4.2.2): merged (200); her number then resolves to
      Mohr Alice.
    """
    national = platform.directory.systems.national
    alice = _feed(registrar, substituted(published("pixm", "Patient-MohrAlice-Red.json"), pixm))
    assert alice.status_code == 201, alice.text
    maiden = _feed(registrar, substituted(published("pixm", "Patient-MaidenAlice-Red.json"),
                                          pixm), "xml")
    assert maiden.status_code == 201, maiden.text
    maiden_id = etree.fromstring(maiden.content).find(f"{NS}id").get("value")
    alissa = _feed(registrar, substituted(published("pixm", "Patient-MohrAlissa-Red.json"), pixm))
    assert alissa.status_code == 200 and alissa.json()["name"][0]["given"] == ["ALISSA"]
    consolidated = _feed(registrar, substituted(published("pixm", "Patient-MohrAlice.json"),
                                                pixm), system=national)
    assert consolidated.status_code == 200, consolidated.text
    alice_id = alice.json()["id"]
    assert consolidated.json()["id"] == alice_id

    red_all = _query(published_xml("pixm-request-mohralice-red-all.xml"), pixm)
    identifiers, ids = _answered(_pix(client, red_all))
    expected, _ = _answered(published_xml("pixm-response-mohralice-red-all.xml"))
    assert identifiers == expected == {(BLUE, "IHEBLUE-994"), (GREEN, "IHEGREEN-994")}
    assert ids == {f"Patient/{alice_id}"}

    to_blue = _query(published_xml("pixm-request-mohralice-red-to-blue.xml"), pixm)
    assert ("_format", "application/fhir+xml") in to_blue
    identifiers, _ = _answered(_pix(client, to_blue, xml=True))
    assert identifiers == {(BLUE, "IHEBLUE-994"), (GREEN, "IHEGREEN-994")}
    narrative = [p for p in to_blue if p != ("targetSystem", GREEN)]
    identifiers, _ = _answered(_pix(client, narrative, xml=True))
    expected, _ = _answered(published_xml("pixm-response-mohralice-red-to-blue.xml"))
    assert identifiers == expected == {(BLUE, "IHEBLUE-994")}

    resolved = _feed(registrar, substituted(
        published("pixm", "Patient-MohrMaidenResolvedByMohrMalice-Red.json"), pixm))
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["id"] == maiden_id and resolved.json()["active"] is False
    assert resolved.json()["link"] == [{"other": {"reference": f"Patient/{alice_id}"},
                                        "type": "replaced-by"}]
    maiden_number = "|".join(pixm[(RED, "IHERED-m94")])
    _, ids = _answered(_pix(client, [("sourceIdentifier", maiden_number)]))
    assert ids == {f"Patient/{alice_id}"}
    assert national == pixm[(RED, "IHERED-m94")][0]


def test_pixm_resolve_duplicate_naming_an_unknown_survivor_is_refused(
        registrar: TestClient, pixm: dict[tuple[str, str], tuple[str, str]]) -> None:
    """The Resolve Duplicate example before its survivor exists: Maiden Alice is there, Mohr
    Alice is not, so the ``replaced-by`` identifier names nobody: refused (422), nothing
    written."""
    maiden = _feed(registrar, substituted(published("pixm", "Patient-MaidenAlice-Red.json"),
                                          pixm))
    assert maiden.status_code == 201, maiden.text
    resolved = _feed(registrar, substituted(
        published("pixm", "Patient-MohrMaidenResolvedByMohrMalice-Red.json"), pixm))
    assert resolved.status_code == 422, resolved.text
    assert diagnostics(resolved)[0] == "Patient.link.other.identifier"
    after = registrar.get(f"/fhir/Patient/{maiden.json()['id']}").json()
    assert after["meta"]["versionId"] == "1" and after["active"] is True


# --- mCSD 4.0.1-current -----------------------------------------------------------------------

# name -> (status, the element named, why that is the right answer)
MCSD_REFUSED = {
    "Practitioner-MCSDPractitioner-Example.json": (
        422, "Practitioner.name",
        "the professional directory is searched by family name and keyed by the licence "
        "number; the example has only a name text"),
    "Organization-MCSDOrganization-ExamplePartner.json": (
        422, "Organization.identifier",
        "an organization is keyed by its identifier in the national organization registry; "
        "the example carries none"),
    "PractitionerRole-MCSDPractitionerRole-Example.json": (
        422, "PractitionerRole.code",
        "a role's profession is coded in the platform's profession code system, the one the "
        "authorization matrix decides on; the example's HL7 practitioner-role 'nurse' is not"),
}


@pytest.mark.parametrize("name", sorted(MCSD_REFUSED))
def test_mcsd_examples_as_published_are_refused_by_the_directory_for_the_stated_reason(
        registrar: TestClient, name: str) -> None:
    """mCSD's example resources written to the directory by a registrar (what a Data Source
    feeds): each refused, for the reason stated in ``MCSD_REFUSED``. CareVault's directory
    answers ITI-90 queries; its content comes from the registered authorities, keyed by the
    national registries' numbers."""
    status, expression, _why = MCSD_REFUSED[name]
    resource = published("mcsd", name)
    answer = registrar.post(f"/fhir/{resource['resourceType']}", json=resource,
                            headers=FHIR_JSON)
    assert answer.status_code == status, answer.text
    assert diagnostics(answer)[0] == expression, answer.text
