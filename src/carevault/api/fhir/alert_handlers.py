"""FHIR ``DetectedIssue``: the security officer's alerts on record accesses, and their review.

An alert of the access anomaly detector (or an emergency access to review) is a DetectedIssue
whose ``code`` is the kind of abuse, ``detail`` the plain explanation, ``evidence`` the audit
entries it rests on (``AuditEvent/clinical-N``, each with a link to its inclusion proof),
``implicated`` the professional, ``patient`` the patient, and ``mitigation`` what the officer
did (acknowledged, assigned, closed as a true or false positive, patient notified). Never any
medical content. The operations ``$acknowledge``, ``$assign`` (``assignee``), ``$close``
(``verdict``, ``note``) and ``$notify-patient`` take a Parameters body.

Only a security officer reaches them: every request needs the audit trail
(`decide_audit_trail`), as AuditEvent does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from carevault.api.fhir import search as sp
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Interaction,
    Operation,
    ResourceHandler,
    SearchParam,
    Target,
)
from carevault.domain.anomaly import StoredAlert
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import Action
from carevault.domain.errors import InvalidInput, NotFound, Unavailable
from carevault.fhirmodel.validate import validate_resource
from carevault.services.anomaly_detection import AnomalyDetection

JsonObject = dict[str, Any]
KIND_SYSTEM = "https://carevault.lu/fhir/CodeSystem/access-anomaly"
STATE_URL = "https://carevault.lu/fhir/StructureDefinition/alert-state"
PROOF_URL = "https://carevault.lu/fhir/StructureDefinition/inclusion-proof"
MITIGATION_SYSTEM = "https://carevault.lu/fhir/CodeSystem/alert-action"
_STATUS = {"open": "preliminary", "acknowledged": "preliminary"}


def _severity(value: int) -> str:
    return "high" if value >= 75 else "moderate" if value >= 50 else "low"


def detected_issue(alert: StoredAlert) -> JsonObject:
    """The alert as a FHIR R4 DetectedIssue."""
    status = _STATUS.get(alert.status) or (
        "final" if alert.verdict == "true-positive" else "cancelled"
    )
    mitigation: list[JsonObject] = []

    def act(code: str, display: str, who: str | None, when: str) -> None:
        entry: JsonObject = {
            "action": {"coding": [{"system": MITIGATION_SYSTEM, "code": code}], "text": display},
            "date": when,
        }
        if who:
            entry["author"] = {"display": who}
        mitigation.append(entry)

    updated = rfc3339_ms(alert.updated_at)
    if alert.acknowledged_by:
        act("acknowledged", "acknowledged", alert.acknowledged_by, updated)
    if alert.assignee:
        act("assigned", f"assigned to {alert.assignee}", alert.acknowledged_by, updated)
    if alert.patient_notified_at is not None:
        act("patient-notified", "patient notified", None, rfc3339_ms(alert.patient_notified_at))
    if alert.status == "closed":
        act(f"closed-{alert.verdict}", f"closed as {alert.verdict}", alert.closed_by, updated)
    resource: JsonObject = {
        "resourceType": "DetectedIssue",
        "id": alert.id,
        "meta": {"versionId": str(alert.version), "lastUpdated": updated},
        "extension": [
            {
                "url": STATE_URL,
                "extension": [
                    {"url": "state", "valueCode": alert.status},
                    *([{"url": "verdict", "valueCode": alert.verdict}] if alert.verdict else []),
                    *([{"url": "note", "valueString": alert.note}] if alert.note else []),
                ],
            }
        ],
        "status": status,
        "code": {"coding": [{"system": KIND_SYSTEM, "code": alert.kind}], "text": alert.kind},
        "severity": _severity(alert.severity),
        "identifiedDateTime": rfc3339_ms(alert.raised_at),
        "implicated": [{"reference": f"Practitioner/{alert.professional}"}],
        "detail": alert.explanation,
        "evidence": [
            {
                "detail": [{"reference": f"AuditEvent/clinical-{leaf}"}],
                "extension": [
                    {
                        "url": PROOF_URL,
                        "valueUrl": "/audit/proof/inclusion?"
                        + urlencode({"stream": "clinical", "leaf_index": leaf}),
                    }
                ],
            }
            for leaf in alert.evidence
        ],
    }
    if alert.patient_id:
        resource["patient"] = {"reference": f"Patient/{alert.patient_id}"}
    if mitigation:
        resource["mitigation"] = mitigation
    return resource


def _operation(name: str, documentation: str, *params: SearchParam) -> Operation:
    return Operation(
        name,
        f"https://carevault.lu/fhir/OperationDefinition/DetectedIssue-{name}",
        True,
        frozenset({"POST"}),
        documentation,
        permission="u",
        parameters=params,
        takes="Parameters",
        gives="DetectedIssue",
    )


ACKNOWLEDGE = _operation("acknowledge", "The security officer has seen the alert")
ASSIGN = _operation(
    "assign",
    "Assign the alert for investigation",
    SearchParam("assignee", "string", "Who investigates", required=True),
)
CLOSE = _operation(
    "close",
    "Close the alert as a true or a false positive (fed back to the detector)",
    SearchParam("verdict", "token", "true-positive or false-positive", required=True),
    SearchParam("note", "string", "Why (at most 1,000 characters)"),
)
NOTIFY = _operation("notify-patient", "Tell the patient their record is under review")
_MAX_PARAMETERS = 4


class DetectedIssueHandler(ResourceHandler):
    resource_type = "DetectedIssue"
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    search_params = (
        SearchParam("status", "token", "open, acknowledged or closed (the alert's state)"),
        SearchParam("code", "token", "The kind of alert (vip, bulk, emergency-access, …)"),
    )
    operations = (ACKNOWLEDGE, ASSIGN, CLOSE, NOTIFY)

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    @property
    def alerts(self) -> AnomalyDetection:
        if self.api.alerts is None:
            raise Unavailable("the security officer's alerts are not configured")
        return self.api.alerts

    def access_need(self, request: FhirRequest, uow: object) -> AccessNeed:
        # The whole audit trail's: the security officer's alone, whatever is asked.
        reading = request.interaction in (Interaction.READ, Interaction.SEARCH)
        return AccessNeed(Target.AUDIT_TRAIL, Action.READ if reading else Action.WRITE)

    def read(self, request: FhirRequest) -> FhirResponse:
        alert = self.alerts.alert(request.resource_id or "")
        return FhirResponse(200, detected_issue(alert))

    def search(self, request: FhirRequest) -> FhirResponse:
        paging = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        status = tuple(v for alt in sp.exact(request, "status") for v in alt)
        kind = tuple(v for alt in sp.exact(request, "code") for v in alt)
        total, alerts = self.alerts.search(
            status=status, kind=kind, offset=paging.offset, count=paging.count
        )
        base = request.base_url.rstrip("/")
        kept = [(k, v) for k, v in request.params if k not in ("_offset", "_count")]

        def link(relation: str, offset: int) -> JsonObject:
            query = urlencode([*kept, ("_count", str(paging.count)), ("_offset", str(offset))])
            return {"relation": relation, "url": f"{base}/DetectedIssue?{query}"}

        links = [link("self", paging.offset)]
        if paging.offset + paging.count < total:
            links.append(link("next", paging.offset + paging.count))
        bundle: JsonObject = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "link": links,
        }
        if alerts:  # FHIR JSON has no empty array: no match, no entry element
            bundle["entry"] = [
                {
                    "fullUrl": f"{base}/DetectedIssue/{a.id}",
                    "resource": detected_issue(a),
                    "search": {"mode": "match"},
                }
                for a in alerts
            ]
        return FhirResponse(200, bundle)

    def operation(self, request: FhirRequest) -> FhirResponse:
        alert_id = request.resource_id or ""
        officer = request.admission.who if request.admission and request.admission.who else ""
        values = self._parameters(request)
        match request.operation:
            case ACKNOWLEDGE.name:
                alert = self.alerts.acknowledge(alert_id, officer)
            case ASSIGN.name:
                alert = self.alerts.assign(alert_id, officer, _one(values, "assignee"))
            case CLOSE.name:
                note = values.get("note", [""])
                alert = self.alerts.close(
                    alert_id, officer, _one(values, "verdict"), note[0] if note else ""
                )
            case NOTIFY.name:
                alert = self.alerts.notify_patient(alert_id, officer)
            case _:
                raise NotFound(f"DetectedIssue has no operation ${request.operation}")
        patients = (
            (alert.patient_id,) if request.operation == NOTIFY.name and alert.patient_id else ()
        )
        return FhirResponse(200, detected_issue(alert), patients=patients)

    def _parameters(self, request: FhirRequest) -> dict[str, list[str]]:
        if not request.body:
            return {}
        body = validate_resource(request.json_body(self.api.settings.max_json_depth), "Parameters")
        found: dict[str, list[str]] = {}
        parameters = body.get("parameter", [])
        if len(parameters) > _MAX_PARAMETERS:
            raise InvalidInput("too many parameters", expression="Parameters.parameter")
        for parameter in parameters:
            value = next(
                (parameter[k] for k in ("valueString", "valueCode") if k in parameter), None
            )
            if not isinstance(value, str):
                raise InvalidInput(
                    f"parameter {parameter.get('name')!r} takes a valueString or valueCode",
                    expression="Parameters.parameter",
                )
            found.setdefault(str(parameter.get("name")), []).append(value)
        return found


def _one(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name, [])
    if len(found) != 1:
        raise InvalidInput(f"give one {name!r} parameter", expression="Parameters.parameter")
    return found[0]
