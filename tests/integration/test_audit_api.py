"""The audit log's public API, checked with a verifier written in the tests from the RFCs,
and the fail-closed rule: no access is served that could not be recorded."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build
from carevault.domain.audit import AuditRecord
from carevault.settings import Settings
from support import rfc9162
from support.authorities import registrar_headers
from support.builders import patient
from support.tokens import professional_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def b64(value: str) -> bytes:
    return base64.b64decode(value)


def fill(client: TestClient, platform: Platform, count: int) -> list[str]:
    systems = platform.directory.systems
    registrar = registrar_headers(platform)
    ids = [client.post("/fhir/Patient", json=patient(systems, n), headers=registrar).json()["id"]
           for n in range(count)]
    for patient_id in ids:
        client.get(f"/fhir/Patient/{patient_id}")
    return ids


def test_tree_head_signature_verifies_with_the_published_key(client: TestClient,
                                                             platform: Platform) -> None:
    fill(client, platform, 3)
    head = client.get("/audit/tree-head").json()
    assert set(head) == {"tree_size", "root_hash", "timestamp", "signature"}
    key = load_pem_public_key(client.get("/audit/public-key").content)
    assert isinstance(key, Ed25519PublicKey)
    # RFC 6962 §3.5 TreeHeadSignature: version 0, type 1, u64 timestamp, u64 size, root.
    signed = struct.pack(">BBQQ", 0, 1, head["timestamp"], head["tree_size"]) + b64(
        head["root_hash"])
    key.verify(b64(head["signature"]), signed)
    entries = client.get("/audit/entries", params={"start": 0, "end": head["tree_size"]}).json()
    leaves = [b64(e["leaf_input"]) for e in entries["entries"]]
    assert rfc9162.mth(leaves) == b64(head["root_hash"])


def held_clock(platform: Platform) -> Callable[[timedelta], None]:
    """The audit log's clock, held by the test from now on: it moves only when the test moves
    it (the returned function), so that whether a tree head is an interval old is the test's
    say, not the wall clock's."""
    now = [datetime.now(UTC)]
    platform.audit.clock = lambda: now[0]

    def move(by: timedelta) -> None:
        now[0] += by

    return move


def signed_heads(platform: Platform) -> int:
    """How many tree heads of the clinical stream are stored."""
    return len(platform.audit.for_verifier("clinical").heads)


def test_inclusion_and_consistency_proofs(client: TestClient, platform: Platform) -> None:
    move = held_clock(platform)
    fill(client, platform, 4)
    old = client.get("/audit/tree-head").json()
    fill(client, platform, 0)
    client.get("/fhir/Patient", params={"family": "m"})
    move(platform.audit.tree_head_interval)  # the public route signs a new head no sooner
    new = client.get("/audit/tree-head").json()
    assert new["tree_size"] > old["tree_size"]
    leaves = [b64(e["leaf_input"]) for e in client.get(
        "/audit/entries", params={"start": 0, "end": new["tree_size"]}).json()["entries"]]
    for index in range(new["tree_size"]):
        proof = client.get("/audit/proof/inclusion",
                           params={"leaf_index": index, "tree_size": new["tree_size"]}).json()
        assert proof["leaf_index"] == index
        assert [b64(h) for h in proof["audit_path"]] == rfc9162.path(index, leaves)
    consistency = client.get("/audit/proof/consistency",
                             params={"first": old["tree_size"], "second": new["tree_size"]})
    assert [b64(h) for h in consistency.json()["consistency"]] == rfc9162.proof(
        old["tree_size"], leaves)
    assert rfc9162.mth(leaves[: old["tree_size"]]) == b64(old["root_hash"])


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/audit/proof/inclusion", {"leaf_index": 5, "tree_size": 2}, 400),
    ("/audit/proof/inclusion", {"leaf_index": "x", "tree_size": 2}, 400),
    ("/audit/proof/inclusion", {"leaf_index": 0, "tree_size": 10_000}, 400),
    ("/audit/proof/consistency", {"first": 3, "second": 1}, 400),
    ("/audit/entries", {"start": 0, "end": 5000}, 400),
    ("/audit/entries", {"start": 3, "end": 3}, 400),
    ("/audit/tree-head", {"stream": "secret"}, 400),
    ("/audit/proof/inclusion", {"leaf_index": "\u00b2", "tree_size": 2}, 400),  # '²'.isdigit()
    ("/audit/proof/consistency", {"first": "1" * 5000, "second": 2}, 400),
    ("/audit/tree-head/timestamp", {"tree_size": "1e999"}, 400),
])
def test_bad_audit_requests_are_refused_clearly(client: TestClient, platform: Platform,
                                                path: str, params: dict[str, Any],
                                                status: int) -> None:
    fill(client, platform, 1)
    response = client.get(path, params=params)
    assert response.status_code == status
    assert response.json()["error"]


def test_entries_are_for_the_security_officer_only(platform: Platform) -> None:
    with TestClient(platform.app, client=("198.51.100.4", 1)) as remote:
        assert remote.get("/audit/entries", params={"start": 0, "end": 1}).status_code == 401
        assert remote.get("/audit/tree-head").status_code == 200  # public
    size = platform.audit.size("operator")
    last = AuditRecord.from_canonical(platform.audit.entries("operator", size - 1, size)[0][1])
    assert last.interaction == "audit-entries"
    assert last.outcome == "4"
    assert last.agent.network == "198.51.100.4"


def _make_audit_read_only(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text(
                "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_entry "
                "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END"))
        else:
            connection.execute(text(
                "CREATE FUNCTION audit_read_only() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit storage is read-only'; END $$"))
            connection.execute(text(
                "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_entry "
                "FOR EACH ROW EXECUTE FUNCTION audit_read_only()"))


def _undo_read_only(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_read_only" + (
            "" if engine.dialect.name == "sqlite" else " ON audit_entry")))
        if engine.dialect.name != "sqlite":
            connection.execute(text("DROP FUNCTION audit_read_only()"))


def test_with_the_audit_storage_unwritable_nothing_is_served(registrar: TestClient,
        client: TestClient, platform: Platform, engine: Engine) -> None:
    systems = platform.directory.systems
    (patient_id,) = fill(client, platform, 1)
    _make_audit_read_only(engine)
    try:
        read = client.get(f"/fhir/Patient/{patient_id}")
        assert read.status_code == 503
        assert read.json()["resourceType"] == "OperationOutcome"
        assert "Müller" not in read.text and patient_id not in read.text
        search = client.get("/fhir/Patient", params={"family": "muller"})
        assert search.status_code == 503 and "Müller" not in search.text
        write = registrar.post("/fhir/Patient", json=patient(systems, 7), headers=FHIR_JSON)
        assert write.status_code == 503
    finally:
        _undo_read_only(engine)
    # The refused write left nothing behind: the change and its record commit together.
    found = client.get("/fhir/Patient", params={"_count": 10}).json()
    assert found["total"] == 1


def test_tree_heads_are_time_stamped_by_a_trusted_authority(
        client: TestClient, platform: Platform, tmp_path: Any) -> None:
    from carevault.adapters.timestamping import verify_timestamp
    from support.tsa import OpenSslTsa

    tsa = OpenSslTsa(tmp_path / "tsa")
    fill(client, platform, 2)
    head = client.get("/audit/tree-head").json()
    missing = client.get("/audit/tree-head/timestamp", params={"tree_size": head["tree_size"]})
    assert missing.status_code == 404
    assert platform.audit.stamp_latest_tree_head("clinical", tsa) == head["tree_size"]
    assert platform.audit.stamp_latest_tree_head("clinical", tsa) is None  # already stamped
    token = b64(client.get("/audit/tree-head/timestamp",
                           params={"tree_size": head["tree_size"]}).json()["timestamp_token"])
    signed = struct.pack(">BBQQ", 0, 1, head["timestamp"], head["tree_size"]) + b64(
        head["root_hash"])
    stamped_at = verify_timestamp(token, signed, tsa_certificate_pem=tsa.certificate_pem,
                                  root_certificates_pem=[tsa.root_certificate_pem])
    assert abs(stamped_at.timestamp() * 1000 - head["timestamp"]) < 60_000


def test_the_public_tree_head_is_signed_at_most_once_an_interval(platform: Platform) -> None:
    """Every request grows the log: signed whenever the log grew, each ask of the public route
    stored a head and cost a signature. The latest head is served until it is an interval old;
    the next is consistent with it. (The clients run without their lifespan: no chores sign
    heads meanwhile.)"""
    move = held_clock(platform)
    interval = platform.audit.tree_head_interval
    token = professional_token(platform)
    professional = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                              client=("127.0.0.1", 50000),
                              headers={"Authorization": f"Bearer {token}"})
    anyone = TestClient(platform.app, client=("198.51.100.9", 1))
    assert professional.get("/fhir/Patient").status_code == 200
    first = anyone.get("/audit/tree-head").json()
    signed = signed_heads(platform)
    for _ in range(3):
        assert professional.get("/fhir/Patient").status_code == 200  # the log grows ...
        move(interval / 4)
        assert anyone.get("/audit/tree-head").json() == first  # ... its head does not
    assert signed_heads(platform) == signed
    move(interval / 4)  # an interval since the head was signed
    second = anyone.get("/audit/tree-head").json()
    assert second["tree_size"] > first["tree_size"]
    assert second["timestamp"] > first["timestamp"]
    assert signed_heads(platform) == signed + 1
    leaves = [b64(e["leaf_input"]) for e in professional.get(
        "/audit/entries", params={"start": 0, "end": second["tree_size"]}).json()["entries"]]
    assert rfc9162.mth(leaves[: first["tree_size"]]) == b64(first["root_hash"])
    assert rfc9162.mth(leaves) == b64(second["root_hash"])
    consistency = anyone.get("/audit/proof/consistency", params={
        "first": first["tree_size"], "second": second["tree_size"]}).json()["consistency"]
    assert [b64(h) for h in consistency] == rfc9162.proof(first["tree_size"], leaves)
    platform.audit.close()


def test_the_public_routes_are_throttled_per_address(settings: Settings,
                                                     platform: Platform) -> None:
    """What anyone may ask is what anyone may make the server spend: the routes share one
    bucket per address, then answer 429 with Retry-After in their own error shape."""
    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    app = build(limited, platform.engine).app
    with TestClient(app, client=("198.51.100.4", 1)) as anyone, \
            TestClient(app, client=("198.51.100.5", 1)) as other:
        asked = [anyone.get("/audit/public-key"), anyone.get("/audit/tree-head"),
                 anyone.get("/audit/proof/consistency", params={"first": 0, "second": 0})]
        assert [r.status_code for r in asked] == [200, 200, 200]
        for path, params in (("/audit/tree-head", {}),
                             ("/audit/public-key", {}),
                             ("/audit/tree-head/timestamp", {"tree_size": 0}),
                             ("/audit/proof/inclusion", {"leaf_index": 0, "tree_size": 1}),
                             ("/audit/proof/consistency", {"first": 0, "second": 0})):
            refused = anyone.get(path, params=params)
            assert refused.status_code == 429, path
            assert int(refused.headers["retry-after"]) >= 1
            assert set(refused.json()) == {"error"} and refused.json()["error"]
        assert other.get("/audit/tree-head").status_code == 200  # another address, its own
