"""An audit entry as a FHIR R4 ``AuditEvent``, following IHE Basic Audit Log Patterns (BALP).

The entry's canonical bytes stay the evidence; this is a rendering of them for FHIR clients and
for the ATNA audit repository. The id is ``<stream>-<leaf index>``, so any AuditEvent can be
traced back to its leaf and proven with an inclusion proof.

A RESTful request's event has BALP's agents and entities (BALP 1.1.3, input/fsh/PatientRead.fsh,
PatientQuery.fsh, PatientCreate.fsh, PatientUpdate.fsh):

- the **client** (the OAuth client the token was issued to, at its network address) and the
  **server** (this FHIR base, at its URL), typed with DICOM's Source / Destination Role IDs the
  way BALP does: for a read the client is the destination (DCM 110152) and the server the
  source (110153); for a query, a create and an update the other way round (the request flows
  from the client);
- the **user** (who acted, from the token), the requestor: information recipient (IRCP) when
  reading or searching, author (AUT) when writing; their CareVault role in ``role``;
- entities: the **patient** (audit-entity-type#1, object-role#1), the **data** read or written
  (audit-entity-type#2, object-role#4 Domain Resource, ``what`` the resource), or the **query**
  (audit-entity-type#2, object-role#24, the search in base64 in ``query``), and the
  **transaction** (BALP's XrequestId: the request id that every entry of the request shares).

A search is rendered with action E (Execute: "perform a query/search operation", FHIR R4
AuditEventAction), as BALP Query fixes it; the log itself records it as a read.

An event claims the BALP profile it meets in ``meta.profile`` (``balp_profiles``): only a
successful read, search, create or update whose client and server are both known. A refused or
failed request, an operation or a login is rendered the same way but claims nothing.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from carevault.domain.audit import AuditRecord

JsonObject = dict[str, Any]

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
CAREVAULT = "https://carevault.lu/fhir/CodeSystem/audit"

_REST = {
    "read",
    "vread",
    "history-instance",
    "search-type",
    "create",
    "update",
    "conditional-update",
    "operation",
    "capabilities",
}

# The BALP profile of each successful RESTful interaction, by its subtype code.
_PROFILES = {
    "read": "Read",
    "vread": "Read",
    "search-type": "Query",
    "create": "Create",
    "update": "Update",
}

_SOURCE_ROLE = {"system": DICOM, "code": "110153", "display": "Source Role ID"}
_DESTINATION_ROLE = {"system": DICOM, "code": "110152", "display": "Destination Role ID"}


def audit_event(
    stream: str, leaf_index: int, record: AuditRecord, server: str | None = None
) -> JsonObject:
    """The entry as an AuditEvent; ``server`` is the FHIR base that served the request (the
    BALP server agent), None where the caller does not know it."""
    if record.kind == "authentication":
        # DCM 110114 "User Authentication", subtype 110122 "Login" (BALP, DICOM PS3.15 A.5).
        event_type = {"system": DICOM, "code": "110114", "display": "User Authentication"}
        subtype = [
            {"system": DICOM, "code": "110122", "display": "Login"},
            {"system": CAREVAULT, "code": record.interaction},
        ]
    elif record.interaction in _REST:
        event_type = {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
        subtype = [{"system": RESTFUL, "code": _rest_code(record)}]
    else:
        # DCM 110100 "Application Activity" for operator and security actions.
        event_type = {"system": DICOM, "code": "110100", "display": "Application Activity"}
        subtype = [{"system": CAREVAULT, "code": record.interaction.replace(" ", "-")}]
    rest = record.interaction in _REST and record.kind != "authentication"
    action = "E" if rest and _rest_code(record) == "search-type" else record.action
    event: JsonObject = {
        "resourceType": "AuditEvent",
        "id": f"{stream}-{leaf_index}",
        "type": event_type,
        "subtype": subtype,
        "action": action,
        "recorded": record.recorded,
        "outcome": record.outcome,
        "agent": _agents(record, action, server if rest else None),
        "source": {
            "observer": {"display": "CareVault"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if record.status is not None:
        event["outcomeDesc"] = f"HTTP {record.status}" + (
            f"; rule: {record.rule}" if record.rule else ""
        )
    if record.purpose_of_use:
        event["purposeOfEvent"] = [{"coding": [{"system": PURPOSE, "code": record.purpose_of_use}]}]
    entities = _entities(record, rest)
    if entities:
        event["entity"] = entities
    profiles = balp_profiles(event) if rest else []
    if profiles:
        event = {"resourceType": "AuditEvent", "meta": {"profile": profiles}, **event}
    return event


def _rest_code(record: AuditRecord) -> str:
    return record.interaction.replace("conditional-", "")


def _agents(record: AuditRecord, action: str, server: str | None) -> list[JsonObject]:
    """The user (the requestor), the client and the server, and on whose behalf."""
    reading = action in ("R", "E")
    agents: list[JsonObject] = []
    client_id = record.detail.get("client_id")
    if record.agent.who:
        user: JsonObject = {
            "type": {"coding": [_user_type(record, reading)]},
            "who": _reference(record.agent.who),
            "requestor": True,
        }
        if record.agent.role:
            user["role"] = [{"coding": [{"system": CAREVAULT, "code": record.agent.role}]}]
        agents.append(user)
    if client_id or record.agent.network or not agents:
        client: JsonObject = {
            "type": {"coding": [_DESTINATION_ROLE if action == "R" else _SOURCE_ROLE]},
            "who": (
                {"identifier": {"value": client_id}, "display": client_id}
                if client_id
                else {"display": "unidentified client"}
            ),
            "requestor": not agents,  # the client acts alone when no user is named
        }
        if record.agent.network:
            client["network"] = {
                "address": record.agent.network,
                "type": "2" if _is_ip(record.agent.network) else "1",
            }
        agents.append(client)
    if server:
        agents.append(
            {
                "type": {"coding": [_SOURCE_ROLE if action == "R" else _DESTINATION_ROLE]},
                "who": {"display": server},
                "requestor": False,
                "network": {"address": server, "type": "5"},
            }
        )
    if record.agent.on_behalf_of:
        agents.append(
            {
                "who": _reference(record.agent.on_behalf_of),
                "requestor": False,
                "type": {"coding": [{"system": CAREVAULT, "code": "on-behalf-of"}]},
            }
        )
    return agents


def _user_type(record: AuditRecord, reading: bool) -> JsonObject:
    if record.kind != "access" or record.interaction not in _REST:
        return {"system": CAREVAULT, "code": record.agent.role or "client"}
    if reading:
        return {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}
    return {"system": PARTICIPATION, "code": "AUT", "display": "author"}


def _entities(record: AuditRecord, rest: bool) -> list[JsonObject]:
    entities: list[JsonObject] = []
    if record.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if record.entity_type:
        entity: JsonObject = {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
        }
        # A conditional update of a Patient (ITI-104) names no id: the patient written is it.
        written = record.entity_id or (record.patient if record.entity_type == "Patient" else None)
        if record.interaction == "search-type":
            entity["role"] = {"system": OBJECT_ROLE, "code": "24", "display": "Query"}
            entity["description"] = record.entity_type  # what was searched
        else:
            entity["role"] = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
            if written:
                entity["what"] = {"reference": f"{record.entity_type}/{written}"}
        if record.query:
            entity["query"] = base64.b64encode(record.query.encode()).decode("ascii")
        entities.append(entity)
    if rest and record.request_id:
        entities.append(
            {
                "what": {"identifier": {"value": record.request_id}},
                "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
            }
        )
    return entities


def balp_profiles(event: JsonObject) -> list[str]:
    """The BALP profiles ``event`` meets: the one of its interaction when it succeeded and
    names its client and server, with the patient's variant when it names a patient."""
    codes = [c.get("code") for c in event.get("subtype", []) if c.get("system") == RESTFUL]
    name = _PROFILES.get(codes[0]) if codes else None
    if name is None or event.get("outcome") != "0":
        return []
    roles = [c.get("code") for a in event["agent"] for c in a["type"]["coding"]]
    if roles.count("110152") != 1 or roles.count("110153") != 1:
        return []
    if not all("network" in a for a in event["agent"] if a["type"]["coding"][0]["system"] == DICOM):
        return []
    entities = event.get("entity", [])
    wanted = "24" if name == "Query" else "4"
    found = [e for e in entities if e.get("role", {}).get("code") == wanted]
    if len(found) != 1 or ("query" if name == "Query" else "what") not in found[0]:
        return []  # e.g. a create, whose new id the log does not record
    patient = any(e.get("role", {}).get("code") == "1" for e in entities)
    return [BALP + name] + ([BALP + "Patient" + name] if patient else [])


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _reference(value: str) -> JsonObject:
    kind, slash, _ident = value.partition("/")
    if slash and kind[:1].isupper():
        return {"reference": value}
    return {"display": value}
