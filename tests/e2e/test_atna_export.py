"""The ATNA exporter against a real rsyslog over mutual TLS (RFC 5425), counted on rsyslog's side.

The source is an in-memory outbox written here: ``ExportSource`` is the exporter's own port, so a
fake is the right double; the database-backed source is wired elsewhere. Every count below is
read from the files rsyslog wrote, by the ``leafIndex`` (and ``logId``) each message carries.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from carevault.adapters.syslog.rfc5424 import frame
from carevault.adapters.syslog.tls_sender import DeliveryError, TlsSyslogSender, client_context
from carevault.services.atna_export import MSGID, SD_ID
from support.atna import (
    CLINICAL_APP,
    LOG_ID,
    OPERATOR_APP,
    SECRET,
    WAIT_SECONDS,
    Gate,
    MemorySource,
    exporter,
    leaf_indexes,
)
from support.rsyslog import RsyslogServer, sender_for, wait_until

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

pytestmark = pytest.mark.e2e


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
        rf'\d+ {re.escape(MSGID)} \[{SD_ID} stream="clinical" leafIndex="7" logId="{LOG_ID}"\]',
        header,
    )
    assert json.loads(body) == json.loads(clinical.entries[7])


TOTAL = 10_000
CUT_BATCH = 3000  # the batch rsyslog is stopped in or before: leaves 3000..3499
CUT_AFTER = 152  # messages of that batch rsyslog reads and writes before it stops


class Cut:
    """Where a delivery is cut: after ``at`` bytes of its payload the socket stops sending, sets
    ``reached`` and waits for ``released`` (meanwhile the test stops rsyslog), then sends the rest.
    """

    def __init__(self) -> None:
        self.at: int | None = None
        self.reached = threading.Event()
        self.released = threading.Event()


def cutting_sender(server: RsyslogServer, cut: Cut) -> TlsSyslogSender:
    """The real RFC 5425 sender, over sockets that stop part-way through a batch when ``cut`` is
    armed: a receiver that dies in the middle of a batch, at a chosen frame, without a race."""

    class CuttingSocket(ssl.SSLSocket):
        def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
            view = memoryview(data).cast("B")
            sent: int = getattr(self, "sent", 0)
            if cut.at is not None and sent <= cut.at < sent + len(view):
                before, view = view[: cut.at - sent], view[cut.at - sent :]
                super().sendall(before, flags)
                sent, cut.at = sent + len(before), None
                cut.reached.set()
                assert cut.released.wait(WAIT_SECONDS), "the cut was never released"
            super().sendall(view, flags)
            self.sent = sent + len(view)

    context = client_context(
        str(server.pki.ca_file), str(server.pki.client_cert), str(server.pki.client_key)
    )
    context.sslsocket_class = CuttingSocket
    return TlsSyslogSender(
        server.host, server.port, context, server_name=server.server_name, timeout=5.0
    )


class CountingSender:
    """Counts the failed deliveries and the batches tried; arms ``cut`` for the first delivery
    of the batch at ``CUT_BATCH`` (after its first ``CUT_AFTER`` frames) when one is given."""

    def __init__(self, inner: TlsSyslogSender, cut: Cut | None = None) -> None:
        self.inner = inner
        self.cut = cut
        self.failures = 0
        self.failed_batches: list[tuple[int, int]] = []  # (first, last) leaf of a failed try

    def deliver(self, messages: Sequence[bytes]) -> None:
        leaves = leaf_indexes([m.decode() for m in (messages[0], messages[-1])], "clinical")
        if self.cut is not None and leaves[0] == CUT_BATCH and not self.cut.reached.is_set():
            self.cut.at = len(b"".join(frame(m) for m in messages[:CUT_AFTER]))
        try:
            self.inner.deliver(messages)
        except DeliveryError:
            self.failures += 1
            self.failed_batches.append((leaves[0], leaves[1]))
            raise


def run_through_an_outage(
    rsyslog: RsyslogServer, cut: Cut | None
) -> tuple[list[int], CountingSender]:
    """10,000 events; rsyslog stopped at the batch at ``CUT_BATCH`` (before it, or inside it when
    ``cut`` is given), down while the exporter fails four times, started again. What rsyslog
    wrote, by leaf index, in file order."""
    gate = Gate(CUT_BATCH)
    source = MemorySource("clinical", TOTAL, gates=[gate])
    inner = sender_for(rsyslog) if cut is None else cutting_sender(rsyslog, cut)
    sender = CountingSender(inner, cut)
    stop = RecordingStop()
    worker = threading.Thread(
        target=exporter(source, sender, CLINICAL_APP).run_forever,
        args=(stop,),
        kwargs={"idle_seconds": 0.05, "retry_seconds": 0.05, "max_retry_seconds": 0.4},
        daemon=True,
    )
    worker.start()
    try:
        assert gate.reached.wait(WAIT_SECONDS)
        if cut is None:
            rsyslog.stop()  # gone (its port closed) before the exporter reads the next batch
            gate.released.set()
        else:
            gate.released.set()
            assert cut.reached.wait(WAIT_SECONDS), "the batch was never cut"
            # rsyslog reads and writes the part sent so far, then stops with the rest unsent.
            rsyslog.wait_for_lines(CUT_BATCH + CUT_AFTER, CLINICAL_APP, timeout=WAIT_SECONDS)
            rsyslog.stop()
            cut.released.set()  # the exporter sends the rest into a closed connection
        failures_before = sender.failures
        assert wait_until(lambda: sender.failures >= failures_before + 4), "no retries"
        assert source.cursor == CUT_BATCH - 1  # nothing of the batch taken for delivered
        rsyslog.start()  # same port, same certificates
        assert wait_until(lambda: source.done), f"stuck at {source.cursor}"
    finally:
        stop.set()
        gate.released.set()
        if cut is not None:
            cut.released.set()
        worker.join(WAIT_SECONDS)
    assert not worker.is_alive()
    # Four failures in a row while down: the pauses doubled from 0.05 up to the 0.4 bound.
    pauses = stop.waits
    assert any(pauses[i : i + 4] == [0.05, 0.1, 0.2, 0.4] for i in range(len(pauses)))
    assert max(pause or 0.0 for pause in pauses) == 0.4
    lines = rsyslog.wait_for_lines(TOTAL, CLINICAL_APP, timeout=10)
    return leaf_indexes(lines, "clinical"), sender


def test_a_repository_stopped_between_batches_of_a_10000_event_run_gets_each_once(
    rsyslog: RsyslogServer,
) -> None:
    received, sender = run_through_an_outage(rsyslog, cut=None)
    assert received == list(range(TOTAL))  # nothing lost, nothing repeated, in order
    assert all(first == CUT_BATCH for first, _last in sender.failed_batches)


def test_a_repository_stopped_mid_batch_gets_that_batch_again_and_nothing_else_twice(
    rsyslog: RsyslogServer,
) -> None:
    """RFC 5425 has no acknowledgement: rsyslog stopped after writing 152 messages of a batch
    cannot be told from one that wrote none, so the batch goes again whole when it is back. The
    152 arrive twice, each with its (logId, leafIndex), by which a repository drops repeats;
    nothing is lost and nothing outside the cut batch repeats. (The earlier form of this test
    sent SIGTERM just before the batch and expected no repeat; on a loaded machine rsyslog
    still read leaves 3000..3151 before it stopped, and that run failed as this one would.)"""
    received, sender = run_through_an_outage(rsyslog, cut=Cut())
    cut_part = list(range(CUT_BATCH, CUT_BATCH + CUT_AFTER))
    assert received == [*range(CUT_BATCH), *cut_part, *range(CUT_BATCH, TOTAL)]
    assert all(first == CUT_BATCH for first, _last in sender.failed_batches)
    # What a repository keeps when it drops repeats by (logId, leafIndex): each event once.
    assert list(dict.fromkeys(received)) == list(range(TOTAL))


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
