"""The key that signs CareVault's access tokens: ECDSA P-256 (ES256), derived from the key file.

Like the audit log's keys, it is derived (HKDF-SHA256 over ``master-1``) rather than stored, so
the key file remains the one secret; the ``kid`` is the RFC 7638 thumbprint of the public key,
so a rotation of the master key changes it and resource servers notice.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import ECKey

from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys

MASTER_KEY = "master-1"
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


class TokenSigningKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.jwk = ECKey.import_key(private_key)
        self.kid = self.jwk.thumbprint()
        self.public_jwk = ECKey.import_key(private_key.public_key())

    @classmethod
    def derive(cls, master: bytes) -> TokenSigningKey:
        seed = HKDF(
            algorithm=hashes.SHA256(), length=48, salt=None, info=b"carevault/access-token/es256/v1"
        ).derive(master)
        scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
        return cls(ec.derive_private_key(scalar, ec.SECP256R1()))

    @classmethod
    def from_key_source(cls, key_source: str) -> TokenSigningKey:
        keys = load_keys(key_file_path(key_source))
        if MASTER_KEY not in keys:
            raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
        return cls.derive(keys[MASTER_KEY])

    def jwks(self) -> dict[str, Any]:
        """The public key set resource servers use to check tokens (RFC 7517)."""
        public = self.public_jwk.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "ES256"}]}
