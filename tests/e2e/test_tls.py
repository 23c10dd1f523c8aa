"""``carevault serve`` speaking TLS itself, as an operator starts it:

    carevault serve --workers 2 --tls-cert server.pem --tls-key server.key \\
        --client-ca platform-ca.pem --client-cert optional

with a server certificate for 127.0.0.1/localhost from a CA the test makes (`support.x509_ca`)
and the platform CA chain from ``carevault pki ca``. Checked over real sockets:

- TLS 1.3 and TLS 1.2 (ECDHE + AEAD) connections work, with httpx and with ``ssl``;
- TLS 1.0 and 1.1, and TLS 1.2 suites without forward secrecy or without AEAD, are refused in
  the handshake, while the very same client offers are accepted by a permissive control server
  (`support.tls_probe`): Debian's OpenSSL refuses them client-side unless the probe lowers its
  own security level, which it does; SSLv3 and DHE/3DES/RC4 suites are not probed, this
  OpenSSL cannot offer them at all;
- mutual TLS: a professional's card issued by ``carevault pki issue-practitioner`` is accepted,
  and the server sees it (its serial is in the audit entries of the token request and of the
  FHIR request, ``tls-client``); a client certificate from another CA is refused in the
  handshake; without a certificate the client is served (``optional``);
- forged proxy headers sent over TLS change nothing (no trusted proxy is configured);
- ``--client-cert required``, single process: no certificate, no connection.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from support.mhd import FHIR_JSON
from support.tls_probe import (
    OLD_VERSIONS,
    WEAK_SUITES,
    Outcome,
    PermissiveServer,
    client_context,
    probe,
)
from support.x509_ca import Credentials, LocalCa

from .conftest import (
    CAREVAULT,
    Installation,
    audit_entries,
    card_token,
    free_port,
    last_entry,
)

pytestmark = pytest.mark.e2e

@dataclass
class TlsServer:
    installation: Installation
    ca: LocalCa
    certificate: Credentials
    port: int

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def card(self) -> tuple[Path, Path]:
        return (self.installation.card / "cert.pem", self.installation.card / "key.pem")

    def context(self, *, card: bool = False, **kwargs: Any) -> ssl.SSLContext:
        return client_context(ca=self.ca.pem, cert=self.card if card else None, **kwargs)

    def http(self, *, card: bool = False) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.context(card=card),
                            timeout=60.0)


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("carevault-tls")).prepare()
    try:
        yield installation
    finally:
        installation.stop()


@pytest.fixture(scope="module")
def ca(installation: Installation) -> LocalCa:
    return LocalCa(installation.workdir / "test-ca")


@pytest.fixture(scope="module")
def server(installation: Installation, ca: LocalCa) -> TlsServer:
    # RSA, so that suites with RSA key exchange can be offered to it (and refused).
    certificate = ca.server(rsa_key=True)
    tls = TlsServer(installation, ca, certificate, free_port())
    installation.serve(
        "tls-workers", tls.base_url,
        ["--host", "127.0.0.1", "--port", str(tls.port), "--workers", "2",
         "--tls-cert", str(certificate.certificate), "--tls-key", str(certificate.key),
         "--client-ca", str(installation.ca_chain), "--client-cert", "optional"],
        verify=client_context(ca=ca.pem))
    return tls


@pytest.fixture(scope="module")
def control(server: TlsServer) -> Iterator[PermissiveServer]:
    """The same certificate served by a server that accepts everything."""
    with PermissiveServer(server.certificate.certificate, server.certificate.key).running() as c:
        yield c


def assert_refused_in_handshake(server: TlsServer, refused: Outcome) -> None:
    """The handshake did not complete. (uvloop's TLS closes the connection without sending
    an alert, so the client sees an unexpected EOF rather than, say, protocol_version; the
    server logs nothing.) The server still serves the next, good client."""
    assert refused.version is None and refused.answer == b"", refused
    assert isinstance(refused.error, ssl.SSLError | ConnectionResetError), refused.error
    assert probe(server.port, server.context()).accepted


# --- protocol versions and suites --------------------------------------------------------------


def test_https_with_tls_1_3_and_tls_1_2(server: TlsServer) -> None:
    with server.http() as http:
        response = http.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert response.headers["strict-transport-security"] == (
        "max-age=63072000; includeSubDomains")

    newest = probe(server.port, server.context())
    tls12 = probe(server.port, server.context(maximum=ssl.TLSVersion.TLSv1_2))

    assert newest.accepted, newest
    assert newest.version == "TLSv1.3"
    assert tls12.accepted, tls12
    assert tls12.version == "TLSv1.2"
    assert tls12.cipher is not None
    assert tls12.cipher.startswith("ECDHE-RSA-"), tls12.cipher
    assert "GCM" in tls12.cipher or "CHACHA20" in tls12.cipher, tls12.cipher


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_old_protocol_versions_are_refused(server: TlsServer, control: PermissiveServer,
                                           version: str) -> None:
    offer = client_context(maximum=OLD_VERSIONS[version], insecure_allowed=True)

    accepted_by_control = probe(control.port, offer)
    refused = probe(server.port, offer)

    assert accepted_by_control.accepted, accepted_by_control  # the client can speak it
    assert_refused_in_handshake(server, refused)


@pytest.mark.parametrize("weakness", WEAK_SUITES)
def test_weak_tls_1_2_suites_are_refused(server: TlsServer, control: PermissiveServer,
                                         weakness: str) -> None:
    offer = client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=WEAK_SUITES[weakness],
                           insecure_allowed=True)

    accepted_by_control = probe(control.port, offer)
    refused = probe(server.port, offer)

    assert accepted_by_control.accepted, accepted_by_control
    assert accepted_by_control.cipher == WEAK_SUITES[weakness]
    assert_refused_in_handshake(server, refused)


# --- mutual TLS -----------------------------------------------------------------------------------


def test_a_platform_card_is_accepted_and_seen(server: TlsServer) -> None:
    installation = server.installation
    with server.http(card=True) as http:
        # The card in the handshake authenticates nobody: without a token, nothing.
        anonymous = http.get(f"/fhir/Patient/{installation.patient_id}")
        assert anonymous.status_code == 401, anonymous.text
        bearer = card_token(http, server.base_url, installation.card,
                            Installation.PRACTITIONER)
        response = http.get(f"/fhir/Patient/{installation.patient_id}",
                            headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 200, response.text
        entries = audit_entries(http)

    issued = last_entry(entries, "token")
    read = last_entry(entries, "read")
    assert issued["outcome"] == "0"
    assert issued["detail"]["tls-client"] == installation.card_serial
    assert read["entity_id"] == installation.patient_id
    assert read["detail"]["tls-client"] == installation.card_serial
    assert read["detail"]["client_id"] == Installation.PRACTITIONER


def test_without_a_certificate_the_client_is_served_and_nothing_is_recorded(
    server: TlsServer,
) -> None:
    with server.http() as http:
        response = http.get("/fhir/metadata", headers={"User-Agent": "no-card"})
        assert response.status_code == 200
        entries = audit_entries(http)

    assert "tls-client" not in last_entry(entries, "capabilities")["detail"]


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_certificate_from_another_ca_is_refused_in_the_handshake(
    server: TlsServer, maximum: ssl.TLSVersion
) -> None:
    stranger = server.ca.client("stranger")
    offer = client_context(ca=server.ca.pem, maximum=maximum,
                           cert=(stranger.certificate, stranger.key))

    refused = probe(server.port, offer)

    # TLS 1.2 fails in the handshake itself; with TLS 1.3 the client has finished its part
    # when the server's verdict arrives: the connection ends (an error or end of file on the
    # first read) and no byte of an answer is ever received.
    assert not refused.accepted and refused.answer == b"", refused
    if maximum is ssl.TLSVersion.TLSv1_2:
        assert refused.version is None, refused
        assert isinstance(refused.error, ssl.SSLError | ConnectionResetError), refused.error
    assert probe(server.port, server.context(card=True)).accepted


def test_forged_proxy_headers_change_nothing(server: TlsServer) -> None:
    card_pem = server.card[0].read_text()
    forged = {"X-Client-Certificate": quote(card_pem), "X-Client-Verify": "SUCCESS",
              "X-Forwarded-For": "198.51.100.7", "User-Agent": "forger"}
    with server.http() as http:
        assert http.get("/fhir/metadata", headers=forged).status_code == 200
        entries = audit_entries(http)

    entry = last_entry(entries, "capabilities")
    assert "tls-client" not in entry["detail"]
    assert entry["agent"]["network"] == "127.0.0.1"


# --- required client certificates, one process ----------------------------------------------------


def test_required_client_certificates(installation: Installation, ca: LocalCa,
                                      server: TlsServer) -> None:
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    certificate = ca.server("required-server")
    card = (installation.card / "cert.pem", installation.card / "key.pem")
    process = installation.serve(
        "tls-required", base_url,
        ["--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(certificate.certificate), "--tls-key", str(certificate.key),
         "--client-ca", str(installation.ca_chain), "--client-cert", "required"],
        verify=client_context(ca=ca.pem, cert=card))
    stranger = ca.client("stranger-2")

    with_card = probe(port, client_context(ca=ca.pem, cert=card))
    without = [probe(port, client_context(ca=ca.pem, maximum=v))
               for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
    foreign = probe(port, client_context(ca=ca.pem, cert=(stranger.certificate, stranger.key)))

    assert with_card.accepted, with_card
    for refused in [*without, foreign]:
        assert not refused.accepted and refused.answer == b"", refused
    assert without[0].version is None  # TLS 1.2: in the handshake itself
    # One process sees the card as the workers do.
    with httpx.Client(base_url=base_url, verify=client_context(ca=ca.pem, cert=card),
                      timeout=60.0) as http:
        assert http.get("/fhir/metadata", headers={"User-Agent": "one"}).status_code == 200
        entries = audit_entries(http)
    assert last_entry(entries, "capabilities")["detail"]["tls-client"] == (
        installation.card_serial)
    assert process.poll() is None, installation.log("tls-required")
    assert list(children_of(process.pid)) == []  # one process: no supervisor, no workers


def children_of(pid: int) -> Iterator[int]:
    """Child processes of ``pid`` (a single-process server has none)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                yield int(entry.name)


def test_the_server_refuses_an_unusable_certificate_readably(
    installation: Installation, ca: LocalCa
) -> None:
    other = ca.server("mismatched")
    done = subprocess.run(
        [CAREVAULT, "serve", "--port", str(free_port()),
         "--tls-cert", str(ca.server("first").certificate), "--tls-key", str(other.key)],
        cwd=installation.workdir, env=installation.env(), capture_output=True, text=True,
        timeout=60, check=False)

    assert done.returncode == 1
    assert "cannot be used" in done.stderr
    assert "Traceback" not in done.stderr
