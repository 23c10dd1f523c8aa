"""Tests for `Settings.check_deployable`: development defaults are refused outside dev; and for
the public address, which in dev follows the address served unless it is set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from carevault.settings import (
    DEV_DATABASE_URL,
    DEV_KEY_SOURCE,
    DEV_PUBLIC_BASE_URL,
    ConfigurationError,
    Settings,
)

DEPLOYED = ("integration", "preprod", "prod")
GOOD: dict[str, Any] = {
    "key_source": "file:/etc/carevault/keys",
    "database_url": "postgresql+psycopg://carevault@db.internal/carevault",
    "public_base_url": "https://carevault.example.lu",
}


@pytest.fixture(autouse=True)
def _no_carevault_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CAREVAULT_"):
            monkeypatch.delenv(name)


def make(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def test_defaults_are_the_development_ones() -> None:
    settings = make()
    assert settings.environment == "dev"
    assert settings.key_source == DEV_KEY_SOURCE
    assert settings.database_url == DEV_DATABASE_URL
    assert settings.public_base_url is None
    assert settings.public_url == DEV_PUBLIC_BASE_URL


def test_dev_accepts_the_defaults() -> None:
    make(environment="dev").check_deployable()


def test_dev_accepts_anything() -> None:
    make(
        environment="dev", public_base_url="http://10.0.0.5:8000", key_source=""
    ).check_deployable()


@pytest.mark.parametrize("environment", DEPLOYED)
def test_default_key_source_is_refused(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="CAREVAULT_KEY_SOURCE") as caught:
        make(environment=environment).check_deployable()
    assert environment in str(caught.value)


@pytest.mark.parametrize("environment", DEPLOYED)
@pytest.mark.parametrize("key_source", ["", "   "])
def test_empty_key_source_is_refused(environment: str, key_source: str) -> None:
    settings = make(environment=environment, **{**GOOD, "key_source": key_source})
    with pytest.raises(ConfigurationError, match="CAREVAULT_KEY_SOURCE"):
        settings.check_deployable()


@pytest.mark.parametrize("environment", DEPLOYED)
def test_default_database_url_is_refused(environment: str) -> None:
    settings = make(environment=environment, **{**GOOD, "database_url": DEV_DATABASE_URL})
    with pytest.raises(ConfigurationError, match="CAREVAULT_DATABASE_URL") as caught:
        settings.check_deployable()
    assert environment in str(caught.value)


@pytest.mark.parametrize("environment", DEPLOYED)
def test_default_public_url_is_refused(environment: str) -> None:
    settings = make(environment=environment, **{**GOOD, "public_base_url": DEV_PUBLIC_BASE_URL})
    with pytest.raises(ConfigurationError, match="CAREVAULT_PUBLIC_BASE_URL"):
        settings.check_deployable()


@pytest.mark.parametrize("environment", DEPLOYED)
@pytest.mark.parametrize("unset", [None, "", "  "])
def test_an_unset_public_url_is_refused(environment: str, unset: str | None) -> None:
    """Outside dev the public address is required: nothing derives it from the address the
    server listens on (behind a proxy, that is not what clients use)."""
    settings = make(environment=environment, **{**GOOD, "public_base_url": unset})
    assert settings.served_at("127.0.0.1", 8100).public_base_url is None
    with pytest.raises(ConfigurationError, match="CAREVAULT_PUBLIC_BASE_URL is not set") as caught:
        settings.served_at("127.0.0.1", 8100).check_deployable()
    assert environment in str(caught.value)
    with pytest.raises(ConfigurationError, match="CAREVAULT_PUBLIC_BASE_URL"):
        _ = settings.public_url


@pytest.mark.parametrize("environment", DEPLOYED)
def test_the_development_default_is_refused_even_with_a_slash(environment: str) -> None:
    slash = DEV_PUBLIC_BASE_URL + "/"
    settings = make(environment=environment, **{**GOOD, "public_base_url": slash})
    with pytest.raises(ConfigurationError, match="development default"):
        settings.check_deployable()


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("127.0.0.1", 8100, "http://127.0.0.1:8100"),
    ("0.0.0.0", 8100, "http://127.0.0.1:8100"),  # every interface: the loopback one too
    ("::", 8443, "http://[::1]:8443"),
    ("::1", 9000, "http://[::1]:9000"),
    ("10.0.0.5", 8000, "http://10.0.0.5:8000"),
    ("localhost", 8001, "http://localhost:8001"),
])
def test_in_dev_an_unset_public_url_follows_the_address_served(
        host: str, port: int, expected: str) -> None:
    served = make(environment="dev").served_at(host, port)
    assert served.public_url == expected
    served.check_deployable()


def test_in_dev_a_public_url_that_is_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREVAULT_PUBLIC_BASE_URL", "https://proxy.example.lu/")
    assert make().served_at("127.0.0.1", 8100).public_url == "https://proxy.example.lu"
    monkeypatch.setenv("CAREVAULT_PUBLIC_BASE_URL", "")  # set but empty: unset
    assert make().served_at("127.0.0.1", 8100).public_url == "http://127.0.0.1:8100"


@pytest.mark.parametrize("environment", DEPLOYED)
def test_outside_dev_the_public_url_set_is_kept(environment: str) -> None:
    settings = make(environment=environment, **GOOD).served_at("127.0.0.1", 8100)
    assert settings.public_url == GOOD["public_base_url"]
    settings.check_deployable()


@pytest.mark.parametrize("environment", DEPLOYED)
@pytest.mark.parametrize(
    "url", ["http://carevault.example.lu", "carevault.example.lu", "ftp://carevault.example.lu"]
)
def test_non_https_public_url_is_refused(environment: str, url: str) -> None:
    settings = make(environment=environment, **{**GOOD, "public_base_url": url})
    with pytest.raises(ConfigurationError, match="CAREVAULT_PUBLIC_BASE_URL must be https"):
        settings.check_deployable()


@pytest.mark.parametrize("environment", DEPLOYED)
def test_properly_configured_deployment_passes(environment: str) -> None:
    make(environment=environment, **GOOD).check_deployable()


def test_the_variables_named_in_messages_are_the_ones_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREVAULT_ENVIRONMENT", "prod")
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", GOOD["key_source"])
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", GOOD["database_url"])
    monkeypatch.setenv("CAREVAULT_PUBLIC_BASE_URL", GOOD["public_base_url"])
    settings = make()
    assert settings.environment == "prod"
    settings.check_deployable()
    monkeypatch.delenv("CAREVAULT_PUBLIC_BASE_URL")
    with pytest.raises(ConfigurationError, match="CAREVAULT_PUBLIC_BASE_URL"):
        make().check_deployable()


# --- the transport: `Settings.check_transport` (carevault serve) -------------------------------

TLS = {"tls_cert_file": Path("/etc/carevault/tls/cert.pem"),
       "tls_key_file": Path("/etc/carevault/tls/key.pem")}


@pytest.mark.parametrize("environment", DEPLOYED)
def test_plain_http_without_a_trusted_proxy_is_refused_outside_dev(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="CAREVAULT_TRUSTED_PROXIES") as caught:
        make(environment=environment, **GOOD).check_transport()
    assert "CAREVAULT_TLS_CERT_FILE" in str(caught.value)
    assert environment in str(caught.value)


@pytest.mark.parametrize("environment", DEPLOYED)
def test_tls_or_a_trusted_proxy_is_accepted_outside_dev(environment: str) -> None:
    make(environment=environment, **GOOD, **TLS).check_transport()
    make(environment=environment, **GOOD, trusted_proxies="10.0.0.5").check_transport()


def test_dev_may_serve_plain_http() -> None:
    make().check_transport()


@pytest.mark.parametrize("half", ["tls_cert_file", "tls_key_file"])
def test_half_a_tls_configuration_is_refused(half: str) -> None:
    with pytest.raises(ConfigurationError, match="both a certificate and its key"):
        make(**{half: TLS[half]}).check_transport()


def test_client_certificates_need_tls_and_a_ca() -> None:
    with pytest.raises(ConfigurationError, match="needs TLS"):
        make(tls_client_ca_file=Path("/etc/carevault/ca.pem")).check_transport()
    with pytest.raises(ConfigurationError, match="CAREVAULT_TLS_CLIENT_CA_FILE"):
        make(**TLS, tls_client_cert="required").check_transport()
    make(**TLS, tls_client_ca_file=Path("/etc/carevault/ca.pem"),
         tls_client_cert="required").check_transport()


def test_trusted_proxies_are_read_as_addresses_and_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert make().trusted_proxies == ()
    monkeypatch.setenv("CAREVAULT_TRUSTED_PROXIES", "10.0.0.5, 192.168.1.0/24 ::1")
    assert [str(n) for n in make().trusted_proxies] == [
        "10.0.0.5/32", "192.168.1.0/24", "::1/128"]
    monkeypatch.setenv("CAREVAULT_TRUSTED_PROXIES", "10.0.0.5, proxy.internal")
    with pytest.raises(ValueError, match="CAREVAULT_TRUSTED_PROXIES"):
        make()
