"""The MHD 4.2 Comprehensive Metadata element walk (`carevault.fhirmodel.mhd_walk`): for each
element of the SubmissionSet and the DocumentReference, a bundle carrying it as the IHE texts
define it is accepted (and what CareVault keeps is kept), or refused with an OperationOutcome
expression naming that element."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.mhd import parse_provide_bundle
from carevault.fhirmodel.mhd_walk import (
    AUTHOR_ORG,
    DESIGNATION_TYPE,
    IDENTIFIER_TYPES,
    INTENDED_RECIPIENT,
    LIST_TYPES,
)
from support.mhd import provide_bundle

JsonObject = dict[str, Any]
SNOMED = "http://snomed.info/sct"


def every_code(_valueset: str, _system: str, _code: str) -> bool:
    return True


def bundle() -> JsonObject:
    return provide_bundle("p1", "pr1", b"%PDF-1.7 hello")


def of(b: JsonObject, kind: str) -> JsonObject:
    return next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == kind)


def parsed(b: JsonObject) -> Any:
    return parse_provide_bundle(b, every_code, max_entries=50)


def refused(b: JsonObject) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parsed(b)
    return caught.value


Edit = Callable[[JsonObject, JsonObject, JsonObject], None]  # bundle, List, DocumentReference

REFUSED: dict[str, tuple[Edit, str]] = {
    # --- SubmissionSet (List) ---
    "modifierExtension": (
        lambda b, s, d: s.update(modifierExtension=[{"url": "urn:x", "valueBoolean": True}]),
        "List.modifierExtension"),
    "status": (lambda b, s, d: s.update(status="retired"), "List.status"),
    "mode": (lambda b, s, d: s.update(mode="snapshot"), "List.mode"),
    "date missing": (lambda b, s, d: s.pop("date"), "List.date"),
    "encounter": (lambda b, s, d: s.update(encounter={"reference": "Encounter/1"}),
                  "List.encounter"),
    "orderedBy": (lambda b, s, d: s.update(orderedBy={"text": "x"}), "List.orderedBy"),
    "entry.flag": (lambda b, s, d: s["entry"][0].update(flag={"text": "x"}),
                   "List.entry[0].flag"),
    "entry.deleted": (lambda b, s, d: s["entry"][0].update(deleted=False),
                      "List.entry[0].deleted"),
    "entry.date": (lambda b, s, d: s["entry"][0].update(date="2026-11-20"),
                   "List.entry[0].date"),
    "entry.item elsewhere": (
        lambda b, s, d: s["entry"].append({"item": {"reference": "List/folder-1"}}),
        "List.entry[1].item"),
    "sourceId twice": (lambda b, s, d: s["extension"].append(copy.deepcopy(s["extension"][0])),
                       "List.extension[sourceId]"),
    "sourceId as valueString": (
        lambda b, s, d: s["extension"][0].update(valueString="x", valueIdentifier=None)
        or s["extension"][0].pop("valueIdentifier"),
        "List.extension[sourceId].value[x]"),
    "designationType twice": (
        lambda b, s, d: s["extension"].extend(
            [{"url": DESIGNATION_TYPE, "valueCodeableConcept": {
                "coding": [{"system": SNOMED, "code": "225728007"}]}}] * 2),
        "List.extension[designationType]"),
    "designationType uncoded": (
        lambda b, s, d: s["extension"].append(
            {"url": DESIGNATION_TYPE, "valueCodeableConcept": {"text": "a letter"}}),
        "List.extension[designationType].valueCodeableConcept"),
    "intendedRecipient dangling": (
        lambda b, s, d: s["extension"].append(
            {"url": INTENDED_RECIPIENT, "valueReference": {"reference": "#nobody"}}),
        "List.extension[intendedRecipient].valueReference"),
    "intendedRecipient of a wrong type": (
        lambda b, s, d: s["extension"].append(
            {"url": INTENDED_RECIPIENT, "valueReference": {"reference": "Medication/1"}}),
        "List.extension[intendedRecipient].valueReference"),
    "source of a wrong type": (lambda b, s, d: s.update(source={"reference": "Group/1"}),
                               "List.source"),
    "source a literal Device": (lambda b, s, d: s.update(source={"reference": "Device/1"}),
                                "List.source"),
    "authorOrg not an Organization": (
        lambda b, s, d: s.update(source={
            "reference": "Practitioner/pr1",
            "extension": [{"url": AUTHOR_ORG, "valueReference": {"reference": "Patient/p1"}}]}),
        "List.source.extension[authorOrg].valueReference"),
    "two notes": (lambda b, s, d: s.update(note=[{"text": "a"}, {"text": "b"}]), "List.note"),
    "contained unreferenced": (
        lambda b, s, d: s.update(contained=[{"resourceType": "Practitioner", "id": "x"}]),
        "List.contained[0]"),
    "folder": (
        lambda b, s, d: b["entry"].append({
            "fullUrl": "urn:uuid:folder", "request": {"method": "POST", "url": "List"},
            "resource": {"resourceType": "List", "status": "current", "mode": "working",
                         "code": {"coding": [{"system": LIST_TYPES, "code": "folder"}]},
                         "subject": {"reference": "Patient/p1"},
                         "entry": [{"item": {"reference": s["entry"][0]["item"]["reference"]}}]}}),
        "Bundle.entry[3].resource.code"),
    # --- DocumentReference ---
    "DocumentReference.modifierExtension": (
        lambda b, s, d: d.update(modifierExtension=[{"url": "urn:x", "valueBoolean": True}]),
        "DocumentReference.modifierExtension"),
    "docStatus": (lambda b, s, d: d.update(docStatus="final"), "DocumentReference.docStatus"),
    "custodian": (lambda b, s, d: d.update(custodian={"reference": "Organization/o"}),
                  "DocumentReference.custodian"),
    "authenticator": (lambda b, s, d: d.update(authenticator={"reference": "Practitioner/pr1"}),
                      "DocumentReference.authenticator"),
    "context.related": (
        lambda b, s, d: d["context"].update(related=[{"identifier": {
            "system": "urn:ietf:rfc:3986", "value": "urn:uuid:7d5bb8ac"}}]),
        "DocumentReference.context.related"),
    "context.encounter": (
        lambda b, s, d: d["context"].update(encounter=[{"reference": "Encounter/1"}]),
        "DocumentReference.context.encounter"),
    "two categories": (lambda b, s, d: d["category"].append(copy.deepcopy(d["category"][0])),
                       "DocumentReference.category"),
    "uniqueId differs": (
        lambda b, s, d: d.update(identifier=[{
            "type": {"coding": [{"system": IDENTIFIER_TYPES, "code": "uniqueId"}]},
            "system": "urn:ietf:rfc:3986", "value": "urn:oid:9.9.9"}]),
        "DocumentReference.identifier[0]"),
    "contained author dangling": (lambda b, s, d: d["author"].append({"reference": "#ghost"}),
                                  "DocumentReference.author[1]"),
    "sourcePatientInfo not a Patient": (
        lambda b, s, d: d.update(contained=[{"resourceType": "Practitioner", "id": "sp"}])
        or d["context"].update(sourcePatientInfo={"reference": "#sp"}),
        "DocumentReference.context.sourcePatientInfo"),
    "DocumentReference contained unreferenced": (
        lambda b, s, d: d.update(contained=[{"resourceType": "Patient", "id": "lost"}]),
        "DocumentReference.contained[0]"),
    "relatesTo appends": (
        lambda b, s, d: d.update(relatesTo=[{"code": "appends",
                                             "target": {"reference": "DocumentReference/x"}}]),
        "DocumentReference.relatesTo.code"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_unsupported_or_wrong_element_is_refused_by_name(name: str) -> None:
    edit, expression = REFUSED[name]
    b = bundle()
    edit(b, of(b, "List"), of(b, "DocumentReference"))
    error = refused(b)
    assert error.expression == expression, (name, error.expression, str(error))


def test_the_bundle_as_built_is_accepted() -> None:
    submission = parsed(bundle())
    assert submission.details == {}
    assert submission.author_claims == ()


def test_comprehensive_submission_set_elements_are_kept() -> None:
    b = bundle()
    s = of(b, "List")
    designation = {"url": DESIGNATION_TYPE, "valueCodeableConcept": {
        "coding": [{"system": SNOMED, "code": "225728007"}]}}
    recipient = {"url": INTENDED_RECIPIENT, "valueReference": {"reference": "#rcpt"}}
    s["extension"] += [designation, recipient]
    s["contained"] = [
        {"resourceType": "Practitioner", "id": "rcpt",
         "telecom": [{"system": "email", "value": "a@b.lu"}]},
        {"resourceType": "Practitioner", "id": "auth"},
        {"resourceType": "Organization", "id": "org", "name": "my Hospital"}]
    s["source"] = {"reference": "#auth", "extension": [
        {"url": AUTHOR_ORG, "valueReference": {"reference": "#org"}}]}
    s["title"] = "Hello World SubmissionSet"
    s["note"] = [{"text": "Comments"}]
    submission = parsed(b)
    assert submission.details["extension"] == [designation, recipient]
    assert [c["id"] for c in submission.details["contained"]] == ["rcpt", "auth", "org"]
    assert submission.details["source"]["reference"] == "#auth"
    assert submission.details["title"] == "Hello World SubmissionSet"
    assert submission.details["note"] == [{"text": "Comments"}]
    assert submission.author_claims == ()  # contained authors describe; nothing to check


def test_a_literal_submission_set_author_is_a_claim_the_service_checks() -> None:
    b = bundle()
    of(b, "List")["source"] = {"reference": "Practitioner/pr1", "extension": [
        {"url": AUTHOR_ORG, "valueReference": {"reference": "Organization/o1"}}]}
    claims = parsed(b).author_claims
    assert [(c.kind, c.id) for c in claims] == [("Practitioner", "pr1"), ("Organization", "o1")]


def test_uniqueid_typed_identifier_wins_over_entry_uuid() -> None:
    b = bundle()
    s = of(b, "List")
    s["identifier"] = [
        {"type": {"coding": [{"system": IDENTIFIER_TYPES, "code": "entryUUID"}]},
         "system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c287d32-01e3-4d87-9953-9fcc9404eb21"},
        {"type": {"coding": [{"system": IDENTIFIER_TYPES, "code": "uniqueId"}]},
         "use": "usual", "system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.99"}]
    assert parsed(b).master_identifier == "urn:oid:1.2.3.99"


def test_contained_authors_and_source_patient_info_are_accepted() -> None:
    """The Comprehensive (contained) form: the author is the caller; sourcePatientInfo is the
    source's view of the patient."""
    b = bundle()
    d = of(b, "DocumentReference")
    d["contained"] = [{"resourceType": "Practitioner", "id": "a"},
                      {"resourceType": "Organization", "id": "o"},
                      {"resourceType": "Patient", "id": "sp", "name": [{"family": "Schmidt"}]}]
    d["author"] = [{"reference": "#o"}, {"reference": "#a"}]
    d["context"]["sourcePatientInfo"] = {"reference": "#sp"}
    document = parsed(b).documents[0]
    assert document.author_practitioner_id is None
    assert document.author_organization_id is None


def test_source_id_from_mhd_4_0_as_value_uri_is_still_read() -> None:
    b = bundle()
    of(b, "List")["extension"] = [{
        "url": "http://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
        "valueUri": "urn:oid:1.2.3.4"}]
    assert parsed(b).source_id == "urn:oid:1.2.3.4"
