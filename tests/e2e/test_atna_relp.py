"""The ATNA exporter over RELP/TLS to a real rsyslog (imrelp), counted on rsyslog's side.

RELP acknowledges every message, so the exporter's cursor moves message by message and a
repository stopped in the middle of a batch gets the rest of it, and nothing twice, when it is
back. Every count below is read from the files rsyslog wrote, by the (stream, leafIndex) each
message carries. The outbox is the in-memory ``MemorySource`` of the RFC 5425 tests.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.adapters.syslog import DeliveryError
from carevault.adapters.syslog.relp_sender import RelpSender
from carevault.bootstrap import build
from carevault.services.atna_export import MSGID, SD_ID
from carevault.settings import Settings
from support.atna import (
    CLINICAL_APP,
    LOG_ID,
    OPERATOR_APP,
    SECRET,
    WAIT_SECONDS,
    MemorySource,
    exporter,
    leaf_indexes,
)
from support.authorities import registrar_headers
from support.builders import patient
from support.rsyslog import RsyslogServer, relp_sender_for, wait_until
from support.tokens import professional_token

pytestmark = pytest.mark.e2e


@pytest.fixture
def relp(tmp_path: Path) -> Iterator[RsyslogServer]:
    """A real rsyslog listening for RFC 5425 and for RELP, both over mutual TLS."""
    server = RsyslogServer(tmp_path / "rsyslog", relp=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RecordingSender:
    """Passes batches to a RELP sender and remembers how each failure ended."""

    inner: RelpSender
    failures: list[tuple[int, int]] = field(default_factory=list)  # (batch size, confirmed)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, messages: Sequence[bytes]) -> None:
        try:
            self.inner.deliver(messages)
        except DeliveryError as error:
            with self.lock:
                self.failures.append((len(messages), error.confirmed))
            raise

    @property
    def cut_mid_batch(self) -> list[tuple[int, int]]:
        """Failures after part of the batch, but not all of it, was acknowledged."""
        with self.lock:
            return [(size, done) for size, done in self.failures if 0 < done < size]


class LineCounter:
    """Counts the lines rsyslog has written to one file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self.offset)
                new = file.read()
            self.offset += len(new)
            self.lines += new.count(b"\n")
        return self.lines


def test_a_relp_round_trip_arrives_once_in_order_in_each_streams_file(
    relp: RsyslogServer,
) -> None:
    clinical = MemorySource("clinical", 1000)
    operator = MemorySource("operator", 40)
    sender = relp_sender_for(relp)
    clinical_exporter = exporter(clinical, sender, CLINICAL_APP)
    operator_exporter = exporter(operator, sender, OPERATOR_APP, batch_size=25)

    assert clinical_exporter.run_once() == 500
    # Acknowledged means already written: imrelp answers after handing the message to the
    # Direct queue, whose file action runs before the answer is sent. No waiting here.
    assert leaf_indexes(relp.received_lines(CLINICAL_APP), "clinical") == list(range(500))
    assert clinical_exporter.run_once() == 500
    assert clinical_exporter.run_once() == 0
    assert operator_exporter.run_once() == 25
    assert operator_exporter.run_once() == 15
    assert operator_exporter.run_once() == 0

    clinical_lines = relp.received_lines(CLINICAL_APP)
    assert leaf_indexes(clinical_lines, "clinical") == list(range(1000))
    assert leaf_indexes(relp.received_lines(OPERATOR_APP), "operator") == list(range(40))
    assert (clinical.cursor, operator.cursor) == (999, 39)

    header, _, body = clinical_lines[7].partition(" \ufeff")
    assert re.fullmatch(
        rf"<85>1 \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}}Z carevault\.test {CLINICAL_APP} "
        rf'\d+ {re.escape(MSGID)} \[{SD_ID} stream="clinical" leafIndex="7" logId="{LOG_ID}"\]',
        header,
    )
    assert json.loads(body) == json.loads(clinical.entries[7])


# Clinical lines written when rsyslog is stopped: about 100 into a 500-message batch, so that the
# stop (a few dozen messages later) lands before the batch ends.
STOP_AT = (1100, 4620, 8123)


def test_rsyslog_stopped_mid_batch_three_times_during_10000_events_gets_each_exactly_once(
    relp: RsyslogServer,
) -> None:
    """Both streams run while rsyslog is stopped (SIGTERM) three times in the middle of a
    clinical batch and started again: every (stream, leafIndex) arrives exactly once, in
    order, and the exporter saw batches cut part-way (so the test did cut batches)."""
    clinical = MemorySource("clinical", 10_000)
    operator = MemorySource("operator", 2_000)
    sender = RecordingSender(relp_sender_for(relp))
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=exporter(source, sender, app, batch_size=size).run_forever,
            args=(stop,),
            kwargs={"idle_seconds": 0.05, "retry_seconds": 0.05, "max_retry_seconds": 0.4},
            daemon=True,
        )
        for source, app, size in ((clinical, CLINICAL_APP, 500), (operator, OPERATOR_APP, 100))
    ]
    written = LineCounter(relp.output_file(CLINICAL_APP))
    stopped_at = []
    for worker in workers:
        worker.start()
    try:
        for threshold in STOP_AT:
            assert wait_until(lambda t=threshold: written.count() >= t, WAIT_SECONDS), (
                f"stuck at {written.count()} lines before {threshold}"
            )
            relp.stop()  # SIGTERM while the exporter is in the middle of a batch
            stopped_at.append(written.count())
            time.sleep(0.3)  # down: the exporters fail to connect and back off meanwhile
            relp.start()  # same port, same certificates, same files
        assert wait_until(lambda: clinical.done and operator.done, WAIT_SECONDS), (
            f"stuck at {clinical.cursor} / {operator.cursor}"
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(WAIT_SECONDS)
    assert not any(worker.is_alive() for worker in workers)

    clinical_received = leaf_indexes(relp.received_lines(CLINICAL_APP), "clinical")
    operator_received = leaf_indexes(relp.received_lines(OPERATOR_APP), "operator")
    assert clinical_received == list(range(10_000)), _first_difference(clinical_received)
    assert operator_received == list(range(2_000)), _first_difference(operator_received)
    # The stops fell inside batches: the exporter got partial acknowledgements, which it turned
    # into cursor moves instead of whole resends.
    assert sender.cut_mid_batch, f"no batch cut part-way (stops at {stopped_at}): {sender.failures}"


def _first_difference(received: list[int]) -> str:
    """Where the received leaf indexes first differ from 0, 1, 2, ... (for the message)."""
    for position, index in enumerate(received):
        if index != position:
            return f"at line {position}: leaf {index} ({len(received)} lines in all)"
    return f"{len(received)} lines, a prefix of what was expected"


def test_a_receiver_that_refuses_our_certificate_confirms_nothing(
    relp: RsyslogServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = MemorySource("clinical", 30)
    refused = relp_sender_for(relp, cert=relp.pki.unpermitted_cert, key=relp.pki.unpermitted_key)
    with pytest.raises(DeliveryError) as raised:
        refused.deliver([b"<85>1 - - - - - - probe"])
    assert raised.value.confirmed == 0
    with caplog.at_level(logging.WARNING, logger="carevault.services.atna_export"):
        assert exporter(source, refused, CLINICAL_APP).run_once() == 0
    assert source.cursor == -1
    assert "leaves 0..29" in caplog.text
    assert "with 0 confirmed" in caplog.text
    assert SECRET not in caplog.text

    untrusting = relp_sender_for(relp, ca_file=relp.pki.foreign_ca_file)
    with pytest.raises(DeliveryError, match="not trusted") as raised:
        untrusting.deliver([b"<85>1 - - - - - - probe"])
    assert raised.value.confirmed == 0
    assert relp.received_lines() == []

    # The same batch with the right credentials: exactly once, nothing left from the attempts.
    assert exporter(source, relp_sender_for(relp), CLINICAL_APP).run_once() == 30
    assert leaf_indexes(relp.received_lines(), "clinical") == list(range(30))


def test_a_repository_that_is_down_keeps_the_cursor_and_logs_no_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RsyslogServer(tmp_path / "rsyslog", relp=True)  # configured, not started
    source = MemorySource("operator", 120)
    export = exporter(source, relp_sender_for(server), OPERATOR_APP, batch_size=100)
    with caplog.at_level(logging.WARNING, logger="carevault.services.atna_export"):
        assert export.run_once() == 0
    assert source.cursor == -1
    assert "cannot connect" in caplog.text
    assert SECRET not in caplog.text
    server.start()
    try:
        assert export.run_once() == 100
        assert export.run_once() == 20
        lines = server.received_lines(OPERATOR_APP)
    finally:
        server.stop()
    assert leaf_indexes(lines, "operator") == list(range(120))


def test_the_server_forwards_both_streams_over_relp_when_configured(
    settings: Settings, engine: Engine, relp: RsyslogServer
) -> None:
    assert relp.relp_port is not None
    configured = settings.model_copy(
        update={
            "atna_host": relp.host,
            "atna_port": relp.relp_port,
            "atna_transport": "relp",
            "atna_ca_file": relp.pki.ca_file,
            "atna_cert_file": relp.pki.client_cert,
            "atna_key_file": relp.pki.client_key,
            "atna_server_name": relp.server_name,
        }
    )
    platform = build(configured, engine)
    token = professional_token(platform)
    with TestClient(
        platform.app, client=("127.0.0.1", 1), headers={"Authorization": f"Bearer {token}"}
    ) as client:
        # Only the directories' authorities write patients: a registrar's request, whose
        # patient finds it in the clinical stream.
        created = client.post(
            "/fhir/Patient",
            json=patient(platform.directory.systems, 1),
            headers=registrar_headers(platform),
        )
        assert created.status_code == 201, created.text
        client.get("/audit/entries", params={"start": 0, "end": 2})  # an operator-stream entry
        clinical = relp.wait_for_lines(1, CLINICAL_APP, timeout=WAIT_SECONDS)
        operator = relp.wait_for_lines(1, OPERATOR_APP, timeout=WAIT_SECONDS)
    assert json.loads(clinical[0].partition(" \ufeff")[2])["id"] == "clinical-0"
    assert json.loads(operator[0].partition(" \ufeff")[2])["id"] == "operator-0"


def test_the_transport_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREVAULT_ATNA_TRANSPORT", "relp")
    assert Settings(_env_file=None).atna_transport == "relp"  # type: ignore[call-arg]
    monkeypatch.setenv("CAREVAULT_ATNA_TRANSPORT", "udp")
    with pytest.raises(ValueError, match="rfc5425"):
        Settings(_env_file=None)  # type: ignore[call-arg]
