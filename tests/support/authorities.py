"""The authorities that may change the facts the engine trusts, for the tests that need them:
a registrar (an operator with the directory role, the production sign-in's token), an
organization registered as an authority, and a patient's presence code."""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp

from carevault.bootstrap import Platform
from carevault.domain.authorization import Authority
from carevault.services.authorities import register_authority
from carevault.services.presence import issue_presence_code
from support.tokens import account_token

REGISTRAR_SCOPE = ("system/Patient.cruds system/Practitioner.cruds "
                   "system/PractitionerRole.cruds system/Organization.cruds "
                   "system/CareTeam.cruds")
PRESENCE_CODE_URL = "https://carevault.lu/fhir/StructureDefinition/presence-code"


def registrar_token(platform: Platform) -> str:
    """A registrar's token: an operator account with the directory role, TOTP confirmed."""
    enrolment = platform.accounts.register_operator(
        f"registrar-{uuid.uuid4().hex[:8]}", "registrars keep long passphrases 9",
        security_officer=False, registrar=True, by="os-user:test")
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    return account_token(platform, enrolment.account_id, None, kind="registrar",
                         scope=REGISTRAR_SCOPE)


def registrar_headers(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {registrar_token(platform)}",
            "Content-Type": "application/fhir+json"}


def authorize(platform: Platform, organization_id: str, kind: Authority,
              assigning_authority: str | None = None) -> str:
    """Register an organization as an authority, as an operator would; returns its id."""
    with platform.unit_of_work() as uow:
        return register_authority(uow, organization_id, kind, by="os-user:test",
                                  now=datetime.now(UTC),
                                  assigning_authority=assigning_authority).id


def presence_code(platform: Platform, patient_id: str) -> str:
    """A code the patient made (their app's `$presence-code`, tested on its own)."""
    with platform.unit_of_work() as uow:
        return issue_presence_code(uow, patient_id, f"account:test-{patient_id}",
                                   datetime.now(UTC)).code


def with_presence(encounter: dict[str, Any], code: str) -> dict[str, Any]:
    """The encounter carrying the patient's presence code."""
    return {**encounter, "extension": [*encounter.get("extension", []),
                                        {"url": PRESENCE_CODE_URL, "valueString": code}]}


def presence_code_in(database_url: str, patient_id: str) -> str:
    """A patient's code made straight in the database of a server that runs in another
    process (the patient's own request, `$presence-code`, is tested on its own)."""
    from carevault.adapters.storage.database import connect
    from carevault.adapters.storage.unit_of_work import SqlUnitOfWork

    engine = connect(database_url)
    try:
        with SqlUnitOfWork(engine) as uow:
            return issue_presence_code(uow, patient_id, f"account:test-{patient_id}",
                                       datetime.now(UTC)).code
    finally:
        engine.dispose()
