"""``carevault serve --workers 2``: two server processes, one of them running the chores.

A real server runs as a subprocess on the test database (the ``database_url`` fixture: a fresh
SQLite file, or the session's PostgreSQL database emptied), initialized as an operator would:
``init``, ``pki init``, a physician with a certificate, a patient. The test checks that

- uvicorn runs exactly two worker processes under the ``carevault`` process;
- FHIR requests made with a SMART backend token are answered;
- exactly one worker holds the chores lease (SQLite: the ``flock`` in ``/proc/locks``;
  PostgreSQL: the advisory lock in ``pg_locks``), and the chores run: every entry the requests
  added to the audit log gets a signed tree head without anyone asking ``/audit/tree-head``
  (which signs on demand), and the published tree head keeps advancing;
- when the lease holder is killed (SIGKILL), another worker takes the lease over and the
  chores go on;
- SIGTERM to the server ends every process it started, and the lease with them.

Nothing here depends on speed: every wait polls a condition until a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from carevault.adapters.storage.lease import CHORES_LOCK_KEY
from support.builders import national_id
from support.mhd import FHIR_JSON, backend_token

from .conftest import CAREVAULT, STARTUP_SECONDS, _wait_until_healthy, carevault_env, free_port

pytestmark = pytest.mark.e2e

WORKERS = 2
PRACTITIONER = "HP-WORKERS-1"
DEADLINE_SECONDS = 30.0
COMMAND_SECONDS = 300.0
REQUESTS = 12
T = TypeVar("T")


# --- processes, as /proc shows them ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, …"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended: it only waits to be reaped)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def workers_of(pid: int) -> list[int]:
    """uvicorn's worker processes: spawned by multiprocessing. (The server's other child, if
    any, is multiprocessing's resource tracker.)"""
    return [child for child in children(pid) if "spawn_main" in cmdline(child)]


def flock_holders(path: Path) -> list[int]:
    """The processes holding a flock on ``path``, from /proc/locks."""
    inode = path.stat().st_ino
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if int(fields[5].rsplit(":", 1)[1]) == inode:
            holders.append(int(fields[4]))
    return holders


def socket_owner(local_port: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` has a TCP socket bound to ``local_port`` on this host."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in candidates:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") in inodes:
                    return pid
            except OSError:
                continue
    return None


def eventually(produce: Callable[[], T | None], what: str, log: Callable[[], str]) -> T:
    """Poll until ``produce`` gives something other than None (or False)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = produce()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS:.0f} s: {what}\n{log()}")
        time.sleep(0.2)


# --- the server ---------------------------------------------------------------------------------


@dataclass
class MultiWorkerServer:
    workdir: Path
    database_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    seen: dict[int, str] = field(default_factory=dict)  # every process it started: cmdline
    patient_id: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> Path:
        return self.workdir / "server.err"

    def env(self) -> dict[str, str]:
        env: dict[str, str] = carevault_env(self.workdir, self.base_url)
        env["CAREVAULT_DATABASE_URL"] = self.database_url
        env["CAREVAULT_RATE_LIMIT_PER_MINUTE"] = "1000000"  # not what is tested
        env.pop("CAREVAULT_WORKERS", None)
        return env

    def cli(self, *args: str) -> Any:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              check=False)
        assert done.returncode == 0, (
            f"`carevault {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return json.loads(done.stdout) if "--json" in args else done.stdout

    def log(self) -> str:
        return "server stderr (end):\n" + self.stderr.read_text(errors="replace")[-6000:]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with (self.workdir / "server.out").open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [CAREVAULT, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(WORKERS)],
                cwd=self.workdir, env=self.env(), stdout=out, stderr=err)
        _wait_until_healthy(self.process, self.base_url, self.stderr)

    def workers(self) -> list[int]:
        self.remember()
        return workers_of(self.pid)

    def remember(self) -> None:
        for child in children(self.pid):
            self.seen.setdefault(child, cmdline(child))

    def stop(self) -> None:
        """Last resort (the test stops the server itself): no process left behind."""
        if self.process is not None and self.process.poll() is None:
            self.remember()
            self.process.terminate()
            try:
                self.process.wait(timeout=STARTUP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STARTUP_SECONDS)
        for pid, command in self.seen.items():
            if running(pid) and cmdline(pid) == command:  # the same process, not a new one
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[MultiWorkerServer]:
    """An initialized CareVault on the test database; the test starts and stops the server."""
    workdir = tmp_path / "carevault"
    (workdir / "var").mkdir(parents=True)
    server = MultiWorkerServer(workdir, database_url)
    server.cli("init")
    server.cli("pki", "init")
    practitioner = server.cli("directory", "add-practitioner", "--identifier", PRACTITIONER,
                              "--family", "Weber", "--given", "Anne", "--profession",
                              "physician", "--specialty", "general-practice", "--json")
    server.cli("pki", "issue-practitioner", practitioner["id"], "--out",
               str(workdir / "card"))
    patient = server.cli("directory", "add-patient", "--national-id",
                         national_id(811, date(1968, 5, 2)), "--family", "Workers",
                         "--given", "Paul", "--birthdate", "1968-05-02", "--gender", "male",
                         "--json")
    server.patient_id = patient["id"]
    try:
        yield server
    finally:
        server.stop()


# --- the database's view: the audit log and the lease ---------------------------------------------


@pytest.fixture
def database(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def log_sizes(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT stream, tree_size FROM audit_log_state"))
        return {stream: int(size) for stream, size in rows}


def signed_sizes(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT stream, max(tree_size) FROM audit_tree_head GROUP BY stream"))
        return {stream: int(size) for stream, size in rows}


def all_signed(engine: Engine, sizes: dict[str, int]) -> bool:
    """Whether a signed tree head covers at least ``sizes`` in every stream."""
    signed = signed_sizes(engine)
    return all(signed.get(stream, -1) >= size for stream, size in sizes.items())


def lease_holders(server: MultiWorkerServer, engine: Engine) -> list[int]:
    """The server processes holding the chores lease (a holder not among them shows as -1)."""
    workers = server.workers()
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        assert database is not None
        lock_file = Path(database).with_name(Path(database).name + ".chores")
        if not lock_file.exists():
            return []
        return [pid if pid in workers else -1 for pid in flock_holders(lock_file)]
    with engine.connect() as connection:
        ports = connection.execute(text(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high"
            " AND l.objid = :low AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"high": CHORES_LOCK_KEY >> 32, "low": CHORES_LOCK_KEY & 0xFFFF_FFFF}).scalars().all()
    owners = [socket_owner(int(port), workers) if port is not None else None for port in ports]
    return [-1 if owner is None else owner for owner in owners]


def one_holder(server: MultiWorkerServer, engine: Engine, not_pid: int = 0) -> int | None:
    """The worker holding the chores lease, once exactly one (other than ``not_pid``) does."""
    holders = lease_holders(server, engine)
    assert len(holders) <= 1, f"several processes hold the chores lease: {holders}"
    if len(holders) == 1 and holders[0] in server.workers() and holders[0] != not_pid:
        return holders[0]
    return None


def wait_signed(engine: Engine, sizes: dict[str, int], log: Callable[[], str]) -> None:
    eventually(lambda: all_signed(engine, sizes), f"signed tree heads covering {sizes}",
               lambda: f"signed by then: {signed_sizes(engine)}\n{log()}")


def all_workers(server: MultiWorkerServer) -> list[int] | None:
    workers = server.workers()
    return workers if len(workers) == WORKERS else None


# --- the test -----------------------------------------------------------------------------------


def fhir_requests(server: MultiWorkerServer, token: str, count: int) -> None:
    """``count`` reads on fresh connections (so that both workers get some): all answered."""
    for n in range(count):
        with httpx.Client(base_url=server.base_url, timeout=60.0,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            if n % 3 == 2:
                response = http.get("/fhir/Patient", params={"family": "Workers"})
                assert response.status_code == 200, response.text
                bundle = response.json()
                assert bundle["resourceType"] == "Bundle"
                assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [
                    server.patient_id]
            else:
                response = http.get(f"/fhir/Patient/{server.patient_id}")
                assert response.status_code == 200, response.text
                assert response.json()["id"] == server.patient_id
            assert response.headers["content-type"].startswith(FHIR_JSON)


def test_two_workers_serve_and_one_runs_the_chores(
    server: MultiWorkerServer, database: Engine
) -> None:
    server.start()
    log = server.log

    # Exactly two workers under the server process, both still there once they are up.
    workers = eventually(lambda: all_workers(server),
                         f"{WORKERS} worker processes under the server", log)
    assert len(server.workers()) == WORKERS, f"children: {children(server.pid)}\n{log()}"
    assert server.pid not in workers

    # Exactly one of them takes the chores lease.
    holder = eventually(lambda: one_holder(server, database),
                        "one worker holds the chores lease", log)
    assert holder in workers

    # FHIR requests with a SMART backend token are answered, and audited.
    metadata = httpx.get(f"{server.base_url}/fhir/metadata", timeout=60.0)
    assert metadata.status_code == 200
    assert metadata.json()["resourceType"] == "CapabilityStatement"
    token = backend_token(server.base_url, server.workdir / "card", PRACTITIONER)
    before = log_sizes(database)
    fhir_requests(server, token, REQUESTS)
    after = log_sizes(database)
    assert after["clinical"] >= before["clinical"] + REQUESTS, (before, after)

    # The chores sign tree heads covering the new entries, unasked (nobody has called
    # /audit/tree-head yet, which would sign on demand).
    wait_signed(database, after, log)

    # The published tree head keeps advancing: over a few seconds, each new audit entry is
    # signed by the chores, then served with a later timestamp.
    heads: list[dict[str, Any]] = []
    started = time.monotonic()
    while len(heads) < 3 or time.monotonic() - started < 3.0:
        fhir_requests(server, token, 1)
        sizes = log_sizes(database)
        wait_signed(database, sizes, log)
        response = httpx.get(f"{server.base_url}/audit/tree-head", timeout=60.0)
        assert response.status_code == 200, response.text
        head = response.json()
        assert head["tree_size"] >= sizes["clinical"]
        if heads:
            assert head["tree_size"] > heads[-1]["tree_size"]
            assert head["timestamp"] > heads[-1]["timestamp"]
        heads.append(head)
        time.sleep(1.0)
    assert len(server.workers()) == WORKERS
    assert one_holder(server, database) == holder

    # The holder dies without a chance to clean up: another worker takes the chores over.
    os.kill(holder, signal.SIGKILL)
    successor = eventually(lambda: one_holder(server, database, not_pid=holder),
                           "another worker takes the chores lease after its holder is killed",
                           log)
    assert successor != holder
    assert not running(holder)
    fhir_requests(server, token, 3)
    wait_signed(database, log_sizes(database), log)

    # SIGTERM ends the server, its workers (and any other process it started), and the lease.
    server.remember()
    started_processes = {server.pid, *server.seen}
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not end within {DEADLINE_SECONDS:.0f} s of SIGTERM\n{log()}")
    eventually(lambda: not [p for p in started_processes if running(p)],
               f"every server process ends: {[p for p in started_processes if running(p)]}",
               log)
    eventually(lambda: lease_holders(server, database) == [],
               "the chores lease is released once the server has ended", log)
    assert "Traceback" not in server.stderr.read_text(errors="replace"), log()

