"""The operator's instruments: liveness, readiness, Prometheus metrics, request ids.

Who may read what (docs/operations.md, "Instruments"):

- ``/health/live`` answers 200 while the process can answer at all; ``/health/ready`` answers
  200 or 503 with the state of each check (database writable, audit writable, keys available,
  replication). Both are public, like ``/health``: load balancers and Patroni-style probes hold
  no credential, and the answers name no patient, document, address or error message, only
  states. They are not written to the audit log, because they are no access to anyone's data
  and a probe every second would be most of the log.
- ``/metrics`` is for the operator's Prometheus only: it needs the metrics credential
  (``CAREVAULT_METRICS_CREDENTIAL_FILE``, sent as ``Authorization: Bearer …``, compared in
  constant time); without a configured credential it is refused to everyone. Every attempt,
  refused or served, is recorded in the operators' audit stream, like any non-FHIR read of
  the platform's state. Labels are route templates (``/fhir/Patient/{id}``), methods,
  statuses and outcomes: never an id, a query or a person.

Every response carries ``X-Request-ID`` (the caller's own, when it is a plain token of at most
64 characters, or a new one); log lines and the request's audit entries carry the same id.
"""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import uvicorn.config
import uvicorn.logging
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carevault.services.readiness import Readiness

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_REQUEST_ID = contextvars.ContextVar("carevault_request_id", default="")
_GOOD_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FHIR_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")


def current_request_id() -> str:
    """The id of the request this code runs for, or ""."""
    return _REQUEST_ID.get()


class Instruments:
    """The process's metrics, in a registry of its own (each built app has its own)."""

    def __init__(self, readiness: Readiness | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "carevault_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "carevault_http_request_duration_seconds",
            "Time to answer, by method and route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.decisions = Counter(
            "carevault_access_decisions",
            "FHIR requests by the authorization engine's outcome (permit, deny; none: refused "
            "before a decision, e.g. no valid token).",
            ["outcome"],
            registry=self.registry,
        )
        self.readiness = readiness
        self.state = _StateCollector(readiness) if readiness is not None else None
        if self.state is not None:
            self.registry.register(self.state)
        self.fhir_types: frozenset[str] = frozenset()
        self.fhir_operations: frozenset[str] = frozenset()

    def decided(self, outcome: str) -> None:
        self.decisions.labels(outcome).inc()

    def exposition(self) -> bytes:
        """The text exposition. Under ``carevault serve --workers N`` the supervisor gives
        every worker one ``PROMETHEUS_MULTIPROC_DIR``: each process's counters then live in
        files there, and any worker answers with the sum over all of them (the live ones and
        those that died, whose counts happened)."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if self.state is not None:
            registry.register(self.state)
        return generate_latest(registry)

    def fhir_template(self, path: str) -> str:
        """``/fhir/Patient/123/_history/2`` → ``/fhir/Patient/{id}/_history/{vid}``; a type
        or operation the registry does not know is a placeholder (bounded label values)."""
        parts = [p for p in path.split("/")[2:] if p]
        out = ["/fhir"]
        for position, part in enumerate(parts):
            if part.startswith("$"):
                name = part[1:]
                out.append(f"${name}" if name in self.fhir_operations else "{operation}")
            elif position == 0:
                out.append(part if part in self.fhir_types else "{type}")
            elif part == "_history":
                out.append("_history")
            elif position == 1 and part.startswith("_") and _NAME.fullmatch(part[1:]):
                out.append(part if part in ("_search",) else "{id}")
            else:
                out.append("{vid}" if position == 3 else "{id}")
            if len(out) > 6:
                out.append("…")
                break
        return "/".join(out) if len(out) > 1 else "/fhir"


class _StateCollector(Collector):
    """Gauges read when Prometheus scrapes: the audit queue, the ATNA backlog, replication."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def collect(self) -> Iterable[Metric]:
        gauges = self.readiness.gauges()
        queue = GaugeMetricFamily(
            "carevault_audit_queue_depth", "Audit appends waiting for their group commit."
        )
        queue.add_metric([], gauges.audit_queue_depth)
        yield queue
        backlog = GaugeMetricFamily(
            "carevault_atna_export_backlog",
            "Audit entries the ATNA repository (syslog) has not confirmed, per stream.",
            labels=["stream"],
        )
        for stream, count in sorted(gauges.export_backlog.items()):
            backlog.add_metric([stream], count)
        yield backlog
        if gauges.document_store_space is not None:
            free, total = gauges.document_store_space
            space = GaugeMetricFamily(
                "carevault_document_store_bytes",
                "The filesystem document store's space: free (to CareVault) and total. "
                "Submissions are answered 507 when it is full.",
                labels=["kind"],
            )
            space.add_metric(["free"], free)
            space.add_metric(["total"], total)
            yield space
        health = gauges.database
        writable = GaugeMetricFamily(
            "carevault_database_writable", "1 if the database took a write transaction."
        )
        writable.add_metric([], 1 if health is not None and health.writable else 0)
        yield writable
        if health is None:
            return
        lag = GaugeMetricFamily(
            "carevault_replication_lag_seconds",
            "Replay lag of each standby, as its primary sees it (pg_stat_replication).",
            labels=["standby", "sync_state"],
        )
        for standby in health.standbys:
            lag.add_metric([standby.name, standby.sync_state], standby.replay_lag_seconds or 0.0)
        yield lag
        standbys = GaugeMetricFamily(
            "carevault_replication_synchronous_standbys",
            "Standbys that acknowledge commits (sync or quorum) connected to the primary.",
        )
        standbys.add_metric(
            [], sum(1 for s in health.standbys if s.sync_state in ("sync", "quorum"))
        )
        yield standbys
        if health.replay_delay_seconds is not None:
            delay = GaugeMetricFamily(
                "carevault_replication_replay_delay_seconds",
                "On a standby: time since the last replayed commit.",
            )
            delay.add_metric([], health.replay_delay_seconds)
            yield delay


class RequestInstruments:
    """ASGI middleware: the request id, and each response counted by its route template.

    Installed innermost, so that Starlette's router has put the matched route into the scope
    when the response starts (the template is read from it, never from the raw path).
    """

    def __init__(self, app: ASGIApp, *, instruments: Instruments) -> None:
        self.app = app
        self.instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = _header(scope, b"x-request-id")
        request_id = offered if _GOOD_ID.fullmatch(offered) else uuid.uuid4().hex
        token = _REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _REQUEST_ID.reset(token)
            route = self._template(scope)
            method = str(scope.get("method", ""))
            method = method if method in _METHODS else "OTHER"
            self.instruments.requests.labels(method, route, str(status)).inc()
            self.instruments.latency.labels(method, route).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        path = str(scope.get("path", ""))
        if path == "/fhir" or path.startswith("/fhir/"):
            return self.instruments.fhir_template(path)
        route = scope.get("route")
        template = getattr(route, "path", None)
        return str(template) if template else "{unmatched}"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id when there is
    one, and the exception's type (not its text or traceback, which may quote data) when one
    is attached."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


class NoQueryInAccessLog(logging.Filter):
    """uvicorn's access log line names the request's path without its query: FHIR searches
    carry names, birth dates and national identification numbers there (the nginx
    configuration's log format leaves the query out for the same reason); CareVault's own
    audit log records every request in full, under its access rules."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn: '%s - "%s %s HTTP/%s" %d' with (client, method, path?query, version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


def _no_query_filters() -> dict[str, Any]:
    """The ``filters`` of a logging configuration, fresh for each (dictConfig consumes them)."""
    return {"no_query": {"()": f"{__name__}.NoQueryInAccessLog"}}


def json_log_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for CareVault and uvicorn: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = ("carevault", "uvicorn", "uvicorn.error", "uvicorn.access")
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": _no_query_filters(),
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
            for name in loggers
        },
    }
    config["loggers"]["uvicorn.access"]["filters"] = ["no_query"]
    return config


class TextFormatter(uvicorn.logging.DefaultFormatter):
    """uvicorn's text lines, where an exception is named by its type and the place it was
    raised, never by its text or traceback (a database error, a validation error quote the
    values they were given: identifiers, names, dates), as the JSON lines name it by its type."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        kind, _, trace = ei
        where = ""
        if trace is not None:
            while trace.tb_next is not None:
                trace = trace.tb_next
            where = f" at {trace.tb_frame.f_code.co_filename}:{trace.tb_lineno}"
        return f"{kind.__name__ if kind is not None else 'exception'}{where}"

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return ""


def text_log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging configuration (text lines) for uvicorn and CareVault: the access log
    without queries, an exception by its type and place only (`TextFormatter`)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["default"]["()"] = f"{__name__}.TextFormatter"
    config["filters"] = _no_query_filters()
    config["loggers"]["uvicorn.access"]["filters"] = ["no_query"]
    config["loggers"]["carevault"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
