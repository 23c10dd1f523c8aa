"""Documents throughput: ITI-65 submissions and ITI-68 retrievals against a real server.

One run, on this machine and in this order:

1. AES-256-GCM on 1 MB documents: ``seal`` (carevault.adapters.crypto, a local KEK: a fresh
   data key, a fresh nonce, a wrap per call) against ``openssl speed -evp aes-256-gcm -bytes
   1048576``, with the functions of ``bench/crypto.py`` (imported, not copied), in three
   rounds of OpenSSL then ``seal`` (the shared machine's speed drifts; the median round's ratio
   is reported, every round is kept).
2. Setup, not timed: a scratch PostgreSQL database (dropped and created again), ``carevault
   init`` and ``db upgrade`` with ``CAREVAULT_DATABASE_URL`` / ``CAREVAULT_KEY_SOURCE=file:…`` /
   ``CAREVAULT_PUBLIC_BASE_URL``, ``pki init``, one organization and one physician with the
   command line, P patients through the directory services (as the identity feed does), the
   physician's certificate (``pki issue-practitioner --json``), ``carevault serve --workers W``
   (W processes, one listening socket each), SMART tokens from ``/oauth/token`` with a
   ``private_key_jwt`` client assertion carrying ``x5c`` (renewed before each phase), and one
   ``Encounter`` per patient, carrying the code the patient gives (made straight in the
   database, as their app's ``$presence-code`` makes it), so that the physician may publish to
   every record.
3. **ITI-65**: C concurrent clients (one ``httpx.AsyncClient``, i.e. one keep-alive connection,
   each) POST prepared transaction Bundles to ``/fhir``, each a SubmissionSet ``List``, one
   ``DocumentReference`` and one ``Binary`` of a ~16 KB PDF-like document (``%PDF-`` … ``%%EOF``,
   random body), and the author's signature that the server requires (IHE DSG: a second
   ``DocumentReference``, ``relatesTo`` ``signs``, an inline detached ES256 JWS with ``x5c``,
   made with PyJWT and the physician's key), until every prepared Bundle is sent or S seconds
   are up. Bundles are built and signed before the timed region. Each answer must be ``200``
   with a ``transaction-response`` naming the document and its signature.
4. **ITI-68**: the same C clients ``GET /fhir/Binary/{id}`` of the documents just published, in
   random order, for S seconds; each answer must be ``200`` with the exact length and the
   SHA-256 ``ETag`` of what was sent. Production paths all the way: rate limit, token check,
   record facts and the engine's decision, decryption, integrity check, audit entry.
5. **Baseline**: the CareVault server is stopped; a minimal Starlette app (this file,
   ``--serve-baseline``) is started the way ``carevault serve`` starts (the same W worker
   processes with CareVault's supervisor, or ``uvicorn.run`` for one; same loop and HTTP
   implementations, access log on) and answers
   ``GET /content/{id}`` with ``document_content.ciphertext`` fetched by primary key through
   CareVault's own engine factory (``adapters.storage.database.connect``: same pool, sized as
   ``carevault serve`` sizes it, same pre-ping), in the threadpool like the FHIR route; no
   token, no policy, no decryption, no audit. The same clients fetch the same ids in the same
   way for S seconds.

Latency is measured by the client around each request (connection reuse, queueing in the
server included). CPU time of the server process, of the PostgreSQL backends of the scratch
database (and the shared WAL writer, checkpointer and background writer), of this process (the
clients), of every other live process (``other``: should be about 0) and of the whole machine is
read from /proc for each phase; ``ended`` is what the machine spent beyond every live process,
mostly PostgreSQL backends of connections the pool opened and closed during the phase (their
count is in ``postgres_per_request.sessions``, from ``pg_stat_database``). The server's CPU
milliseconds per request compare it with the baseline leaving the clients' share of the CPU out.

Goals (issue 5, item 6): retrieval ≥ 40 % of the baseline's throughput with p99 ≤ 25 ms;
submission ≥ 300 documents/s per core, where the cores are the server's worker processes (at
most the machine's cores); AES-GCM on 1 MB ≥ 80 % of OpenSSL.

Run: ``.venv/bin/python bench/documents.py --workers 2`` (one worker per core of this machine;
the committed figures; about three minutes) or ``--quick`` (a
smoke run, under a minute); ``--wait-quiet S`` first waits for other test runs to end. The
figures are printed and written to ``bench/results/documents.json`` (``--quick`` writes nothing
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jwt
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "documents.json"
CAREVAULT = str(Path(sys.executable).parent / "carevault")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "carevault_bench_documents"
SCOPE = "system/*.cruds"
TOKEN_RENEW_AFTER_S = 240  # tokens live 5 minutes
STARTUP_SECONDS = 60.0
QUIET_OTHER_CORES = 0.25  # CPU used by anything else during a phase, above which it is noisy
QUIET_CAPACITY = 0.85  # of the CPU count: the CPUs' throughput together, below which it is noisy

GOAL_RETRIEVE_RATIO = 0.40
GOAL_RETRIEVE_P99_MS = 25.0
GOAL_SUBMIT_PER_CORE = 300.0
GOAL_AES_RATIO = 0.80
# The paced phase offers this share of the closed-loop retrieval rate: latency below saturation.
PACED_SHARE = 0.5

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FORMATS = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
SOURCE = "urn:oid:1.3.6.1.4.1.21367.2026.1"
PRESENCE_CODE_URL = "https://carevault.lu/fhir/StructureDefinition/presence-code"


def say(message: str) -> None:
    print(message, flush=True)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank on sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def load_crypto_bench() -> ModuleType:
    """bench/crypto.py, imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("carevault_bench_crypto", BENCH / "crypto.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bench/crypto.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- the bare baseline server ----------------------------------------------------------------


# The bare submission baseline's table (bench/bare.py): one row per Bundle received.
BUNDLE_TABLE = "bench_bundle"


def create_bundle_table(database_url: str) -> None:
    """The table the baseline's ``POST /bundles`` inserts into, in the scratch database."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {BUNDLE_TABLE} (id bigserial PRIMARY KEY, "
                     "body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())")


def baseline_app(database_url: str) -> Any:
    """Starlette: ``GET /content/{id}`` answers the stored ciphertext by primary key, and
    ``POST /bundles`` stores the request's bytes with one INSERT, committed before the answer
    (PostgreSQL's default ``synchronous_commit``: durable). Both echo ``X-Request-ID`` as
    CareVault does, so that a paced load can match answers to requests.

    Its pool and thread pool are sized as `carevault serve` sizes them (``request_threads``
    threads, ``request_threads + 6`` connections): a smaller pool than the threads would open
    and close overflow connections under load, a cost CareVault does not pay."""
    from anyio import to_thread
    from sqlalchemy import bindparam, select, text
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from carevault.adapters.storage import schema as t
    from carevault.adapters.storage.database import connect
    from carevault.settings import Settings

    threads = int(os.environ.get("CAREVAULT_REQUEST_THREADS")
                  or Settings.model_fields["request_threads"].default)
    engine = connect(database_url, pool_size=threads + 6)
    table = t.document_content
    query = select(table.c.ciphertext).where(table.c.document_id == bindparam("document_id"))
    insert = text(f"INSERT INTO {BUNDLE_TABLE} (body) VALUES (:body) RETURNING id")

    def fetch(document_id: str) -> bytes | None:
        with engine.connect() as connection:
            value = connection.execute(query, {"document_id": document_id}).scalar_one_or_none()
            return None if value is None else bytes(value)

    def store(body: bytes) -> int:
        with engine.begin() as connection:
            return int(connection.execute(insert, {"body": body}).scalar_one())

    def echoed(request: Request) -> dict[str, str]:
        asked = request.headers.get("x-request-id")
        return {"X-Request-ID": asked} if asked else {}

    async def content(request: Request) -> Response:
        data = await run_in_threadpool(fetch, request.path_params["document_id"])
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(data, media_type="application/octet-stream", headers=echoed(request))

    async def bundles(request: Request) -> Response:
        body = await request.body()
        if not body:
            return PlainTextResponse("empty", status_code=400)
        stored = await run_in_threadpool(store, body)
        return PlainTextResponse(str(stored), status_code=201, headers=echoed(request))

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    return Starlette(routes=[
        Route("/content/{document_id}", content),
        Route("/bundles", bundles, methods=["POST"]),
        Route("/health", health),
    ], lifespan=lifespan)


def baseline_factory() -> Any:
    """The baseline app of each worker process (``--workers`` > 1)."""
    return baseline_app(os.environ["CAREVAULT_BENCH_BASELINE_URL"])


def serve_baseline(database_url: str, port: int, workers: int) -> None:
    import uvicorn

    # The same calls as `carevault serve` makes (carevault.cli.main.serve): one process, or
    # CareVault's own supervisor of processes with a socket each.
    os.environ["CAREVAULT_BENCH_BASELINE_URL"] = database_url
    if workers > 1:
        from carevault.api.workers import serve_processes

        serve_processes("documents:baseline_factory", "127.0.0.1", port, workers)
        return
    uvicorn.run(
        baseline_app(database_url),
        host="127.0.0.1",
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
    )


# --- processes, CPU time ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The server gets SIGTERM if this benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_TICKS = os.sysconf("SC_CLK_TCK")


def processes_cpu_seconds(database: str) -> dict[int, tuple[float, bool, int]]:
    """Every live process: its CPU time, whether it is PostgreSQL working for ``database``
    (a backend of that database, or the WAL writer, checkpointer or background writer), and
    its parent's pid."""
    shared = ("walwriter", "checkpointer", "background writer")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            postgres = stat.split("(", 1)[1].startswith("postgres)")
            command = (entry / "cmdline").read_bytes().decode(errors="replace") if postgres else ""
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ours = postgres and (f" {database} " in command or any(f": {w}" in command
                                                               for w in shared))
        found[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / _TICKS, ours,
                                  int(fields[1]))
    return found


def machine_cpu_seconds() -> float:
    """CPU time spent by the whole machine (every CPU, every process), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = values[:8]
    return (user + nice + system + irq + softirq) / _TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuSnapshot:
    wall: float
    server_pid: int
    processes: dict[int, tuple[float, bool, int]]
    clients: float
    machine: float

    @classmethod
    def take(cls, server_pid: int, database: str) -> CpuSnapshot:
        return cls(time.perf_counter(), server_pid, processes_cpu_seconds(database),
                   own_cpu_seconds(), machine_cpu_seconds())

    def cores_since(self, before: CpuSnapshot) -> dict[str, float]:
        """Average cores busy between two snapshots (CPU seconds ÷ wall seconds).

        ``other``: live processes that are none of ours (another test run: should be ~0).
        ``ended``: what the machine spent beyond every live process: processes that ended in
        between, mostly PostgreSQL backends of connections the pool closed (see
        ``postgres_per_request.sessions``), and the kernel's own work (loopback traffic)."""
        wall = self.wall - before.wall
        server = postgres = other = 0.0
        tree = _descendants(self.server_pid, {**before.processes, **self.processes})
        for pid, (cpu, ours, _parent) in self.processes.items():
            spent = cpu - before.processes.get(pid, (0.0, False, 0))[0]
            if pid in tree:
                server += spent
            elif ours:
                postgres += spent
            elif pid != os.getpid():
                other += spent
        clients = self.clients - before.clients
        machine = self.machine - before.machine
        return {
            "server": round(server / wall, 2),
            "postgres": round(postgres / wall, 2),
            "clients": round(clients / wall, 2),
            "other": round(other / wall, 2),
            "ended": round(max(0.0, machine - server - postgres - clients - other) / wall, 2),
            "machine": round(machine / wall, 2),
        }


def _descendants(root: int, processes: dict[int, tuple[float, bool, int]]) -> set[int]:
    """``root`` and every process below it (a server's worker processes)."""
    children: dict[int, list[int]] = {}
    for pid, (_cpu, _ours, parent) in processes.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


class Server:
    """A server subprocess with its output in files; stopped for sure by `stop`."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path,
                 base_url: str) -> None:
        self.name = name
        self.base_url = base_url
        self.stdout = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=out, stderr=err,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        last = "no attempt made"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode} before answering "
                    f"/health\n{self.log_tail()}"
                )
            try:
                answer = httpx.get(f"{self.base_url}/health", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = f"/health answered {answer.status_code}"
            except httpx.TransportError as error:
                last = repr(error)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /health ({last})\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def tracebacks(self, limit: int = 3) -> list[str]:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        found = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n|\S.*Error.*\n)+",
                           text)
        return found[:limit]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class Postgres:
    admin_url: str
    name: str

    @property
    def url(self) -> str:
        return make_url(self.admin_url).set(database=self.name).render_as_string(
            hide_password=False
        )

    def admin(self) -> psycopg.Connection[Any]:
        url = make_url(self.admin_url)
        return psycopg.connect(
            host=url.host or "127.0.0.1", port=url.port or 5432,
            user=url.username or "postgres", password=url.password,
            dbname=url.database or "postgres", autocommit=True,
        )

    def create(self) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def describe(self) -> dict[str, str]:
        with self.admin() as conn:
            return {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers",
                             "max_connections")
            }

    def counters(self) -> dict[str, int]:
        """Sessions opened and transactions of the scratch database, so far."""
        with self.admin() as conn:
            row = conn.execute(
                "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database"
                " WHERE datname = %s", (self.name,)).fetchone()
        names = ("sessions", "commits", "rollbacks")
        return dict(zip(names, (int(v or 0) for v in row or (0, 0, 0)), strict=True))

    def ciphertext_lengths(self) -> dict[str, int]:
        with psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql")) as conn:
            rows = conn.execute("SELECT document_id, length(ciphertext) FROM document_content")
            return {str(i): int(n) for i, n in rows}


# --- CareVault: command line, tokens, bundles ----------------------------------------------------


def carevault_env(workdir: Path, database_url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
    env.update({
        "CAREVAULT_ENVIRONMENT": "dev",
        "CAREVAULT_DATABASE_URL": database_url,
        "CAREVAULT_KEY_SOURCE": f"file:{workdir / 'carevault.key'}",
        "CAREVAULT_PUBLIC_BASE_URL": base_url,
        # The limiter still runs on every request; 1,200/min per client (the default) would
        # cap one physician's card at 20 requests/s.
        "CAREVAULT_RATE_LIMIT_PER_MINUTE": str(100_000_000),
    })
    if "CAREVAULT_REQUEST_THREADS" in os.environ:  # to compare thread pool sizes
        env["CAREVAULT_REQUEST_THREADS"] = os.environ["CAREVAULT_REQUEST_THREADS"]
    return env


def cli(env: dict[str, str], workdir: Path, *args: str) -> Any:
    done = subprocess.run([CAREVAULT, *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`carevault {' '.join(args)}` exited {done.returncode}\n"
                           f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return json.loads(done.stdout) if "--json" in args else done.stdout


def register_patients(env: dict[str, str], count: int) -> list[str]:
    """Patients through the directory services, in batches, each commit audited as the
    command line audits it (an operator entry)."""
    from carevault.bootstrap import directory_context
    from carevault.cli import context
    from carevault.domain.national_id import make_luxembourg_national_id
    from carevault.fhirmodel.directory import new_patient
    from carevault.services import directory as svc
    from carevault.settings import Settings

    settings = Settings(
        database_url=env["CAREVAULT_DATABASE_URL"],
        key_source=env["CAREVAULT_KEY_SOURCE"],
        public_base_url=env["CAREVAULT_PUBLIC_BASE_URL"],
    )
    ctx = directory_context(settings)
    units = context.audited_units(settings, "directory add-patient")
    letters = "abcdefghijklmnopqrstuvwxyz"
    ids: list[str] = []
    try:
        for start in range(0, count, 100):
            resources = []
            for i in range(start, min(count, start + 100)):
                born = date(1950, 1, 1) + timedelta(days=11 * i)
                name = "".join(letters[(i // 26**k) % 26] for k in range(3))
                resources.append(new_patient(
                    ctx.systems,
                    national_id=make_luxembourg_national_id(born, 100 + i % 800),
                    family=f"Bench{name.capitalize()}", given=["Patient"], birth_date=born,
                    gender="female" if i % 2 else "male",
                ))
            with units() as uow:
                ids += [s.id for s in svc.register_patients(uow, ctx, resources)]
    finally:
        context.engine_for(settings.database_url).dispose()
    return ids


class Card:
    """A practitioner's certificate: SMART Backend Services tokens with private_key_jwt."""

    def __init__(self, base_url: str, directory: Path, client_id: str) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.key = (directory / "key.pem").read_bytes()
        chain = [x509.load_pem_x509_certificate((directory / name).read_bytes())
                 for name in ("cert.pem", "chain.pem")]
        self.x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]
        self.token = ""
        self.fetched = -math.inf

    def renew(self) -> str:
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": self.client_id, "sub": self.client_id,
             "aud": f"{self.base_url}/oauth/token", "iat": now, "exp": now + 120,
             "jti": uuid.uuid4().hex},
            self.key, algorithm="ES256", headers={"x5c": self.x5c})
        answer = httpx.post(f"{self.base_url}/oauth/token", timeout=30, data={
            "grant_type": "client_credentials", "scope": SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        if answer.status_code != 200:
            raise RuntimeError(f"/oauth/token answered {answer.status_code}: {answer.text}")
        self.token = str(answer.json()["access_token"])
        self.fetched = time.monotonic()
        return self.token

    def headers(self) -> dict[str, str]:
        if time.monotonic() - self.fetched > TOKEN_RENEW_AFTER_S:
            self.renew()  # blocks the client loop once; phases renew beforehand
        return {"Authorization": f"Bearer {self.token}"}


def pdf_like(n: int, size: int) -> bytes:
    """A PDF-like document of ``size`` bytes: a PDF header, random body, an EOF marker."""
    head = f"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n% CareVault bench document {n}\n".encode()
    tail = b"\n%%EOF\n"
    return head + os.urandom(max(0, size - len(head) - len(tail))) + tail


def detached_jws(content: bytes, card: Card) -> bytes:
    """The author's signature as IHE DSG carries it in MHD: a compact JWS with a detached
    payload (RFC 7515 appendix F), ES256, the signer's chain in x5c (leaf first)."""
    token = jwt.api_jws.PyJWS().encode(content, card.key, algorithm="ES256",
                                       headers={"x5c": card.x5c})
    header, _payload, signature = token.split(".")
    return f"{header}..{signature}".encode("ascii")


def provide_bundle(patient_id: str, practitioner_id: str, content: bytes,
                   signature: bytes) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle, hand-built as a third-party system sends it: the
    SubmissionSet, the document's DocumentReference and Binary, and the author's signature
    (a second DocumentReference, relatesTo ``signs``, its JWS inline)."""
    doc_url, bin_url, set_url, sig_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    reference = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                             "value": f"urn:oid:1.2.3.{uuid.uuid4().int % 10**15}"},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
        "category": [{"coding": [{"system": LOINC, "code": "11488-4"}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "author": [{"reference": f"Practitioner/{practitioner_id}"}],
        "securityLabel": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "code": "N"}]}],
        "content": [{"attachment": {
            "contentType": "application/pdf", "url": bin_url, "size": len(content),
            "hash": base64.b64encode(hashlib.sha1(content).digest()).decode(),
            "title": "Consultation report", "creation": "2026-11-20T10:00:00Z",
        }, "format": {"system": FORMATS, "code": "urn:ihe:iti:xds-sd:pdf:2008"}}],
        "context": {"practiceSetting": {"coding": [{"system": SNOMED, "code": "394802001"}]},
                    "facilityType": {"coding": [{"system": SNOMED, "code": "22232009"}]},
                    "period": {"start": "2026-11-20T09:00:00Z"}},
    }
    submission_set = {
        "resourceType": "List",
        "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                       "valueUri": SOURCE}],
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": f"urn:oid:1.2.4.{uuid.uuid4().int % 10**15}"}],
        "status": "current", "mode": "working",
        "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                             "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": "2026-11-20T10:05:00Z",
        "entry": [{"item": {"reference": doc_url}}, {"item": {"reference": sig_url}}],
    }
    binary = {"resourceType": "Binary", "contentType": "application/pdf",
              "data": base64.b64encode(content).decode()}
    signs = {**reference, "masterIdentifier": {
        "system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.5.{uuid.uuid4().int % 10**15}"},
        "relatesTo": [{"code": "signs", "target": {"reference": doc_url}}],
        "content": [{"attachment": {"contentType": "application/jose",
                                    "data": base64.b64encode(signature).decode(),
                                    "size": len(signature)},
                     "format": {"system": FORMATS, "code": "urn:ihe:iti:dsg:detached:2014"}}]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": set_url, "resource": submission_set,
         "request": {"method": "POST", "url": "List"}},
        {"fullUrl": doc_url, "resource": reference,
         "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": bin_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": sig_url, "resource": signs,
         "request": {"method": "POST", "url": "DocumentReference"}},
    ]}


def encounter(patient_id: str, practitioner_id: str, presence_code: str | None = None) -> bytes:
    """An Encounter: the care event that lets the practitioner open the record. Recording one
    needs the code the patient gives (their app's ``$presence-code``), carried in an
    extension."""
    resource: dict[str, Any] = {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "participant": [{"individual": {"reference": f"Practitioner/{practitioner_id}"}}],
        "period": {"start": "2026-11-20T09:00:00Z"},
    }
    if presence_code is not None:
        resource["extension"] = [{"url": PRESENCE_CODE_URL, "valueString": presence_code}]
    return json.dumps(resource).encode()


def presence_codes(database_url: str, patients: Sequence[str]) -> dict[str, str]:
    """The code each patient gives the physician (their app's ``$presence-code``), made
    straight in the database: a care event needs one to open the record."""
    from carevault.adapters.storage.database import connect
    from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
    from carevault.services.presence import issue_presence_code

    engine = connect(database_url)
    try:
        with SqlUnitOfWork(engine) as uow:
            codes = {p: issue_presence_code(uow, p, f"account:bench-{p}", datetime.now(UTC)).code
                     for p in patients}
        return codes
    finally:
        engine.dispose()


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Job:
    method: str
    path: str
    body: bytes | None
    check: Callable[[httpx.Response], str | None]  # None: as expected; else what is wrong
    authorized: bool = True


@dataclass
class Run:
    name: str
    ok: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    failures: int = 0
    cores: dict[str, float] = field(default_factory=dict)
    database: dict[str, int] = field(default_factory=dict)  # pg_stat_database deltas

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "requests_ok": self.ok,
            "requests_failed": self.failures,
            "seconds": round(self.seconds, 2),
            "per_s": round(self.per_second, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p90_ms": round(percentile(lat, 90), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1], 2) if lat else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "cores_busy": self.cores,
            "cpu_ms_per_request": {
                who: round(self.cores[who] * self.seconds * 1000 / self.ok, 3)
                if self.ok and who in self.cores else None
                for who in ("server", "postgres", "ended", "clients")
            },
            # Approximate: backends report their counters to pg_stat_database within ~1 s.
            "postgres_per_request": {
                name: round(value / self.ok, 2) for name, value in self.database.items()
            } if self.ok else {},
            "first_problems": self.problems[:5],
        }


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class Load:
    """C client coroutines on one event loop, each with its own keep-alive connection."""

    def __init__(self, base_url: str, clients: int, card: Card | None, pg: Postgres,
                 seen: set[str]) -> None:
        self.base_url = base_url
        self.clients = clients
        self.card = card
        self.pg = pg
        self.seen = seen  # test runs seen on the machine around a timed region

    def run(self, name: str, jobs: Iterator[Job], seconds: float, server_pid: int,
            warmup: Sequence[Job] = (), rate: float | None = None) -> Run:
        """Closed loop (each client sends its next request when the last one is answered), or,
        with ``rate``, open loop: the clients together start ``rate`` requests per second on a
        fixed schedule, and a request's latency counts from its scheduled start, so a server
        that falls behind is charged for the wait (no coordinated omission)."""
        runner = asyncio.Runner(loop_factory=event_loop_factory())
        with runner:
            return runner.run(self._run(name, jobs, seconds, server_pid, warmup, rate))

    async def _run(self, name: str, jobs: Iterator[Job], seconds: float, server_pid: int,
                   warmup: Sequence[Job], rate: float | None = None) -> Run:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        sessions = [httpx.AsyncClient(base_url=self.base_url, timeout=60.0, limits=limits)
                    for _ in range(self.clients)]
        try:
            if warmup:  # opens every connection, warms the server's caches; not counted
                pending = iter(warmup)
                throwaway = Run(f"{name} (warm-up)")
                await asyncio.gather(*(self._client(s, pending, math.inf, throwaway)
                                       for s in sessions))
                if throwaway.failures:
                    raise RuntimeError(f"{name}: warm-up failed: {throwaway.problems[:3]}")
            run = Run(name)
            self.seen.update(other_test_runs())
            counted = self.pg.counters()
            before = CpuSnapshot.take(server_pid, self.pg.name)
            deadline = time.perf_counter() + seconds
            if rate is None:
                await asyncio.gather(*(self._client(s, jobs, deadline, run)
                                       for s in sessions))
            else:
                interval = len(sessions) / rate  # each client's share of the schedule
                start = time.perf_counter()
                await asyncio.gather(*(
                    self._client(s, jobs, deadline, run,
                                 schedule=(start + n * interval / len(sessions), interval))
                    for n, s in enumerate(sessions)))
            after = CpuSnapshot.take(server_pid, self.pg.name)
            run.database = {k: v - counted[k] for k, v in self.pg.counters().items()}
            self.seen.update(other_test_runs())
            run.seconds = after.wall - before.wall
            run.cores = after.cores_since(before)
            return run
        finally:
            await asyncio.gather(*(s.aclose() for s in sessions))

    async def _client(self, session: httpx.AsyncClient, jobs: Iterator[Job], deadline: float,
                      run: Run, schedule: tuple[float, float] | None = None) -> None:
        clock = time.perf_counter
        due = schedule[0] if schedule is not None else 0.0
        while clock() < deadline:
            if schedule is not None:
                if due >= deadline:
                    return
                await asyncio.sleep(max(0.0, due - clock()))
            job = next(jobs, None)
            if job is None:
                return
            headers = {"Content-Type": FHIR_JSON} if job.body is not None else {}
            if job.authorized and self.card is not None:
                headers.update(self.card.headers())
            start = clock() if schedule is None else due
            if schedule is not None:
                due += schedule[1]
            try:
                answer = await session.request(job.method, job.path, content=job.body,
                                               headers=headers)
            except httpx.HTTPError as error:
                run.failures += 1
                run.problems.append(f"{job.method} {job.path}: {error!r}")
                continue
            run.latencies_ms.append((clock() - start) * 1000)
            run.statuses[answer.status_code] += 1
            problem = job.check(answer)
            if problem is None:
                run.ok += 1
            else:
                run.failures += 1
                run.problems.append(f"{job.method} {job.path} -> {answer.status_code}: "
                                    f"{problem}: {answer.text[:600]}")


# --- the phases ----------------------------------------------------------------------------------


@dataclass
class Published:
    ids: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)


def submission_jobs(bundles: Sequence[tuple[bytes, str]], published: Published) -> Iterator[Job]:
    for body, sha in bundles:

        def check(answer: httpx.Response, sha: str = sha) -> str | None:
            if answer.status_code != 200:
                return "not 200"
            data = answer.json()
            locations = [e["response"]["location"] for e in data.get("entry", [])]
            # The document, then its signature: in the Bundle's order.
            found = [loc.split("/")[-3] for loc in locations if "/DocumentReference/" in loc]
            if data.get("type") != "transaction-response" or len(found) != 2:
                return "not a transaction-response naming two DocumentReferences"
            published.ids.append(found[0])
            published.sha256[found[0]] = sha
            return None

        yield Job("POST", "/fhir", body, check)


def shuffled_forever(ids: Sequence[str], rng: random.Random) -> Iterator[str]:
    order = list(ids)
    while True:
        rng.shuffle(order)
        yield from order


def retrieval_jobs(ids: Iterator[str], published: Published, size: int) -> Iterator[Job]:
    for document_id in ids:
        etag = f'"{published.sha256[document_id]}"'

        def check(answer: httpx.Response, etag: str = etag) -> str | None:
            if answer.status_code != 200:
                return "not 200"
            if len(answer.content) != size or answer.headers.get("etag") != etag:
                return "not the bytes that were published (length or SHA-256 ETag)"
            return None

        yield Job("GET", f"/fhir/Binary/{document_id}", None, check)


def baseline_jobs(ids: Iterator[str], lengths: dict[str, int]) -> Iterator[Job]:
    for document_id in ids:
        expected = lengths[document_id]

        def check(answer: httpx.Response, expected: int = expected) -> str | None:
            if answer.status_code != 200 or len(answer.content) != expected:
                return f"expected 200 and {expected} bytes"
            return None

        yield Job("GET", f"/content/{document_id}", None, check, authorized=False)


def expect(status: int) -> Callable[[httpx.Response], str | None]:
    return lambda answer: None if answer.status_code == status else f"expected {status}"


def prepare_bundles(count: int, patients: Sequence[str], practitioner_id: str, card: Card,
                    size: int) -> list[tuple[bytes, str]]:
    bundles = []
    for n in range(count):
        content = pdf_like(n, size)
        bundle = provide_bundle(patients[n % len(patients)], practitioner_id, content,
                                detached_jws(content, card))
        bundles.append((json.dumps(bundle, separators=(",", ":")).encode(),
                        hashlib.sha256(content).hexdigest()))
    return bundles


# --- machine, quiet check ------------------------------------------------------------------------


def other_test_runs() -> list[str]:
    """Command lines of pytest runs on this machine (they would skew the figures)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        programs = [Path(arg).name for arg in args[:3]]
        if "pytest" in programs or "py.test" in programs or "-mpytest" in "".join(args[:3]):
            found.append(" ".join(args)[:160])
    return found


def wait_until_quiet(patience: float) -> list[str]:
    """Wait (at most ``patience`` seconds) for 10 s in a row without a pytest run, and for the
    CPUs to deliver most of their capacity (nothing unseen, such as another session, busy)."""
    deadline, quiet_since, told = time.monotonic() + patience, None, False
    while True:
        busy = other_test_runs()
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        if quiet_since is not None and now - quiet_since >= 10 and capacity_ok(cpu_capacity()):
            return busy
        if now >= deadline:
            return busy
        if not told:
            say(f"waiting up to {patience:g} s for a quiet machine …")
            told = True
        time.sleep(1 if busy else 5)


def capacity_ok(capacity: float) -> bool:
    return capacity >= QUIET_CAPACITY * len(os.sched_getaffinity(0))


def _spin(seconds: float) -> int:
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        count += 1
    return count


def cpu_capacity(seconds: float = 1.0) -> float:
    """How many cores' worth of work all the CPUs do together: busy loops in one process, then
    in one process per CPU (a shared or hyper-threaded VM gives less than its CPU count)."""
    import multiprocessing

    cpus = len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        alone = pool.map(_spin, [seconds])[0]
    with context.Pool(cpus) as pool:
        together = sum(pool.map(_spin, [seconds] * cpus))
    return round(together / alone, 2) if alone else float("nan")


def machine(crypto_machine: dict[str, Any]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("uvicorn", "starlette", "fastapi", "httpx", "uvloop", "httptools",
                    "SQLAlchemy", "psycopg", "cryptography"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu": crypto_machine.get("cpu", ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "openssl": crypto_machine.get("openssl"),
        "cryptography_openssl": crypto_machine.get("cryptography_openssl"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_capacity_cores_at_start": cpu_capacity(),
    }


# --- AES-GCM -------------------------------------------------------------------------------------


def aes_gcm(crypto: ModuleType, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """``seal`` on 1 MB (local KEK) against ``openssl speed`` on 1 MB blocks, in this run:
    ``rounds`` rounds, each measuring OpenSSL then ``seal`` back to back, so that a change of
    the shared machine's speed hits both sides of a round; the ratio is the median round's."""
    from carevault.adapters.crypto import open_sealed, seal

    size = crypto.SIZES["1MB"]
    plaintext = os.urandom(size)
    measured: list[tuple[float, float]] = []  # (seal MB/s, openssl MB/s) per round
    with crypto.local_keyring() as ring:
        kek = ring.current
        sealed = seal(plaintext, document_id="bench-doc", version=1, kek=kek)
        assert open_sealed(sealed, document_id="bench-doc", version=1, keyring=ring) == plaintext
        for _ in range(rounds):
            openssl = crypto.openssl_speed(size, seconds) / 1e6
            calls = crypto.rate(
                lambda: seal(plaintext, document_id="bench-doc", version=1, kek=kek), seconds)
            measured.append((calls * size / 1e6, openssl))
    ratios = sorted(mb / openssl for mb, openssl in measured if openssl)
    middle = sorted(measured, key=lambda pair: pair[0] / pair[1] if pair[1] else 0.0)
    mb, openssl = middle[len(middle) // 2]
    return {
        "document_bytes": size,
        "seal_per_s": round(mb * 1e6 / size, 1),
        "seal_mb_per_s": round(mb, 1),
        "openssl_mb_per_s": round(openssl, 1),
        "openssl_command": f"openssl speed -evp aes-256-gcm -bytes {size} "
                           f"-seconds {max(1, round(seconds))}",
        "rounds": [{"seal_mb_per_s": round(a, 1), "openssl_mb_per_s": round(b, 1)}
                   for a, b in measured],
        "ratio": round(ratios[len(ratios) // 2], 2) if ratios else None,
    }


# --- main ----------------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    clients: int
    patients: int
    document_bytes: int
    submissions: int
    seconds: float
    aes_seconds: float
    postgres: str
    database: str
    wait_quiet: float
    out: Path | None
    profile: Path | None
    workers: int


def options(argv: list[str] | None) -> Options | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 50 patients, 300 submissions, 4 s phases")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes, for CareVault and the baseline alike")
    parser.add_argument("--patients", type=int, help="default 300 (quick: 50)")
    parser.add_argument("--document-bytes", type=int, default=16 * 1024)
    parser.add_argument("--submissions", type=int,
                        help="Bundles prepared for ITI-65 (default 8000, quick 300)")
    parser.add_argument("--seconds", type=float,
                        help="the most each phase runs (default 30, quick 4)")
    parser.add_argument("--aes-seconds", type=float, help="per AES measurement (default 3)")
    parser.add_argument("--postgres", default=os.environ.get("CAREVAULT_BENCH_POSTGRES",
                                                             DEFAULT_PG),
                        help="a PostgreSQL URL whose user may create databases")
    parser.add_argument("--database", default=DATABASE,
                        help=f"scratch database, dropped and created again (default {DATABASE})")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS until no pytest runs on this machine")
    parser.add_argument("--out", type=Path, help=f"default {RESULTS.relative_to(ROOT)} "
                                                 "(quick: nothing written)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the server with py-spy during each phase, into DIR")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.database_url, args.port, args.workers)
        return None
    quick = bool(args.quick)
    return Options(
        quick=quick,
        clients=args.clients,
        patients=args.patients or (50 if quick else 300),
        document_bytes=args.document_bytes,
        submissions=args.submissions or (300 if quick else 8000),
        seconds=args.seconds or (4.0 if quick else 30.0),
        aes_seconds=args.aes_seconds or (1.0 if quick else 3.0),
        postgres=args.postgres,
        database=args.database,
        wait_quiet=args.wait_quiet,
        out=args.out or (None if quick else RESULTS),
        profile=args.profile,
        workers=args.workers,
    )


@contextlib.contextmanager
def profiled(directory: Path | None, name: str, pid: int) -> Iterator[None]:
    """py-spy samples ``pid`` while the phase runs (the figures of a profiled run are skewed)."""
    if directory is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / (re.sub(r"[^a-z0-9]+", "-", name.lower()) + ".txt")
    sampler = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--gil",
                                "--subprocesses", "--rate", "250", "--output", str(out)],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)
        say(f"  profile: {out}")


def on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # unwinds through the clean-up below


def main(argv: list[str] | None = None) -> int:
    opts = options(argv)
    if opts is None:
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)
    busy = wait_until_quiet(opts.wait_quiet) if opts.wait_quiet else other_test_runs()
    if busy:
        say("WARNING: test runs in progress on this machine; the figures will be skewed:")
        for command in busy:
            say(f"  {command}")

    seen = set(busy)
    crypto = load_crypto_bench()
    machine_info = machine(crypto.machine())
    say(f"AES-256-GCM, 1 MB: seal vs openssl speed ({opts.aes_seconds:g} s each) …")
    aes = aes_gcm(crypto, opts.aes_seconds)
    say(f"  seal {aes['seal_mb_per_s']:,.0f} MB/s, openssl {aes['openssl_mb_per_s']:,.0f} MB/s, "
        f"ratio {aes['ratio']}")

    pg = Postgres(opts.postgres, opts.database)
    workdir = Path(tempfile.mkdtemp(prefix="carevault-bench-documents-"))
    servers: list[Server] = []
    created = False
    try:
        pg.create()
        created = True
        machine_info["postgres"] = pg.describe()
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = carevault_env(workdir, pg.url, base_url)
        say(f"setup: database {pg.name}, {opts.patients} patients, server {base_url} …")
        cli(env, workdir, "init")
        cli(env, workdir, "db", "upgrade")
        cli(env, workdir, "pki", "init")
        organization = cli(env, workdir, "directory", "add-organization", "--identifier",
                           "BENCH-ORG-1", "--name", "Clinique du Benchmark", "--json")
        physician = cli(env, workdir, "directory", "add-practitioner", "--identifier",
                        "BENCH-DOC-1", "--family", "Weber", "--given", "Anne", "--profession",
                        "physician", "--specialty", "general-practice", "--organization",
                        organization["id"], "--json")
        practitioner_id = str(physician["id"])
        patients = register_patients(env, opts.patients)
        issued = cli(env, workdir, "pki", "issue-practitioner", practitioner_id, "--out",
                     str(workdir / "card"), "--json")

        server = Server("carevault", [CAREVAULT, "serve", "--host", "127.0.0.1", "--port",
                                      str(port), "--workers", str(opts.workers)],
                        env, workdir, base_url)
        servers.append(server)
        server.wait_healthy()
        card = Card(base_url, workdir / "card", str(issued["client_id"]))
        card.renew()
        load = Load(base_url, opts.clients, card, pg, seen)

        codes = presence_codes(pg.url, patients)
        encounters = [Job("POST", "/fhir/Encounter", encounter(p, practitioner_id, codes[p]),
                          expect(201)) for p in patients]
        done = load.run("encounters", iter(encounters), math.inf, server.pid)
        if done.failures:
            raise RuntimeError(f"recording the encounters failed: {done.problems[:3]}")

        warm = 2 * opts.clients
        say(f"preparing {opts.submissions + warm:,} ITI-65 Bundles of "
            f"{opts.document_bytes:,}-byte documents …")
        bundles = prepare_bundles(opts.submissions + warm, patients, practitioner_id, card,
                                  opts.document_bytes)
        published = Published()
        warmup = list(submission_jobs(bundles[:warm], published))
        card.renew()
        say(f"ITI-65: {opts.clients} clients, up to {opts.submissions:,} Bundles or "
            f"{opts.seconds:g} s …")
        with profiled(opts.profile, "submit", server.pid):
            submit = load.run("ITI-65 submit", submission_jobs(bundles[warm:], published),
                              opts.seconds, server.pid, warmup)
        del bundles
        report_run(submit, server)

        rng = random.Random(65_68)
        card.renew()
        say(f"ITI-68: {opts.clients} clients, {len(published.ids):,} documents in random order, "
            f"{opts.seconds:g} s …")
        order = shuffled_forever(published.ids, rng)
        warm_reads = [next(retrieval_jobs(order, published, opts.document_bytes))
                      for _ in range(warm)]
        with profiled(opts.profile, "retrieve", server.pid):
            retrieve = load.run("ITI-68 retrieve", retrieval_jobs(order, published,
                                                                  opts.document_bytes),
                                opts.seconds, server.pid, warm_reads)
        report_run(retrieve, server)
        paced_rate = round(PACED_SHARE * retrieve.per_second, 1)
        say(f"ITI-68 paced: {opts.clients} clients starting {paced_rate:g} requests/s "
            f"({PACED_SHARE:.0%} of the rate above) on a fixed schedule, {opts.seconds:g} s …")
        paced = load.run("ITI-68 paced", retrieval_jobs(order, published, opts.document_bytes),
                         opts.seconds, server.pid, rate=paced_rate)
        report_run(paced, server)
        server.stop()

        lengths = pg.ciphertext_lengths()
        baseline_port = free_port()
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        bare = Server("baseline", [sys.executable, str(Path(__file__).resolve()),
                                   "--serve-baseline", "--database-url", pg.url, "--port",
                                   str(baseline_port), "--workers", str(opts.workers)],
                      env, workdir, baseline_url)
        servers.append(bare)
        bare.wait_healthy()
        say(f"baseline: {opts.clients} clients, GET /content/{{id}} (ciphertext by primary key), "
            f"{opts.seconds:g} s …")
        bare_load = Load(baseline_url, opts.clients, None, pg, seen)
        order = shuffled_forever(published.ids, random.Random(65_68))
        warm_bare = [next(baseline_jobs(order, lengths)) for _ in range(warm)]
        baseline = bare_load.run("baseline retrieve", baseline_jobs(order, lengths),
                                 opts.seconds, bare.pid, warm_bare)
        report_run(baseline, bare)
        bare.stop()
        machine_info["cpu_capacity_cores_at_end"] = cpu_capacity()
        result = summarize(opts, aes, submit, retrieve, baseline, len(patients),
                           machine_info, sorted(seen), servers, paced)
    finally:
        for running in servers:
            running.stop()
        if created:
            with contextlib.suppress(psycopg.Error):
                pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(result)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        if opts.out.exists():
            # bench/bare.py's figures (measured by another run) are kept, not dropped.
            earlier = json.loads(opts.out.read_text(encoding="utf-8"))
            if "bare_baselines" in earlier:
                result["bare_baselines"] = earlier["bare_baselines"]
        opts.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        shown = opts.out.relative_to(ROOT) if opts.out.is_relative_to(ROOT) else opts.out
        say(f"written to {shown}")
    return 0


def report_run(run: Run, server: Server) -> None:
    s = run.summary()
    say(f"  {s['requests_ok']:,} ok in {s['seconds']} s: {s['per_s']:,.1f}/s, "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; cores busy {s['cores_busy']}")
    if run.failures:
        say(f"  {run.failures} FAILED; statuses {s['statuses']}")
        for problem in run.problems[:3]:
            say(f"    {problem}")
        for trace in server.tracebacks():
            say(f"  server traceback:\n{trace}")


def summarize(opts: Options, aes: dict[str, Any], submit: Run, retrieve: Run, baseline: Run,
              patients: int, machine_info: dict[str, Any], busy: list[str],
              servers: list[Server], paced: Run) -> dict[str, Any]:
    retrieve_s, submit_s, paced_s = retrieve.summary(), submit.summary(), paced.summary()
    ratio = retrieve.per_second / baseline.per_second if baseline.per_second else 0.0
    # A core is a server worker, a process: the machine's cores when there are more workers.
    server_cores_used = min(opts.workers, os.cpu_count() or 1)
    per_core = submit.per_second / server_cores_used
    server_cores = submit.cores.get("server") or 0.0
    goals = {
        "retrieve_ratio": {"value": round(ratio, 3), "goal": f">= {GOAL_RETRIEVE_RATIO}",
                           "met": ratio >= GOAL_RETRIEVE_RATIO},
        "retrieve_p99_ms": {"value": retrieve_s["p99_ms"], "goal": f"<= {GOAL_RETRIEVE_P99_MS}",
                            "met": retrieve_s["p99_ms"] <= GOAL_RETRIEVE_P99_MS},
        "submit_per_core": {"value": round(per_core, 1), "goal": f">= {GOAL_SUBMIT_PER_CORE}",
                            "met": per_core >= GOAL_SUBMIT_PER_CORE},
        "aes_gcm_ratio_vs_openssl": {"value": aes["ratio"], "goal": f">= {GOAL_AES_RATIO}",
                                     "met": aes["ratio"] is not None
                                     and aes["ratio"] >= GOAL_AES_RATIO},
    }
    errors = {s.name: s.tracebacks() for s in servers if s.tracebacks()}
    other_cores = max(r.cores.get("other", 0.0) for r in (submit, retrieve, baseline))
    # The clients share the machine's CPU with the server: the baseline's clients take a larger
    # share, so its throughput understates the bare server. Server CPU per request is the
    # comparison without the clients.
    cv_cpu = retrieve_s["cpu_ms_per_request"]["server"]
    bare_cpu = baseline.summary()["cpu_ms_per_request"]["server"]
    cpu_ratio = round(bare_cpu / cv_cpu, 3) if cv_cpu and bare_cpu else None
    failed = submit.failures + retrieve.failures + baseline.failures + paced.failures
    return {
        "retrieve_per_s": round(retrieve.per_second, 1),
        "baseline_retrieve_per_s": round(baseline.per_second, 1),
        "retrieve_ratio": round(ratio, 3),
        "retrieve_server_cpu_ms": cv_cpu,
        "baseline_server_cpu_ms": bare_cpu,
        "retrieve_ratio_by_server_cpu": cpu_ratio,
        "retrieve_p50_ms": retrieve_s["p50_ms"],
        "retrieve_p99_ms": retrieve_s["p99_ms"],
        # The closed loop above keeps 32 requests in flight at saturation, so its latency is
        # mostly queueing (Little's law: 32 / throughput). Below saturation:
        "retrieve_paced_offered_per_s": round(PACED_SHARE * retrieve.per_second, 1),
        "retrieve_paced_per_s": round(paced.per_second, 1),
        "retrieve_paced_p50_ms": paced_s["p50_ms"],
        "retrieve_paced_p99_ms": paced_s["p99_ms"],
        "baseline_p50_ms": baseline.summary()["p50_ms"],
        "baseline_p99_ms": baseline.summary()["p99_ms"],
        "submit_per_s": round(submit.per_second, 1),
        "submit_per_core": round(per_core, 1),
        "submit_per_core_divisor": f"server workers ({opts.workers}) on "
                                   f"{os.cpu_count()} cores: {server_cores_used}",
        "submit_per_cpu": round(submit.per_second / (os.cpu_count() or 1), 1),
        "submit_per_server_cpu_second": round(submit.per_second / server_cores, 1)
        if server_cores else None,
        "submit_p50_ms": submit_s["p50_ms"],
        "submit_p99_ms": submit_s["p99_ms"],
        "aes_gcm_ratio_vs_openssl": aes["ratio"],
        "setup": {
            "quick": opts.quick,
            "server": f"carevault serve --workers {opts.workers} (uvicorn), PostgreSQL, "
                      "local key file KEK",
            "baseline": f"Starlette + uvicorn.run with the same settings, {opts.workers} "
                        "worker(s); "
                        "document_content.ciphertext by primary key via "
                        "carevault.adapters.storage.database.connect, in the threadpool",
            "server_workers": opts.workers,
            "clients": opts.clients,
            "client": "httpx.AsyncClient per client (one keep-alive connection), one event loop"
                      + (" (uvloop)" if event_loop_factory() else "")
                      + ", in the benchmark process on the same machine",
            "document_bytes": opts.document_bytes,
            "document": "PDF-like: %PDF-1.7 header, random body, %%EOF; application/pdf, "
                        "one per ITI-65 Bundle: List, DocumentReference, Binary, and the "
                        "author's signature (a DocumentReference relatesTo signs, a detached "
                        "ES256 JWS with x5c, inline), which the server requires and verifies",
            "patients": patients,
            "submissions": submit.ok,
            "retrievals": retrieve.ok,
            "baseline_retrievals": baseline.ok,
            "max_seconds_per_phase": opts.seconds,
            "warmup_requests_per_phase": 2 * opts.clients,
            "rate_limit_per_minute": 100_000_000,
            "token": "SMART Backend Services, private_key_jwt with x5c, scope " + SCOPE,
        },
        "machine": machine_info,
        "quiet_machine": not busy and other_cores <= QUIET_OTHER_CORES
        and capacity_ok(machine_info["cpu_capacity_cores_at_start"])
        and capacity_ok(machine_info["cpu_capacity_cores_at_end"]),
        "other_cores_max": other_cores,
        "other_test_runs": busy,  # seen at the start or around a timed phase
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "goals": goals,
        "goals_met": all(g["met"] for g in goals.values()) and not failed,
        "failed_requests": failed,
        "details": {
            "submit": submit_s,
            "retrieve": retrieve_s,
            "retrieve_paced": paced_s,
            "baseline": baseline.summary(),
            "aes_gcm_1mb": aes,
            "server_tracebacks": errors,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    d = result["details"]
    rows = [("", "per s", "p50 ms", "p99 ms", "cores: server", "postgres", "ended",
             "clients", "other", "server CPU ms/req")]
    for label, key in (("ITI-65 submit", "submit"), ("ITI-68 retrieve", "retrieve"),
                       ("ITI-68 paced", "retrieve_paced"), ("baseline retrieve", "baseline")):
        s = d[key]
        rows.append((label, f"{s['per_s']:,.1f}", f"{s['p50_ms']}", f"{s['p99_ms']}",
                     f"{s['cores_busy']['server']}", f"{s['cores_busy']['postgres']}",
                     f"{s['cores_busy']['ended']}", f"{s['cores_busy']['clients']}",
                     f"{s['cores_busy']['other']}",
                     f"{s['cpu_ms_per_request']['server']}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    say("")
    for row in rows:
        say("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    aes = d["aes_gcm_1mb"]
    say(f"AES-256-GCM 1 MB: seal {aes['seal_mb_per_s']:,.0f} MB/s, openssl "
        f"{aes['openssl_mb_per_s']:,.0f} MB/s")
    say(f"submit per core: {result['submit_per_core']} ({result['submit_per_core_divisor']}); "
        f"per CPU of the machine ({result['machine']['cpu_count']}): {result['submit_per_cpu']}")
    say(f"retrieval ÷ baseline: {result['retrieve_ratio']} by throughput, "
        f"{result['retrieve_ratio_by_server_cpu']} by server CPU per request")
    for name, goal in result["goals"].items():
        say(f"  {'MET   ' if goal['met'] else 'MISSED'} {name} = {goal['value']} "
            f"(goal {goal['goal']})")
    if result["failed_requests"]:
        say(f"  {result['failed_requests']} requests FAILED (see details)")
    if not result["quiet_machine"]:
        m = result["machine"]
        say(f"  (the machine was not quiet: other test runs {len(result['other_test_runs'])}, "
            f"up to {result['other_cores_max']} cores used by other processes in a phase, CPU "
            f"capacity {m['cpu_capacity_cores_at_start']} / {m['cpu_capacity_cores_at_end']} "
            f"cores at start / end)")


if __name__ == "__main__":
    sys.exit(main())
