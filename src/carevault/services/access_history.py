"""The patient's access history: who saw what, when and why, with the proofs that it is whole.

Each entry comes with its inclusion proof in the current signed tree head, and the history with
a consistency proof from the tree head the patient's device saw last time: a device that keeps
its last tree head can check, with nothing but the log's public key, that no entry about its
patient was removed or altered since.
"""

from __future__ import annotations

import logging
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
from carevault.verifier import (
    CompletenessProof,
    CompletenessReport,
    ProvenEntry,
    VerificationError,
    verify_completeness,
)

STREAM = "clinical"
_log = logging.getLogger("carevault.audit")
# Entries one completeness proof carries at most (each with its inclusion proof); a longer
# history is proven in steps, each from the tree head the last step ended in.
MAX_PROOF_ENTRIES = 1000


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


def completeness_proof(
    log: AuditLog, patient_id: str, *, since: int | None, limit: int = MAX_PROOF_ENTRIES
) -> CompletenessProof:
    """The proof that the patient's history is complete from the signed tree head of size
    ``since`` (``None``: from the start of their chain) up to their latest entry in a freshly
    signed head, or their ``limit``-th entry after ``since`` (`carevault.verifier`).

    The anchor is the patient's last entry before ``since``, if it carries a link: entries
    appended before the chains began (migration 0019) carry none, and the proof then starts at
    the chain's genesis."""
    head = log.sign_tree_head(STREAM)
    older = None
    if since is not None:
        if since > head.tree_size:
            raise InvalidInput(
                f"the log has {head.tree_size} entries; no tree head of size {since} was signed",
                expression="since",
            )
        try:
            older = log.tree_head(STREAM, since)
        except LookupError as error:
            raise InvalidInput(
                f"no tree head of size {since} was signed", expression="since"
            ) from error

    def proven(index: int, data: bytes) -> ProvenEntry:
        return ProvenEntry(index, data, log.inclusion_proof(STREAM, index, head.tree_size))

    anchor = None
    start = older.tree_size if older is not None else 0
    if start > 0:
        before = log.patient_entries(patient_id, before=start, limit=1, newest_first=True)
        if before and _linked(before[0][1]):
            anchor = proven(*before[0])
    rows = log.patient_entries(patient_id, after=start - 1, before=head.tree_size, limit=limit)
    if anchor is None:  # the proof starts at the genesis: drop what came before the chains
        rows = [(i, data) for i, data in rows if _linked(data)]
    return CompletenessProof(
        patient_id,
        head,
        [proven(i, data) for i, data in rows],
        since=older,
        consistency=(
            log.consistency_proof(STREAM, start, head.tree_size) if older is not None else ()
        ),
        anchor=anchor,
    )


def _linked(data: bytes) -> bool:
    return AuditRecord.from_canonical(data).chain is not None


def verified_completeness(
    log: AuditLog, patient_id: str, oldest_shown: int
) -> CompletenessReport | None:
    """Whether the patient's history is complete from the last tree head signed before the
    oldest entry shown to their latest entry, computed by verifying the proof with the log's
    public key (`carevault.verifier`), never asserted; ``None`` if it does not verify."""
    older = log.tree_head_before(STREAM, oldest_shown + 1)
    proof = completeness_proof(
        log, patient_id, since=older.tree_size if older is not None and older.tree_size else None
    )
    try:
        return verify_completeness(log.public_key_pem(STREAM), proof)
    except VerificationError as error:
        log_warning(patient_id, error)
        return None


def log_warning(patient_id: str, error: VerificationError) -> None:
    _log.error("the access history of a patient does not verify: %s", error)
