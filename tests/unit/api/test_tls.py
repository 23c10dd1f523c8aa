"""The TLS context of `carevault serve --tls-cert …`: what it offers, before any socket opens
(the end-to-end test, tests/e2e/test_tls.py, shows what a real handshake accepts and refuses)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from carevault.api.tls import TlsOptions, server_context
from carevault.settings import ConfigurationError
from support.x509_ca import LocalCa


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def options(ca: LocalCa) -> TlsOptions:
    server = ca.server(rsa_key=True)
    return TlsOptions(server.certificate, server.key)


def test_tls_1_2_is_the_least_version(options: TlsOptions) -> None:
    context = server_context(options)

    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.options & ssl.OP_NO_TICKET


def test_only_ephemeral_key_exchange_with_aead_ciphers(options: TlsOptions) -> None:
    ciphers = server_context(options).get_ciphers()
    tls12 = [c for c in ciphers if c["protocol"] == "TLSv1.2"]
    tls13 = [c for c in ciphers if c["protocol"] == "TLSv1.3"]

    assert tls12, "no TLS 1.2 cipher left"
    assert all(c["kea"] == "kx-ecdhe" and c["aead"] for c in tls12), tls12
    assert {c["name"] for c in tls13} >= {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"}
    assert all(c["aead"] for c in tls13)
    assert not [c for c in ciphers if c["protocol"] not in ("TLSv1.2", "TLSv1.3")]


def test_client_certificates_are_asked_for_only_with_a_ca(ca: LocalCa,
                                                          options: TlsOptions) -> None:
    assert server_context(options).verify_mode is ssl.CERT_NONE
    optional = TlsOptions(options.cert_file, options.key_file, ca.pem, "optional")
    required = TlsOptions(options.cert_file, options.key_file, ca.pem, "required")

    assert server_context(optional).verify_mode is ssl.CERT_OPTIONAL
    assert server_context(required).verify_mode is ssl.CERT_REQUIRED


def test_an_unusable_file_is_named(ca: LocalCa, options: TlsOptions, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match=r"missing\.pem"):
        server_context(TlsOptions(missing, options.key_file))
    # A key that is not the certificate's.
    other = ca.server("other")
    with pytest.raises(ConfigurationError, match="cannot be used"):
        server_context(TlsOptions(options.cert_file, other.key))
    with pytest.raises(ConfigurationError, match="client CA file"):
        server_context(TlsOptions(options.cert_file, options.key_file, missing))
