"""Presence codes: how a patient proves to a professional that they are in front of them.

A care event (an `Encounter`) opens the patient's record to its professional for a while. A
professional's own word is not enough for that (PRODUCT.md, "Who may change the facts the
engine trusts"): the encounter must come from the organization's registered admission system,
or carry a presence code that the patient made in their portal or app and showed (or read out)
to the professional. A code is short enough to read aloud, lives ten minutes, opens one care
event for one patient, and is kept only as a hash.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "PRESENCE_CODE_LIFETIME",
    "PresenceCode",
    "code_hash",
    "issue_presence_code",
    "new_code",
    "normalize",
]

PRESENCE_CODE_LIFETIME = timedelta(minutes=10)
# Crockford's base 32: no I, L, O or U, so that a code read aloud or typed is not mistaken.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LENGTH = 10  # 50 bits: out of reach of guessing within ten minutes and the rate limit
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
MAX_CODE_CHARACTERS = 32


@dataclass(frozen=True)
class PresenceCode:
    code: str  # grouped for reading: XXXXX-XXXXX
    expires: datetime


def normalize(code: str) -> str | None:
    """The code as stored, whatever the case, spaces or dashes it was typed with; None if it
    cannot be a code."""
    if len(code) > MAX_CODE_CHARACTERS:
        return None
    plain = "".join(code.split()).replace("-", "").upper().translate(_READ_AS)
    if len(plain) != _LENGTH or any(c not in _ALPHABET for c in plain):
        return None
    return plain


def code_hash(patient_id: str, code: str) -> str:
    """What is stored: a code is only ever good for its own patient."""
    return hashlib.sha256(f"{patient_id}:{code}".encode()).hexdigest()


def new_code(uow: UnitOfWork, patient_id: str, by: str, now: datetime) -> PresenceCode:
    """A new code for ``patient_id``, stored (as a hash) in the caller's transaction; who may
    ask for one is the engine's decision (`CareAccess.issue_presence_code`)."""
    plain = "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
    expires = now + PRESENCE_CODE_LIFETIME
    uow.presence_codes.add(code_hash(patient_id, plain), patient_id, by, now, expires)
    return PresenceCode(f"{plain[:5]}-{plain[5:]}", expires)


def issue_presence_code(uow: UnitOfWork, patient_id: str, by: str, now: datetime) -> PresenceCode:
    """A new code, committed at once: for tests and tools that stand in for the patient (the
    platform's own way is `CareAccess.issue_presence_code`, decided and audited)."""
    code = new_code(uow, patient_id, by, now)
    uow.commit()
    return code
