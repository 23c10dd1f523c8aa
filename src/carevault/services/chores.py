"""The platform's chores, run in one process at a time: the holder of the chores lease.

Publishing signed tree heads every second, having one time-stamped by a TSA now and then,
the housekeeping tasks (releasing held documents, sweeping orphan blobs…) and the ATNA export.
Everything the chores need from outside - the lease, the TSA, the export's sender - is handed
in by `carevault.bootstrap`, which builds the adapters; the HTTP layer only starts and stops
the loop (`carevault.api.app`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from carevault.adapters.storage.lease import Lease
from carevault.adapters.timestamping import TimeStampAuthority
from carevault.domain.audit import STREAMS
from carevault.services.availability import as_unavailable

TREE_HEAD_INTERVAL_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 30.0

log = logging.getLogger("carevault.audit")


class TreeHeads(Protocol):
    """What the chores ask of the audit log."""

    def sign_tree_head(self, stream: str) -> object: ...

    def stamp_latest_tree_head(self, stream: str, authority: TimeStampAuthority) -> int | None: ...


@dataclass(frozen=True)
class Chores:
    """``lease()`` asks for the chores lease (None: another process holds it);
    ``start_export(stop)`` starts the ATNA exporters until ``stop`` is set."""

    tree_heads: TreeHeads
    lease: Callable[[], Lease | None]
    housekeeping: Sequence[Callable[[], object]] = ()
    authority: TimeStampAuthority | None = None
    stamp_interval_seconds: float = 3600.0
    start_export: Callable[[threading.Event], list[threading.Thread]] = lambda _stop: []
    export_stop_seconds: float = 5.0

    def run(self, stop: threading.Event) -> None:
        """While this process holds the chores lease: publish signed tree heads every second,
        have one time-stamped every ``stamp_interval_seconds``, run the housekeeping every
        ``HOUSEKEEPING_SECONDS``, and export to the ATNA repository. A process that does not
        hold it asks again every second, so the chores move on when their holder ends.

        Exporters are told to stop when the lease is lost or ``stop`` is set, and waited for
        up to ``export_stop_seconds`` each: an exporter ends after its current attempt, and a
        delivery can take its sender's whole timeout. Under a new lease, new exporters start
        only once those of the lost one have ended: one process never runs two exporters on
        one cursor (which would send the batch in flight twice)."""
        lease: Lease | None = None
        leading = threading.Event()  # set: the exporters of the lease stop
        exporters: list[threading.Thread] = []
        exporting = False  # the exporters of the current lease have started
        next_stamp = next_chores = 0.0
        try:
            while not stop.wait(TREE_HEAD_INTERVAL_SECONDS):
                if lease is not None and not lease.alive():
                    log.warning("the chores lease was lost; chores paused")
                    leading.set()
                    for thread in exporters:
                        thread.join(timeout=self.export_stop_seconds)
                    lease.release()
                    lease = None
                    exporting = False
                if lease is None:
                    try:
                        lease = self.lease()
                    except Exception:  # asked again at the next tick; the chores must not die
                        log.exception("the chores lease could not be asked for")
                    if lease is None:
                        continue
                    leading = threading.Event()
                    if any(thread.is_alive() for thread in exporters):
                        log.warning(
                            "an ATNA exporter of the lost chores lease has not ended yet; "
                            "the export starts again once it has"
                        )
                if not exporting and not any(thread.is_alive() for thread in exporters):
                    exporters = self.start_export(leading)
                    exporting = True
                if time.monotonic() >= next_chores:
                    next_chores = time.monotonic() + HOUSEKEEPING_SECONDS
                    for chore in self.housekeeping:
                        try:
                            chore()
                        except Exception as error:  # retried at the next round
                            _failed("housekeeping failed", error)
                for stream in STREAMS:
                    try:
                        self.tree_heads.sign_tree_head(stream)
                    except Exception as error:  # the next tick retries; serving goes on
                        _failed("tree head not signed", error)
                if self.authority is not None and time.monotonic() >= next_stamp:
                    next_stamp = time.monotonic() + self.stamp_interval_seconds
                    for stream in STREAMS:
                        try:
                            self.tree_heads.stamp_latest_tree_head(stream, self.authority)
                        except Exception as error:
                            log.warning("tree head not time-stamped: %s", error)
        finally:
            leading.set()
            for thread in exporters:
                thread.join(timeout=self.export_stop_seconds)
            if lease is not None:
                lease.release()


def _failed(what: str, error: Exception) -> None:
    """A chore that failed: a lost database (a failover: every second of it, until the lease
    moves) is one line; anything else is logged with its stack trace."""
    if as_unavailable(error) is not None:
        log.warning("%s: the database is unavailable (%s)", what, type(error).__name__)
    else:
        log.exception(what)
