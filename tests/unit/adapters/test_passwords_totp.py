"""Password hashing and the TOTP second factor: the parameters really used, the window, replay
refusal with a fixed clock, the QR code, and the sealing of TOTP secrets."""

from __future__ import annotations

import base64
import re
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher, Type

from carevault.adapters.security.passwords import (
    OWASP_MEMORY_KIB,
    OWASP_PARALLELISM,
    OWASP_TIME_COST,
    Argon2PasswordHasher,
)
from carevault.adapters.security.totp import (
    ISSUER,
    SecretUnavailable,
    TotpAuthenticator,
    TotpSecretBox,
    qr_svg,
)

ENCODED = re.compile(
    r"^\$argon2id\$v=19\$m=(?P<m>\d+),t=(?P<t>\d+),p=(?P<p>\d+)\$(?P<salt>[A-Za-z0-9+/]+)\$"
    r"(?P<hash>[A-Za-z0-9+/]+)$"
)


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


# --- passwords ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hasher() -> Argon2PasswordHasher:
    return Argon2PasswordHasher()


def test_the_owasp_parameters_are_the_cheat_sheets() -> None:
    assert (OWASP_MEMORY_KIB, OWASP_TIME_COST, OWASP_PARALLELISM) == (19456, 2, 1)


def test_hashes_are_argon2id_with_the_owasp_parameters(hasher: Argon2PasswordHasher) -> None:
    encoded = hasher.hash("correct horse battery staple")
    match = ENCODED.match(encoded)
    assert match, encoded
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (int(match["m"]), int(match["t"]), int(match["p"])) == (19456, 2, 1)
    assert len(unb64(match["salt"])) == 16
    assert len(unb64(match["hash"])) == 32


def test_salts_differ_and_verification_works(hasher: Argon2PasswordHasher) -> None:
    one, two = hasher.hash("same password here"), hasher.hash("same password here")
    assert one != two
    assert hasher.verify(one, "same password here")
    assert not hasher.verify(one, "same password herE")
    assert not hasher.verify("not a hash", "same password here")
    assert not hasher.verify("", "")


def test_needs_rehash_for_weaker_or_other_hashes(hasher: Argon2PasswordHasher) -> None:
    assert not hasher.needs_rehash(hasher.hash("a fine password"))
    weaker = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    old = weaker.hash("a fine password")
    assert hasher.needs_rehash(old)
    assert hasher.verify(old, "a fine password")  # still accepted, then re-hashed
    argon2i = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.I)
    assert hasher.needs_rehash(argon2i.hash("a fine password"))
    assert hasher.needs_rehash("garbage")


# --- TOTP ---------------------------------------------------------------------------------------

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = datetime(2026, 11, 22, 12, 0, 15, tzinfo=UTC)  # mid-step
STEP = int(T0.timestamp()) // 30


def code_at(step: int) -> str:
    return pyotp.TOTP(SECRET).generate_otp(step)


def test_secrets_are_160_bit_base32() -> None:
    secret = TotpAuthenticator().new_secret()
    assert len(base64.b32decode(secret)) == 20
    assert secret != TotpAuthenticator().new_secret()


def test_provisioning_uri_names_the_issuer_and_account() -> None:
    uri = TotpAuthenticator().provisioning_uri(SECRET, "anne@example.lu")
    parsed = urllib.parse.urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert urllib.parse.unquote(parsed.path) == f"/{ISSUER}:anne@example.lu"
    query = urllib.parse.parse_qs(parsed.query)
    assert query["secret"] == [SECRET] and query["issuer"] == ["CareVault"]


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    totp = TotpAuthenticator()
    for offset in (-1, 0, 1):
        assert totp.verify(SECRET, code_at(STEP + offset), T0, None) == STEP + offset
    for offset in (-3, -2, 2, 3):
        assert totp.verify(SECRET, code_at(STEP + offset), T0, None) is None


def test_a_step_already_used_is_refused_even_inside_the_window() -> None:
    totp = TotpAuthenticator()
    code = code_at(STEP)
    assert totp.verify(SECRET, code, T0, None) == STEP
    assert totp.verify(SECRET, code, T0, last_step=STEP) is None  # replay
    assert totp.verify(SECRET, code, T0 + timedelta(seconds=30), last_step=STEP) is None
    # An older code, still in the window, is refused too once a later step was used.
    assert totp.verify(SECRET, code_at(STEP - 1), T0, last_step=STEP) is None
    # The next step's code is fine.
    assert totp.verify(SECRET, code_at(STEP + 1), T0, last_step=STEP) == STEP + 1


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "１２３４５６", " "])
def test_malformed_codes_are_refused(bad: str) -> None:
    assert TotpAuthenticator().verify(SECRET, bad, T0, None) is None


def test_spaces_in_a_typed_code_are_ignored() -> None:
    code = code_at(STEP)
    assert TotpAuthenticator().verify(SECRET, f" {code[:3]} {code[3:]} ", T0, None) == STEP


def test_the_qr_code_is_valid_svg() -> None:
    uri = TotpAuthenticator().provisioning_uri(SECRET, "anne@example.lu")
    svg = qr_svg(uri)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert int(root.attrib["width"]) > 100
    assert root.find("{http://www.w3.org/2000/svg}path") is not None
    assert SECRET not in svg  # the secret is in the modules, not in the text


# --- sealing ------------------------------------------------------------------------------------


def test_secrets_are_sealed_bound_to_their_account() -> None:
    box = TotpSecretBox.derive(b"\x01" * 32)
    sealed = box.seal(SECRET, "account-1")
    assert SECRET.encode() not in sealed
    assert box.seal(SECRET, "account-1") != sealed  # a fresh nonce each time
    assert box.open(sealed, "account-1") == SECRET
    with pytest.raises(SecretUnavailable):
        box.open(sealed, "account-2")  # copied onto another row
    with pytest.raises(SecretUnavailable):
        TotpSecretBox.derive(b"\x02" * 32).open(sealed, "account-1")  # another key file
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecretUnavailable):
        box.open(tampered, "account-1")
