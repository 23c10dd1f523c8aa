"""The crypto package's public names are pinned: changing them is a decision, not an accident."""

from __future__ import annotations

import carevault.adapters.crypto as crypto


def test_the_public_api_is_exactly_this() -> None:
    assert sorted(crypto.__all__) == [
        "CONTENT",
        "DecryptionFailed",
        "KekLookup",
        "KekStore",
        "KeyEncryptionKey",
        "KeyRing",
        "KeySourceError",
        "LocalKek",
        "LocalKekStore",
        "Pkcs11Kek",
        "Pkcs11KekStore",
        "Pkcs11KeySource",
        "SealedContent",
        "UnknownKek",
        "associated_data",
        "metadata_purpose",
        "open_kek_store",
        "open_keyring",
        "open_sealed",
        "rewrap",
        "seal",
    ]
    for name in crypto.__all__:
        assert getattr(crypto, name) is not None
