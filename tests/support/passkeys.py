"""A software WebAuthn authenticator and a professional's card, for the workspace's tests.

The authenticator does what a platform authenticator does for a relying party, built from
`cryptography` and `cbor2` only (not from the `webauthn` library the server verifies with):
a P-256 key per credential, "none" attestation, user presence and verification flags, a
signature counter, and the JSON a browser's ``PublicKeyCredential.toJSON()`` gives. The
browser tests use Chromium's own virtual authenticator instead (tests/e2e).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services import pki

UP, UV, AT = 0x01, 0x04, 0x40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftwareAuthenticator:
    origin: str
    rp_id: str = "localhost"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))
    sign_count: int = 0
    user_handle: bytes = b""

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """``navigator.credentials.create`` for these creation options."""
        assert options["rp"]["id"] == self.rp_id
        self.user_handle = unb64(options["user"]["id"])
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        attested = bytes(16) + len(self.credential_id).to_bytes(2, "big") + self.credential_id
        auth_data = (hashlib.sha256(self.rp_id.encode()).digest() + bytes([UP | UV | AT])
                     + self.sign_count.to_bytes(4, "big") + attested + cose)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": b64(self.credential_id), "rawId": b64(self.credential_id),
                "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64(client_data),
                             "attestationObject": b64(attestation),
                             "transports": ["internal"]}}

    def get(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """``navigator.credentials.get`` for these request options (a discoverable passkey)."""
        assert options["rpId"] == self.rp_id
        self.sign_count += 1
        auth_data = (hashlib.sha256(self.rp_id.encode()).digest() + bytes([UP | UV])
                     + self.sign_count.to_bytes(4, "big"))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": b64(self.credential_id), "rawId": b64(self.credential_id),
                "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": b64(client_data),
                             "authenticatorData": b64(auth_data), "signature": b64(signature),
                             "userHandle": b64(self.user_handle)}}


@dataclass(frozen=True)
class Card:
    """A professional registered in the directory, with a card of the platform CA written to
    ``folder`` as ``carevault pki issue-practitioner --out`` writes it."""

    practitioner_id: str
    identifier: str
    serial: str
    folder: Path


def issue_card(platform: Platform, folder: Path, identifier: str = "HP-CARD-1",
               family: str = "Kartenhalter", profession: str = "physician",
               specialty: str | None = "general-practice") -> Card:
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems,
                             ca_password=ca_key_password(platform.settings.key_source),
                             clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki_ctx)
    with platform.unit_of_work() as uow:
        known = uow.directory.practitioner_ids_by_identifier([identifier])
    if identifier not in known:
        with platform.unit_of_work() as uow:
            svc.register_professionals(uow, ctx, [svc.NewProfessional(
                new_practitioner(ctx.systems, identifier=identifier, family=family,
                                 given=["Clara"]), profession, specialty)])
        with platform.unit_of_work() as uow:
            known = uow.directory.practitioner_ids_by_identifier([identifier])
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_practitioner_certificate(uow, pki_ctx, known[identifier], issued.append)
    credentials = issued[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_text(credentials.record.certificate_pem)
    (folder / "chain.pem").write_text(credentials.chain_pem)
    (folder / "key.pem").write_bytes(credentials.private_key_pem)
    (folder / "key.pem").chmod(0o600)
    return Card(known[identifier], identifier, credentials.record.serial, folder)


__all__ = ["Card", "SoftwareAuthenticator", "b64", "issue_card", "unb64"]
