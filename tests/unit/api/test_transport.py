"""`TransportIdentity`: whose word about the client's address and certificate is believed.

The proxy's headers count only on a connection from a trusted proxy; from anyone else they are
dropped before the application sees them, whatever they say.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from carevault.api.transport import (
    STATE_KEY,
    ClientCertificate,
    TransportIdentity,
    TrustedProxies,
    forwarded_client,
)
from support.x509_ca import LocalCa

PROXY = "10.0.0.5"
TRUSTED = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128"))


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A client certificate (PEM) and its serial."""
    ca = LocalCa(tmp_path_factory.mktemp("ca"))
    issued = ca.client()
    return Path(issued.certificate).read_text(), issued.serial


def seen(peer: str | None, headers: list[tuple[str, str]],
         extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scope the application receives behind `TransportIdentity`."""
    captured: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        captured.update(scope)

    scope: dict[str, Any] = {
        "type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": (peer, 40000) if peer else None, "state": {"kept": True},
    }
    if extensions is not None:
        scope["extensions"] = extensions
    asyncio.run(TransportIdentity(app, TRUSTED)(scope, None, None))  # type: ignore[arg-type]
    return captured


def names(scope: dict[str, Any]) -> set[bytes]:
    return {name for name, _ in scope["headers"]}


def proxied(pem: str, verdict: str = "SUCCESS", forwarded: str = "198.51.100.7"
            ) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", forwarded), ("X-Client-Verify", verdict),
            ("X-Client-Certificate", quote(pem)), ("Accept", "application/fhir+json")]


def test_headers_from_a_trusted_proxy_are_believed(card: tuple[str, str]) -> None:
    pem, serial = card

    scope = seen(PROXY, proxied(pem))

    assert scope["client"] == ("198.51.100.7", 0)
    certificate = scope["state"][STATE_KEY]
    assert isinstance(certificate, ClientCertificate)
    assert certificate.serial == serial
    assert certificate.via == "proxy"
    assert "CN=Not a platform card" in certificate.subject
    assert scope["state"]["kept"] is True
    # Read once, then gone: nothing behind the middleware reads the raw headers.
    assert names(scope) == {b"accept"}


def test_the_same_headers_from_anyone_else_change_nothing(card: tuple[str, str]) -> None:
    pem, _ = card

    scope = seen("203.0.113.9", proxied(pem))

    assert scope["client"] == ("203.0.113.9", 40000)
    assert scope["state"][STATE_KEY] is None
    assert names(scope) == {b"accept"}


@pytest.mark.parametrize("verdict", ["NONE", "FAILED:unable to get local issuer certificate",
                                     "", "success"])
def test_only_a_successful_verification_passes_a_certificate(card: tuple[str, str],
                                                             verdict: str) -> None:
    scope = seen(PROXY, proxied(card[0], verdict=verdict))

    assert scope["state"][STATE_KEY] is None
    assert scope["client"] == ("198.51.100.7", 0)


def test_a_certificate_that_does_not_parse_is_none() -> None:
    scope = seen(PROXY, [("X-Client-Verify", "SUCCESS"),
                         ("X-Client-Certificate", quote("-----BEGIN CERTIFICATE-----\nAAAA"))])

    assert scope["state"][STATE_KEY] is None


def test_the_certificate_of_the_own_handshake_is_used_when_no_proxy_is_involved(
    card: tuple[str, str],
) -> None:
    pem, serial = card
    tls = {"tls": {"client_cert_chain": [pem]}}

    direct = seen("203.0.113.9", [("X-Client-Verify", "NONE")], tls)
    # A trusted proxy's own certificate is the proxy's, not its client's.
    through_proxy = seen(PROXY, [("X-Client-Verify", "NONE")], tls)

    assert direct["state"][STATE_KEY].serial == serial
    assert direct["state"][STATE_KEY].via == "tls"
    assert through_proxy["state"][STATE_KEY] is None


def test_no_certificate_anywhere_is_none() -> None:
    assert seen("203.0.113.9", [])["state"][STATE_KEY] is None
    assert seen(None, [])["state"][STATE_KEY] is None


def test_without_trusted_proxies_nothing_is_believed(card: tuple[str, str]) -> None:
    captured: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        captured.update(scope)

    scope = {"type": "http", "client": ("127.0.0.1", 1), "headers": [
        (b"x-forwarded-for", b"198.51.100.7"), (b"x-client-verify", b"SUCCESS"),
        (b"x-client-certificate", quote(card[0]).encode())]}
    asyncio.run(TransportIdentity(app)(scope, None, None))  # type: ignore[arg-type]

    assert captured["client"] == ("127.0.0.1", 1)
    assert captured["state"][STATE_KEY] is None
    assert captured["headers"] == []


# --- X-Forwarded-For ---------------------------------------------------------------------------


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(("peer", "header", "client"), [
    # One trusted proxy: the address it appended.
    (PROXY, ["198.51.100.7"], "198.51.100.7"),
    # The client wrote its own X-Forwarded-For before the proxy appended the real address.
    (PROXY, ["127.0.0.1, 1.2.3.4, 198.51.100.7"], "198.51.100.7"),
    # Two trusted proxies in a row, then the client; several header lines are one list.
    (PROXY, ["6.6.6.6, 198.51.100.7", "10.0.0.9"], "198.51.100.7"),
    # No header: the proxy itself.
    (PROXY, [], PROXY),
    # A malformed hop stops the walk at the last trusted hop.
    (PROXY, ["198.51.100.7, not-an-address"], PROXY),
    # Everybody is a trusted proxy: the leftmost.
    (PROXY, ["10.0.0.7, 10.0.0.8"], "10.0.0.7"),
    # Not from a trusted proxy: the header is the client's own word.
    ("203.0.113.9", ["198.51.100.7"], "203.0.113.9"),
    ("::1", ["2001:db8::7"], "2001:db8::7"),
])
def test_forwarded_client(peer: str, header: list[str], client: str) -> None:
    assert forwarded_client(addr(peer), header, TrustedProxies(TRUSTED)) == addr(client)


def test_an_ipv4_peer_seen_through_a_dual_stack_socket_is_matched() -> None:
    scope = seen("::ffff:10.0.0.5", [("X-Forwarded-For", "198.51.100.7")])

    assert scope["client"] == ("198.51.100.7", 0)
