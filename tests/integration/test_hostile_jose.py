"""Hostile JOSE input found by the parser fuzzers (tests/security/test_fuzz_parsers.py): each
was a 500 before, and is now the refusal any malformed token, assertion or signature gets.

- a JOSE header whose "crit" is not a list: joserfc raised TypeError before checking any
  signature, so any bearer token of that shape answered 500 on every FHIR path;
- JSON nested a few thousand levels deep in a client assertion (its header, or its payload,
  which the token endpoint reads to throttle per client) or in a document's detached
  signature: Python's JSON parser raised RecursionError.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.services.signatures import InvalidSignature, verify_detached
from carevault.services.tokens import ASSERTION_TYPE


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


DEEP = b64url(b"[" * 5000)
CRIT_NULL = b64url(json.dumps({"alg": "ES256", "crit": None}).encode())


@pytest.fixture
def anonymous(platform: Platform) -> Iterator[TestClient]:
    with TestClient(platform.app, raise_server_exceptions=False) as client:
        yield client


def test_a_bearer_token_with_a_malformed_crit_is_refused_not_a_500(
        anonymous: TestClient) -> None:
    answer = anonymous.get("/fhir/Patient",
                           headers={"Authorization": f"Bearer {CRIT_NULL}.e30.AAAA"})
    assert answer.status_code == 401, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("assertion", [f"e30.{DEEP}.AAAA", f"{DEEP}.e30.AAAA"],
                         ids=["deep-payload", "deep-header"])
def test_a_deeply_nested_client_assertion_is_refused_not_a_500(
        anonymous: TestClient, assertion: str) -> None:
    answer = anonymous.post("/oauth/token", data={
        "grant_type": "client_credentials", "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"


def test_a_deeply_nested_signature_header_is_an_invalid_signature(platform: Platform) -> None:
    with platform.unit_of_work() as uow, pytest.raises(InvalidSignature, match="header"):
        verify_detached(uow, f"{DEEP}..AAAA".encode(), b"%PDF-1.7", datetime.now(UTC))
