"""A real SMART access token for the tests that act as a professional's system.

Everything is done the production way: the platform CA issues a certificate to a registered
professional, the test signs a client assertion with PyJWT (not CareVault's JOSE code), and the
token endpoint's use case checks it and issues the token.
"""

from __future__ import annotations

import base64
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


def professional_token(platform: Platform, scope: str = "system/*.cruds") -> str:
    ctx = platform.directory
    pki_ctx = pki.PkiContext(systems=ctx.systems,
                             ca_password=ca_key_password(platform.settings.key_source),
                             clock=lambda: datetime.now(UTC))
    with platform.unit_of_work() as uow:
        pki.init_pki(uow, pki_ctx)
    with platform.unit_of_work() as uow:
        known = uow.directory.practitioner_ids_by_identifier([TEST_PROFESSIONAL])
    if TEST_PROFESSIONAL not in known:
        with platform.unit_of_work() as uow:
            svc.register_professionals(uow, ctx, [svc.NewProfessional(
                new_practitioner(ctx.systems, identifier=TEST_PROFESSIONAL, family="Tester",
                                 given=["Theo"]), "physician", "general-practice")])
        with platform.unit_of_work() as uow:
            known = uow.directory.practitioner_ids_by_identifier([TEST_PROFESSIONAL])
    issued: list[pki.Credentials] = []
    with platform.unit_of_work() as uow:
        pki.issue_practitioner_certificate(uow, pki_ctx, known[TEST_PROFESSIONAL], issued.append)
    credentials = issued[0]
    chain = [x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER)
        for pem in (credentials.record.certificate_pem, credentials.chain_pem)]
    now = int(datetime.now(UTC).timestamp())
    assertion = pyjwt.encode(
        {"iss": TEST_PROFESSIONAL, "sub": TEST_PROFESSIONAL,
         "aud": platform.tokens.token_endpoint, "iat": now, "exp": now + 120,
         "jti": uuid.uuid4().hex},
        credentials.private_key_pem, algorithm="ES256",
        headers={"x5c": [base64.b64encode(der).decode() for der in chain]})
    with platform.unit_of_work() as uow:
        grant = issue_backend_token(uow, platform.tokens, assertion_type=ASSERTION_TYPE,
                                    assertion=assertion, scope=scope)
    return grant.access_token
