"""What the WebAuthn ceremonies share: the relying party from the public address, and reading a
browser's credential (its challenge, its id) before the `webauthn` library checks it: whatever
is not a credential is refused as `PasskeyRefused`, never an internal error."""

from __future__ import annotations

import hashlib
import json

import pytest

from carevault.domain.errors import NotAuthenticated
from carevault.services.passkey_ceremony import (
    MAX_CREDENTIAL_BYTES,
    PasskeyRefused,
    RelyingParty,
    challenge_hash,
    challenge_of,
    credential_id_of,
    relying_party,
)
from support.passkeys import SoftwareAuthenticator, b64

ORIGIN = "http://localhost:8000"


def test_the_relying_party_is_the_public_hosts_and_a_dev_loopback_is_localhost() -> None:
    assert relying_party("https://vault.example.lu", "prod") == RelyingParty(
        "vault.example.lu", "CareVault", ("https://vault.example.lu",))
    assert relying_party("http://127.0.0.1:8000", "dev") == RelyingParty(
        "localhost", "CareVault", ("http://127.0.0.1:8000", "http://localhost:8000"))
    assert relying_party("http://localhost:8000", "dev").origins == ("http://localhost:8000",)
    # Outside dev, a loopback address is not turned into localhost.
    assert relying_party("http://127.0.0.1:8000", "prod").id == "127.0.0.1"


def test_a_challenge_is_kept_as_its_sha256() -> None:
    assert challenge_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert challenge_hash("abc") != challenge_hash("abd")


def test_a_credential_names_the_challenge_it_answers_and_its_id() -> None:
    authenticator = SoftwareAuthenticator(ORIGIN)
    challenge = b64(b"\x00\x01server challenge")
    signed = json.dumps(authenticator.get({"rpId": "localhost", "challenge": challenge}))
    assert challenge_of(signed) == challenge
    assert credential_id_of(signed) == b64(authenticator.credential_id)
    # Padded base64url is read as the same id.
    padded = json.loads(signed)
    padded["rawId"] += "=" * (-len(padded["rawId"]) % 4)
    assert credential_id_of(json.dumps(padded)) == b64(authenticator.credential_id)


@pytest.mark.parametrize(("credential", "message"), [
    ("not JSON", "the credential is not JSON"),
    ("[1, 2]", "the credential is not a JSON object"),
    ("{}", "the credential has no clientDataJSON"),
    ('{"response": {"clientDataJSON": 7}}', "the credential has no clientDataJSON"),
    ('{"response": {"clientDataJSON": "bm90IGpzb24"}}',
     "the credential's clientDataJSON is malformed"),
    ("[" * 100_000, "the credential is too large"),
    (json.dumps({"pad": "x" * MAX_CREDENTIAL_BYTES}), "the credential is too large"),
])
def test_what_is_no_credential_is_refused_as_such(credential: str, message: str) -> None:
    with pytest.raises(PasskeyRefused) as error:
        challenge_of(credential)
    assert error.value.message == message
    assert isinstance(error.value, NotAuthenticated)


@pytest.mark.parametrize("raw", [None, "", 7, "A" * 701])
def test_a_credential_without_a_usable_raw_id_is_refused(raw: object) -> None:
    with pytest.raises(PasskeyRefused, match=r"^the credential has no rawId$"):
        credential_id_of(json.dumps({"rawId": raw}))
