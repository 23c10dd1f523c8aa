"""The retention job, on a unit of work in memory: a record closed and unchanged for the legal
period loses its documents, one transaction per patient with its two audit entries, and their
files after the commit; nothing else is purged, and a failed audit keeps everything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.document_store import SealedParts
from carevault.domain.audit import AuditRecord
from carevault.services.retention import DEFAULT_YEARS, Retention, years_before
from support.fake_uow import FakeAuditStore, FakeUnitOfWork

NOW = datetime(2037, 3, 1, 12, 0, tzinfo=UTC)
TEN_YEARS_AGO = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SEALED = SealedParts("kek-1", b"wrapped", b"nonce", b"ciphertext")


class Audit:
    """The audit log's port: appends to the unit of work's store, committed with it."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        if self.failing:
            raise RuntimeError("the audit store refused the entries")
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))


def with_documents(uow: FakeUnitOfWork, patient_id: str, *ids: str, closed: bool,
                   updated_at: datetime, blobs: FileBlobStore | None = None) -> None:
    uow.records.set_record(patient_id, closed=closed, updated_at=updated_at)
    for document_id in ids:
        uow.documents.add_sealed(document_id, patient_id, SEALED, SEALED)
        if blobs is not None:
            blobs.write(document_id, SEALED.ciphertext)


def job(uow: FakeUnitOfWork, *, now: datetime = NOW, audit: Audit | None = None,
        blobs: FileBlobStore | None = None, years: int = DEFAULT_YEARS) -> Retention:
    return Retention(lambda: uow, audit or Audit(), lambda: now,  # type: ignore[arg-type]
                     years=years, blobs=blobs)


def test_the_period_ends_on_the_same_calendar_instant_years_later() -> None:
    assert years_before(NOW, 10) == TEN_YEARS_AGO
    leap = datetime(2028, 2, 29, 8, 30, tzinfo=UTC)
    assert years_before(leap, 1) == datetime(2027, 2, 28, 8, 30, tzinfo=UTC)
    assert years_before(leap, 4) == datetime(2024, 2, 29, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize("years", [0, -10])
def test_a_retention_period_under_a_year_is_refused(years: int) -> None:
    with pytest.raises(ValueError, match="the retention period is at least one year"):
        job(FakeUnitOfWork(), years=years)


def test_a_record_closed_ten_years_ago_to_the_second_is_due_and_not_a_second_earlier() -> None:
    uow = FakeUnitOfWork()
    with_documents(uow, "pat-due", "doc-1", closed=True, updated_at=TEN_YEARS_AGO)
    with_documents(uow, "pat-soon", "doc-2", closed=True,
                   updated_at=TEN_YEARS_AGO + timedelta(seconds=1))
    assert job(uow).cutoff() == TEN_YEARS_AGO
    assert job(uow).due() == ["pat-due"]
    assert job(uow, years=11).due() == []
    assert job(uow, now=NOW + timedelta(seconds=1)).due() == ["pat-due", "pat-soon"]


def test_only_a_closed_record_unchanged_for_the_period_and_holding_documents_is_due() -> None:
    uow = FakeUnitOfWork()
    with_documents(uow, "pat-closed", "doc-1", closed=True, updated_at=TEN_YEARS_AGO)
    with_documents(uow, "pat-open", "doc-2", closed=False, updated_at=TEN_YEARS_AGO)
    with_documents(uow, "pat-recent", "doc-3", closed=True, updated_at=NOW - timedelta(days=1))
    with_documents(uow, "pat-empty", closed=True, updated_at=TEN_YEARS_AGO)
    assert job(uow).due() == ["pat-closed"]


def test_the_purge_deletes_the_records_documents_and_their_files_and_keeps_the_others(
        tmp_path: Path) -> None:
    uow, blobs = FakeUnitOfWork(), FileBlobStore(tmp_path)
    with_documents(uow, "pat-1", "doc-b", "doc-a", closed=True, updated_at=TEN_YEARS_AGO,
                   blobs=blobs)
    with_documents(uow, "pat-2", "doc-c", closed=False, updated_at=TEN_YEARS_AGO, blobs=blobs)
    report = job(uow, blobs=blobs).purge_due(by="os-user:alice")
    assert (report.cutoff, report.patients, report.documents) == (TEN_YEARS_AGO, 1, 2)
    assert uow.commits == 1
    assert set(uow.documents.contents) == set(uow.documents.texts) == {"doc-c"}
    assert uow.documents.owners == {"doc-c": "pat-2"}
    assert (blobs.read("doc-a"), blobs.read("doc-b")) == (None, None)
    assert blobs.read("doc-c") == SEALED.ciphertext
    assert job(uow, blobs=blobs).purge_due(by="os-user:alice").documents == 0  # nothing left


def test_the_purge_is_recorded_in_the_patients_history_by_id_and_in_the_operators_stream() -> None:
    uow = FakeUnitOfWork()
    with_documents(uow, "pat-1", "doc-b", "doc-a", closed=True, updated_at=TEN_YEARS_AGO)
    job(uow).purge_due(by="os-user:alice")
    clinical, operator = uow.audit.records
    reason = "record closed before 2027-03-01: retention of 10 years over"
    assert (clinical.stream, clinical.patient, clinical.action, clinical.interaction) == (
        "clinical", "pat-1", "D", "retention-purge")
    assert clinical.detail == {"reason": reason, "documents": "2", "ids": "doc-a doc-b"}
    assert (operator.stream, operator.entity_type, operator.entity_id, operator.patient) == (
        "operator", "Patient", "pat-1", None)
    assert operator.detail == {"reason": reason, "documents": "2"}
    for entry in (clinical, operator):
        assert (entry.agent.who, entry.agent.role, entry.recorded) == (
            "os-user:alice", "operator", "2037-03-01T12:00:00.000Z")


def test_each_patient_is_purged_in_a_transaction_of_their_own_whatever_the_batch() -> None:
    uow = FakeUnitOfWork()
    for n in range(5):
        with_documents(uow, f"pat-{n}", f"doc-{n}", closed=True, updated_at=TEN_YEARS_AGO)
    report = job(uow).purge_due(by="os-user:alice", batch=2)
    assert (report.patients, report.documents, uow.commits) == (5, 5, 5)
    assert [r.patient for r in uow.audit.records if r.stream == "clinical"] == [
        f"pat-{n}" for n in range(5)]
    assert uow.documents.owners == {}


def test_when_the_audit_cannot_record_the_purge_nothing_is_deleted(tmp_path: Path) -> None:
    uow, blobs = FakeUnitOfWork(), FileBlobStore(tmp_path)
    with_documents(uow, "pat-1", "doc-a", closed=True, updated_at=TEN_YEARS_AGO, blobs=blobs)
    with pytest.raises(RuntimeError, match="the audit store refused the entries"):
        job(uow, audit=Audit(failing=True), blobs=blobs).purge_due(by="os-user:alice")
    assert uow.commits == 0
    assert uow.documents.owners == {"doc-a": "pat-1"} and "doc-a" in uow.documents.contents
    assert blobs.read("doc-a") == SEALED.ciphertext
    assert uow.audit.records == []


def test_a_record_reopened_after_the_listing_is_kept() -> None:
    uow = FakeUnitOfWork()
    with_documents(uow, "pat-1", "doc-a", closed=True, updated_at=TEN_YEARS_AGO)
    calls = 0

    def units() -> FakeUnitOfWork:
        nonlocal calls
        calls += 1
        if calls == 2:  # the patient reopens their record between the listing and the purge
            with uow:
                uow.records.set_record("pat-1", closed=False, updated_at=NOW)
                uow.commit()
        return uow

    retention = Retention(units, Audit(), lambda: NOW)  # type: ignore[arg-type]
    assert retention.purge_due(by="os-user:alice").documents == 0
    assert uow.documents.owners == {"doc-a": "pat-1"}
    assert uow.audit.records == [] and uow.commits == 1  # the reopening's only
