"""The medication list (issue #18, item 5): ``MedicationRequest`` and ``MedicationDispense``
searches over the e-prescriptions of the last 12 months, so that a duplicate therapy is seen.

Three ways in, each decided by the engine before anything is read:

- ``?patient=`` — one patient's record (``decide`` on it: the patient and their representatives,
  a professional under the record's rules); a professional then sees each prescription the
  engine lets them read, as a document of the ``prescription`` class by its prescriber;
- ``MedicationRequest?requester=Practitioner/[id]`` — a prescriber's own prescriptions, across
  their patients (``decide_prescribing`` with the prescriber's id: themselves only);
- ``MedicationDispense?performer=Organization/[id]`` — what a pharmacy dispensed
  (``decide_dispensing`` with the pharmacy: one the pharmacist works for).

Every search is one audit entry (the door's recorder), for each patient it names.
"""

from __future__ import annotations

import json
from typing import Any

from carevault.api.fhir import search as sp
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Interaction,
    ResourceHandler,
    SearchParam,
    Target,
)
from carevault.api.fhir.prescription_handlers import _facts
from carevault.api.fhir.record_handlers import _one_patient, _searchset
from carevault.domain.authorization import Action, Subject, SubjectKind
from carevault.domain.errors import InvalidInput, NotPermitted
from carevault.domain.prescriptions import PRESCRIPTION_ID_SYSTEM, StoredTask, expired
from carevault.fhirmodel.prescription import medication_dispense, medication_request
from carevault.services.prescriptions import PrescriptionService
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]

# The Task's status, as the MedicationRequest it carries says it.
_REQUEST_STATUS = {
    "ready": "active",
    "in-progress": "active",
    "completed": "completed",
    "cancelled": "cancelled",
}


def _one_reference(request: FhirRequest, name: str, kind: str) -> str | None:
    found = sp.references(request, name, kind)
    if not found:
        return None
    if len(found) != 1 or len(found[0]) != 1:
        raise InvalidInput(f"give one {name}", expression=name)
    return found[0][0]


class _MedicationList(ResourceHandler):
    """What both searches share: the engine's need, the record filter, the page."""

    interactions = frozenset({Interaction.SEARCH})
    owner_param = ""  # the search parameter that names the owner (requester, performer)
    owner_kind = ""  # the resource type it references
    owner_field = ""  # the store's criterion for it
    owner_target = Target.PRESCRIBING
    dispensed = False

    def __init__(self, api: ApiContext, prescriptions: PrescriptionService) -> None:
        self.api = api
        self.prescriptions = prescriptions

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        owner = _one_reference(request, self.owner_param, self.owner_kind)
        patient = _one_patient(request)
        if owner is not None and patient is not None:
            raise InvalidInput(
                f"search by patient or by {self.owner_param}, not both",
                expression=self.owner_param,
            )
        if owner is not None:
            return AccessNeed(self.owner_target, Action.SEARCH, owner=owner)
        return AccessNeed(Target.RECORD, Action.SEARCH, patient)

    def search(self, request: FhirRequest) -> FhirResponse:
        admission = request.admission
        if admission is None or admission.subject is None:
            raise NotPermitted("the request was not decided by the engine", issue_code="forbidden")
        subject: Subject = admission.subject
        settings = self.api.settings
        paging = sp.page(request, settings.default_page_size, settings.max_page_size)
        owner = _one_reference(request, self.owner_param, self.owner_kind)
        if owner is not None:
            total, tasks = self.prescriptions.medication_list(
                offset=paging.offset,
                count=paging.count,
                dispensed=self.dispensed,
                **{self.owner_field: owner},
            )
        else:
            record = admission.record
            if record is None:
                raise NotPermitted(
                    "the request was not decided on a record", issue_code="forbidden"
                )
            total, tasks = self.prescriptions.medication_list(
                patient_id=record.patient_id,
                dispensed=self.dispensed,
                offset=paging.offset,
                count=paging.count,
            )
            if subject.kind not in (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE):
                now = self.api.policy.clock()
                visible = [
                    t
                    for t in tasks
                    if self.api.policy.decide(subject, Action.READ, record, _facts(t), now).permit
                ]
                total -= len(tasks) - len(visible)
                tasks = visible
        resources = [self.resource(task) for task in tasks]
        patients = tuple(dict.fromkeys(t.patient_id for t in tasks if t.patient_id))
        body = _searchset(request, total, resources, paging.offset, paging.count)
        return FhirResponse(200, body, patients=patients)

    def resource(self, task: StoredTask) -> JsonObject:
        raise NotImplementedError


class MedicationRequestHandler(_MedicationList):
    resource_type = "MedicationRequest"
    search_params = (
        SearchParam("patient", "reference", "The patient's prescriptions of the last 12 months"),
        SearchParam(
            "requester",
            "reference",
            "A prescriber's own prescriptions of the last 12 months (Practitioner)",
        ),
    )
    owner_param, owner_kind, owner_field = "requester", "Practitioner", "prescriber_id"
    owner_target = Target.PRESCRIBING

    def resource(self, task: StoredTask) -> JsonObject:
        assert task.patient_id is not None
        status = _REQUEST_STATUS.get(task.status, "unknown")
        if task.status == "ready" and expired(task.expires_at, self.api.policy.clock()):
            status = "stopped"  # never dispensed within its validity
        return medication_request(
            self.prescriptions.signed_bundle(task),
            task_id=task.id,
            number=task.number,
            number_system=PRESCRIPTION_ID_SYSTEM,
            status=status,
            patient_id=task.patient_id,
            prescriber_id=task.prescriber_id,
            authored=task.created_at,
            expires=task.expires_at,
            repeat_of=task.repeat_of,
        )


class MedicationDispenseHandler(_MedicationList):
    resource_type = "MedicationDispense"
    search_params = (
        SearchParam("patient", "reference", "The patient's dispenses of the last 12 months"),
        SearchParam(
            "performer",
            "reference",
            "What a pharmacy dispensed in the last 12 months (Organization)",
        ),
    )
    owner_param, owner_kind, owner_field = "performer", "Organization", "pharmacy_id"
    owner_target = Target.DISPENSING
    dispensed = True

    def resource(self, task: StoredTask) -> JsonObject:
        assert task.patient_id is not None
        assert task.dispense is not None
        return medication_dispense(
            json.loads(task.dispense),
            task_id=task.id,
            patient_id=task.patient_id,
            pharmacist_id=task.pharmacist_id,
            pharmacy_id=task.pharmacy_id,
            completed=task.updated_at,
        )


__all__ = ["MedicationDispenseHandler", "MedicationRequestHandler"]
