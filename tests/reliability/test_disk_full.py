"""The document store's disk fills up: a submission is answered 507 with an OperationOutcome
and stores nothing (no document row without its file, no file left in the store's tmp), reads
go on, and the same submission succeeds once there is room again; the restore drill (every
document opens, the audit log verifies) passes afterwards.

The store is a real, small filesystem: a 2 MiB tmpfs mounted for the test (root is needed; a
machine where ``mount`` is refused skips it, CI fails it)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.bootstrap import Platform, readiness
from carevault.services import backup
from carevault.settings import Settings
from support.documents import Pro, created_id, provide_bundle, publish
from support.records import patient_with_documents
from support.requirements import Requirement, missing

TMPFS = Requirement("a small tmpfs (mount as root)", None,
                    hint="run the tests as root, in a container allowed to mount tmpfs")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "documents"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                              str(mount_point)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        missing(TMPFS, mounted.stderr.strip() or "mount failed")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite (the database is not on the full disk: the document store is)."""
    from carevault.adapters.storage.database import connect, upgrade
    url = f"sqlite:///{tmp_path / 'carevault.db'}"
    engine = connect(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def settings(settings: Settings, store: Path) -> Settings:
    return settings.model_copy(update={"document_storage": "filesystem",
                                       "document_storage_path": store})


def fill(path: Path) -> None:
    """Write until the filesystem refuses (ENOSPC), down to single bytes."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(descriptor)


def counts(platform: Platform) -> tuple[int, int, int]:
    with platform.engine.connect() as connection:
        return tuple(connection.execute(select(func.count()).select_from(table)).scalar_one()
                     for table in (t.document, t.document_metadata, t.document_content))  # type: ignore[return-value]


def test_a_full_store_answers_507_stores_nothing_and_recovers(
        platform: Platform, client: TestClient, store: Path) -> None:
    patient_id, first = patient_with_documents(platform, client, 1, author="HP-DISK")
    gp = Pro(platform, "HP-DISK-2")
    # The author of the next submissions saw the patient too.
    from support.authorities import presence_code, with_presence
    seen = client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-21T09:00:00Z"}}, presence_code(platform, patient_id)))
    assert seen.status_code == 201, seen.text
    before = counts(platform)
    filler = store / "filler"
    fill(filler)
    # The operators see it coming in /metrics (carevault_document_store_bytes).
    probe = readiness(platform.settings, platform.engine, platform.audit, platform.vault)
    space = probe.gauges().document_store_space
    assert space is not None and space[0] < 64 * 1024 and space[1] >= 1024 * 1024

    content = b"%PDF-1.4\n" + os.urandom(48 * 1024) + b"\n%%EOF\n"
    bundle = provide_bundle(patient_id, gp, content)
    refused = publish(client, gp, bundle)
    assert refused.status_code == 507, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "full" in outcome["issue"][0]["diagnostics"]
    assert counts(platform) == before  # nothing half-written
    assert list((store / "tmp").iterdir()) == []  # no partial file left
    # Reads go on while the disk is full.
    again = client.get(f"/fhir/Binary/{first[0]}", headers=gp.headers)
    assert again.status_code == 200 and again.content.startswith(b"%PDF")

    filler.unlink()  # the operators make room
    space = probe.gauges().document_store_space
    assert space is not None and space[0] > 1024 * 1024
    accepted = publish(client, gp, bundle)  # the same submission, sent again
    assert accepted.status_code == 200, accepted.text
    document_id = created_id(accepted)
    assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).content == content
    platform.documents.sweep_orphans(platform.unit_of_work)
    report = backup.drill(platform.unit_of_work, platform.audit, platform.vault,
                          blobs=FileBlobStore(store))
    assert report.documents == 4  # two reports, two signatures
