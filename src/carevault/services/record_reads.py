"""What the record's FHIR resources are read from, each in a read of its own.

The door has already decided (the gate: who may see the record's consents, encounters and
notifications); the handlers of `Consent`, `Encounter` and `Communication` then read what they
answer with through these use cases instead of opening a unit of work themselves. Every read
is by the patient key, or by an id whose record the gate resolved first.
"""

from __future__ import annotations

from datetime import datetime

from carevault.adapters.storage.record_store import PatientNotification
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.authorization import RecordFacts
from carevault.domain.records import StoredBlock, StoredEncounter, StoredGrant
from carevault.services.unit_of_work import Units


def consents(units: Units, patient_id: str) -> tuple[list[StoredGrant], list[StoredBlock]]:
    """Every grant and block of the record, withdrawn ones included (their Consent says so)."""
    with units() as uow:
        grants = uow.records.grants(patient_id, include_revoked=True)
        blocks = uow.records.blocks(patient_id, include_revoked=True)
    return grants, blocks


def consent(
    units: Units, patient_id: str, consent_id: str
) -> tuple[StoredGrant | None, StoredBlock | None]:
    """The grant or the block of the record with this id (withdrawn ones included)."""
    with units() as uow:
        grant = uow.records.grant(patient_id, consent_id)
        if grant is not None:
            return grant, None
        blocks = uow.records.blocks(patient_id, include_revoked=True)
    return None, next((b for b in blocks if b.block.id == consent_id), None)


def record_now(units: Units, patient_id: str, now: datetime) -> RecordFacts | None:
    """The record's facts as they are after a change (the gate's are from before it)."""
    with units() as uow:
        return uow.records.load(patient_id, now)


def encounter(units: Units, encounter_id: str) -> StoredEncounter | None:
    with units() as uow:
        return uow.records.encounter(encounter_id)


def encounters(
    units: Units, patient_id: str, offset: int, count: int
) -> tuple[int, list[StoredEncounter]]:
    """A page of the record's encounters and how many there are."""
    with units() as uow:
        return uow.records.encounters(patient_id, offset, count)


def notification(units: Units, notification_id: str) -> PatientNotification | None:
    with units() as uow:
        return uow.records.notification(notification_id)


def notifications(
    units: Units, patient_id: str, offset: int, count: int
) -> tuple[int, list[PatientNotification]]:
    """A page of what the patient was told and how many messages there are."""
    with units() as uow:
        return uow.records.notifications(patient_id, offset, count)


def page_viewed(
    *,
    account_id: str,
    role: str,
    network: str | None,
    patient_id: str,
    interaction: str,
    entity_type: str,
    now: datetime,
) -> AuditRecord:
    """The clinical record of a person reading a page of their own record, or of the record
    they act for (``role`` representative: "on behalf of" the patient): reading is an access
    too, and it is in the history the patient reads."""
    return AuditRecord(
        stream="clinical",
        recorded=rfc3339_ms(now),
        kind="patient-action",
        action="R",
        interaction=interaction,
        outcome="0",
        agent=Agent(
            who=f"account:{account_id}",
            role=role,
            network=network,
            on_behalf_of=f"Patient/{patient_id}" if role == "representative" else None,
        ),
        patient=patient_id,
        entity_type=entity_type,
    )
