"""Debian's nginx, running ``deploy/nginx/carevault.conf``, in front of a real ``carevault
serve`` (plain HTTP on 127.0.0.1, ``CAREVAULT_TRUSTED_PROXIES=127.0.0.1``).

The shipped configuration is used as it is, except for what a test machine must change: its
ports, its file paths and the upstream's port (each replacement must match, so a change to the
file that the test does not follow fails here). The test's clients connect from 127.0.0.3, so
that the address nginx reports (X-Forwarded-For) is told apart from nginx's own (127.0.0.1),
and so that a client talking to CareVault directly is not the trusted proxy.

Checked: HTTPS through nginx (metadata, HSTS; TLS 1.0/1.1 and weak suites refused there too,
against a permissive control); a professional's card reaches CareVault verified (the audit
entries of the token request and the FHIR read carry its serial, ``tls-client``, and the
client's address, not nginx's); another CA's certificate stops at nginx (400); forged
``X-Client-Certificate``/``X-Client-Verify``/``X-Forwarded-For`` headers change nothing, sent
through nginx (it replaces them) or straight to CareVault (it drops them); plain HTTP is
redirected to https, and refused on the TLS port; a body over ``CAREVAULT_MAX_BODY_BYTES`` is
refused by nginx itself.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from carevault.settings import Settings
from support.nginx import Nginx, nginx_binary
from support.tls_probe import (
    OLD_VERSIONS,
    WEAK_SUITES,
    PermissiveServer,
    client_context,
    probe,
)
from support.x509_ca import Credentials, LocalCa

from .conftest import Installation, audit_entries, card_token, free_port, last_entry

pytestmark = pytest.mark.e2e

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "carevault.conf"
CLIENT_ADDRESS = "127.0.0.3"  # the test's clients; nginx reaches CareVault from 127.0.0.1


@dataclass
class Proxied:
    installation: Installation
    ca: LocalCa
    certificate: Credentials
    https_port: int
    http_port: int
    upstream_port: int
    nginx: Nginx

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def card(self) -> tuple[Path, Path]:
        return (self.installation.card / "cert.pem", self.installation.card / "key.pem")

    def context(self, *, card: bool = False, **kwargs: Any) -> ssl.SSLContext:
        return client_context(ca=self.ca.pem, cert=self.card if card else None, **kwargs)

    def http(self, *, card: bool = False) -> httpx.Client:
        """A client of nginx, from ``CLIENT_ADDRESS``."""
        transport = httpx.HTTPTransport(verify=self.context(card=card),
                                        local_address=CLIENT_ADDRESS)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=60.0)

    def direct(self) -> httpx.Client:
        """A client of CareVault itself, past nginx, from ``CLIENT_ADDRESS``."""
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
        return httpx.Client(base_url=f"http://127.0.0.1:{self.upstream_port}",
                            transport=transport, timeout=60.0)


def site(conf: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in conf, f"deploy/nginx/carevault.conf no longer contains {old!r}"
        conf = conf.replace(old, new)
    return conf


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    nginx_binary()  # skip (or fail under CI) before preparing anything
    workdir = tmp_path_factory.mktemp("carevault-nginx")
    installation = Installation(workdir).prepare()
    ca = LocalCa(workdir / "test-ca")
    certificate = ca.server("nginx", rsa_key=True)
    https_port, http_port, upstream_port = free_port(), free_port(), free_port()
    logs = workdir / "nginx" / "logs"
    nginx = Nginx(workdir / "nginx", site(CONF.read_text(), {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "/etc/carevault/tls/fullchain.pem": str(certificate.certificate),
        "/etc/carevault/tls/privkey.pem": str(certificate.key),
        "/etc/carevault/platform-ca.pem": str(installation.ca_chain),
        "/var/log/nginx/": f"{logs}/",
    }))
    proxied = Proxied(installation, ca, certificate, https_port, http_port, upstream_port,
                      nginx)
    try:
        installation.serve(
            "behind-nginx", f"http://127.0.0.1:{upstream_port}",
            ["--host", "127.0.0.1", "--port", str(upstream_port)],
            CAREVAULT_TRUSTED_PROXIES="127.0.0.1",
            CAREVAULT_PUBLIC_BASE_URL=proxied.base_url)
        nginx.start(https_port, http_port)
        yield proxied
    finally:
        nginx.stop()
        installation.stop()


# --- HTTPS through nginx --------------------------------------------------------------------------


def test_https_through_nginx(proxied: Proxied) -> None:
    with proxied.http() as http:
        response = http.get("/fhir/metadata")

    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "CapabilityStatement"
    # Once, from nginx (CareVault behind it is reached over plain HTTP and adds none).
    assert response.headers.get_list("strict-transport-security") == [
        "max-age=63072000; includeSubDomains"]
    assert response.headers["x-content-type-options"] == "nosniff"  # CareVault's own, passed on
    assert probe(proxied.https_port, proxied.context()).version == "TLSv1.3"
    tls12 = probe(proxied.https_port, proxied.context(maximum=ssl.TLSVersion.TLSv1_2))
    assert tls12.accepted and tls12.cipher and tls12.cipher.startswith("ECDHE-"), tls12


@pytest.fixture(scope="module")
def control(proxied: Proxied) -> Iterator[PermissiveServer]:
    with PermissiveServer(proxied.certificate.certificate,
                          proxied.certificate.key).running() as server:
        yield server


@pytest.mark.parametrize("offer", [*OLD_VERSIONS, *WEAK_SUITES])
def test_old_versions_and_weak_suites_are_refused_by_nginx(
    proxied: Proxied, control: PermissiveServer, offer: str
) -> None:
    context = (client_context(maximum=OLD_VERSIONS[offer], insecure_allowed=True)
               if offer in OLD_VERSIONS else
               client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=WEAK_SUITES[offer],
                              insecure_allowed=True))

    assert probe(control.port, context).accepted  # the client can offer it
    refused = probe(proxied.https_port, context)

    assert refused.version is None and refused.answer == b"", refused
    assert isinstance(refused.error, ssl.SSLError | ConnectionResetError), refused.error


# --- the client certificate -----------------------------------------------------------------------


def test_a_verified_card_reaches_carevault(proxied: Proxied) -> None:
    installation = proxied.installation
    with proxied.http(card=True) as http:
        bearer = card_token(http, proxied.base_url, installation.card,
                            Installation.PRACTITIONER)
        read = http.get(f"/fhir/Patient/{installation.patient_id}",
                        headers={"Authorization": f"Bearer {bearer}"})
        assert read.status_code == 200, read.text
        entries = audit_entries(http)

    issued, fhir_read = last_entry(entries, "token"), last_entry(entries, "read")
    assert issued["outcome"] == "0"
    for entry in (issued, fhir_read):
        assert entry["detail"]["tls-client"] == installation.card_serial
        assert entry["agent"]["network"] == CLIENT_ADDRESS  # the client, not nginx
    assert fhir_read["entity_id"] == installation.patient_id


def test_a_certificate_of_another_ca_stops_at_nginx(proxied: Proxied) -> None:
    stranger = proxied.ca.client("stranger")
    transport = httpx.HTTPTransport(
        verify=client_context(ca=proxied.ca.pem, cert=(stranger.certificate, stranger.key)),
        local_address=CLIENT_ADDRESS)
    with httpx.Client(base_url=proxied.base_url, transport=transport, timeout=60.0) as http:
        response = http.get("/fhir/metadata", headers={"User-Agent": "stranger"})

    assert response.status_code == 400
    assert "CapabilityStatement" not in response.text  # nginx answered, not CareVault
    assert "certificate" in response.text.lower()


FORGED = {"X-Client-Verify": "SUCCESS", "X-Forwarded-For": "198.51.100.7"}


def forged(proxied: Proxied) -> dict[str, str]:
    return {**FORGED, "X-Client-Certificate": quote(proxied.card[0].read_text())}


def test_forged_headers_through_nginx_are_replaced(proxied: Proxied) -> None:
    with proxied.http() as http:  # no client certificate
        assert http.get("/fhir/metadata", headers=forged(proxied)).status_code == 200
        entry = last_entry(audit_entries(http), "capabilities")

    assert "tls-client" not in entry["detail"]
    assert entry["agent"]["network"] == CLIENT_ADDRESS


def test_forged_headers_sent_straight_to_carevault_are_ignored(proxied: Proxied) -> None:
    with proxied.direct() as http:
        assert http.get("/fhir/metadata", headers=forged(proxied)).status_code == 200
        entry = last_entry(audit_entries(http), "capabilities")

    assert "tls-client" not in entry["detail"]
    assert entry["agent"]["network"] == CLIENT_ADDRESS  # its own address, not the forged one


# --- plain HTTP, body size ------------------------------------------------------------------------


def test_plain_http_is_redirected_to_https(proxied: Proxied) -> None:
    response = httpx.get(f"http://127.0.0.1:{proxied.http_port}/fhir/metadata?x=1",
                         follow_redirects=False)

    assert response.status_code == 301
    assert response.headers["location"] == "https://carevault.example.lu/fhir/metadata?x=1"
    assert "CapabilityStatement" not in response.text


def test_plain_http_on_the_tls_port_is_refused(proxied: Proxied) -> None:
    response = httpx.get(f"http://127.0.0.1:{proxied.https_port}/fhir/metadata")

    assert response.status_code == 400
    assert "CapabilityStatement" not in response.text


def test_nginx_s_body_limit_is_carevault_s(proxied: Proxied) -> None:
    limit = Settings.model_fields["max_body_bytes"].default
    size = re.search(r"client_max_body_size (\d+)m;", CONF.read_text())
    assert size is not None
    assert int(size.group(1)) * 1024 * 1024 == limit

    # One byte over, declared: nginx answers 413 before any byte of the body is sent.
    request = (f"POST /fhir HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json"
               f"\r\nContent-Length: {limit + 1}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", proxied.https_port), timeout=10) as raw, \
            proxied.context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request)
        answer = tls.recv(4096)

    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"OperationOutcome" not in answer  # nginx's answer, CareVault never saw it
