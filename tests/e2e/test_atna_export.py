"""The ATNA exporter against a real rsyslog over mutual TLS (RFC 5425), counted on rsyslog's side.

The source is an in-memory outbox written here: ``ExportSource`` is the exporter's own port, so a
fake is the right double; the database-backed source is wired elsewhere. Every count below is
read from the files rsyslog wrote, by the ``leafIndex`` each message carries.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from carevault.adapters.syslog.tls_sender import DeliveryError, TlsSyslogSender
from carevault.services.atna_export import MSGID, SD_ID
from support.atna import (
    CLINICAL_APP,
    OPERATOR_APP,
    SECRET,
    WAIT_SECONDS,
    Gate,
    MemorySource,
    exporter,
    leaf_indexes,
)
from support.rsyslog import RsyslogServer, sender_for, wait_until

pytestmark = pytest.mark.e2e


class CountingSender:
    def __init__(self, inner: TlsSyslogSender) -> None:
        self.inner = inner
        self.failures = 0

    def deliver(self, messages: Sequence[bytes]) -> None:
        try:
            self.inner.deliver(messages)
        except DeliveryError:
            self.failures += 1
            raise


class RecordingStop(threading.Event):
    """A stop event that remembers every pause the exporter asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def test_1000_events_arrive_once_in_order_and_operator_events_in_their_own_stream(
    rsyslog: RsyslogServer,
) -> None:
    clinical = MemorySource("clinical", 1000)
    operator = MemorySource("operator", 40)
    sender = sender_for(rsyslog)
    clinical_exporter = exporter(clinical, sender, CLINICAL_APP)
    operator_exporter = exporter(operator, sender, OPERATOR_APP, batch_size=25)

    assert clinical_exporter.run_once() == 500
    # Confirmed means already written: rsyslog's queue is Direct, so the file action ran
    # before rsyslog read the close_notify that followed the batch. No waiting here.
    assert leaf_indexes(rsyslog.received_lines(CLINICAL_APP), "clinical") == list(range(500))
    assert clinical_exporter.run_once() == 500
    assert clinical_exporter.run_once() == 0
    assert operator_exporter.run_once() == 25
    assert operator_exporter.run_once() == 15
    assert operator_exporter.run_once() == 0

    clinical_lines = rsyslog.received_lines(CLINICAL_APP)
    assert leaf_indexes(clinical_lines, "clinical") == list(range(1000))
    assert leaf_indexes(rsyslog.received_lines(OPERATOR_APP), "operator") == list(range(40))
    assert clinical.cursor == 999
    assert operator.cursor == 39

    header, _, body = clinical_lines[7].partition(" \ufeff")
    assert re.fullmatch(
        rf"<85>1 \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}}Z carevault\.test {CLINICAL_APP} "
        rf'\d+ {re.escape(MSGID)} \[{SD_ID} stream="clinical" leafIndex="7"\]',
        header,
    )
    assert json.loads(body) == json.loads(clinical.entries[7])


def test_restart_during_a_10000_event_run_loses_and_repeats_nothing(rsyslog: RsyslogServer) -> None:
    total = 10_000
    first, second = Gate(3000), Gate(6500)
    source = MemorySource("clinical", total, gates=[first, second])
    sender = CountingSender(sender_for(rsyslog))
    stop = RecordingStop()
    worker = threading.Thread(
        target=exporter(source, sender, CLINICAL_APP).run_forever,
        args=(stop,),
        kwargs={"idle_seconds": 0.05, "retry_seconds": 0.05, "max_retry_seconds": 0.4},
        daemon=True,
    )
    worker.start()
    try:
        assert first.reached.wait(WAIT_SECONDS)
        rsyslog.terminate()  # rsyslog shuts down while the exporter goes on sending
        first.released.set()
        rsyslog.stop()
        failures_before = sender.failures
        second.released.set()  # from here on the repository is down
        assert wait_until(lambda: sender.failures >= failures_before + 4), "no retries"
        assert not source.done
        rsyslog.start()  # same port, same certificates
        assert wait_until(lambda: source.done), f"stuck at {source.cursor}"
    finally:
        stop.set()
        first.released.set()
        second.released.set()
        worker.join(WAIT_SECONDS)
    assert not worker.is_alive()

    lines = rsyslog.wait_for_lines(total, CLINICAL_APP, timeout=10)
    assert leaf_indexes(lines, "clinical") == list(range(total))  # each once, in order
    # Four failures in a row while down: the pauses doubled from 0.05 up to the 0.4 bound.
    pauses = stop.waits
    assert any(pauses[i : i + 4] == [0.05, 0.1, 0.2, 0.4] for i in range(len(pauses)))
    assert max(pause or 0.0 for pause in pauses) == 0.4


def test_a_sender_that_does_not_trust_the_server_fails_and_the_cursor_stays(
    rsyslog: RsyslogServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = MemorySource("clinical", 30)
    untrusting = sender_for(rsyslog, ca_file=rsyslog.pki.foreign_ca_file)
    with pytest.raises(DeliveryError, match="not trusted"):
        untrusting.deliver([b"<85>1 - - - - - - probe"])
    wrong_name = TlsSyslogSender.from_files(
        rsyslog.host,
        rsyslog.port,
        str(rsyslog.pki.ca_file),
        str(rsyslog.pki.client_cert),
        str(rsyslog.pki.client_key),
        server_name="audit.elsewhere.test",
        timeout=5.0,
    )
    with pytest.raises(DeliveryError, match="not trusted"):
        wrong_name.deliver([b"<85>1 - - - - - - probe"])
    with pytest.raises(ValueError, match="verify"):
        TlsSyslogSender(rsyslog.host, rsyslog.port, ssl._create_unverified_context())

    with caplog.at_level(logging.WARNING, logger="carevault.services.atna_export"):
        assert exporter(source, untrusting, CLINICAL_APP).run_once() == 0
    assert source.cursor == -1
    assert "leaves 0..29" in caplog.text
    assert SECRET not in caplog.text

    # A client certificate the server does not permit: with TLS 1.3 the client "sends"
    # successfully; only the missing confirmation shows the rejection.
    refused = sender_for(
        rsyslog, cert=rsyslog.pki.unpermitted_cert, key=rsyslog.pki.unpermitted_key
    )
    assert exporter(source, refused, CLINICAL_APP).run_once() == 0
    assert source.cursor == -1

    # The same batch with the right credentials: exactly once, nothing left from the attempts.
    assert exporter(source, sender_for(rsyslog), CLINICAL_APP).run_once() == 30
    assert leaf_indexes(rsyslog.received_lines(), "clinical") == list(range(30))


def test_a_repository_that_is_down_keeps_the_cursor_then_gets_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RsyslogServer(tmp_path / "rsyslog")  # configured, not started
    source = MemorySource("operator", 120)
    export = exporter(source, sender_for(server), OPERATOR_APP, batch_size=100)
    with caplog.at_level(logging.WARNING, logger="carevault.services.atna_export"):
        assert export.run_once() == 0
        assert export.run_once() == 0
    assert source.cursor == -1
    assert "cannot connect" in caplog.text
    assert SECRET not in caplog.text

    server.start()
    try:
        assert export.run_once() == 100
        assert export.run_once() == 20
        assert export.run_once() == 0
        lines = server.received_lines(OPERATOR_APP)
    finally:
        server.stop()
    assert leaf_indexes(lines, "operator") == list(range(120))
    assert source.cursor == 119
