"""Behind a reverse proxy: the platform believes the proxy's word about the client's address and
certificate only when the connection comes from a configured trusted proxy
(``CAREVAULT_TRUSTED_PROXIES``), and then everything that looks at the client uses it: the
audit entries (network address, ``tls-client``), the rate limiter and the developer's loopback
rule. The real nginx in front of a real server: tests/e2e/test_nginx.py.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Engine
from starlette.testclient import TestClient

from carevault.bootstrap import Platform, build
from carevault.settings import Settings
from support.backend import Holder, assertion, token_request
from support.tokens import TEST_PROFESSIONAL, professional_credentials

PROXY = "10.0.0.5"
CLIENT = "198.51.100.7"
RATE = 8


@pytest.fixture
def proxied(settings: Settings, engine: Engine) -> Platform:
    configured = settings.model_copy(update={
        "trusted_proxies": (ipaddress.ip_network(f"{PROXY}/32"),),
        "rate_limit_per_minute": RATE,
    })
    return build(configured, engine)


@pytest.fixture
def card(proxied: Platform) -> dict[str, Any]:
    token, key_pem, chain = professional_credentials(proxied)
    leaf = x509.load_der_x509_certificate(chain[0])
    return {"token": token, "holder": Holder(TEST_PROFESSIONAL, key_pem, chain,
                                             format(leaf.serial_number, "x")),
            "pem": leaf.public_bytes(Encoding.PEM).decode(),
            "serial": format(leaf.serial_number, "x")}


def connection(platform: Platform, peer: str) -> Iterator[TestClient]:
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=(peer, 40000)) as client:
        yield client


@pytest.fixture
def via_proxy(proxied: Platform) -> Iterator[TestClient]:
    yield from connection(proxied, PROXY)


@pytest.fixture
def direct(proxied: Platform) -> Iterator[TestClient]:
    yield from connection(proxied, CLIENT)


def proxy_headers(card: dict[str, Any], forwarded_for: str = CLIENT) -> dict[str, str]:
    """What deploy/nginx/carevault.conf sets for a client with a verified certificate."""
    return {"X-Forwarded-For": forwarded_for, "X-Client-Verify": "SUCCESS",
            "X-Client-Certificate": quote(card["pem"])}


def last_entry(platform: Platform, interaction: str) -> dict[str, Any]:
    size = platform.audit.size("clinical")
    entries = [json.loads(data) for _, data in platform.audit.entries("clinical", 0, size)]
    return next(e for e in reversed(entries) if e["interaction"] == interaction)


def test_the_proxy_s_verified_certificate_and_client_address_are_recorded(
    proxied: Platform, via_proxy: TestClient, card: dict[str, Any]
) -> None:
    response = via_proxy.get("/fhir/Patient", params={"family": "nobody"}, headers={
        **proxy_headers(card), "Authorization": f"Bearer {card['token']}"})

    assert response.status_code == 200, response.text
    entry = last_entry(proxied, "search-type")
    assert entry["agent"]["network"] == CLIENT  # the client, not the proxy
    assert entry["detail"]["tls-client"] == card["serial"]
    assert entry["detail"]["client_id"] == TEST_PROFESSIONAL


def test_the_token_request_records_the_certificate_too(
    proxied: Platform, via_proxy: TestClient, card: dict[str, Any]
) -> None:
    via_proxy.headers.update(proxy_headers(card))

    response = token_request(via_proxy, assertion(card["holder"], proxied))

    assert response.status_code == 200, response.text
    entry = last_entry(proxied, "token")
    assert entry["outcome"] == "0"
    assert entry["agent"]["network"] == CLIENT
    assert entry["detail"]["tls-client"] == card["serial"]


def test_the_same_headers_sent_straight_to_carevault_change_nothing(
    proxied: Platform, direct: TestClient, card: dict[str, Any]
) -> None:
    response = direct.get("/fhir/Patient", params={"family": "nobody"}, headers={
        **proxy_headers(card, forwarded_for="127.0.0.1"),
        "Authorization": f"Bearer {card['token']}"})

    assert response.status_code == 200, response.text
    entry = last_entry(proxied, "search-type")
    assert entry["agent"]["network"] == CLIENT  # its own address, not the one it claims
    assert "tls-client" not in entry["detail"]


def test_a_certificate_the_proxy_did_not_verify_is_not_recorded(
    proxied: Platform, via_proxy: TestClient, card: dict[str, Any]
) -> None:
    headers = {**proxy_headers(card), "X-Client-Verify": "FAILED:certificate revoked",
               "Authorization": f"Bearer {card['token']}"}

    assert via_proxy.get("/fhir/metadata", headers=headers).status_code == 200

    entry = last_entry(proxied, "capabilities")
    assert entry["agent"]["network"] == CLIENT
    assert "tls-client" not in entry["detail"]


def test_the_rate_limit_counts_each_client_behind_the_proxy(via_proxy: TestClient) -> None:
    def metadata(client: str) -> int:
        return via_proxy.get("/fhir/metadata", headers={"X-Forwarded-For": client}).status_code

    assert [metadata("192.0.2.1") for _ in range(RATE)] == [200] * RATE
    assert metadata("192.0.2.1") == 429
    # Another client behind the same proxy has its own bucket.
    assert metadata("192.0.2.2") == 200


def test_a_remote_client_behind_a_local_proxy_is_not_the_developer(
    via_proxy: TestClient, direct: TestClient
) -> None:
    """In dev, the audit entries are open to the developer on this machine (loopback): a
    proxy on this machine must not lend its loopback address to a remote client."""
    entries = "/audit/entries?start=0&end=1"

    assert via_proxy.get(entries, headers={"X-Forwarded-For": CLIENT}).status_code == 401
    assert via_proxy.get(entries, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    # Claiming loopback without the proxy gets nothing.
    assert direct.get(entries, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401
