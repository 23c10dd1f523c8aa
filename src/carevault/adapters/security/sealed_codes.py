"""The sealing of e-prescriptions' access codes, so that a patient can be shown theirs again.

A pharmacy's code is checked against its SHA-256 (`domain.prescriptions.code_hash`); the patient,
who may lose the printout, needs the code itself. It is sealed as TOTP secrets are
(`adapters.security.totp`): AES-256-GCM under a key derived with HKDF-SHA256 (its own versioned
label) from the key file's master key, a random 96-bit nonce per seal, and the task's id as the
associated data, so a sealed code copied onto another task's row does not open. A copy of the
database alone yields no code.
"""

from __future__ import annotations

from carevault.adapters.security.sealed_box import SealedBox, Unsealable

__all__ = ["ACCESS_CODE_INFO", "AccessCodeBox", "CodeUnavailable"]

ACCESS_CODE_INFO = b"carevault/prescription-access-code/v1"


class CodeUnavailable(Unsealable):
    """A sealed access code does not open with this key (another environment's key file, or
    a row tampered with or moved to another task)."""


class AccessCodeBox(SealedBox):
    """An access code, bound to its task's id (`carevault.adapters.security.sealed_box`)."""

    INFO = ACCESS_CODE_INFO
    BOUND_TO = b"carevault/prescription/"
    WHAT = "access code"
    ERROR = CodeUnavailable
