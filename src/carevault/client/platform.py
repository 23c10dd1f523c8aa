"""The professional's client talking to the platform's HTTP API with their card: a SMART
Backend Services token (RFC 7523 client assertion signed by the card key, traded at
``/oauth/token``), the mailbox (``/messaging/mailbox``), a recipient's encryption certificates
in the directory (mCSD ITI-90: their secure-email ``Endpoint``) and the filing of a document
into a patient's record (IHE MHD ITI-65 at ``/fhir``, `carevault.client.documents` builds it).

Everything here is what any HTTP client could do; ``http`` is an `httpx.Client` the caller
opens (with the TLS trust it needs), so that the tests can hand it the application itself.
``base`` is the platform's public address, as its tokens name it (their audience).

Errors: `PlatformRefused` (a `CareVaultError`) with the platform's own words and its status;
`CareVaultError` for a platform that cannot be reached or does not answer as CareVault does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from carevault.client.card import assertion
from carevault.domain.errors import CareVaultError
from carevault.fhirmodel.endpoint import (
    URI_SYSTEM,
    encryption_certificates,
    is_mail_endpoint,
    mailto,
)

__all__ = [
    "ASSERTION_TYPE",
    "DIRECTORY_SCOPE",
    "FILING_SCOPE",
    "MAILBOX_PATH",
    "MAILBOX_SCOPE",
    "Mailbox",
    "MailboxEntry",
    "PlatformRefused",
    "access_token",
    "mail_certificates",
    "provide",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAILBOX_PATH = "/messaging/mailbox"
MAILBOX_SCOPE = "system/Communication.rs"
FILING_SCOPE = "system/*.rs system/DocumentReference.cu"
DIRECTORY_SCOPE = "system/Endpoint.rs"


class PlatformRefused(CareVaultError):
    def __init__(self, status: int, said: str) -> None:
        super().__init__(f"refused ({status}): {said}")
        self.status = status


def _said(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        if isinstance(body.get("error_description"), str):
            return str(body["error_description"])
        if isinstance(body.get("error"), str):
            return str(body["error"])
        issues = body.get("issue")
        if isinstance(issues, list) and issues and isinstance(issues[0], dict):
            return str(issues[0].get("diagnostics", issues[0].get("code", "")))
    return response.text[:300]


def _send(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return http.request(method, url, **kwargs)
    except httpx.HTTPError as error:
        raise CareVaultError(f"cannot reach {url}: {error}") from None


def access_token(http: httpx.Client, base: str, card: Path, scope: str) -> str:
    """A 5-minute access token for the card's professional, with what of ``scope`` the
    platform grants."""
    endpoint = base.rstrip("/") + "/oauth/token"
    signed = assertion(card, endpoint, None)
    answered = _send(
        http,
        "POST",
        endpoint,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
    )
    if answered.status_code != 200:
        raise PlatformRefused(answered.status_code, _said(answered))
    try:
        token = answered.json()["access_token"]
    except (ValueError, KeyError, TypeError):
        raise CareVaultError(f"{base} did not answer as CareVault does") from None
    return str(token)


@dataclass(frozen=True)
class MailboxEntry:
    id: str
    size: int
    received: str
    seen: bool


class Mailbox:
    """The professional's own mailbox over HTTP (the token decides whose it is)."""

    def __init__(self, http: httpx.Client, base: str, token: str) -> None:
        self.http = http
        self.url = base.rstrip("/") + MAILBOX_PATH
        self.headers = {"Authorization": f"Bearer {token}"}

    def listing(self) -> tuple[str, list[MailboxEntry]]:
        """Your address and your messages, oldest first."""
        answered = _send(self.http, "GET", self.url, headers=self.headers)
        if answered.status_code != 200:
            raise PlatformRefused(answered.status_code, _said(answered))
        try:
            body = answered.json()
            return str(body["address"]), [
                MailboxEntry(str(m["id"]), int(m["size"]), str(m["received"]), bool(m["seen"]))
                for m in body["messages"]
            ]
        except (ValueError, KeyError, TypeError):
            raise CareVaultError("the mailbox did not answer as CareVault does") from None

    def fetch(self, message_id: str) -> bytes:
        """One message exactly as delivered (encrypted: `carevault.client.messaging.read`)."""
        answered = _send(
            self.http, "GET", f"{self.url}/{_segment(message_id)}", headers=self.headers
        )
        if answered.status_code != 200:
            raise PlatformRefused(answered.status_code, _said(answered))
        return answered.content

    def delete(self, message_id: str) -> None:
        answered = _send(
            self.http, "DELETE", f"{self.url}/{_segment(message_id)}", headers=self.headers
        )
        if answered.status_code != 204:
            raise PlatformRefused(answered.status_code, _said(answered))


def mail_certificates(http: httpx.Client, base: str, token: str, address: str) -> list[bytes]:
    """The encryption certificates (PEM, newest first) the directory publishes for a messaging
    address: its secure-email Endpoint, found as any mCSD client would
    (``Endpoint?identifier=urn:ietf:rfc:3986|mailto:…``). `CareVaultError` if the address has
    no mailbox, or one that cannot receive now (revoked, suspended)."""
    answered = _send(
        http,
        "GET",
        base.rstrip("/") + "/fhir/Endpoint",
        params={"identifier": f"{URI_SYSTEM}|{mailto(address)}"},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
    )
    if answered.status_code != 200:
        raise PlatformRefused(answered.status_code, _said(answered))
    try:
        entries = answered.json().get("entry", [])
        found = [e["resource"] for e in entries if is_mail_endpoint(e["resource"], address)]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CareVaultError(f"{base} did not answer the directory as CareVault does") from None
    if not found:
        raise CareVaultError(f"{address} has no mailbox in the directory")
    endpoint = found[0]
    if endpoint.get("status") != "active":
        raise CareVaultError(f"{address} cannot receive: its mailbox is {endpoint.get('status')}")
    certificates = encryption_certificates(endpoint)
    if not certificates:
        raise CareVaultError(f"{address} publishes no encryption certificate")
    return certificates


def _segment(message_id: str) -> str:
    """A message id as one path segment (ids never hold a slash: refuse one that does)."""
    if not message_id or "/" in message_id or message_id in (".", ".."):
        raise CareVaultError(f"{message_id!r} is not a message id")
    return httpx.URL(message_id).raw_path.decode("ascii")


def provide(http: httpx.Client, base: str, token: str, bundle: dict[str, Any]) -> list[str]:
    """Submit an ITI-65 Provide Document Bundle; the ids of the DocumentReferences made."""
    answered = _send(
        http,
        "POST",
        base.rstrip("/") + "/fhir",
        json=bundle,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    if answered.status_code != 200:
        raise PlatformRefused(answered.status_code, _said(answered))
    made = []
    try:
        for entry in answered.json()["entry"]:
            location = str(entry["response"]["location"])
            if "DocumentReference/" in location:
                made.append(location.split("DocumentReference/")[1].split("/")[0])
    except (ValueError, KeyError, TypeError):
        raise CareVaultError(f"{base} did not answer the submission as CareVault does") from None
    return made
