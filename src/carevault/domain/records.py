"""A record's grants, blocks and care events as they are kept: the engine's facts (`Grant`,
`Block`) with when and by whom they were made and ended, and a care event with the Encounter it
came from. The record store answers with them; the API shows them as FHIR (Consent, Encounter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carevault.domain.authorization import Block, Delegation, Grant

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class StoredGrant:
    grant: Grant
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    source_ref: str | None = None


@dataclass(frozen=True)
class StoredBlock:
    block: Block
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None


@dataclass(frozen=True)
class StoredEncounter:
    """A care event; ``resource`` is the FHIR Encounter, the columns are derived from it."""

    id: str
    version_id: int
    patient_id: str
    practitioner_id: str
    organization_id: str | None
    period_start: datetime
    period_end: datetime | None
    resource: JsonObject
    created_at: datetime


@dataclass(frozen=True)
class PartyGrant:
    """A grant in force, with the record it belongs to: a professional's accesses are listed
    across records (`RecordStore.grants_to`)."""

    patient_id: str
    grant: Grant


@dataclass(frozen=True)
class PartyDelegation:
    """A delegation in force, with the record it belongs to (`RecordStore.delegations_of`)."""

    patient_id: str
    delegation: Delegation


@dataclass(frozen=True)
class PartyEmergency:
    """An emergency window still open, with the record and the reason given
    (`RecordStore.emergencies_of`)."""

    id: str
    patient_id: str
    practitioner_id: str
    reason: str
    start: datetime
    end: datetime


__all__ = [
    "PartyDelegation",
    "PartyEmergency",
    "PartyGrant",
    "StoredBlock",
    "StoredEncounter",
    "StoredGrant",
]
