"""The registry of FHIR handlers: every resource the API serves, in one list.

The door routes each request to its resource's handler from this list, and the
CapabilityStatement is generated from it; a new resource is one more handler here (with its
``access_need``, or the door never reaches it)."""

from __future__ import annotations

from carevault.api.fhir.alert_handlers import DetectedIssueHandler
from carevault.api.fhir.audit_handlers import AuditEventHandler
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.directory_handlers import (
    CareTeamHandler,
    EndpointHandler,
    OrganizationHandler,
    PatientHandler,
    PractitionerHandler,
    PractitionerRoleHandler,
)
from carevault.api.fhir.document_handlers import (
    BinaryHandler,
    DocumentReferenceHandler,
    SubmissionSetHandler,
    TransactionHandler,
)
from carevault.api.fhir.door import ResourceHandler
from carevault.api.fhir.medication_handlers import (
    MedicationDispenseHandler,
    MedicationRequestHandler,
)
from carevault.api.fhir.prescription_handlers import TaskHandler
from carevault.api.fhir.record_handlers import (
    CommunicationHandler,
    ConsentHandler,
    EncounterHandler,
)
from carevault.api.fhir.terminology_handlers import ValueSetHandler


def fhir_handlers(api: ApiContext) -> list[ResourceHandler]:
    """Every resource the FHIR API serves; the door and the CapabilityStatement use this list."""
    return [
        PatientHandler(api),
        PractitionerHandler(api),
        PractitionerRoleHandler(api),
        OrganizationHandler(api),
        CareTeamHandler(api),
        EndpointHandler(api),
        AuditEventHandler(api),
        DetectedIssueHandler(api),
        ConsentHandler(api),
        EncounterHandler(api),
        CommunicationHandler(api),
        TransactionHandler(api),
        DocumentReferenceHandler(api),
        BinaryHandler(api),
        SubmissionSetHandler(api),
        TaskHandler(api, api.prescriptions),
        MedicationRequestHandler(api, api.prescriptions),
        MedicationDispenseHandler(api, api.prescriptions),
        ValueSetHandler(
            api.affinity,
            default_page_size=api.settings.default_page_size,
            max_page_size=api.settings.max_page_size,
        ),
    ]
