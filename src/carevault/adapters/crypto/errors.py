"""What can go wrong when sealing, opening or managing keys.

    carevault.domain.errors.IntegrityFailure
    └── DecryptionFailed      stored content or a wrapped key does not open (altered, bound to
                              another document/version/purpose, or its KEK is wrong or gone)
    KeySourceError            the key source is misconfigured or refuses to work (bad string,
    │                         missing PIN variable, token not found, wrong PIN, HSM error)
    └── UnknownKek            no KEK with this id exists (never created, or retired)

A `DecryptionFailed` is the domain's `IntegrityFailure`: stored data failed its check, nothing
is served, and the caller alerts the security officer. Its message is deliberately the same for
every cause (a client learns nothing about keys); the precise cause is in ``reason``, for the
log and the alert. `KeySourceError` is an operator's problem, not a request's, so it stays
outside the domain hierarchy, like `carevault.adapters.keys.local_file.KeyFileError`.
"""

from __future__ import annotations

from carevault.domain.errors import IntegrityFailure

__all__ = ["DecryptionFailed", "KeySourceError", "UnknownKek"]

_DECRYPTION_FAILED = "the stored content could not be decrypted; it was not served"


class DecryptionFailed(IntegrityFailure):
    """Sealed content or a wrapped data key failed authentication; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(_DECRYPTION_FAILED)
        self.reason = reason


class KeySourceError(Exception):
    """The key source cannot be used; the message names the setting or the refusal."""


class UnknownKek(KeySourceError):
    """No key-encryption key with this id is available from the key source."""

    def __init__(self, kek_id: str) -> None:
        super().__init__(f"no key-encryption key {kek_id!r} in the key source")
        self.kek_id = kek_id
