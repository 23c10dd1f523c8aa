"""What every WebAuthn ceremony of CareVault shares: the relying party, the refusal, and
reading the browser's credential JSON (its challenge, its id) before the `webauthn` library
(py_webauthn) verifies it against what the server stored.

The professionals' passkeys (`workspace_signin`) and the patients' (`account_passkeys`) both
use it; challenges are kept as their SHA-256 only (`challenge_hash`), used at most once.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, parse_client_data_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRequestOptions,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from carevault.domain.errors import NotAuthenticated

CEREMONY_TIMEOUT_MS = 120_000
MAX_CREDENTIAL_BYTES = 6_000  # a passkey's JSON: a few hundred bytes; attestation none
MAX_CREDENTIAL_ID = 700  # base64url of the 1023 bytes WebAuthn allows at most


class PasskeyRefused(NotAuthenticated):
    """A registration or a sign-in that does not hold. Vague on purpose: the log has why."""


@dataclass(frozen=True)
class RelyingParty:
    """The WebAuthn relying party: the public address's host, and the origins pages come
    from."""

    id: str
    name: str
    origins: tuple[str, ...]


def relying_party(public_url: str, environment: str) -> RelyingParty:
    """From the public address. A browser refuses WebAuthn on an IP address, so in ``dev`` a
    loopback address is served as ``localhost`` (browse to http://localhost:PORT)."""
    parts = urlsplit(public_url)
    host = parts.hostname or "localhost"
    origins = [f"{parts.scheme}://{parts.netloc}"]
    if environment == "dev" and host in ("127.0.0.1", "::1", "localhost"):
        port = f":{parts.port}" if parts.port else ""
        origins.append(f"{parts.scheme}://localhost{port}")
        host = "localhost"
    return RelyingParty(host, "CareVault", tuple(dict.fromkeys(origins)))


def challenge_hash(value: str) -> str:
    """How a challenge (or a one-time code) is stored: its SHA-256, never itself."""
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def unb64(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise PasskeyRefused("not base64url") from None


def _parsed(credential: str) -> dict[str, object]:
    if len(credential) > MAX_CREDENTIAL_BYTES:
        raise PasskeyRefused("the credential is too large")
    try:
        parsed = json.loads(credential)
    except (ValueError, RecursionError):
        raise PasskeyRefused("the credential is not JSON") from None
    if not isinstance(parsed, dict):
        raise PasskeyRefused("the credential is not a JSON object")
    return parsed


def challenge_of(credential: str) -> str:
    """The challenge the browser signed, from the credential's clientDataJSON: which of our
    challenges it answers (then checked by the library against the stored one)."""
    response = _parsed(credential).get("response")
    client_data = response.get("clientDataJSON") if isinstance(response, dict) else None
    if not isinstance(client_data, str):
        raise PasskeyRefused("the credential has no clientDataJSON")
    try:
        parsed = parse_client_data_json(unb64(client_data))
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise PasskeyRefused("the credential's clientDataJSON is malformed") from None
    return bytes_to_base64url(parsed.challenge)


def credential_id_of(credential: str) -> str:
    raw = _parsed(credential).get("rawId")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_CREDENTIAL_ID:
        raise PasskeyRefused("the credential has no rawId")
    return bytes_to_base64url(unb64(raw))


def creation_options(
    party: RelyingParty, user_id: str, name: str, existing: Iterable[str]
) -> PublicKeyCredentialCreationOptions:
    """Options to create a discoverable passkey with user verification, the user's existing
    credentials (base64url ids) excluded."""
    return generate_registration_options(
        rp_id=party.id,
        rp_name=party.name,
        user_id=user_id.encode("utf-8"),
        user_name=name,
        user_display_name=name,
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64(i)) for i in existing],
    )


def request_options(party: RelyingParty) -> PublicKeyCredentialRequestOptions:
    """Options to sign with a discoverable passkey (the browser offers those it holds)."""
    return generate_authentication_options(
        rp_id=party.id,
        timeout=CEREMONY_TIMEOUT_MS,
        user_verification=UserVerificationRequirement.REQUIRED,
    )


def verified_registration(
    party: RelyingParty, credential: str, challenge: str
) -> VerifiedRegistration:
    """The new credential, verified against our ``challenge``; PasskeyRefused otherwise."""
    try:
        return verify_registration_response(
            credential=credential,
            expected_challenge=unb64(challenge),
            expected_rp_id=party.id,
            expected_origin=list(party.origins),
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        raise PasskeyRefused(f"the passkey does not verify: {error}") from None


def verified_sign_count(
    party: RelyingParty, credential: str, challenge: str, public_key: bytes, sign_count: int
) -> int:
    """An assertion of the passkey ``public_key`` over our ``challenge``, verified; its new
    signature counter. PasskeyRefused otherwise."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=unb64(challenge),
            expected_rp_id=party.id,
            expected_origin=list(party.origins),
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        raise PasskeyRefused(f"the passkey does not verify: {error}") from None
    return int(verified.new_sign_count)


__all__ = [
    "CEREMONY_TIMEOUT_MS",
    "PasskeyRefused",
    "RelyingParty",
    "challenge_hash",
    "challenge_of",
    "creation_options",
    "credential_id_of",
    "relying_party",
    "request_options",
    "unb64",
    "verified_registration",
    "verified_sign_count",
]
