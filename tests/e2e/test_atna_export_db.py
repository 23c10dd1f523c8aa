"""The audit log itself as the ATNA outbox, on SQLite and PostgreSQL, with a real rsyslog."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import AuditStore
from carevault.bootstrap import build
from carevault.domain.audit import Agent, AuditRecord
from carevault.services.atna_export import AtnaExporter, AuditLogSource, log_id_of
from carevault.services.audit_log import AuditLog
from carevault.settings import Settings
from support.atna import LOG_ID
from support.authorities import registrar_headers
from support.builders import patient
from support.rsyslog import RsyslogServer, sender_for, wait_until
from support.tokens import professional_token

pytestmark = pytest.mark.e2e

LEAF = re.compile(r'\[carevault@32473 stream="(\w+)" leafIndex="(\d+)" logId="[0-9a-f]{64}"\]')
WAIT_SECONDS = 90.0


def record(n: int) -> AuditRecord:
    return AuditRecord(stream="clinical", recorded="2026-11-22T10:00:00.000Z", kind="access",
                       action="R", interaction="read", outcome="0",
                       agent=Agent(network="127.0.0.1"), patient=f"p{n % 97}",
                       entity_type="Patient", entity_id=f"p{n % 97}", status=200)


def indexes(lines: list[str]) -> list[int]:
    found = []
    for line in lines:
        match = LEAF.search(line)
        assert match is not None, line[:200]
        found.append(int(match.group(2)))
    return found


class GatedSource(AuditLogSource):
    """The database outbox, holding the exporter before the batch that starts at ``at``."""

    def __init__(self, engine: Engine, at: int) -> None:
        super().__init__(AuditDatabase(engine))
        self.at = at
        self.reached = threading.Event()
        self.released = threading.Event()

    def pending(self, stream: str, destination: str, limit: int) -> list[tuple[int, str]]:
        batch = super().pending(stream, destination, limit)
        if batch and batch[0][0] >= self.at and not self.released.is_set():
            self.reached.set()
            assert self.released.wait(WAIT_SECONDS), "gate never released"
        return batch


def fill(engine: Engine, total: int) -> None:
    signers = {s: Ed25519TreeHeadSigner.derive(b"k" * 32, s) for s in ("clinical", "operator")}
    log = AuditLog(AuditDatabase(engine), {**signers}, lambda: datetime.now(UTC))
    for start in range(0, total, 1000):
        with engine.begin() as connection:
            log.append_with(AuditStore(connection), [record(n) for n in range(start, start + 1000)])


def cursor(engine: Engine) -> int:
    with engine.connect() as connection:
        return AuditStore(connection).export_cursor("clinical", "arr")


def run_exporter(source: AuditLogSource, server: RsyslogServer,
                 stop: threading.Event) -> threading.Thread:
    exporter = AtnaExporter(source, sender_for(server), stream="clinical", log_id=LOG_ID,
                            destination="arr",
                            app_name="carevault-clinical", hostname="carevault.test")
    worker = threading.Thread(target=exporter.run_forever, args=(stop,), daemon=True,
                              kwargs={"idle_seconds": 0.05, "retry_seconds": 0.05,
                                      "max_retry_seconds": 0.4})
    worker.start()
    return worker


TOTAL = 10_000


def test_rsyslog_restarted_during_10000_events_gets_each_exactly_once(
        engine: Engine, rsyslog: RsyslogServer) -> None:
    """The repository goes down between two batches and comes back minutes later (here: after
    the exporter has failed and backed off several times): nothing lost, nothing repeated."""
    fill(engine, TOTAL)
    source = GatedSource(engine, at=3000)
    stop = threading.Event()
    worker = run_exporter(source, rsyslog, stop)
    try:
        assert source.reached.wait(WAIT_SECONDS), "the export did not start"
        rsyslog.stop()
        source.released.set()
        time.sleep(1.0)  # down: the exporter keeps failing and backing off meanwhile
        assert cursor(engine) == 3000
        rsyslog.start()
        assert wait_until(lambda: cursor(engine) == TOTAL, WAIT_SECONDS), (
            f"stuck at {cursor(engine)}")
    finally:
        stop.set()
        source.released.set()
        worker.join(WAIT_SECONDS)
    lines = rsyslog.wait_for_lines(TOTAL, "carevault-clinical", timeout=30)
    assert indexes(lines) == list(range(TOTAL))  # every event once, in order
    event = json.loads(lines[42].partition(" \ufeff")[2])
    assert event["resourceType"] == "AuditEvent"
    assert event["id"] == "clinical-42"


def test_a_stop_in_the_middle_of_a_batch_loses_nothing(engine: Engine,
                                                       rsyslog: RsyslogServer) -> None:
    """RFC 5425 has no acknowledgement: when rsyslog stops while reading a batch, the part it
    had already written cannot be told from the part it dropped, so the whole batch goes
    again. Nothing is lost; the repeats are that one batch, each carrying its own (stream,
    leafIndex) so a repository can drop them."""
    fill(engine, TOTAL)
    stop = threading.Event()
    worker = run_exporter(AuditLogSource(AuditDatabase(engine)), rsyslog, stop)
    try:
        assert wait_until(lambda: cursor(engine) >= 3000, WAIT_SECONDS)
        rsyslog.stop()
        stopped_at = cursor(engine)
        time.sleep(0.5)
        assert cursor(engine) == stopped_at
        rsyslog.start()
        assert wait_until(lambda: cursor(engine) == TOTAL, WAIT_SECONDS)
    finally:
        stop.set()
        worker.join(WAIT_SECONDS)
    received = indexes(rsyslog.wait_for_lines(TOTAL, "carevault-clinical", timeout=30))
    first_arrivals = list(dict.fromkeys(received))
    assert first_arrivals == list(range(TOTAL))  # nothing lost, in order
    repeats = {index for index, times in Counter(received).items() if times > 1}
    # At most the one batch that was in flight when rsyslog stopped, each repeated once.
    assert repeats <= set(range(stopped_at, stopped_at + 500))
    assert len(received) == TOTAL + len(repeats)


def test_the_server_forwards_both_streams(settings: Settings, engine: Engine,
                                          rsyslog: RsyslogServer) -> None:
    configured = settings.model_copy(update={
        "atna_host": rsyslog.host, "atna_port": rsyslog.port,
        "atna_ca_file": rsyslog.pki.ca_file, "atna_cert_file": rsyslog.pki.client_cert,
        "atna_key_file": rsyslog.pki.client_key, "atna_server_name": rsyslog.server_name})
    platform = build(configured, engine)
    token = professional_token(platform)
    with TestClient(platform.app, client=("127.0.0.1", 1),
                    headers={"Authorization": f"Bearer {token}"}) as client:
        created = client.post("/fhir/Patient", json=patient(platform.directory.systems, 1),
                              headers=registrar_headers(platform))
        assert created.status_code == 201
        client.get(f"/fhir/Patient/{created.json()['id']}")
        client.get("/audit/entries", params={"start": 0, "end": 2})  # an operator-stream entry
        clinical = rsyslog.wait_for_lines(2, "carevault-clinical", timeout=WAIT_SECONDS)
        operator = rsyslog.wait_for_lines(1, "carevault-operator", timeout=WAIT_SECONDS)
    events = [json.loads(line.partition(" \ufeff")[2]) for line in clinical]
    # Each stream's messages name its log by the id of its tree-head key: one installation's
    # entries keep their identity whichever worker or site sends them.
    for stream, lines in (("clinical", clinical), ("operator", operator)):
        expected = log_id_of(platform.audit.public_key_pem(stream))
        assert {re.findall(r'logId="(\w+)"', line)[0] for line in lines} == {expected}
    assert log_id_of(platform.audit.public_key_pem("clinical")) != log_id_of(
        platform.audit.public_key_pem("operator"))
    assert [e["subtype"][0]["code"] for e in events][:2] == ["create", "read"]
    assert json.loads(operator[0].partition(" \ufeff")[2])["id"] == "operator-0"
