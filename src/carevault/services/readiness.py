"""Whether this process can serve now, and the numbers an operator watches.

``/health/ready`` asks `Readiness.report`: the database takes a write, the audit log's last
group commit went through (an access that cannot be recorded is not served, so a failing audit
log means not ready), the keys can seal and open (a key file on a lost volume, an HSM gone), and
the replication state when the database knows one. ``/metrics`` reads the same sources
(`Readiness.gauges`). Nothing here names a patient or a document: only states and counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carevault.adapters.storage.health import DatabaseHealth
from carevault.domain.audit import STREAMS
from carevault.services.audit_log import AuditLog


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    state: str  # a word or two, never an error message (they can carry addresses, paths)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass(frozen=True)
class Gauges:
    audit_queue_depth: int
    export_backlog: dict[str, int]  # per stream; empty without an ATNA repository
    database: DatabaseHealth | None  # None: unreachable
    # The filesystem document store's free and total bytes (None: documents in the database).
    document_store_space: tuple[int, int] | None = None


class Readiness:
    def __init__(
        self,
        database: Callable[[], DatabaseHealth],
        log: AuditLog,
        keys_usable: Callable[[], None],
        *,
        export_destination: str | None = None,
        require_synchronous: bool = False,
        document_store: Path | None = None,
    ) -> None:
        """``database`` asks the database about itself (`adapters.storage.health`, raising
        when it cannot be reached); ``keys_usable`` raises when the keys cannot be used;
        ``export_destination`` is the ATNA repository's ``host:port`` (the export cursor's name);
        ``require_synchronous``: a primary without a synchronous standby is reported not
        ready (the strict-durability choice of a two-site installation, docs/operations.md)."""
        self._database = database
        self.log = log
        self.keys_usable = keys_usable
        self.export_destination = export_destination
        self.require_synchronous = require_synchronous
        self.document_store = document_store

    def database(self) -> DatabaseHealth | None:
        try:
            return self._database()
        except Exception:
            return None

    def report(self) -> Report:
        health = self.database()
        writable = health is not None and health.writable
        checks = [
            Check(
                "database",
                writable,
                "unreachable" if health is None else "writable" if writable else "read-only",
            ),
            Check(
                "audit",
                writable and not self.log.last_commit_failed,
                "writable"
                if writable and not self.log.last_commit_failed
                else "last commit failed"
                if self.log.last_commit_failed
                else "database not writable",
            ),
            self._keys(),
        ]
        if health is not None and health.role != "embedded":
            replication = health.replication
            ok = replication in ("synchronous", "none", "asynchronous") and not (
                self.require_synchronous and replication != "synchronous"
            )
            checks.append(Check("replication", ok, replication))
        return Report(tuple(checks))

    def _keys(self) -> Check:
        try:
            self.keys_usable()
        except Exception:
            return Check("keys", False, "unavailable")
        return Check("keys", True, "available")

    def gauges(self) -> Gauges:
        backlog: dict[str, int] = {}
        if self.export_destination:
            try:
                for stream in STREAMS:
                    backlog[stream] = self.log.export_backlog(stream, self.export_destination)
            except Exception:  # the database is down: the metric is absent, not zero
                backlog.clear()
        space = None
        if self.document_store is not None:
            try:
                stats = os.statvfs(self.document_store)
                space = (stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)
            except OSError:  # an unmounted store: the metric is absent
                space = None
        return Gauges(self.log.queue_depth(), backlog, self.database(), space)
