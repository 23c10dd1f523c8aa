"""A record's grants, blocks and care events as they are kept: the engine's facts (`Grant`,
`Block`) with when and by whom they were made and ended, and a care event with the Encounter it
came from. The record store answers with them; the API shows them as FHIR (Consent, Encounter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carevault.domain.authorization import Block, Grant

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


__all__ = ["StoredBlock", "StoredEncounter", "StoredGrant"]
