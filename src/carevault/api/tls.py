"""TLS spoken by ``carevault serve`` itself (``--tls-cert``, ``--tls-key``, ``--client-ca``).

The server context (`server_context`):

- TLS 1.2 and 1.3 only;
- for TLS 1.2, ECDHE key exchange with an AEAD cipher only (AES-GCM, ChaCha20-Poly1305): no
  static RSA key exchange (no forward secrecy), no CBC, no SHA-1 MACs; TLS 1.3's default
  suites, which are all AEAD with ephemeral key exchange;
- no compression, no renegotiation, no session tickets (whose key would outlive the
  connections it protects); the server chooses the cipher;
- with a client CA: client certificates are asked for and verified against it (the platform
  CA chain, ``carevault pki ca``). ``optional``: a client without a certificate is served,
  one with a certificate that does not verify is refused in the handshake (OpenSSL fails a
  handshake whose presented certificate does not verify, also when it is optional);
  ``required``: a client without one is refused too. Revocation is not checked here (no CRL is
  loaded): the token endpoint checks it on every token request (``docs/pki.md``).

`TlsHttpProtocol` is uvicorn's httptools protocol that also hands the application what the
handshake established, in the ASGI TLS extension (``scope["extensions"]["tls"]``: the verified
client certificate chain, its subject, the TLS version and cipher suite), where
`carevault.api.transport` reads it. (uvicorn itself does not fill that extension.)
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from carevault.api.transport import parse_certificate
from carevault.settings import ConfigurationError, Settings

# TLS 1.2: ephemeral elliptic-curve Diffie-Hellman with an AEAD cipher, nothing else.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass(frozen=True)
class TlsOptions:
    """What ``carevault serve`` needs to speak TLS; picklable, for the worker processes."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_cert: Literal["optional", "required"] = "optional"

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsOptions | None:
        """The settings' TLS options (after `Settings.check_transport`), or None: plain HTTP."""
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_client_ca_file,
            settings.tls_client_cert,
        )


def server_context(options: TlsOptions) -> ssl.SSLContext:
    """The server's TLS context (see the module); a file that cannot be used is named."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_NO_TICKET
        | ssl.OP_CIPHER_SERVER_PREFERENCE
    )
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"the TLS certificate {options.cert_file} and key {options.key_file} cannot be "
            f"used: {error}"
        ) from None
    if options.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=options.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(
                f"the client CA file {options.client_ca_file} cannot be used: {error}"
            ) from None
        context.verify_mode = (
            ssl.CERT_REQUIRED if options.client_cert == "required" else ssl.CERT_OPTIONAL
        )
    return context


@functools.lru_cache(maxsize=8)
def _suite_ids(context: ssl.SSLContext) -> dict[str, int]:
    """OpenSSL's cipher names to their IANA numbers (the low 16 bits of OpenSSL's id)."""
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension for a connection whose handshake is complete."""
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    parsed = parse_certificate(chain[0], "tls") if chain else None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        # Python 3.11 gives the peer's own certificate only, not the chain it verified.
        "client_cert_chain": chain,
        "client_cert_name": parsed.subject if parsed else None,
        # A certificate that does not verify ends the handshake: none reaches the application.
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _suite_ids(ssl_object.context).get(cipher[0]) if cipher else None,
    }


class TlsHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with the ASGI TLS extension in every request's scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls = tls_extension(ssl_object) if ssl_object is not None else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": dict(self._tls)}  # type: ignore[dict-item]
