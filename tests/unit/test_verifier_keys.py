"""The stand-alone verifier (carevault.verifier) and the key it is given: a key file that is
no PEM public key, or not an Ed25519 one, is said to be unreadable (`UnreadableKey`), not taken
for a head or a signature that does not verify; a readable key of another log still makes the
head fail as not signed by it."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carevault.domain.tree_head import TreeHead, signed_bytes
from carevault.verifier import (
    UnreadableKey,
    VerificationError,
    verify_platform_signature,
    verify_tree_head,
)

ROOT = hashlib.sha256(b"three entries").digest()


def public_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signed_head(key: Ed25519PrivateKey) -> TreeHead:
    return TreeHead(3, ROOT, 1_764_000_000_000, key.sign(signed_bytes(3, ROOT, 1_764_000_000_000)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_head_verifies_under_its_logs_key(log_key: Ed25519PrivateKey) -> None:
    verify_tree_head(public_pem(log_key), signed_head(log_key))


@pytest.mark.parametrize("pem", [
    b"",
    b"not a key",
    b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
])
def test_a_key_that_is_no_pem_public_key_is_said_unreadable(log_key: Ed25519PrivateKey,
                                                            pem: bytes) -> None:
    with pytest.raises(UnreadableKey, match="the public key cannot be read"):
        verify_tree_head(pem, signed_head(log_key))


def test_a_key_of_another_algorithm_is_said_not_ed25519(log_key: Ed25519PrivateKey) -> None:
    other = public_pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UnreadableKey, match="not an Ed25519 key"):
        verify_tree_head(other, signed_head(log_key))


def test_another_logs_key_makes_the_head_fail_as_not_signed_by_it(
        log_key: Ed25519PrivateKey) -> None:
    with pytest.raises(VerificationError, match="not signed by this log's key") as failed:
        verify_tree_head(public_pem(Ed25519PrivateKey.generate()), signed_head(log_key))
    assert not isinstance(failed.value, UnreadableKey)


def test_a_platform_signature_checked_with_an_unreadable_key_says_so(
        log_key: Ed25519PrivateKey) -> None:
    header, payload = b64url(b'{"alg":"EdDSA"}'), b64url(b'{"receipt":1}')
    jws = f"{header}.{payload}.{b64url(log_key.sign(f'{header}.{payload}'.encode()))}"
    assert verify_platform_signature(jws, public_pem(log_key)) == b'{"receipt":1}'
    with pytest.raises(UnreadableKey):
        verify_platform_signature(jws, b"-----BEGIN PUBLIC KEY-----\n")
    with pytest.raises(VerificationError, match="signature does not verify") as failed:
        verify_platform_signature(jws, public_pem(Ed25519PrivateKey.generate()))
    assert not isinstance(failed.value, UnreadableKey)
