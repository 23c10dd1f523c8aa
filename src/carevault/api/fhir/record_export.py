"""The export of a record as a FHIR ``Bundle`` (type ``collection``), written as it is read:
the identity, every document the caller sees with its content, the grants and blocks, the
emergency setting and the access history (`carevault.services.record_export` reads them).

Both ``Patient/[id]/$everything`` (JSON or XML) and the portal's download (``/me/export``)
stream it (`carevault.api.fhir.formats.BundleStream`), so a large record costs the server one
document's content in memory, not the whole record. The access is decided and audited before
the first byte. If a document fails its checks mid-way, the stream stops there and the client
holds an incomplete document (it does not parse), never a silently shorter export.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

from carevault.api.fhir.audit_handlers import history_parameters
from carevault.api.fhir.record_handlers import block_consent, emergency_consent, grant_consent
from carevault.domain.authorization import RecordFacts
from carevault.fhirmodel.mhd import document_reference
from carevault.services.access_history import AccessHistory
from carevault.services.record_export import (
    ExportPart,
    Identity,
    Retrieved,
    StoredBlock,
    StoredGrant,
)

JsonObject = dict[str, Any]


def bundle_entries(
    parts: Iterable[ExportPart], record: RecordFacts, base: str, language: str
) -> Iterator[JsonObject]:
    """The Bundle's entries for the export's parts, in order; the emergency setting after
    the grants and blocks."""
    patient_id = record.patient_id
    emergency_given = False
    for part in parts:
        if isinstance(part, AccessHistory) and not emergency_given:
            emergency_given = True
            yield _emergency(record, base)
        yield from _entries(part, patient_id, base, language)
    if not emergency_given:
        yield _emergency(record, base)


def _emergency(record: RecordFacts, base: str) -> JsonObject:
    return {
        "fullUrl": f"{base}/Consent/emergency-{record.patient_id}",
        "resource": emergency_consent(record),
    }


def _entries(part: ExportPart, patient_id: str, base: str, language: str) -> list[JsonObject]:
    if isinstance(part, Identity):
        return [{"fullUrl": f"{base}/Patient/{patient_id}", "resource": part.resource}]
    if isinstance(part, Retrieved):
        metadata = part.metadata
        binary = {
            "resourceType": "Binary",
            "id": metadata.id,
            "contentType": metadata.content_type,
            "data": base64.b64encode(part.content).decode("ascii"),
        }
        return [
            {
                "fullUrl": f"{base}/DocumentReference/{metadata.id}",
                "resource": document_reference(metadata, base),
            },
            {"fullUrl": f"{base}/Binary/{metadata.id}", "resource": binary},
        ]
    if isinstance(part, AccessHistory):
        return [
            {
                "fullUrl": f"urn:carevault:access-history:{part.entries[0].leaf_index}",
                "resource": history_parameters(part, language),
            }
        ]
    if isinstance(part, StoredGrant):
        return [
            {
                "fullUrl": f"{base}/Consent/{part.grant.id}",
                "resource": grant_consent(patient_id, part),
            }
        ]
    assert isinstance(part, StoredBlock)
    return [
        {"fullUrl": f"{base}/Consent/{part.block.id}", "resource": block_consent(patient_id, part)}
    ]


def attachment_headers(patient_id: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="record-{patient_id}.json"',
        "Cache-Control": "no-store",
    }


__all__ = ["attachment_headers", "bundle_entries"]
