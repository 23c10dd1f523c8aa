"""SMART Backend Services from the client's side, written with PyJWT (not CareVault's JOSE code):
certificate holders, their signed client assertions (RFC 7523) and token requests over HTTP."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.services import pki
from carevault.services.tokens import ASSERTION_TYPE


def now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass
class Holder:
    """What a certificate holder has: a client_id, a private key, a certificate chain."""

    client_id: str
    key_pem: bytes
    chain_der: list[bytes]
    serial: str
    practitioner_id: str | None = None


def holder(credentials: pki.Credentials) -> Holder:
    leaf = x509.load_pem_x509_certificate(credentials.record.certificate_pem.encode())
    issuing = x509.load_pem_x509_certificate(credentials.chain_pem.encode())
    return Holder(credentials.record.client_id, credentials.private_key_pem,
                  [c.public_bytes(serialization.Encoding.DER) for c in (leaf, issuing)],
                  credentials.record.serial, credentials.record.practitioner_id)


def assertion(holder: Holder, platform: Platform, *, lifetime: int = 120,
              jti: str | None = None, **claims: Any) -> str:
    """A client assertion as any SMART client library would build it (RFC 7523)."""
    issued = int(now().timestamp())
    payload = {"iss": holder.client_id, "sub": holder.client_id,
               "aud": platform.tokens.token_endpoint, "iat": issued, "exp": issued + lifetime,
               "jti": jti or uuid.uuid4().hex, **claims}
    x5c = [base64.b64encode(der).decode() for der in holder.chain_der]
    return pyjwt.encode(payload, holder.key_pem, algorithm="ES256", headers={"x5c": x5c})


def token_request(client: TestClient, signed: str, scope: str = "system/*.rs") -> Any:
    return client.post("/oauth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed})


def get_token(client: TestClient, holder: Holder, platform: Platform, *,
              scope: str = "system/*.rs", **claims: Any) -> str:
    response = token_request(client, assertion(holder, platform, **claims), scope)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
