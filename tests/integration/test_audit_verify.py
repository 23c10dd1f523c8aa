"""`carevault audit verify` finds every kind of tampering, with the first bad index, on both
databases. The log is filled through the real FHIR door, then altered behind its back."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, and_, delete, select, update
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.cli import context
from carevault.cli.main import app
from carevault.services.access_history import completeness_proof
from carevault.settings import Settings
from carevault.verifier import VerificationError, verify_completeness
from support.builders import patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ENTRIES = 40


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    yield
    for engine in [context.engine_for(settings.database_url)]:
        engine.dispose()
    context.engine_for.cache_clear()


@pytest.fixture
def filled(registrar: TestClient, client: TestClient, platform: Platform) -> Platform:
    systems = platform.directory.systems
    for n in range(10):
        registrar.post("/fhir/Patient", json=patient(systems, n), headers=FHIR_JSON)
    while platform.audit.size("clinical") < ENTRIES:
        client.get("/fhir/Patient", params={"family": "m"})
    platform.audit.sign_tree_head("clinical")
    return platform


def verify(*extra: str) -> Any:
    return CliRunner().invoke(app, ["audit", "verify", "--stream", "clinical", *extra])


def first_bad_index(output: str) -> int:
    found = re.search(r"first bad index: (\d+)", output)
    assert found, output
    return int(found.group(1))


def test_an_untouched_log_verifies(filled: Platform, cli_env: None) -> None:
    result = verify()
    assert result.exit_code == 0, result.output
    assert f"verified {filled.audit.size('clinical')} entries" in result.output
    # The fixture signs one head; the chores loop may sign another before the check runs.
    heads = re.search(r"(\d+) signed tree heads", result.output)
    assert heads is not None and int(heads.group(1)) >= 1, result.output


def _entry(engine: Engine, index: int) -> bytes:
    with engine.connect() as connection:
        return bytes(connection.execute(select(t.audit_entry.c.entry).where(
            t.audit_entry.c.stream == "clinical",
            t.audit_entry.c.leaf_index == index)).scalar_one())


def _set_entry(engine: Engine, index: int, data: bytes) -> None:
    with engine.begin() as connection:
        connection.execute(update(t.audit_entry).where(
            t.audit_entry.c.stream == "clinical", t.audit_entry.c.leaf_index == index)
            .values(entry=data))


def test_a_changed_entry_is_reported(filled: Platform, cli_env: None, engine: Engine) -> None:
    original = json.loads(_entry(engine, 17))
    original["status"] = 403
    _set_entry(engine, 17, json.dumps(original).encode())
    result = verify()
    assert result.exit_code == 1
    assert first_bad_index(result.output) == 17


def test_a_deleted_entry_is_reported(filled: Platform, cli_env: None, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(t.audit_entry).where(
            t.audit_entry.c.stream == "clinical", t.audit_entry.c.leaf_index == 23))
    result = verify()
    assert result.exit_code == 1
    assert first_bad_index(result.output) == 23


def test_deleting_the_newest_entries_is_reported(filled: Platform, cli_env: None,
                                                 engine: Engine) -> None:
    size = filled.audit.size("clinical")
    with engine.begin() as connection:
        connection.execute(delete(t.audit_entry).where(
            t.audit_entry.c.stream == "clinical", t.audit_entry.c.leaf_index >= size - 3))
        connection.execute(update(t.audit_log_state).where(
            t.audit_log_state.c.stream == "clinical").values(tree_size=size - 3))
    result = verify()
    assert result.exit_code == 1
    assert first_bad_index(result.output) == size - 3


def test_reordered_entries_are_reported(filled: Platform, cli_env: None, engine: Engine) -> None:
    eight, nine = _entry(engine, 8), _entry(engine, 9)
    _set_entry(engine, 8, nine)
    _set_entry(engine, 9, eight)
    result = verify()
    assert result.exit_code == 1
    assert first_bad_index(result.output) == 8


@pytest.mark.parametrize(("level", "idx", "first_leaf"), [(0, 30, 30), (1, 5, 10), (3, 2, 16)])
def test_a_changed_interior_hash_is_reported(filled: Platform, cli_env: None, engine: Engine,
                                             level: int, idx: int, first_leaf: int) -> None:
    node = t.audit_node
    where = and_(node.c.stream == "clinical", node.c.level == level, node.c.idx == idx)
    with engine.begin() as connection:
        value = bytes(connection.execute(select(node.c.hash).where(where)).scalar_one())
        connection.execute(update(node).where(where).values(hash=bytes([value[0] ^ 1]) +
                                                            value[1:]))
    result = verify()
    assert result.exit_code == 1
    assert first_bad_index(result.output) == first_leaf


def test_rewriting_entries_and_hashes_together_breaks_the_signed_head(
        filled: Platform, cli_env: None, engine: Engine, tmp_path: Path) -> None:
    """An attacker who recomputes every hash still cannot forge the signed tree head."""
    from carevault.domain import merkle

    size = filled.audit.size("clinical")
    forged = json.loads(_entry(engine, 5))
    forged["agent"]["who"] = "nobody"
    _set_entry(engine, 5, json.dumps(forged).encode())
    with engine.begin() as connection:
        rows = connection.execute(select(t.audit_entry.c.entry).where(
            t.audit_entry.c.stream == "clinical").order_by(t.audit_entry.c.leaf_index)).all()
        frontier = merkle.Frontier()
        connection.execute(delete(t.audit_node).where(t.audit_node.c.stream == "clinical"))
        nodes = [{"stream": "clinical", "level": level, "idx": idx, "hash": value}
                 for row in rows
                 for (level, idx), value in frontier.append(merkle.leaf_hash(bytes(row.entry)))]
        connection.execute(t.audit_node.insert(), nodes)
    assert frontier.size == size
    result = verify()
    assert result.exit_code == 1
    assert "signed tree head" in result.output
    # The rewrite is reported from the largest signed head it left intact: none (index 0), or
    # one the app's chores signed while the fixture wrote (they sign every second), never past
    # the forged entry.
    assert 0 <= first_bad_index(result.output) <= 5


def test_verification_resumes_from_a_checkpoint(filled: Platform, cli_env: None,
                                                tmp_path: Path, client: TestClient,
                                                engine: Engine) -> None:
    checkpoint = tmp_path / "verify.json"
    first = verify("--checkpoint", str(checkpoint))
    assert first.exit_code == 0, first.output
    saved = json.loads(checkpoint.read_text())
    assert saved["size"] == filled.audit.size("clinical")
    # What the checkpoint vouches for is not read again: a change there goes unnoticed by the
    # resumed run (and is caught by a run without the checkpoint).
    _set_entry(engine, 3, b"{}")
    for _ in range(5):
        client.get("/fhir/Patient", params={"family": "x"})
    filled.audit.sign_tree_head("clinical")
    second = verify("--checkpoint", str(checkpoint))
    assert second.exit_code == 0, second.output
    assert json.loads(checkpoint.read_text())["size"] == filled.audit.size("clinical")
    assert first_bad_index(verify().output) == 3


# --- a patient's history: complete, by the proofs alone -----------------------------------------

def _patient_with_entries(engine: Engine, at_least: int) -> tuple[str, list[int]]:
    """A patient the filled log has many linked entries about, and their leaf indexes."""
    with engine.connect() as connection:
        rows = connection.execute(select(t.audit_entry.c.patient_id, t.audit_entry.c.leaf_index)
                                  .where(t.audit_entry.c.stream == "clinical",
                                         t.audit_entry.c.patient_id.is_not(None))
                                  .order_by(t.audit_entry.c.leaf_index)).all()
    by_patient: dict[str, list[int]] = {}
    for row in rows:
        by_patient.setdefault(row.patient_id, []).append(int(row.leaf_index))
    patient, indexes = max(by_patient.items(), key=lambda item: len(item[1]))
    assert len(indexes) >= at_least
    return patient, indexes


def test_a_patients_untouched_history_is_verified_complete(filled: Platform, cli_env: None,
                                                          engine: Engine) -> None:
    patient, indexes = _patient_with_entries(engine, 3)
    result = verify("--patient", patient)
    assert result.exit_code == 0, result.output
    assert (f"complete from leaf {indexes[0]} to leaf {indexes[-1]} ({len(indexes)} entries)"
            in result.output)


def test_deleting_one_entry_of_a_patient_is_reported_with_its_gap(
        filled: Platform, cli_env: None, engine: Engine) -> None:
    """The patient's proof is built from the tampered database, and checked with the public
    key and the proofs alone: the entry's successor links to a hash that is not there."""
    patient, indexes = _patient_with_entries(engine, 3)
    gone = indexes[1]
    with engine.begin() as connection:
        connection.execute(delete(t.audit_entry).where(
            t.audit_entry.c.stream == "clinical", t.audit_entry.c.leaf_index == gone))
    result = verify("--patient", patient)
    assert result.exit_code == 1
    assert (f"1 entry about the patient missing between leaf {indexes[0]} (seq 0) and leaf "
            f"{indexes[2]} (seq 2): seq 1" in result.output), result.output
    assert first_bad_index(result.output) == indexes[0]


def test_a_replaced_entry_of_a_patient_is_not_in_the_signed_head(
        filled: Platform, cli_env: None, engine: Engine) -> None:
    patient, indexes = _patient_with_entries(engine, 3)
    forged = json.loads(_entry(engine, indexes[1]))
    forged["agent"]["who"] = "nobody"
    _set_entry(engine, indexes[1], json.dumps(forged, sort_keys=True,
                                              separators=(",", ":")).encode())
    result = verify("--patient", patient)
    assert result.exit_code == 1
    assert f"the entry at leaf {indexes[1]} is not in the signed tree head" in result.output


def test_a_patients_history_since_a_tree_head_starts_from_its_anchor(
        filled: Platform, cli_env: None, engine: Engine, client: TestClient) -> None:
    patient, indexes = _patient_with_entries(engine, 3)
    log = filled.audit
    since = log.sign_tree_head("clinical")  # the head the patient's device saw last
    for _ in range(3):
        client.get("/fhir/Patient", params={"family": "m"})
    key = log.public_key_pem("clinical")
    proof = completeness_proof(log, patient, since=since.tree_size)
    assert proof.anchor is not None
    assert proof.anchor.leaf_index == indexes[-1]
    report = verify_completeness(key, proof)
    assert report.first == since.tree_size
    assert report.start_ms == since.timestamp_ms
    assert verify("--patient", patient, "--since", str(since.tree_size)).exit_code == 0
    # Without its anchor, the first entry shown does not start the chain.
    with pytest.raises(VerificationError, match="not the start of the patient's chain"):
        verify_completeness(key, replace(proof, anchor=None))
    # A tree head that was never signed is refused, not trusted.
    refused = verify("--patient", patient, "--since", str(since.tree_size + 10_000))
    assert refused.exit_code == 1
    assert "no tree head of size" in refused.output

