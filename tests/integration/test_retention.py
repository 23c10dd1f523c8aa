"""Retention: a closed record's documents are purged only by the explicit retention job, after
the configured period (a fixed clock here), with its audit entries; the audit log still
verifies; nothing else in the code deletes a document. Both databases, filesystem store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import RecordState
from carevault.services import backup
from carevault.services.retention import Retention, years_before
from carevault.settings import Settings
from support.records import patient_with_documents

SRC = Path(__file__).parents[2] / "src" / "carevault"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"document_storage": "filesystem",
                                       "document_storage_path": tmp_path / "documents"})


def close(platform: Platform, patient_id: str, at: datetime) -> None:
    with platform.unit_of_work() as uow:
        uow.records.update_record(patient_id, at, state=RecordState.CLOSED)
        uow.commit()


def test_a_closed_record_is_purged_by_the_job_after_ten_years_only(
        platform: Platform, client: TestClient) -> None:
    closed, closed_docs = patient_with_documents(platform, client, 2, number=7, author="HP-R1")
    _kept, kept_docs = patient_with_documents(platform, client, 1, number=8, author="HP-R2")
    closed_at = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    close(platform, closed, closed_at)
    blobs = FileBlobStore(platform.settings.document_storage_path)
    assert all(blobs.read(d) is not None for d in closed_docs)

    def job(now: datetime) -> Retention:
        return Retention(platform.unit_of_work, platform.audit, lambda: now, blobs=blobs)

    early = job(closed_at + timedelta(days=3652 - 1))  # ten years are 3,652 or 3,653 days
    assert years_before(early.clock(), 10) < closed_at
    assert early.due() == []
    assert early.purge_due(by="os-user:test").documents == 0

    before = {s: platform.audit.size(s) for s in ("clinical", "operator")}
    late = job(datetime(2037, 3, 1, 12, 0, tzinfo=UTC))
    assert late.due() == [closed]
    report = late.purge_due(by="os-user:test")
    assert (report.patients, report.documents) == (1, 4)  # 2 reports and their signatures
    with platform.unit_of_work() as uow:
        assert uow.documents.get(closed_docs[0]) is None
        assert uow.documents.get(kept_docs[0]) is not None  # an active record is kept
    assert all(blobs.read(d) is None for d in closed_docs)
    # The purge is in the patient's history and the operators' stream, by id only.
    clinical = [AuditRecord.from_canonical(data) for _, data in platform.audit.entries(
        "clinical", before["clinical"], platform.audit.size("clinical"))]
    purge = [r for r in clinical if r.interaction == "retention-purge"]
    assert len(purge) == 1 and purge[0].patient == closed and purge[0].action == "D"
    assert set(closed_docs) <= set(purge[0].detail["ids"].split())
    operators = [AuditRecord.from_canonical(data) for _, data in platform.audit.entries(
        "operator", before["operator"], platform.audit.size("operator"))]
    assert [r.entity_id for r in operators if r.interaction == "retention-purge"] == [closed]
    # A second run finds nothing; the audit log verifies and every remaining document opens.
    assert late.purge_due(by="os-user:test").documents == 0
    report_after = backup.drill(platform.unit_of_work, platform.audit, platform.vault,
                                blobs=blobs)
    assert report_after.documents == 2  # the kept report and its signature


def test_a_record_reopened_is_not_purged(platform: Platform, client: TestClient) -> None:
    patient_id, _docs = patient_with_documents(platform, client, 1, number=9, author="HP-R3")
    close(platform, patient_id, datetime(2020, 1, 1, tzinfo=UTC))
    with platform.unit_of_work() as uow:
        uow.records.update_record(patient_id, datetime(2021, 1, 1, tzinfo=UTC),
                                  state=RecordState.ACTIVE)
        uow.commit()
    job = Retention(platform.unit_of_work, platform.audit,
                    lambda: datetime(2040, 1, 1, tzinfo=UTC))
    assert job.due() == [] and job.purge_due(by="os-user:test").documents == 0


def test_no_other_code_deletes_a_document() -> None:
    """Only `DocumentStore.purge_record` deletes document rows, and only the retention job
    calls it; the blob store's delete serves the retention job and the orphan sweep (files
    that never became a document) alone."""
    tables = re.compile(
        r"delete\(\s*(t\.)?document(_metadata|_content)?\b|delete\((table|d|m|c)\)")
    deleting, purging, blob_deletes = [], [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text("utf-8")
        name = path.relative_to(SRC).as_posix()
        if tables.search(text):
            deleting.append(name)
        if "purge_record(" in text:
            purging.append(name)
        if "blobs.delete(" in text:
            blob_deletes.append(name)
        assert not re.search(r"DELETE\s+FROM\s+\"?document", text, re.IGNORECASE), name
    assert sorted(deleting) == ["adapters/storage/directory_store.py",
                                "adapters/storage/document_store.py"]
    assert sorted(purging) == ["adapters/storage/document_store.py", "services/retention.py"]
    assert sorted(blob_deletes) == ["services/documents.py", "services/retention.py"]
    directory = (SRC / "adapters/storage/directory_store.py").read_text("utf-8")
    assert "t.document" not in directory  # its delete is of the patient's own index rows
