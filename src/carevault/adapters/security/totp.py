"""The TOTP second factor (RFC 6238, via pyotp), its QR code, and the sealing of its secret.

* `TotpAuthenticator`: 160-bit secrets (the RFC 4226 §4 recommendation), 6 digits, 30-second
  steps, HMAC-SHA1 (the only algorithm every authenticator app reads from a provisioning URI).
  A code is accepted for the current step and one step either side (RFC 6238 §5.2 allows for
  clock drift and typing time) and only for a step *after* the last one accepted, so a code
  cannot be used twice, even within its own window.
* `qr_svg`: the provisioning URI as a QR code, SVG text (segno, pure Python), for the page that
  shows it once at enrolment.
* `TotpSecretBox`: a TOTP secret is a shared key, so unlike a password it must be stored in a
  form that can be read back. It is sealed with AES-256-GCM under a key derived (HKDF-SHA256,
  versioned label) from the key file's master key, as the audit log's and the CA's keys are;
  the account id is the associated data, so a sealed secret copied onto another account's row
  does not open. A copy of the database alone yields no secret.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
from datetime import datetime

import pyotp
import segno

from carevault.adapters.security.sealed_box import SealedBox, Unsealable

__all__ = [
    "ISSUER",
    "TOTP_SECRET_INFO",
    "SecretUnavailable",
    "TotpAuthenticator",
    "TotpSecretBox",
    "qr_svg",
]

ISSUER = "CareVault"
TOTP_SECRET_INFO = b"carevault/totp-secret/v1"


class TotpAuthenticator:
    def __init__(self, *, digits: int = 6, interval: int = 30, window: int = 1) -> None:
        self.digits = digits
        self.interval = interval
        self.window = window

    def new_secret(self) -> str:
        """A fresh base32 secret of 160 bits."""
        return base64.b32encode(os.urandom(20)).decode("ascii")

    def provisioning_uri(self, secret: str, account_name: str) -> str:
        """The ``otpauth://`` URI an authenticator app scans."""
        return self._otp(secret).provisioning_uri(name=account_name, issuer_name=ISSUER)

    def step_at(self, at: datetime) -> int:
        return int(at.timestamp()) // self.interval

    def code_at(self, secret: str, step: int) -> str:
        return self._otp(secret).generate_otp(step)

    def verify(self, secret: str, code: str, at: datetime, last_step: int | None) -> int | None:
        """The time step ``code`` belongs to, within ±``window`` steps of ``at`` and after
        ``last_step``; None if it matches no such step. Every candidate is compared, in
        constant time, so the answer's timing does not depend on which step matched."""
        code = code.strip().replace(" ", "")
        if len(code) != self.digits or not code.isascii() or not code.isdigit():
            return None
        otp = self._otp(secret)
        current = self.step_at(at)
        matched: int | None = None
        for step in range(current - self.window, current + self.window + 1):
            if step < 0:
                continue
            equal = hmac.compare_digest(otp.generate_otp(step).encode(), code.encode())
            fresh = last_step is None or step > last_step
            if equal and fresh and matched is None:
                matched = step
        return matched

    def _otp(self, secret: str) -> pyotp.TOTP:
        return pyotp.TOTP(secret, digits=self.digits, interval=self.interval, issuer=ISSUER)


def qr_svg(uri: str) -> str:
    """``uri`` as a QR code: an SVG document with its namespace (valid on its own, as a file or
    an ``<img>`` data URI) and without XML declaration, so that it can also be inlined into a
    page."""
    out = io.BytesIO()
    segno.make_qr(uri, error="m").save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        scale=4,
        border=4,
        title="CareVault TOTP enrolment",
    )
    return out.getvalue().decode("utf-8")


class SecretUnavailable(Unsealable):
    """A sealed TOTP secret does not open with this key (another environment's key file, or a
    row tampered with)."""


class TotpSecretBox(SealedBox):
    """A TOTP secret, bound to its account's id (`carevault.adapters.security.sealed_box`)."""

    INFO = TOTP_SECRET_INFO
    BOUND_TO = b"carevault/account/"
    WHAT = "TOTP secret"
    ERROR = SecretUnavailable
