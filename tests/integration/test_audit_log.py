"""The audit log on a real database (SQLite and PostgreSQL): contiguous, atomic, provable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine, insert, select, text, true

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import AuditStore
from carevault.domain.audit import Agent, AuditRecord
from carevault.domain.merkle import ProofError
from carevault.domain.tree_head import signed_bytes
from carevault.services.audit_log import AuditLog, AuditUnavailable
from support import rfc9162


def record(n: int, stream: str = "clinical", patient: str | None = None) -> AuditRecord:
    return AuditRecord(stream=stream, recorded="2026-11-22T10:00:00.000Z", kind="access",
                       action="R", interaction="read", outcome="0",
                       agent=Agent(who=f"Practitioner/{n}", network="127.0.0.1"),
                       patient=patient, entity_type="Patient", entity_id=str(n), status=200)


@pytest.fixture
def audit_log(engine: Engine) -> Iterator[AuditLog]:
    signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
    log = AuditLog(AuditDatabase(engine), dict(signers), lambda: datetime.now(UTC))
    yield log
    log.close()


def test_concurrent_appends_are_contiguous_and_committed(audit_log: AuditLog) -> None:
    results: list[list[int]] = []

    def worker(start: int) -> None:
        for n in range(start, start + 25):
            results.append(audit_log.append([record(n)]))

    threads = [threading.Thread(target=worker, args=(i * 100,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    indexes = sorted(i for r in results for i in r)
    assert indexes == list(range(200))
    entries = audit_log.entries("clinical", 0, 200)
    assert [i for i, _ in entries] == list(range(200))
    head = audit_log.sign_tree_head("clinical")
    assert head.tree_size == 200
    assert head.root_hash == rfc9162.mth([data for _, data in entries])


@pytest.mark.parametrize("batch", [1, 3, 32, 33, 500])
def test_batches_of_any_size_give_the_reference_tree(audit_log: AuditLog, batch: int) -> None:
    """One request's few entries and a bulk import are written differently on PostgreSQL (one
    statement, COPY); the tree, its stored subtree hashes and the proofs are the same."""
    done = 0
    while done < 600:
        audit_log.append([record(n) for n in range(done, done + batch)])
        done += batch
    entries = audit_log.entries("clinical", 0, done)
    assert [i for i, _ in entries] == list(range(done))
    head = audit_log.sign_tree_head("clinical")
    assert head.tree_size == done
    assert head.root_hash == rfc9162.mth([data for _, data in entries])
    leaves = [data for _, data in entries]
    assert audit_log.inclusion_proof("clinical", 77, done) == rfc9162.path(77, leaves)
    assert audit_log.consistency_proof("clinical", 100, done) == rfc9162.proof(100, leaves)


def test_streams_are_separate_trees(audit_log: AuditLog) -> None:
    audit_log.append([record(1), record(2, "operator"), record(3)])
    assert audit_log.size("clinical") == 2
    assert audit_log.size("operator") == 1
    clinical = audit_log.sign_tree_head("clinical")
    operator = audit_log.sign_tree_head("operator")
    assert clinical.root_hash != operator.root_hash
    operator_key = load_pem_public_key(audit_log.public_key_pem("operator"))
    assert isinstance(operator_key, Ed25519PublicKey)
    with pytest.raises(InvalidSignature):
        operator_key.verify(clinical.signature, signed_bytes(
            clinical.tree_size, clinical.root_hash, clinical.timestamp_ms))


def test_append_with_a_transaction_is_atomic_with_it(audit_log: AuditLog, engine: Engine) -> None:
    def failing_write() -> None:
        with engine.begin() as connection:
            audit_log.append_with(AuditStore(connection), [record(1)])
            raise RuntimeError("the business write failed after the audit entry was added")

    with pytest.raises(RuntimeError):
        failing_write()
    assert audit_log.size("clinical") == 0
    with engine.begin() as connection:
        assert audit_log.append_with(AuditStore(connection), [record(2)]) == [0]
    assert audit_log.size("clinical") == 1


def test_proofs_match_an_independent_rfc9162_implementation(audit_log: AuditLog) -> None:
    for batch in range(5):
        audit_log.append([record(batch * 10 + n) for n in range(7)])
    data = [d for _, d in audit_log.entries("clinical", 0, 35)]
    for size in (1, 2, 3, 8, 13, 35):
        for index in range(size):
            assert audit_log.inclusion_proof("clinical", index, size) == rfc9162.path(
                index, data[:size])
        for first in range(size + 1):
            assert audit_log.consistency_proof("clinical", first, size) == rfc9162.proof(
                first, data[:size])
        # Many proofs at once, in one read, are the same paths.
        assert audit_log.inclusion_proofs("clinical", [size - 1, 0, size // 2, 0], size) == {
            index: rfc9162.path(index, data[:size]) for index in {0, size // 2, size - 1}}
    assert audit_log.inclusion_proofs("clinical", [], 35) == {}
    with pytest.raises(ProofError):
        audit_log.inclusion_proofs("clinical", [0], 36)


def test_signed_tree_head_verifies_with_the_public_key(audit_log: AuditLog) -> None:
    audit_log.append([record(n) for n in range(3)])
    head = audit_log.sign_tree_head("clinical")
    key = load_pem_public_key(audit_log.public_key_pem("clinical"))
    assert isinstance(key, Ed25519PublicKey)
    key.verify(head.signature, signed_bytes(head.tree_size, head.root_hash, head.timestamp_ms))
    assert audit_log.sign_tree_head("clinical") == head  # nothing new: the same head


def test_a_recent_tree_head_is_signed_at_most_once_an_interval(engine: Engine) -> None:
    """`recent_tree_head` serves the latest head until it is an interval old by the log's
    clock (held here), or, for a patient, until an entry about them is past it; timestamps
    never go back, even when the clock does; every head served is consistent with the next."""
    now = [datetime(2026, 11, 22, 10, 0, tzinfo=UTC)]
    signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
    log = AuditLog(AuditDatabase(engine), dict(signers), lambda: now[0],
                   tree_head_interval=timedelta(seconds=10))
    try:
        log.append([record(0)])
        first = log.recent_tree_head("clinical")
        log.append([record(1), record(2, patient="pat-1")])
        now[0] += timedelta(seconds=9)
        assert log.recent_tree_head("clinical") == first  # grown, but not an interval old
        assert log.recent_tree_head("clinical", patient="pat-2") == first  # nothing about them
        assert len(log.for_verifier("clinical").heads) == 1
        covering = log.recent_tree_head("clinical", patient="pat-1")  # their entry is past it
        assert covering.tree_size == 3
        log.append([record(3)])
        now[0] -= timedelta(minutes=5)  # the clock steps back: the latest head is not due
        now[0] += timedelta(seconds=20)
        assert log.recent_tree_head("clinical") == covering
        now[0] += timedelta(minutes=5)  # an interval after it by its own timestamp
        latest = log.recent_tree_head("clinical")
        assert latest.tree_size == 4 and latest.timestamp_ms > covering.timestamp_ms
        heads = log.for_verifier("clinical").heads
        assert [h.tree_size for h in heads] == [1, 3, 4]
        assert [h.timestamp_ms for h in heads] == sorted(h.timestamp_ms for h in heads)
        data = [d for _, d in log.entries("clinical", 0, 4)]
        for older in heads[:-1]:
            assert log.consistency_proof("clinical", older.tree_size, 4) == rfc9162.proof(
                older.tree_size, data)
            assert older.root_hash == rfc9162.mth(data[: older.tree_size])
    finally:
        log.close()


def test_a_failed_commit_fails_every_waiting_caller(audit_log: AuditLog, engine: Engine) -> None:
    # Take index 0 behind the log's back so the next group commit violates the primary key.
    with engine.begin() as connection:
        connection.execute(insert(t.audit_entry).values(
            stream="clinical", leaf_index=0, patient_id=None,
            recorded_at=datetime.now(UTC), entry=b"{}"))
    with pytest.raises(AuditUnavailable):
        audit_log.append([record(1)])
    assert audit_log.size("clinical") == 0


def test_a_lone_caller_does_not_wait_for_stragglers(engine: Engine) -> None:
    """The writer waits for late arrivals only while callers are concurrent: with a straggler
    wait far longer than the callers' patience, lone appends one after another still commit
    (they would each time out and fail, were the wait made for them)."""
    signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
    log = AuditLog(AuditDatabase(engine), dict(signers), lambda: datetime.now(UTC),
                   straggler_seconds=3600, wait_seconds=5)
    try:
        assert [log.append([record(n)]) for n in range(3)] == [[0], [1], [2]]
    finally:
        log.close()


def test_a_submitted_append_is_committed_when_its_wait_returns(
        audit_log: AuditLog, engine: Engine) -> None:
    """`submit` queues at once; its wait gives the indexes once committed, or raises
    AuditUnavailable (a page answers only after it returned)."""
    wait = audit_log.submit([record(1), record(2)])
    assert wait() == [0, 1]
    assert audit_log.size("clinical") == 2
    with engine.begin() as connection:
        connection.execute(insert(t.audit_entry).values(
            stream="clinical", leaf_index=2, patient_id=None,
            recorded_at=datetime.now(UTC), entry=b"{}"))
    failing = audit_log.submit([record(3)])
    with pytest.raises(AuditUnavailable):
        failing()


def visit(n: int, agent: str | None, patient: str = "pat-1") -> AuditRecord:
    return replace(record(n, patient=patient), agent=Agent(who=agent, network="127.0.0.1"))


def test_a_patients_entries_by_others_are_marked_when_appended_and_read_alone(
        audit_log: AuditLog, engine: Engine) -> None:
    """The chart of a patient's accesses counts professionals and systems: entries by an
    account or by the patient themselves are left out by a column written at append time
    (migration 0028), so the query need not walk the patient's own visits to find them."""
    agents = ["Practitioner/d1", "account:a1", "Patient/pat-1", None, "Device/his", "account:a1"]
    audit_log.append([visit(n, agent) for n, agent in enumerate(agents)])
    audit_log.append([visit(9, "Practitioner/d2", patient="pat-2")])
    with engine.connect() as connection:
        marked = dict(connection.execute(
            select(t.audit_entry.c.leaf_index, t.audit_entry.c.by_others)
            .where(t.audit_entry.c.stream == "clinical")).all())
    assert marked == {0: True, 1: False, 2: False, 3: True, 4: True, 5: False, 6: True}
    others = audit_log.patient_entries("pat-1", limit=10, newest_first=True, by_others=True)
    assert [index for index, _ in others] == [4, 3, 0]
    everyone = audit_log.patient_entries("pat-1", limit=10, newest_first=True)
    assert [index for index, _ in everyone] == [5, 4, 3, 2, 1, 0]


def test_the_patients_entries_by_others_are_read_by_their_index(
        audit_log: AuditLog, engine: Engine) -> None:
    """A patient who read their history thousands of times: the chart's query goes to the few
    entries by others through the index, instead of walking the patient's own visits."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's; SQLite runs the same query above")
    audit_log.append([visit(n, "account:a1") for n in range(3000)])
    audit_log.append([visit(n, "Practitioner/d1") for n in range(3)])
    with engine.connect() as connection:
        connection.execute(text("ANALYZE audit_entry"))
        statement = (
            select(t.audit_entry.c.leaf_index)
            .where(t.audit_entry.c.stream == "clinical", t.audit_entry.c.patient_id == "pat-1",
                   t.audit_entry.c.by_others == true())
            .order_by(t.audit_entry.c.leaf_index.desc()).limit(10)
        )
        compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_audit_entry_patient_by_others" in plan
