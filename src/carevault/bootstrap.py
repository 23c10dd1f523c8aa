"""The one place that wires real adapters to the services and the HTTP layer."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from carevault.adapters.crypto import open_keyring
from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.keys.local_file import key_file_path, load_keys
from carevault.adapters.keys.log_signer import signers_from_key_source
from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.adapters.package_config import builtin_profile_matrix
from carevault.adapters.security.passwords import Argon2PasswordHasher
from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox, qr_svg
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.database import connect
from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.api.access import TokenBucketLimiter, TokenGate
from carevault.api.app import create_app
from carevault.api.audit_trail import AuditTrail, before_commit
from carevault.api.fhir.capability import capability_statement
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import FhirDoor
from carevault.api.fhir.registry import fhir_handlers
from carevault.api.fhir.terminology_handlers import load_affinity_domain
from carevault.api.oauth_routes import oauth_router
from carevault.api.pki_routes import pki_router
from carevault.domain.affinity import AffinityDomain
from carevault.domain.audit import STREAMS
from carevault.domain.authorization import ProfileMatrix, RecordModel
from carevault.domain.errors import CareVaultError, InvalidInput
from carevault.domain.professions import Professions
from carevault.domain.scopes import permits
from carevault.fhirmodel.directory import IdentitySystems
from carevault.services.accounts import AccountService
from carevault.services.audit_log import AuditLog
from carevault.services.directory import DirectoryContext
from carevault.services.documents import DocumentLimits, DocumentService
from carevault.services.portal_sessions import PortalSessions
from carevault.services.record_policy import RecordPolicy
from carevault.services.tokens import TokenContext, authenticate
from carevault.settings import Settings
from carevault.web.portal import portal_router

BUILTIN_PROFESSIONS = Path(__file__).parent / "config" / "professions.json"


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_professions(settings: Settings) -> Professions:
    path = settings.professions_file or BUILTIN_PROFESSIONS
    return Professions.from_json(path.read_text(encoding="utf-8"))


def directory_context(settings: Settings) -> DirectoryContext:
    systems = IdentitySystems(
        national=settings.national_id_system,
        professional=settings.professional_id_system,
        organization=settings.organization_id_system,
    )
    return DirectoryContext(systems=systems, professions=load_professions(settings), clock=utc_now)


def load_profile_matrix(settings: Settings) -> ProfileMatrix:
    """The deployment's profile matrix, or the built-in one; a malformed file stops the start
    with a message naming the file."""
    path = settings.profile_matrix_file
    if path is None:
        return builtin_profile_matrix()
    try:
        return ProfileMatrix.from_mapping(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise InvalidInput(f"the profile matrix {path} cannot be used: {error}") from None


def units(settings: Settings, engine: Engine) -> Callable[[], UnitOfWork]:
    """Units of work that record the current request's change atomically with it."""
    model = RecordModel(settings.record_model)
    return lambda: UnitOfWork(engine, before_commit=before_commit, record_model=model)


def read_units(settings: Settings, engine: Engine) -> Callable[[], UnitOfWork]:
    """Read-only units of work (the door's gate)."""
    model = RecordModel(settings.record_model)
    return lambda: UnitOfWork(engine, record_model=model, read_only=True)


def record_policy(settings: Settings, engine: Engine, log: AuditLog) -> RecordPolicy:
    return RecordPolicy(
        units(settings, engine),
        log,
        clock=utc_now,
        matrix=load_profile_matrix(settings),
        care_relationship=timedelta(days=settings.care_relationship_days),
        emergency_window=timedelta(hours=settings.emergency_access_hours),
    )


def document_vault(settings: Settings) -> EnvelopeVault:
    """The documents' vault over their key source (the first KEK is created once)."""
    keyring = open_keyring(settings.document_key_source or settings.key_source)
    keyring.initialize()
    return EnvelopeVault(keyring)


def document_service(
    settings: Settings,
    log: AuditLog,
    matrix: ProfileMatrix,
    affinity: AffinityDomain,
    vault: EnvelopeVault,
) -> DocumentService:
    return DocumentService(
        vault,
        affinity,
        log,
        clock=utc_now,
        matrix=matrix,
        limits=DocumentLimits(
            max_bytes=settings.max_document_bytes,
            max_bundle_entries=settings.max_bundle_entries,
            release_delay=timedelta(days=settings.document_release_days),
        ),
        blobs=FileBlobStore(settings.document_storage_path)
        if settings.document_storage == "filesystem"
        else None,
    )


def policy_and_documents(
    settings: Settings, engine: Engine, log: AuditLog
) -> tuple[RecordPolicy, DocumentService]:
    """The record policy and the document service, for commands that act outside the API."""
    policy = record_policy(settings, engine, log)
    affinity = load_affinity_domain(settings.affinity_domain_file)
    return policy, document_service(
        settings, log, policy.matrix, affinity, document_vault(settings)
    )


def audit_log(settings: Settings, engine: Engine) -> AuditLog:
    signers = signers_from_key_source(settings.key_source, STREAMS)
    return AuditLog(engine, {stream: signer for stream, signer in signers.items()}, utc_now)


def account_service(settings: Settings, engine: Engine, log: AuditLog) -> AccountService:
    return AccountService(
        lambda: UnitOfWork(engine),
        log,
        hasher=Argon2PasswordHasher(),
        totp=TotpAuthenticator(),
        secret_box=TotpSecretBox.from_key_source(settings.key_source),
        qr_code=qr_svg,
        clock=utc_now,
    )


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    directory: DirectoryContext
    audit: AuditLog
    tokens: TokenContext
    accounts: AccountService
    policy: RecordPolicy
    documents: DocumentService
    vault: EnvelopeVault
    door: FhirDoor
    app: FastAPI

    def unit_of_work(self) -> UnitOfWork:
        return units(self.settings, self.engine)()


def build(settings: Settings, engine: Engine | None = None) -> Platform:
    """Assemble the platform; refuses development defaults outside ``dev``."""
    settings.check_deployable()
    load_keys(key_file_path(settings.key_source))  # refuse to start without usable keys
    engine = engine or connect(settings.database_url, pool_size=settings.request_threads + 6)
    directory = directory_context(settings)
    log = audit_log(settings, engine)
    policy = record_policy(settings, engine, log)
    affinity = load_affinity_domain(settings.affinity_domain_file)
    vault = document_vault(settings)
    documents = document_service(settings, log, policy.matrix, affinity, vault)
    api = ApiContext(
        unit_of_work=units(settings, engine),
        directory=directory,
        audit=log,
        settings=settings,
        policy=policy,
        documents=documents,
        affinity=affinity,
    )
    base = settings.public_url
    fhir_base = base + "/fhir"
    tokens = TokenContext(
        key=TokenSigningKey.from_key_source(settings.key_source),
        issuer=base,
        token_endpoint=base + "/oauth/token",
        fhir_base=fhir_base,
        clock=utc_now,
    )
    door = FhirDoor(
        handlers=fhir_handlers(api),
        gate=TokenGate(settings, read_units(settings, engine), tokens, policy),
        recorder=AuditTrail(log, utc_now),
        limiter=TokenBucketLimiter(settings.rate_limit_per_minute),
        capabilities=lambda d: capability_statement(d, fhir_base),
    )
    accounts = account_service(settings, engine, log)
    sessions = PortalSessions(lambda: UnitOfWork(engine), utc_now)
    portal = portal_router(
        settings, accounts, sessions, log, api.unit_of_work, utc_now, api.policy, affinity=affinity
    )
    oauth = oauth_router(
        lambda: UnitOfWork(engine),
        tokens,
        log,
        TokenBucketLimiter(settings.rate_limit_per_minute),
        utc_now,
        introspection_limiter=TokenBucketLimiter(settings.introspection_rate_per_minute),
    )

    pki_routes = pki_router(
        lambda: UnitOfWork(log.engine), ca_key_password(settings.key_source), utc_now
    )

    def security_officer(token: str) -> str | None:
        with UnitOfWork(engine) as uow:
            try:
                caller = authenticate(uow, tokens, token)
            except CareVaultError:
                return None
        if caller.role == "security-officer" and permits(caller.scopes, "AuditEvent", "r"):
            return caller.fhir_user
        return None

    app = create_app(
        settings,
        door,
        log,
        # the PKI's public documents last, as before
        routers=[oauth, portal, pki_routes],
        security_officer=security_officer,
        housekeeping=[
            lambda: documents.release_due(api.unit_of_work),
            lambda: documents.sweep_orphans(api.unit_of_work),
        ],
    )
    return Platform(
        settings, engine, directory, log, tokens, accounts, policy, documents, vault, door, app
    )
