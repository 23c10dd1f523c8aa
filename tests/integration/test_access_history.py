"""AuditEvent queries and the patient's access history, with proofs a device can check alone."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support import rfc9162
from support.authorities import registrar_headers
from support.builders import patient
from support.tokens import officer_headers, patient_headers, professional_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def parts(parameter: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(p["name"], next(v for k, v in p.items() if k.startswith("value")))
            for p in parameter["part"]]


def test_audit_events_by_patient_and_date(registrar: TestClient,
        client: TestClient, platform: Platform) -> None:
    systems = platform.directory.systems
    anne = registrar.post("/fhir/Patient", json=patient(systems, 1), headers=FHIR_JSON).json()
    marc = registrar.post("/fhir/Patient", json=patient(systems, 2, family="Thill"),
                       headers=FHIR_JSON).json()
    client.get(f"/fhir/Patient/{anne['id']}")
    client.get(f"/fhir/Patient/{marc['id']}")
    client.headers.update(officer_headers(platform))
    bundle = client.get("/fhir/AuditEvent", params={"patient": f"Patient/{anne['id']}"}).json()
    Bundle.model_validate(bundle)
    events = [e["resource"] for e in bundle["entry"]]
    assert bundle["total"] == 2 == len(events)  # created, then read
    for event in events:
        AuditEvent.model_validate(event)
        assert {"reference": f"Patient/{anne['id']}"} in [e.get("what") for e in event["entity"]]
    assert [e["subtype"][0]["code"] for e in events] == ["read", "create"]  # newest first
    one = client.get(f"/fhir/AuditEvent/{events[0]['id']}").json()
    assert one == events[0]
    today = events[0]["recorded"][:10]
    assert client.get("/fhir/AuditEvent", params={"date": today}).json()["total"] >= 4
    assert client.get("/fhir/AuditEvent", params={"date": "lt2000-01-01"}).json()["total"] == 0
    assert client.get("/fhir/AuditEvent/clinical-999999").status_code == 404
    assert client.get("/fhir/AuditEvent/nonsense").status_code == 404


def test_access_history_in_plain_words_with_proofs(registrar: TestClient, client: TestClient,
                                                   platform: Platform) -> None:
    systems = platform.directory.systems
    anne = registrar.post("/fhir/Patient", json=patient(systems, 1), headers=FHIR_JSON).json()
    client.get(f"/fhir/Patient/{anne['id']}")
    client.get("/fhir/Patient", params={"family": "mül"})
    professional = dict(client.headers)
    client.headers.update(patient_headers(platform, anne["id"]))
    first = client.get(f"/fhir/Patient/{anne['id']}/$access-history").json()
    Parameters.model_validate(first)
    head = dict(parts(first["parameter"][0]))
    key = load_pem_public_key(client.get("/audit/public-key").content)
    assert isinstance(key, Ed25519PublicKey)
    key.verify(base64.b64decode(head["signature"]), struct.pack(
        ">BBQQ", 0, 1, int(head["timestamp"]), head["treeSize"]) + base64.b64decode(
        head["rootHash"]))
    entries = [p for p in first["parameter"] if p["name"] == "entry"]
    texts = [dict(parts(e))["text"] for e in entries]
    assert len(entries) == 5
    assert texts[0].startswith(
        "A registrar of the patient and professional directories (from 127.0.0.1) created your "
        "identity record")
    assert "read your identity record" in texts[1]
    assert "found your identity record" in texts[2]
    assert texts[3].startswith("You created an account")  # the patient's app signs in
    assert texts[4].startswith("You confirmed the account's second factor")
    # Each entry is in the signed tree: check it with the test's own RFC 9162 code.
    all_leaves = [base64.b64decode(e["leaf_input"]) for e in client.get(
        "/audit/entries", params={"start": 0, "end": head["treeSize"]}).json()["entries"]]
    for entry in entries:
        fields = parts(entry)
        index = dict(fields)["leafIndex"]
        path = [base64.b64decode(v) for name, v in fields if name == "auditPath"]
        assert base64.b64decode(dict(fields)["leafInput"]) == all_leaves[index]
        assert path == rfc9162.path(index, all_leaves)
    assert rfc9162.mth(all_leaves) == base64.b64decode(head["rootHash"])

    # Next visit: the device sends the size it saw; the answer proves the log only grew.
    client.get(f"/fhir/Patient/{anne['id']}", headers=professional)
    second = client.get(f"/fhir/Patient/{anne['id']}/$access-history",
                        params={"since": head["treeSize"], "language": "fr"}).json()
    new_head = dict(parts(second["parameter"][0]))
    consistency = [base64.b64decode(v) for _, v in parts(
        next(p for p in second["parameter"] if p["name"] == "consistency"))]
    leaves = [base64.b64decode(e["leaf_input"]) for e in client.get(
        "/audit/entries", params={"start": 0, "end": new_head["treeSize"]}).json()["entries"]]
    assert consistency == rfc9162.proof(head["treeSize"], leaves)
    french = [dict(parts(p))["text"] for p in second["parameter"] if p["name"] == "entry"]
    assert any("a consulté votre fiche d'identité" in text for text in french)


def test_access_history_refusals(registrar: TestClient,
        client: TestClient, platform: Platform) -> None:
    anne = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 1),
                       headers=FHIR_JSON).json()
    base = f"/fhir/Patient/{anne['id']}/$access-history"
    client.headers.update(patient_headers(platform, anne["id"]))
    assert client.get(base, params={"language": "it"}).status_code == 400
    german = client.get(base, params={"language": "de"})
    assert german.status_code == 200
    told = [dict(parts(p))["text"] for p in german.json()["parameter"] if p["name"] == "entry"]
    assert told and all(" am " in text for text in told), told
    assert client.get(base, params={"since": "10000000"}).status_code == 400
    assert client.get(base, params={"since": "-1"}).status_code == 400
    assert client.get(base, params={"colour": "red"}).status_code == 400
    # Another record, existing or not, is refused alike: existence is not revealed.
    assert client.get("/fhir/Patient/nobody/$access-history").status_code == 403


def test_the_history_signs_a_head_only_when_the_patients_lines_need_one(
        platform: Platform) -> None:
    """Each call grows the log, and `$access-history` signed a head on each. It is read in the
    latest head while that covers every entry about the patient and is younger than the
    interval, whatever else the log took meanwhile; a new one is signed once an entry about
    them is past it, so that what a professional just did is in the history, proven. (The
    clients run without their lifespan, so no chores sign heads; the log's clock is held.)"""
    now = [datetime.now(UTC)]
    platform.audit.clock = lambda: now[0]
    systems = platform.directory.systems

    def heads() -> int:
        return len(platform.audit.for_verifier("clinical").heads)

    def head_of(answer: dict[str, Any]) -> dict[str, Any]:
        return dict(parts(answer["parameter"][0]))

    registrar = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                           client=("127.0.0.1", 50001), headers=registrar_headers(platform))
    anne = registrar.post("/fhir/Patient", json=patient(systems, 1)).json()
    marc = registrar.post("/fhir/Patient", json=patient(systems, 2, family="Thill")).json()
    professional = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                              client=("127.0.0.1", 50000),
                              headers={"Authorization": f"Bearer {professional_token(platform)}"})
    own = TestClient(platform.app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50002),
                     headers=patient_headers(platform, anne["id"]))
    history = f"/fhir/Patient/{anne['id']}/$access-history"
    assert own.get(history).status_code == 200
    # An interval on, the public route signs a head; it covers Anne's reading above too.
    now[0] += platform.audit.tree_head_interval
    public = TestClient(platform.app, client=("198.51.100.9", 1)).get("/audit/tree-head").json()
    signed = heads()
    # Others' requests grow the log, not Anne's lines: her history is read in that head.
    assert professional.get(f"/fhir/Patient/{marc['id']}").status_code == 200
    assert professional.get("/fhir/Patient", params={"family": "thill"}).status_code == 200
    again = own.get(history).json()
    assert head_of(again)["treeSize"] == public["tree_size"]
    assert heads() == signed
    # A professional reads Anne's record: the next reading needs, and signs, a head with it.
    assert professional.get(f"/fhir/Patient/{anne['id']}").status_code == 200
    newer = own.get(history, params={"since": public["tree_size"]}).json()
    head = head_of(newer)
    assert head["treeSize"] > public["tree_size"] and heads() == signed + 1
    texts = [dict(parts(p))["text"] for p in newer["parameter"] if p["name"] == "entry"]
    assert "read your identity record" in texts[-1], texts
    leaves = [base64.b64decode(e["leaf_input"]) for e in professional.get(
        "/audit/entries", params={"start": 0, "end": head["treeSize"]}).json()["entries"]]
    assert rfc9162.mth(leaves) == base64.b64decode(head["rootHash"])
    consistency = [base64.b64decode(v) for _, v in parts(
        next(p for p in newer["parameter"] if p["name"] == "consistency"))]
    assert consistency == rfc9162.proof(public["tree_size"], leaves)
    platform.audit.close()
