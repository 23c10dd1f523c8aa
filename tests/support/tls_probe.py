"""TLS handshakes from the client's side, with Python's ``ssl`` (OpenSSL), to find out what a
server accepts and refuses.

Debian's OpenSSL refuses TLS 1.0 and 1.1, and weak suites, on the client side too (security
level 2 in /etc/ssl/openssl.cnf): a probe lowers its own security level to 0 so that it can
still offer them. A refusal only means something if the same probe is accepted by a server
that allows it: `PermissiveServer` is that control, a server that accepts every version and
suite this OpenSSL still has.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# What the probes offer beyond what the server under test should accept.
OLD_VERSIONS = {"TLS 1.0": ssl.TLSVersion.TLSv1, "TLS 1.1": ssl.TLSVersion.TLSv1_1}
# TLS 1.2 suites without forward secrecy or without AEAD (with an RSA server key). DHE,
# 3DES and RC4 are not listed: this OpenSSL's default provider no longer offers them at all.
WEAK_SUITES = {
    "RSA key exchange (no forward secrecy)": "AES128-GCM-SHA256",
    "CBC with SHA-1": "ECDHE-RSA-AES128-SHA",
    "CBC with SHA-256": "ECDHE-RSA-AES128-SHA256",
}
REQUEST = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Outcome:
    """What a probe got: the negotiated version and suite and the first bytes of the answer,
    or the error that ended it."""

    version: str | None = None
    cipher: str | None = None
    answer: bytes = b""
    error: Exception | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.answer.startswith(b"HTTP/1.1 ")


def client_context(*, ca: Path | None = None, maximum: ssl.TLSVersion | None = None,
                   ciphers: str | None = None, cert: tuple[Path, Path] | None = None,
                   insecure_allowed: bool = False) -> ssl.SSLContext:
    """A client context; ``insecure_allowed`` lowers OpenSSL's security level to 0 and the
    least version to TLS 1.0 so that old versions and weak suites can be offered."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1 is deprecated
        if insecure_allowed:
            context.minimum_version = ssl.TLSVersion.TLSv1
        if maximum is not None:
            context.maximum_version = maximum
    if ciphers is not None or insecure_allowed:
        context.set_ciphers(f"{ciphers or 'ALL'}{':@SECLEVEL=0' if insecure_allowed else ''}")
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def probe(port: int, context: ssl.SSLContext, host: str = "127.0.0.1",
          server_name: str = "localhost", request: bytes = REQUEST) -> Outcome:
    """Connect, send ``request`` and read the first bytes of the answer."""
    version = cipher = None
    try:
        with socket.create_connection((host, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            version, cipher = tls.version(), tls.cipher()[0]
            tls.sendall(request)
            answer = tls.recv(64)
            return Outcome(version, cipher, answer)
    except (OSError, ssl.SSLError) as error:  # SSLError is an OSError; said for the reader
        return Outcome(version, cipher, error=error)


class PermissiveServer:
    """A TLS server on 127.0.0.1 that accepts TLS 1.0 to 1.3 and every suite OpenSSL still
    has, and answers every request with ``HTTP/1.1 200 OK``: the control of a refusal."""

    def __init__(self, certificate: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.context.minimum_version = ssl.TLSVersion.TLSv1
        self.context.set_ciphers("ALL:@SECLEVEL=0")
        self.context.load_cert_chain(certificate, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)  # so that the loop sees `_stop`
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), raw:
                raw.settimeout(10)
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(1024)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    @contextlib.contextmanager
    def running(self) -> Iterator[PermissiveServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
            self.listener.close()
