"""Document reads over HTTP, loaded by wrk: what one ITI-68 retrieval (``GET /fhir/Binary/{id}``)
and one ITI-67 read (``GET /fhir/DocumentReference/{id}``) cost the server, beside a trivial route
of the same server (``GET /health``), for two revisions of the code in one run.

Why this shape: the question is the server's own cost per request (issue 14: "retrieval decides
once"), so the load comes from wrk, a compiled client that costs little CPU, and every figure is
CPU time per request read from /proc, beside the trivial route's, measured on the same server
process in the same run. That route shows what the HTTP stack and the route door cost alone,
and, when the server is busy for all of its worker processes' cores while serving it, that the
load saturates the server (the requests per second are then the server's, not the client's).

One run, in this order:

1. Setup, not timed: a scratch PostgreSQL database, ``carevault init``, ``db upgrade``, ``pki
   init``, one organization and one physician, P patients, the physician's certificate, a server
   of the current tree, one ``Encounter`` per patient and D signed ITI-65 submissions of a 16 KB
   PDF-like document (`bench/documents.py`'s helpers, imported).
2. For each round and each revision (``--before REV``, exported with ``git archive``, and the
   current tree), alternating so that a drift of the shared machine hits both alike: ``carevault
   serve --workers W`` from that revision's ``src`` (``PYTHONPATH``; checked), a SMART token,
   a check that each phase answers as it should (200, the exact bytes and their SHA-256 ETag),
   then for each phase a warm-up and a timed wrk run (``-t T -c C -d S``, the ids in random
   order, the token in the header): ``health``, ``binary``, ``document``. wrk counts every
   answer that is not 2xx/3xx, and any makes the run fail.

For each timed run: requests per second, wrk's latency percentiles, CPU of the server's
processes, of the scratch database's PostgreSQL backends, of wrk (``RUSAGE_CHILDREN``) and of the
machine, and the database's commits per request (``pg_stat_database``). The summary is the median
over rounds of each figure; ``after_vs_before`` divides the current tree's server CPU per request
by the other revision's.

Run: ``.venv/bin/python bench/retrieval.py --before <rev>`` (about four minutes with the
defaults), ``--quick`` for a smoke run (writes nothing unless ``--out``). It needs wrk (Debian's
``wrk``; ``.ci/run`` installs it) and PostgreSQL as `bench/documents.py` does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "retrieval.json"
DATABASE = "carevault_bench_retrieval"
PHASES = ("health", "binary", "document")
# The server is saturated when its processes keep this share of their cores busy.
SATURATED_SHARE = 0.85


def load_documents_bench() -> ModuleType:
    """`bench/documents.py`, for its setup helpers (servers, cards, bundles, CPU from /proc)."""
    path = ROOT / "bench" / "documents.py"
    spec = importlib.util.spec_from_file_location("bench_documents", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_documents"] = module
    spec.loader.exec_module(module)
    return module


docs = load_documents_bench()
say = docs.say


@dataclass(frozen=True)
class Options:
    before: str | None
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


def options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--before", help="the revision to compare with (git), e.g. main~3")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s phases, 1 round")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--seconds", type=float, help="each timed wrk run (default 15)")
    parser.add_argument("--rounds", type=int, help="rounds over the revisions (default 2)")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--document-bytes", type=int, default=16 * 1024)
    parser.add_argument("--postgres", default=os.environ.get("CAREVAULT_BENCH_POSTGRES",
                                                             docs.DEFAULT_PG))
    parser.add_argument("--out", type=Path, help=f"default {RESULTS.relative_to(ROOT)} "
                                                 "(quick: nothing written)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        before=args.before,
        workers=args.workers,
        threads=args.threads,
        connections=args.connections,
        seconds=args.seconds or (3.0 if quick else 15.0),
        warmup=1.0 if quick else 3.0,
        rounds=args.rounds or (1 if quick else 2),
        patients=args.patients,
        documents=args.documents if not quick else min(args.documents, 30),
        document_bytes=args.document_bytes,
        postgres=args.postgres,
        out=args.out or (None if quick else RESULTS),
    )


# --- revisions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    name: str  # "before" or "after"
    revision: str  # what git says it is
    src: Path


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def exported(revision: str, into: Path) -> Tree:
    """``revision``'s ``src``, exported with ``git archive`` (no worktree is made)."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    archive = into / "before.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
                       stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return Tree("before", f"{commit} {git('log', '-1', '--format=%s', commit)[:100]}",
                into / "before" / "src")


def current() -> Tree:
    head = git("rev-parse", "HEAD")
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
    return Tree("after", f"{head}{dirty} {git('log', '-1', '--format=%s')[:100]}",
                ROOT / "src")


def migrations(src: Path) -> list[str]:
    return sorted(p.name for p in (src / "carevault/adapters/storage/migrations/versions")
                  .glob("*.py"))


def tree_env(env: dict[str, str], tree: Tree) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(tree.src)}


def check_imports_from(env: dict[str, str], tree: Tree) -> None:
    """The server of ``tree`` really runs ``tree``'s code (PYTHONPATH before the install)."""
    found = subprocess.run([sys.executable, "-c", "import carevault; print(carevault.__file__)"],
                           env=tree_env(env, tree), capture_output=True, text=True, check=True)
    where = Path(found.stdout.strip()).resolve()
    if not where.is_relative_to(tree.src.resolve()):
        raise RuntimeError(f"{tree.name}: carevault is imported from {where}, not {tree.src}")


class Server(docs.Server):  # type: ignore[misc,name-defined]
    """`bench/documents.py`'s server, started without a ``preexec_fn``: this process has
    threads (the database pools of the setup), and a forked child that runs Python before
    ``exec`` may wait forever on a lock one of them held. It is stopped by ``stop`` in the
    ``finally`` of `main` (SIGTERM included)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path,
                 base_url: str) -> None:
        self.name = name
        self.base_url = base_url
        self.stdout = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out,
                                             stderr=err, start_new_session=True)


def start_server(tree: Tree, env: dict[str, str], workdir: Path, port: int,
                 workers: int) -> Any:
    command = [sys.executable, "-c",
               "import sys; from carevault.cli.main import app; sys.argv[0] = 'carevault'; "
               "app()", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
               str(workers)]
    server = Server(f"carevault-{tree.name}", command, tree_env(env, tree), workdir,
                         f"http://127.0.0.1:{port}")
    server.wait_healthy()
    return server


# --- wrk -----------------------------------------------------------------------------------------


WRK_SCRIPT = """\
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local next_one = 0
wrk.headers["%(header)s"] = "%(value)s"

function init(args)
  next_one = (tonumber(args[1]) or 0) %% #paths
end

function request()
  next_one = next_one %% #paths + 1
  return wrk.format("GET", paths[next_one])
end

function done(summary, latency, requests)
  local out = io.open("%(result)s", "w")
  out:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "bytes": %%d, "errors": {"connect": %%d, ' ..
    '"read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, "latency_us": {"p50": %%d, ' ..
    '"p90": %%d, "p99": %%d, "max": %%d, "mean": %%.1f}}',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
  out:close()
end
"""


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(base_url: str, paths: list[str], token: str, opts: Options, seconds: float,
        workdir: Path, header: str = "Authorization") -> dict[str, Any]:
    """One wrk run over ``paths`` (in the given order, from a random start), its summary;
    ``token`` goes in ``header`` (a bearer token by default; `bench/portal.py` sends a
    session cookie)."""
    value = f"Bearer {token}" if header == "Authorization" else token
    paths_file = workdir / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n", encoding="ascii")
    result = workdir / "wrk.json"
    result.unlink(missing_ok=True)
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT % {"paths": paths_file, "header": header, "value": value,
                                    "result": result}, encoding="ascii")
    command = ["wrk", "-t", str(opts.threads), "-c", str(opts.connections), "-d",
               f"{seconds:g}s", "--timeout", "10s", "-s", str(script), base_url, "--",
               str(random.randrange(len(paths)))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr or done.stdout}")
    summary: dict[str, Any] = json.loads(result.read_text())
    return summary


@dataclass
class Snapshot:
    processes: dict[int, tuple[float, bool, int]]
    wrk: float
    machine: float
    counters: dict[str, int]


def snapshot(pg: Any) -> Snapshot:
    return Snapshot(docs.processes_cpu_seconds(pg.name), children_cpu_seconds(),
                    docs.machine_cpu_seconds(), pg.counters())


def cpu_spent(before: Snapshot, after: Snapshot, server_pid: int) -> dict[str, float]:
    """CPU seconds between two snapshots: the server's process tree, the scratch database's
    PostgreSQL processes, wrk (this script's children) and the whole machine."""
    tree = docs._descendants(server_pid, {**before.processes, **after.processes})
    spent = {"server": 0.0, "postgres": 0.0}
    for pid, (cpu, ours, _parent) in after.processes.items():
        delta = cpu - before.processes.get(pid, (0.0, False, 0))[0]
        if pid in tree:
            spent["server"] += delta
        elif ours:
            spent["postgres"] += delta
    spent["wrk"] = after.wrk - before.wrk
    spent["machine"] = after.machine - before.machine
    return spent


def timed(server: Any, pg: Any, base_url: str, paths: list[str], token: str, opts: Options,
          workdir: Path) -> dict[str, Any]:
    wrk(base_url, paths, token, opts, opts.warmup, workdir)  # connections, caches; not counted
    before = snapshot(pg)
    run = wrk(base_url, paths, token, opts, opts.seconds, workdir)
    after = snapshot(pg)
    spent = cpu_spent(before, after, server.pid)
    wall = run["duration_us"] / 1e6
    requests = run["requests"]
    errors = sum(run["errors"].values())
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors: {run['errors']}")
    commits = after.counters["commits"] - before.counters["commits"]
    return {
        "requests": requests,
        "seconds": round(wall, 2),
        "per_s": round(requests / wall, 1),
        "latency_ms": {k: round(v / 1000, 2) for k, v in run["latency_us"].items()},
        "cores_busy": {k: round(v / wall, 2) for k, v in spent.items()},
        "server_cores_per_worker": round(spent["server"] / wall / opts.workers, 2),
        "cpu_ms_per_request": {k: round(v * 1000 / requests, 3) for k, v in spent.items()},
        "commits_per_request": round(commits / requests, 2),
        "bytes_per_request": round(run["bytes"] / requests),
    }


# --- setup ---------------------------------------------------------------------------------------


def publish(base_url: str, card: Any, patients: list[str], practitioner_id: str,
            opts: Options, codes: dict[str, str]) -> dict[str, str]:
    """Encounters (the care relationship, with the patient's presence code), then D signed
    submissions: {document id: SHA-256}."""
    published: dict[str, str] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for patient in patients:
            answer = client.post("/fhir/Encounter",
                                 content=docs.encounter(patient, practitioner_id, codes[patient]),
                                 headers={**card.headers(), "Content-Type": docs.FHIR_JSON})
            if answer.status_code != 201:
                raise RuntimeError(f"Encounter: {answer.status_code} {answer.text[:300]}")
        for body, sha in docs.prepare_bundles(opts.documents, patients, practitioner_id, card,
                                              opts.document_bytes):
            answer = client.post("/fhir", content=body,
                                 headers={**card.headers(), "Content-Type": docs.FHIR_JSON})
            if answer.status_code != 200:
                raise RuntimeError(f"ITI-65: {answer.status_code} {answer.text[:300]}")
            location = answer.json()["entry"][1]["response"]["location"]
            published[location.split("/")[-3]] = sha
    return published


def check_answers(base_url: str, token: str, published: dict[str, str], size: int) -> None:
    """Each phase answers as it should before it is timed: wrk only sees the status."""
    headers = {"Authorization": f"Bearer {token}"}
    document_id, sha = next(iter(published.items()))
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        health = client.get("/health")
        binary = client.get(f"/fhir/Binary/{document_id}")
        reference = client.get(f"/fhir/DocumentReference/{document_id}")
    problems = []
    if health.status_code != 200:
        problems.append(f"/health: {health.status_code}")
    if (binary.status_code != 200 or len(binary.content) != size
            or binary.headers.get("etag") != f'"{sha}"'):
        problems.append(f"Binary: {binary.status_code} {len(binary.content)} bytes")
    if reference.status_code != 200 or reference.json().get("id") != document_id:
        problems.append(f"DocumentReference: {reference.status_code} {reference.text[:200]}")
    if problems:
        raise RuntimeError("; ".join(problems))


# --- the run -------------------------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over the rounds."""
    def walk(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {key: walk([v[key] for v in values]) for key in values[0]}
        return round(statistics.median(values), 3)
    return dict(walk(runs))


def summarize(opts: Options, trees: list[Tree], runs: dict[str, dict[str, list[Any]]],
              machine: dict[str, Any], started: datetime) -> dict[str, Any]:
    summary = {tree.name: {phase: median_of(runs[tree.name][phase]) for phase in PHASES}
               for tree in trees}
    result: dict[str, Any] = {
        "benchmark": "retrieval",
        "date": started.isoformat(timespec="seconds"),
        "settings": {
            "workers": opts.workers, "wrk_threads": opts.threads,
            "connections": opts.connections, "seconds": opts.seconds, "rounds": opts.rounds,
            "patients": opts.patients, "documents": opts.documents,
            "document_bytes": opts.document_bytes,
        },
        "revisions": {tree.name: tree.revision for tree in trees},
        "summary": summary,
    }
    for tree in trees:
        health = summary[tree.name]["health"]
        result.setdefault("baseline_saturates_server", {})[tree.name] = {
            "server_cores_per_worker": health["server_cores_per_worker"],
            "wrk_cores": health["cores_busy"]["wrk"],
            "saturated": health["server_cores_per_worker"] >= SATURATED_SHARE,
        }
        result.setdefault("server_cpu_ms_per_request", {})[tree.name] = {
            phase: summary[tree.name][phase]["cpu_ms_per_request"]["server"]
            for phase in PHASES
        }
        result.setdefault("over_baseline", {})[tree.name] = {
            phase: round(summary[tree.name][phase]["cpu_ms_per_request"]["server"]
                         / health["cpu_ms_per_request"]["server"], 2)
            for phase in PHASES[1:]
        }
    if len(trees) == 2:
        result["after_vs_before"] = {
            phase: {
                "server_cpu_per_request": round(
                    summary["after"][phase]["cpu_ms_per_request"]["server"]
                    / summary["before"][phase]["cpu_ms_per_request"]["server"], 3),
                "per_s": round(summary["after"][phase]["per_s"]
                               / summary["before"][phase]["per_s"], 3),
                "commits_per_request": [summary["before"][phase]["commits_per_request"],
                                        summary["after"][phase]["commits_per_request"]],
            }
            for phase in PHASES
        }
    result["machine"] = machine
    result["rounds"] = runs
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = options(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (.ci/run installs it)")
    signal.signal(signal.SIGTERM, docs.on_sigterm)
    started = datetime.now(UTC)
    busy = docs.other_test_runs()
    if busy:
        say(f"WARNING: {len(busy)} test run(s) on this machine; the figures will be noisy")
    machine = {
        "nproc": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                              check=False).stdout.split("\n")[0].strip(),
        "test_runs_seen": len(busy),
    }
    workdir = Path(tempfile.mkdtemp(prefix="carevault-bench-retrieval-"))
    pg = docs.Postgres(opts.postgres, DATABASE)
    servers: list[Any] = []
    created = False
    try:
        trees = ([exported(opts.before, workdir)] if opts.before else []) + [current()]
        if len({tuple(migrations(tree.src)) for tree in trees}) != 1:
            raise SystemExit("the revisions' migrations differ: compare revisions with the "
                             "same schema")
        pg.create()
        created = True
        port = docs.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = docs.carevault_env(workdir, pg.url, base_url)
        for tree in trees:
            check_imports_from(env, tree)
        say(f"setup: {opts.patients} patients, {opts.documents} documents …")
        docs.cli(env, workdir, "init")
        docs.cli(env, workdir, "db", "upgrade")
        docs.cli(env, workdir, "pki", "init")
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
        server = start_server(trees[-1], env, workdir, port, opts.workers)
        servers.append(server)
        card = docs.Card(base_url, workdir / "card", str(issued["client_id"]))
        card.renew()
        published = publish(base_url, card, patients, practitioner_id, opts,
                            docs.presence_codes(pg.url, patients))
        server.stop()
        ids = list(published)
        random.Random(68).shuffle(ids)
        paths = {
            "health": ["/health"],
            "binary": [f"/fhir/Binary/{i}" for i in ids],
            "document": [f"/fhir/DocumentReference/{i}" for i in ids],
        }
        runs: dict[str, dict[str, list[Any]]] = {t.name: {p: [] for p in PHASES} for t in trees}
        for round_number in range(opts.rounds):
            order = trees if round_number % 2 == 0 else list(reversed(trees))
            for tree in order:
                server = start_server(tree, env, workdir, port, opts.workers)
                servers.append(server)
                token = card.renew()
                check_answers(base_url, token, published, opts.document_bytes)
                for phase in PHASES:
                    figures = timed(server, pg, base_url, paths[phase], token, opts, workdir)
                    runs[tree.name][phase].append(figures)
                    say(f"round {round_number + 1} {tree.name:6} {phase:8} "
                        f"{figures['per_s']:8.1f}/s  server "
                        f"{figures['cpu_ms_per_request']['server']:.3f} ms/request "
                        f"({figures['server_cores_per_worker']:.2f} cores/worker), postgres "
                        f"{figures['cpu_ms_per_request']['postgres']:.3f}, wrk "
                        f"{figures['cores_busy']['wrk']:.2f} cores, p99 "
                        f"{figures['latency_ms']['p99']} ms")
                server.stop()
                for line in server.tracebacks():
                    say(f"  server traceback: {line[:300]}")
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        machine["test_runs_seen"] = len(busy) + len(docs.other_test_runs())
        result = summarize(opts, trees, runs, machine, started)
    finally:
        for running in servers:
            running.stop()
        if created:
            with contextlib.suppress(psycopg.Error):
                pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    say(json.dumps({k: result[k] for k in ("server_cpu_ms_per_request", "over_baseline",
                                           "baseline_saturates_server")
                    + (("after_vs_before",) if "after_vs_before" in result else ())},
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
