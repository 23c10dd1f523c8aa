"""The patient's controls over their record that are not Consents: its settings, their
representatives, and the export of everything (GDPR portability).

- ``Patient/[id]/$record-settings``: GET reads the settings (state, referring physician,
  default confidentiality of new documents, emergency setting, delegation, representatives);
  POST changes several at once, in one transaction (close, reopen, or open under opt-in).
- ``Patient/[id]/$representative``: POST names (by the login of their account), limits (scope,
  end) or ends a representative's mandate.
- ``Patient/[id]/$everything``: a FHIR ``Bundle`` (type ``collection``) of the record as the
  caller may see it: the identity, every visible document with its metadata and its content
  (decrypted, checked against its hash), the grants and blocks, the emergency setting and the
  access history in plain words; a download.

Every write is the engine's ``manage`` on the record (the patient, or a representative who
manages it); reading settings and the export are ``personal`` (the patient or any of their
representatives); professionals are refused all three.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from carevault.api.fhir.audit_handlers import history_language
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import AccessNeed, FhirRequest, FhirResponse, Operation, Target
from carevault.api.fhir.formats import BundleStream
from carevault.api.fhir.record_export import attachment_headers, bundle_entries
from carevault.api.fhir.record_handlers import actor_of, admitted_record
from carevault.domain.accounts import Mandate
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import (
    Action,
    Confidentiality,
    EmergencySetting,
    MandateScope,
    RecordFacts,
    RecordState,
)
from carevault.domain.errors import InvalidInput
from carevault.fhirmodel.validate import date_time
from carevault.services.record_export import RecordExport
from carevault.services.record_policy import RecordChange

JsonObject = dict[str, Any]
SETTINGS_URL = "https://carevault.lu/fhir/OperationDefinition/Patient-record-settings"
REPRESENTATIVE_URL = "https://carevault.lu/fhir/OperationDefinition/Patient-representative"
EVERYTHING_URL = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
# The export pages through the record in steps of this many documents and history entries.

RECORD_SETTINGS_READ = Operation(
    "record-settings",
    SETTINGS_URL,
    True,
    frozenset({"GET", "POST"}),
    "The record's settings. GET: state, referring physician, default confidentiality of new "
    "documents, emergency setting, delegation and representatives. POST (Parameters): change "
    "any of 'state' (active: reopen, or open under opt-in; closed: the patient's objection), "
    "'referring-physician' (Practitioner reference), 'remove-referring-physician' (true), "
    "'default-confidentiality' (N, R or V), 'emergency-setting', 'delegation-allowed', at once",
    # Reading is "r"; the door asks "u" for the POST (see `Operation.permission`).
    takes="Parameters",
)
REPRESENTATIVE = Operation(
    "representative",
    REPRESENTATIVE_URL,
    True,
    frozenset({"POST"}),
    "Name (action 'name', 'login' of their representative's account, 'scope' read or manage, "
    "optional 'end'), limit (action 'limit', 'mandate', 'scope', optional 'end') or end "
    "(action 'end', 'mandate') a representative of the patient",
    takes="Parameters",
)
EVERYTHING = Operation(
    "everything",
    EVERYTHING_URL,
    True,
    frozenset({"GET"}),
    "Export of the record as the caller may see it (the patient or a representative): a "
    "Bundle of the identity, every visible document with its content, the grants and blocks "
    "and the access history, as a download",
    gives="Bundle",
)
OPERATIONS = (RECORD_SETTINGS_READ, REPRESENTATIVE, EVERYTHING)


def access_need(request: FhirRequest) -> AccessNeed:
    """Writes are the engine's ``manage``, reads ``personal``. Settings requests may open the
    record under opt-in: a record its patient has not opened yet is decided as closed (only
    the patient reaches it) instead of as missing."""
    patient = request.resource_id
    if request.operation == EVERYTHING.name:
        return AccessNeed(Target.RECORD, Action.PERSONAL, patient)
    if request.operation == REPRESENTATIVE.name:
        return AccessNeed(Target.RECORD, Action.MANAGE, patient)
    if request.method == "GET":
        return AccessNeed(Target.RECORD, Action.PERSONAL, patient, opening=True)
    return AccessNeed(Target.RECORD, Action.MANAGE, patient, opening=True)


def respond(api: ApiContext, request: FhirRequest) -> FhirResponse:
    if request.operation == EVERYTHING.name:
        return _everything(api, request)
    if request.operation == REPRESENTATIVE.name:
        return _representative(api, request)
    if request.method == "GET":
        _no_query(request, "$record-settings")
        _subject, record = admitted_record(request)
        return _settings_answer(api, request, record)
    return _change_settings(api, request)


# --- parameters in and out -------------------------------------------------------------------


def _no_query(request: FhirRequest, operation: str) -> None:
    unknown = request.param_names() - {"_format"}
    if unknown:
        raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r} for {operation}")


def _parameters(
    api: ApiContext, request: FhirRequest, known: dict[str, str], operation: str
) -> dict[str, Any]:
    """A Parameters body's values by name: each known at most once, with its declared value
    type (``known``: name → valueX); anything else is refused before any change."""
    _no_query(request, operation)
    body = request.json_body(api.settings.max_json_depth)
    if body.get("resourceType") != "Parameters":
        raise InvalidInput(f"{operation} takes a Parameters resource", expression="resourceType")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise InvalidInput("Parameters.parameter is a list", expression="Parameters.parameter")
    found: dict[str, Any] = {}
    for index, parameter in enumerate(parameters):
        where = f"Parameters.parameter[{index}]"
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name not in known:
            raise InvalidInput(f"unknown parameter {name!r} for {operation}", expression=where)
        if name in found:
            raise InvalidInput(f"the parameter {name!r} is given twice", expression=where)
        value_key = known[name]
        if value_key not in parameter or len(parameter) != 2:
            raise InvalidInput(f"{name!r} takes one {value_key}", expression=where)
        found[name] = parameter[value_key]
    return found


def _code(value: Any, allowed: type[Any], name: str) -> Any:
    try:
        return allowed(value)
    except ValueError:
        choices = ", ".join(member.value for member in allowed)
        raise InvalidInput(f"{name} is one of {choices}", expression=name) from None


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} is true or false", expression=name)
    return value


def _text(value: Any, name: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} is a text of 1 to {limit} characters", expression=name)
    return value.strip()


def _mandate_part(mandate: Mandate, now: datetime) -> JsonObject:
    parts: list[JsonObject] = [
        {"name": "mandate", "valueString": mandate.id},
        {
            "name": "account",
            "valueReference": {"reference": f"account:{mandate.representative_account_id}"},
        },
        {"name": "scope", "valueCode": mandate.scope},
        {"name": "start", "valueDateTime": rfc3339_ms(mandate.starts_at)},
        {"name": "active", "valueBoolean": mandate.active_at(now)},
    ]
    if mandate.ends_at is not None:
        parts.append({"name": "end", "valueDateTime": rfc3339_ms(mandate.ends_at)})
    return {"name": "representative", "part": parts}


def _settings_answer(api: ApiContext, request: FhirRequest, record: RecordFacts) -> FhirResponse:
    patient_id = record.patient_id
    unopened = api.policy.unopened(patient_id)
    mandates = api.representatives.listing(actor_of(request), patient_id)
    now = api.policy.clock()
    parameters: list[JsonObject] = [
        {"name": "state", "valueCode": record.state.value},
        {"name": "model", "valueCode": record.model.value},
        {"name": "opened", "valueBoolean": not unopened},
        {"name": "default-confidentiality", "valueCode": record.default_confidentiality.value},
        {"name": "emergency-setting", "valueCode": record.emergency_setting.value},
        {"name": "delegation-allowed", "valueBoolean": record.delegation_allowed},
    ]
    if record.referring_physician_id is not None:
        parameters.append(
            {
                "name": "referring-physician",
                "valueReference": {"reference": f"Practitioner/{record.referring_physician_id}"},
            }
        )
    parameters += [_mandate_part(m, now) for m in mandates]
    body = {"resourceType": "Parameters", **({"parameter": parameters} if parameters else {})}
    response = FhirResponse(200, body, patients=(patient_id,))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- changes ---------------------------------------------------------------------------------

_SETTINGS = {
    "state": "valueCode",
    "referring-physician": "valueReference",
    "remove-referring-physician": "valueBoolean",
    "default-confidentiality": "valueCode",
    "emergency-setting": "valueCode",
    "delegation-allowed": "valueBoolean",
}


def _change_settings(api: ApiContext, request: FhirRequest) -> FhirResponse:
    given = _parameters(api, request, _SETTINGS, "$record-settings")
    referring: dict[str, str | None] = {}  # empty: the referring physician is unchanged
    if "referring-physician" in given and "remove-referring-physician" in given:
        raise InvalidInput(
            "name a referring physician or remove them, not both",
            expression="remove-referring-physician",
        )
    if "referring-physician" in given:
        reference = given["referring-physician"]
        target = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(target, str) or not target.startswith("Practitioner/"):
            raise InvalidInput(
                "referring-physician is a Practitioner reference", expression="referring-physician"
            )
        referring = {"referring_physician": target.removeprefix("Practitioner/")}
    if "remove-referring-physician" in given:
        if not _boolean(given["remove-referring-physician"], "remove-referring-physician"):
            raise InvalidInput(
                "remove-referring-physician is true when given",
                expression="remove-referring-physician",
            )
        referring = {"referring_physician": None}
    change = RecordChange(
        state=_code(given["state"], RecordState, "state") if "state" in given else None,
        **referring,
        default_confidentiality=_code(
            given["default-confidentiality"], Confidentiality, "default-confidentiality"
        )
        if "default-confidentiality" in given
        else None,
        emergency_setting=_code(given["emergency-setting"], EmergencySetting, "emergency-setting")
        if "emergency-setting" in given
        else None,
        delegation_allowed=_boolean(given["delegation-allowed"], "delegation-allowed")
        if "delegation-allowed" in given
        else None,
    )
    patient_id = request.resource_id or ""
    after = api.policy.change_record(actor_of(request), patient_id, change)
    return _settings_answer(api, request, after)


_REPRESENTATIVE = {
    "action": "valueCode",
    "login": "valueString",
    "mandate": "valueString",
    "scope": "valueCode",
    "end": "valueDateTime",
}


def _representative(api: ApiContext, request: FhirRequest) -> FhirResponse:
    given = _parameters(api, request, _REPRESENTATIVE, "$representative")
    action = given.get("action")
    actor, patient_id = actor_of(request), request.resource_id or ""
    end = date_time(given["end"], "end") if "end" in given else None
    scope = _code(given.get("scope", "read"), MandateScope, "scope")
    if action == "name":
        if "mandate" in given:
            raise InvalidInput("a new mandate has no id yet", expression="mandate")
        login = _text(given.get("login"), "login")
        api.representatives.name_by_login(actor, patient_id, login, scope, end=end)
    elif action in ("limit", "end"):
        if "login" in given:
            raise InvalidInput("name the mandate, not the login", expression="login")
        mandate = _text(given.get("mandate"), "mandate", 64)
        if action == "limit":
            if "scope" not in given:
                raise InvalidInput("limiting a mandate gives its scope", expression="scope")
            api.representatives.limit(actor, patient_id, mandate, scope, end)
        else:
            if "scope" in given or "end" in given:
                raise InvalidInput("ending a mandate takes only its id", expression="mandate")
            api.representatives.remove(actor, patient_id, mandate)
    else:
        raise InvalidInput("action is one of name, limit, end", expression="action")
    now = api.policy.clock()
    mandates = api.representatives.listing(actor, patient_id)
    parts = [_mandate_part(m, now) for m in mandates]
    body = {"resourceType": "Parameters", **({"parameter": parts} if parts else {})}
    return FhirResponse(200, body, patients=(patient_id,))


# --- the export ------------------------------------------------------------------------------


def _everything(api: ApiContext, request: FhirRequest) -> FhirResponse:
    """Everything the caller may see of the record, in one Bundle, streamed
    (`carevault.api.fhir.record_export`)."""
    unknown = request.param_names() - {"_format", "language"}
    if unknown:
        raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r} for $everything")
    language = history_language(request)
    subject, record = admitted_record(request)
    export = RecordExport(api.unit_of_work, api.documents, api.audit, api.affinity)
    parts = export.parts(subject, record, language)
    entries = bundle_entries(parts, record, request.base_url, language)
    timestamp = rfc3339_ms(api.policy.clock())
    return FhirResponse(
        200,
        None,
        headers=attachment_headers(record.patient_id),
        patients=(record.patient_id,),
        stream=BundleStream(entries, timestamp),
    )


__all__ = ["EVERYTHING", "OPERATIONS", "RECORD_SETTINGS_READ", "REPRESENTATIVE"]
