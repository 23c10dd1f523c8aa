"""The IHE profiles a CareVault FHIR response must meet, as small explicit rules with their source.

Only what the implementation guides state as cardinalities, fixed values and invariants is here
(their FSH sources, at the release named), never a guess at intent. Which profile applies:

- every DocumentReference: MHD Minimal DocumentReference; the Comprehensive rules on top when the
  resource claims ``IHE.MHD.Comprehensive.DocumentReference`` (or its UnContained parent) in
  ``meta.profile`` (a document published with minimal metadata cannot be served as
  comprehensive, and MHD lets a Document Responder return either);
- every List coded ``submissionset``: MHD Minimal SubmissionSet, and the Comprehensive rules
  when claimed;
- every Patient served (not contained): PDQm Patient; a Patient search's Bundle: PDQm ITI-78
  Query Patient Resource Response;
- ``Patient/$ihe-pix``'s answer: PIXm Query Parameters Out;
- every Organization, Practitioner, PractitionerRole, Endpoint: mCSD;
- every AuditEvent: the BALP RESTful basics; the whole of each BALP profile the event claims in
  ``meta.profile`` (Read, Query, Create, Update and their Patient variants).

Sources: IHE ITI MHD 4.2.3 (input/fsh/documentReference.fsh, submissionSet.fsh), PDQm 3.1.0
(input/fsh/PDQmPatient.fsh), PIXm 3.0.4 (input/fsh/PIXm.fsh), mCSD 4.0.0
(input/fsh/organization.fsh, practitioner.fsh, endpoint.fsh), BALP 1.1.x (input/fsh/PatientRead.fsh,
PatientQuery.fsh, PatientCreate.fsh, PatientUpdate.fsh).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

JsonObject = dict[str, Any]

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
COMPREHENSIVE_DOCREF = {
    MHD + "IHE.MHD.Comprehensive.DocumentReference",
    MHD + "IHE.MHD.UnContained.Comprehensive.DocumentReference",
}
CONTAINED_DOCREF = MHD + "IHE.MHD.Comprehensive.DocumentReference"
COMPREHENSIVE_SUBMISSION = {
    MHD + "IHE.MHD.Comprehensive.SubmissionSet",
    MHD + "IHE.MHD.UnContained.Comprehensive.SubmissionSet",
}
CONTAINED_SUBMISSION = MHD + "IHE.MHD.Comprehensive.SubmissionSet"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SOURCE_ID = MHD + "ihe-sourceId"
DESIGNATION_TYPE = MHD + "ihe-designationType"
INTENDED_RECIPIENT = MHD + "ihe-intendedRecipient"
AUTHOR_ORG = MHD + "ihe-authorOrg"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def path_kind(path: str) -> str:
    """The part of a /fhir path that decides which rules apply: ``Patient?`` for a search,
    ``Patient/$ihe-pix`` for an operation, ``Patient/{id}`` for a read."""
    parts = [p for p in path.split("/")[2:] if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0] if parts[0].startswith("$") or parts[0] == "metadata" else f"{parts[0]}?"
    operation = next((p for p in parts[1:] if p.startswith("$")), None)
    return f"{parts[0]}/{operation}" if operation else f"{parts[0]}/{{id}}"


def check(path: str, resource: JsonObject) -> list[str]:
    kind = path_kind(path)
    kind_of = resource.get("resourceType")
    where = str(kind_of)
    problems: list[str] = []
    for at, served in _served(resource, where):
        problems += _by_type(served, at)
    if kind == "Patient?" and kind_of == "Bundle":
        problems += _pdqm_search(resource, where)
    if kind == "Patient/$ihe-pix" and kind_of == "Parameters":
        problems += _pixm_out(resource, where)
    return problems


def _served(resource: JsonObject, where: str) -> Iterator[tuple[str, JsonObject]]:
    """The resources served as such: this one, a Bundle's entries, a Parameters' resources (not
    contained ones, which are parts of their container)."""
    yield where, resource
    if resource.get("resourceType") == "Bundle":
        for index, entry in enumerate(resource.get("entry") or []):
            if isinstance(entry.get("resource"), dict):
                yield from _served(entry["resource"], f"{where}.entry[{index}].resource")
    if resource.get("resourceType") == "Parameters":
        for index, parameter in enumerate(resource.get("parameter") or []):
            if isinstance(parameter.get("resource"), dict):
                yield from _served(parameter["resource"], f"{where}.parameter[{index}].resource")


def _by_type(resource: JsonObject, where: str) -> list[str]:
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        return list(_mhd_document_reference(resource, where))
    if kind == "List" and _coded(resource.get("code"), MHD_LIST_TYPES, "submissionset"):
        return list(_mhd_submission_set(resource, where))
    if kind == "Patient":
        return list(_pdqm_patient(resource, where))
    if kind in ("Organization", "Practitioner", "PractitionerRole", "Endpoint"):
        return list(_mcsd(resource, where))
    if kind == "AuditEvent":
        return list(_balp(resource, where))
    return []


# --- helpers -----------------------------------------------------------------------------------


def _coded(concept: Any, system: str, code: str) -> bool:
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return any(c.get("system") == system and c.get("code") == code for c in codings)


def _coding_is(coding: Any, system: str, code: str) -> bool:
    return isinstance(coding, dict) and coding.get("system") == system and coding.get(
        "code") == code


def _profiles(resource: JsonObject) -> set[str]:
    return {p.split("|")[0] for p in (resource.get("meta") or {}).get("profile", [])}


def _count(value: Any) -> int:
    if value is None:
        return 0
    return len(value) if isinstance(value, list) else 1


def _card(resource: JsonObject, element: str, low: int, high: int | None, where: str,
          rule: str) -> Iterator[str]:
    count = _count(resource.get(element))
    if count < low or (high is not None and count > high):
        bound = f"{low}..{'*' if high is None else high}"
        yield f"{where}.{element}: {rule}: {bound}, found {count}"


def _extensions(resource: JsonObject, url: str) -> list[JsonObject]:
    return [e for e in resource.get("extension") or [] if e.get("url") == url]


def _references_patient(reference: Any) -> bool:
    text = reference.get("reference", "") if isinstance(reference, dict) else ""
    return not text or bool(re.match(r"^(.*/)?Patient/[^/]+(/_history/.+)?$|^#|^urn:", text))


# --- MHD 4.2.3 ---------------------------------------------------------------------------------


def _mhd_document_reference(doc: JsonObject, where: str) -> Iterator[str]:
    rule = "MHD Minimal DocumentReference"
    yield from _card(doc, "modifierExtension", 0, 0, where, rule)
    yield from _card(doc, "masterIdentifier", 1, 1, where, rule)
    yield from _card(doc, "docStatus", 0, 0, where, rule)
    yield from _card(doc, "content", 1, 1, where, rule)
    # DocumentReferenceStats (required) has current and superseded only: "entered-in-error ...
    # does not map" to XDS. CareVault keeps a retracted document visible to its author as
    # entered-in-error (an R4 status, outside MHD's model): that one is R4, not MHD.
    if doc.get("status") not in ("current", "superseded", "entered-in-error"):
        yield (f"{where}.status: {rule}: from DocumentReferenceStats (required): current or "
               f"superseded, found {doc.get('status')!r}")
    if not _references_patient(doc.get("subject")):
        yield f"{where}.subject: {rule}: only Reference(Patient)"
    for index, content in enumerate(doc.get("content") or []):
        attachment = content.get("attachment") or {}
        at = f"{where}.content[{index}]"
        yield from _card(attachment, "contentType", 1, 1, f"{at}.attachment", rule)
        yield from _card(attachment, "url", 1, 1, f"{at}.attachment", rule)
        yield from _card(attachment, "data", 0, 0, f"{at}.attachment", rule)
    claimed = _profiles(doc)
    if not claimed & COMPREHENSIVE_DOCREF:
        return
    rule = "MHD Comprehensive DocumentReference"
    for element in ("type", "category", "subject"):
        yield from _card(doc, element, 1, 1, where, rule)
    yield from _card(doc, "securityLabel", 1, None, where, rule)
    yield from _card(doc, "context", 1, 1, where, rule)
    for index, content in enumerate(doc.get("content") or []):
        at = f"{where}.content[{index}]"
        attachment = content.get("attachment") or {}
        for element in ("language", "creation"):
            yield from _card(attachment, element, 1, 1, f"{at}.attachment", rule)
        yield from _card(content, "format", 1, 1, at, rule)
    context = doc.get("context") or {}
    for element in ("facilityType", "practiceSetting", "sourcePatientInfo"):
        yield from _card(context, element, 1, 1, f"{where}.context", rule)
    if CONTAINED_DOCREF in claimed:
        contained = [
            *(doc.get("author") or []),
            *([doc["authenticator"]] if "authenticator" in doc else []),
            *([context["sourcePatientInfo"]] if "sourcePatientInfo" in context else []),
        ]
        for reference in contained:
            if not str(reference.get("reference", "")).startswith("#"):
                yield (f"{where}: {rule}: author, authenticator and context.sourcePatientInfo "
                       f"are contained (aggregation #contained), found {reference}")


def _mhd_submission_set(lst: JsonObject, where: str) -> Iterator[str]:
    rule = "MHD Minimal SubmissionSet"
    source_ids = _extensions(lst, SOURCE_ID)
    if len(source_ids) != 1 or "valueIdentifier" not in source_ids[0]:
        yield (f"{where}.extension[sourceId]: {rule}: 1..1, with valueIdentifier 1..1 "
               f"(ihe-sourceId), found {source_ids}")
    if len(_extensions(lst, DESIGNATION_TYPE)) > 1:
        yield f"{where}.extension[designationType]: {rule}: 0..1"
    for extension in _extensions(lst, INTENDED_RECIPIENT):
        if "valueReference" not in extension:
            yield f"{where}.extension[intendedRecipient]: {rule}: valueReference 1..1"
    for extension in _extensions(lst.get("source") or {}, AUTHOR_ORG):
        if "valueReference" not in extension:
            yield f"{where}.source.extension[authorOrg]: {rule}: valueReference 1..1"
    if lst.get("status") != "current":
        yield f"{where}.status: {rule}: fixed current, found {lst.get('status')!r}"
    if lst.get("mode") != "working":
        yield f"{where}.mode: {rule}: fixed working, found {lst.get('mode')!r}"
    yield from _card(lst, "date", 1, 1, where, rule)
    for element in ("encounter", "orderedBy", "emptyReason"):
        yield from _card(lst, element, 0, 0, where, rule)
    yield from _card(lst, "note", 0, 1, where, rule)
    if not _references_patient(lst.get("subject")):
        yield f"{where}.subject: {rule}: only Reference(Patient)"
    for index, entry in enumerate(lst.get("entry") or []):
        for element in ("flag", "deleted", "date"):
            yield from _card(entry, element, 0, 0, f"{where}.entry[{index}]", rule)
    claimed = _profiles(lst)
    if not claimed & COMPREHENSIVE_SUBMISSION:
        return
    rule = "MHD Comprehensive SubmissionSet"
    yield from _card(lst, "subject", 1, 1, where, rule)
    if len(_extensions(lst, DESIGNATION_TYPE)) != 1:
        yield f"{where}.extension[designationType]: {rule}: 1..1"
    source = lst.get("source") or {}
    if CONTAINED_SUBMISSION in claimed and source and not str(
            source.get("reference", "")).startswith("#"):
        yield f"{where}.source: {rule}: contained (aggregation #contained)"


# --- PDQm 3.1.0 --------------------------------------------------------------------------------


def _pdqm_patient(patient: JsonObject, where: str) -> Iterator[str]:
    rule = "PDQm Patient"
    yield from _card(patient, "modifierExtension", 0, 0, where, rule)
    yield from _card(patient, "implicitRules", 0, 0, where, rule)
    yield from _card(patient, "identifier", 1, None, where, rule)
    for index, identifier in enumerate(patient.get("identifier") or []):
        for element in ("system", "value"):
            yield from _card(identifier, element, 1, 1, f"{where}.identifier[{index}]", rule)
    for index, name in enumerate(patient.get("name") or []):
        named = any(k in name for k in ("family", "given", "text"))
        absent = bool(_extensions(name, DATA_ABSENT))
        if named == absent:
            yield (f"{where}.name[{index}]: {rule}: iti-pdqm-patname: family, given or text, "
                   "xor a data-absent-reason extension")
    if "link" in patient and "active" not in patient:
        yield f"{where}: {rule}: iti-pdqm-linkstatus: link present implies active present"


def _pdqm_search(bundle: JsonObject, where: str) -> Iterator[str]:
    rule = "PDQm Query Patient Resource Response (ITI-78)"
    if bundle.get("type") != "searchset":
        yield f"{where}.type: {rule}: fixed searchset, found {bundle.get('type')!r}"
    yield from _card(bundle, "total", 1, 1, where, rule)
    for index, entry in enumerate(bundle.get("entry") or []):
        yield from _card(entry, "fullUrl", 1, 1, f"{where}.entry[{index}]", rule)


# --- PIXm 3.0.4 --------------------------------------------------------------------------------


def _pixm_out(parameters: JsonObject, where: str) -> Iterator[str]:
    rule = "PIXm Query Parameters Out"
    for index, parameter in enumerate(parameters.get("parameter") or []):
        at = f"{where}.parameter[{index}]"
        if parameter.get("name") == "targetId":
            value = parameter.get("valueReference")
            if not isinstance(value, dict) or not value.get("reference"):
                yield f"{at}: {rule}: targetId is a valueReference with reference 1..1"
            elif not _references_patient(value):
                yield f"{at}: {rule}: targetId is a Reference(Patient)"
        if parameter.get("name") == "targetIdentifier":
            value = parameter.get("valueIdentifier")
            if not isinstance(value, dict) or not value.get("system") or not value.get("value"):
                yield f"{at}: {rule}: targetIdentifier is a valueIdentifier with system and value"
            elif "assigner" in value and not (value["assigner"] or {}).get("display"):
                yield f"{at}: {rule}: targetIdentifier.assigner has display 1..1"


# --- mCSD 4.0.0 --------------------------------------------------------------------------------


def _mcsd(resource: JsonObject, where: str) -> Iterator[str]:
    kind = resource["resourceType"]
    rule = f"mCSD {kind}"
    yield from _card(resource, "implicitRules", 0, 0, where, rule)
    yield from _card(resource, "modifierExtension", 0, 0, where, rule)
    if kind == "Organization":
        yield from _card(resource, "type", 1, None, where, rule)
        yield from _card(resource, "name", 1, 1, where, rule)
    elif kind == "Practitioner":
        yield from _card(resource, "name", 1, None, where, rule)
    elif kind == "Endpoint":
        # IHE.mCSD.Endpoint: managingOrganization 1..1 (R4 itself has connectionType 1..1,
        # payloadType 1..* and address 1..1, which the models check).
        yield from _card(resource, "managingOrganization", 1, 1, where, rule)
    else:
        yield from _card(resource, "code", 1, None, where, rule)


# --- BALP 1.1.x -------------------------------------------------------------------------------


BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
BALP_READ = BALP + "Read"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


class _Balp:
    """One BALP RESTful profile as its FSH states it (input/fsh/PatientRead.fsh,
    PatientQuery.fsh, PatientCreate.fsh, PatientUpdate.fsh)."""

    def __init__(self, name: str, subtypes: set[str], action: str, client: str, server: str,
                 users: set[str], entity: str) -> None:
        self.name = name
        self.subtypes = subtypes  # the restful-interaction codes its subtype slices allow
        self.action = action
        self.client = client  # the DCM code of agent[client]
        self.server = server
        self.users = users  # the v3-ParticipationType codes agent[user].type may take
        self.entity = entity  # "data" or "query"


_BALP_PROFILES = {
    "Read": _Balp("Read", {"read", "vread"}, "R", "110152", "110153", {"IRCP"}, "data"),
    "Query": _Balp("Query", {"search", "search-type", "search-system"}, "E", "110153",
                   "110152", {"IRCP"}, "query"),
    "Create": _Balp("Create", {"create"}, "C", "110153", "110152", {"AUT", "INF", "CST"},
                    "data"),
    "Update": _Balp("Update", {"update", "patch"}, "U", "110153", "110152",
                    {"AUT", "INF", "CST"}, "data"),
}
# RestObjectRoles (required binding of entity[data].role): Domain Resource, Report, Job.
_REST_OBJECT_ROLES = {"4", "3", "20"}


def _balp(event: JsonObject, where: str) -> Iterator[str]:
    """The BALP basics every RESTful AuditEvent meets (type rest with a restful-interaction
    subtype, a read's action R, the Patient entity a Reference(Patient)); the whole of each
    BALP profile the event claims."""
    rule = "BALP RESTful pattern"
    rest = _coding_is(event.get("type"), EVENT_TYPE, "rest")
    subtypes = [c for c in event.get("subtype") or [] if c.get("system") == RESTFUL]
    if rest and not subtypes:
        yield f"{where}.subtype: {rule}: a RESTful event has a restful-interaction subtype"
    if any(c.get("code") in ("read", "vread") for c in subtypes) and event.get("action") != "R":
        yield f"{where}.action: {rule}: a read is action R, found {event.get('action')!r}"
    for index, entity in enumerate(event.get("entity") or []):
        if _coding_is(entity.get("role"), OBJECT_ROLE, "1"):
            what = entity.get("what")
            if not isinstance(what, dict) or not _references_patient(what) or not what.get(
                    "reference"):
                yield (f"{where}.entity[{index}].what: BALP PatientRead: the Patient entity's "
                       "what is a Reference(Patient)")
    for claimed in sorted(_profiles(event)):
        if not claimed.startswith(BALP):
            continue
        name = claimed.removeprefix(BALP)
        base = _BALP_PROFILES.get(name.removeprefix("Patient"))
        if base is None:
            yield f"{where}.meta.profile: {claimed} is not a BALP profile the layer knows"
            continue
        yield from _balp_profile(event, where, base, patient=name.startswith("Patient"))


def _balp_profile(event: JsonObject, where: str, spec: _Balp, *, patient: bool) -> Iterator[str]:
    rule = f"BALP {'Patient' if patient else ''}{spec.name} (IHE.BasicAudit."
    rule += f"{'Patient' if patient else ''}{spec.name})"
    if not _coding_is(event.get("type"), EVENT_TYPE, "rest"):
        yield f"{where}.type: {rule}: fixed audit-event-type#rest"
    yield from _card(event, "subtype", 1, None, where, rule)
    for coding in event.get("subtype") or []:
        if coding.get("system") == RESTFUL and coding.get("code") not in spec.subtypes:
            yield f"{where}.subtype: {rule}: {coding.get('code')!r} is not {sorted(spec.subtypes)}"
    if event.get("action") != spec.action:
        yield f"{where}.action: {rule}: fixed {spec.action}, found {event.get('action')!r}"
    yield from _card(event, "recorded", 1, 1, where, rule)
    if event.get("outcome") != "0":
        yield f"{where}.outcome: {rule}: fixed 0 (Success), found {event.get('outcome')!r}"
    agents = event.get("agent") or []
    yield from _card(event, "agent", 2, None, where, rule)
    for role, code in (("client", spec.client), ("server", spec.server)):
        found = [a for a in agents if _coded(a.get("type"), DCM, code)]
        if len(found) != 1:
            yield f"{where}.agent[{role}]: {rule}: 1..1 (type DCM#{code}), found {len(found)}"
            continue
        for element, low, high in (("who", 1, 1), ("network", 1, 1), ("media", 0, 0)):
            yield from _card(found[0], element, low, high, f"{where}.agent[{role}]", rule)
    users = [a for a in agents if any(_coded(a.get("type"), PARTICIPATION, c)
                                      for c in {"IRCP", "AUT", "INF", "CST"})]
    if len(users) > 1:
        yield f"{where}.agent[user]: {rule}: 0..1, found {len(users)}"
    for user in users:
        at = f"{where}.agent[user]"
        if not any(_coded(user.get("type"), PARTICIPATION, c) for c in spec.users):
            yield f"{at}.type: {rule}: one of {sorted(spec.users)}"
        yield from _card(user, "who", 1, 1, at, rule)
        if user.get("requestor") is not True:
            yield f"{at}.requestor: {rule}: fixed true"
        for element in ("media", "network"):
            yield from _card(user, element, 0, 0, at, rule)
    entities = event.get("entity") or []
    yield from _card(event, "entity", 2 if patient else 1, None, where, rule)
    for index, entity in enumerate(entities):
        if _coding_is(entity.get("type"), BALP_ENTITY_TYPE, "XrequestId"):
            value = ((entity.get("what") or {}).get("identifier") or {}).get("value")
            if not value:
                yield (f"{where}.entity[{index}].what.identifier.value: {rule}: the "
                       "transaction entity's X-Request-Id 1..1")
    objects = [e for e in entities if _coding_is(e.get("type"), ENTITY_TYPE, "2")]
    if len(objects) != 1:
        yield (f"{where}.entity[{spec.entity}]: {rule}: 1..1 (type audit-entity-type#2), "
               f"found {len(objects)}")
    else:
        at = f"{where}.entity[{spec.entity}]"
        role = objects[0].get("role")
        if spec.entity == "query":
            if not _coding_is(role, OBJECT_ROLE, "24"):
                yield f"{at}.role: {rule}: fixed object-role#24 (Query)"
            for element, low, high in (("what", 0, 0), ("lifecycle", 0, 0), ("query", 1, 1),
                                       ("detail", 0, 0)):
                yield from _card(objects[0], element, low, high, at, rule)
        else:
            if not (isinstance(role, dict) and role.get("system") == OBJECT_ROLE
                    and role.get("code") in _REST_OBJECT_ROLES):
                yield f"{at}.role: {rule}: from RestObjectRoles (4, 3, 20), required"
            yield from _card(objects[0], "what", 1, 1, at, rule)
    if patient:
        people = [e for e in entities if _coding_is(e.get("type"), ENTITY_TYPE, "1")
                  and _coding_is(e.get("role"), OBJECT_ROLE, "1")]
        if len(people) != 1:
            yield (f"{where}.entity[patient]: {rule}: 1..1 (type audit-entity-type#1, role "
                   f"object-role#1), found {len(people)}")
        elif not (people[0].get("what") or {}).get("reference", "").startswith("Patient/"):
            yield f"{where}.entity[patient].what: {rule}: 1..1 Reference(Patient)"
