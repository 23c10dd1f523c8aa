"""FHIR handlers of e-prescriptions: gematik's E-Rezept ``Task`` operations on CareVault.

- ``POST Task/$create`` (the prescriber): a ``draft`` Task with its prescription number and
  access code (identifiers whose ``system`` names them);
- ``POST Task/[id]/$activate`` with ``Parameters.ePrescription`` (a Binary, application/jose:
  the prescriber's compact JWS over the prescription Bundle): ``ready``, the patient told;
- ``POST Task/[id]/$accept?ac=…`` (a pharmacist): ``in-progress``; a Bundle with the Task and
  its Secret, and the signed prescription;
- ``POST Task/[id]/$reject?secret=…``: back to ``ready``;
- ``POST Task/[id]/$close?secret=…`` with the ``MedicationDispense``: ``completed``, with the
  receipt the platform signs (its audit entry's inclusion proof inside);
- ``POST Task/[id]/$abort``: the prescriber (``ac``), the pharmacy that holds it (``secret``)
  or the patient cancels it;
- ``GET Task/[id]`` and ``GET Task?patient=…`` (the patient's app sees its prescriptions and
  their codes; a professional, under the engine's rules, without the codes).

The access code and the secret travel in the query string, as the E-Rezept API puts them; the
audit trail and the server's access log keep them redacted (`SECRET_PARAMETERS`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

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
    UnknownPatient,
)
from carevault.api.fhir.record_handlers import _one_patient, _searchset, actor_of
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import (
    PRESCRIPTION_CLASS,
    Action,
    DocumentFacts,
    SubjectKind,
)
from carevault.domain.errors import InvalidInput, NotFound, NotPermitted
from carevault.domain.prescriptions import (
    ACCESS_CODE_SYSTEM,
    FLOW_TYPE,
    FLOW_TYPE_SYSTEM,
    PRESCRIPTION_ID_SYSTEM,
    SECRET_SYSTEM,
    StoredTask,
)
from carevault.fhirmodel.validate import validate_resource
from carevault.services.prescriptions import (
    PrescriptionService,
    signed_from_parameters,
)
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]

_BASE = "https://carevault.lu/fhir/OperationDefinition/Task-"
_AC = SearchParam("ac", "string", "The access code (from the 2D code or the patient's app)")
_SECRET = SearchParam("secret", "string", "The secret $accept gave the pharmacy")

CREATE = Operation(
    "create",
    _BASE + "create",
    False,
    frozenset({"POST"}),
    "The prescriber: a new draft Task with its prescription number and access code "
    "(Parameters with an optional workflowType, and repeatOf: a valueReference to the Task "
    "a repeat prescription follows)",
    permission="c",
    takes="Parameters",
    gives="Task",
)
ACTIVATE = Operation(
    "activate",
    _BASE + "activate",
    True,
    frozenset({"POST"}),
    "The prescriber: Parameters with one ePrescription (a Binary, application/jose: the "
    "compact JWS with x5c over the prescription Bundle); the Task becomes ready",
    permission="u",
    takes="Parameters",
    gives="Task",
)
ACCEPT = Operation(
    "accept",
    _BASE + "accept",
    True,
    frozenset({"POST"}),
    "A pharmacist with the access code: the Task (in-progress, with its Secret) and the "
    "signed prescription, in a Bundle; 409 with the status if it is not ready",
    permission="u",
    parameters=(SearchParam(_AC.name, _AC.type, _AC.documentation, required=True),),
    gives="Bundle",
)
REJECT = Operation(
    "reject",
    _BASE + "reject",
    True,
    frozenset({"POST"}),
    "The pharmacy that holds the Task gives it back (ready again)",
    permission="u",
    parameters=(SearchParam(_SECRET.name, _SECRET.type, _SECRET.documentation, required=True),),
    gives="Task",
)
CLOSE = Operation(
    "close",
    _BASE + "close",
    True,
    frozenset({"POST"}),
    "The pharmacy completes the Task with the MedicationDispense; the answer is the receipt "
    "the platform signs, with its audit entry's inclusion proof",
    permission="u",
    parameters=(SearchParam(_SECRET.name, _SECRET.type, _SECRET.documentation, required=True),),
    takes="MedicationDispense",
    gives="Bundle",
)
ABORT = Operation(
    "abort",
    _BASE + "abort",
    True,
    frozenset({"POST"}),
    "Cancel the Task: its prescriber (ac), the pharmacy that holds it (secret) or its patient",
    permission="u",
    parameters=(_AC, _SECRET),
    gives="Task",
)

PRINT = Operation(
    "print",
    _BASE + "print",
    True,
    frozenset({"POST"}),
    "The prescriber, with the access code: the printed prescription (application/pdf) with "
    "its 2D code (Task/{id}/$accept?ac=…) and the platform's signature",
    permission="r",
    parameters=(SearchParam(_AC.name, _AC.type, _AC.documentation, required=True),),
    gives="Binary",
)

SIGNATURE_TYPES = "urn:iso-astm:E1762-95:2013"
SOURCE_SIGNATURE = "1.2.840.10065.1.12.1.1"  # the author's signature, here the platform's


def _code_param(request: FhirRequest, name: str) -> str | None:
    values = [value for key, value in request.params if key == name]
    if len(values) > 1:
        raise InvalidInput(f"give '{name}' once", expression=name)
    return values[0] if values else None


def task_resource(
    task: StoredTask,
    *,
    access_code: str | None = None,
    secret: str | None = None,
) -> JsonObject:
    """The Task as the E-Rezept API shapes it: the number, and the codes only to those who
    hold them (the prescriber at creation, the patient, the pharmacy at acceptance)."""
    identifiers = [{"use": "official", "system": PRESCRIPTION_ID_SYSTEM, "value": task.number}]
    if access_code is not None:
        identifiers.append({"use": "official", "system": ACCESS_CODE_SYSTEM, "value": access_code})
    if secret is not None:
        identifiers.append({"use": "official", "system": SECRET_SYSTEM, "value": secret})
    resource: JsonObject = {
        "resourceType": "Task",
        "id": task.id,
        "meta": {"versionId": str(task.version), "lastUpdated": rfc3339_ms(task.updated_at)},
        "extension": [
            {
                "url": "https://carevault.lu/fhir/StructureDefinition/prescription-flow-type",
                "valueCoding": {"system": FLOW_TYPE_SYSTEM, "code": FLOW_TYPE},
            }
        ],
        "identifier": identifiers,
        "status": task.status,
        "intent": "order",
        "authoredOn": rfc3339_ms(task.created_at),
        "lastModified": rfc3339_ms(task.updated_at),
        "requester": {"reference": f"Practitioner/{task.prescriber_id}"},
    }
    if task.patient_id is not None:
        resource["for"] = {"reference": f"Patient/{task.patient_id}"}
    if task.expires_at is not None:
        resource["restriction"] = {"period": {"end": rfc3339_ms(task.expires_at)}}
    if task.pharmacist_id is not None and task.status == "in-progress":
        resource["owner"] = {"reference": f"Practitioner/{task.pharmacist_id}"}
    if task.repeat_of is not None:
        resource["basedOn"] = [{"reference": f"Task/{task.repeat_of}"}]
    return resource


def _jose_binary(jws: str) -> JsonObject:
    return {
        "resourceType": "Binary",
        "contentType": "application/jose",
        "data": base64.b64encode(jws.encode("ascii")).decode("ascii"),
    }


class TaskHandler(ResourceHandler):
    resource_type = "Task"
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    search_params = (SearchParam("patient", "reference", "The patient's prescriptions"),)
    operations = (CREATE, ACTIVATE, ACCEPT, REJECT, CLOSE, ABORT, PRINT)

    def __init__(self, api: ApiContext, prescriptions: PrescriptionService) -> None:
        self.api = api
        self.prescriptions = prescriptions

    # --- what each request needs of the engine ------------------------------------------------

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        operation = request.operation
        if request.interaction is Interaction.SEARCH:
            return AccessNeed(Target.RECORD, Action.SEARCH, _one_patient(request))
        if operation == "create":
            return AccessNeed(Target.PRESCRIBING, Action.WRITE)
        if operation == "print":
            return AccessNeed(Target.PRESCRIBING, Action.READ)
        if operation in ("accept", "reject", "close"):
            # Whether the task exists is not told before the code is checked (the service).
            return AccessNeed(Target.DISPENSING, Action.WRITE)
        if operation == "abort" and _code_param(request, "secret") is not None:
            return AccessNeed(Target.DISPENSING, Action.WRITE)
        if operation == "abort" and _code_param(request, "ac") is not None:
            return AccessNeed(Target.PRESCRIBING, Action.WRITE)
        task = uow.prescriptions.get(request.resource_id or "")
        if task is None:
            raise NotFound(f"Task/{request.resource_id} is not known")
        if operation == "activate":
            # The prescription names its patient: writing it is decided on their record, as a
            # document of the prescription class (the profile matrix, blocks, grants).
            body = request.json_body(self.api.settings.max_json_depth)
            try:
                patient = self.prescriptions.patient_named(uow, signed_from_parameters(body))
            except NotFound:
                raise UnknownPatient("the prescription's patient is not in the index") from None
            return AccessNeed(
                Target.RECORD, Action.WRITE, patient, document=_facts(task, request.resource_id)
            )
        if operation == "abort":
            # Without a code: the patient cancels a prescription of their own record.
            if task.patient_id is None:
                return AccessNeed(Target.PRESCRIBING, Action.WRITE)
            return AccessNeed(Target.RECORD, Action.MANAGE, task.patient_id)
        if task.patient_id is None:  # a draft: its prescriber's alone
            return AccessNeed(Target.PRESCRIBING, Action.READ)
        return AccessNeed(Target.RECORD, Action.READ, task.patient_id, document=_facts(task))

    # --- reading ------------------------------------------------------------------------------

    def read(self, request: FhirRequest) -> FhirResponse:
        subject = _subject(request)
        task = self.prescriptions.get(request.resource_id or "")
        if task.patient_id is None and task.prescriber_id != subject.id:
            raise NotPermitted("a draft prescription is its prescriber's", issue_code="forbidden")
        personal = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
        return FhirResponse(
            200,
            task_resource(task, access_code=self._code_of(task) if personal else None),
            patients=(task.patient_id,) if task.patient_id else (),
        )

    def _code_of(self, task: StoredTask) -> str | None:
        """The access code of a ready task, to its patient and their representatives (the
        engine let them read the record at the door; professionals never get it here)."""
        return self.prescriptions.access_code(task)

    def search(self, request: FhirRequest) -> FhirResponse:
        admission = request.admission
        assert admission is not None
        assert admission.record is not None
        subject = _subject(request)
        patient_id = admission.record.patient_id
        paging = sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )
        total, tasks = self.prescriptions.of_patient(patient_id, paging.offset, paging.count)
        personal = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
        if not personal:
            now = self.api.policy.clock()
            visible = [
                t
                for t in tasks
                if self.api.policy.decide(
                    subject, Action.READ, admission.record, _facts(t), now
                ).permit
            ]
            total -= len(tasks) - len(visible)
            tasks = visible
        body = _searchset(
            request,
            total,
            [task_resource(t, access_code=self._code_of(t) if personal else None) for t in tasks],
            paging.offset,
            paging.count,
        )
        return FhirResponse(200, body, patients=(patient_id,))

    # --- the operations -----------------------------------------------------------------------

    def operation(self, request: FhirRequest) -> FhirResponse:
        actor = actor_of(request)
        task_id = request.resource_id or ""
        match request.operation:
            case "create":
                body = _parameters(self.api, request)
                _check_flow_type(body)
                created = self.prescriptions.create(actor, repeat_of=_repeat_of(body))
                resource = task_resource(created.task, access_code=created.access_code)
                return FhirResponse(
                    201, resource, {"Location": f"{request.base_url}/Task/{created.task.id}"}
                )
            case "print":
                pdf = self.prescriptions.printout(actor, task_id, _required(request, "ac"))
                return FhirResponse(200, None, raw=pdf, media_type="application/pdf")
            case "activate":
                body = _parameters(self.api, request)
                task = self.prescriptions.activate(actor, task_id, signed_from_parameters(body))
                return FhirResponse(200, task_resource(task), patients=_patients(task))
            case "accept":
                code = _required(request, "ac")
                accepted = self.prescriptions.accept(actor, task_id, code)
                bundle = {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [
                        {
                            "fullUrl": f"{request.base_url}/Task/{task_id}",
                            "resource": task_resource(accepted.task, secret=accepted.secret),
                        },
                        {
                            "fullUrl": f"urn:uuid:{task_id}-prescription",
                            "resource": _jose_binary(accepted.signed_prescription),
                        },
                    ],
                }
                return FhirResponse(200, bundle, patients=_patients(accepted.task))
            case "reject":
                task = self.prescriptions.reject(actor, task_id, _required(request, "secret"))
                return FhirResponse(204, None, patients=_patients(task))
            case "close":
                secret = _required(request, "secret")
                dispense = validate_resource(
                    request.json_body(self.api.settings.max_json_depth), "MedicationDispense"
                )
                closed = self.prescriptions.close(
                    actor, task_id, secret, dispense, _canonical(dispense)
                )
                receipt = {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "identifier": {"system": PRESCRIPTION_ID_SYSTEM, "value": closed.task.number},
                    "timestamp": rfc3339_ms(closed.task.updated_at),
                    "entry": [
                        {
                            "fullUrl": f"{request.base_url}/Task/{task_id}",
                            "resource": task_resource(closed.task),
                        },
                        {
                            "fullUrl": f"urn:uuid:{task_id}-receipt",
                            "resource": _jose_binary(closed.receipt),
                        },
                    ],
                    "signature": {
                        "type": [{"system": SIGNATURE_TYPES, "code": SOURCE_SIGNATURE}],
                        "when": rfc3339_ms(closed.task.updated_at),
                        "who": {"display": "CareVault"},
                        "sigFormat": "application/jose",
                        "data": base64.b64encode(closed.receipt.encode("ascii")).decode("ascii"),
                    },
                }
                return FhirResponse(200, receipt, patients=_patients(closed.task))
            case "abort":
                held = _code_param(request, "secret")
                if held is not None:
                    task = self.prescriptions.abort_dispensing(actor, task_id, held)
                else:
                    ac = _code_param(request, "ac")
                    subject = _subject(request)
                    personal = subject.kind in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)
                    if ac is None and not personal:
                        raise InvalidInput(
                            "the prescriber cancels with the access code ('ac'), the pharmacy "
                            "with its secret ('secret')",
                            expression="ac",
                        )
                    if ac is not None:
                        current = self.prescriptions.get(task_id)
                        if current.prescriber_id != subject.id:
                            raise NotPermitted(
                                "only the prescriber cancels with the access code",
                                issue_code="forbidden",
                            )
                    task = self.prescriptions.abort(actor, task_id, ac)
                return FhirResponse(204, None, patients=_patients(task))
        raise NotFound(f"operation ${request.operation} is not defined on Task")


def _subject(request: FhirRequest) -> Any:
    admission = request.admission
    if admission is None or admission.subject is None:
        raise NotPermitted("the request was not decided by the engine", issue_code="forbidden")
    return admission.subject


def _facts(task: StoredTask, task_id: str | None = None) -> DocumentFacts:
    """A prescription as the engine sees a document: of the prescription class, authored by
    its prescriber."""
    return DocumentFacts(task_id or task.id, task.prescriber_id, "", PRESCRIPTION_CLASS)


def _patients(task: StoredTask) -> tuple[str, ...]:
    return (task.patient_id,) if task.patient_id else ()


def _required(request: FhirRequest, name: str) -> str:
    value = _code_param(request, name)
    if not value:
        raise InvalidInput(f"${request.operation} needs '{name}'", expression=name)
    return value


def _parameters(api: ApiContext, request: FhirRequest) -> JsonObject:
    if not request.body:
        return {"resourceType": "Parameters"}
    body = request.json_body(api.settings.max_json_depth)
    if body.get("resourceType") != "Parameters":
        raise InvalidInput(
            f"${request.operation} takes a Parameters resource", expression="resourceType"
        )
    # Validated as R4 says a Parameters is (its parameters a list, each value of its type):
    # the operations below read its parts without checking each one's shape again.
    return validate_resource(body, "Parameters")


def _check_flow_type(body: JsonObject) -> None:
    for parameter in body.get("parameter") or []:
        if parameter.get("name") == "workflowType":
            code = (parameter.get("valueCoding") or {}).get("code")
            if code != FLOW_TYPE:
                raise InvalidInput(
                    f"the workflowType served here is {FLOW_TYPE} (medicines from a pharmacy)",
                    expression="Parameters.parameter.workflowType",
                )


def _repeat_of(body: JsonObject) -> str | None:
    """The task a repeat prescription follows: ``$create``'s ``repeatOf`` parameter, a
    ``valueReference`` to ``Task/[id]`` (the new Task's ``basedOn``)."""
    found = [p for p in body.get("parameter") or [] if p.get("name") == "repeatOf"]
    if not found:
        return None
    reference = (found[0].get("valueReference") or {}).get("reference")
    kind, _slash, task_id = str(reference or "").partition("/")
    if len(found) != 1 or kind != "Task" or not task_id or "/" in task_id or len(task_id) > 64:
        raise InvalidInput(
            "repeatOf is one valueReference to the Task it repeats (Task/[id])",
            expression="Parameters.parameter.repeatOf",
        )
    return task_id


def _canonical(resource: JsonObject) -> str:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


__all__ = ["TaskHandler", "task_resource"]
