"""Killing the server (SIGKILL) in the middle of 1,000 concurrent ITI-65 submissions loses no
acknowledged document and leaves no half-written one — on SQLite and on PostgreSQL.

A real ``carevault serve`` runs as a subprocess on the test database (the ``database_url``
fixture: a fresh SQLite file, or the session's PostgreSQL database emptied), with its own key
file. Concurrent clients submit single-document Provide Document Bundles; once a few hundred
have been acknowledged (``200`` with the DocumentReference's location) the process is killed
with no chance to clean up. Each submission ends up in exactly one of four groups:

- *acknowledged*: it got a 200 and the id of its DocumentReference;
- *refused*: it got any other answer (it must have stored nothing);
- *in flight*: it was sent before the kill and got no answer (it may or may not be stored);
- *not sent*: its turn came after the kill.

The server is then started again on the same database and key file, and the test checks that
every acknowledged document is found (ITI-67) and retrieved (ITI-68) with the exact bytes sent;
that every document row has exactly one metadata row, one content row and one SubmissionSet
(read from the tables directly); that every stored document was acknowledged or in flight; and
that ``carevault audit verify`` accepts the clinical log.

SQLite is as practical as PostgreSQL here: a SIGKILL ends the process, not the machine, so
what SQLite committed to its WAL is in the file (``synchronous=FULL`` in any case) and the next
connection recovers the WAL; uncommitted frames are ignored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from support.authorities import presence_code_in
from support.builders import national_id
from support.mhd import (
    DSG_MEDIA_TYPE,
    FHIR_JSON,
    Signer,
    backend_token,
    bundle_ids,
    created,
    encounter,
    next_link,
    pdf,
    provide_bundle,
)

pytestmark = pytest.mark.e2e

CAREVAULT = str(Path(sys.executable).parent / "carevault")
SUBMISSIONS = 1000
CONCURRENCY = 48
KILL_AFTER_ACKNOWLEDGED = 300
PATIENTS = 4
PRACTITIONER = "HP-CRASH-1"
NATIONAL_ID_SYSTEM = "https://carevault.lu/fhir/sid/matricule"
STARTUP_SECONDS = 30.0
REQUEST_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """``carevault serve`` on a given database and key file, started and stopped on demand."""

    workdir: Path
    database_url: str
    starts: int = 0
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
        env.update({
            "CAREVAULT_ENVIRONMENT": "dev",
            "CAREVAULT_DATABASE_URL": self.database_url,
            "CAREVAULT_KEY_SOURCE": f"file:{self.workdir / 'var' / 'carevault.key'}",
            "CAREVAULT_PUBLIC_BASE_URL": self.base_url if self.port else "http://127.0.0.1:8000",
            # One client address sends everything here; the limit is not what is tested.
            "CAREVAULT_RATE_LIMIT_PER_MINUTE": "1000000",
        })
        return env

    def cli(self, *args: str) -> Any:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (
            f"`carevault {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return json.loads(done.stdout) if "--json" in args else done.stdout

    def log(self) -> str:
        return "\n".join(
            f"--- server start {n} ---\n"
            + (self.workdir / f"server-{n}.err").read_text(errors="replace")[-6000:]
            for n in range(1, self.starts + 1))

    def start(self) -> None:
        self.starts += 1
        self.port = _free_port()
        err = self.workdir / f"server-{self.starts}.err"
        with (self.workdir / f"server-{self.starts}.out").open("wb") as out, \
                err.open("wb") as errors:
            self.process = subprocess.Popen(
                [CAREVAULT, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.workdir, env=self.env(), stdout=out, stderr=errors)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server did not answer /health in {STARTUP_SECONDS:.0f} s\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no rollback on the server's side."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@dataclass
class Submission:
    """One ITI-65 request: a report and its author's signature (IHE DSG), both documents."""

    index: int
    patient_id: str
    unique_id: str
    content: bytes
    signature_unique_id: str
    signature: bytes
    body: bytes
    outcome: str = "not sent"  # acknowledged, refused, in flight, not sent
    status: int | None = None
    document_ids: frozenset[str] = frozenset()  # the DocumentReferences it was told of
    detail: str = ""

    def expected(self) -> dict[str, bytes]:
        """The bytes each of its documents must give back, by uniqueId."""
        return {self.unique_id: self.content, self.signature_unique_id: self.signature}


@dataclass
class Run:
    submissions: list[Submission]
    killed_at_acknowledged: int = 0
    acknowledged: int = 0
    killed: bool = False
    errors: Counter[str] = field(default_factory=Counter)


@pytest.fixture
def carevault(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """An initialized CareVault on the test database: key file, PKI, one physician holding a
    certificate; the server itself is started by the test."""
    workdir = tmp_path / "carevault"
    (workdir / "var").mkdir(parents=True)
    server = ServerProcess(workdir, database_url)
    server.cli("init")
    server.cli("pki", "init")
    try:
        yield server
    finally:
        server.stop()


def _patients_and_author(server: ServerProcess) -> tuple[list[str], str]:
    practitioner = server.cli("directory", "add-practitioner", "--identifier", PRACTITIONER,
                              "--family", "Weber", "--given", "Anne", "--profession",
                              "physician", "--specialty", "general-practice", "--json")
    server.cli("pki", "issue-practitioner", practitioner["id"], "--out",
               str(server.workdir / "card"))
    patients = []
    for n in range(PATIENTS):
        patient = server.cli("directory", "add-patient", "--national-id",
                             national_id(700 + n, date(1971, 3, 14 + n)), "--family",
                             f"Crash{n}", "--given", "Jean", "--birthdate",
                             f"1971-03-{14 + n:02d}", "--gender", "male", "--json")
        patients.append(patient["id"])
    return patients, practitioner["id"]


def _submissions(patients: list[str], author: str, signer: Signer) -> list[Submission]:
    made = []
    run = time.time_ns()
    for n in range(SUBMISSIONS):
        patient_id = patients[n % len(patients)]
        content = pdf(f"crash submission {n:04d} of {SUBMISSIONS} for {patient_id}")
        unique_id, signature_unique_id = (f"urn:oid:1.2.3.999.{run}.{n}.{k}" for k in (1, 2))
        signature = signer.detached_jws(content)
        bundle = provide_bundle(patient_id, author, content, unique_id=unique_id,
                                title=f"Consultation {n}", signature=signature,
                                signature_unique_id=signature_unique_id)
        made.append(Submission(n, patient_id, unique_id, content, signature_unique_id,
                               signature, json.dumps(bundle, separators=(",", ":")).encode()))
    return made


async def _fire(server: ServerProcess, token: str, run: Run) -> None:
    """``CONCURRENCY`` clients share the submissions; the one whose answer is the
    ``KILL_AFTER_ACKNOWLEDGED``-th acknowledgement kills the server at once."""
    queue: asyncio.Queue[Submission] = asyncio.Queue()
    for submission in run.submissions:
        queue.put_nowait(submission)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON,
               "Accept": FHIR_JSON}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            submission = queue.get_nowait()
            if run.killed:
                continue  # stays "not sent"
            submission.outcome = "in flight"
            try:
                answer = await http.post(f"{server.base_url}/fhir", content=submission.body,
                                         headers=headers)
            except httpx.TransportError as error:
                run.errors[type(error).__name__] += 1
                continue  # no answer: stays "in flight"
            submission.status = answer.status_code
            if answer.status_code == 200:
                ids = frozenset(created(answer.json(), "DocumentReference"))
                assert len(ids) == 2, answer.text
                submission.outcome, submission.document_ids = "acknowledged", ids
                run.acknowledged += 1
                if run.acknowledged >= KILL_AFTER_ACKNOWLEDGED and not run.killed:
                    server.kill()
                    run.killed, run.killed_at_acknowledged = True, run.acknowledged
            else:
                submission.outcome, submission.detail = "refused", answer.text[:300]

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_SECONDS) as http:
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))


def _stored_rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The document tables as they are on disk, read with plain SQL."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in connection.execute(text(sql))]
            return {
                "document": rows("SELECT id, patient_id FROM document"),
                "document_metadata": rows(
                    "SELECT document_id, master_identifier, status, sha256, size "
                    "FROM document_metadata"),
                "document_content": rows("SELECT document_id, length(ciphertext) "
                                         "FROM document_content"),
                "submission_set": rows("SELECT id, patient_id, document_ids FROM submission_set"),
            }
    finally:
        engine.dispose()


async def _retrieve_all(base_url: str, token: str, ids: list[str]) -> dict[str, httpx.Response]:
    limits = httpx.Limits(max_connections=16)
    found: dict[str, httpx.Response] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_SECONDS,
                                 headers=headers) as http:
        semaphore = asyncio.Semaphore(16)

        async def one(document_id: str) -> None:
            async with semaphore:
                found[document_id] = await http.get(f"{base_url}/fhir/Binary/{document_id}")

        await asyncio.gather(*(one(i) for i in ids))
    return found


def _find_all(http: httpx.Client, patient_id: str) -> list[str]:
    """ITI-67 for one patient, every page."""
    ids: list[str] = []
    url: str | None = "/fhir/DocumentReference"
    params: dict[str, str] | None = {"patient": f"Patient/{patient_id}", "_count": "100"}
    while url is not None:
        page = http.get(url, params=params)
        assert page.status_code == 200, page.text
        ids += bundle_ids(page.json())
        url, params = next_link(page.json()), None
    return ids


def test_sigkill_during_1000_concurrent_submissions_loses_nothing_acknowledged(
        carevault: ServerProcess, database_url: str) -> None:
    server = carevault
    patients, author = _patients_and_author(server)
    server.start()
    token = backend_token(server.base_url, server.workdir / "card", PRACTITIONER)
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_SECONDS, headers={
            "Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}) as http:
        for patient_id in patients:  # the care relationship that lets the physician publish
            code = presence_code_in(database_url, patient_id)
            seen = http.post("/fhir/Encounter", json=encounter(patient_id, author, code))
            assert seen.status_code == 201, seen.text

    signer = Signer(server.workdir / "card")
    run = Run(_submissions(patients, author, signer))
    asyncio.run(_fire(server, token, run))
    outcomes = Counter(s.outcome for s in run.submissions)
    summary = (f"killed at {run.killed_at_acknowledged} acknowledged; outcomes "
               f"{dict(outcomes)}, transport errors {dict(run.errors)}")
    statuses = Counter(s.status for s in run.submissions)
    if not run.killed:
        server.stop()
        pytest.fail(f"the server was never killed: {summary}, statuses {dict(statuses)}\n"
                    f"{server.log()}")
    assert server.process is not None
    assert server.process.wait(timeout=15) == -signal.SIGKILL
    assert outcomes["not sent"] > 0, f"the kill came too late to be in the middle: {summary}"
    refused = [s for s in run.submissions if s.outcome == "refused"]
    assert not refused, (
        f"{len(refused)} submissions were refused before the kill, e.g. "
        f"{refused[0].status} {refused[0].detail}\n{summary}\n{server.log()}")

    server.start()  # same database, same key file
    stored = _stored_rows(database_url)
    documents = {row[0]: row[1] for row in stored["document"]}
    metadata = Counter(row[0] for row in stored["document_metadata"])
    content = Counter(row[0] for row in stored["document_content"])
    # No half-written document: every document has exactly one metadata and one content row,
    # and no metadata or content exists without its document.
    assert set(metadata) == set(documents) and set(metadata.values()) <= {1}, summary
    assert set(content) == set(documents) and set(content.values()) <= {1}, summary

    by_unique_id = {u: s for s in run.submissions for u in s.expected()}
    stored_ids = {row[1]: row[0] for row in stored["document_metadata"]}  # uniqueId -> id
    unknown = set(stored_ids) - set(by_unique_id)
    assert not unknown, f"documents nobody submitted: {sorted(unknown)[:3]}"
    kept = {s.index: s for u, s in by_unique_id.items() if u in stored_ids}
    # No half-written submission either: a report is stored with its signature and its
    # SubmissionSet, or none of them is.
    for submission in kept.values():
        assert set(submission.expected()) <= set(stored_ids), (
            f"submission {submission.index} ({submission.outcome}) is partly stored")
    sets = [frozenset(json.loads(row[2])) for row in stored["submission_set"]]
    assert sorted(sets, key=sorted) == sorted(
        (frozenset(stored_ids[u] for u in s.expected()) for s in kept.values()), key=sorted), (
        f"each stored submission has exactly one SubmissionSet listing its documents; {summary}")
    stored_from = Counter(s.outcome for s in kept.values())
    assert set(stored_from) <= {"acknowledged", "in flight"}, (
        f"stored documents came from {dict(stored_from)}; {summary}")
    print(f"\n{summary}; stored submissions: {dict(stored_from)}")
    acknowledged = [s for s in run.submissions if s.outcome == "acknowledged"]
    assert len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED
    lost = [s for s in acknowledged
            if frozenset(stored_ids.get(u) for u in s.expected()) != s.document_ids]
    assert not lost, (
        f"{len(lost)} acknowledged submissions are not stored under the ids they were given, "
        f"e.g. submission {lost[0].index} ({sorted(lost[0].document_ids)}); {summary}")
    for unique_id, document_id in stored_ids.items():
        assert documents[document_id] == by_unique_id[unique_id].patient_id

    # The API agrees with the tables: ITI-67 finds exactly what is stored, per patient.
    token = backend_token(server.base_url, server.workdir / "card", PRACTITIONER)
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_SECONDS,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        for patient_id in patients:
            found = _find_all(http, patient_id)
            assert len(found) == len(set(found))
            assert set(found) == {d for d, p in documents.items() if p == patient_id}, summary
    # ITI-68: every stored document (acknowledged, or committed while its answer was lost)
    # gives back exactly the bytes that were sent.
    retrieved = asyncio.run(_retrieve_all(server.base_url, token, list(documents)))
    for unique_id, document_id in stored_ids.items():
        answer = retrieved[document_id]
        assert answer.status_code == 200, answer.text
        expected = by_unique_id[unique_id].expected()[unique_id]
        assert answer.content == expected, f"{document_id} does not give back its bytes"
        assert answer.headers["content-type"] == (
            DSG_MEDIA_TYPE if unique_id.endswith(".2") else "application/pdf")

    # The audit log survived the kill: the verifier recomputes it and checks every tree head.
    server.stop()
    verified = server.cli("audit", "verify", "--stream", "clinical")
    assert "verified" in verified
