"""Enrolment invitations: how a patient proves, at enrolment, that the record is theirs.

A registration desk (or a letter to the address in the index) hands the patient a one-time
activation code; the patient enrols in the portal with their national identification number
and that code. Either alone is not enough: national numbers are not secret, and a code alone
names no one. Codes carry 100 random bits, are stored hashed, expire, and work once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from carevault.adapters.storage.portal_store import StoredInvitation
from carevault.domain.errors import NotAuthenticated
from carevault.services.directory import read_patient
from carevault.services.unit_of_work import UnitOfWork, Units

Enrolled = TypeVar("Enrolled")

DEFAULT_VALIDITY = timedelta(days=14)


class InvitationRefused(NotAuthenticated):
    """The activation code and national number do not open an enrolment (one message)."""


def _normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def _hash(code: str) -> str:
    return hashlib.sha256(_normalize(code).encode("ascii", "replace")).hexdigest()


def invite(
    uow: UnitOfWork, patient_id: str, now: datetime, validity: timedelta = DEFAULT_VALIDITY
) -> str:
    """Create an activation code for a patient of the index; return it (shown once)."""
    read_patient(uow, patient_id)
    raw = base64.b32encode(secrets.token_bytes(15)).decode("ascii")  # 120 bits, 24 chars
    code = "-".join(raw[i : i + 4] for i in range(0, 20, 4))  # 100 bits shown, e.g. ABCD-EFGH-…
    uow.invitations.add(StoredInvitation(_hash(code), patient_id, now, now + validity))
    uow.commit()
    return code


def redeemable(
    uow: UnitOfWork, code: str, national_id: str, national_system: str, now: datetime
) -> str:
    """The patient an unused, unexpired code opens, if the national number is theirs."""
    row = uow.invitations.get(_hash(code))
    refused = InvitationRefused(
        "the activation code and the national number do not match an invitation in force"
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise refused
    resource = read_patient(uow, row.patient_id).resource
    numbers = [
        str(i.get("value", ""))
        for i in resource.get("identifier", [])
        if i.get("system") == national_system
    ]
    typed = "".join(national_id.split())
    if not any(hmac.compare_digest(typed.encode(), n.encode()) for n in numbers):
        raise refused
    return str(row.patient_id)


def mark_used(uow: UnitOfWork, code: str, now: datetime) -> None:
    uow.invitations.use(_hash(code), now)
    uow.commit()


def open_account(
    units: Units,
    code: str,
    national_id: str,
    national_system: str,
    now: datetime,
    enrol: Callable[[str], Enrolled],
) -> Enrolled:
    """Redeem an invitation: ``enrol`` the patient the code opens (their account, in the
    accounts' own transaction), then spend the code. The code is checked first and spent
    last, so that a refused enrolment (a login taken) leaves it usable."""
    with units() as uow:
        patient_id = redeemable(uow, code, national_id, national_system, now)
    enrolled = enrol(patient_id)
    with units() as uow:
        mark_used(uow, code, now)
    return enrolled
