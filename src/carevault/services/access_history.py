"""The patient's access history: who saw what, when and why, with the proofs that it is whole.

Each entry comes with its inclusion proof in the current signed tree head, and the history with
a consistency proof from the tree head the patient's device saw last time: a device that keeps
its last tree head can check, with nothing but the log's public key, that no entry about its
patient was removed or altered since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.domain.access_history import DocumentLabel, describe
from carevault.domain.affinity import CLASS_CODES, TYPE_CODES, AffinityDomain
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.tree_head import TreeHead
from carevault.services import directory as svc
from carevault.services.audit_log import AuditLog

STREAM = "clinical"


@dataclass(frozen=True)
class HistoryEntry:
    leaf_index: int
    leaf_input: bytes
    record: AuditRecord
    text: str
    audit_path: list[bytes]


@dataclass(frozen=True)
class AccessHistory:
    tree_head: TreeHead
    consistency: list[bytes] | None  # from the size the device saw last, if it said one
    entries: list[HistoryEntry]  # in the log's order; newest first if asked so
    next_after: int | None  # pass as ``after`` for the next page (in the log's order)


def _display_name(resource: dict[str, object]) -> str | None:
    name = resource.get("name")
    if isinstance(name, str):
        return name
    if isinstance(name, list) and name and isinstance(name[0], dict):
        given = " ".join(str(g) for g in name[0].get("given", []))
        return f"{given} {name[0].get('family', '')}".strip() or None
    return None


def _names(unit_of_work: Callable[[], UnitOfWork], references: set[str]) -> dict[str, str]:
    """Display names of the practitioners and organizations the entries mention."""
    names: dict[str, str] = {}
    with unit_of_work() as uow:
        for reference in references:
            kind, _, ident = reference.partition("/")
            if kind not in ("Practitioner", "Organization"):
                continue
            try:
                found = _display_name(svc.read_resource(uow, kind, ident).resource)
            except NotFound:
                continue
            if found:
                names[reference] = found
    return names


def _documents(
    unit_of_work: Callable[[], UnitOfWork],
    affinity: AffinityDomain,
    patient_id: str,
    records: list[AuditRecord],
    language: str,
) -> dict[str, DocumentLabel]:
    """What the history may say of the documents the entries concern: the display of their
    type (or class) from the affinity domain, never their sealed title or their content.

    A document the patient may not see yet (held until its author releases it, rule 4 of the
    engine) is not named: the history would tell the patient what the result is about."""
    wanted = {
        r.entity_id
        for r in records
        if r.entity_type in ("DocumentReference", "Binary") and r.entity_id
    }
    if not wanted:
        return {}
    labels: dict[str, DocumentLabel] = {}
    with unit_of_work() as uow:
        store = uow.documents
        for document_id in sorted(wanted):
            stored = store.get(document_id)
            if stored is None:
                continue
            document = stored.metadata
            if document.patient_id != patient_id:
                continue
            if document.not_yet_visible_to_patient and not document.patient_authored:
                continue
            kind = affinity.display(
                TYPE_CODES, document.type_code.system, document.type_code.code, language
            ) or affinity.display(
                CLASS_CODES, document.class_code.system, document.class_code.code, language
            )
            if kind is not None:
                labels[document_id] = DocumentLabel(kind, signature=document.signs is not None)
    return labels


def access_history(
    log: AuditLog,
    unit_of_work: Callable[[], UnitOfWork],
    patient_id: str,
    *,
    known_size: int | None,
    after: int,
    limit: int,
    language: str,
    affinity: AffinityDomain,
    newest_first: bool = False,
) -> AccessHistory:
    """A page of the patient's history, each entry in plain words with its inclusion proof.

    In the log's order (leaf index) from ``after`` on, for a device that pages through it; or,
    ``newest_first``, the ``limit`` latest entries, latest first, for a person reading it (no
    next page then). The order is always the log's, never the entries' recorded times: two
    entries of the same millisecond, or of clocks a little apart, keep the order they were
    recorded in. ``affinity`` gives the words for the documents entries concern."""
    head = log.sign_tree_head(STREAM)
    if known_size is not None and known_size > head.tree_size:
        raise InvalidInput(
            f"the log has {head.tree_size} entries; a tree head of size "
            f"{known_size} was never published",
            expression="since",
        )
    rows = log.patient_entries(
        patient_id,
        after=after,
        before=head.tree_size,
        limit=limit + 1,
        newest_first=newest_first,
    )
    more = len(rows) > limit and not newest_first
    rows = rows[:limit]
    records = [(i, data, AuditRecord.from_canonical(data)) for i, data in rows]
    references = {
        reference
        for _, _, r in records
        for reference in (r.agent.who, r.agent.organization, r.agent.on_behalf_of)
        if reference
    }
    names = _names(unit_of_work, references)
    documents = _documents(unit_of_work, affinity, patient_id, [r for _, _, r in records], language)
    entries = [
        HistoryEntry(
            i,
            data,
            record,
            describe(record, language, names, documents),
            log.inclusion_proof(STREAM, i, head.tree_size),
        )
        for i, data, record in records
    ]
    consistency = (
        log.consistency_proof(STREAM, known_size, head.tree_size)
        if known_size is not None
        else None
    )
    return AccessHistory(head, consistency, entries, rows[-1][0] if more and rows else None)
