"""The retention job: a closed record's documents are purged after the legal period, by an
explicit, audited run and by nothing else.

A closed record is sealed already: its documents stay encrypted and the engine lets nobody but
the patient (and the representative who manages it) reach them. When the record has been
closed, unchanged, for ``years`` (10 by default, `Settings.retention_years`), ``purge_due``
deletes its documents (`DocumentStore.purge_record`, the only code that deletes a document)
in one transaction with their audit entries: one in the patient's clinical history naming the
documents by id, one in the operators' stream. The audit log keeps every earlier entry: they
reference documents, never contain them, so it still verifies after the purge. The blobs of the
filesystem store go once the transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.domain.audit import ACTION_DELETE, Agent, AuditRecord, rfc3339_ms
from carevault.services.audit_log import AuditLog
from carevault.services.unit_of_work import UnitOfWork

DEFAULT_YEARS = 10


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    patients: int
    documents: int


def years_before(moment: datetime, years: int) -> datetime:
    """The same calendar instant ``years`` earlier (29 February becomes the 28th)."""
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:
        return moment.replace(year=moment.year - years, day=28)


class Retention:
    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        log: AuditLog,
        clock: Callable[[], datetime],
        *,
        years: int = DEFAULT_YEARS,
        blobs: FileBlobStore | None = None,
    ) -> None:
        if years < 1:
            raise ValueError("the retention period is at least one year")
        self.units = units
        self.log = log
        self.clock = clock
        self.years = years
        self.blobs = blobs

    def cutoff(self) -> datetime:
        return years_before(self.clock(), self.years)

    def due(self, limit: int = 1000) -> list[str]:
        """The patients whose closed record's documents a run would purge now."""
        with self.units() as uow:
            return uow.records.closed_with_documents(self.cutoff(), limit)

    def purge_due(self, *, by: str, batch: int = 100) -> PurgeReport:
        """Purge every record due, each in its own transaction with its audit entries.
        ``by`` is who ran the job (``os-user:NAME``)."""
        cutoff = self.cutoff()
        patients = documents = 0
        while True:
            with self.units() as uow:
                due = uow.records.closed_with_documents(cutoff, batch)
            if not due:
                return PurgeReport(cutoff, patients, documents)
            for patient_id in due:
                documents += self._purge(patient_id, cutoff, by)
                patients += 1

    def _purge(self, patient_id: str, cutoff: datetime, by: str) -> int:
        now = self.clock()
        with self.units() as uow:
            # Checked again inside the transaction: a record reopened meanwhile is kept.
            if not uow.records.due_for_purge(patient_id, cutoff):
                return 0
            purged = uow.documents.purge_record(patient_id)
            detail = {
                "reason": f"record closed before {cutoff.date().isoformat()}: "
                f"retention of {self.years} years over",
                "documents": str(len(purged)),
            }
            agent = Agent(who=by, role="operator", network="local")
            entries = [
                AuditRecord(
                    stream="clinical",
                    recorded=rfc3339_ms(now),
                    kind="retention",
                    action=ACTION_DELETE,
                    interaction="retention-purge",
                    outcome="0",
                    agent=agent,
                    patient=patient_id,
                    entity_type="DocumentReference",
                    detail={**detail, "ids": " ".join(purged)[:4000]},
                ),
                AuditRecord(
                    stream="operator",
                    recorded=rfc3339_ms(now),
                    kind="operator",
                    action=ACTION_DELETE,
                    interaction="retention-purge",
                    outcome="0",
                    agent=agent,
                    entity_type="Patient",
                    entity_id=patient_id,
                    detail=detail,
                ),
            ]
            self.log.append_with(uow.audit, entries)
            uow.commit()
        if self.blobs is not None:
            for document_id in purged:
                self.blobs.delete(document_id)
        return len(purged)
