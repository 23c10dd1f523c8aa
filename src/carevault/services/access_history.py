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
from datetime import UTC, datetime

from carevault.domain.access_history import (
    DocumentLabel,
    break_the_glass_parts,
    by_professional_or_system,
    describe,
    is_emergency_declaration,
)
from carevault.domain.affinity import CLASS_CODES, TYPE_CODES, AffinityDomain
from carevault.domain.affinity import LANGUAGES as AFFINITY_LANGUAGES
from carevault.domain.audit import AuditRecord
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.tree_head import TreeHead
from carevault.services import directory as svc
from carevault.services.audit_log import AuditLog
from carevault.services.unit_of_work import UnitOfWork
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
# A filtered reading (emergencies only, refusals only, …) reads the patient's entries newest
# first in batches and stops after this many: a page costs a bounded amount of work whatever
# the history's length, and says when it stopped short.
FILTER_BATCH = 500
MAX_FILTER_SCAN = 20_000
# The accesses-per-month chart counts at most this many entries (and says when it stopped).
MAX_CHART_ENTRIES = 20_000


@dataclass(frozen=True)
class MonthOfAccesses:
    """Accesses to the record by professionals and systems in one calendar month (UTC), and
    the emergencies declared among them (one per break-the-glass)."""

    year: int
    month: int
    accesses: int
    emergencies: int


@dataclass(frozen=True)
class MonthlyAccesses:
    months: list[MonthOfAccesses]  # oldest first, every month of the span, empty ones too
    capped: bool  # MAX_CHART_ENTRIES were counted and more were left out


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
    # A filtered reading looked at the latest MAX_FILTER_SCAN entries only, and found fewer
    # than it asked for: older ones may match too.
    partial: bool = False


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
    # The affinity domain names document kinds in fewer languages than the history is told in.
    language = language if language in AFFINITY_LANGUAGES else AFFINITY_LANGUAGES[0]
    with unit_of_work() as uow:
        store = uow.documents
        for document_id in sorted(wanted):
            stored = store.of_patient(patient_id, document_id)
            if stored is None:  # unknown, or another patient's
                continue
            document = stored.metadata
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
    keep: Callable[[AuditRecord], bool] | None = None,
    recorded_between: tuple[datetime, datetime] | None = None,
    with_proofs: bool = True,
    head: TreeHead | None = None,
) -> AccessHistory:
    """A page of the patient's history, each entry in plain words with its inclusion proof.

    In the log's order (leaf index) from ``after`` on, for a device that pages through it; or,
    ``newest_first``, the ``limit`` latest entries, latest first, for a person reading it (no
    next page then). The order is always the log's, never the entries' recorded times: two
    entries of the same millisecond, or of clocks a little apart, keep the order they were
    recorded in. ``affinity`` gives the words for the documents entries concern.

    A person may narrow the newest-first reading to the entries ``keep`` accepts (at most
    MAX_FILTER_SCAN entries are looked at: ``partial`` says if that was not all of them) and
    recorded in ``recorded_between`` (from, before). A page that shows the lines without their
    proofs (the portal verifies the completeness proof instead) asks ``with_proofs=False``:
    each entry's ``audit_path`` is then empty. The page is read in ``head``, one the caller
    took just before, or in the latest signed tree head that covers every entry about the
    patient so far, signed now only if there is none such or it is an interval old
    (`AuditLog.recent_tree_head`): not whenever the rest of the log grew, which each request
    does. Entries and proofs are read in that head's size, so they verify against it."""
    head = head if head is not None else log.recent_tree_head(STREAM, patient=patient_id)
    if known_size is not None and known_size > head.tree_size:
        raise InvalidInput(
            f"the log has {head.tree_size} entries; a tree head of size "
            f"{known_size} was never published",
            expression="since",
        )
    if keep is not None and not newest_first:
        raise ValueError("a filtered history is read newest first")
    since, until = recorded_between if recorded_between is not None else (None, None)
    partial = False
    if keep is not None:
        records, partial = _newest_matching(
            log, patient_id, head.tree_size, limit, keep, since, until
        )
        more = False
        rows = [(i, data) for i, data, _ in records]
    else:
        rows = log.patient_entries(
            patient_id,
            after=after,
            before=head.tree_size,
            limit=limit + 1,
            newest_first=newest_first,
            recorded_from=since,
            recorded_before=until,
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
    proofs = (
        log.inclusion_proofs(STREAM, (i for i, _, _ in records), head.tree_size)
        if with_proofs
        else {}
    )
    entries = [
        HistoryEntry(
            i, data, record, describe(record, language, names, documents), proofs.get(i, [])
        )
        for i, data, record in records
    ]
    consistency = (
        log.consistency_proof(STREAM, known_size, head.tree_size)
        if known_size is not None
        else None
    )
    return AccessHistory(
        head, consistency, entries, rows[-1][0] if more and rows else None, partial
    )


def _newest_matching(
    log: AuditLog,
    patient_id: str,
    before: int,
    limit: int,
    keep: Callable[[AuditRecord], bool],
    since: datetime | None,
    until: datetime | None,
) -> tuple[list[tuple[int, bytes, AuditRecord]], bool]:
    """The ``limit`` newest entries ``keep`` accepts, reading back in batches; and whether the
    reading stopped at MAX_FILTER_SCAN with older entries left unread."""
    found: list[tuple[int, bytes, AuditRecord]] = []
    scanned = 0
    while scanned < MAX_FILTER_SCAN:
        asked = min(FILTER_BATCH, MAX_FILTER_SCAN - scanned)
        batch = log.patient_entries(
            patient_id,
            before=before,
            limit=asked,
            newest_first=True,
            recorded_from=since,
            recorded_before=until,
        )
        for index, data in batch:
            record = AuditRecord.from_canonical(data)
            if keep(record):
                found.append((index, data, record))
                if len(found) == limit:
                    return found, False
        scanned += len(batch)
        if len(batch) < asked:  # the patient's entries ended before the bound
            return found, False
        before = batch[-1][0]
    return found, True


def accesses_per_month(
    log: AuditLog, patient_id: str, *, now: datetime, months: int = 12
) -> MonthlyAccesses:
    """How many times professionals and systems reached the record in each of the last
    ``months`` calendar months (UTC), this one included, and how many emergencies were
    declared: the history page's chart. A break-the-glass counts once, as the page shows it
    (`break_the_glass_parts`). The patient's own visits, which every reading of
    the page adds, are left out by the query itself, not read and skipped."""
    if not 1 <= months <= 120:
        raise InvalidInput("a chart spans 1 to 120 months", expression="months")
    now = now.astimezone(UTC)
    spans = []
    year, month = now.year, now.month
    for _ in range(months):
        spans.append((year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    spans.reverse()
    start = datetime(spans[0][0], spans[0][1], 1, tzinfo=UTC)
    rows = log.patient_entries(
        patient_id,
        limit=MAX_CHART_ENTRIES + 1,
        newest_first=True,
        recorded_from=start,
        by_others=True,
    )
    capped = len(rows) > MAX_CHART_ENTRIES
    counts = {span: [0, 0] for span in spans}
    records = [(i, AuditRecord.from_canonical(data)) for i, data in rows[:MAX_CHART_ENTRIES]]
    # A break-the-glass is one access (and one emergency), as the history tells it: its
    # request and the officer's alert are folded into its declaration.
    folded = break_the_glass_parts(records)
    for index, record in records:
        if index in folded or not by_professional_or_system(record):
            continue
        at = datetime.fromisoformat(record.recorded.replace("Z", "+00:00"))
        tally = counts.get((at.year, at.month))
        if tally is None:  # recorded in the future by a clock ahead: not this chart's
            continue
        tally[0] += 1
        tally[1] += is_emergency_declaration(record)
    return MonthlyAccesses([MonthOfAccesses(y, m, *counts[(y, m)]) for y, m in spans], capped)


def completeness_proof(
    log: AuditLog,
    patient_id: str,
    *,
    since: int | None,
    limit: int = MAX_PROOF_ENTRIES,
    head: TreeHead | None = None,
    since_head: TreeHead | None = None,
) -> CompletenessProof:
    """The proof that the patient's history is complete from the signed tree head of size
    ``since`` (``None``: from the start of their chain) up to their latest entry in a freshly
    signed head (or ``head``, a signed head the caller already holds), or their ``limit``-th
    entry after ``since`` (`carevault.verifier`). A caller that already read the head of size
    ``since`` passes it as ``since_head``.

    The anchor is the patient's last entry before ``since``, if it carries a link: entries
    appended before the chains began (migration 0019) carry none, and the proof then starts at
    the chain's genesis."""
    head = head if head is not None else log.sign_tree_head(STREAM)
    older = None
    if since is not None:
        if since > head.tree_size:
            raise InvalidInput(
                f"the log has {head.tree_size} entries; no tree head of size {since} was signed",
                expression="since",
            )
        if since_head is not None and since_head.tree_size == since:
            older = since_head
        else:
            try:
                older = log.tree_head(STREAM, since)
            except LookupError as error:
                raise InvalidInput(
                    f"no tree head of size {since} was signed", expression="since"
                ) from error

    start = older.tree_size if older is not None else 0
    material = log.patient_proof_material(
        patient_id,
        start=start,
        tree_size=head.tree_size,
        limit=limit,
        consistency=older is not None,
    )
    anchored = material.anchor if material.anchor and _linked(material.anchor[1]) else None
    rows = material.rows
    if anchored is None:  # the proof starts at the genesis: drop what came before the chains
        rows = [(i, data) for i, data in rows if _linked(data)]
    proofs = material.inclusion
    anchor = ProvenEntry(anchored[0], anchored[1], proofs[anchored[0]]) if anchored else None
    return CompletenessProof(
        patient_id,
        head,
        [ProvenEntry(i, data, proofs[i]) for i, data in rows],
        since=older,
        consistency=material.consistency if older is not None else (),
        anchor=anchor,
    )


def _linked(data: bytes) -> bool:
    return AuditRecord.from_canonical(data).chain is not None


def verified_completeness(
    log: AuditLog, patient_id: str, oldest_shown: int, head: TreeHead | None = None
) -> CompletenessReport | None:
    """Whether the patient's history is complete from the last tree head signed before the
    oldest entry shown to their latest entry in ``head`` (the head the entries shown were
    proven in; a freshly signed one if None), computed by verifying the proof with the log's
    public key (`carevault.verifier`), never asserted; ``None`` if it does not verify."""
    older = log.tree_head_before(STREAM, oldest_shown + 1)
    proof = completeness_proof(
        log,
        patient_id,
        since=older.tree_size if older is not None and older.tree_size else None,
        head=head,
        since_head=older,
    )
    try:
        return verify_completeness(log.public_key_pem(STREAM), proof)
    except VerificationError as error:
        log_warning(patient_id, error)
        return None


def log_warning(patient_id: str, error: VerificationError) -> None:
    _log.error("the access history of a patient does not verify: %s", error)
