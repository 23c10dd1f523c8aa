"""What the security officer's workspace reads: an alert's accesses and what they have in
common, the audit search, and the log's integrity.

The alerts' workflow itself is `services.anomaly_detection.AnomalyDetection`'s; the pages call
it. Everything here reads the audit log and returns who, whom, when, why and the outcome of each
access, never what was read: an audit entry holds no medical content, and the resource type and
query it names are left out too (a search for a diagnosis code would say something).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from carevault.adapters.storage.audit_store import StoredTreeHead
from carevault.domain import merkle
from carevault.domain.anomaly import StoredAlert
from carevault.domain.audit import STREAMS, AuditRecord
from carevault.domain.errors import InvalidInput
from carevault.domain.tree_head import signed_bytes
from carevault.services.audit_log import AuditLog

MAX_EVIDENCE_SHOWN = 50  # accesses shown under an alert (the latest ones)
PAGE = 25  # audit search results per page
MAX_FILTER_SCAN = 2_000  # entries read to filter by organization or outcome (not indexed)
MAX_REFERENCE = 64
OUTCOMES = ("0", "4", "8", "12")
LOCAL_OFFSET = timedelta(hours=1)  # hours of day are shown as the officer reads them (CET)


@dataclass(frozen=True)
class Access:
    """One audit entry as the officer reads it."""

    leaf: int
    stream: str
    recorded: datetime
    professional: str
    organization: str
    role: str
    patient: str | None
    interaction: str
    outcome: str
    basis: str | None
    purpose: str | None


@dataclass(frozen=True)
class Features:
    """What an alert's accesses have in common: the figures its explanation rests on."""

    accesses: int
    patients: int
    refused: int
    bases: tuple[tuple[str, int], ...]  # basis -> count, most frequent first
    hours: tuple[tuple[int, int], ...]  # local hour -> count, in hour order
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class StreamIntegrity:
    """The state of one audit stream's log, checked now."""

    stream: str
    tree_size: int
    root_hash: str
    signed_at: datetime | None
    signature_valid: bool
    previous_size: int | None
    consistent: bool | None  # the latest head extends the one before it
    stamped_size: int | None
    stamped_at: datetime | None
    stamped_consistent: bool | None  # the latest head extends the time-stamped one
    checked_at: datetime


@dataclass(frozen=True)
class AuditQuery:
    """The audit search's criteria (each optional) and page."""

    stream: str = "clinical"
    patient: str = ""
    professional: str = ""
    organization: str = ""
    outcome: str = ""
    start: datetime | None = None  # from this day (inclusive)
    end: datetime | None = None  # to this day (inclusive)
    page: int = 0


def access_of(leaf: int, record: AuditRecord) -> Access:
    agent = record.agent
    return Access(
        leaf=leaf,
        stream=record.stream,
        recorded=datetime.fromisoformat(record.recorded.replace("Z", "+00:00")),
        professional=agent.on_behalf_of or agent.who or "",
        organization=agent.organization or "",
        role=agent.role or "",
        patient=record.patient,
        interaction=record.interaction,
        outcome=record.outcome,
        basis=record.detail.get("basis"),
        purpose=record.purpose_of_use,
    )


def alert_accesses(log: AuditLog, alert: StoredAlert) -> list[Access]:
    """The accesses an alert rests on (its evidence, the latest `MAX_EVIDENCE_SHOWN`)."""
    found: list[Access] = []
    for leaf in alert.evidence[-MAX_EVIDENCE_SHOWN:]:
        for index, data in log.entries("clinical", leaf, leaf + 1):
            found.append(access_of(index, AuditRecord.from_canonical(data)))
    return found


def features(accesses: Sequence[Access]) -> Features:
    bases = Counter(a.basis or "refused" for a in accesses)
    hours = Counter((a.recorded + LOCAL_OFFSET).hour for a in accesses)
    times = [a.recorded for a in accesses]
    return Features(
        accesses=len(accesses),
        patients=len({a.patient for a in accesses if a.patient}),
        refused=sum(1 for a in accesses if a.outcome != "0"),
        bases=tuple(bases.most_common()),
        hours=tuple(sorted(hours.items())),
        first=min(times, default=None),
        last=max(times, default=None),
    )


def _reference(value: str, kind: str, what: str) -> str:
    value = value.strip().removeprefix(f"{kind}/")
    if len(value) > MAX_REFERENCE or not all(c.isalnum() or c in "-._" for c in value):
        raise InvalidInput(f"{what}: an identifier of at most {MAX_REFERENCE} letters or digits")
    return value


def search(log: AuditLog, query: AuditQuery) -> tuple[int, list[Access]]:
    """Entries matching every criterion, newest first, one page of `PAGE`, with the total.

    Patient, professional and time are indexed; organization and outcome are not, so with
    either the newest `MAX_FILTER_SCAN` entries matching the rest are filtered (the total then
    counts within them: the page says so)."""
    if query.stream not in STREAMS:
        raise InvalidInput(f"the stream is one of {', '.join(STREAMS)}")
    if query.outcome and query.outcome not in OUTCOMES:
        raise InvalidInput(f"the outcome is one of {', '.join(OUTCOMES)}")
    if query.page < 0 or query.page > 10_000:
        raise InvalidInput("no such page")
    patients = [(_reference(query.patient, "Patient", "patient"),)] if query.patient.strip() else []
    agents = []
    if query.professional.strip():
        who = _reference(query.professional, "Practitioner", "professional")
        agents = [(f"Practitioner/{who}",)]
    organization = (
        _reference(query.organization, "Organization", "organization")
        if query.organization.strip()
        else ""
    )
    recorded: list[tuple[str, datetime, datetime]] = []
    if query.start is not None:
        recorded.append(("ge", query.start, query.start))
    if query.end is not None:
        try:
            after = query.end + timedelta(days=1)
        except OverflowError:  # 9999-12-31: no day after it
            raise InvalidInput("the end date is out of range", expression="to") from None
        recorded.append(("lt", after, after))
    if query.start and query.end and query.end < query.start:
        raise InvalidInput("the end comes before the start")
    if not organization and not query.outcome:
        total, rows = log.search_entries(
            query.stream,
            patients=patients,
            agents=agents,
            recorded=recorded,
            offset=query.page * PAGE,
            count=PAGE,
        )
        return total, [access_of(i, AuditRecord.from_canonical(d)) for i, d in rows]
    _, rows = log.search_entries(
        query.stream, patients=patients, agents=agents, recorded=recorded, count=MAX_FILTER_SCAN
    )
    kept = [
        a
        for a in (access_of(i, AuditRecord.from_canonical(d)) for i, d in rows)
        if (not organization or a.organization.removeprefix("Organization/") == organization)
        and (not query.outcome or a.outcome == query.outcome)
    ]
    start = query.page * PAGE
    return len(kept), kept[start : start + PAGE]


def _signature_valid(pem: bytes, head_bytes: bytes, signature: bytes) -> bool:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(signature, head_bytes)
    except InvalidSignature:
        return False
    return True


def _extends(log: AuditLog, latest: StoredTreeHead, older: StoredTreeHead) -> bool:
    """Whether the log's consistency proof shows ``latest`` extends ``older``."""
    try:
        proof = log.consistency_proof(latest.stream, older.tree_size, latest.tree_size)
        merkle.verify_consistency(
            older.tree_size, latest.tree_size, proof, older.root_hash, latest.root_hash
        )
    except merkle.ProofError:
        return False
    return True


def integrity(log: AuditLog, clock: Callable[[], datetime]) -> list[StreamIntegrity]:
    """Each stream's latest signed tree head, its signature checked with the stream's public
    key, and a consistency proof checked from the head before it and from the latest
    time-stamped head (RFC 9162 §2.1.4.2): the log was only appended to."""
    checked: list[StreamIntegrity] = []
    for stream in STREAMS:
        log.latest_tree_head(stream)  # signs one if none is yet
        latest, previous, stamped = log.stored_heads(stream)
        assert latest is not None

        checked.append(
            StreamIntegrity(
                stream=stream,
                tree_size=latest.tree_size,
                root_hash=latest.root_hash.hex(),
                signed_at=datetime.fromtimestamp(latest.timestamp_ms / 1000, UTC),
                signature_valid=_signature_valid(
                    log.public_key_pem(stream),
                    signed_bytes(latest.tree_size, latest.root_hash, latest.timestamp_ms),
                    latest.signature,
                ),
                previous_size=previous.tree_size if previous else None,
                consistent=_extends(log, latest, previous) if previous else None,
                stamped_size=stamped.tree_size if stamped else None,
                stamped_at=datetime.fromtimestamp(stamped.timestamp_ms / 1000, UTC)
                if stamped
                else None,
                stamped_consistent=_extends(log, latest, stamped) if stamped else None,
                checked_at=clock(),
            )
        )
    return checked


__all__ = [
    "Access",
    "AuditQuery",
    "Features",
    "StreamIntegrity",
    "access_of",
    "alert_accesses",
    "features",
    "integrity",
    "search",
]
