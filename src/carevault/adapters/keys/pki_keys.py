"""The password that seals the platform CA keys, derived from the key file.

The CA private keys are stored in the database as encrypted PKCS #8; the password is derived
(HKDF-SHA256, versioned label) from the key file's master key, as the audit log's signing keys
are. The key file thus stays the single secret: a copy of the database alone yields no CA key,
and each environment's key file opens only its own CA keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carevault.adapters.keys.local_file import KeyFileError, key_file_path, load_keys
from carevault.adapters.keys.log_signer import MASTER_KEY

CA_KEY_INFO = b"carevault/pki/ca-key/v1"


def derive_ca_key_password(master: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CA_KEY_INFO).derive(master)


def ca_key_password(key_source: str) -> bytes:
    """The CA key password of the environment whose key source is ``key_source``."""
    keys = load_keys(key_file_path(key_source))
    if MASTER_KEY not in keys:
        raise KeyFileError(f"the key file has no {MASTER_KEY!r} key")
    return derive_ca_key_password(keys[MASTER_KEY])
