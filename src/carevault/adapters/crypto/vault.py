"""The document service's vault: envelope encryption with the key ring's current KEK.

Adapts `seal`/`open_sealed` to the storage's `SealedParts`, so the service never handles a key.
"""

from __future__ import annotations

from carevault.adapters.crypto.envelope import SealedContent, open_sealed, rewrap, seal
from carevault.adapters.crypto.keyring import KeyRing
from carevault.adapters.storage.document_store import SealedParts


class EnvelopeVault:
    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    def seal(
        self, plaintext: bytes, *, document_id: str, version: int, purpose: str
    ) -> SealedParts:
        sealed = seal(
            plaintext,
            document_id=document_id,
            version=version,
            kek=self.keyring.current,
            purpose=purpose,
        )
        return SealedParts(sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)

    @property
    def current_kek(self) -> str:
        return self.keyring.current.kek_id

    def kek_ids(self) -> list[str]:
        return self.keyring.kek_ids()

    def new_kek(self) -> str:
        return self.keyring.new_kek().kek_id

    def refresh(self) -> None:
        self.keyring.refresh()

    def retire(self, kek_id: str) -> None:
        self.keyring.retire(kek_id)

    def rewrap(self, sealed: SealedParts) -> SealedParts:
        """The same sealed item with its data key wrapped by the current KEK; only the wrapped
        key is used (the ciphertext is neither read nor changed)."""
        content = SealedContent(sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
        moved = rewrap(content, self.keyring, self.keyring.current)
        return SealedParts(moved.kek_id, moved.wrapped_key, moved.nonce, moved.ciphertext)

    def open(self, sealed: SealedParts, *, document_id: str, version: int, purpose: str) -> bytes:
        """The plaintext, or `DecryptionFailed` (an `IntegrityFailure`)."""
        content = SealedContent(sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
        return open_sealed(
            content,
            document_id=document_id,
            version=version,
            keyring=self.keyring,
            purpose=purpose,
        )
