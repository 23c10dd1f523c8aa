"""The ``carevault`` command line, run as an operator runs it: the installed script, a real
SQLite database and key file under a private working directory, and nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from carevault.domain.national_id import make_luxembourg_national_id

CAREVAULT = str(Path(sys.executable).parent / "carevault")
TIMEOUT = 300.0


@dataclass
class Cli:
    workdir: Path
    env: dict[str, str]

    @property
    def key_file(self) -> Path:
        return self.workdir / "var" / "carevault.key"

    def run(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAREVAULT, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
    var = workdir / "var"
    env.update(
        {
            "CAREVAULT_ENVIRONMENT": "dev",
            "CAREVAULT_DATABASE_URL": f"sqlite:///{var / 'carevault.db'}",
            "CAREVAULT_KEY_SOURCE": f"file:{var / 'carevault.key'}",
            "CAREVAULT_PUBLIC_BASE_URL": "http://127.0.0.1:8000",
            "COLUMNS": "200",  # help text unwrapped, whatever the terminal
        }
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, base_env(tmp_path))


@pytest.fixture
def ready(cli: Cli) -> Cli:
    cli.ok("init")
    return cli


def assert_one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert "Traceback" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def patient_args(national_id: str) -> list[str]:
    return [
        "directory",
        "add-patient",
        "--national-id",
        national_id,
        "--family",
        "Weber",
        "--given",
        "Marie Claire",
        "--birthdate",
        "1985-06-15",
        "--gender",
        "female",
    ]


# --- init ------------------------------------------------------------------------------------


def test_init_twice_keeps_the_key_file(cli: Cli) -> None:
    first = cli.ok("init")
    assert "created" in first.stdout
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600
    key = cli.key_file.read_bytes()

    second = cli.ok("init")

    assert "already present" in second.stdout
    assert "up to date" in second.stdout
    assert cli.key_file.read_bytes() == key
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_private_var_directory_and_database(cli: Cli) -> None:
    """Pentest #12: the database holds everyone's records; only its owner may read it, even
    under the usual umask 022."""
    previous = os.umask(0o022)  # the child inherits it
    try:
        cli.ok("init")
    finally:
        os.umask(previous)
    var = cli.workdir / "var"
    assert _mode(var) == 0o700
    assert _mode(var / "carevault.db") == 0o600
    assert _mode(cli.key_file) == 0o600
    for path in var.iterdir():  # -wal, -shm, the lease file…, if any is left
        assert _mode(path) & 0o077 == 0, path


def test_connect_creates_the_database_and_its_wal_private(tmp_path: Path) -> None:
    from sqlalchemy import text

    from carevault.adapters.storage.database import connect

    database = tmp_path / "fresh" / "var" / "carevault.db"
    previous = os.umask(0o022)
    try:
        engine = connect(f"sqlite:///{database}")
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
            # While a connection is open, SQLite keeps its write-ahead log and shared memory.
            wal, shm = (database.with_name(database.name + s) for s in ("-wal", "-shm"))
            assert wal.exists() and shm.exists()
            for path in (database, wal, shm):
                assert _mode(path) == 0o600, path
        engine.dispose()
    finally:
        os.umask(previous)
    assert _mode(database.parent) == 0o700
    # A directory that already exists is the operator's: its mode is left alone.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    connect(f"sqlite:///{shared / 'other.db'}").dispose()
    assert _mode(shared) == 0o755
    assert _mode(shared / "other.db") == 0o600


# --- directory -------------------------------------------------------------------------------


def test_organization_then_practitioner_then_list(ready: Cli) -> None:
    organization = ready.json(
        "directory", "add-organization", "--identifier", "ORG-T1", "--name", "Hôpital Test"
    )
    assert organization["resourceType"] == "Organization"
    assert organization["resource"]["name"] == "Hôpital Test"
    assert organization["id"]

    practitioner = ready.json(
        "directory",
        "add-practitioner",
        "--identifier",
        "HP-1",
        "--family",
        "Muller",
        "--given",
        "Anne",
        "--profession",
        "pharmacist",
        "--organization",
        organization["id"],
    )
    assert practitioner["resourceType"] == "Practitioner"
    assert practitioner["id"]
    assert practitioner["role_id"]
    assert practitioner["resource"]["name"][0]["family"] == "Muller"

    listed = ready.json("directory", "list", "practitioners")
    assert listed["total"] == 1
    (row,) = listed["entries"]
    assert row["id"] == practitioner["id"]
    assert "HP-1" in row["identifier"]
    assert row["name"] == "Anne Muller"

    organizations = ready.json("directory", "list", "organizations")
    assert [o["id"] for o in organizations["entries"]] == [organization["id"]]
    assert organizations["entries"][0]["name"] == "Hôpital Test"


def test_practitioner_with_unknown_organization_is_refused(ready: Cli) -> None:
    done = ready.run(
        "directory",
        "add-practitioner",
        "--identifier",
        "HP-2",
        "--family",
        "Muller",
        "--given",
        "Anne",
        "--profession",
        "pharmacist",
        "--organization",
        "no-such-organization",
    )

    assert_one_line_error(done)
    assert ready.json("directory", "list", "practitioners")["total"] == 0


def test_add_patient_then_duplicate_is_refused(ready: Cli) -> None:
    national_id = make_luxembourg_national_id(date(1985, 6, 15), 42)

    first = ready.json(*patient_args(national_id))

    assert first["resourceType"] == "Patient"
    assert first["id"]
    values = [i["value"] for i in first["resource"]["identifier"]]
    assert national_id in values

    again = ready.run(*patient_args(national_id))

    line = assert_one_line_error(again)
    assert "already identifies" in line
    assert first["id"] in line
    listed = ready.json("directory", "list", "patients")
    assert listed["total"] == 1


def test_add_patient_plain_output(ready: Cli) -> None:
    national_id = make_luxembourg_national_id(date(1985, 6, 15), 43)

    done = ready.ok(*patient_args(national_id))

    assert done.stdout.startswith("Patient/")
    assert "registered" in done.stdout


def test_invalid_national_number_is_a_readable_error(ready: Cli) -> None:
    good = make_luxembourg_national_id(date(1985, 6, 15), 44)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)

    done = ready.run(*patient_args(bad))

    line = assert_one_line_error(done)
    assert "check digit" in line
    assert ready.json("directory", "list", "patients")["total"] == 0


def test_malformed_birthdate_is_a_readable_error(ready: Cli) -> None:
    args = patient_args(make_luxembourg_national_id(date(1985, 6, 15), 45))
    args[args.index("--birthdate") + 1] = "15/06/1985"

    line = assert_one_line_error(ready.run(*args))

    assert "--birthdate" in line


def test_unknown_profession_lists_known_professions(ready: Cli) -> None:
    done = ready.run(
        "directory",
        "add-practitioner",
        "--identifier",
        "HP-9",
        "--family",
        "Muller",
        "--given",
        "Anne",
        "--profession",
        "wizard",
    )

    line = assert_one_line_error(done)
    assert "wizard" in line
    for known in ("physician", "pharmacist", "nurse"):
        assert known in line


def test_list_unknown_kind_is_refused(ready: Cli) -> None:
    line = assert_one_line_error(ready.run("directory", "list", "hamsters"))
    assert "patients" in line


# --- demo ------------------------------------------------------------------------------------


def test_demo_then_if_empty(ready: Cli) -> None:
    accounts_file = ready.workdir / "var" / "demo-accounts.json"

    loaded = ready.ok("demo", "--patients", "50", "--professionals", "10")

    assert "50 patients" in loaded.stdout
    accounts = json.loads(accounts_file.read_text(encoding="utf-8"))
    assert accounts["counts"]["patients"] == 50
    assert accounts["counts"]["practitioners"] == 10
    assert accounts["patients"]
    assert accounts["professionals"]
    for patient in accounts["patients"]:
        assert patient["patient_id"]
        assert len(patient["national_id"]) == 13
    for professional in accounts["professionals"]:
        assert professional["practitioner_id"]
        assert professional["profession"]
    # The demo patient's file says how to print a sign-in code with what the venv has.
    portal = accounts["patients"][0]["portal"]
    command = portal["how"].split(" with ", 1)[1]
    assert "oathtool" not in portal["how"]
    assert command.startswith(".venv/bin/python -c ")
    code = subprocess.run(
        [sys.executable, "-c", command.removeprefix(".venv/bin/python -c ").strip('"')],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    import pyotp

    totp = pyotp.TOTP(portal["totp_secret"])
    assert code.isdigit() and len(code) == 6
    assert totp.verify(code, valid_window=1)

    again = ready.ok("demo", "--if-empty", "--patients", "50", "--professionals", "10")

    assert "already loaded" in again.stdout
    assert ready.json("directory", "list", "patients")["total"] == 50

    refused = ready.run("demo", "--patients", "50", "--professionals", "10")
    assert refused.returncode == 1
    assert "already loaded" in refused.stdout + refused.stderr
    assert ready.json("directory", "list", "patients")["total"] == 50


def _links(accounts: dict[str, Any]) -> list[str]:
    people = accounts["patients"] + accounts["professionals"]
    found = [url for person in people for url in person["try"]]
    found += [p["portal"]["sign_in"] for p in accounts["patients"] if "portal" in p]
    return found


def test_demo_links_use_the_port_served(ready: Cli) -> None:
    """In dev without CAREVAULT_PUBLIC_BASE_URL, `demo --port` (as `make run PORT=…` passes
    it) writes the accounts file's links with that port; loaded again for another port, the
    existing file's links follow; a public address that is set wins."""
    del ready.env["CAREVAULT_PUBLIC_BASE_URL"]
    accounts_file = ready.workdir / "var" / "demo-accounts.json"

    ready.ok("demo", "--patients", "20", "--professionals", "5", "--port", "8100")

    first = json.loads(accounts_file.read_text("utf-8"))
    links = _links(first)
    assert any(p.get("portal") for p in first["patients"])  # the sign-in page is among them
    assert len(links) >= 2 * (len(first["patients"]) + len(first["professionals"])) + 1
    assert all(link.startswith("http://127.0.0.1:8100/") for link in links), links

    again = ready.ok("demo", "--if-empty", "--patients", "20", "--professionals", "5",
                     "--port", "8200")
    assert "already loaded" in again.stdout
    second = json.loads(accounts_file.read_text("utf-8"))
    assert all(link.startswith("http://127.0.0.1:8200/") for link in _links(second))
    assert [link.split(":8200", 1)[1] for link in _links(second)] == [
        link.split(":8100", 1)[1] for link in links]
    assert second["patients"][0]["portal"]["password"] == first["patients"][0]["portal"][
        "password"]  # the same people: only the links moved
    assert stat.S_IMODE(accounts_file.stat().st_mode) == 0o600

    ready.env["CAREVAULT_PUBLIC_BASE_URL"] = "https://carevault.example.lu/"
    ready.ok("demo", "--if-empty", "--port", "8300")
    third = json.loads(accounts_file.read_text("utf-8"))
    assert all(link.startswith("https://carevault.example.lu/") for link in _links(third))
    assert not any("//carevault.example.lu//" in link for link in _links(third))


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["init", "serve", "demo", "directory", "db"]),
        (("directory",), ["add-patient", "add-organization", "add-practitioner", "list"]),
        (
            ("directory", "add-patient"),
            ["--national-id", "--family", "--given", "--birthdate", "--gender", "--json"],
        ),
    ],
)
def test_help(cli: Cli, args: tuple[str, ...], expected: list[str]) -> None:
    done = cli.ok(*args, "--help")

    assert "Usage" in done.stdout
    for word in expected:
        assert word in done.stdout


# --- deployment checks -----------------------------------------------------------------------


def test_prod_refuses_to_serve_with_the_development_key_source(cli: Cli) -> None:
    env = {k: v for k, v in cli.env.items() if k != "CAREVAULT_KEY_SOURCE"}
    env["CAREVAULT_ENVIRONMENT"] = "prod"

    done = subprocess.run(
        [CAREVAULT, "serve", "--port", str(free_port())],
        cwd=cli.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert "CAREVAULT_KEY_SOURCE" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Uvicorn running" not in done.stderr


def test_prod_refuses_to_serve_plain_http_without_a_trusted_proxy(cli: Cli) -> None:
    """Outside dev someone must speak TLS to the clients: CareVault itself, or a trusted proxy."""
    env = {**cli.env, "CAREVAULT_ENVIRONMENT": "prod",
           "CAREVAULT_KEY_SOURCE": f"file:{cli.workdir / 'prod.key'}",
           "CAREVAULT_DATABASE_URL": f"sqlite:///{cli.workdir / 'prod.db'}",
           "CAREVAULT_PUBLIC_BASE_URL": "https://carevault.example.lu"}

    done = subprocess.run(
        [CAREVAULT, "serve", "--port", str(free_port())],
        cwd=cli.workdir, env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert done.returncode == 1
    assert "CAREVAULT_TRUSTED_PROXIES" in done.stderr
    assert "--tls-cert" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Uvicorn running" not in done.stderr


def test_serve_with_workers_on_a_port_in_use_is_a_readable_error(ready: Cli) -> None:
    """The supervisor checks the port before it starts any worker (each worker binds it with
    SO_REUSEPORT; a listener without it must make the command fail, not loop restarting)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ready.run("serve", "--workers", "2", "--port", str(port))

    message = assert_one_line_error(done)
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "Uvicorn running" not in done.stderr


def test_the_demo_publishes_signed_documents_for_the_demo_patient(ready: Cli) -> None:
    """With the PKI initialized (as `make run` does), the demo physician records a care event
    and publishes two signed documents to the demo patient's record."""
    from sqlalchemy import create_engine, text

    ready.ok("pki", "init")
    loaded = ready.ok("demo", "--patients", "20", "--professionals", "5")
    assert "published 2 signed documents" in loaded.stdout
    accounts = json.loads((ready.workdir / "var" / "demo-accounts.json").read_text("utf-8"))
    patient_id = accounts["patients"][0]["patient_id"]
    engine = create_engine(ready.env["CAREVAULT_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(
                "select m.content_type, m.signs is not null from document_metadata m "
                "where m.patient_id = :p"), {"p": patient_id}).all()
            grants = connection.execute(text(
                "select source from record_grant where patient_id = :p"),
                {"p": patient_id}).all()
    finally:
        engine.dispose()
    assert sorted(rows) == [("application/jose", True), ("application/jose", True),
                            ("application/pdf", False), ("application/pdf", False)]
    assert grants == [("care-event",)]
