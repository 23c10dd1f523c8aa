"""sqlmap (PyPI ``sqlmap``) against every parameterised endpoint of a real ``carevault serve``,
on SQLite and on PostgreSQL, with the rate limit raised for the run and a real bearer token.

What level 5 / risk 3 costs here (measured on this 2-core machine, ``--time-sec 1``): about
165 s and 5,000 requests for ONE parameter. Every endpoint at that depth would take over an
hour, so:

- ``DEEP`` (level 5, risk 3), the representative subset of the issue, one parameter each
  (``Target.deep``), split over the two backends so that each takes about eight minutes:
  Patient search, DocumentReference search and ``$ihe-pix`` on SQLite; AuditEvent search,
  ``/audit/entries`` and the ``/oauth/token`` form on PostgreSQL;
- ``BROAD`` (level 2, risk 2: about 10 s a parameter), every parameterised endpoint, the subset
  included, on both backends.

Measured: SQLite about 10 minutes (broad 4.6, deep 5.8), PostgreSQL about 13 (broad 5, deep 8.2).

Each run must end with sqlmap's "do not appear to be injectable" and without any injection
point; the traffic it logged must hold answers that reached the handler (a 200; the token endpoint's
code grant a 400 invalid_grant, after looking the code up), so that an expired token or a
refusal in front of the SQL cannot pass for a clean result. sqlmap downloads
nothing (no ``--update``); its files stay in the test's folder. The planted endpoint at the end
(string-formatted SQL on a throwaway table, in this file only) is reported injectable by the
same invocation.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import build
from carevault.services import patient_apps, tokens
from support.attacked import AttackedWorld, seed, seeded_settings
from support.requirements import POSTGRESQL, missing
from support.tokens import professional_token

pytestmark = pytest.mark.security

SQLMAP = str(Path(sys.executable).parent / "sqlmap")
SCANNER_TOKEN_LIFETIME = timedelta(hours=1)
CAREVAULT = str(Path(sys.executable).parent / "carevault")
DEEP = ("--level", "5", "--risk", "3")
BROAD = ("--level", "2", "--risk", "2")
RUN_SECONDS = 900  # a guard against a hung run, not a measurement


@dataclass
class Target:
    name: str
    path: str  # with its query string
    parameters: str  # sqlmap -p
    caller: str = "professional"  # whose token: professional, patient or none
    form: dict[str, str] | None = None  # a POST form body
    deep: str = ""  # the one parameter tested at level 5 / risk 3, for the subset


def targets(attacked: AttackedWorld) -> list[Target]:
    patient = attacked.known.ids["Patient"]
    practitioner = attacked.known.ids["Practitioner"]
    national = attacked.known.query["sourceIdentifier"]
    q = urlencode
    return [
        Target("Patient search", "/fhir/Patient?" + q(
            {"family": "muller", "given": "anne", "birthdate": "1980", "identifier": national}),
            "family,given,birthdate,identifier", deep="family"),
        Target("DocumentReference search", "/fhir/DocumentReference?" + q(
            {"patient": f"Patient/{patient}", "category": "11488-4", "status": "current",
             "author": f"Practitioner/{practitioner}"}), "patient,category,status,author",
            deep="category"),
        Target("$ihe-pix", "/fhir/Patient/$ihe-pix?" + q({"sourceIdentifier": national}),
               "sourceIdentifier", deep="sourceIdentifier"),
        Target("AuditEvent search", "/fhir/AuditEvent?" + q(
            {"patient": f"Patient/{patient}", "agent": f"Practitioner/{practitioner}",
             "date": "ge2020"}), "agent,date", caller="patient", deep="agent"),
        # In dev the developer's loopback reads the entries (the server is in dev).
        Target("/audit/entries", "/audit/entries?start=0&end=5&stream=clinical",
               "start,end,stream", caller="none", deep="stream"),
        # A code grant: the code is looked up in the database (sqlmap gives up on a 401, which
        # the client-credentials form answers to a forged assertion before any SQL).
        Target("/oauth/token", "/oauth/token", "code,client_id,redirect_uri,code_verifier",
               caller="none", deep="code",
               form={"grant_type": "authorization_code", "code": "abcdef123456",
                     "client_id": "app-1", "redirect_uri": "https://app.example/callback",
                     "code_verifier": "v" * 50}),
        Target("Practitioner search", "/fhir/Practitioner?" + q(
            {"name": "attack", "identifier": "HP-ATTACK-1"}), "name,identifier"),
        Target("PractitionerRole search", "/fhir/PractitionerRole?" + q(
            {"role": "physician", "practitioner": practitioner}), "role,practitioner"),
        Target("Organization search", "/fhir/Organization?" + q({"name": "hopital"}), "name"),
        Target("List search", "/fhir/List?" + q(
            {"patient": f"Patient/{patient}", "code": "submissionset"}), "patient,code"),
        Target("Consent search", "/fhir/Consent?" + q(
            {"patient": f"Patient/{patient}", "status": "active"}), "patient,status",
            caller="patient"),
        Target("Encounter search", "/fhir/Encounter?" + q({"patient": f"Patient/{patient}"}),
               "patient", caller="patient"),
        Target("Communication search", "/fhir/Communication?" + q(
            {"patient": f"Patient/{patient}"}), "patient", caller="patient"),
        Target("ValueSet $expand", "/fhir/ValueSet/$expand?" + q(
            {"url": "https://carevault.lu/fhir/ValueSet/xds-typecode", "filter": "rapport"}),
            "filter"),
        Target("$access-history", f"/fhir/Patient/{patient}/$access-history?_count=5",
               "_count", caller="patient"),
        Target("/audit/proof/inclusion", "/audit/proof/inclusion?leaf_index=0&tree_size=1",
               "leaf_index,tree_size", caller="none"),
    ]


DEEP_ON = {
    "sqlite": {"Patient search", "DocumentReference search", "$ihe-pix"},
    "postgresql": {"AuditEvent search", "/audit/entries", "/oauth/token"},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    base: str
    attacked: AttackedWorld
    backend: str
    folder: Path

    def headers(self, caller: str) -> list[str]:
        """A token minted now, living an hour: sqlmap cannot renew one, and a deep run on a
        busy machine outlasts the production five minutes (it then stops at the first 401,
        its target untested). Minted in this process, checked by the server like any other."""
        platform = self.attacked.platform
        with mock.patch.object(tokens, "TOKEN_LIFETIME", SCANNER_TOKEN_LIFETIME), \
                mock.patch.object(patient_apps, "TOKEN_LIFETIME", SCANNER_TOKEN_LIFETIME):
            if caller == "professional":
                token = professional_token(platform, identifier="HP-ATTACK-1")
            elif caller == "patient":
                token = self.attacked.patient.fresh()
            else:
                return []
        return [f"--headers=Authorization: Bearer {token}"]


def _database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'carevault.db'}"
        return
    admin_url = make_url(os.environ.get("CAREVAULT_TEST_DATABASE_URL",
                                        "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    name = f"carevault_sqlmap_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        missing(POSTGRESQL, f"PostgreSQL is unreachable ({str(error).splitlines()[0]})")
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real server (``carevault serve``) on a seeded database, rate limit raised."""
    folder = tmp_path_factory.mktemp(f"sqlmap-{request.param}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    databases = _database(request.param, folder)
    url = next(databases)
    engine = connect(url)
    upgrade(engine)
    settings = seeded_settings(url, folder, public_base_url=base)
    attacked = seed(build(settings, engine))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
    env.update({"CAREVAULT_ENVIRONMENT": "dev", "CAREVAULT_DATABASE_URL": url,
                "CAREVAULT_KEY_SOURCE": settings.key_source,
                "CAREVAULT_PUBLIC_BASE_URL": base,
                "CAREVAULT_RATE_LIMIT_PER_MINUTE": "100000000",
                "CAREVAULT_INTROSPECTION_RATE_PER_MINUTE": "100000000"})
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen([CAREVAULT, "serve", "--port", str(port)], env=env, cwd=folder,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                pytest.fail((folder / "server.log").read_text())
            time.sleep(0.2)
        yield Served(base, attacked, request.param, folder)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        engine.dispose()
        for _ in databases:  # drops the PostgreSQL database
            pass


def sqlmap(url: str, parameters: str, depth: tuple[str, ...], folder: Path,
           extra: list[str]) -> tuple[str, str]:
    """Run sqlmap once; its output and the traffic it logged."""
    traffic = folder / "traffic.txt"
    traffic.unlink(missing_ok=True)
    done = subprocess.run(
        [SQLMAP, "-u", url, "-p", parameters, *depth, "--batch", "--disable-coloring",
         "--flush-session", "--time-sec", "1", "--output-dir", str(folder / "out"),
         "-t", str(traffic), *extra],
        capture_output=True, text=True, timeout=RUN_SECONDS, check=False,
        env={**os.environ, "HOME": str(folder)}, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return done.stdout, traffic.read_text(errors="replace") if traffic.exists() else ""


def injection_found(output: str) -> bool:
    return ("identified the following injection point" in output
            or re.search(r"parameter '[^']+' (is|seems to be) .*injectable", output) is not None)


@pytest.mark.slow  # about 23 minutes: `make security` runs it, `make test` does not
@pytest.mark.parametrize("deep", [False, True], ids=["broad", "deep"])
def test_nothing_is_injectable(served: Served, deep: bool) -> None:
    chosen = [t for t in targets(served.attacked)
              if not deep or t.name in DEEP_ON[served.backend]]
    for target in chosen:
        folder = served.folder / re.sub(r"\W+", "-", f"{target.name}-{deep}")
        folder.mkdir()
        extra = served.headers(target.caller)
        if target.form is not None:
            extra.append(f"--data={urlencode(target.form)}")
        reached = httpx.request(
            "POST" if target.form else "GET", served.base + target.path, data=target.form,
            headers=dict([h.removeprefix("--headers=").split(": ", 1)]) if (
                h := next(iter(extra), "")).startswith("--headers=") else {})
        expected = 400 if target.name == "/oauth/token" else 200
        assert reached.status_code == expected, (target.name, reached.text)
        output, traffic = sqlmap(served.base + target.path,
                                 target.deep if deep else target.parameters,
                                 DEEP if deep else BROAD, folder, extra)
        assert not injection_found(output), f"{target.name}:\n{output[-4000:]}"
        assert "do not appear to be injectable" in output, f"{target.name}:\n{output[-4000:]}"
        assert re.search(rf"HTTP response \[#\d+\] \({expected} ", traffic), target.name


# --- planted: sqlmap reports an injectable endpoint ------------------------------------------


def planted_app(database: Path) -> Starlette:
    """A test-only endpoint with a planted SQL injection on a throwaway SQLite table."""
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.executemany("INSERT INTO items VALUES (?, ?)",
                               [(1, "aspirin"), (2, "insulin"), (3, "heparin")])

    async def item(request: Request) -> PlainTextResponse:
        wanted = request.query_params.get("id", "1")
        with sqlite3.connect(database) as connection:
            try:  # the planted bug: the parameter is formatted into the statement
                rows = connection.execute(
                    f"SELECT name FROM items WHERE id = {wanted}").fetchall()
            except sqlite3.Error:
                return PlainTextResponse("error", status_code=500)
        return PlainTextResponse(", ".join(r[0] for r in rows) or "none")

    return Starlette(routes=[Route("/items", item)])


def test_a_planted_injection_is_reported(tmp_path: Path) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(planted_app(tmp_path / "planted.db"),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        output, _traffic = sqlmap(f"http://127.0.0.1:{port}/items?id=1", "id", BROAD,
                                  tmp_path, [])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert injection_found(output), output[-4000:]
