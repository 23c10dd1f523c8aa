"""The ATNA export tests' shared parts: an in-memory outbox (the exporter's own port, so a fake
is the right double), the AuditEvents it holds, and how to read rsyslog's lines back."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from carevault.services.atna_export import AtnaExporter, Sender

CLINICAL_APP = "carevault-clinical"
OPERATOR_APP = "carevault-operator"
DESTINATION = "arr-test"
SECRET = "Müller-Zoë-7781"  # appears in every AuditEvent; must never reach the log
WAIT_SECONDS = 60.0
LEAF = re.compile(r'\[carevault@32473 stream="(\w+)" leafIndex="(\d+)" logId="([0-9a-f]{64})"\]')
LOG_ID = "5e" * 32  # a log id (services.atna_export.log_id_of) for the tests' outboxes


def audit_event(stream: str, index: int) -> str:
    event = {
        "resourceType": "AuditEvent",
        "id": f"{stream}-{index}",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110110",
            "display": "Patient Record",
        },
        "action": "R",
        "recorded": "2025-01-02T03:04:05.678Z",
        "outcome": "0",
        "agent": [{"who": {"display": f"Dr {SECRET}"}, "requestor": True}],
        "source": {"observer": {"display": "carevault"}},
        "entity": [{"what": {"reference": f"Patient/p{index % 97}"}}],
    }
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class Gate:
    """Holds the exporter before it reads the batch that starts at ``at``, until released."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached = threading.Event()
        self.released = threading.Event()


class MemorySource:
    """An in-memory outbox: a list of AuditEvent JSON and one confirmed cursor."""

    def __init__(self, stream: str, count: int, gates: Sequence[Gate] = ()) -> None:
        self.stream = stream
        self.entries = [audit_event(stream, index) for index in range(count)]
        self.cursor = -1
        self.gates = list(gates)

    def pending(self, stream: str, destination: str, limit: int) -> list[tuple[int, str]]:
        assert (stream, destination) == (self.stream, DESTINATION)
        start = self.cursor + 1
        for gate in self.gates:
            if start >= gate.at and not gate.released.is_set():
                gate.reached.set()
                assert gate.released.wait(WAIT_SECONDS), "gate never released"
        end = min(len(self.entries), start + limit)
        return [(index, self.entries[index]) for index in range(start, end)]

    def confirm(self, stream: str, destination: str, through_index: int) -> None:
        assert (stream, destination) == (self.stream, DESTINATION)
        assert through_index > self.cursor
        self.cursor = through_index

    @property
    def done(self) -> bool:
        return self.cursor == len(self.entries) - 1


def exporter(
    source: MemorySource, sender: Sender, app_name: str, batch_size: int = 500
) -> AtnaExporter:
    return AtnaExporter(
        source,
        sender,
        stream=source.stream,
        log_id=LOG_ID,
        destination=DESTINATION,
        app_name=app_name,
        hostname="carevault.test",
        batch_size=batch_size,
        clock=lambda: datetime.now(UTC),
    )


def leaf_indexes(lines: list[str], stream: str) -> list[int]:
    found = []
    for line in lines:
        match = LEAF.search(line)
        assert match is not None, f"a line without the carevault SD element: {line[:120]!r}"
        assert match.group(1) == stream
        assert match.group(3) == LOG_ID
        found.append(int(match.group(2)))
    return found
