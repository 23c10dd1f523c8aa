"""A document read is decided once (issue 14, "retrieval decides once"): the gate loads the
document in its transaction, the engine decides on that document's facts, and the handler serves
what was decided on, without a second decision or a second read. Counted on the engine itself
(every decision on a professional's request passes `_decide_professional`), on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.domain import authorization
from support.authorities import presence_code, with_presence
from support.builders import patient
from support.documents import FHIR_JSON, PDF, Pro, created_id, provide_bundle, publish


def _seen(client: TestClient, platform: Platform, pro: Pro, patient_id: str) -> None:
    answer = client.post("/fhir/Encounter", headers=pro.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{pro.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert answer.status_code == 201, answer.text


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every engine decision on a professional's request, with the document it was made on."""
    made: list[tuple[Any, ...]] = []
    original: Callable[..., authorization.Decision] = authorization._decide_professional

    def counted(*args: Any) -> authorization.Decision:
        made.append(args)
        return original(*args)

    monkeypatch.setattr(authorization, "_decide_professional", counted)
    return made


def test_a_read_of_one_document_is_decided_once_on_that_document(
    client: TestClient, registrar: TestClient, platform: Platform,
    decisions: list[tuple[Any, ...]],
) -> None:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 7),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-DOC-ONCE")
    _seen(client, platform, gp, patient_id)
    published = publish(client, gp, provide_bundle(patient_id, gp))
    assert published.status_code == 200, published.text
    document_id = created_id(published)

    decisions.clear()
    retrieved = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)
    assert retrieved.status_code == 200
    assert retrieved.content == PDF
    assert len(decisions) == 1
    _trace, _subject, action, _record, document, *_ = decisions[0]
    assert action is authorization.Action.READ
    assert document.id == document_id

    decisions.clear()
    read = client.get(f"/fhir/DocumentReference/{document_id}", headers=gp.headers)
    assert read.status_code == 200
    assert read.json()["id"] == document_id
    assert read.json()["content"][0]["attachment"]["title"] == "Consultation MARKER-Title-9931"
    assert len(decisions) == 1
    assert decisions[0][4].id == document_id

    # A stranger is refused by that one decision too: nothing of the document is served.
    stranger = Pro(platform, "HP-DOC-STRANGER")
    decisions.clear()
    refused = client.get(f"/fhir/Binary/{document_id}", headers=stranger.headers)
    assert refused.status_code == 403
    assert PDF not in refused.content
    assert len(decisions) == 1


def test_an_operation_on_a_document_answers_with_the_document_as_changed(
    client: TestClient, registrar: TestClient, platform: Platform,
) -> None:
    """The gate's snapshot is the document before the operation: the answer is read again."""
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 8),
                             headers=FHIR_JSON)
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-DOC-WITHDRAW")
    _seen(client, platform, gp, patient_id)
    document_id = created_id(publish(client, gp, provide_bundle(patient_id, gp)))
    withdrawn = client.post(f"/fhir/DocumentReference/{document_id}/$entered-in-error",
                            headers=gp.headers)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "entered-in-error"
    assert client.get(f"/fhir/DocumentReference/{document_id}",
                      headers=gp.headers).json()["status"] == "entered-in-error"
