"""A real CareVault server, started once for the end-to-end tests.

The server runs as a subprocess of the installed ``carevault`` script, exactly as an operator
would start it: ``init``, ``demo`` (a small population), then ``serve`` on a free port. Its
database and key file live in a private temporary directory, and its output goes to files so
that a server that does not come up can be diagnosed from the failure message.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from support.rsyslog import RsyslogServer

BIN = Path(sys.executable).parent
CAREVAULT = str(BIN / "carevault")
DEMO_PATIENTS = 300
DEMO_PROFESSIONALS = 80
STARTUP_SECONDS = 30.0
COMMAND_SECONDS = 300.0


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    accounts: dict[str, Any]
    workdir: Path
    card: Path  # a demo physician's certificate, key and chain
    client_id: str

    @property
    def fhir(self) -> str:
        return f"{self.base_url}/fhir"

    def token(self, scope: str = "system/*.cruds") -> str:
        """A fresh SMART access token for the demo physician (a third-party JOSE library)."""
        certificates = [x509.load_pem_x509_certificate((self.card / name).read_bytes())
                        for name in ("cert.pem", "chain.pem")]
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": self.client_id, "sub": self.client_id,
             "aud": f"{self.base_url}/oauth/token", "iat": now, "exp": now + 120,
             "jti": uuid.uuid4().hex},
            (self.card / "key.pem").read_bytes(), algorithm="ES256",
            headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                             for c in certificates]})
        response = httpx.post(f"{self.base_url}/oauth/token", data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        response.raise_for_status()
        return str(response.json()["access_token"])


class BearerAuth(httpx.Auth):
    """Adds a token to every request, fetching a new one before the 5-minute lifetime ends."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self._token = ""
        self._fetched = 0.0

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if time.monotonic() - self._fetched > 240:
            self._token = self.server.token()
            self._fetched = time.monotonic()
        request.headers.setdefault("Authorization", f"Bearer {self._token}")
        yield request


# The last TOTP time step a sign-in of this worker used, per secret: the e2e modules of a worker
# share one server (`server`) and its demo patient, and the server takes a step once, and only
# steps after the last one it took.
_TOTP_STEPS: dict[str, int] = {}
TOTP_STEP_SECONDS = 30


def unused_totp(secret: str) -> str:
    """A code of the demo patient's authenticator for a time step no sign-in of this worker
    used yet, as a person would type it; when the current step is spent, the next one is waited
    for (a TOTP code exists once per 30 seconds)."""
    while True:
        step = int(time.time()) // TOTP_STEP_SECONDS
        if step > _TOTP_STEPS.get(secret, -1):
            break
        time.sleep(TOTP_STEP_SECONDS - time.time() % TOTP_STEP_SECONDS + 0.05)
    _TOTP_STEPS[secret] = step
    return str(pyotp.TOTP(secret).at(step * TOTP_STEP_SECONDS))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def carevault_env(workdir: Path, base_url: str = "http://127.0.0.1:8000") -> dict[str, str]:
    """The process environment of a CareVault whose state all lives under ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREVAULT_")}
    var = workdir / "var"
    env.update(
        {
            "CAREVAULT_ENVIRONMENT": "dev",
            "CAREVAULT_DATABASE_URL": f"sqlite:///{var / 'carevault.db'}",
            "CAREVAULT_KEY_SOURCE": f"file:{var / 'carevault.key'}",
            "CAREVAULT_PUBLIC_BASE_URL": base_url,
        }
    )
    return env


def _run(args: list[str], workdir: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [CAREVAULT, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"`carevault {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, stderr: Path,
                        verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with status {process.returncode} before answering /health\n"
                f"stderr:\n{stderr.read_text(errors='replace')}"
            )
        try:
            response = httpx.get(f"{base_url}/health", timeout=2.0, verify=verify)
            if response.status_code == 200:
                return
            last_error = f"/health answered {response.status_code}"
        except httpx.TransportError as error:
            last_error = repr(error)
        time.sleep(0.2)
    _stop(process)
    pytest.fail(
        f"the server did not answer /health within {STARTUP_SECONDS:.0f} s ({last_error})\n"
        f"stderr:\n{stderr.read_text(errors='replace')}"
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A CareVault server with demo data, listening on a free loopback port."""
    workdir = tmp_path_factory.mktemp("carevault-server")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = carevault_env(workdir, base_url)
    accounts_file = workdir / "var" / "demo-accounts.json"

    _run(["init"], workdir, env)
    _run(
        [
            "demo",
            "--patients",
            str(DEMO_PATIENTS),
            "--professionals",
            str(DEMO_PROFESSIONALS),
            "--accounts",
            str(accounts_file),
        ],
        workdir,
        env,
    )
    accounts = json.loads(accounts_file.read_text(encoding="utf-8"))
    physician = next(p for p in accounts["professionals"] if p["profession"] == "physician")
    _run(["pki", "init"], workdir, env)
    _run(["pki", "issue-practitioner", physician["practitioner_id"], "--out",
          str(workdir / "card")], workdir, env)

    stdout, stderr = workdir / "server.out", workdir / "server.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [CAREVAULT, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        _wait_until_healthy(process, base_url, stderr)
        yield RunningServer(base_url=base_url, accounts=accounts, workdir=workdir,
                            card=workdir / "card", client_id=physician["identifier"])
    finally:
        _stop(process)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[RsyslogServer]:
    """A real rsyslog receiving RFC 5425 syslog over mutual TLS, for the ATNA tests."""
    server = RsyslogServer(tmp_path / "rsyslog")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def previous_step_code(totp: Any) -> str:
    """The code of the TOTP step before the current one, which a confirmation accepts (one step
    of drift either way) and which leaves the current step free for the sign-in that follows.
    Near the end of a step the next one is waited for first: a command started a few seconds
    later on a loaded machine would otherwise land two steps after the code (CI failed so)."""
    into = time.time() % TOTP_STEP_SECONDS
    if into > TOTP_STEP_SECONDS - 10:
        time.sleep(TOTP_STEP_SECONDS - into + 0.05)
    return str(totp.at(time.time() - TOTP_STEP_SECONDS))


def confirm_totp(workdir: Path, env: dict[str, str], account_id: str, totp: Any) -> None:
    """Confirm an account's TOTP with the previous step's code, so that the sign-in's own step
    is still unused."""
    done = subprocess.run([CAREVAULT, "accounts", "confirm", account_id,
                           "--code", previous_step_code(totp)],
                          cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=COMMAND_SECONDS, check=False)
    assert done.returncode == 0, f"the TOTP was not confirmed: {done.stderr}"


def registrar_token(base_url: str, workdir: Path) -> str:
    """A registrar's token from a real server, the production way: the account made with the
    command line, then the operators' door and the authorization code flow over HTTP."""
    import urllib.parse

    import pyotp

    from support.authorities import REGISTRAR_SCOPE
    from support.operators import PASSWORD, REDIRECT, authorize_operator

    env = carevault_env(workdir, base_url)
    login = f"registrar-{uuid.uuid4().hex[:8]}"

    def cli(*args: str, stdin: str | None = None) -> Any:
        done = subprocess.run([CAREVAULT, *args], cwd=workdir, env=env, input=stdin,
                              capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else done.stdout

    made = cli("accounts", "add-operator", "--login", login, "--registrar", "--password-stdin",
               "--json", stdin=PASSWORD)
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(made["totp_uri"]).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    confirm_totp(workdir, env, made["account_id"], totp)
    client_id = cli("apps", "register", "--name", "Registry console", "--redirect-uri",
                    REDIRECT, *(f"--scope={w}" for w in REGISTRAR_SCOPE.split()),
                    "--json")["client_id"]
    with httpx.Client(base_url=base_url, timeout=30.0) as browser:
        return authorize_operator(browser, client_id, login, totp, REGISTRAR_SCOPE)


# --- an installation driven through its command line, for tests that start servers themselves ---


class Installation:
    """A CareVault set up under ``workdir`` as an operator would: ``init``, ``pki init``, one
    physician with a card of the platform CA (``card/``), one patient, and the CA chain in
    ``platform-ca.pem`` (``carevault pki ca``). The test starts its servers itself."""

    PRACTITIONER = "HP-TRANSPORT-1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "var").mkdir(parents=True, exist_ok=True)
        self.card = workdir / "card"
        self.ca_chain = workdir / "platform-ca.pem"
        self.card_serial = ""
        self.patient_id = ""
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, base_url: str = "http://127.0.0.1:8000", **settings: str) -> dict[str, str]:
        env = carevault_env(self.workdir, base_url)
        env["CAREVAULT_RATE_LIMIT_PER_MINUTE"] = "1000000"  # not what these tests are about
        env.pop("CAREVAULT_WORKERS", None)
        env.update(settings)
        return env

    def cli(self, *args: str) -> Any:
        done = subprocess.run([CAREVAULT, *args], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              check=False)
        assert done.returncode == 0, (
            f"`carevault {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return json.loads(done.stdout) if "--json" in args else done.stdout

    def prepare(self) -> Installation:
        from support.builders import national_id

        self.cli("init")
        self.cli("pki", "init")
        practitioner = self.cli("directory", "add-practitioner", "--identifier",
                                self.PRACTITIONER, "--family", "Weber", "--given", "Anne",
                                "--profession", "physician", "--specialty",
                                "general-practice", "--json")
        issued = self.cli("pki", "issue-practitioner", practitioner["id"], "--out",
                          str(self.card), "--json")
        self.card_serial = issued["serial"]
        patient = self.cli("directory", "add-patient", "--national-id",
                           national_id(812, date(1971, 3, 9)), "--family", "Transport",
                           "--given", "Tess", "--birthdate", "1971-03-09", "--gender",
                           "female", "--json")
        self.patient_id = patient["id"]
        self.cli("pki", "ca", "--out", str(self.ca_chain))
        return self

    def serve(self, name: str, base_url: str, args: list[str],
              verify: ssl.SSLContext | bool = True, **settings: str
              ) -> subprocess.Popen[bytes]:
        """``carevault serve ARGS`` with its output in ``NAME.out``/``NAME.err``, once it
        answers ``/health`` at ``base_url`` (its public address too)."""
        stderr = self.workdir / f"{name}.err"
        with (self.workdir / f"{name}.out").open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen([CAREVAULT, "serve", *args], cwd=self.workdir,
                                       env=self.env(base_url, **settings), stdout=out,
                                       stderr=err)
        self.processes.append(process)
        _wait_until_healthy(process, base_url, stderr, verify)
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.err").read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """Stops every server it started (SIGTERM: a supervisor stops its workers first)."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=45)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def audit_entries(http: httpx.Client, stream: str = "clinical") -> list[dict[str, Any]]:
    """Every entry of the stream, as the developer on this machine reads them in ``dev``
    (``GET /audit/entries`` from a loopback address)."""
    found: list[dict[str, Any]] = []
    while True:
        response = http.get("/audit/entries", params={
            "stream": stream, "start": len(found), "end": len(found) + 1000})
        assert response.status_code == 200, response.text
        page = response.json()["entries"]
        found += [json.loads(base64.b64decode(e["leaf_input"])) for e in page]
        if len(page) < 1000:
            return found


def card_token(http: httpx.Client, base_url: str, card: Path, client_id: str,
               scope: str = "system/*.rs") -> str:
    """A SMART backend token for the card in ``card`` (cert.pem, chain.pem, key.pem), asked
    for over ``http`` (which may present that card in TLS too); its public address is
    ``base_url``. The assertion is signed with PyJWT."""
    chain = [x509.load_pem_x509_certificate((card / n).read_bytes())
             for n in ("cert.pem", "chain.pem")]
    now = int(time.time())
    assertion = jwt.encode(
        {"iss": client_id, "sub": client_id, "aud": f"{base_url}/oauth/token",
         "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex},
        (card / "key.pem").read_bytes(), algorithm="ES256",
        headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                         for c in chain]})
    response = http.post("/oauth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def last_entry(entries: list[dict[str, Any]], interaction: str) -> dict[str, Any]:
    """The latest audit entry of ``interaction``."""
    return next(e for e in reversed(entries) if e["interaction"] == interaction)
