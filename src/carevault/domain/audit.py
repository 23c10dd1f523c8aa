"""What the audit log records, and the exact bytes it hashes.

An `AuditRecord` follows the fields of IHE BALP / ATNA (who, on whose behalf, from where, did
what to which patient's what, why, with which outcome, under which rule). Its *canonical form*
is the byte string the Merkle tree commits to: RFC 8785 JSON Canonicalization Scheme restricted
to what records hold (objects with ASCII keys, strings, integers, booleans, null; no floats),
which is exactly ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8. Anyone can rebuild those bytes from the JSON and check the leaf hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

STREAMS = ("clinical", "operator")

# FHIR AuditEvent.action codes.
ACTION_CREATE, ACTION_READ, ACTION_UPDATE, ACTION_DELETE, ACTION_EXECUTE = "C", "R", "U", "D", "E"


@dataclass(frozen=True)
class Agent:
    """Who acted: an identity reference, its role, organization, and on whose behalf."""

    who: str | None = None
    role: str | None = None
    organization: str | None = None
    on_behalf_of: str | None = None
    network: str | None = None


@dataclass(frozen=True)
class ChainLink:
    """An entry's place in its patient's hash chain (`domain/audit_chain.py`): its sequence
    number among the entries about that patient in its stream, and the leaf hash (hex) of the
    previous one; ``None`` for the chain's first entry (its genesis)."""

    seq: int
    previous: str | None


@dataclass(frozen=True)
class AuditRecord:
    stream: str
    recorded: str  # RFC 3339 UTC with milliseconds, "Z"
    kind: str  # access | authentication | policy | patient-action | operator
    action: str  # C R U D E
    interaction: str  # read, search-type, create, login, …
    outcome: str  # FHIR AuditEvent.outcome: 0 success, 4 minor failure, 8 serious, 12 major
    agent: Agent
    patient: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    query: str | None = None
    status: int | None = None
    purpose_of_use: str | None = None
    rule: str | None = None
    request_id: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # Set by the log when it appends an entry about a patient, never by whoever records it;
    # absent from entries without a patient and from those appended before migration 0019.
    chain: ChainLink | None = None

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise ValueError(f"unknown audit stream {self.stream!r}")

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        if self.chain is None:
            del value["chain"]  # an entry without a link keeps the bytes it always had
        return value

    def canonical(self) -> bytes:
        return canonical_bytes(self.to_json())

    @classmethod
    def from_canonical(cls, data: bytes) -> AuditRecord:
        value = json.loads(data)
        value["agent"] = Agent(**value["agent"])
        if "chain" in value:
            value["chain"] = ChainLink(**value["chain"])
        return cls(**value)


def canonical_bytes(value: dict[str, Any]) -> bytes:
    _check_canonical(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _check_canonical(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("audit records hold no floating-point numbers")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise ValueError("audit record keys are ASCII strings")
            _check_canonical(item)
    elif isinstance(value, list):
        for item in value:
            _check_canonical(item)
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise ValueError(f"audit records cannot hold {type(value).__name__}")


def outcome_of(status: int) -> str:
    """FHIR AuditEvent.outcome for an HTTP status."""
    if status < 400:
        return "0"
    if status < 500:
        return "4"
    return "8"


def rfc3339_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Written:
    """What a transaction wrote, as its audit entry names it: the patients whose records or
    identities changed, and the professionals whose roles, licence or teams changed (what
    they may reach changed: the security officer's detector watches what they do next)."""

    patients: list[str]
    professionals: list[str]


# A change to professionals' entries, roles or teams names them in its entry (the security
# officer's detector watches what they reach next); a bulk feed names the first ones and how
# many there were, so that one entry stays small.
PROFESSIONALS = "professionals"
PROFESSIONALS_COUNT = "professionals-count"
MAX_NAMED_PROFESSIONALS = 100


def professionals_detail(professionals: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The detail naming the practitioners a change touched (none: no detail)."""
    if not professionals:
        return {}
    named = {PROFESSIONALS: ",".join(professionals[:MAX_NAMED_PROFESSIONALS])}
    if len(professionals) > MAX_NAMED_PROFESSIONALS:
        named[PROFESSIONALS_COUNT] = str(len(professionals))
    return named


def changed_professionals(record: AuditRecord) -> tuple[str, ...]:
    """The practitioners (ids) whose entries, roles or teams ``record``'s change touched."""
    named = record.detail.get(PROFESSIONALS)
    return tuple(p for p in named.split(",") if p) if isinstance(named, str) else ()
