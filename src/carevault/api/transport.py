"""Who is at the other end: the client's network address and the client certificate the
transport verified, whichever way a request came in.

There are two ways in:

- **Straight to CareVault over TLS** (``carevault serve --tls-cert … --client-ca …``): the
  handshake verified the client certificate against the platform CA, and
  `carevault.api.tls` hands it to the application in the ASGI scope's ``tls`` extension.
- **Through a reverse proxy that terminates TLS** (``deploy/nginx/carevault.conf``): the proxy
  verified the certificate and passes it on in ``X-Client-Certificate`` (the PEM,
  URL-escaped, nginx's ``$ssl_client_escaped_cert``) with its verdict in ``X-Client-Verify``
  (``SUCCESS``, ``NONE``, ``FAILED:…``), and the client's address in ``X-Forwarded-For``.

`TransportIdentity` believes those three headers only on a connection from an address of
``CAREVAULT_TRUSTED_PROXIES`` (none by default), and removes them from every request before
the application sees it: a client that sends them itself changes nothing. It then puts the
client's address in the scope's ``client`` (so the rate limiters, the audit entries'
``network`` and the developer's loopback rule in ``dev`` all see the real client, not the
proxy) and the verified certificate, if any, in the request state (`client_certificate`).

A verified certificate **authenticates nobody**. It says which card opened the connection and
is recorded with each request (the audit entries' ``tls-client`` detail: its serial); who the
caller is, and what they may do, is still decided by their SMART access token alone, on every
request. The two are not bound to each other (RFC 8705 certificate-bound tokens are not
implemented): see ``docs/authentication.md``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from cryptography import x509
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR = b"x-forwarded-for"
CLIENT_CERTIFICATE = b"x-client-certificate"
CLIENT_VERIFY = b"x-client-verify"
# The headers that speak for the transport: believed from a trusted proxy only, and never left
# for the application to read.
TRANSPORT_HEADERS = frozenset({FORWARDED_FOR, CLIENT_CERTIFICATE, CLIENT_VERIFY})
STATE_KEY = "client_certificate"
MAX_CERTIFICATE_CHARS = 16_384  # an escaped PEM of a platform certificate is about 1,200

log = logging.getLogger("carevault.transport")


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate verified by the transport against its configured CA."""

    serial: str  # lowercase hexadecimal, as `carevault pki` writes serial numbers
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    via: Literal["tls", "proxy"]  # CareVault's own TLS, or the trusted proxy's


def client_certificate(request: Request) -> ClientCertificate | None:
    """The verified client certificate of ``request``'s connection, if there is one."""
    found = request.scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, ClientCertificate) else None


class TrustedProxies:
    """The addresses whose forwarding headers are believed."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def forwarded_client(
    peer: Address, forwarded_for: Sequence[str], trusted: TrustedProxies
) -> Address:
    """The client behind a chain of trusted proxies.

    From the connection's peer leftwards through ``X-Forwarded-For`` (each proxy appends the
    address it received the request from): while the current hop is a trusted proxy, the
    address it reports is believed. The first untrusted hop is the client; whatever it claims
    further left is its own word and is ignored. A malformed entry stops the walk at the last
    trusted hop.
    """
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        if client not in trusted:
            break
        reported = _address(hop)
        if reported is None:
            break
        client = reported
    return client


@functools.lru_cache(maxsize=1024)
def parse_certificate(pem: str, via: Literal["tls", "proxy"]) -> ClientCertificate | None:
    """The certificate in ``pem``, or None if it is not one (remembered: a client presents the
    same certificate on every request)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return ClientCertificate(
        serial=format(certificate.serial_number, "x"),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        via=via,
    )


def _direct_certificate(scope: Scope) -> ClientCertificate | None:
    """The certificate CareVault's own TLS handshake verified (`carevault.api.tls`)."""
    tls: Any = scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain:
        return None
    return parse_certificate(str(chain[0]), "tls")


def _proxied_certificate(verdict: str | None, escaped: str | None) -> ClientCertificate | None:
    """The certificate the trusted proxy verified: only with its verdict ``SUCCESS``."""
    if verdict != "SUCCESS" or not escaped or len(escaped) > MAX_CERTIFICATE_CHARS:
        return None
    found = parse_certificate(unquote(escaped), "proxy")
    if found is None:
        log.warning("the trusted proxy passed a client certificate that does not parse")
    return found


class TransportIdentity:
    """ASGI middleware: the client's address and verified certificate, from the connection or,
    for a connection from a trusted proxy, from the proxy's headers (see the module)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[Network] = ()) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self.identify(scope)
        await self.app(scope, receive, send)

    def identify(self, scope: Scope) -> Scope:
        headers: list[tuple[bytes, bytes]] = []
        forwarded_for: list[str] = []
        verdict: str | None = None
        escaped: str | None = None
        for name, value in scope.get("headers", ()):
            if name not in TRANSPORT_HEADERS:
                headers.append((name, value))
            elif name == FORWARDED_FOR:
                forwarded_for.append(value.decode("latin-1"))
            elif name == CLIENT_VERIFY:
                verdict = value.decode("latin-1").strip()
            else:
                escaped = value.decode("latin-1").strip()
        client: tuple[str, int] | None = scope.get("client")
        peer = _address(client[0]) if client else None
        certificate: ClientCertificate | None
        if client and peer is not None and self.trusted and peer in self.trusted:
            address = forwarded_client(peer, forwarded_for, self.trusted)
            # The proxy's port says nothing about the client's.
            client = (str(address), client[1] if address == peer else 0)
            certificate = _proxied_certificate(verdict, escaped)
        else:
            certificate = _direct_certificate(scope)
        state = {**scope.get("state", {}), STATE_KEY: certificate}
        # In place: the server's own access log reads this same scope (and must see what the
        # middlewares inside make of it, a redacted token in the query string for one).
        scope.update({"headers": headers, "client": client, "state": state})
        return scope
