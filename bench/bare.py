"""The cost of security against bare baselines (issue 21, item 4), loaded by wrk.

Why this shape: the question is what CareVault's security steps cost beside the least a server
can do with the same request, so both servers run on this machine in the same run, with the
same worker processes and the same load generator, and the rounds alternate between them so
that a drift of the shared machine hits both alike. The load generator is wrk (Debian's
``wrk``, compiled: a Python client capped the baseline in earlier runs), and the report shows
the CPU each side used (server processes, PostgreSQL backends, wrk), read from /proc, so that
a reader can tell the server, not the client, set the pace.

The two servers, both started before the timed runs and both kept running (idle while the
other one is loaded):

- **secure**: ``carevault serve --workers W`` of this tree on a scratch PostgreSQL database:
  every request carries a SMART token; ITI-68 ``GET /fhir/Binary/{id}`` checks it, takes the
  engine's decision on the record's facts, decrypts, checks the content's integrity and writes
  the audit entry before answering; ITI-65 ``POST /fhir`` verifies the author's signature,
  validates the Bundle, encrypts and commits documents and audit entries.
- **bare**: `bench/documents.py`'s baseline app (``--serve-baseline``), the same W processes
  with CareVault's supervisor, CareVault's own engine factory (same pool): ``GET
  /content/{id}`` answers ``document_content.ciphertext`` by primary key; ``POST /bundles``
  stores the request's bytes with one INSERT, committed before the answer.

Phases, each a warm-up (not counted) then a timed wrk run (``-t T -c C -d S``) per round and
side, rounds alternating which side goes first:

1. **retrieve**: closed loop; secure ``/fhir/Binary/{id}`` against bare ``/content/{id}`` over
   the same published documents, in the same random order.
2. **paced**: both at the same fixed rate, half the secure median rate of phase 1. wrk 4 has no
   constant-rate mode: the Lua script gives each thread a schedule (one start every 1/rate
   seconds), ``delay()`` holds each connection until the next start is due, every request
   carries an ``X-Request-ID`` (both servers echo it), and its latency counts from its
   *scheduled* start to its answer, so a server that falls behind is charged for the wait (no
   coordinated omission). wrk's own percentiles are kept beside them (from the moment a
   request is written, with wrk 4's correction for an expected interval), as is how late each
   request was sent.
3. **submit**: closed loop; secure signed ITI-65 (`bench/documents.py`'s ``provide_bundle``,
   signed with the physician's key) against bare ``POST /bundles`` of Bundles built the same
   way. A secure Bundle can be submitted once only (the same Bundle again is refused, see
   ``duplicate_submission_status``), so each secure round gets fresh Bundles: the warm-up's
   rate sizes them (``BUNDLE_MARGIN`` times what the timed run should need), they are written
   one per line into one file per wrk thread, and a thread that runs out stops (the run then
   fails: wrk goes on timing until its duration is up, so the rate would be understated). The
   bare side cycles through a pool of Bundles built once. After each run the rows created are
   counted: every answered secure submission must have stored its document, every bare one
   its row.

Any answer ≥ 400 in a timed run (wrk's count) fails the run.

Run: ``.venv/bin/python bench/bare.py`` (about five minutes; writes ``bench/results/bare.json``
and the ``bare_baselines`` object of ``bench/results/documents.json``), ``--quick`` for a smoke
run of about a minute (writes nothing unless ``--out``). It needs wrk and PostgreSQL as
`bench/retrieval.py` does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "bare.json"
DOCUMENTS_RESULTS = ROOT / "bench" / "results" / "documents.json"
DATABASE = "carevault_bench_bare"
SIDES = ("secure", "bare")

GOAL_RETRIEVE_RATIO = 0.33  # secure ITI-68 throughput ÷ the bare fetch-by-key's, at least
GOAL_PACED_P99_RATIO = 2.0  # secure p99 ÷ bare p99 at the same pace, at most
GOAL_SUBMIT_RATIO = 0.33  # secure signed ITI-65 throughput ÷ the bare INSERT's, at least
PACED_SHARE = 0.5  # the paced rate, as a share of the secure closed-loop rate
BUNDLE_MARGIN = 2.0  # secure Bundles prepared per round ÷ what the warm-up's rate needs
BARE_POOL = 400  # distinct Bundles the bare side cycles through
RESOURCES_PER_SUBMISSION = 4  # List, DocumentReference, Binary, signature DocumentReference
# The machine counts as CPU-bound when its CPUs are this busy (share of all of them).
BUSY_SHARE = 0.85
# A quiet machine: no pytest run seen, and a load average below this before the run starts.
QUIET_LOAD = 1.5
# Issue 21 quotes these from the Health Samurai FHIR server benchmark (8-vCPU servers).
PUBLISHED_PER_VCPU = {"HAPI FHIR": 380, "Medplum": 180}


def _load(name: str) -> ModuleType:
    """A sibling benchmark, imported by path (bench/ is not a package)."""
    path = ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


retrieval = _load("retrieval")  # server start, setup, CPU snapshots; it loads documents.py
docs = retrieval.docs
say = docs.say


@dataclass(frozen=True)
class Options:
    quick: bool
    workers: int
    threads: int
    connections: int
    seconds: float
    warmup: float
    rounds: int
    patients: int
    documents: int
    document_bytes: int
    postgres: str
    out: Path | None
    documents_json: Path | None


def options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 s phases, 1 round, writes nothing unless --out")
    parser.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--seconds", type=float, help="each timed run (default 12, quick 3)")
    parser.add_argument("--rounds", type=int, help="rounds per phase (default 2, quick 1)")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--documents", type=int, help="published for retrieval (default 200)")
    parser.add_argument("--document-bytes", type=int, default=16 * 1024)
    parser.add_argument("--postgres", default=os.environ.get("CAREVAULT_BENCH_POSTGRES",
                                                             docs.DEFAULT_PG))
    parser.add_argument("--out", type=Path, help=f"default {RESULTS.relative_to(ROOT)} "
                                                 "(quick: nothing written)")
    parser.add_argument("--documents-json", type=Path,
                        help="where to merge the bare_baselines object (default "
                             f"{DOCUMENTS_RESULTS.relative_to(ROOT)}; quick: nowhere)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    if args.connections % args.threads:
        parser.error("--connections must be a multiple of --threads")
    return Options(
        quick=quick,
        workers=args.workers,
        threads=args.threads,
        connections=args.connections,
        seconds=args.seconds or (3.0 if quick else 12.0),
        warmup=1.0 if quick else 3.0,
        rounds=args.rounds or (1 if quick else 2),
        patients=args.patients,
        documents=args.documents or (40 if quick else 200),
        document_bytes=args.document_bytes,
        postgres=args.postgres,
        out=args.out or (None if quick else RESULTS),
        documents_json=args.documents_json or (None if quick else DOCUMENTS_RESULTS),
    )


# --- wrk -----------------------------------------------------------------------------------------

# One script for every run; ``script`` fills in the settings and leaves out the paced parts of
# a closed-loop run (wrk only calls ``delay`` and parses answers when those globals exist).
LUA_COMMON = """\
-- bench/bare.py: %(what)s
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *t);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local METHOD = "%(method)s"
local TARGET = "%(target)s"     -- POST: the path; GET: each line is a path
local LIST = "%(list)s"         -- thread n reads LIST .. "." .. n, one path or body a line
local ONCE = %(once)s           -- each line at most once: the thread stops when they run out
local RATE = %(rate)s           -- requests/s per thread; 0: closed loop
local THREADS = %(threads)d
local RESULT = "%(result)s"
local HEADERS = {%(headers)s}

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  items = {}
  for line in io.lines(LIST .. "." .. id) do items[#items + 1] = line end
  position = tonumber(args[1] or "0") %% #items
  exhausted = false
  if RATE > 0 then
    interval = 1000000 / RATE
    -- the threads' schedules interleave; 100 ms for the first requests (outside it)
    start = now_us() + 100000 + interval * id / THREADS
    slot = 0
    queue, head, tail = {}, 1, 0
    sent, seq = {}, 0
    latencies, lateness = {}, {}
    other, failed, warm = 0, 0, 0
  end
end

local function next_item()
  position = position + 1
  if position > #items then
    if ONCE then
      exhausted = true
      wrk.thread:stop()
      return nil
    end
    position = 1
  end
  return items[position]
end

local function format(item, headers)
  if item == nil then return wrk.format("GET", "/health") end
  if METHOD == "GET" then return wrk.format("GET", item, headers) end
  return wrk.format("POST", TARGET, headers, item)
end
"""

LUA_CLOSED = """\
function request()
  return format(next_item(), HEADERS)
end
"""

LUA_PACED = """\
-- Called when a connection is free to send again: it takes the next start of the schedule,
-- whether or not that start is already past (then it sends at once, and the wait counts).
function delay()
  local due = start + slot * interval
  slot = slot + 1
  tail = tail + 1
  queue[tail] = due
  local wait = (due - now_us()) / 1000
  if wait <= 0 then return 0 end
  return math.ceil(wait)
end

function request()
  if head > tail then
    -- no delay() before it: wrk's check of the script (called once, never sent), or a
    -- connection made again after an error; not scheduled
    warm = warm + 1
    return wrk.format("GET", "/health")
  end
  local due = queue[head]
  queue[head] = nil
  head = head + 1
  seq = seq + 1
  local rid = "bench" .. id .. "x" .. seq
  sent[rid] = due
  lateness[#lateness + 1] = now_us() - due
  local headers = {["X-Request-ID"] = rid}
  for name, value in pairs(HEADERS) do headers[name] = value end
  return format(next_item(), headers)
end

function response(status, headers, body)
  local rid = headers["x-request-id"] or headers["X-Request-ID"] or headers["X-Request-Id"]
  local due = rid and sent[rid]
  if due == nil then  -- a first request's /health, or an answer without its id
    other = other + 1
    return
  end
  sent[rid] = nil
  if status >= 400 then failed = failed + 1 end
  latencies[#latencies + 1] = now_us() - due
end
"""

LUA_DONE = """\
function done(summary, latency, requests)
  local out = io.open(RESULT, "w")
  out:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "bytes": %%d, "errors": {"connect": %%d, ' ..
    '"read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, "latency_us": {"p50": %%d, ' ..
    '"p90": %%d, "p99": %%d, "max": %%d, "mean": %%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
  for _, thread in ipairs(threads) do
    out:write(string.format("thread %%d %%s %%d %%d %%d\\n", thread:get("id"),
      tostring(thread:get("exhausted")), thread:get("other") or 0,
      thread:get("failed") or 0, thread:get("warm") or 0))
    for _, value in ipairs(thread:get("latencies") or {}) do
      out:write(string.format("L %%.0f\\n", value))
    end
    for _, value in ipairs(thread:get("lateness") or {}) do
      out:write(string.format("D %%.0f\\n", value))
    end
  end
  out:close()
end
"""


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these values


def script(*, what: str, method: str, target: str, items: Path, once: bool, rate: float,
           threads: int, result: Path, headers: dict[str, str]) -> str:
    """The Lua script of one wrk run: closed loop (``rate`` 0) or paced at ``rate`` requests
    per second in all (each thread ``rate / threads``)."""
    fields = {
        "what": what, "method": method, "target": target, "list": str(items),
        "once": "true" if once else "false", "rate": repr(rate / threads if rate else 0),
        "threads": threads, "result": str(result),
        "headers": ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()),
    }
    body = LUA_COMMON + (LUA_PACED if rate else LUA_CLOSED) + LUA_DONE
    return body % fields


def write_items(lines: Sequence[str], threads: int, prefix: Path) -> None:
    """``lines`` dealt to the threads' files (``prefix.0``, ``prefix.1`` …) in turn."""
    for n in range(threads):
        chunk = lines[n::threads]
        if not chunk:
            raise ValueError("fewer lines than wrk threads")
        if any("\n" in line for line in chunk):
            raise ValueError("a line of a wrk list holds a newline")
        Path(f"{prefix}.{n}").write_text("\n".join(chunk) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports: its summary (wrk's own counts and latency, from the moment a
    request is written) and, paced, each request's latency from its scheduled start and how
    late it was sent."""
    summary: dict[str, Any]
    exhausted: bool
    unmatched: int
    failed: int
    warm: int
    latencies_ms: list[float]
    lateness_ms: list[float]

    @property
    def seconds(self) -> float:
        return float(self.summary["duration_us"]) / 1e6

    @property
    def requests(self) -> int:
        return int(self.summary["requests"])

    @property
    def errors(self) -> int:
        return int(sum(self.summary["errors"].values()))


def parse_result(text: str) -> WrkRun:
    """The file the script's ``done`` writes: a JSON summary, one ``thread`` line per thread,
    then ``L`` (latency from schedule) and ``D`` (lateness) lines in microseconds."""
    lines = text.splitlines()
    summary = json.loads(lines[0])
    exhausted = False
    unmatched = failed = warm = 0
    latencies: list[float] = []
    lateness: list[float] = []
    for line in lines[1:]:
        kind, *rest = line.split()
        if kind == "thread":
            exhausted = exhausted or rest[1] == "true"
            failed += int(rest[3])
            warm += int(rest[4])
            # an unscheduled /health is answered without a scheduled id; any other answer
            # without one is an answer the schedule cannot place
            unmatched += max(0, int(rest[2]) - int(rest[4]))
        elif kind == "L":
            latencies.append(float(rest[0]) / 1000)
        elif kind == "D":
            lateness.append(float(rest[0]) / 1000)
        else:
            raise ValueError(f"unexpected line in a wrk result: {line[:80]}")
    return WrkRun(summary, exhausted, unmatched, failed, warm, sorted(latencies),
                  sorted(lateness))


def wrk(base_url: str, *, method: str, target: str, items: Path, seconds: float, threads: int,
        connections: int, workdir: Path, headers: dict[str, str] | None = None,
        once: bool = False, rate: float = 0.0, what: str = "") -> WrkRun:
    """One wrk run; ``items`` is the prefix of the threads' files (see `write_items`)."""
    result = workdir / "wrk.result"
    result.unlink(missing_ok=True)
    lua = workdir / "bare.lua"
    lua.write_text(script(what=what or f"{method} {target}", method=method, target=target,
                          items=items, once=once, rate=rate, threads=threads, result=result,
                          headers=headers or {}), encoding="utf-8")
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
               "--timeout", "10s", "-s", str(lua), base_url, "--",
               str(0 if once else random.randrange(1_000_000))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr or done.stdout}")
    return parse_result(result.read_text(encoding="utf-8"))


# --- one timed run -------------------------------------------------------------------------------


def ms(values: Sequence[float], p: float) -> float | None:
    return round(docs.percentile(values, p), 2) if values else None


def figures(run: WrkRun, before: Any, after: Any, server_pid: int, workers: int,
            threads: int) -> dict[str, Any]:
    """Requests/s, latencies, cores busy and CPU ms per request of one timed run."""
    spent = retrieval.cpu_spent(before, after, server_pid)
    # Everything else the CPUs did: PostgreSQL backends that ended during the run (a pool's
    # overflow connections, see postgres_sessions_opened), the kernel's work (loopback
    # traffic), this script (idle while wrk runs), other sessions' work on a shared machine.
    spent["other"] = max(0.0, spent["machine"] - spent["server"] - spent["postgres"]
                         - spent["wrk"])
    wall = run.seconds
    requests = max(run.requests, 1)
    found: dict[str, Any] = {
        "requests": run.requests,
        "seconds": round(wall, 2),
        "per_s": round(run.requests / wall, 1),
        "wrk_latency_ms": {k: round(v / 1000, 2) for k, v in run.summary["latency_us"].items()},
        "cores_busy": {k: round(v / wall, 2) for k, v in spent.items()},
        "server_cores_per_worker": round(spent["server"] / wall / workers, 2),
        "wrk_cores_per_thread": round(spent["wrk"] / wall / threads, 3),
        "cpu_ms_per_request": {k: round(v * 1000 / requests, 3) for k, v in spent.items()},
        "bytes_per_request": round(run.summary["bytes"] / requests),
        "commits_per_request": round((after.counters["commits"] - before.counters["commits"])
                                     / requests, 2),
        "postgres_sessions_opened": after.counters["sessions"] - before.counters["sessions"],
    }
    if run.latencies_ms:
        found["scheduled"] = {
            "answered": len(run.latencies_ms),
            "per_s": round(len(run.latencies_ms) / wall, 1),
            "p50_ms": ms(run.latencies_ms, 50),
            "p90_ms": ms(run.latencies_ms, 90),
            "p99_ms": ms(run.latencies_ms, 99),
            "max_ms": round(run.latencies_ms[-1], 2),
            "sent_late_p99_ms": ms(run.lateness_ms, 99),
            "sent_late_max_ms": ms(run.lateness_ms, 100),
            "unmatched_answers": run.unmatched,
            "requests_outside_schedule": run.warm,
        }
    if run.exhausted:
        found["exhausted"] = True
    return found


@dataclass
class Side:
    """One of the two servers under load, and how its requests are made."""
    name: str
    server: Any
    base_url: str
    headers: dict[str, str]


def timed(side: Side, pg: Any, opts: Options, workdir: Path, *, method: str, target: str,
          items: Path, once: bool = False, rate: float = 0.0,
          warm_items: Path | None = None) -> tuple[WrkRun, dict[str, Any]]:
    """A warm-up (not counted), then the timed run with CPU snapshots around it."""
    common = {"method": method, "target": target, "threads": opts.threads,
              "connections": opts.connections, "workdir": workdir, "headers": side.headers,
              "what": f"{side.name} {method} {target}"}
    warm = wrk(side.base_url, items=warm_items or items, seconds=opts.warmup, once=once,
               rate=rate, **common)
    if warm.errors:
        raise RuntimeError(f"{side.name} warm-up: wrk saw errors {warm.summary['errors']}")
    before = retrieval.snapshot(pg)
    run = wrk(side.base_url, items=items, seconds=opts.seconds, once=once, rate=rate, **common)
    after = retrieval.snapshot(pg)
    if run.errors or run.failed:
        raise RuntimeError(f"{side.name} {method} {target}: wrk saw errors "
                           f"{run.summary['errors']} ({run.failed} paced answers ≥ 400)")
    if rate and run.unmatched:
        raise RuntimeError(f"{side.name}: {run.unmatched} answers without their X-Request-ID")
    return run, figures(run, before, after, side.server.pid, opts.workers, opts.threads)


def line(side: str, phase: str, found: dict[str, Any]) -> str:
    text = (f"{phase:8} {side:6} {found['per_s']:8.1f}/s  server "
            f"{found['cpu_ms_per_request']['server']:.3f} ms/request, cores: server "
            f"{found['cores_busy']['server']:.2f} postgres {found['cores_busy']['postgres']:.2f}"
            f" wrk {found['cores_busy']['wrk']:.2f} other {found['cores_busy']['other']:.2f}")
    if "scheduled" in found:
        s = found["scheduled"]
        text += (f"; from schedule p50 {s['p50_ms']} p99 {s['p99_ms']} ms "
                 f"(sent late p99 {s['sent_late_p99_ms']} ms)")
    else:
        text += f"; wrk p99 {found['wrk_latency_ms']['p99']} ms"
    return text


# --- the data ------------------------------------------------------------------------------------


def count_rows(pg: Any, table: str) -> int:
    with psycopg.connect(pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def bundle_lines(count: int, patients: list[str], practitioner_id: str, card: Any,
                 size: int) -> list[str]:
    """``count`` signed ITI-65 Bundles (compact JSON: one line each)."""
    return [body.decode("utf-8")
            for body, _sha in docs.prepare_bundles(count, patients, practitioner_id, card, size)]


def duplicate_status(base_url: str, card: Any, bundle: str) -> list[int]:
    """The statuses of one Bundle submitted twice: whether a secure Bundle can be reused."""
    statuses = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(2):
            answer = client.post("/fhir", content=bundle.encode(),
                                 headers={**card.headers(), "Content-Type": docs.FHIR_JSON})
            statuses.append(answer.status_code)
    return statuses


# --- summary -------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def goal(value: float | None, bound: float, at_least: bool) -> dict[str, Any]:
    met = value is not None and (value >= bound if at_least else value <= bound)
    return {"value": value, "goal": f"{'>=' if at_least else '<='} {bound}", "met": met}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]], paced_rate: float,
              nproc: int) -> dict[str, Any]:
    """The medians over rounds of each side and phase, the three ratios and their goals, the
    saturation check and the per-CPU figures. Each ratio is the median of the rounds' own
    ratios (a round's two sides ran back to back)."""
    def med(phase: str, side: str, *path: str) -> float:
        values = []
        for found in runs[phase][side]:
            for key in path:
                found = found[key]
            values.append(float(found))  # type: ignore[arg-type]
        return median(values)

    def round_ratios(phase: str, *path: str, invert: bool = False) -> list[float]:
        found = []
        for secure, bare in zip(runs[phase]["secure"], runs[phase]["bare"], strict=True):
            a, b = secure, bare
            for key in path:
                a, b = a[key], b[key]
            value = ratio(b, a) if invert else ratio(a, b)
            if value is not None:
                found.append(value)
        return found

    retrieve = round_ratios("retrieve", "per_s")
    paced = round_ratios("paced", "scheduled", "p99_ms")
    submit = round_ratios("submit", "per_s")
    retrieve_ratio = median(retrieve) if retrieve else None
    paced_ratio = median(paced) if paced else None
    submit_ratio = median(submit) if submit else None
    goals = {
        "retrieve_ratio": goal(retrieve_ratio, GOAL_RETRIEVE_RATIO, at_least=True),
        "paced_p99_ratio": goal(paced_ratio, GOAL_PACED_P99_RATIO, at_least=False),
        "submit_ratio": goal(submit_ratio, GOAL_SUBMIT_RATIO, at_least=True),
    }
    sides: dict[str, Any] = {}
    for phase in ("retrieve", "paced", "submit"):
        for side in SIDES:
            sides.setdefault(phase, {})[side] = {
                "per_s": med(phase, side, "per_s"),
                "server_cpu_ms_per_request": med(phase, side, "cpu_ms_per_request", "server"),
                "postgres_cpu_ms_per_request": med(phase, side, "cpu_ms_per_request",
                                                   "postgres"),
                "wrk_cpu_ms_per_request": med(phase, side, "cpu_ms_per_request", "wrk"),
                "cores_busy": {who: med(phase, side, "cores_busy", who)
                               for who in ("server", "postgres", "wrk", "other", "machine")},
                "wrk_latency_p99_ms": med(phase, side, "wrk_latency_ms", "p99"),
            }
            if phase == "paced":
                sides[phase][side].update({
                    key: med(phase, side, "scheduled", key)
                    for key in ("per_s", "p50_ms", "p99_ms", "sent_late_p99_ms")})
    bare = sides["retrieve"]["bare"]
    saturation = {
        "machine_cores_busy": bare["cores_busy"]["machine"],
        "machine_cores": nproc,
        "server_cores_busy": bare["cores_busy"]["server"],
        "postgres_cores_busy": bare["cores_busy"]["postgres"],
        "wrk_cores_busy": bare["cores_busy"]["wrk"],
        "other_cores_busy": bare["cores_busy"]["other"],
        "wrk_cores_per_thread": median([r["wrk_cores_per_thread"]
                                        for r in runs["retrieve"]["bare"]]),
        # The CPUs are busy, and wrk holds a small share of them: more server CPU, not a
        # faster client, is what would raise the baseline's rate.
        "server_bound": bare["cores_busy"]["machine"] >= BUSY_SHARE * nproc
        and bare["cores_busy"]["wrk"] <= 0.25 * (bare["cores_busy"]["server"]
                                                 + bare["cores_busy"]["postgres"]),
    }
    per_cpu = per_cpu_second(sides)
    return {
        "retrieve_ratio": retrieve_ratio,
        "paced_p99_ratio": paced_ratio,
        "submit_ratio": submit_ratio,
        "round_ratios": {"retrieve": retrieve, "paced_p99": paced, "submit": submit},
        "paced_rate_per_s": paced_rate,
        "sides": sides,
        "baseline_saturation": saturation,
        "per_cpu_second": per_cpu,
        "goals": goals,
        "goals_met": all(g["met"] for g in goals.values()),
    }


def per_cpu_second(sides: dict[str, Any]) -> dict[str, Any]:
    """Requests (and resources) per second of server CPU, and per second of server and
    PostgreSQL CPU together, beside the published per-vCPU figures."""
    def rates(phase: str, side: str, resources: int) -> dict[str, float | None]:
        s = sides[phase][side]
        server = s["server_cpu_ms_per_request"]
        both = server + s["postgres_cpu_ms_per_request"]
        return {
            "requests_per_server_cpu_s": round(1000 / server, 1) if server else None,
            "requests_per_server_and_postgres_cpu_s": round(1000 / both, 1) if both else None,
            "resources_per_server_cpu_s": round(resources * 1000 / server, 1) if server
            else None,
        }

    return {
        "retrieve": {side: rates("retrieve", side, 1) for side in SIDES},
        "submit": {side: rates("submit", side, RESOURCES_PER_SUBMISSION) for side in SIDES},
        "published_crud_requests_per_vcpu": PUBLISHED_PER_VCPU,
        "published_source": "Health Samurai FHIR server performance benchmark (run of "
                            "2026-06-28/29, as quoted in issue 21; not measured here): CRUD "
                            "≈3,058 requests/s for HAPI FHIR and ≈1,420 for Medplum, each "
                            "server given 8 vCPUs, divided by 8",
        "differences": [
            "a CareVault retrieval returns a 16 KB document after a SMART token check, the "
            "engine's decision on the record's facts, AES-256-GCM decryption, an integrity "
            "check and a committed audit entry; a published CRUD request reads or writes a "
            "small JSON resource",
            f"a CareVault submission is a signed transaction Bundle of {RESOURCES_PER_SUBMISSION} "
            "resources (a SubmissionSet List, a DocumentReference, a 16 KB Binary and the "
            "author's signature), its ES256 signature verified, the content encrypted, the "
            "audit entries committed: resources_per_server_cpu_s counts all four",
            "here the server's CPU is counted alone (its worker processes, from /proc); "
            "PostgreSQL and wrk ran on the same 2 vCPUs, shared with other work",
            "the published figures are requests/s of a whole server pinned to 8 vCPUs (Medplum "
            "as replicas), divided by 8, with PostgreSQL and the load generator (k6) in "
            "containers of their own on a 64-core host; their CRUD mixes create, read, update "
            "and delete of nine resource types (Synthea data), with basic auth (HAPI FHIR) or "
            "OAuth2 (Medplum)",
        ],
    }


def merge_into_documents(path: Path, result: dict[str, Any]) -> None:
    """``bare_baselines`` in `bench/results/documents.json`, its other keys kept."""
    existing: dict[str, Any] = {}
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
    existing["bare_baselines"] = {
        "retrieve_ratio": result["retrieve_ratio"],
        "paced_p99_ratio": result["paced_p99_ratio"],
        "submit_ratio": result["submit_ratio"],
        "goals": result["goals"],
        "date": result["date"],
        "quiet_machine": result["machine"]["quiet"],
        "source": "bench/bare.py",
        "details": "bench/results/bare.json",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- the run -------------------------------------------------------------------------------------


def start_bare(env: dict[str, str], workdir: Path, pg: Any, port: int, workers: int) -> Any:
    command = [sys.executable, str(ROOT / "bench" / "documents.py"), "--serve-baseline",
               "--database-url", pg.url, "--port", str(port), "--workers", str(workers)]
    server = retrieval.Server("baseline", command, env, workdir, f"http://127.0.0.1:{port}")
    server.wait_healthy()
    return server


def check_bare(base_url: str, document_id: str, size: int) -> None:
    """The baseline answers the stored ciphertext (the document plus GCM's nonce and tag)."""
    answer = httpx.get(f"{base_url}/content/{document_id}", timeout=30)
    if answer.status_code != 200 or not size < len(answer.content) < size + 200:
        raise RuntimeError(f"baseline /content: {answer.status_code}, {len(answer.content)} "
                           "bytes")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = options(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (.ci/run installs it)")
    signal.signal(signal.SIGTERM, docs.on_sigterm)
    started = datetime.now(UTC)
    busy = docs.other_test_runs()
    if busy:
        say(f"WARNING: {len(busy)} test run(s) on this machine; the figures will be noisy")
    nproc = len(os.sched_getaffinity(0))
    machine = {
        "nproc": nproc,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                              check=False).stdout.split("\n")[0].strip(),
        "test_runs_seen": len(busy),
    }
    workdir = Path(tempfile.mkdtemp(prefix="carevault-bench-bare-"))
    pg = docs.Postgres(opts.postgres, DATABASE)
    servers: list[Any] = []
    created = False
    try:
        pg.create()
        created = True
        machine["postgres"] = pg.describe()
        port, bare_port = docs.free_port(), docs.free_port()
        base_url = f"http://127.0.0.1:{port}"
        bare_url = f"http://127.0.0.1:{bare_port}"
        env = docs.carevault_env(workdir, pg.url, base_url)
        tree = retrieval.current()
        retrieval.check_imports_from(env, tree)
        say(f"setup: {opts.patients} patients, {opts.documents} documents …")
        docs.cli(env, workdir, "init")
        docs.cli(env, workdir, "db", "upgrade")
        docs.cli(env, workdir, "pki", "init")
        docs.create_bundle_table(pg.url)
        organization = docs.cli(env, workdir, "directory", "add-organization", "--identifier",
                                "BENCH-ORG-1", "--name", "Clinique du Benchmark", "--json")
        physician = docs.cli(env, workdir, "directory", "add-practitioner", "--identifier",
                             "BENCH-DOC-1", "--family", "Weber", "--given", "Anne",
                             "--profession", "physician", "--specialty", "general-practice",
                             "--organization", organization["id"], "--json")
        practitioner_id = str(physician["id"])
        patients = docs.register_patients(env, opts.patients)
        issued = docs.cli(env, workdir, "pki", "issue-practitioner", practitioner_id, "--out",
                          str(workdir / "card"), "--json")
        server = retrieval.start_server(tree, env, workdir, port, opts.workers)
        servers.append(server)
        card = docs.Card(base_url, workdir / "card", str(issued["client_id"]))
        card.renew()
        publishing = retrieval.Options(
            before=None, workers=opts.workers, threads=opts.threads,
            connections=opts.connections, seconds=opts.seconds, warmup=opts.warmup,
            rounds=opts.rounds, patients=opts.patients, documents=opts.documents,
            document_bytes=opts.document_bytes, postgres=opts.postgres, out=None)
        published = retrieval.publish(base_url, card, patients, practitioner_id, publishing,
                                      docs.presence_codes(pg.url, patients))
        probe = bundle_lines(1, patients, practitioner_id, card, opts.document_bytes)[0]
        duplicate = duplicate_status(base_url, card, probe)
        say(f"the same Bundle submitted twice: {duplicate}")
        bare = start_bare(env, workdir, pg, bare_port, opts.workers)
        servers.append(bare)
        ids = list(published)
        random.Random(21).shuffle(ids)
        check_bare(bare_url, ids[0], opts.document_bytes)

        lists = workdir / "lists"
        lists.mkdir()
        write_items([f"/fhir/Binary/{i}" for i in ids], opts.threads, lists / "secure-get")
        write_items([f"/content/{i}" for i in ids], opts.threads, lists / "bare-get")
        write_items(bundle_lines(BARE_POOL if not opts.quick else 100, patients,
                                 practitioner_id, card, opts.document_bytes),
                    opts.threads, lists / "bare-post")

        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            phase: {side: [] for side in SIDES} for phase in ("retrieve", "paced", "submit")}

        def sides_of(round_number: int) -> list[Side]:
            token = card.renew()
            secure = Side("secure", server, base_url, {"Authorization": f"Bearer {token}"})
            plain = Side("bare", bare, bare_url, {})
            return [secure, plain] if round_number % 2 == 0 else [plain, secure]

        paced_rate = 0.0
        for phase, rate in (("retrieve", 0.0), ("paced", None)):
            if rate is None:
                rate = round(PACED_SHARE * statistics.median(
                    r["per_s"] for r in runs["retrieve"]["secure"]), 1)
                paced_rate = rate
                say(f"paced: {rate:g} requests/s for both ({PACED_SHARE:.0%} of the secure "
                    "median) …")
            for round_number in range(opts.rounds):
                for side in sides_of(round_number):
                    if side.name == "secure":
                        retrieval.check_answers(base_url, card.token, published,
                                                opts.document_bytes)
                        target, items = "/fhir/Binary/{id}", lists / "secure-get"
                    else:
                        target, items = "/content/{id}", lists / "bare-get"
                    _run, found = timed(side, pg, opts, workdir, method="GET", target=target,
                                        items=items, rate=rate)
                    runs[phase][side.name].append(found)
                    say(line(side.name, phase, found))

        for round_number in range(opts.rounds):
            for side in sides_of(round_number):
                if side.name == "bare":
                    before = count_rows(pg, docs.BUNDLE_TABLE)
                    run, found = timed(side, pg, opts, workdir, method="POST",
                                       target="/bundles", items=lists / "bare-post")
                    stored = count_rows(pg, docs.BUNDLE_TABLE) - before
                else:
                    run, found = submit_secure(side, pg, opts, workdir, lists, patients,
                                               practitioner_id, card)
                    stored = found["documents_stored"]
                found["stored"] = stored
                if stored < run.requests:
                    raise RuntimeError(f"{side.name} submit: {run.requests} answered, only "
                                       f"{stored} stored")
                runs["submit"][side.name].append(found)
                say(line(side.name, "submit", found))
        for running in servers:
            running.stop()
            for trace in running.tracebacks():
                say(f"  {running.name} traceback: {trace[:300]}")
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        seen = len(busy) + len(docs.other_test_runs())
        machine["test_runs_seen"] = seen
        other = max(found["cores_busy"]["other"] for phase in runs.values()
                    for side in phase.values() for found in side)
        machine["other_cores_max"] = other
        machine["quiet"] = seen == 0 and machine["loadavg_at_start"][0] < QUIET_LOAD
        result: dict[str, Any] = {
            "benchmark": "bare",
            "date": started.isoformat(timespec="seconds"),
            "settings": {
                "quick": opts.quick, "workers": opts.workers, "wrk_threads": opts.threads,
                "connections": opts.connections, "seconds": opts.seconds,
                "warmup_seconds": opts.warmup, "rounds": opts.rounds,
                "patients": opts.patients, "documents": len(published),
                "document_bytes": opts.document_bytes,
                "paced_share_of_secure_rate": PACED_SHARE,
                "bundle_margin": BUNDLE_MARGIN,
                "secure": f"carevault serve --workers {opts.workers} ({tree.revision})",
                "bare": f"bench/documents.py --serve-baseline --workers {opts.workers}: "
                        "Starlette, CareVault's engine factory; GET /content/{id} by primary "
                        "key, POST /bundles one INSERT",
                "latency": "retrieve and submit: wrk's own (from the moment a request is "
                           "written; closed loop, so mostly queueing); paced: from each "
                           "request's scheduled start (the Lua schedule), queueing charged",
            },
            "duplicate_submission_status": duplicate,
            **summarize(runs, paced_rate, nproc),
            "machine": machine,
            "rounds": runs,
        }
    finally:
        for running in servers:
            running.stop()
        if created:
            with contextlib.suppress(psycopg.Error):
                pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    report(result)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        say(f"written to {opts.out}")
    if opts.documents_json is not None:
        merge_into_documents(opts.documents_json, result)
        say(f"bare_baselines merged into {opts.documents_json}")
    return result


def submit_secure(side: Side, pg: Any, opts: Options, workdir: Path, lists: Path,
                  patients: list[str], practitioner_id: str,
                  card: Any) -> tuple[WrkRun, dict[str, Any]]:
    """Secure ITI-65 with fresh Bundles: a warm-up on its own Bundles gives the rate that
    sizes the timed run's (each Bundle is submitted once)."""
    # wrk runs for its whole duration even when its threads stopped early, so a warm-up that
    # ran out of Bundles would understate the rate: enough for 250 submissions/s
    warm_count = max(opts.connections * 2, math.ceil(250 * opts.warmup))
    write_items(bundle_lines(warm_count, patients, practitioner_id, card, opts.document_bytes),
                opts.threads, lists / "secure-warm")
    common = {"method": "POST", "target": "/fhir", "threads": opts.threads,
              "connections": opts.connections, "workdir": workdir,
              "headers": {**side.headers, "Content-Type": docs.FHIR_JSON}, "once": True}
    warm = wrk(side.base_url, items=lists / "secure-warm", seconds=opts.warmup,
               what="secure ITI-65 warm-up", **common)
    if warm.errors:
        raise RuntimeError(f"secure ITI-65 warm-up: wrk saw errors {warm.summary['errors']}")
    rate = max(warm.requests / max(warm.seconds, 0.1), 20.0)
    if warm.exhausted:
        rate = 2 * warm_count / opts.warmup
    count = math.ceil(BUNDLE_MARGIN * rate * opts.seconds) + opts.connections
    started = time.perf_counter()
    write_items(bundle_lines(count, patients, practitioner_id, card, opts.document_bytes),
                opts.threads, lists / "secure-post")
    say(f"  {count:,} fresh Bundles for the secure round ({rate:.0f}/s in the warm-up), built "
        f"in {time.perf_counter() - started:.1f} s")
    token = card.renew()  # building may take a while; the token lives 5 minutes
    common["headers"] = {"Authorization": f"Bearer {token}", "Content-Type": docs.FHIR_JSON}
    before_rows = count_rows(pg, "document_content")
    before = retrieval.snapshot(pg)
    run = wrk(side.base_url, items=lists / "secure-post", seconds=opts.seconds,
              what="secure ITI-65", **common)
    after = retrieval.snapshot(pg)
    if run.errors:
        raise RuntimeError(f"secure ITI-65: wrk saw errors {run.summary['errors']}")
    if run.exhausted:  # its threads idled until the end: the rate would be understated
        raise RuntimeError(f"secure ITI-65: the {count} Bundles ran out; raise BUNDLE_MARGIN")
    found = figures(run, before, after, side.server.pid, opts.workers, opts.threads)
    found["bundles_prepared"] = count
    found["documents_stored"] = count_rows(pg, "document_content") - before_rows
    return run, found


def report(result: dict[str, Any]) -> None:
    say("")
    sides = result["sides"]
    for phase in ("retrieve", "paced", "submit"):
        for side in SIDES:
            s = sides[phase][side]
            extra = (f", from schedule p50 {s['p50_ms']} p99 {s['p99_ms']} ms"
                     if phase == "paced" else f", wrk p99 {s['wrk_latency_p99_ms']} ms")
            say(f"{phase:8} {side:6} {s['per_s']:9.1f}/s  server CPU "
                f"{s['server_cpu_ms_per_request']:.3f} ms/request{extra}")
    sat = result["baseline_saturation"]
    say(f"bare retrieval: machine {sat['machine_cores_busy']} of {sat['machine_cores']} cores "
        f"busy (server {sat['server_cores_busy']}, postgres {sat['postgres_cores_busy']}, wrk "
        f"{sat['wrk_cores_busy']}, other {sat['other_cores_busy']}); server-bound: "
        f"{sat['server_bound']}")
    for name, g in result["goals"].items():
        say(f"  {'MET   ' if g['met'] else 'MISSED'} {name} = {g['value']} (goal {g['goal']})")
    if not result["machine"]["quiet"]:
        m = result["machine"]
        say(f"  (not a quiet machine: load {m['loadavg_at_start'][0]} at the start, "
            f"{m['test_runs_seen']} test runs seen, up to {m['other_cores_max']} cores of other "
            "work in a run)")


if __name__ == "__main__":
    main()
    sys.exit(0)
