"""The one place that wires real adapters to the services and the HTTP layer."""

from __future__ import annotations

import json
import pwd
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI, Request
from sqlalchemy import Engine

from carevault.adapters.anomaly.isolation_forest import IsolationForestModel
from carevault.adapters.crypto import open_keyring
from carevault.adapters.crypto.vault import EnvelopeVault
from carevault.adapters.keys.local_file import key_file_path, load_keys
from carevault.adapters.keys.log_signer import (
    platform_signer_from_key_source,
    signers_from_key_source,
)
from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.keys.token_signer import TokenSigningKey
from carevault.adapters.mail.smtp import SmtpSender
from carevault.adapters.messaging.maildir import MaildirBoxes
from carevault.adapters.package_config import builtin_profile_matrix, builtin_text
from carevault.adapters.printing.prescription_pdf import prescription_pdf
from carevault.adapters.security.passwords import Argon2PasswordHasher
from carevault.adapters.security.sealed_codes import AccessCodeBox
from carevault.adapters.security.totp import TotpAuthenticator, TotpSecretBox, qr_svg
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.blob_store import FileBlobStore
from carevault.adapters.storage.database import connect
from carevault.adapters.storage.health import database_health
from carevault.adapters.storage.lease import try_chores_lease
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.adapters.syslog.relp_sender import RelpSender
from carevault.adapters.syslog.tls_sender import TlsSyslogSender
from carevault.adapters.timestamping import HttpTimeStampAuthority
from carevault.api.access import TokenBucketLimiter, TokenGate
from carevault.api.app import create_app
from carevault.api.audit_trail import AuditTrail, before_commit
from carevault.api.fhir.capability import capability_statement
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import FhirDoor
from carevault.api.fhir.registry import fhir_handlers
from carevault.api.fhir.terminology_handlers import load_affinity_domain
from carevault.api.instruments import Instruments, json_log_config
from carevault.api.mailbox_routes import mailbox_router, professional_authenticator
from carevault.api.oauth_routes import oauth_router
from carevault.api.pki_routes import pki_router, signing_key_router
from carevault.api.tls import TlsOptions, server_context
from carevault.api.workers import listening_socket, serve_one, serve_processes
from carevault.domain.affinity import AffinityDomain
from carevault.domain.audit import STREAMS
from carevault.domain.authorization import ProfileMatrix, RecordModel
from carevault.domain.errors import CareVaultError, InvalidInput, NotAuthenticated
from carevault.domain.prescriptions import MedicationCatalogue
from carevault.domain.professions import Professions
from carevault.domain.scopes import permits
from carevault.fhirmodel.directory import IdentitySystems
from carevault.services.account_passkeys import AccountPasskeys
from carevault.services.accounts import AccountService
from carevault.services.anomaly_detection import AnomalyDetection
from carevault.services.atna_export import log_id_of, start_exporters
from carevault.services.audit_log import AuditLog
from carevault.services.care_access import CareAccess
from carevault.services.chores import Chores
from carevault.services.directory import DirectoryContext
from carevault.services.directory_service import DirectoryService
from carevault.services.document_exchange import DocumentExchange
from carevault.services.document_publication import DocumentLimits
from carevault.services.documents import DocumentService
from carevault.services.mail_directory import MailDirectory
from carevault.services.mailbox import MailboxService
from carevault.services.messaging import MessagingContext, MessagingService
from carevault.services.notification_mail import NotificationMailer
from carevault.services.passkey_ceremony import relying_party
from carevault.services.patient_uploads import PatientUploads, UploadQuota
from carevault.services.pki import PkiContext, PublicDocuments
from carevault.services.portal_sessions import PortalSessions
from carevault.services.prescriptions import PrescriptionService
from carevault.services.professional_record import ProfessionalRecord
from carevault.services.professionals import Professionals
from carevault.services.readiness import Readiness
from carevault.services.record_policy import RecordPolicy
from carevault.services.representatives import Representatives
from carevault.services.retention import Retention
from carevault.services.token_endpoint import TokenEndpoint
from carevault.services.tokens import TokenContext, authenticate
from carevault.services.unit_of_work import UnitOfWork
from carevault.services.workspace_signin import WorkspaceSignIn
from carevault.settings import ConfigurationError, Settings
from carevault.web.pages import SESSION_COOKIE
from carevault.web.portal import portal_router
from carevault.web.workspace import workspace_router

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
    return lambda: SqlUnitOfWork(engine, before_commit=before_commit, record_model=model)


def read_units(settings: Settings, engine: Engine) -> Callable[[], UnitOfWork]:
    """Read-only units of work (the door's gate)."""
    model = RecordModel(settings.record_model)
    return lambda: SqlUnitOfWork(engine, record_model=model, read_only=True)


def record_policy(settings: Settings, engine: Engine, log: AuditLog) -> RecordPolicy:
    return RecordPolicy(
        units(settings, engine),
        log,
        clock=utc_now,
        matrix=load_profile_matrix(settings),
    )


def care_access(settings: Settings, policy: RecordPolicy) -> CareAccess:
    """Care events, emergency access and delegations, with the deployment's durations."""
    return CareAccess(
        policy,
        care_relationship=timedelta(days=settings.care_relationship_days),
        emergency_window=timedelta(hours=settings.emergency_access_hours),
        emergency_quota=settings.emergency_quota,
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


def messaging_context(settings: Settings) -> MessagingContext:
    return MessagingContext(
        pki=PkiContext(
            systems=directory_context(settings).systems,
            ca_password=ca_key_password(settings.key_source),
            clock=utc_now,
            environment=settings.environment,
        ),
        domain=settings.messaging_domain,
    )


def messaging_service(settings: Settings, engine: Engine, log: AuditLog) -> MessagingService:
    """Secure messaging's submission side (the SMTP server), each sender held to
    ``messaging_sender_rate_per_minute`` messages."""
    return MessagingService(
        units(settings, engine),
        messaging_context(settings),
        mailboxes(settings),
        log.append,
        sender_rate=TokenBucketLimiter(settings.messaging_sender_rate_per_minute).check,
    )


def mailbox_service(settings: Settings, engine: Engine, tokens: TokenContext) -> MailboxService:
    """A professional's mailbox over the HTTP API: the Maildirs the submission server fills."""
    return MailboxService(
        read_units(settings, engine), tokens, messaging_context(settings), mailboxes(settings)
    )


def mail_owner(settings: Settings) -> tuple[int, int] | None:
    """The mail user's uid and gid (``CAREVAULT_MESSAGING_MAIL_USER``), if one is set."""
    if settings.messaging_mail_user is None:
        return None
    try:
        entry = pwd.getpwnam(settings.messaging_mail_user)
    except KeyError:
        raise InvalidInput(
            f"CAREVAULT_MESSAGING_MAIL_USER: no system user {settings.messaging_mail_user!r}"
        ) from None
    return entry.pw_uid, entry.pw_gid


def mailboxes(settings: Settings) -> MaildirBoxes:
    return MaildirBoxes(settings.messaging_maildir, mail_owner(settings))


def audit_log(settings: Settings, engine: Engine) -> AuditLog:
    signers = signers_from_key_source(settings.key_source, STREAMS)
    return AuditLog(
        AuditDatabase(engine),
        {stream: signer for stream, signer in signers.items()},
        utc_now,
        tree_head_interval=timedelta(seconds=settings.tree_head_interval_seconds),
    )


def account_service(
    settings: Settings, engine: Engine, log: AuditLog, passkeys: AccountPasskeys | None = None
) -> AccountService:
    """The accounts' use cases; with ``passkeys``, a passkey signs in besides the TOTP code."""
    return AccountService(
        lambda: SqlUnitOfWork(engine),
        log,
        hasher=Argon2PasswordHasher(),
        totp=TotpAuthenticator(),
        secret_box=TotpSecretBox.from_key_source(settings.key_source),
        qr_code=qr_svg,
        clock=utc_now,
        passkeys=passkeys,
    )


def load_medication_catalogue(settings: Settings) -> MedicationCatalogue:
    """The deployment's medication catalogue, or the built-in example list."""
    path = settings.medication_catalogue_file
    try:
        text = (
            builtin_text("medication-products.json")
            if path is None
            else path.read_text(encoding="utf-8")
        )
        return MedicationCatalogue.from_mapping(json.loads(text))
    except (OSError, ValueError) as error:
        raise InvalidInput(f"the medication catalogue {path} cannot be used: {error}") from None


def prescription_service(settings: Settings, engine: Engine, log: AuditLog) -> PrescriptionService:
    return PrescriptionService(
        units(settings, engine),
        log,
        platform_signer_from_key_source(settings.key_source),
        clock=utc_now,
        catalogue=load_medication_catalogue(settings),
        patient_system=settings.national_id_system,
        practitioner_system=settings.professional_id_system,
        default_validity=timedelta(days=settings.prescription_validity_days),
        counting_units=lambda: SqlUnitOfWork(engine),
        printer=prescription_pdf,
        codes=AccessCodeBox.from_key_source(settings.key_source),
    )


def readiness(settings: Settings, engine: Engine, log: AuditLog, vault: EnvelopeVault) -> Readiness:
    """What /health/ready checks: the keys are usable when the key file still loads and the
    documents' vault seals and opens a probe (an HSM that went away fails here)."""

    def keys_usable() -> None:
        load_keys(key_file_path(settings.key_source))
        sealed = vault.seal(b"probe", document_id="health-probe", version=0, purpose="health")
        opened = vault.open(sealed, document_id="health-probe", version=0, purpose="health")
        if opened != b"probe":
            raise ValueError("the vault does not round-trip")

    destination = f"{settings.atna_host}:{settings.atna_port}" if settings.atna_host else None
    return Readiness(
        lambda: database_health(engine),
        log,
        keys_usable,
        export_destination=destination,
        require_synchronous=settings.require_synchronous_replication,
        document_store=settings.document_storage_path
        if settings.document_storage == "filesystem"
        else None,
    )


def retention(settings: Settings, engine: Engine, log: AuditLog) -> Retention:
    """The retention job over the configured period and document store."""
    return Retention(
        lambda: SqlUnitOfWork(engine),
        log,
        utc_now,
        years=settings.retention_years,
        blobs=FileBlobStore(settings.document_storage_path)
        if settings.document_storage == "filesystem"
        else None,
    )


def server_tls(settings: Settings) -> TlsOptions | None:
    """The TLS `carevault serve` listens with, if any, checked before anything starts: an
    unusable certificate, key or CA file is refused here with a readable message."""
    tls = TlsOptions.from_settings(settings)
    if tls is not None:
        server_context(tls)
    return tls


def serve(
    platform: Platform,
    host: str,
    port: int,
    processes: int,
    tls: TlsOptions | None,
    *,
    json_logs: bool,
) -> bool:
    """Serve ``platform`` on host:port: in this process (one worker), or in ``processes``
    worker processes that each build their own platform (`application`) from the environment,
    told the public address resolved here so that all of them advertise the same one. False
    when the single server could not start (uvicorn said why: a port in use…)."""
    if processes == 1:
        return serve_one(platform.app, host, port, tls, json_logs=json_logs)
    platform.engine.dispose()  # the workers build their own; this process only supervises
    try:
        listening_socket(host, port).close()  # a port in use is refused here, readably
    except OSError as error:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    serve_processes(
        "carevault.bootstrap:application",
        host,
        port,
        processes,
        tls=tls,
        environment={"CAREVAULT_PUBLIC_BASE_URL": platform.settings.public_url},
        json_logs=json_logs,
    )
    return True


def log_config(level: str = "info") -> dict[str, object]:
    """The JSON-lines logging configuration of `carevault serve` (CAREVAULT_LOG_FORMAT)."""
    return json_log_config(level)


def metrics_credential(settings: Settings) -> bytes | None:
    """The /metrics secret, read from its file (refused if others may read it)."""
    path = settings.metrics_credential_file
    if path is None:
        return None
    if path.stat().st_mode & 0o077:
        raise InvalidInput(f"{path} must be readable by its owner only (chmod 600)")
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise InvalidInput(f"{path} must hold a secret of at least 16 characters")
    return secret


def atna_export(
    settings: Settings, log: AuditLog
) -> Callable[[threading.Event], list[threading.Thread]]:
    """Starts the export of both audit streams to the configured ATNA repository, if any."""
    if not settings.atna_host:
        return lambda _stop: []
    host, port = settings.atna_host, settings.atna_port

    def start(stop: threading.Event) -> list[threading.Thread]:
        # Built by the holder of the chores lease only, when it takes the lease.
        if settings.atna_ca_file is None:
            raise ConfigurationError(
                "CAREVAULT_ATNA_CA_FILE is needed to trust the ATNA repository"
            )
        ca_file = str(settings.atna_ca_file)
        transport = RelpSender if settings.atna_transport == "relp" else TlsSyslogSender
        sender = transport.from_files(
            host,
            port,
            ca_file,
            str(settings.atna_cert_file) if settings.atna_cert_file else None,
            str(settings.atna_key_file) if settings.atna_key_file else None,
            server_name=settings.atna_server_name,
        )
        return start_exporters(
            log.database,
            sender,
            logs={stream: log_id_of(log.public_key_pem(stream)) for stream in STREAMS},
            destination=f"{host}:{port}",
            hostname=socket.gethostname(),
            stop=stop,
            server=settings.public_url + "/fhir",
        )

    return start


def chores(
    settings: Settings, log: AuditLog, housekeeping: Sequence[Callable[[], object]]
) -> Chores:
    """The chores of the process that holds the chores lease, with their adapters."""
    return Chores(
        tree_heads=log,
        lease=lambda: try_chores_lease(log.database.engine),
        housekeeping=housekeeping,
        authority=HttpTimeStampAuthority(settings.tsa_url) if settings.tsa_url else None,
        stamp_interval_seconds=settings.tsa_interval_seconds,
        start_export=atna_export(settings, log),
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
    care: CareAccess
    representatives: Representatives
    documents: DocumentService
    vault: EnvelopeVault
    door: FhirDoor
    app: FastAPI
    alerts: AnomalyDetection | None = None

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
    # The security officer's alerts: the detector reads the audit log as a chore.
    alerts = AnomalyDetection(
        units(settings, engine),
        log,
        utc_now,
        national_system=directory.systems.national,
        model=IsolationForestModel(),
    )
    api = ApiContext(
        prescriptions=prescription_service(settings, engine, log),
        unit_of_work=units(settings, engine),
        directory=directory,
        directories=DirectoryService(
            units(settings, engine),
            directory,
            MailDirectory(directory.systems, settings.messaging_domain, directory.clock),
        ),
        audit=log,
        settings=settings,
        policy=policy,
        care=care_access(settings, policy),
        representatives=Representatives(policy),
        documents=documents,
        exchange=DocumentExchange(units(settings, engine), documents),
        affinity=affinity,
        alerts=alerts,
        professionals=Professionals(policy.units, log, clock=policy.clock),
    )
    base = settings.public_url
    fhir_base = base + "/fhir"
    instruments = Instruments(readiness(settings, engine, log, vault))
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
        recorder=AuditTrail(
            log,
            utc_now,
            on_decision=instruments.decided,
            errors_recorded=settings.environment == "integration",
        ),
        limiter=TokenBucketLimiter(settings.rate_limit_per_minute),
        capabilities=lambda d: capability_statement(d, fhir_base),
        max_json_depth=settings.max_json_depth,
    )
    party = relying_party(settings.public_url, settings.environment)
    passkeys = AccountPasskeys(lambda: SqlUnitOfWork(engine), log, party, utc_now)
    accounts = account_service(settings, engine, log, passkeys)
    sessions = PortalSessions(lambda: SqlUnitOfWork(engine), utc_now)
    public_pki = PublicDocuments(
        lambda: SqlUnitOfWork(log.database.engine), ca_key_password(settings.key_source), utc_now
    )
    portal = portal_router(
        settings,
        accounts,
        sessions,
        log,
        api.unit_of_work,
        utc_now,
        api.policy,
        care=api.care,
        representatives=api.representatives,
        affinity=affinity,
        documents=api.documents,
        alerts=alerts,
        pki=public_pki,
        passkeys=passkeys,
        uploads=PatientUploads(
            api.unit_of_work,
            api.documents,
            api.policy,
            log,
            settings.max_document_bytes,
            UploadQuota(settings.patient_upload_max_documents, settings.patient_upload_max_bytes),
        ),
        prescriptions=api.prescriptions,
    )
    workspace = workspace_router(
        settings,
        sessions,
        WorkspaceSignIn(
            lambda: SqlUnitOfWork(engine),
            tokens,
            party,
            utc_now,
        ),
        utc_now,
        log,
        api.policy,
        api.care,
        api.documents,
        api.professionals,
        affinity,
        ProfessionalRecord(
            api.unit_of_work,
            api.policy,
            api.documents,
            log,
            settings.national_id_system,
            settings.max_document_bytes,
        ),
    )
    oauth = oauth_router(
        TokenEndpoint(lambda: SqlUnitOfWork(engine), tokens),
        TokenBucketLimiter(settings.rate_limit_per_minute),
        introspection_limiter=TokenBucketLimiter(settings.introspection_rate_per_minute),
    )

    pki_routes = pki_router(public_pki)
    mailbox = mailbox_service(settings, engine, tokens)

    def security_officer(token: str) -> str | None:
        with SqlUnitOfWork(engine) as uow:
            try:
                caller = authenticate(uow, tokens, token)
            except CareVaultError:
                return None
        if caller.role == "security-officer" and permits(caller.scopes, "AuditEvent", "r"):
            return caller.fhir_user
        return None

    def officer_session(request: Request) -> str | None:
        """The security officer signed in to the portal (their workspace's pages)."""
        try:
            session = sessions.resume(request.cookies.get(SESSION_COOKIE))
        except NotAuthenticated:
            return None
        return f"account:{session.account_id}" if session.kind == "security-officer" else None

    app = create_app(
        settings,
        door,
        log,
        # the PKI's public documents last, as before
        routers=[
            oauth,
            portal,
            workspace,
            pki_routes,
            signing_key_router(api.prescriptions.signer.public_key_pem()),
            mailbox_router(mailbox),
        ],
        security_officer=security_officer,
        authenticators={"professional": professional_authenticator(mailbox)},
        officer_session=officer_session,
        # The audit log's public routes: per address, a bucket of their own.
        audit_limiter=TokenBucketLimiter(settings.rate_limit_per_minute),
        instruments=instruments,
        metrics_credential=metrics_credential(settings),
        chores=chores(
            settings,
            log,
            housekeeping=[
                lambda: documents.publisher.release_due(api.unit_of_work),
                lambda: documents.sweep_orphans(api.unit_of_work),
                alerts.catch_up,
                *notification_chores(settings, api.unit_of_work),
            ],
        ).run,
    )
    return Platform(
        settings,
        engine,
        directory,
        log,
        tokens,
        accounts,
        policy,
        api.care,
        api.representatives,
        documents,
        vault,
        door,
        app,
        alerts,
    )


def notification_mailer(
    settings: Settings, units: Callable[[], UnitOfWork]
) -> NotificationMailer | None:
    """The chore that mails patients that something happened (no medical content), through
    the configured SMTP relay; None when none is configured."""
    if settings.smtp_host is None:
        return None
    return NotificationMailer(
        units,
        SmtpSender(settings.smtp_host, settings.smtp_port),
        mail_from=settings.mail_from,
        portal_url=settings.public_url,
        clock=utc_now,
    )


def notification_chores(
    settings: Settings, units: Callable[[], UnitOfWork]
) -> list[Callable[[], object]]:
    mailer = notification_mailer(settings, units)
    return [] if mailer is None else [mailer.run_once]


def application() -> FastAPI:
    """The ASGI application factory of ``carevault serve --workers N``
    (``carevault.bootstrap:application``): every worker process builds its own platform
    (engine, audit writer, door) from the environment's settings."""
    return build(Settings()).app
