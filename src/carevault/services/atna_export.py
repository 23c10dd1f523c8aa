"""Forwarding the audit log to an external ATNA Audit Record Repository, through an outbox.

The audit log is append-only; every entry has a stream ("clinical" or "operator") and a
contiguous ``leaf_index`` per stream. For each (stream, destination) the source keeps a durable
cursor: the last leaf index the repository confirmed. ``AtnaExporter.run_once`` reads the next
batch after the cursor, sends it as RFC 5424 messages in one ``deliver`` call and advances the
cursor over what the sender confirmed: the whole batch when ``deliver`` returns, the first
``DeliveryError.confirmed`` messages when it fails part-way (a transport that acknowledges
each message can say so; one that cannot confirms all or nothing and says 0). A repository
that is down for minutes loses nothing: the cursor stays, and the unconfirmed entries go again,
in order, when it is back. Each stream has its own exporter, cursor and APP-NAME (and may have
its own destination).

Each message is ``<85>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [carevault@32473 stream="…"
leafIndex="…" logId="…"] BOM{AuditEvent JSON}``. ``carevault@32473`` uses 32473, the private
enterprise number that RFC 5612 reserves for documentation examples, until CareVault has its
own IANA number. ``logId`` names the stream's log as RFC 6962 §3.2 names a log: the SHA-256 of
its tree-head signing key (DER SubjectPublicKeyInfo; ``GET /audit/public-key?stream=…`` serves
the key), in hex; it is the same on every worker and site of an installation and after a
restore, and differs between installations (each has its own keys). (logId, leafIndex)
identifies an entry, so a repository can drop repeats by it; HOSTNAME cannot serve, being the
machine that held the chores lease at the time. TIMESTAMP is when the batch was formatted (the
event's own time is inside the AuditEvent), so a repeat differs from the first copy in
TIMESTAMP, PROCID and perhaps HOSTNAME only.

Exactly once, as counted by the repository, holds when every message the repository stored was
confirmed to us, and every confirmed message was stored. How close a transport comes is in its
sender's docstring: over RELP (``carevault.adapters.syslog.relp_sender``) each message is
acknowledged, so a repository stopped in the middle of a batch gets the unacknowledged rest
once; over RFC 5425 (``carevault.adapters.syslog.tls_sender``) nothing tells which part of a
batch was read, so a batch interrupted part-way is sent again whole. The residual cases (stored
but not confirmed, so sent again; confirmed but lost inside a receiver that died before
writing) are listed there, plus one of ours: a crash between a confirmed delivery and
``confirm`` sends those entries again. Delivery failures are logged with the destination, the
leaf range and how many were confirmed, never the message contents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.syslog import DeliveryError
from carevault.adapters.syslog.rfc5424 import format_message
from carevault.domain.audit import AuditRecord
from carevault.fhirmodel.audit_event import audit_event

log = logging.getLogger(__name__)

# MSGID. IHE ITI TF-2 §3.20 (Record Audit Event [ITI-20], syslog transport over RFC 5425)
# requires MSGID "IHE+RFC-3881" and an MSG that is the DICOM PS3.15 A.5 / RFC 3881 XML audit
# message (DICOM PS3.15 A.6 and its implementations use "DICOM+RFC3881" for the same XML).
# A FHIR AuditEvent has its own ITI-20 transport, the ATX: FHIR Feed (a RESTful create), and IHE
# defines no MSGID for an AuditEvent carried by syslog. Using "IHE+RFC-3881" would tell a
# conforming repository to parse our JSON as DICOM XML, so we follow RFC 5424 §6.2.7 ("The MSGID
# SHOULD identify the type of message") with our own value, which is not an IHE code.
MSGID = "FHIR+AuditEvent"
SD_ID = "carevault@32473"  # 32473: the example private enterprise number of RFC 5612
STREAMS = frozenset({"clinical", "operator"})


class ExportSource(Protocol):
    """The outbox of one audit log: entries after a durable per-destination cursor."""

    def pending(self, stream: str, destination: str, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (leaf_index, AuditEvent JSON) after the cursor, in order."""
        ...

    def confirm(self, stream: str, destination: str, through_index: int) -> None:
        """Durably advance the cursor of (stream, destination) to ``through_index``."""
        ...


class Sender(Protocol):
    def deliver(self, messages: Sequence[bytes]) -> None:
        """Deliver all messages, or raise ``DeliveryError`` whose ``confirmed`` counts the
        leading messages the repository did confirm (0 when none, or when it cannot tell)."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def log_id_of(public_key_pem: bytes) -> str:
    """The identity of a log (RFC 6962 §3.2): SHA-256 of its signing key's DER
    SubjectPublicKeyInfo, as 64 lower-case hex digits."""
    key = load_pem_public_key(public_key_pem)
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


@dataclass(frozen=True)
class _Outcome:
    sent: int
    failed: bool


class AtnaExporter:
    """Sends one stream of the audit log to one ATNA repository, batch by batch, in order."""

    def __init__(
        self,
        source: ExportSource,
        sender: Sender,
        *,
        stream: str,
        log_id: str,
        destination: str,
        app_name: str,
        hostname: str,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utc_now,
        procid: str | None = None,
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown audit stream {stream!r}; expected one of {sorted(STREAMS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if re.fullmatch(r"[0-9a-f]{64}", log_id) is None:
            raise ValueError("log_id must be 64 lower-case hex digits (see log_id_of)")
        self.log_id = log_id
        self.source = source
        self.sender = sender
        self.stream = stream
        self.destination = destination
        self.app_name = app_name
        self.hostname = hostname
        self.batch_size = batch_size
        self.clock = clock
        self.procid = procid if procid is not None else str(os.getpid())
        self._format(clock(), 0, "{}")  # refuse an invalid APP-NAME or HOSTNAME now

    def run_once(self) -> int:
        """Send one batch if any; the number confirmed (fewer than the batch on a failure)."""
        return self._attempt().sent

    def run_forever(
        self,
        stop: threading.Event,
        idle_seconds: float = 0.5,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        """Export until ``stop`` is set; back off exponentially (bounded) while failing."""
        delay = retry_seconds
        while not stop.is_set():
            try:
                outcome = self._attempt()
            except Exception:
                log.exception(
                    "ATNA export of stream %s to %s failed", self.stream, self.destination
                )
                outcome = _Outcome(sent=0, failed=True)
            if outcome.failed:
                if outcome.sent:
                    delay = retry_seconds  # it was answering a moment ago: no long pause
                stop.wait(delay)
                delay = min(delay * 2, max_retry_seconds)
                continue
            delay = retry_seconds
            if outcome.sent < self.batch_size:
                stop.wait(idle_seconds)

    def _attempt(self) -> _Outcome:
        batch = self.source.pending(self.stream, self.destination, self.batch_size)
        if not batch:
            return _Outcome(sent=0, failed=False)
        first, last = batch[0][0], batch[-1][0]
        if [index for index, _ in batch] != list(range(first, first + len(batch))):
            raise ValueError(
                f"the source returned leaf indexes of stream {self.stream} that are not "
                f"contiguous and ascending ({first}..{last}, {len(batch)} entries)"
            )
        now = self.clock()
        messages = [self._format(now, index, text) for index, text in batch]
        try:
            self.sender.deliver(messages)
        except DeliveryError as error:
            confirmed = error.confirmed
            if confirmed > len(batch):
                raise ValueError(
                    f"the sender confirmed {confirmed} messages of a batch of {len(batch)}"
                ) from error
            log.warning(
                "ATNA delivery of stream %s leaves %d..%d (%d messages) to %s failed "
                "with %d confirmed: %s",
                self.stream,
                first,
                last,
                len(batch),
                self.destination,
                confirmed,
                error,
            )
            if confirmed:
                self.source.confirm(self.stream, self.destination, first + confirmed - 1)
            return _Outcome(sent=confirmed, failed=True)
        self.source.confirm(self.stream, self.destination, last)
        return _Outcome(sent=len(batch), failed=False)

    def _format(self, now: datetime, leaf_index: int, text: str) -> bytes:
        return format_message(
            timestamp=now,
            hostname=self.hostname,
            app_name=self.app_name,
            procid=self.procid,
            msgid=MSGID,
            structured_data=[
                (
                    SD_ID,
                    [
                        ("stream", self.stream),
                        ("leafIndex", str(leaf_index)),
                        ("logId", self.log_id),
                    ],
                ),
            ],
            message=text,
        )


class AuditLogSource:
    """The audit log itself as the exporter's outbox: entries rendered as FHIR AuditEvents,
    the confirmed position kept per (stream, destination) in ``audit_export_cursor``."""

    def __init__(self, database: AuditDatabase, server: str | None = None) -> None:
        """``server``: the platform's FHIR base, BALP's server agent of each event."""
        self.database = database
        self.server = server

    def pending(self, stream: str, destination: str, limit: int) -> list[tuple[int, str]]:
        with self.database.reading() as store:
            start = store.export_cursor(stream, destination)
            rows = store.entries(stream, start, start + limit)
        return [
            (
                index,
                json.dumps(
                    audit_event(
                        stream, index, AuditRecord.from_canonical(data), server=self.server
                    ),
                    ensure_ascii=False,
                    separators=(",", ":"),
                ),
            )
            for index, data in rows
        ]

    def confirm(self, stream: str, destination: str, through_index: int) -> None:
        with self.database.writing() as store:
            store.advance_export_cursor(stream, destination, through_index + 1)


def start_exporters(
    database: AuditDatabase,
    sender: Sender,
    *,
    logs: Mapping[str, str],
    destination: str,
    hostname: str,
    stop: threading.Event,
    server: str | None = None,
) -> list[threading.Thread]:
    """One exporter thread per stream, each with its own APP-NAME ("one function, one trace");
    ``logs`` gives each stream's log id (`log_id_of`)."""
    threads = []
    for stream in sorted(STREAMS):
        exporter = AtnaExporter(
            AuditLogSource(database, server),
            sender,
            stream=stream,
            log_id=logs[stream],
            destination=destination,
            app_name=f"carevault-{stream}",
            hostname=hostname,
        )
        thread = threading.Thread(
            target=exporter.run_forever, args=(stop,), name=f"atna-export-{stream}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads
