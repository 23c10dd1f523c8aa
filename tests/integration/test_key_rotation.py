"""Key rotation on both databases: a new KEK re-wraps every data key without touching a
ciphertext, while documents keep being read and written; interrupted, it resumes; the old KEK
retires only when nothing needs it, and every document still opens."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.adapters.storage import schema as t
from carevault.bootstrap import Platform
from carevault.cli import context
from carevault.cli.main import app
from carevault.domain.errors import BusinessRuleViolation
from carevault.services import key_rotation
from carevault.settings import Settings
from support.authorities import presence_code, with_presence
from support.documents import PDF, Pro, created_id, provide_bundle, publish


@pytest.fixture
def published(registrar: TestClient,
        client: TestClient, platform: Platform) -> tuple[Pro, list[str]]:
    from support.builders import patient

    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 8),
                          headers={"Content-Type": "application/fhir+json"})
    patient_id = str(created.json()["id"])
    gp = Pro(platform, "HP-KEYS-GP")
    client.post("/fhir/Encounter", headers=gp.headers, json=with_presence({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{gp.id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"}}, presence_code(platform, patient_id)))
    ids = [created_id(publish(client, gp, provide_bundle(patient_id, gp,
                                                         PDF + str(n).encode())))
           for n in range(12)]
    return gp, ids


def ciphertexts(platform: Platform) -> dict[str, bytes]:
    with platform.engine.connect() as connection:
        return {row.document_id: bytes(row.ciphertext) for row in connection.execute(
            select(t.document_content.c.document_id, t.document_content.c.ciphertext))}


def test_rotation_under_load_rewraps_everything_and_every_document_still_opens(
        client: TestClient, platform: Platform, published: tuple[Pro, list[str]]) -> None:
    gp, ids = published
    vault = platform.vault
    old = vault.current_kek
    before = ciphertexts(platform)
    units = platform.unit_of_work
    with pytest.raises(BusinessRuleViolation, match="current"):
        key_rotation.retire(units, vault, old)

    failures: list[str] = []
    stop = threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            for document_id in ids:
                answer = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)
                if answer.status_code != 200 or not answer.content.startswith(PDF):
                    failures.append(f"{document_id}: {answer.status_code}")

    written: list[str] = []

    def write_continuously() -> None:
        patient_id = platform_patient(platform, ids[0])
        while not stop.is_set() and len(written) < 6:
            answer = publish(client, gp, provide_bundle(patient_id, gp, PDF + b"new"))
            if answer.status_code != 200:
                failures.append(f"publish: {answer.status_code}")
                return
            written.append(created_id(answer))

    workers = [threading.Thread(target=read_continuously),
               threading.Thread(target=write_continuously)]
    for worker in workers:
        worker.start()
    try:
        report = key_rotation.rotate(units, vault, batch=5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    # Documents written during the rotation may have been sealed under either KEK: finish.
    report = key_rotation.rewrap_all(units, vault)
    total = (len(ids) + len(written)) * 3  # content, title and signature per document
    assert report.kek_id != old
    assert key_rotation.usage(units) == {report.kek_id: total}
    after = ciphertexts(platform)
    assert {k: after[k] for k in before} == before  # nothing was decrypted or re-encrypted
    for document_id in written:
        assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).content == (
            PDF + b"new")
    with pytest.raises(BusinessRuleViolation, match="current"):
        key_rotation.retire(units, vault, report.kek_id)
    key_rotation.retire(units, vault, old)
    for n, document_id in enumerate(ids):
        answer = client.get(f"/fhir/Binary/{document_id}", headers=gp.headers)
        assert answer.content == PDF + str(n).encode()
    found = client.get("/fhir/DocumentReference", headers=gp.headers,
                       params={"patient": f"Patient/{platform_patient(platform, ids[0])}",
                               "_count": "100"})
    titles = [e["resource"]["content"][0]["attachment"].get("title")
              for e in found.json()["entry"]]
    assert titles.count("Consultation MARKER-Title-9931") == len(ids) + len(written)  # open


def platform_patient(platform: Platform, document_id: str) -> str:
    with platform.engine.connect() as connection:
        return str(connection.execute(select(t.document.c.patient_id).where(
            t.document.c.id == document_id)).scalar_one())


def test_an_interrupted_rotation_resumes_and_an_old_kek_in_use_cannot_retire(
        platform: Platform, published: tuple[Pro, list[str]]) -> None:
    _, ids = published
    vault = platform.vault
    units = platform.unit_of_work
    old = vault.current_kek

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(done: int, left: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        key_rotation.rotate(units, vault, batch=4,
                            progress=stop_after_first_batch)
    used = key_rotation.usage(units)
    assert used[old] == len(ids) * 3 - 4  # one batch of four moved, the rest waits
    with pytest.raises(BusinessRuleViolation, match="still wraps"):
        key_rotation.retire(units, vault, old)
    report = key_rotation.rewrap_all(units, vault, batch=4)
    assert report.rewrapped == len(ids) * 3 - 4
    assert set(key_rotation.usage(units)) == {vault.current_kek}


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    yield CliRunner()
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()


def test_the_command_line(cli: CliRunner, client: TestClient, platform: Platform,
                          published: tuple[Pro, list[str]]) -> None:
    gp, ids = published
    status = cli.invoke(app, ["keys", "status"])
    assert status.exit_code == 0 and "kek-0001 (current): 36 data key(s)" in status.output
    rotated = cli.invoke(app, ["keys", "rotate", "--batch", "7"])
    assert rotated.exit_code == 0, rotated.output
    assert "current key: kek-0002; 36 data key(s) re-wrapped" in rotated.output
    refused = cli.invoke(app, ["keys", "retire", "kek-0002"])
    assert refused.exit_code == 1 and "current" in refused.output
    assert cli.invoke(app, ["keys", "retire", "kek-0001"]).exit_code == 0
    platform.vault.refresh()  # the server re-reads
    for document_id in ids:
        assert client.get(f"/fhir/Binary/{document_id}", headers=gp.headers).status_code == 200
