"""Each patient's hash chain on a real database (SQLite and PostgreSQL): every path that appends
links, and concurrent transactions about one patient never fork the chain."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import AuditStore
from carevault.domain.audit import Agent, AuditRecord
from carevault.domain.audit_chain import ChainedEntry, Chains, check_chain
from carevault.services.audit_log import AuditLog
from support import rfc9162


def record(n: int, patient: str | None) -> AuditRecord:
    return AuditRecord(stream="clinical", recorded="2026-12-05T10:00:00.000Z", kind="access",
                       action="R", interaction="read", outcome="0",
                       agent=Agent(who=f"Practitioner/{n}", network="127.0.0.1"),
                       patient=patient, entity_type="Patient", entity_id=str(n), status=200)


@pytest.fixture
def audit_log(engine: Engine) -> Iterator[AuditLog]:
    signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
    log = AuditLog(AuditDatabase(engine), dict(signers), lambda: datetime.now(UTC))
    yield log
    log.close()


def chain_of(log: AuditLog, patient: str) -> list[ChainedEntry]:
    return [ChainedEntry.of(i, data)
            for i, data in log.patient_entries(patient, limit=100_000)]


def whole_log_chains(log: AuditLog) -> Chains:
    chains = Chains()
    for i, data in log.entries("clinical", 0, log.size("clinical")):
        chains.follow(i, data)
    return chains


@pytest.mark.parametrize("batch", [1, 33, 200])
def test_every_entry_about_a_patient_is_linked_whatever_the_batch(
        audit_log: AuditLog, batch: int, engine: Engine) -> None:
    """One request's entries (one statement on PostgreSQL) and a bulk import (COPY) link the
    same way; entries without a patient carry no link."""
    patients = ["p-a", "p-b", None]
    done = 0
    while done < 200:
        audit_log.append([record(n, patients[n % 3]) for n in range(done, done + batch)])
        done += batch
    for patient in ("p-a", "p-b"):
        entries = chain_of(audit_log, patient)
        assert [e.link.seq for e in entries if e.link] == list(range(len(entries)))
        check_chain(patient, None, entries)
    unlinked = [data for i, data in audit_log.entries("clinical", 0, done) if i % 3 == 2]
    assert all(b'"chain"' not in data for data in unlinked)
    chains = whole_log_chains(audit_log)
    assert set(chains.heads) == {"p-a", "p-b"}
    # The stored heads are where each chain ends.
    with engine.connect() as connection:
        stored = {row.patient_id: (row.seq, row.leaf_index, bytes(row.leaf_hash))
                  for row in connection.execute(select(t.audit_chain_head))}
    assert stored == chains.heads
    # The tree commits to the linked bytes.
    leaves = [data for _, data in audit_log.entries("clinical", 0, done)]
    assert audit_log.sign_tree_head("clinical").root_hash == rfc9162.mth(leaves)


def test_a_change_and_a_group_commit_extend_one_chain(
        audit_log: AuditLog, engine: Engine) -> None:
    audit_log.append([record(0, "p-a")])
    with engine.begin() as connection:
        audit_log.append_with(AuditStore(connection), [record(1, "p-a"), record(2, "p-a")])
    audit_log.append([record(3, "p-a"), record(4, None)])
    check_chain("p-a", None, chain_of(audit_log, "p-a"))
    assert len(chain_of(audit_log, "p-a")) == 4


def test_a_rolled_back_change_leaves_the_chain_head_where_it_was(
        audit_log: AuditLog, engine: Engine) -> None:
    audit_log.append([record(0, "p-a")])
    def failing_change() -> None:
        with engine.begin() as connection:
            audit_log.append_with(AuditStore(connection), [record(1, "p-a")])
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    audit_log.append([record(2, "p-a")])
    entries = chain_of(audit_log, "p-a")
    assert [e.link.seq for e in entries if e.link] == [0, 1]
    check_chain("p-a", None, entries)


def test_concurrent_transactions_about_one_patient_do_not_fork_its_chain(
        audit_log: AuditLog, engine: Engine, database_url: str) -> None:
    """PostgreSQL: real concurrent transactions (each its own connection), all open and having
    read before any appends, each holding its transaction open a moment after appending, with
    the group commit writing about the same patient meanwhile: the stream's lock makes them
    take turns, and each reads the head the one before committed. (SQLite's BEGIN IMMEDIATE
    never lets two write transactions be open at once: the barrier below could not be met.)"""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes whole write transactions at BEGIN IMMEDIATE")
    workers, rounds = 6, 5
    start = threading.Barrier(workers + 1)
    failures: list[BaseException] = []

    def transaction(n: int) -> None:
        try:
            for r in range(rounds):
                with engine.begin() as connection:
                    connection.execute(select(t.audit_log_state.c.tree_size)).all()
                    if r == 0:
                        start.wait(timeout=30)
                    audit_log.append_with(AuditStore(connection), [record(n * 100 + r, "p-shared")])
                    time.sleep(0.002)  # hold the lock while the others wait on it
        except BaseException as error:
            failures.append(error)

    def group_commits() -> None:
        start.wait(timeout=30)
        for r in range(rounds * 2):
            audit_log.append([record(900 + r, "p-shared"), record(950 + r, "p-other")])

    threads = [threading.Thread(target=transaction, args=(n,)) for n in range(workers)]
    threads.append(threading.Thread(target=group_commits))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    entries = chain_of(audit_log, "p-shared")
    assert len(entries) == workers * rounds + rounds * 2
    assert [e.link.seq for e in entries if e.link] == list(range(len(entries)))
    check_chain("p-shared", None, entries)
    whole_log_chains(audit_log)  # and every other chain of the log holds
