"""The audit log service through its ports, without a database: its signing keys, appends
through a unit of work's audit store (each stream's records in order, stamped with the log's
clock), and failing closed when the database cannot be reached (every waiting caller gets
`AuditUnavailable`). The stores themselves, the group commit on a real database, tree heads
and proofs keep their integration tests (tests/integration/test_audit_*.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Engine

from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import AuditStore, PendingEntry
from carevault.domain.audit import STREAMS, Agent, AuditRecord
from carevault.services.audit_log import AuditLog, AuditUnavailable, Signer

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class NamedSigner:
    """A signing key stand-in: its public key names it; it signs nothing here."""

    def __init__(self, name: str) -> None:
        self.name = name

    def sign(self, data: bytes) -> bytes:
        raise AssertionError("nothing is signed in these tests")

    def public_key_pem(self) -> bytes:
        return f"PEM of {self.name}".encode()


class UnreachableDatabase:
    """An engine whose every connection attempt fails, as a database that is down."""

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self) -> object:
        self.attempts += 1
        raise ConnectionRefusedError("connection to 127.0.0.1:5432 refused")


class RecordingAuditStore:
    """A unit of work's audit store stand-in: each stream's appended entries, in order, and
    the first index it gives (as many entries as it already holds)."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.entries: dict[str, list[PendingEntry]] = {s: [] for s in STREAMS}
        self.sizes = dict(sizes or {})
        self.calls: list[str] = []

    def append(self, stream: str, entries: Sequence[PendingEntry]) -> tuple[int, int]:
        self.calls.append(stream)
        first = self.sizes.get(stream, 0)
        self.entries[stream] += entries
        self.sizes[stream] = first + len(entries)
        return first, self.sizes[stream]


def signers() -> dict[str, Signer]:
    return {stream: NamedSigner(stream) for stream in STREAMS}


def audit_log(engine: UnreachableDatabase | None = None) -> AuditLog:
    database = AuditDatabase(cast(Engine, engine or UnreachableDatabase()))
    return AuditLog(database, signers(), lambda: NOW)


def record(stream: str, what: str, patient: str | None = None) -> AuditRecord:
    return AuditRecord(stream=stream, recorded="2026-12-01T08:59:59.000Z", kind="access",
                       action="R", interaction=what, outcome="0",
                       agent=Agent(who="Practitioner/pr-1"), patient=patient)


def test_every_stream_needs_its_signing_key() -> None:
    with pytest.raises(ValueError, match=r"^no signing key for audit streams \['operator'\]$"):
        AuditLog(AuditDatabase(cast(Engine, UnreachableDatabase())),
                 {"clinical": NamedSigner("clinical")}, lambda: NOW)


def test_each_streams_public_key_is_its_own_signers() -> None:
    log = audit_log()
    assert [log.public_key_pem(s) for s in STREAMS] == [f"PEM of {s}".encode() for s in STREAMS]


def test_records_appended_in_a_transaction_go_to_their_streams_in_order() -> None:
    store = RecordingAuditStore({"clinical": 41, "operator": 7})
    records = [record("clinical", "read", "pat-1"), record("operator", "login"),
               record("clinical", "search-type")]
    indexes = audit_log().append_with(cast(AuditStore, store), records)
    assert indexes == [41, 42, 7]  # by stream, in the streams' order
    assert store.calls == ["clinical", "operator"]  # one append per stream
    clinical, operator = store.entries["clinical"], store.entries["operator"]
    assert [e.data for e in clinical] == [records[0].canonical(), records[2].canonical()]
    assert [e.data for e in operator] == [records[1].canonical()]
    assert [(e.patient_id, e.agent) for e in clinical] == [
        ("pat-1", "Practitioner/pr-1"), (None, "Practitioner/pr-1")]
    # Stamped with the log's clock, not with what the record says.
    assert {e.recorded_at for e in clinical + operator} == {NOW}


def test_a_stream_without_records_is_not_appended_to() -> None:
    store = RecordingAuditStore()
    assert audit_log().append_with(cast(AuditStore, store), [record("operator", "login")]) == [0]
    assert store.calls == ["operator"] and store.entries["clinical"] == []
    assert audit_log().append_with(cast(AuditStore, store), []) == []
    assert store.calls == ["operator"]


def writers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "audit-group-commit")


def test_appending_nothing_starts_no_writer_and_needs_no_database() -> None:
    database = UnreachableDatabase()
    log = audit_log(database)
    before = writers()
    assert log.append([]) == []
    assert writers() == before
    assert database.attempts == 0 and log.last_commit_failed is False


def test_when_the_database_is_down_every_caller_is_refused_and_the_log_says_so() -> None:
    database = UnreachableDatabase()
    log = audit_log(database)
    before = writers()
    try:
        with pytest.raises(AuditUnavailable) as refused:
            log.append([record("clinical", "read", "pat-1"), record("operator", "login")])
        assert str(refused.value) == (
            "the audit log could not record this access, so nothing was served; "
            "send the same request again")
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
        assert log.last_commit_failed is True
        # The writer lives on: the next access is refused as well, after a new attempt.
        attempts = database.attempts
        with pytest.raises(AuditUnavailable):
            log.append([record("operator", "login")])
        assert database.attempts > attempts
        assert log.queue_depth() == 0
    finally:
        log.close()
    assert writers() == before  # closed: its writer has ended
