"""The audit log's signing keys: Ed25519, one per stream, derived from the platform key file.

Deriving (HKDF-SHA256 over the key file's master key, with the stream in ``info``) instead of
storing more keys means the key file stays the single secret to protect and back up, while each
stream still gets an independent key. The derivation label is versioned so a future rotation
can derive new keys from the same master.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys

MASTER_KEY = "master-1"


class Ed25519TreeHeadSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def derive(cls, master: bytes, stream: str) -> Ed25519TreeHeadSigner:
        seed = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"carevault/audit-log/{stream}/v1".encode(),
        ).derive(master)
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def signers_from_key_source(
    key_source: str, streams: tuple[str, ...]
) -> dict[str, Ed25519TreeHeadSigner]:
    keys = load_keys(key_file_path(key_source))
    if MASTER_KEY not in keys:
        raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
    return {stream: Ed25519TreeHeadSigner.derive(keys[MASTER_KEY], stream) for stream in streams}


def platform_signer_from_key_source(key_source: str) -> Ed25519TreeHeadSigner:
    """The platform's own signing key (Ed25519): dispense receipts and printed prescriptions.
    Derived like the audit streams' keys, under its own label, and published at
    ``/.well-known/carevault-signing-key.pem`` so that a printout verifies offline."""
    keys = load_keys(key_file_path(key_source))
    if MASTER_KEY not in keys:
        raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
    return Ed25519TreeHeadSigner.derive(keys[MASTER_KEY], "platform-signature")
