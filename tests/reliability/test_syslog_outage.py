"""The ATNA repository (a real rsyslog over mutual TLS) is down for a while under traffic:
requests go on being served and audited (the audit log is the export's outbox), /health/ready
stays ready, /metrics shows the export backlog growing; when rsyslog is back every audit entry
arrives, each exactly once, and the backlog returns to zero."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import build
from carevault.settings import Settings
from support.rsyslog import RsyslogServer, wait_until
from support.tokens import professional_token

LEAF = re.compile(r'\[carevault@32473 stream="(\w+)" leafIndex="(\d+)" logId="[0-9a-f]{64}"\]')
SECRET = "metrics-secret-for-the-outage-test-01"
WAIT_SECONDS = 90.0


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'carevault.db'}"
    engine = connect(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[RsyslogServer]:
    server = RsyslogServer(tmp_path / "rsyslog")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def backlog(client: TestClient, stream: str = "clinical") -> int:
    text = client.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"}).text
    found = re.search(rf'carevault_atna_export_backlog{{stream="{stream}"}} (\d+)', text)
    assert found, text[:2000]
    return int(float(found.group(1)))


def leaves(server: RsyslogServer) -> Counter[int]:
    found = Counter()
    for line in server.received_lines("carevault-clinical"):
        match = LEAF.search(line)
        assert match is not None, line[:200]
        found[int(match.group(2))] += 1
    return found


def test_no_audit_entry_is_lost_or_repeated_across_a_syslog_outage(
        settings: Settings, engine: Engine, rsyslog: RsyslogServer, tmp_path: Path) -> None:
    credential = tmp_path / "metrics.secret"
    credential.write_text(SECRET)
    credential.chmod(0o600)
    platform = build(settings.model_copy(update={
        "atna_host": rsyslog.host, "atna_port": rsyslog.port,
        "atna_ca_file": rsyslog.pki.ca_file, "atna_cert_file": rsyslog.pki.client_cert,
        "atna_key_file": rsyslog.pki.client_key, "atna_server_name": rsyslog.server_name,
        "metrics_credential_file": credential}), engine)
    token = professional_token(platform)
    with TestClient(platform.app, client=("127.0.0.1", 1),
                    headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(10):
            assert client.get("/fhir/Practitioner").status_code == 200
        assert wait_until(lambda: backlog(client) == 0, WAIT_SECONDS), rsyslog.diagnostics()

        rsyslog.stop()
        for _ in range(40):  # served and audited while the repository is down
            assert client.get("/fhir/Practitioner").status_code == 200
        assert client.get("/health/ready").status_code == 200
        pending = backlog(client)
        assert pending >= 40
        time.sleep(3)  # down "for a while": the exporter fails and backs off meanwhile
        assert backlog(client) >= pending

        rsyslog.start()
        assert wait_until(lambda: backlog(client) == 0, WAIT_SECONDS), rsyslog.diagnostics()
        size = platform.audit.size("clinical")
        assert wait_until(lambda: len(leaves(rsyslog)) >= size, WAIT_SECONDS)
    received = leaves(rsyslog)
    assert sorted(received) == list(range(size))  # every entry, none lost
    assert set(received.values()) == {1}  # each exactly once
