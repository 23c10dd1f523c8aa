"""Secure messaging end to end, with the real processes (issue #22, "Done when"): ``carevault
serve`` (the directory, mCSD) beside ``carevault messaging serve`` (SMTP submission and Dovecot),
set up with the command line as an operator would. One professional's client finds two
colleagues through mCSD (their PractitionerRoles with ``_include=PractitionerRole:endpoint``)
and sends them an S/MIME message over SMTP with ``carevault message send --api``, which takes
their certificates from the directory; both read it over IMAP with Python's ``imaplib`` and
decrypt it with ``openssl cms -decrypt``; a third professional can do neither. A revocation
shows in the directory's next answer, and the client then refuses to encrypt to that
colleague."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.requirements import DOVECOT_IMAPD, require
from support.x509_ca import LocalCa

from .conftest import CAREVAULT, Installation, card_token, free_port

pytestmark = pytest.mark.e2e

MARKER = "MARKER-e2e-7f3a-only-the-recipients-read-this"
STARTUP_SECONDS = 30.0


@dataclass
class Person:
    practitioner_id: str
    identifier: str
    card: Path  # cert.pem, key.pem, chain.pem, enc.key, enc.pem
    encryption_serial: str
    imap_secret: str

    @property
    def address(self) -> str:
        return f"{self.identifier.lower()}@msg.carevault.localhost"


@dataclass
class Platform:
    installation: Installation
    base_url: str
    smtp: str
    imap_port: int
    tls_ca: Path
    people: dict[str, Person]
    organization_id: str
    env: dict[str, str]

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([CAREVAULT, *args], cwd=self.installation.workdir, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"messaging serve exited {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on {port} after {STARTUP_SECONDS:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require(DOVECOT_IMAPD)
    workdir = tmp_path_factory.mktemp("messaging-e2e")
    # Dovecot's processes and the mail user reach the Maildirs: not under pytest's 0700 root.
    served = Path(tempfile.mkdtemp(prefix="carevault-mail-e2e-"))
    served.chmod(0o755)
    mail_user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() != 0 else "nobody"
    installation = Installation(workdir)
    settings = {"CAREVAULT_MESSAGING_MAILDIR": str(served / "mail"),
                "CAREVAULT_MESSAGING_MAIL_USER": mail_user}
    original_env = installation.env

    def env(base_url: str = "http://127.0.0.1:8000", **more: str) -> dict[str, str]:
        return original_env(base_url, **settings, **more)

    installation.env = env  # type: ignore[method-assign]
    installation.prepare()
    organization = installation.cli("directory", "add-organization", "--identifier",
                                    "ORG-MSG-E2E", "--name", "Clinique du Courrier", "--json")
    people: dict[str, Person] = {}
    for number, name in enumerate(("anne", "paul", "lea", "marc"), start=1):
        identifier = f"HP-MSG-E2E-{number}"
        practitioner = installation.cli(
            "directory", "add-practitioner", "--identifier", identifier, "--family",
            name.title(), "--given", "Dr", "--profession", "physician",
            # Marc works elsewhere: he is no colleague of the clinic.
            *(["--organization", organization["id"]] if name != "marc" else []), "--json")
        card = workdir / f"card-{name}"
        installation.cli("pki", "issue-practitioner", practitioner["id"], "--out", str(card))
        installation.cli("message", "keygen", "--card", str(card))
        enrolled = installation.cli("messaging", "enrol", practitioner["id"], "--csr",
                                    str(card / "enc.csr"), "--out", str(card / "enc.pem"))
        serial = enrolled.split("certificate ", 1)[1].split(" ", 1)[0]
        credential = installation.cli("messaging", "imap-credential", practitioner["id"])
        secret = credential.split("password: ", 1)[1].strip()
        people[name] = Person(practitioner["id"], identifier, card, serial, secret)

    api_port, smtp_port, imap_port = free_port(), free_port(), free_port()
    base_url = f"http://127.0.0.1:{api_port}"
    installation.serve("api", base_url, ["--host", "127.0.0.1", "--port", str(api_port)])
    tls = LocalCa(tmp_path_factory.mktemp("mail-tls"))
    server_files = tls.server()
    log = workdir / "messaging.err"
    with (workdir / "messaging.out").open("wb") as out, log.open("wb") as err:
        mail = subprocess.Popen(
            [CAREVAULT, "messaging", "serve", "--tls-cert", str(server_files.certificate),
             "--tls-key", str(server_files.key), "--smtp-port", str(smtp_port),
             "--imap-port", str(imap_port)],
            cwd=workdir, env=env(base_url), stdout=out, stderr=err)
    try:
        _wait_for_port(smtp_port, mail, log)
        _wait_for_port(imap_port, mail, log)
        yield Platform(installation, base_url, f"127.0.0.1:{smtp_port}", imap_port, tls.pem,
                       people, organization["id"], env(base_url))
    finally:
        if mail.poll() is None:
            mail.send_signal(signal.SIGTERM)
            try:
                mail.wait(timeout=30)
            except subprocess.TimeoutExpired:
                mail.kill()
                mail.wait(timeout=10)
        installation.stop()
        shutil.rmtree(served, ignore_errors=True)


@contextmanager
def _directory(platform: Platform, who: str) -> Iterator[httpx.Client]:
    """An HTTP client with ``who``'s card token that reads the directory."""
    person = platform.people[who]
    with httpx.Client(base_url=platform.base_url, timeout=30.0) as http:
        token = card_token(http, platform.base_url, person.card, person.identifier,
                           scope="system/Practitioner.rs system/PractitionerRole.rs "
                                 "system/Endpoint.rs")
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def _colleagues(http: httpx.Client, organization_id: str) -> dict[str, dict[str, Any]]:
    """The clinic's mailboxes, the mCSD way: its roles, with their Endpoints included."""
    found = http.get("/fhir/PractitionerRole", params={
        "organization": f"Organization/{organization_id}",
        "_include": "PractitionerRole:endpoint"})
    assert found.status_code == 200, found.text
    endpoints = {e["resource"]["id"]: e["resource"] for e in found.json()["entry"]
                 if e["resource"]["resourceType"] == "Endpoint"}
    by_practitioner = {}
    for entry in found.json()["entry"]:
        role = entry["resource"]
        if role["resourceType"] != "PractitionerRole":
            continue
        (reference,) = role["endpoint"]
        practitioner = role["practitioner"]["reference"].removeprefix("Practitioner/")
        by_practitioner[practitioner] = endpoints[reference["reference"].split("/")[1]]
    return by_practitioner


def _imap_messages(platform: Platform, who: str) -> list[bytes]:
    person = platform.people[who]
    imap = imaplib.IMAP4("127.0.0.1", platform.imap_port, timeout=30)
    try:
        imap.starttls(ssl.create_default_context(cafile=str(platform.tls_ca)))
        imap.login(person.address, person.imap_secret)
        assert imap.select("INBOX")[0] == "OK"
        status, data = imap.uid("SEARCH", "ALL")
        assert status == "OK"
        messages = []
        for uid in (data[0] or b"").split():
            status, fetched = imap.uid("FETCH", uid, "(RFC822)")
            first = fetched[0]
            assert status == "OK" and isinstance(first, tuple)
            messages.append(bytes(first[1]))
        return messages
    finally:
        imap.logout()


def _openssl_decrypt(message: bytes, card: Path) -> subprocess.CompletedProcess[bytes]:
    """``openssl cms -decrypt`` of a message as delivered (S/MIME), with a professional's
    messaging key: what any S/MIME software does."""
    return subprocess.run(
        ["openssl", "cms", "-decrypt", "-recip", str(card / "enc.pem"),
         "-inkey", str(card / "enc.key")],
        input=message, capture_output=True, check=False)


def test_found_through_mcsd_sent_over_smtp_read_over_imap(platform: Platform,
                                                         tmp_path: Path) -> None:
    people = platform.people
    with _directory(platform, "anne") as http:
        colleagues = _colleagues(http, platform.organization_id)
    # Anne's clinic: herself, Paul and Léa; Marc works elsewhere.
    assert set(colleagues) == {people[n].practitioner_id for n in ("anne", "paul", "lea")}
    to = [colleagues[people[n].practitioner_id] for n in ("paul", "lea")]
    for endpoint in to:
        assert endpoint["status"] == "active"
        assert endpoint["connectionType"]["code"] == "secure-email"
        assert endpoint["payloadMimeType"] == ["application/pkcs7-mime"]
    addresses = [str(e["address"]).removeprefix("mailto:") for e in to]
    assert addresses == [people["paul"].address, people["lea"].address]

    body = tmp_path / "body.txt"
    body.write_text(f"Chers collègues, {MARKER}\n", encoding="utf-8")
    sent = platform.client(
        "message", "send", "--card", str(people["anne"].card),
        *[arg for address in addresses for arg in ("--to", address)],
        "--subject", "Avis", "--body-file", str(body), "--server", platform.smtp,
        "--server-ca", str(platform.tls_ca), "--api", platform.base_url)
    assert "sent to" in sent.stdout

    chain = platform.installation.ca_chain  # `carevault pki ca`: issuing CA and root
    for who in ("paul", "lea"):
        (message,) = _imap_messages(platform, who)
        assert MARKER.encode() not in message  # nothing readable in transit or at rest
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        assert parsed.get_content_type() == "application/pkcs7-mime"
        decrypted = _openssl_decrypt(message, people[who].card)
        assert decrypted.returncode == 0, decrypted.stderr
        verified = subprocess.run(
            ["openssl", "cms", "-verify", "-CAfile", str(chain), "-purpose", "any"],
            input=decrypted.stdout, capture_output=True, check=False)
        assert verified.returncode == 0, verified.stderr
        assert MARKER.encode() in verified.stdout

    # Marc received nothing, and cannot decrypt Paul's copy with his own key.
    assert _imap_messages(platform, "marc") == []
    (pauls,) = _imap_messages(platform, "paul")
    refused = _openssl_decrypt(pauls, people["marc"].card)
    assert refused.returncode != 0 and MARKER.encode() not in refused.stdout


def test_a_revoked_recipient_is_off_at_once_and_not_encrypted_to(platform: Platform,
                                                                  tmp_path: Path) -> None:
    people = platform.people
    lea = people["lea"]
    platform.installation.cli("pki", "revoke", lea.encryption_serial, "--reason",
                              "keyCompromise")
    with _directory(platform, "anne") as http:
        endpoint = _colleagues(http, platform.organization_id)[lea.practitioner_id]
        assert endpoint["status"] == "off" and "extension" not in endpoint
        practitioner = http.get(f"/fhir/Practitioner/{lea.practitioner_id}").json()
        assert "telecom" not in practitioner
    body = tmp_path / "body.txt"
    body.write_text("encore", encoding="utf-8")
    refused = platform.client(
        "message", "send", "--card", str(people["anne"].card), "--to", lea.address,
        "--subject", "Avis", "--body-file", str(body), "--server", platform.smtp,
        "--server-ca", str(platform.tls_ca), "--api", platform.base_url, check=False)
    assert refused.returncode != 0
    assert "cannot receive: its mailbox is off" in refused.stderr + refused.stdout
