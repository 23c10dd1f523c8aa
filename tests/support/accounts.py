"""An enrolled patient account, as the tests of the portal need one."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp

from carevault.bootstrap import Platform
from carevault.services import directory as svc
from support.builders import patient

PASSWORD = "correct horse battery staple 42"


@dataclass(frozen=True)
class PatientAccount:
    patient_id: str
    login: str
    password: str
    totp: pyotp.TOTP
    recovery_codes: tuple[str, ...]


def enrol_patient(platform: Platform, seq: int = 1, *, family: str = "Müller",
                  login: str = "anne.muller@example.lu") -> PatientAccount:
    """Register a patient, enrol their account and confirm its TOTP with the code of the
    previous 30-second step, so that the current step is still free for a sign-in."""
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, seq,
                                                              family=family)])[0].id
    enrolment = platform.accounts.enrol_patient(login, PASSWORD, patient_id=patient_id)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    totp = pyotp.TOTP(query["secret"][0])
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    return PatientAccount(patient_id, login, PASSWORD, totp, enrolment.recovery_codes)


def enrol_registered(platform: Platform, patient_id: str,
                     login: str) -> tuple[str, PatientAccount]:
    """Enrol an account for a patient already in the index (its id and the account, with the
    TOTP confirmed by the previous step's code, as `enrol_patient`)."""
    enrolment = platform.accounts.enrol_patient(login, PASSWORD, patient_id=patient_id)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)
    totp = pyotp.TOTP(query["secret"][0])
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, totp.at(earlier), now=earlier)
    return enrolment.account_id, PatientAccount(patient_id, login, PASSWORD, totp,
                                                enrolment.recovery_codes)
