"""A real SMART access token for the tests that act as a professional's system.

Everything is done the production way: the platform CA issues a certificate to a registered
professional, the test signs a client assertion with PyJWT (not CareVault's JOSE code), and the
token endpoint's use case checks it and issues the token.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.tokens import ASSERTION_TYPE, issue_backend_token

TEST_PROFESSIONAL = "HP-TEST-1"


def professional_token(platform: Platform, scope: str = "system/*.cruds", *,
                       identifier: str = TEST_PROFESSIONAL, family: str = "Tester",
                       profession: str = "physician",
                       specialty: str | None = "general-practice") -> str:
    return professional_credentials(platform, scope, identifier=identifier, family=family,
                                    profession=profession, specialty=specialty)[0]


def professional_credentials(platform: Platform, scope: str = "system/*.cruds", *,
                             identifier: str = TEST_PROFESSIONAL, family: str = "Tester",
                             profession: str = "physician",
                             specialty: str | None = "general-practice",
                             ) -> tuple[str, str, list[bytes]]:
    """A token, and the certificate's private key (PEM) and chain (DER, leaf first), which
    also sign the professional's documents."""
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems,
                             ca_password=ca_key_password(platform.settings.key_source),
                             clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki_ctx)
    with platform.unit_of_work() as uow:
        known = uow.directory.practitioner_ids_by_identifier([identifier])
    if identifier not in known:
        with platform.unit_of_work() as uow:
            svc.register_professionals(uow, ctx, [svc.NewProfessional(
                new_practitioner(ctx.systems, identifier=identifier, family=family,
                                 given=["Theo"]), profession, specialty)])
        with platform.unit_of_work() as uow:
            known = uow.directory.practitioner_ids_by_identifier([identifier])
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_practitioner_certificate(uow, pki_ctx, known[identifier], issued.append)
    credentials = issued[0]
    chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER)
        for pem in (credentials.record.certificate_pem, credentials.chain_pem)]
    now = int(datetime.now(UTC).timestamp())
    assertion = pyjwt.encode(
        {"iss": identifier, "sub": identifier,
         "aud": platform.tokens.token_endpoint, "iat": now, "exp": now + 120,
         "jti": uuid.uuid4().hex},
        credentials.private_key_pem, algorithm="ES256",
        headers={"x5c": [base64.b64encode(der).decode() for der in chain]})
    with platform.unit_of_work() as uow:
        grant = issue_backend_token(uow, platform.tokens, assertion_type=ASSERTION_TYPE,
                                    assertion=assertion, scope=scope)
    return grant.access_token, credentials.private_key_pem, chain


def account_token(platform: Platform, account_id: str, patient_id: str | None, *,
                  kind: str = "patient",
                  scope: str = "launch/patient patient/*.cruds") -> str:
    """A token for a patient's (or representative's, operator's) app through the services of
    the authorization code grant with PKCE: the browser steps are tested elsewhere."""
    from carevault.services.patient_apps import AppRequest, approve, exchange_code, register_app

    redirect = "https://app.example/callback"
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    now = datetime.now(UTC)
    with platform.unit_of_work() as uow:
        client_id = register_app(uow, "Test app", [redirect], now, scopes=scope)
    request = AppRequest(client_id, "Test app", redirect, scope, None, challenge)
    with platform.unit_of_work() as uow:
        location = approve(uow, request, account_id, patient_id, now, kind=kind)
    code = location.split("code=", 1)[1].split("&", 1)[0]
    with platform.unit_of_work() as uow:
        grant, _ = exchange_code(uow, platform.tokens, code=code, redirect_uri=redirect,
                                 client_id=client_id, code_verifier=verifier)
        uow.commit()
    return grant.access_token


def patient_headers(platform: Platform, patient_id: str) -> dict[str, str]:
    """Enrol an account for a registered patient and return their app token's headers."""
    token = account_token(platform, patient_account(platform, patient_id), patient_id)
    return {"Authorization": f"Bearer {token}"}


def patient_account(platform: Platform, patient_id: str) -> str:
    """Enrol an account (TOTP confirmed) for a registered patient; its id."""
    import urllib.parse
    from datetime import timedelta

    import pyotp

    enrolment = platform.accounts.enrol_patient(
        f"patient-{uuid.uuid4().hex[:8]}@example.lu", "correct horse battery staple 42",
        patient_id=patient_id)
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    return enrolment.account_id


def officer_headers(platform: Platform,
                    scope: str = "system/AuditEvent.rs system/Patient.r") -> dict[str, str]:
    """A security officer's token (an operator account with the role, TOTP confirmed)."""
    import urllib.parse
    from datetime import timedelta

    import pyotp

    enrolment = platform.accounts.register_operator(
        f"officer-{uuid.uuid4().hex[:8]}", "officers keep long passphrases 9",
        security_officer=True, by="os-user:test")
    secret = urllib.parse.parse_qs(
        urllib.parse.urlparse(enrolment.totp_provisioning_uri).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    platform.accounts.confirm_totp(enrolment.account_id, pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    token = account_token(platform, enrolment.account_id, None, kind="security-officer",
                          scope=scope)
    return {"Authorization": f"Bearer {token}"}
