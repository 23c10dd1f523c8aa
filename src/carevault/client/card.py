"""The professional's card on their own machine: proving possession of its key to enrol a
passkey in the workspace (``carevault card enrol``).

The card folder is what ``carevault pki issue-practitioner --out`` writes: ``cert.pem``,
``key.pem`` (never leaves the machine) and ``chain.pem``. The command asks the platform for a
challenge, signs it in a short client assertion (RFC 7523: ES256, the certificate chain in
``x5c``, ``aud`` the enrolment endpoint, the challenge as a claim) and receives a one-time
enrolment code to type in the browser. The audience is computed here from the address the
professional gave, never taken from the server's answer: a server that is not the platform
must not obtain an assertion the platform's token endpoint would accept.
"""

from __future__ import annotations

import base64
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jws, jwt
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from carevault.adapters.pki.x509_authority import client_id_from_uri
from carevault.domain.errors import CareVaultError, InvalidInput, NotAuthenticated

CHALLENGE_PATH = "/workspace/card/challenge"
ENROL_PATH = "/workspace/card/enrol"
ASSERTION_LIFETIME_SECONDS = 120
TIMEOUT_SECONDS = 30.0
_REGISTRY = JWSRegistry(algorithms=["ES256"])
_REGISTRY.max_header_length = 8_192  # an x5c chain of two certificates


@dataclass(frozen=True)
class Enrolment:
    code: str
    expires_at: str
    enrol_url: str


class CardUnreadable(InvalidInput):
    """The card folder lacks a file, or holds something that is not a card."""


def _read_card(card: Path) -> tuple[list[x509.Certificate], bytes, str]:
    try:
        chain = [
            x509.load_pem_x509_certificate((card / name).read_bytes())
            for name in ("cert.pem", "chain.pem")
        ]
        key = (card / "key.pem").read_bytes()
    except OSError as error:
        raise CardUnreadable(f"cannot read the card folder {card}: {error.strerror}") from None
    except ValueError:
        raise CardUnreadable(f"{card} holds something that is not a PEM certificate") from None
    try:
        names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    client_id = next((c for c in map(client_id_from_uri, uris) if c), None)
    if client_id is None:
        raise CardUnreadable("the card's certificate names no CareVault client")
    return chain, key, client_id


def detached_jws(content: bytes, key_pem: bytes, chain_der: list[bytes]) -> bytes:
    """An author's signature over ``content`` as IHE DSG carries it: a compact JWS (ES256)
    whose payload is detached (RFC 7515 appendix F: ``header..signature``), the signer's
    chain in ``x5c``."""
    header = {"alg": "ES256", "x5c": [base64.b64encode(der).decode() for der in chain_der]}
    token = jws.serialize_compact(header, content, ECKey.import_key(key_pem))
    protected, _payload, signature = token.split(".")
    return f"{protected}..{signature}".encode("ascii")


def sign(card: Path, content: bytes) -> bytes:
    """The card holder's detached signature over ``content`` (`detached_jws`): what the
    workspace's publication form and an ITI-65 source send beside the document."""
    chain, key, _client_id = _read_card(card)
    return detached_jws(content, key, [c.public_bytes(Encoding.DER) for c in chain])


def assertion(card: Path, audience: str, challenge: str | None, now: float | None = None) -> str:
    """The card's signed answer to ``challenge``, for ``audience``; without a challenge, the
    client assertion of SMART Backend Services (RFC 7523) for the token endpoint."""
    chain, key, client_id = _read_card(card)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
        "jti": uuid.uuid4().hex,
        **({"challenge": challenge} if challenge is not None else {}),
    }
    header = {
        "alg": "ES256",
        "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain],
    }
    try:
        signing_key = ECKey.import_key(key)
    except ValueError:
        raise CardUnreadable("key.pem is not the card's EC private key") from None
    return jwt.encode(header, claims, signing_key, algorithms=["ES256"], registry=_REGISTRY)


def enrol(base: str, card: Path, verify: ssl.SSLContext | bool = True) -> Enrolment:
    """Prove possession of the card's key to the platform at ``base``; the enrolment code."""
    base = base.rstrip("/")
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, verify=verify) as http:
            asked = http.post(base + CHALLENGE_PATH)
            if asked.status_code != 200:
                raise NotAuthenticated(f"the platform gave no challenge ({asked.status_code})")
            challenge = asked.json().get("challenge")
            if not isinstance(challenge, str):
                raise NotAuthenticated("the platform's answer holds no challenge")
            signed = assertion(card, base + ENROL_PATH, challenge)
            answered = http.post(base + ENROL_PATH, data={"client_assertion": signed})
    except httpx.HTTPError as error:
        raise CareVaultError(f"cannot reach {base}: {error}") from None
    except ValueError:
        raise CareVaultError(f"{base} did not answer as CareVault does") from None
    try:
        body = answered.json()
    except ValueError:
        raise CareVaultError(f"{base} did not answer as CareVault does") from None
    if answered.status_code != 200:
        raise NotAuthenticated(f"the card was refused: {body.get('error', answered.status_code)}")
    return Enrolment(str(body["code"]), str(body["expires_at"]), str(body["enrol_url"]))


__all__ = ["CardUnreadable", "Enrolment", "assertion", "enrol"]
