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
from carevault.domain.access_history import describe
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
    entries: list[HistoryEntry]
    next_after: int | None  # pass as ``after`` for the next page


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


def access_history(
    log: AuditLog,
    unit_of_work: Callable[[], UnitOfWork],
    patient_id: str,
    *,
    known_size: int | None,
    after: int,
    limit: int,
    language: str,
) -> AccessHistory:
    head = log.sign_tree_head(STREAM)
    if known_size is not None and known_size > head.tree_size:
        raise InvalidInput(
            f"the log has {head.tree_size} entries; a tree head of size "
            f"{known_size} was never published",
            expression="since",
        )
    rows = [
        (i, data)
        for i, data in log.patient_entries(patient_id, after=after, limit=limit + 1)
        if i < head.tree_size
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    records = [(i, data, AuditRecord.from_canonical(data)) for i, data in rows]
    references = {r.agent.who for _, _, r in records if r.agent.who} | {
        r.agent.organization for _, _, r in records if r.agent.organization
    }
    names = _names(unit_of_work, references)
    entries = [
        HistoryEntry(
            i,
            data,
            record,
            describe(record, language, names),
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
