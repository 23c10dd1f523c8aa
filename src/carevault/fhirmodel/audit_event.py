"""An audit entry as a FHIR R4 ``AuditEvent``, shaped after IHE Basic Audit Log Patterns (BALP).

The entry's canonical bytes stay the evidence; this is a rendering of them for FHIR clients and
for the ATNA audit repository. The id is ``<stream>-<leaf index>``, so any AuditEvent can be
traced back to its leaf and proven with an inclusion proof.
"""

from __future__ import annotations

import base64
from typing import Any

from carevault.domain.audit import AuditRecord

JsonObject = dict[str, Any]

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
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


def audit_event(stream: str, leaf_index: int, record: AuditRecord) -> JsonObject:
    if record.kind == "authentication":
        # DCM 110114 "User Authentication", subtype 110122 "Login" (BALP, DICOM PS3.15 A.5).
        event_type = {"system": DICOM, "code": "110114", "display": "User Authentication"}
        subtype = [
            {"system": DICOM, "code": "110122", "display": "Login"},
            {"system": CAREVAULT, "code": record.interaction},
        ]
    elif record.interaction in _REST:
        event_type = {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
        subtype = [{"system": RESTFUL, "code": record.interaction.replace("conditional-", "")}]
    else:
        # DCM 110100 "Application Activity" for operator and security actions.
        event_type = {"system": DICOM, "code": "110100", "display": "Application Activity"}
        subtype = [{"system": CAREVAULT, "code": record.interaction.replace(" ", "-")}]
    agent: JsonObject = {
        "type": {"coding": [{"system": CAREVAULT, "code": record.agent.role or "client"}]},
        "requestor": True,
    }
    if record.agent.who:
        agent["who"] = _reference(record.agent.who)
    else:
        agent["who"] = {"display": "unidentified client"}
    if record.agent.network:
        agent["network"] = {"address": record.agent.network, "type": "2"}
    agents = [agent]
    if record.agent.on_behalf_of:
        agents.append(
            {
                "who": _reference(record.agent.on_behalf_of),
                "requestor": False,
                "type": {"coding": [{"system": CAREVAULT, "code": "on-behalf-of"}]},
            }
        )
    entities: list[JsonObject] = []
    if record.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient}"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if record.entity_type:
        entity: JsonObject = {
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": record.entity_type}
        }
        if record.entity_id and not (
            record.entity_type == "Patient" and record.entity_id == record.patient
        ):
            entity["what"] = {"reference": f"{record.entity_type}/{record.entity_id}"}
        if record.query:
            entity["query"] = base64.b64encode(record.query.encode()).decode("ascii")
        if len(entity) > 1 or not entities:
            entities.append(entity)
    event: JsonObject = {
        "resourceType": "AuditEvent",
        "id": f"{stream}-{leaf_index}",
        "type": event_type,
        "subtype": subtype,
        "action": record.action,
        "recorded": record.recorded,
        "outcome": record.outcome,
        "agent": agents,
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
    if entities:
        event["entity"] = entities
    return event


def _reference(value: str) -> JsonObject:
    kind, slash, _ident = value.partition("/")
    if slash and kind[:1].isupper():
        return {"reference": value}
    return {"display": value}
