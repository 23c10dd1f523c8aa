"""What would this professional see? The patient's preview, for one practitioner, of the
documents of their record the engine would let that practitioner see now.

Nothing here decides: the practitioner is described as the directory describes them
(`practitioner_subject`), the engine decides their search of the record
(`domain.authorization.decide`) and the documents are those its filter lets through
(`visible_filter`, applied by the document store as for the practitioner's own search). The
preview is itself recorded: the patient learnt something about their record.

It counts and lists only the documents the one who asks may see too: a professional sees
documents held back from the patient until they are explained, and every document they wrote
whatever its confidentiality, and a representative may not read a secret (V) document; the
preview must not show their titles, nor their number, where the asker's own reading would not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from carevault.domain.audit import AuditRecord, rfc3339_ms
from carevault.domain.authorization import (
    Action,
    Decision,
    SubjectKind,
    visible_filter,
)
from carevault.domain.documents import DocumentCriteria, DocumentMetadata
from carevault.domain.errors import NotFound
from carevault.services.documents import DocumentService
from carevault.services.record_policy import Actor, RecordPolicy, practitioner_subject
from carevault.services.unit_of_work import UnitOfWork

PREVIEW_LIMIT = 200  # documents listed in one preview, at most; the total is always given


@dataclass(frozen=True)
class Preview:
    practitioner_id: str
    decision: Decision  # the engine's on the practitioner searching the record now
    total: int  # documents they would see
    documents: tuple[DocumentMetadata, ...]  # the first PREVIEW_LIMIT, newest first


def what_they_would_see(
    policy: RecordPolicy,
    documents: DocumentService,
    units: Callable[[], UnitOfWork],
    actor: Actor,
    patient_id: str,
    practitioner_id: str,
) -> Preview:
    """The preview, for the patient or a representative (the engine's ``personal`` reading of
    the record), recorded in the same transaction as an ``access-preview``."""
    now = policy.clock()
    with units() as uow:
        record = policy.facts(uow, patient_id, now)
        mine = policy.require(actor.subject, Action.PERSONAL, record, None, now)
        if uow.directory.practitioner(practitioner_id) is None:
            raise NotFound("this professional is not in the directory")
        subject = practitioner_subject(uow, practitioner_id, now=now)
        decision = policy.decide(subject, Action.SEARCH, record, None, now)
        total, found = 0, list[DocumentMetadata]()
        if decision.permit and record is not None:
            yours = visible_filter(actor.subject, record, now, documents.matrix)
            total, found = documents.find(
                uow,
                subject,
                record,
                DocumentCriteria(also_visible_to=yours),
                offset=0,
                count=PREVIEW_LIMIT,
            )
        on_behalf = (
            f"Patient/{patient_id}" if actor.subject.kind is SubjectKind.REPRESENTATIVE else None
        )
        policy.audit.append_with(
            uow.audit,
            [
                AuditRecord(
                    stream="clinical",
                    recorded=rfc3339_ms(now),
                    kind="patient-action",
                    action="R",
                    interaction="access-preview",
                    outcome="0",
                    agent=actor.agent(on_behalf),
                    patient=patient_id,
                    entity_type="Practitioner",
                    entity_id=practitioner_id,
                    rule=" → ".join(mine.path),
                    detail={"documents": str(total), "decision": decision.explain()},
                )
            ],
        )
        uow.commit()
    return Preview(practitioner_id, decision, total, tuple(found))


__all__ = ["PREVIEW_LIMIT", "Preview", "what_they_would_see"]
