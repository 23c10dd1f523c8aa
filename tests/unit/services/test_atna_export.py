"""The exporter's cursor under partial confirmation, with a fake outbox and a fake sender.

Both are the exporter's own ports (``ExportSource``, ``Sender``), so fakes are the right
doubles; the real transports are tested against a real rsyslog in ``tests/e2e``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from carevault.adapters.syslog import DeliveryError
from carevault.services.atna_export import AtnaExporter, log_id_of
from support.atna import LOG_ID

SECRET = "Müller-Zoë-7781"


class Outbox:
    def __init__(self, count: int) -> None:
        self.entries = [f'{{"id":"clinical-{n}","who":"{SECRET}"}}' for n in range(count)]
        self.cursor = -1
        self.confirms: list[int] = []

    def pending(self, stream: str, destination: str, limit: int) -> list[tuple[int, str]]:
        start = self.cursor + 1
        return [(i, self.entries[i]) for i in range(start, min(len(self.entries), start + limit))]

    def confirm(self, stream: str, destination: str, through_index: int) -> None:
        assert through_index > self.cursor
        self.cursor = through_index
        self.confirms.append(through_index)


class ScriptedSender:
    """Fails with the given ``confirmed`` counts, one per call, then delivers everything."""

    def __init__(self, *confirmed: int) -> None:
        self.script = list(confirmed)
        self.batches: list[list[bytes]] = []

    def deliver(self, messages: Sequence[bytes]) -> None:
        self.batches.append(list(messages))
        if self.script:
            raise DeliveryError("the receiver went away", confirmed=self.script.pop(0))


def exporter(outbox: Outbox, sender: ScriptedSender, batch_size: int = 10) -> AtnaExporter:
    return AtnaExporter(
        outbox,
        sender,
        stream="clinical",
        log_id=LOG_ID,
        destination="arr",
        app_name="cv",
        hostname="h",
        batch_size=batch_size,
        clock=lambda: datetime.now(UTC),
    )


def leaves(batch: list[bytes]) -> list[int]:
    return [int(m.split(b'leafIndex="')[1].split(b'"')[0]) for m in batch]


def test_a_partly_confirmed_batch_moves_the_cursor_over_its_confirmed_prefix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox, sender = Outbox(25), ScriptedSender(4, 0, 6)
    export = exporter(outbox, sender)
    with caplog.at_level(logging.WARNING, logger="carevault.services.atna_export"):
        assert export.run_once() == 4  # 0..3 confirmed, 4..9 not
        assert outbox.cursor == 3
        assert export.run_once() == 0  # nothing confirmed: the cursor stays
        assert outbox.cursor == 3
        assert export.run_once() == 6  # 4..9 confirmed out of 4..13
        assert export.run_once() == 10
        assert export.run_once() == 5
        assert export.run_once() == 0
    assert outbox.confirms == [3, 9, 19, 24]
    # Only the unconfirmed rest is sent again, in order.
    assert [leaves(b)[0] for b in sender.batches] == [0, 4, 4, 10, 20]
    assert "leaves 0..9 (10 messages) to arr failed with 4 confirmed" in caplog.text
    assert "with 0 confirmed" in caplog.text
    assert SECRET not in caplog.text


def test_a_fully_confirmed_failure_still_counts_as_a_failure() -> None:
    outbox = Outbox(10)
    assert exporter(outbox, ScriptedSender(10)).run_once() == 10
    assert outbox.cursor == 9


def test_a_sender_that_confirms_more_than_it_was_given_moves_nothing() -> None:
    outbox = Outbox(10)
    with pytest.raises(ValueError, match="confirmed 11 messages of a batch of 10"):
        exporter(outbox, ScriptedSender(11)).run_once()
    assert outbox.cursor == -1


def test_a_negative_confirmation_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="negative"):
        DeliveryError("x", confirmed=-1)


class RecordingStop(threading.Event):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.after:
            self.set()
        return self.is_set()


def test_progress_before_a_failure_resets_the_back_off() -> None:
    outbox, sender = Outbox(100), ScriptedSender(0, 0, 0, 3, 0)
    stop = RecordingStop(after=6)
    exporter(outbox, sender).run_forever(
        stop, idle_seconds=5.0, retry_seconds=0.1, max_retry_seconds=1.0
    )
    # Three failures back off 0.1, 0.2, 0.4; the partial one (3 confirmed) starts over at 0.1.
    assert stop.waits[:5] == [0.1, 0.2, 0.4, 0.1, 0.2]
    assert outbox.confirms[0] == 2


# RFC 8410 §4: an Ed25519 SubjectPublicKeyInfo is these 12 bytes, then the 32-byte key.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def test_a_log_is_named_by_the_sha256_of_its_signing_keys_subject_public_key_info() -> None:
    raw = bytes(range(32))
    key = Ed25519PublicKey.from_public_bytes(raw)
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert log_id_of(pem) == hashlib.sha256(ED25519_SPKI_PREFIX + raw).hexdigest()
    other = Ed25519PublicKey.from_public_bytes(bytes(range(1, 33)))
    assert log_id_of(other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)) != (
        log_id_of(pem)
    )


def test_every_message_carries_the_log_id_and_a_malformed_one_is_refused() -> None:
    outbox, sender = Outbox(3), ScriptedSender()
    assert exporter(outbox, sender).run_once() == 3
    assert all(f' logId="{LOG_ID}"]'.encode() in message for message in sender.batches[0])
    for wrong in ("", "5E" * 32, "5e" * 31, "5e" * 32 + "\n", "g" * 64):
        with pytest.raises(ValueError, match="log_id"):
            AtnaExporter(
                outbox,
                sender,
                stream="clinical",
                log_id=wrong,
                destination="arr",
                app_name="cv",
                hostname="h",
            )
