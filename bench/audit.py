"""Audit log throughput: CareVault's group commit against pymerkle and the database ceiling.

One run measures, on this machine and in this order:

1. CareVault on PostgreSQL (the headline): a fresh, migrated scratch database; C client threads
   each call ``AuditLog.append([record])`` in a loop, one durable append per call as one request
   would, until N entries or S seconds. Appends/s, latency per append, and the group-commit
   batches observed through SQLAlchemy events (no change to src). Then the log is checked:
   size, signed tree head, the root recomputed from every entry, every acknowledged entry present
   exactly once at the index it was given, and a sample of inclusion proofs.
2. CareVault on SQLite (a file, WAL, synchronous=FULL): the same, as a secondary figure.
3. pymerkle 7 (RFC 6962 hashing): the same canonical entry bytes, in the log's order, appended
   one by one to its SQLite backend (each append its own commit: its durability model) and to
   its in-memory tree; inclusion proofs for a sample are produced and verified; its root must
   equal CareVault's.
4. pgbench: C clients doing single-row INSERTs (each its own transaction and commit) into the
   scratch database: what PostgreSQL itself sustains, with these fsync settings, for one durable
   row per commit.

Run: ``.venv/bin/python bench/audit.py [--entries N] [--clients C] [--seconds S]``; the figures
are written to ``bench/results/audit.json``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.database import connect, upgrade
from carevault.domain import merkle
from carevault.domain.audit import STREAMS, Agent, AuditRecord
from carevault.domain.tree_head import signed_bytes
from carevault.services.audit_log import AuditLog

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "audit.json"
GOAL_APPENDS_PER_S = 5000
STREAM = "clinical"
PYMERKLE_REQUIREMENT = "pymerkle>=7,<8"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "commit_siblings",
    "wal_level",
    "shared_buffers",
    "max_connections",
)


def say(message: str) -> None:
    print(message, flush=True)


# --- the records ----------------------------------------------------------------------------


def make_record(n: int) -> AuditRecord:
    """A read of a patient's record, as the FHIR API logs one (about 375 canonical bytes)."""
    return AuditRecord(
        stream=STREAM,
        recorded="2026-11-22T10:00:00.000Z",
        kind="access",
        action="R",
        interaction="read",
        outcome="0",
        agent=Agent(who=f"Practitioner/{n % 997}", network="10.0.0.7"),
        patient=f"patient-{n % 10_007}",
        entity_type="Observation",
        entity_id=f"obs-{n}",
        status=200,
        purpose_of_use="TREAT",
        request_id=f"req-{n:09d}",
    )


def signers() -> dict[str, Ed25519TreeHeadSigner]:
    return {stream: Ed25519TreeHeadSigner.derive(b"k" * 32, stream) for stream in STREAMS}


# --- observing group commits without touching src -------------------------------------------


@dataclass
class Batches:
    """Per committed transaction: SQL statements executed and, when the rows go through
    SQLAlchemy, entries inserted. On PostgreSQL the entries per transaction are also counted
    exactly afterwards from the rows' ``xmin`` (see `entries_per_transaction`)."""

    entries: list[int] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    active: bool = False

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", self._rolled_back)

    def _executed(
        self, conn: Any, cursor: Any, statement: str, _p: Any, _c: Any, _many: bool
    ) -> None:
        counts = conn.info.setdefault("bench_batch", [0, 0])
        counts[1] += 1
        if statement.startswith("INSERT INTO audit_entry") and cursor.rowcount > 0:
            counts[0] += cursor.rowcount

    def _committed(self, conn: Any) -> None:
        counts = conn.info.pop("bench_batch", [0, 0])
        if self.active and counts[1] > 1:  # not the pool's pre-ping alone
            self.entries.append(counts[0])
            self.statements.append(counts[1])

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop("bench_batch", None)

    def summary(self, exact: list[int] | None = None) -> dict[str, Any]:
        sizes = sorted(exact if exact else [n for n in self.entries if n])
        if not sizes:
            return {"transactions": len(self.statements)}
        result: dict[str, Any] = {
            "transactions": len(sizes),
            "entries_per_commit_mean": round(sum(sizes) / len(sizes), 1),
            "entries_per_commit_p50": percentile(sizes, 50),
            "entries_per_commit_max": sizes[-1],
            "entries_counted_from": "xmin of the stored rows" if exact else "INSERT rowcounts",
        }
        if self.statements:
            result["sql_statements_per_commit_mean"] = round(
                sum(self.statements) / len(self.statements), 1
            )
        return result


def entries_per_transaction(engine: Engine, first_index: int) -> list[int] | None:
    """PostgreSQL only: how many entries each transaction stored, from the rows' xmin."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT count(*) FROM audit_entry WHERE stream = %(stream)s"
            " AND leaf_index >= %(first)s GROUP BY xmin::text",
            {"stream": STREAM, "first": first_index},
        )
        return [int(n) for (n,) in rows]


def percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --- CareVault: concurrent durable appends ----------------------------------------------------


@dataclass
class AppendRun:
    entries: int
    seconds: float
    latencies_ms: list[float]
    indexes: list[int]
    errors: list[str]

    @property
    def per_second(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0


def run_appends(
    log: AuditLog, records: Sequence[AuditRecord], clients: int, seconds: float
) -> AppendRun:
    """C threads append one record per call until every record is taken or time is up."""
    claim = iter(range(len(records)))
    claim_lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    indexes: list[list[int]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)
    deadline = 0.0

    def client(slot: int) -> None:
        mine, got = latencies[slot], indexes[slot]
        start_gate.wait()
        while time.perf_counter() < deadline:
            with claim_lock:
                n = next(claim, None)
            if n is None:
                return
            began = time.perf_counter()
            try:
                got += log.append([records[n]])
            except Exception as error:  # a failed append is reported, not retried
                errors.append(f"{type(error).__name__}: {error}")
                return
            mine.append((time.perf_counter() - began) * 1000)

    threads = [
        threading.Thread(target=client, args=(slot,), name=f"client-{slot}")
        for slot in range(clients)
    ]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    all_latencies = sorted(x for part in latencies for x in part)
    all_indexes = [i for part in indexes for i in part]
    return AppendRun(len(all_indexes), elapsed, all_latencies, all_indexes, errors)


def verify_log(
    log: AuditLog, expected: Sequence[bytes], acknowledged: Sequence[int], samples: int
) -> dict[str, Any]:
    """The log holds exactly the expected entries, contiguously, under a valid signed head."""
    count = len(expected)
    size = log.size(STREAM)
    if size != count:
        raise AssertionError(f"the log holds {size} entries, {count} were acknowledged")
    if sorted(acknowledged) != list(range(count)):
        raise AssertionError("the indexes handed to callers are not exactly 0..n-1")
    head = log.sign_tree_head(STREAM)
    if head.tree_size != count:
        raise AssertionError(f"signed tree head covers {head.tree_size}, not {count}")
    key = load_pem_public_key(log.public_key_pem(STREAM))
    assert isinstance(key, Ed25519PublicKey)
    key.verify(head.signature, signed_bytes(head.tree_size, head.root_hash, head.timestamp_ms))

    stored: list[bytes] = []
    frontier = merkle.Frontier()
    half = count // 2
    half_root = merkle.EMPTY_ROOT
    for start in range(0, count, 5000):
        chunk = log.entries(STREAM, start, min(count, start + 5000))
        for index, data in chunk:
            if index != len(stored):
                raise AssertionError(f"entry {len(stored)} missing (found {index})")
            stored.append(data)
            frontier.append(merkle.leaf_hash(data))
            if frontier.size == half:
                half_root = frontier.root()
    if frontier.root() != head.root_hash:
        raise AssertionError("the root recomputed from the entries differs from the signed head")
    if Counter(stored) != Counter(expected):
        raise AssertionError("the stored entries are not exactly the acknowledged ones")

    rng = random.Random(6962)
    picks = sorted({0, count - 1, *rng.sample(range(count), min(samples, count))})
    began = time.perf_counter()
    for index in picks:
        path = log.inclusion_proof(STREAM, index, count)
        merkle.verify_inclusion(
            merkle.leaf_hash(stored[index]), index, count, path, head.root_hash
        )
    proof_seconds = time.perf_counter() - began
    if half:
        proof = log.consistency_proof(STREAM, half, count)
        merkle.verify_consistency(half, count, proof, half_root, head.root_hash)
    return {
        "complete_and_contiguous": True,
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "signature_valid": True,
        "inclusion_proofs_verified": len(picks),
        "inclusion_proofs_per_s": round(len(picks) / proof_seconds),
        "consistency_proof_verified": bool(half),
        "entries_in_log_order": stored,
    }


def bench_carevault(
    url: str, records: Sequence[AuditRecord], clients: int, seconds: float, samples: int,
    settle: Callable[[], None] | None = None, commits: Callable[[], int] | None = None,
) -> dict[str, Any]:
    engine = connect(url)
    try:
        upgrade(engine)
        batches = Batches()
        batches.attach(engine)
        log = AuditLog(AuditDatabase(engine), signers(), lambda: datetime.now(UTC))
        warmup, timed = records[:clients], records[clients:]
        warm = run_appends(log, warmup, clients, 60)  # starts the writer, fills the pool
        if warm.errors:
            raise RuntimeError(f"warm-up appends failed: {warm.errors[0]}")
        if settle is not None:
            settle()
        before = commits() if commits else None
        batches.active = True
        run = run_appends(log, timed, clients, seconds)
        batches.active = False
        if run.errors:
            raise RuntimeError(f"{len(run.errors)} appends failed, first: {run.errors[0]}")
        log.close()
        engine.dispose()  # backends exit, so PostgreSQL's statistics are flushed
        after = commits() if commits else None
        total = warm.entries + run.entries
        expected = [r.canonical() for r in records[:total]]
        acknowledged = warm.indexes + run.indexes
        check = verify_log(log, expected, acknowledged, samples)
        lat = run.latencies_ms
        exact = entries_per_transaction(engine, warm.entries)
        result = {
            "entries": run.entries,
            "warmup_entries": warm.entries,
            "seconds": round(run.seconds, 2),
            "appends_per_s": round(run.per_second),
            "append_p50_ms": round(percentile(lat, 50), 2),
            "append_p99_ms": round(percentile(lat, 99), 2),
            "append_max_ms": round(lat[-1], 2) if lat else None,
            "group_commit": batches.summary(exact),
            "verification": check,
        }
        if before is not None and after is not None:
            # pg_stat_database counts every server transaction: the group commits, and also the
            # pool's pre-ping on each checkout (pool_pre_ping=True), which commits on its own.
            group = result["group_commit"]
            group["server_xact_commit_delta"] = after - before
            if group["transactions"]:
                group["server_transactions_per_group_commit"] = round(
                    (after - before) / group["transactions"], 2
                )
        return result
    finally:
        engine.dispose()


# --- PostgreSQL scratch database --------------------------------------------------------------


@dataclass
class Postgres:
    base_url: str
    name: str

    @property
    def sqlalchemy_url(self) -> str:
        return make_url(self.base_url).set(database=self.name).render_as_string(
            hide_password=False
        )

    def admin(self) -> psycopg.Connection[Any]:
        url = make_url(self.base_url)
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    def scalar(self, sql: str) -> Any:
        with self.admin() as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]

    def settings(self) -> dict[str, str]:
        return {name: str(self.scalar(f"SHOW {name}")) for name in POSTGRES_SETTINGS}

    def xact_commit(self) -> int:
        """Committed transactions in the scratch database, once exited backends have reported."""
        query = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{self.name}'"
        value = int(self.scalar(query) or 0)
        for _ in range(20):  # closed connections flush their counters as their backends exit
            time.sleep(0.25)
            again = int(self.scalar(query) or 0)
            if again == value:
                break
            value = again
        return value

    def checkpoint(self) -> None:
        with self.admin() as conn:
            conn.execute("CHECKPOINT")
        time.sleep(0.5)


@contextmanager
def scratch_database(base_url: str) -> Iterator[Postgres]:
    pg = Postgres(base_url, f"carevault_bench_{uuid.uuid4().hex[:10]}")
    with pg.admin() as conn:
        conn.execute(f'CREATE DATABASE "{pg.name}"')
    try:
        yield pg
    finally:
        with pg.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg.name}" WITH (FORCE)')


# --- pymerkle ---------------------------------------------------------------------------------


def load_pymerkle(install: bool) -> Any:
    try:
        return importlib.import_module("pymerkle")
    except ImportError:
        pass
    say(f"pymerkle is not installed; it is a benchmark-only dependency ({PYMERKLE_REQUIREMENT}).")
    if not install:
        sys.exit(f"install it with: {sys.executable} -m pip install '{PYMERKLE_REQUIREMENT}'")
    say(f"installing it: {sys.executable} -m pip install '{PYMERKLE_REQUIREMENT}'")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", PYMERKLE_REQUIREMENT], check=False
    )
    if done.returncode != 0:
        sys.exit(f"could not install pymerkle; run: {sys.executable} -m pip install "
                 f"'{PYMERKLE_REQUIREMENT}' (or pass --no-install to see this message only)")
    importlib.invalidate_caches()
    return importlib.import_module("pymerkle")


def pymerkle_proofs(pm: Any, tree: Any, entries: Sequence[bytes], samples: int) -> dict[str, Any]:
    """Produce and verify inclusion proofs for a sample (pymerkle counts leaves from 1)."""
    size = tree.get_size()
    root = tree.get_root()
    rng = random.Random(6962)
    picks = sorted({0, size - 1, *rng.sample(range(size), min(samples, size))})
    began = time.perf_counter()
    for index in picks:
        proof = tree.prove_inclusion(index + 1, size)
        pm.verify_inclusion(tree.hash_buff(entries[index]), root, proof, index + 1, size)
    elapsed = time.perf_counter() - began
    return {"inclusion_proofs_verified": len(picks),
            "inclusion_proofs_per_s": round(len(picks) / elapsed)}


def bench_pymerkle_memory(pm: Any, entries: Sequence[bytes], samples: int) -> dict[str, Any]:
    tree = pm.InmemoryTree(algorithm="sha256")
    began = time.perf_counter()
    for data in entries:
        tree.append_entry(data)
    elapsed = time.perf_counter() - began
    return {
        "entries": len(entries),
        "seconds": round(elapsed, 2),
        "appends_per_s": round(len(entries) / elapsed),
        "root_hash": tree.get_root().hex(),
        **pymerkle_proofs(pm, tree, entries, samples),
    }


def bench_pymerkle_sqlite(
    pm: Any, entries: Sequence[bytes], seconds: float, samples: int, folder: Path
) -> dict[str, Any]:
    """One append_entry per entry: an INSERT in its own committed transaction."""
    tree = pm.SqliteTree(str(folder / "pymerkle.db"), algorithm="sha256")
    try:
        pragmas = {name: tree.con.execute(f"PRAGMA {name}").fetchone()
                   for name in ("journal_mode", "synchronous")}
        count = 0
        began = time.perf_counter()
        deadline = began + seconds
        for data in entries:
            tree.append_entry(data)
            count += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - began
        appended = entries[:count]
        return {
            "entries": count,
            "seconds": round(elapsed, 2),
            "appends_per_s": round(count / elapsed),
            "sqlite_pragmas": pragmas,
            "root_hash": tree.get_root().hex(),
            **pymerkle_proofs(pm, tree, appended, samples),
        }
    finally:
        tree.close()


# --- pgbench ----------------------------------------------------------------------------------


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "pgbench").exists():
            return str(folder / "pgbench")
    return None


def bench_pgbench(pg: Postgres, clients: int, seconds: float, payload: int) -> dict[str, Any]:
    program = find_pgbench()
    if program is None:
        say("pgbench not found (PATH, /usr/lib/postgresql/*/bin): no database ceiling")
        return {"tps": None, "error": "pgbench not found"}
    with psycopg.connect(pg.sqlalchemy_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_insert (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
    pg.checkpoint()
    url = make_url(pg.base_url)
    insert = f"INSERT INTO bench_insert (payload) VALUES (repeat('x', {payload})::bytea);"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(insert + "\n")
    command = [
        program, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
        "-U", url.username or "postgres", "-n", "-M", "prepared",
        "-c", str(clients), "-j", "2", "-T", str(round(seconds)), "-f", script.name, pg.name,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        say(f"pgbench failed: {done.stderr.strip()}")
        return {"tps": None, "error": done.stderr.strip()[-500:]}
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    rows = pg_rows(pg, "bench_insert")
    return {
        "tps": round(float(tps.group(1))) if tps else None,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "rows_inserted": rows,
        "command": " ".join([*command[:-3], "<script>", "<scratch db>"]),
        "script": insert,
    }


def pg_rows(pg: Postgres, table: str) -> int:
    with psycopg.connect(pg.sqlalchemy_url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


# --- the report -------------------------------------------------------------------------------


def machine(pg: Postgres | None) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("sqlalchemy", "psycopg", "pymerkle", "cryptography"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "postgres": pg.scalar("SHOW server_version") if pg else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]}")
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000,
                        help="timed appends per run, at most (default 50000)")
    parser.add_argument("--clients", type=int, default=64,
                        help="concurrent appending threads / pgbench clients (default 64)")
    parser.add_argument("--seconds", type=float, default=20,
                        help="time limit of each timed run; pgbench -T (default 20)")
    parser.add_argument("--proofs", type=int, default=200,
                        help="inclusion proofs to produce and verify per log (default 200)")
    parser.add_argument("--postgres",
                        default=os.environ.get("CAREVAULT_BENCH_POSTGRES", DEFAULT_PG),
                        help="URL of a PostgreSQL user allowed to create databases")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-install", action="store_true",
                        help="do not pip-install pymerkle if it is missing")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--entries, --clients and --seconds must be positive")

    pm = load_pymerkle(install=not args.no_install)
    total = args.entries + args.clients  # the first C records warm the log up, untimed
    records = [make_record(n) for n in range(total)]
    payload = round(sum(len(r.canonical()) for r in records[:1000]) / min(1000, total))

    with scratch_database(args.postgres) as pg, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = pg.settings()
        settings["server_version"] = str(pg.scalar("SHOW server_version"))
        say(f"PostgreSQL {settings['server_version']}: fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, "
            f"wal_sync_method={settings['wal_sync_method']}; scratch database {pg.name}")

        say(f"[1/4] CareVault on PostgreSQL: {args.clients} clients, up to {args.entries} "
            f"appends or {args.seconds:g} s …")
        cv_pg = bench_carevault(pg.sqlalchemy_url, records, args.clients, args.seconds,
                                args.proofs, settle=pg.checkpoint, commits=pg.xact_commit)
        log_order: list[bytes] = cv_pg["verification"].pop("entries_in_log_order")
        say(f"      {cv_pg['appends_per_s']} appends/s, p50 {cv_pg['append_p50_ms']} ms, "
            f"p99 {cv_pg['append_p99_ms']} ms; log verified ({len(log_order)} entries)")

        say("[2/4] CareVault on SQLite (file, WAL, synchronous=FULL) …")
        cv_lite = bench_carevault(f"sqlite:///{folder / 'carevault.db'}", records, args.clients,
                                  args.seconds, args.proofs)
        cv_lite["verification"].pop("entries_in_log_order")
        say(f"      {cv_lite['appends_per_s']} appends/s, p50 {cv_lite['append_p50_ms']} ms, "
            f"p99 {cv_lite['append_p99_ms']} ms; log verified")

        say("[3/4] pymerkle: the same entries in the log's order, in memory then SQLite …")
        pm_memory = bench_pymerkle_memory(pm, log_order, args.proofs)
        if pm_memory["root_hash"] != cv_pg["verification"]["root_hash"]:
            raise AssertionError("pymerkle's root differs from CareVault's signed root")
        pm_memory["same_root_as_carevault"] = True
        pm_sqlite = bench_pymerkle_sqlite(pm, log_order, args.seconds, args.proofs, folder)
        if pm_sqlite["entries"] == len(log_order):  # else a time-limited prefix of the log
            if pm_sqlite["root_hash"] != cv_pg["verification"]["root_hash"]:
                raise AssertionError("pymerkle's SQLite root differs from CareVault's")
            pm_sqlite["same_root_as_carevault"] = True
        say(f"      in memory {pm_memory['appends_per_s']} appends/s (root = CareVault's), "
            f"SQLite {pm_sqlite['appends_per_s']} durable appends/s")

        say(f"[4/4] pgbench: {args.clients} clients, one-row INSERT per transaction, "
            f"{args.seconds:g} s …")
        pgb = bench_pgbench(pg, args.clients, args.seconds, payload)
        say(f"      {pgb['tps']} tps")
        host = machine(pg)

    appends = cv_pg["appends_per_s"]
    pgbench_tps = pgb.get("tps")
    result = {
        "appends_per_s": appends,
        "append_p50_ms": cv_pg["append_p50_ms"],
        "append_p99_ms": cv_pg["append_p99_ms"],
        "clients": args.clients,
        "entries": cv_pg["entries"],
        "entries_requested": args.entries,
        "seconds_limit": args.seconds,
        "sqlite_appends_per_s": cv_lite["appends_per_s"],
        "pymerkle_sqlite_appends_per_s": pm_sqlite["appends_per_s"],
        "pymerkle_memory_appends_per_s": pm_memory["appends_per_s"],
        "ratio_vs_pymerkle": ratio(appends, pm_sqlite["appends_per_s"]),
        "ratio_vs_pymerkle_memory": ratio(appends, pm_memory["appends_per_s"]),
        "pgbench_tps": pgbench_tps,
        "ratio_vs_pgbench": ratio(appends, pgbench_tps),
        "postgres_settings": settings,
        "machine": host,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "goal_appends_per_s": GOAL_APPENDS_PER_S,
        "goal_met": appends >= GOAL_APPENDS_PER_S,
        "details": {
            "carevault_postgres": cv_pg,
            "carevault_sqlite": cv_lite,
            "pymerkle_memory": pm_memory,
            "pymerkle_sqlite": pm_sqlite,
            "pgbench": pgb,
            "entry_bytes_mean": payload,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    gc = cv_pg["group_commit"]
    rows = [
        ("durable appends", "per second", "notes"),
        ("CareVault, PostgreSQL", f"{appends:,}",
         f"{args.clients} clients; p50 {cv_pg['append_p50_ms']} ms, p99 "
         f"{cv_pg['append_p99_ms']} ms; {gc.get('entries_per_commit_mean')} entries and "
         f"{gc.get('sql_statements_per_commit_mean')} statements per commit"),
        ("CareVault, SQLite", f"{cv_lite['appends_per_s']:,}",
         f"p50 {cv_lite['append_p50_ms']} ms, p99 {cv_lite['append_p99_ms']} ms; "
         f"{cv_lite['group_commit'].get('entries_per_commit_mean')} entries per commit"),
        ("pymerkle 7, SQLite", f"{pm_sqlite['appends_per_s']:,}",
         "one commit per append, one writer (its tree lock)"),
        ("pymerkle 7, in memory", f"{pm_memory['appends_per_s']:,}",
         "not durable; root equal to CareVault's"),
        ("pgbench single-row INSERT", f"{pgbench_tps:,}" if pgbench_tps else "n/a",
         f"tps, {args.clients} clients, -j 2; fsync={settings['fsync']}, "
         f"synchronous_commit={settings['synchronous_commit']}"),
    ]
    say("")
    say(table(rows))
    say("")
    say(f"ratio vs pymerkle (SQLite): {result['ratio_vs_pymerkle']}x; vs pgbench: "
        f"{result['ratio_vs_pgbench']}x; goal {GOAL_APPENDS_PER_S:,}/s "
        f"{'met' if result['goal_met'] else 'NOT met'}")
    say(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
