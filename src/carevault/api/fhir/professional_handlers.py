"""FHIR ways into what professionals record about each other and pass on:

- ``Practitioner/[id]/$mandate-assistant`` and ``Practitioner/[id]/$end-mandate``: the
  practitioner ``id``, in person, mandates an assistant (until an end date, optionally for some
  document classes: ``scope``) or ends a mandate; ``Practitioner/[id]/$mandates`` lists them;
- ``Patient/[id]/$delegate``: a practitioner holding a delegable access from the patient passes
  it on to a colleague until an end date, when the patient allows it;
  ``Patient/[id]/$end-delegation`` ends one now (its delegator, or whoever manages the record);
(``CareTeam``, a directory resource, is served beside the other directory resources in
`carevault.api.fhir.directory_handlers`.)

The gate decides these as directory reads (or a read of the record, for ``$delegate``): every
professional may ask; the service then decides who may actually write (`decide_mandate`,
`CareAccess.delegate`) and refuses everyone else with a 403 that the door records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Operation,
    Target,
)
from carevault.api.fhir.record_handlers import actor_of
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import Action, GrantLevel
from carevault.domain.errors import InvalidInput, NotPermitted
from carevault.domain.mandates import MAX_MANDATE_CLASSES, AssistantMandate
from carevault.fhirmodel.validate import date_time, validate_resource

JsonObject = dict[str, Any]

MANDATE_ASSISTANT = Operation(
    "mandate-assistant",
    "https://carevault.lu/fhir/OperationDefinition/Practitioner-mandate-assistant",
    True,
    frozenset({"POST"}),
    "The practitioner, in person, mandates an assistant (Parameters: 'assistant' "
    "valueReference, 'end' valueDateTime, optional 'start', optional repeated 'scope' "
    "valueCode: the document classes the assistant may read): the assistant's token then "
    "reads in the practitioner's name, never writes, and the audit names both",
    permission="r",
    takes="Parameters",
)
END_MANDATE = Operation(
    "end-mandate",
    "https://carevault.lu/fhir/OperationDefinition/Practitioner-end-mandate",
    True,
    frozenset({"POST"}),
    "The practitioner ends one of their assistants' mandates now (Parameters: 'mandate')",
    permission="r",
    takes="Parameters",
)
MANDATES = Operation(
    "mandates",
    "https://carevault.lu/fhir/OperationDefinition/Practitioner-mandates",
    True,
    frozenset({"GET"}),
    "The mandates this practitioner gave, or holds as an assistant, ended ones included",
)
DELEGATE = Operation(
    "delegate",
    "https://carevault.lu/fhir/OperationDefinition/Patient-delegate",
    True,
    frozenset({"POST"}),
    "A practitioner holding a delegable access from the patient passes it on to a colleague "
    "(Parameters: 'delegate' valueReference, 'end' valueDateTime, optional 'level' valueCode "
    "normal or extended), when the patient allows delegation; never more than they hold",
    permission="r",
    takes="Parameters",
)
END_DELEGATION = Operation(
    "end-delegation",
    "https://carevault.lu/fhir/OperationDefinition/Patient-end-delegation",
    True,
    frozenset({"POST"}),
    "End a delegation in force on this record now (Parameters: 'delegation' valueString, the "
    "id $delegate answered): its delegator ends it in person, the patient or a representative "
    "who manages the record ends any; the delegate is refused from the next request",
    permission="r",
    takes="Parameters",
)
_MAX_PARAMETERS = MAX_MANDATE_CLASSES + 8


def _parameters(api: ApiContext, request: FhirRequest) -> list[JsonObject]:
    body = validate_resource(request.json_body(api.settings.max_json_depth), "Parameters")
    found = body.get("parameter") or []
    if len(found) > _MAX_PARAMETERS:
        raise InvalidInput(
            f"at most {_MAX_PARAMETERS} parameters", expression="Parameters.parameter"
        )
    return [p for p in found if isinstance(p, dict)]


def _one(parameters: list[JsonObject], name: str, kind: str, *, required: bool = True) -> Any:
    values = [p.get(kind) for p in parameters if p.get("name") == name]
    if len(values) > 1 or (required and not values) or (values and values[0] is None):
        need = "one" if required else "at most one"
        raise InvalidInput(
            f"give {need} '{name}' parameter ({kind})", expression=f"Parameters.{name}"
        )
    return values[0] if values else None


def _parameter_time(value: Any, name: str) -> datetime:
    return date_time(value, f"Parameters.{name}", name=f"'{name}'")


def _practitioner(value: Any, name: str) -> str:
    reference = value.get("reference") if isinstance(value, dict) else None
    ident = reference.removeprefix("Practitioner/") if isinstance(reference, str) else ""
    if (
        not isinstance(reference, str)
        or not reference.startswith("Practitioner/")
        or (not ident or "/" in ident)
    ):
        raise InvalidInput(
            f"'{name}' must reference a Practitioner/<id>", expression=f"Parameters.{name}"
        )
    return ident


def mandate_parameters(mandate: AssistantMandate, now: datetime) -> JsonObject:
    parts: list[JsonObject] = [
        {"name": "id", "valueString": mandate.id},
        {
            "name": "mandator",
            "valueReference": {"reference": f"Practitioner/{mandate.mandator_id}"},
        },
        {
            "name": "assistant",
            "valueReference": {"reference": f"Practitioner/{mandate.assistant_id}"},
        },
        {"name": "start", "valueDateTime": rfc3339_ms(mandate.start)},
        {"name": "end", "valueDateTime": rfc3339_ms(mandate.end)},
        {"name": "active", "valueBoolean": mandate.active(now)},
        *({"name": "scope", "valueCode": code} for code in sorted(mandate.classes or ())),
    ]
    if mandate.ended_at is not None:
        parts.append({"name": "ended", "valueDateTime": rfc3339_ms(mandate.ended_at)})
    return {"name": "mandate", "part": parts}


def mandate_assistant_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    parameters = _parameters(api, request)
    assistant = _practitioner(_one(parameters, "assistant", "valueReference"), "assistant")
    end = _parameter_time(_one(parameters, "end", "valueDateTime"), "end")
    start_value = _one(parameters, "start", "valueDateTime", required=False)
    start = _parameter_time(start_value, "start") if start_value is not None else None
    codes = [p.get("valueCode") for p in parameters if p.get("name") == "scope"]
    if any(not isinstance(code, str) or not code or code == "*" for code in codes):
        raise InvalidInput("each 'scope' is a document class code", expression="Parameters.scope")
    classes = frozenset(str(code) for code in codes) if codes else None
    mandate = api.professionals.mandate_assistant(
        actor_of(request), request.resource_id or "", assistant, end, classes, start
    )
    now = api.policy.clock()
    return FhirResponse(
        200, {"resourceType": "Parameters", "parameter": [mandate_parameters(mandate, now)]}
    )


def end_mandate_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    parameters = _parameters(api, request)
    mandate = _one(parameters, "mandate", "valueString")
    if not isinstance(mandate, str) or not mandate or len(mandate) > 64:
        raise InvalidInput("'mandate' is a mandate id", expression="Parameters.mandate")
    api.professionals.end_mandate(actor_of(request), request.resource_id or "", mandate)
    return FhirResponse(
        200,
        {"resourceType": "Parameters", "parameter": [{"name": "ended", "valueBoolean": True}]},
    )


def mandates_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    """A practitioner's own mandates (given or held): theirs alone to list."""
    practitioner_id = request.resource_id or ""
    subject = actor_of(request).subject
    if subject.id != practitioner_id:
        raise NotPermitted("a practitioner lists their own mandates only", issue_code="forbidden")
    now = api.policy.clock()
    given = api.professionals.mandates(mandator_id=practitioner_id)
    held = api.professionals.mandates(assistant_id=practitioner_id)
    parts = [mandate_parameters(m, now) for m in [*given, *held]]
    # FHIR JSON has no empty array: no mandate, no parameter element.
    return FhirResponse(
        200, {"resourceType": "Parameters", **({"parameter": parts} if parts else {})}
    )


_LEVELS = {"normal": GrantLevel.NORMAL, "extended": GrantLevel.EXTENDED}


def delegate_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    parameters = _parameters(api, request)
    delegate = _practitioner(_one(parameters, "delegate", "valueReference"), "delegate")
    end = _parameter_time(_one(parameters, "end", "valueDateTime"), "end")
    level_code = _one(parameters, "level", "valueCode", required=False) or "normal"
    level = _LEVELS.get(level_code)
    if level is None:
        raise InvalidInput("'level' is normal or extended", expression="Parameters.level")
    patient_id = request.resource_id or ""
    delegation = api.care.delegate(actor_of(request), patient_id, delegate, level, end)
    result = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "id", "valueString": delegation.id},
            {
                "name": "delegate",
                "valueReference": {"reference": f"Practitioner/{delegation.delegate_id}"},
            },
            {"name": "level", "valueCode": delegation.level.value},
            {"name": "end", "valueDateTime": rfc3339_ms(delegation.end)},
        ],
    }
    return FhirResponse(200, result, patients=(patient_id,))


def end_delegation_response(api: ApiContext, request: FhirRequest) -> FhirResponse:
    parameters = _parameters(api, request)
    delegation = _one(parameters, "delegation", "valueString")
    if not isinstance(delegation, str) or not delegation or len(delegation) > 64:
        raise InvalidInput("'delegation' is a delegation id", expression="Parameters.delegation")
    patient_id = request.resource_id or ""
    api.care.end_delegation(actor_of(request), patient_id, delegation)
    return FhirResponse(
        200,
        {"resourceType": "Parameters", "parameter": [{"name": "ended", "valueBoolean": True}]},
        patients=(patient_id,),
    )


def practitioner_operation_need(request: FhirRequest) -> AccessNeed:
    """Every professional may ask; the service decides who may write (see the module)."""
    return AccessNeed(Target.DIRECTORY, Action.READ)


__all__ = [
    "DELEGATE",
    "END_DELEGATION",
    "END_MANDATE",
    "MANDATES",
    "MANDATE_ASSISTANT",
    "delegate_response",
    "end_delegation_response",
    "end_mandate_response",
    "mandate_assistant_response",
    "mandates_response",
    "practitioner_operation_need",
]
