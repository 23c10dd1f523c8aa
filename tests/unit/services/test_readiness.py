"""Readiness and the operator's gauges, with the database's answer and the audit log given: ready
only when the database takes writes, the audit log's last commit went through and the keys can
be used (and the replication is what the installation asks for); states are words, never the
error that caused them; a gauge that cannot be read is absent, not zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from carevault.adapters.storage.health import DatabaseHealth, Standby
from carevault.services.readiness import Check, Readiness

SECRET_ERROR = "could not connect to server at 10.0.3.7:/var/lib/keys/kek-1.key"
EMBEDDED = DatabaseHealth(writable=True, role="embedded")


def primary(*sync_states: str, names: str = "") -> DatabaseHealth:
    standbys = tuple(Standby(f"s{n}", "streaming", state, 0.1)
                     for n, state in enumerate(sync_states))
    return DatabaseHealth(writable=True, role="primary", standbys=standbys,
                          synchronous_standby_names=names)


class Log:
    """The audit log as readiness reads it."""

    def __init__(self, *, failed: bool = False, backlog: dict[str, int] | None = None,
                 depth: int = 0) -> None:
        self.last_commit_failed = failed
        self.backlog = backlog
        self.depth = depth
        self.asked: list[tuple[str, str]] = []

    def queue_depth(self) -> int:
        return self.depth

    def export_backlog(self, stream: str, destination: str) -> int:
        self.asked.append((stream, destination))
        if self.backlog is None:
            raise ConnectionError(SECRET_ERROR)
        return self.backlog[stream]


def database(health: DatabaseHealth | None) -> DatabaseHealth:
    if health is None:
        raise ConnectionError(SECRET_ERROR)
    return health


def keys_fine() -> None:
    pass


def keys_lost() -> None:
    raise FileNotFoundError(SECRET_ERROR)


def readiness(health: DatabaseHealth | None = EMBEDDED, log: Log | None = None,
              keys: object = keys_fine, **options: object) -> Readiness:
    return Readiness(lambda: database(health), log or Log(), keys,  # type: ignore[arg-type]
                     **options)  # type: ignore[arg-type]


def states(ready: Readiness) -> dict[str, tuple[bool, str]]:
    report = ready.report()
    assert all(SECRET_ERROR not in check.state for check in report.checks)
    return {check.name: (check.ok, check.state) for check in report.checks}


def test_an_embedded_database_that_takes_writes_with_usable_keys_is_ready() -> None:
    report = readiness().report()
    assert report.ready
    assert report.checks == (Check("database", True, "writable"), Check("audit", True, "writable"),
                             Check("keys", True, "available"))  # no replication on SQLite


def test_an_unreachable_database_is_not_ready_and_its_error_is_not_told() -> None:
    ready = readiness(None)
    assert not ready.report().ready
    assert states(ready) == {"database": (False, "unreachable"),
                             "audit": (False, "database not writable"),
                             "keys": (True, "available")}


def test_a_standby_is_not_ready_for_it_takes_no_writes() -> None:
    ready = readiness(DatabaseHealth(writable=False, role="standby"))
    assert not ready.report().ready
    assert states(ready) == {"database": (False, "read-only"),
                             "audit": (False, "database not writable"),
                             "keys": (True, "available"), "replication": (False, "standby")}


def test_a_failed_audit_commit_makes_the_process_not_ready() -> None:
    ready = readiness(log=Log(failed=True))
    assert not ready.report().ready
    assert states(ready)["audit"] == (False, "last commit failed")
    assert states(ready)["database"] == (True, "writable")


def test_keys_that_cannot_be_used_make_the_process_not_ready() -> None:
    ready = readiness(keys=keys_lost)
    assert not ready.report().ready
    assert states(ready)["keys"] == (False, "unavailable")


@pytest.mark.parametrize(("health", "strict", "expected"), [
    (primary(), False, (True, "none")),
    (primary("async"), False, (True, "asynchronous")),
    (primary("sync"), False, (True, "synchronous")),
    (primary("quorum"), True, (True, "synchronous")),
    (primary("async"), True, (False, "asynchronous")),
    (primary(), True, (False, "none")),
    (primary(names="standby1"), False, (False, "degraded")),
])
def test_the_replication_is_ready_as_the_installation_asks(
        health: DatabaseHealth, strict: bool, expected: tuple[bool, str]) -> None:
    ready = readiness(health, require_synchronous=strict)
    assert states(ready)["replication"] == expected
    assert ready.report().ready is expected[0]


def test_the_gauges_give_the_backlog_per_stream_the_queue_and_the_database() -> None:
    log = Log(backlog={"clinical": 7, "operator": 0}, depth=3)
    gauges = readiness(log=log, export_destination="atna.example:6514").gauges()
    assert gauges.export_backlog == {"clinical": 7, "operator": 0}
    assert log.asked == [("clinical", "atna.example:6514"), ("operator", "atna.example:6514")]
    assert (gauges.audit_queue_depth, gauges.database, gauges.document_store_space) == (
        3, EMBEDDED, None)


def test_a_gauge_that_cannot_be_read_is_absent_not_zero(tmp_path: Path) -> None:
    log = Log(backlog=None)
    gauges = readiness(None, log, export_destination="atna.example:6514",
                       document_store=tmp_path / "unmounted").gauges()
    assert (gauges.export_backlog, gauges.database, gauges.document_store_space) == (
        {}, None, None)
    assert readiness(log=Log(backlog=None)).gauges().export_backlog == {}  # no repository
    assert log.asked == [("clinical", "atna.example:6514")]


def test_the_document_stores_free_and_total_space_are_measured(tmp_path: Path) -> None:
    space = readiness(document_store=tmp_path).gauges().document_store_space
    assert space is not None
    free, total = space
    assert 0 < free <= total
