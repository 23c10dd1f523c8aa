"""What the FHIR handlers are given: units of work, the directories' context, the audit log,
and configuration. Built once by `carevault.bootstrap`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from carevault.domain.affinity import AffinityDomain
from carevault.services.anomaly_detection import AnomalyDetection
from carevault.services.audit_log import AuditLog
from carevault.services.care_access import CareAccess
from carevault.services.directory import DirectoryContext
from carevault.services.directory_service import DirectoryService
from carevault.services.document_exchange import DocumentExchange
from carevault.services.documents import DocumentService
from carevault.services.prescriptions import PrescriptionService
from carevault.services.professionals import Professionals
from carevault.services.record_policy import RecordPolicy
from carevault.services.representatives import Representatives
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    unit_of_work: Callable[[], UnitOfWork]  # handed to the services' reads, never opened here
    directory: DirectoryContext
    directories: DirectoryService  # the directories' use cases, one transaction each
    audit: AuditLog
    settings: Settings
    policy: RecordPolicy
    care: CareAccess  # care events, emergencies, delegations, presence codes
    representatives: Representatives
    documents: DocumentService
    exchange: DocumentExchange  # the MHD use cases, one transaction each
    affinity: AffinityDomain  # the codes ITI-65 metadata must come from, served as ValueSets
    prescriptions: PrescriptionService
    professionals: Professionals  # assistants' mandates
    alerts: AnomalyDetection | None = None  # the security officer's alerts (DetectedIssue)
