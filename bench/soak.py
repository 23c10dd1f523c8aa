"""Soak: CareVault under a steady realistic load for a long time (issue 20, item 7).

The mix: search 50 % (ITI-67, ``GET /fhir/DocumentReference?patient=…`` by a physician),
retrieve 35 % (ITI-68, ``GET /fhir/Binary/{id}``), submit 10 % (ITI-65, a signed one-document
Provide Document Bundle), patient actions 5 % (the patient's app reading their own
notifications). First the maximum rate is measured for ``--calibrate`` seconds with every
client unthrottled; then the soak runs for ``--minutes`` at ``--load`` (80 %) of it.

Every minute it records the requests, errors, p50/p99 latency, the resident memory (RSS) of
the process and the audit entries added. Every request carries its own ``X-Request-ID``; at
the end the run checks that every request id is in the audit log (audit entries = requests).
Results go to ``--out`` (JSON) and an SVG plot beside it (RSS and throughput per minute).

The platform runs in this process (``carevault.bootstrap.build`` and Starlette's test client:
the production app, door, engine, vault and audit log, without the network), on SQLite by
default or ``--database-url``; the people and their credentials are made with the helpers of
``tests/support`` (the production enrolment and token paths). RSS is this process's: server and
clients together.

Run: ``.venv/bin/python bench/soak.py --minutes 30 --out bench/results/soak.json`` (the issue's
run; not on a shared machine) or ``--minutes 1 --calibrate 10`` (a smoke run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MIX = (("search", 50), ("retrieve", 35), ("submit", 10), ("patient", 5))

# Documents retrieval picks among (the newest replace random older ones beyond this many).
RETRIEVABLE = 20_000
# Tokens live five minutes (services/tokens.py TOKEN_LIFETIME): renewed after three.
TOKEN_REFRESH_SECONDS = 180.0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Minute:
    minute: int
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    kind_latencies: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float = 0.0
    audit_entries: int = 0

    def summary(self) -> dict[str, Any]:
        return {"minute": self.minute, "requests": self.requests, "errors": self.errors,
                "by_kind": self.by_kind, "p50_ms": pick(self.latencies, 0.50),
                "p99_ms": pick(self.latencies, 0.99),
                "p50_ms_by_kind": {kind: pick(values, 0.50)
                                   for kind, values in sorted(self.kind_latencies.items())},
                "rss_mib": round(self.rss_mib, 1), "audit_entries": self.audit_entries}


def pick(latencies: list[float], p: float) -> float:
    """The p-quantile of latencies in seconds, in milliseconds (0 for none)."""
    ordered = sorted(latencies)
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)


class World:
    """The platform and its people: physicians who saw their patients, some patients' apps.

    The record a request reads must not grow with the run, or the soak measures the data's
    growth rather than the server's: the workload is spread over many patients (``patients``,
    default 1,000; at 10 % submissions a 30-minute run adds about ten documents to each), seen by
    a few physicians (``physicians``); ``with_apps`` of the patients have an app (patient
    actions are 5 % of the mix)."""

    def __init__(self, database_url: str | None, workdir: Path, patients: int,
                 physicians: int = 20, with_apps: int = 50) -> None:
        from starlette.testclient import TestClient

        from carevault.adapters.keys.local_file import create_key_file
        from carevault.adapters.storage.database import connect, upgrade
        from carevault.bootstrap import build
        from carevault.settings import Settings
        from support.authorities import registrar_token
        from support.documents import Pro
        from support.records import patient_seen_by
        from support.tokens import patient_account, professional_token

        url = database_url or f"sqlite:///{workdir / 'carevault.db'}"
        engine = connect(url, pool_size=24)
        upgrade(engine)
        key_file = workdir / "carevault.key"
        create_key_file(key_file)
        settings = Settings(database_url=url, key_source=f"file:{key_file}", environment="dev",
                            rate_limit_per_minute=10_000_000, request_threads=16,
                            _env_file=None)  # type: ignore[call-arg]
        self.platform = build(settings, engine)
        self.client = TestClient(self.platform.app, base_url="http://127.0.0.1:8000",
                                 client=("127.0.0.1", 50000))
        self.client.__enter__()
        self.client.headers["Authorization"] = f"Bearer {professional_token(self.platform)}"
        self.physicians = [Pro(self.platform, f"HP-SOAK-{n}") for n in range(physicians)]
        registrar = registrar_token(self.platform)
        self.records: list[tuple[str, Any]] = []  # (patient id, the physician who saw them)
        for n in range(patients):
            gp = self.physicians[n % physicians]
            born = date(1950, 1, 1) + timedelta(days=n // 1000)
            patient_id = patient_seen_by(self.platform, self.client, gp, number=n % 1000,
                                         born=born, registrar=registrar)
            self.records.append((patient_id, gp))
        self.apps: list[tuple[str, dict[str, str]]] = []  # (patient id, their app's headers)
        self.accounts: dict[str, str] = {}  # patient id -> their account's id
        for patient_id, _ in self.records[:with_apps]:
            self.accounts[patient_id] = patient_account(self.platform, patient_id)
            self.apps.append((patient_id, self.patient_headers(patient_id)))
        self.refreshed = time.monotonic()
        self.documents: list[tuple[str, Any]] = []  # (document id, its author)
        self.lock = threading.Lock()
        for patient_id, gp in self.records:
            self.submit(patient_id, gp, str(uuid.uuid4()))

    def refresh_tokens(self) -> None:
        """New tokens for every caller, the production way, before the five-minute ones run
        out (TOKEN_LIFETIME): a soak longer than that would otherwise measure 401s. Called
        between minutes, while no request is in flight; the same objects are updated, so the
        documents' authors read with their new tokens."""
        from support.documents import Pro
        from support.tokens import professional_token

        self.client.headers["Authorization"] = f"Bearer {professional_token(self.platform)}"
        for n, gp in enumerate(self.physicians):
            fresh = Pro(self.platform, f"HP-SOAK-{n}")
            gp.headers, gp.key_pem, gp.chain = fresh.headers, fresh.key_pem, fresh.chain
        for patient_id, mine in self.apps:
            mine.clear()
            mine.update(self.patient_headers(patient_id))
        self.refreshed = time.monotonic()

    def patient_headers(self, patient_id: str) -> dict[str, str]:
        from support.tokens import account_token

        token = account_token(self.platform, self.accounts[patient_id], patient_id)
        return {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.platform.engine.dispose()

    def audit_size(self) -> int:
        return sum(self.platform.audit.size(s) for s in ("clinical", "operator"))

    def submit(self, patient_id: str, gp: Any, request_id: str) -> int:
        from support.documents import created_id, provide_bundle

        content = b"%PDF-1.4\n% soak " + uuid.uuid4().hex.encode() + b"\n%%EOF\n"
        answer = self.client.post("/fhir", json=provide_bundle(patient_id, gp, content),
                                  headers={**gp.headers, "X-Request-ID": request_id})
        if answer.status_code == 200:
            with self.lock:  # at most RETRIEVABLE kept: the load generator stays its size
                if len(self.documents) < RETRIEVABLE:
                    self.documents.append((created_id(answer), gp))
                else:
                    self.documents[random.randrange(RETRIEVABLE)] = (created_id(answer), gp)
        return answer.status_code

    def operation(self, kind: str, rng: random.Random, request_id: str) -> int:
        if kind == "patient":
            patient_id, mine = rng.choice(self.apps)
            return self.client.get("/fhir/Communication",
                                   params={"patient": f"Patient/{patient_id}"},
                                   headers={**mine, "X-Request-ID": request_id}).status_code
        patient_id, gp = rng.choice(self.records)
        if kind == "submit":
            return self.submit(patient_id, gp, request_id)
        if kind == "search":
            return self.client.get("/fhir/DocumentReference",
                                   params={"patient": f"Patient/{patient_id}"},
                                   headers={**gp.headers, "X-Request-ID": request_id}
                                   ).status_code
        with self.lock:
            document_id, author = rng.choice(self.documents)
        return self.client.get(f"/fhir/Binary/{document_id}",
                               headers={**author.headers, "X-Request-ID": request_id}
                               ).status_code


def drive(world: World, seconds: float, rate: float | None, clients: int,
          on_result: Callable[[str, str, int, float], None],
          request_ids: Callable[[], str] = lambda: uuid.uuid4().hex) -> int:
    """Run the mix for ``seconds`` at ``rate`` requests/s (None: as fast as possible)."""
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    end = time.monotonic() + seconds
    started = time.monotonic()
    issued = 0
    lock = threading.Lock()

    def client(seed: int) -> None:
        nonlocal issued
        rng = random.Random(seed)
        while True:
            with lock:
                now = time.monotonic()
                if now >= end:
                    return
                due = started + issued / rate if rate else now
                issued += 1
            if due > now:
                time.sleep(due - now)
            kind = rng.choice(kinds)
            request_id = request_ids()
            began = time.perf_counter()
            try:
                status = world.operation(kind, rng, request_id)
            except Exception:  # counted as an error, the soak goes on
                status = 599
            on_result(kind, request_id, status, time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return issued


def svg_plot(minutes: list[dict[str, Any]]) -> str:
    """RSS (MiB) and requests per minute, two polylines on one small chart."""
    width, height, pad = 640, 320, 40
    xs = [m["minute"] for m in minutes] or [0]
    span = max(1, max(xs))

    def line(values: list[float], colour: str) -> str:
        top = max(values) or 1.0
        points = " ".join(
            f"{pad + (x / span) * (width - 2 * pad):.1f},"
            f"{height - pad - (v / top) * (height - 2 * pad):.1f}"
            for x, v in zip(xs, values, strict=True))
        return (f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
                f'<text x="{width - pad}" y="{pad - 8}" text-anchor="end" fill="{colour}">'
                f'max {top:.0f}</text>')

    rss = [float(m["rss_mib"]) for m in minutes]
    requests = [float(m["requests"]) for m in minutes]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12"><title>CareVault soak</title>'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{pad}" y="20">RSS MiB (blue), requests per minute (green), by minute'
            f'</text>{line(rss, "#1f4e9c")}'
            f'{line(requests, "#2a7a2a").replace(f"y={chr(34)}{pad - 8}", f"y={chr(34)}{pad + 8}")}'
            f'</svg>')


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--calibrate", type=float, default=60.0, help="seconds at full speed")
    parser.add_argument("--load", type=float, default=0.8, help="share of the maximum rate")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--report-every", type=float, default=60.0,
                        help="seconds per reported period (a minute; shorter for tests)")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--physicians", type=int, default=20)
    parser.add_argument("--with-apps", type=int, default=50, help="patients with an app")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="carevault-soak-") as scratch:
        world = World(args.database_url, Path(scratch), args.patients, args.physicians,
                      args.with_apps)
        try:
            calibration = drive(world, args.calibrate, None, args.clients,
                                lambda *_: None)
            maximum = calibration / args.calibrate
            rate = maximum * args.load
            print(f"maximum {maximum:.1f} requests/s; soak at {rate:.1f}/s "
                  f"for {args.minutes} minutes", flush=True)
            # Request ids are this run's prefix and a number: which were sent is then a count,
            # not a set the load generator would grow (its memory is in the RSS measured).
            run = uuid.uuid4().hex[:12]
            numbers = itertools.count()
            sent = 0
            measured = array("d")  # every latency, 8 bytes each, for the run's median
            lock = threading.Lock()
            current = Minute(0)  # the period being measured; only its summary is kept
            summaries: list[dict[str, Any]] = []
            audit_before = world.audit_size()
            audit_mark = audit_before

            def on_result(kind: str, request_id: str, status: int, seconds: float) -> None:
                nonlocal sent
                with lock:
                    current.requests += 1
                    current.errors += status >= 400
                    current.latencies.append(seconds)
                    current.by_kind[kind] = current.by_kind.get(kind, 0) + 1
                    current.kind_latencies.setdefault(kind, []).append(seconds)
                    sent += 1

            # The periods are counted, not fitted into the wall clock: a period whose
            # bookkeeping (token refresh, audit count) ran late must not swallow the next one.
            total = args.minutes * 60
            periods = max(1, math.ceil(total / args.report_every - 1e-9))
            for period in range(periods):
                if time.monotonic() - world.refreshed > TOKEN_REFRESH_SECONDS:
                    world.refresh_tokens()
                length = min(args.report_every, total - period * args.report_every)
                drive(world, length, rate, args.clients, on_result,
                      lambda: f"{run}-{next(numbers):09d}")
                with lock:
                    done = current
                    done.rss_mib = rss_bytes() / 2**20
                    size = world.audit_size()
                    done.audit_entries, audit_mark = size - audit_mark, size
                    summaries.append(done.summary())
                    print(json.dumps(summaries[-1]), flush=True)
                    measured.extend(done.latencies)
                    current = Minute(done.minute + 1)
            issued = next(numbers)
            recorded: set[int] = set()
            for stream in ("clinical", "operator"):
                size = world.platform.audit.size(stream)
                for start_index in range(0, size, 1000):
                    for _, data in world.platform.audit.entries(
                            stream, start_index, min(size, start_index + 1000)):
                        request_id = str(json.loads(data).get("request_id") or "")
                        if request_id.startswith(run + "-"):
                            recorded.add(int(request_id[len(run) + 1:]))
        finally:
            world.close()
    latencies = sorted(measured)
    result = {
        "minutes": args.minutes, "calibration_seconds": args.calibrate,
        "maximum_per_second": round(maximum, 1), "rate_per_second": round(rate, 1),
        "requests": sent, "requests_issued": issued,
        "errors": sum(int(m["errors"]) for m in summaries),
        # Every id with this run's prefix was issued by it: numbers below ``issued``.
        "requests_in_audit_log": len(recorded),
        "missing_from_audit_log": issued - len(recorded),
        "audit_entries_added": world_audit_delta(summaries),
        "rss_mib_first": summaries[0]["rss_mib"] if summaries else 0,
        "rss_mib_last": summaries[-1]["rss_mib"] if summaries else 0,
        "rss_slope_mib_per_minute_second_half": rss_slope(summaries[len(summaries) // 2:]),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0,
        "per_minute": summaries,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_minute"}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".svg").write_text(svg_plot(summaries))
    return result


def rss_slope(minutes: list[dict[str, Any]]) -> float:
    """Least-squares slope of RSS against the minute, in MiB a minute (0 for fewer than two):
    whether memory still grows once the caches and pools have filled, which the first and last
    readings alone do not tell."""
    if len(minutes) < 2:
        return 0.0
    xs = [float(m["minute"]) for m in minutes]
    ys = [float(m["rss_mib"]) for m in minutes]
    return round(statistics.linear_regression(xs, ys).slope, 2)


def world_audit_delta(summaries: list[dict[str, Any]]) -> int:
    return sum(int(m["audit_entries"]) for m in summaries)


if __name__ == "__main__":
    main()
