"""What the export of a record holds, read step by step (GDPR portability).

`RecordExport.parts` yields, in order: the patient's identity, every document the caller sees
with its content (checked and decrypted by `DocumentService.everything`: the list a hundred
at a time, each content read in a short transaction of its own as it is yielded), the
record's grants and blocks, and the access history a page at a time. The surfaces shape and
stream it: ``Patient/[id]/$everything`` and the portal's download, both through
`carevault.api.fhir.record_export`. The caller's access is decided by whoever calls, before
the first part is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from carevault.adapters.storage.document_store import DocumentCriteria
from carevault.domain.affinity import AffinityDomain
from carevault.domain.authorization import RecordFacts, Subject
from carevault.domain.records import StoredBlock, StoredGrant
from carevault.services.access_history import AccessHistory, access_history
from carevault.services.audit_log import AuditLog
from carevault.services.directory import read_patient
from carevault.services.documents import DocumentService, Retrieved
from carevault.services.unit_of_work import UnitOfWork

EXPORT_STEP = 100  # documents (and history entries) read per transaction


@dataclass(frozen=True)
class Identity:
    """The patient's entry in the index, as stored (a FHIR Patient)."""

    resource: dict[str, object]


ExportPart = Identity | Retrieved | StoredGrant | StoredBlock | AccessHistory


@dataclass(frozen=True)
class RecordExport:
    units: Callable[[], UnitOfWork]
    documents: DocumentService
    audit: AuditLog
    affinity: AffinityDomain

    def document_count(self, subject: Subject, record: RecordFacts) -> int:
        """How many documents the export holds (its progress, in the portal)."""
        with self.units() as uow:
            total, _ = self.documents.find(
                uow, subject, record, DocumentCriteria(), offset=0, count=0
            )
        return total

    def parts(self, subject: Subject, record: RecordFacts, language: str) -> Iterator[ExportPart]:
        patient_id = record.patient_id
        with self.units() as uow:
            yield Identity(read_patient(uow, patient_id).resource)
        yield from self.documents.everything(self.units, subject, record, EXPORT_STEP)
        with self.units() as uow:
            grants = uow.records.grants(patient_id)
            blocks = uow.records.blocks(patient_id)
        yield from grants
        yield from blocks
        after = -1
        while True:
            history = access_history(
                self.audit,
                self.units,
                patient_id,
                known_size=None,
                after=after,
                limit=EXPORT_STEP,
                language=language,
                affinity=self.affinity,
            )
            if history.entries:
                yield history
            if history.next_after is None or not history.entries:
                return
            after = history.next_after


__all__ = [
    "EXPORT_STEP",
    "ExportPart",
    "Identity",
    "RecordExport",
    "Retrieved",
    "StoredBlock",
    "StoredGrant",
]
