"""Authors' signatures over their documents (IHE DSG, as MHD carries it).

A signature is a JWS in compact serialization with a *detached* payload (RFC 7515 appendix F:
``header..signature``): the payload is the exact bytes of the signed document, which travel
beside it. The header names the algorithm (ES256 or EdDSA) and carries the signer's certificate
chain (``x5c``, leaf first). We check the chain up to the platform CA and against revocation (the
same check as a client certificate's), then the signature over the document's bytes. Because the
signature is stored and served as a document itself, any reader can verify the author without
trusting CareVault: they need the bytes, the JWS and the platform's CA certificate.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

from carevault.domain.errors import BusinessRuleViolation
from carevault.services.pki import CertificateRejected, ClientIdentity, validate_client_chain
from carevault.services.unit_of_work import UnitOfWork

ALGORITHMS = ("ES256", "EdDSA")
MAX_SIGNATURE_BYTES = 32_768
_REGISTRY = JWSRegistry(algorithms=list(ALGORITHMS))
_REGISTRY.max_header_length = 16_384  # an x5c chain of two certificates needs a few KB


class InvalidSignature(BusinessRuleViolation):
    """The author's signature is missing, malformed, or does not verify."""


def _b64url(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidSignature(f"the signature's {what} is not base64url") from None


def _chain(header: dict[str, object]) -> Sequence[bytes]:
    chain = header.get("x5c")
    if not isinstance(chain, list) or not 1 <= len(chain) <= 2:
        raise InvalidSignature("the signature's header needs x5c: the signer's chain, leaf first")
    try:
        return [base64.b64decode(str(item), validate=True) for item in chain]
    except (binascii.Error, ValueError):
        raise InvalidSignature("x5c must hold base64 DER certificates") from None


def verify_detached(
    uow: UnitOfWork, signature: bytes, content: bytes, now: datetime
) -> ClientIdentity:
    """The identity whose certificate signed exactly ``content``; `InvalidSignature` otherwise."""
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise InvalidSignature(f"the signature is larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        text = signature.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidSignature("the signature is not a compact JWS (ASCII)") from None
    parts = text.split(".")
    if len(parts) != 3:
        raise InvalidSignature("the signature is not a compact JWS (header.payload.signature)")
    if parts[1]:
        raise InvalidSignature("the signature's JWS payload must be detached (RFC 7515 appendix F)")
    try:
        header = json.loads(_b64url(parts[0], "header"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise InvalidSignature("the signature's header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") not in ALGORITHMS:
        raise InvalidSignature(f"the signature's alg must be one of {', '.join(ALGORITHMS)}")
    if header.get("b64") is False:
        raise InvalidSignature("unencoded payloads (b64: false) are not accepted")
    try:
        identity = validate_client_chain(uow, _chain(header), now)
    except CertificateRejected as error:
        raise InvalidSignature(
            f"the signer's certificate is not accepted: {error.message}"
        ) from None
    pem = identity.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # The platform certifies ECDSA keys only: an EdDSA header names a key it cannot hold.
        key = ECKey.import_key(pem) if header["alg"] == "ES256" else OKPKey.import_key(pem)
        jws.deserialize_compact(
            text, key, algorithms=[str(header["alg"])], registry=_REGISTRY, payload=content
        )
    # joserfc raises TypeError on a "crit" that is not a list (and see the header above).
    except (JoseError, ValueError, TypeError, RecursionError):
        raise InvalidSignature("the signature does not verify over the document's bytes") from None
    return identity
