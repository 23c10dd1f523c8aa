"""The patient portal's pages over HTTP, loaded by wrk, beside a static file of the same server:
what each page costs the server to render for a signed-in patient on demo data.

Why this shape: the question (issue 15) is whether every page renders within three times what
the same server takes for a static file (``/static/portal.css``). The load comes from wrk, a
compiled client costing little CPU; each page is measured twice, on the same server process:

- *render time*: one connection, one request at a time (``-c 1``), so that a request's latency
  is the server's time for it, with no queueing; p50 and p99 from wrk's histogram;
- *throughput*: ``-c C`` connections, with the server's CPU per request read from /proc, and
  the share of its cores it kept busy: for the static file, that share shows that the load
  saturates the server (so the requests per second are the server's, not the client's).

The pages are those of the patient's journeys: ``/me`` (the access history with its chart and
its verified completeness badge: each reading is itself recorded in the audit log, a durable
append), ``/me/documents`` and ``/me/access``. Setup, not timed: a scratch PostgreSQL database,
``carevault init``, ``db upgrade``, ``demo`` (patients with portal accounts, professionals),
one server, a physician who sees the first demo patient and publishes signed documents to their
record (`bench/retrieval.py`'s helpers), that patient signed in with password and TOTP as the
browser does. Every page is checked to answer 200 with its own content before it is timed, and
wrk counts every answer that is not 2xx/3xx: any makes the run fail.

Run: ``.venv/bin/python bench/portal.py`` (about three minutes), ``--quick`` for a smoke run
(writes nothing unless ``--out``). It needs wrk and PostgreSQL as `bench/retrieval.py` does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pyotp
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "portal.json"
DATABASE = "carevault_bench_portal"
STATIC = "/static/portal.css"
# Each page, and a piece of its own content that shows it rendered for the signed-in patient.
PAGES = {
    "me": ("/me?lang=fr", 'id="accesses-per-month"'),
    "documents": ("/me/documents?lang=fr", 'id="documents"'),
    "access": ("/me/access?lang=fr", 'id="close-record"'),
}
GOAL_RATIO = 3.0  # issue 15: every page within 3x the static page
SATURATED_SHARE = 0.85  # of a worker's core: the server, not the client, sets the pace
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _load(name: str) -> ModuleType:
    path = ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


retrieval = _load("retrieval")  # its server start, CPU helpers; it loads bench/documents.py
docs = retrieval.docs
say = docs.say


@dataclass(frozen=True)
class Options:
    workers: int
    threads: int
    connections: int
    seconds: float
    warmup: float
    rounds: int
    patients: int
    documents: int
    postgres: str
    out: Path | None


def options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s phases, 1 round")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--seconds", type=float, help="each timed wrk run (default 10)")
    parser.add_argument("--rounds", type=int, help="rounds over the pages (default 2)")
    parser.add_argument("--patients", type=int, default=10, help="demo patients")
    parser.add_argument("--documents", type=int, default=20,
                        help="documents published to the signed-in patient's record")
    parser.add_argument("--postgres", default=os.environ.get("CAREVAULT_BENCH_POSTGRES",
                                                             docs.DEFAULT_PG))
    parser.add_argument("--out", type=Path, help=f"default {RESULTS.relative_to(ROOT)} "
                                                 "(quick: nothing written)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        workers=args.workers,
        threads=args.threads,
        connections=args.connections,
        seconds=args.seconds or (3.0 if quick else 10.0),
        warmup=1.0 if quick else 2.0,
        rounds=args.rounds or (1 if quick else 2),
        patients=args.patients,
        documents=args.documents,
        postgres=args.postgres,
        out=args.out or (None if quick else RESULTS),
    )


# --- the signed-in patient -----------------------------------------------------------------------


def sign_in(base_url: str, portal: dict[str, str]) -> str:
    """The session cookie of the demo patient, signed in as a browser does (password, TOTP)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get("/login?lang=fr")
        found = CSRF.search(page.text)
        if page.status_code != 200 or found is None:
            raise RuntimeError(f"/login answered {page.status_code} without a form")
        answer = client.post("/login?lang=fr", data={
            "login": portal["login"], "password": portal["password"],
            "code": pyotp.TOTP(portal["totp_secret"]).now(), "csrf": found.group(1)},
            follow_redirects=False)
        if answer.status_code != 303:
            raise RuntimeError(f"the sign-in answered {answer.status_code}: {answer.text[:300]}")
        cookie = client.cookies.get("cv_session")
        if not cookie:
            raise RuntimeError("the sign-in set no session cookie")
        return f"cv_session={cookie}"


def check_pages(base_url: str, cookie: str) -> None:
    """Each page answers 200 with its own content for the signed-in patient; the static file
    answers with the stylesheet."""
    headers = {"Cookie": cookie}
    for name, (path, marker) in PAGES.items():
        answer = httpx.get(base_url + path, headers=headers, timeout=30)
        if answer.status_code != 200 or marker not in answer.text:
            raise RuntimeError(f"{name}: {path} answered {answer.status_code} without {marker}")
    css = httpx.get(base_url + STATIC, timeout=30)
    if css.status_code != 200 or "body {" not in css.text:
        raise RuntimeError(f"{STATIC} answered {css.status_code}")


def publish_documents(env: dict[str, str], workdir: Path, base_url: str, pg: Any,
                      patient_id: str, opts: Options) -> Any:
    """A physician with a card of the platform CA sees the patient (a care event with the
    patient's presence code) and publishes signed documents to the record, as a hospital
    does (`bench/retrieval.py`'s helpers): the documents page then lists real documents.
    Returns the physician's card (``headers()`` gives a fresh token)."""
    docs.cli(env, workdir, "pki", "init")
    organization = docs.cli(env, workdir, "directory", "add-organization", "--identifier",
                            "BENCH-PORTAL-ORG", "--name", "Clinique du Portail", "--json")
    physician = docs.cli(env, workdir, "directory", "add-practitioner", "--identifier",
                         "BENCH-PORTAL-DOC", "--family", "Weber", "--given", "Anne",
                         "--profession", "physician", "--specialty", "general-practice",
                         "--organization", organization["id"], "--json")
    issued = docs.cli(env, workdir, "pki", "issue-practitioner", str(physician["id"]), "--out",
                      str(workdir / "card"), "--json")
    card = docs.Card(base_url, workdir / "card", str(issued["client_id"]))
    card.renew()
    publishing = argparse.Namespace(documents=opts.documents, document_bytes=16 * 1024)
    retrieval.publish(base_url, card, [patient_id], str(physician["id"]), publishing,
                      docs.presence_codes(pg.url, [patient_id]))
    return card


def analyze(pg: Any) -> str:
    """Refresh the planner's statistics of the scratch database, once its data is loaded and
    again before each page is timed; return the server's ``autovacuum`` setting.
    Fresh from the setup, they describe nearly empty tables (autovacuum analyses a table once
    a tenth of it changed, at most once a minute): with them, PostgreSQL read a proof's subtree
    hashes by scanning every node of the stream, and the chart's entries through the patient's
    index instead of the index of entries by others, so that `/me` cost more from one round to
    the next until autovacuum caught up (plans logged with auto_explain). Every reading of
    `/me` is itself an entry of the patient's history, so the pages grow those tables while
    they are timed; and a PostgreSQL run with autovacuum off (this machine's, measured in
    session 21) never catches up: after a few rounds the chart read 11,403 entries of the
    patient's to find the 23 by others (8.6 ms, 0.04 ms once analysed). A platform in service
    has settled statistics; this measures that one."""
    with psycopg.connect(make_url(pg.url).set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True) as conn:
        conn.execute("ANALYZE")
        row = conn.execute("SHOW autovacuum").fetchone()
    return str(row[0]) if row else "unknown"


# --- what a durable commit costs on this disk -----------------------------------------------------


def commit_floor(pg: Any, samples: int = 200) -> dict[str, float]:
    """The floor under a page that records its reading: on the scratch database, the median
    time of a round trip (``SELECT 1``), of a one-row insert committed durably (the WAL's
    fsync: what the audit log's group commit waits for), and of the same committed with
    ``synchronous_commit = off`` (no fsync), in milliseconds. Every page of the portal
    records its reading durably before it answers, so it cannot be faster than one durable
    commit, whatever else is cut."""
    url = make_url(pg.url)
    timings: dict[str, list[float]] = {"round_trip_ms": [], "durable_commit_ms": [],
                                       "commit_without_fsync_ms": []}
    with psycopg.connect(host=url.host or "127.0.0.1", port=url.port or 5432,
                         user=url.username or "postgres", password=url.password,
                         dbname=url.database, autocommit=False) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor (n integer)")
        conn.commit()
        for key, setting in (("round_trip_ms", None), ("durable_commit_ms", "on"),
                             ("commit_without_fsync_ms", "off")):
            if setting is not None:
                conn.execute(f"SET synchronous_commit = {setting}")
                conn.commit()
            for n in range(samples):
                started = time.perf_counter()
                if setting is None:
                    conn.execute("SELECT 1").fetchone()
                    conn.rollback()
                else:
                    conn.execute("INSERT INTO bench_commit_floor VALUES (%s)", (n,))
                    conn.commit()
                timings[key].append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_commit_floor")
        conn.commit()
    return {key: round(statistics.median(values), 3) for key, values in timings.items()}


# --- wrk -----------------------------------------------------------------------------------------


def wrk(base_url: str, path: str, cookie: str, opts: Options, seconds: float, workdir: Path,
        *, one_at_a_time: bool = False) -> dict[str, Any]:
    """`bench/retrieval.py`'s wrk run on one path, the session cookie in the header; any
    answer that is not 2xx/3xx fails the run."""
    if one_at_a_time:
        opts = replace(opts, threads=1, connections=1)
    summary: dict[str, Any] = retrieval.wrk(base_url, [path], cookie, opts, seconds, workdir,
                                            header="Cookie")
    errors = sum(summary["errors"].values())
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors on {path}: {summary['errors']}")
    return summary


def render_time(base_url: str, path: str, cookie: str, opts: Options,
                workdir: Path) -> dict[str, float]:
    """Latency with one request at a time: the server's own time per request."""
    wrk(base_url, path, cookie, opts, opts.warmup, workdir, one_at_a_time=True)
    run = wrk(base_url, path, cookie, opts, opts.seconds, workdir, one_at_a_time=True)
    return {k: round(v / 1000, 2) for k, v in run["latency_us"].items()}


def throughput(server: Any, pg: Any, base_url: str, path: str, cookie: str, opts: Options,
               workdir: Path) -> dict[str, Any]:
    """Requests per second under load, with the server's CPU per request."""
    wrk(base_url, path, cookie, opts, opts.warmup, workdir)
    before = docs.processes_cpu_seconds(pg.name), retrieval.children_cpu_seconds()
    run = wrk(base_url, path, cookie, opts, opts.seconds, workdir)
    after = docs.processes_cpu_seconds(pg.name), retrieval.children_cpu_seconds()
    tree = docs._descendants(server.pid, {**before[0], **after[0]})
    spent = {"server": 0.0, "postgres": 0.0}
    for pid, (cpu, ours, _parent) in after[0].items():
        delta = cpu - before[0].get(pid, (0.0, False, 0))[0]
        if pid in tree:
            spent["server"] += delta
        elif ours:
            spent["postgres"] += delta
    spent["wrk"] = after[1] - before[1]
    wall = run["duration_us"] / 1e6
    requests = run["requests"]
    return {
        "per_s": round(requests / wall, 1),
        "latency_ms": {k: round(v / 1000, 2) for k, v in run["latency_us"].items()},
        "cores_busy": {k: round(v / wall, 2) for k, v in spent.items()},
        "server_cores_per_worker": round(spent["server"] / wall / opts.workers, 2),
        "cpu_ms_per_request": {k: round(v * 1000 / requests, 3) for k, v in spent.items()},
        "bytes_per_request": round(run["bytes"] / requests),
    }


# --- the run -------------------------------------------------------------------------------------


def summarize(opts: Options, runs: dict[str, list[dict[str, Any]]], machine: dict[str, Any],
              started: datetime, floor: dict[str, float] | None = None) -> dict[str, Any]:
    def median(name: str, part: str, key: str) -> float:
        return round(statistics.median(r[part][key] for r in runs[name]), 2)

    static_p50 = median("static", "render_ms", "p50")
    pages: dict[str, Any] = {}
    for name in ("static", *PAGES):
        pages[name] = {
            "render_p50_ms": median(name, "render_ms", "p50"),
            "render_p99_ms": median(name, "render_ms", "p99"),
            "per_s": round(statistics.median(r["load"]["per_s"] for r in runs[name]), 1),
            "server_cpu_ms_per_request": round(statistics.median(
                r["load"]["cpu_ms_per_request"]["server"] for r in runs[name]), 3),
            "postgres_cpu_ms_per_request": round(statistics.median(
                r["load"]["cpu_ms_per_request"]["postgres"] for r in runs[name]), 3),
        }
        if name != "static":
            pages[name]["p50_over_static"] = round(pages[name]["render_p50_ms"] / static_p50, 1)
    static_load = [r["load"] for r in runs["static"]]
    saturation = {
        "server_cores_per_worker": statistics.median(
            r["server_cores_per_worker"] for r in static_load),
        "wrk_cores": statistics.median(r["cores_busy"]["wrk"] for r in static_load),
    }
    saturation["saturated"] = saturation["server_cores_per_worker"] >= SATURATED_SHARE
    return {
        "benchmark": "portal",
        "date": started.isoformat(timespec="seconds"),
        "settings": {"workers": opts.workers, "wrk_threads": opts.threads,
                     "connections": opts.connections, "seconds": opts.seconds,
                     "rounds": opts.rounds, "patients": opts.patients,
                     "documents": opts.documents},
        "pages": pages,
        "goal_p50_over_static": GOAL_RATIO,
        "goal_met": {n: pages[n]["p50_over_static"] <= GOAL_RATIO for n in PAGES},
        # A durable commit on this disk, beside the goal (3 x the static page's p50).
        "commit_floor": floor,
        "baseline_saturates_server": saturation,
        "machine": machine,
        "rounds": runs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = options(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (.ci/run installs it)")
    signal.signal(signal.SIGTERM, docs.on_sigterm)
    started = datetime.now(UTC)
    busy = docs.other_test_runs()
    if busy:
        say(f"WARNING: {len(busy)} test run(s) on this machine; the figures will be noisy")
    machine = {"nproc": len(os.sched_getaffinity(0)),
               "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
               "test_runs_seen": len(busy)}
    workdir = Path(tempfile.mkdtemp(prefix="carevault-bench-portal-"))
    pg = docs.Postgres(opts.postgres, DATABASE)
    server: Any = None
    created = False
    try:
        pg.create()
        created = True
        port = docs.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = docs.carevault_env(workdir, pg.url, base_url)
        say(f"setup: demo data with {opts.patients} patients …")
        docs.cli(env, workdir, "init")
        docs.cli(env, workdir, "db", "upgrade")
        accounts_file = workdir / "demo-accounts.json"
        docs.cli(env, workdir, "demo", "--patients", str(opts.patients), "--accounts",
                 str(accounts_file))
        demo = json.loads(accounts_file.read_text("utf-8"))["patients"][0]
        portal, patient_id = demo["portal"], str(demo["patient_id"])
        server = retrieval.start_server(retrieval.current(), env, workdir, port, opts.workers)
        say(f"setup: a physician sees the patient and publishes {opts.documents} documents …")
        publish_documents(env, workdir, base_url, pg, patient_id, opts)
        cookie = sign_in(base_url, portal)
        check_pages(base_url, cookie)
        machine["autovacuum"] = analyze(pg)
        floor = commit_floor(pg)
        say(f"floor: round trip {floor['round_trip_ms']} ms, durable commit "
            f"{floor['durable_commit_ms']} ms, without fsync {floor['commit_without_fsync_ms']} ms")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("static", *PAGES)}
        paths = {"static": STATIC, **{name: path for name, (path, _) in PAGES.items()}}
        for round_number in range(opts.rounds):
            for name, path in paths.items():
                analyze(pg)  # what autovacuum would have done since the last page
                figures = {"render_ms": render_time(base_url, path, cookie, opts, workdir),
                           "load": throughput(server, pg, base_url, path, cookie, opts,
                                              workdir)}
                runs[name].append(figures)
                say(f"round {round_number + 1} {name:9} render p50 "
                    f"{figures['render_ms']['p50']:7.2f} ms p99 {figures['render_ms']['p99']:7.2f}"
                    f" ms; {figures['load']['per_s']:8.1f}/s, server "
                    f"{figures['load']['cpu_ms_per_request']['server']:.3f} ms/request "
                    f"({figures['load']['server_cores_per_worker']:.2f} cores/worker), wrk "
                    f"{figures['load']['cores_busy']['wrk']:.2f} cores")
        for line in server.tracebacks():
            say(f"  server traceback: {line[:300]}")
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result = summarize(opts, runs, machine, started, floor)
    finally:
        if server is not None:
            server.stop()
        if created:
            with contextlib.suppress(psycopg.Error):
                pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    say(json.dumps({k: result[k] for k in ("pages", "goal_met", "commit_floor",
                                           "baseline_saturates_server")},
                   indent=1))
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        say(f"written to {opts.out}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
