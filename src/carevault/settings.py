"""Typed configuration, read once from ``CAREVAULT_*`` environment variables.

Settings are an explicit object handed to `bootstrap`; nothing reads the environment at import
time. `Settings.check_deployable` is where a non-development environment refuses defaults: a
platform that would run in ``prod`` with the development key file or the development database
must not start at all, and must say which setting is wrong.

The public address (``CAREVAULT_PUBLIC_BASE_URL``: the issuer and token endpoint of the SMART
configuration, every link the platform writes) is required outside ``dev``. In ``dev``, left
unset, it is the address ``carevault serve`` listens on (`Settings.served_at`), so that
``carevault serve --port 8100`` advertises ``http://127.0.0.1:8100``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from carevault.domain.authorization import CareProof

Environment = Literal["dev", "integration", "preprod", "prod"]

DEV_DATABASE_URL = "sqlite:///var/carevault.db"
DEV_KEY_SOURCE = "file:var/carevault.key"
DEV_HOST = "127.0.0.1"
DEV_PORT = 8000
DEV_PUBLIC_BASE_URL = f"http://{DEV_HOST}:{DEV_PORT}"


class ConfigurationError(Exception):
    """The configuration cannot be used in this environment; the message names the setting."""


class Settings(BaseSettings):
    """Everything an operator can configure. Limits are explicit and documented here."""

    model_config = SettingsConfigDict(env_prefix="CAREVAULT_", extra="ignore")

    environment: Environment = "dev"
    database_url: str = DEV_DATABASE_URL
    key_source: str = Field(
        default=DEV_KEY_SOURCE,
        description="Where keys live: 'file:PATH' (a 0600 key file) or, later, 'pkcs11:…'.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="The address clients use (issuer, token endpoint, links). Required outside "
        "dev; in dev, unset means the address `carevault serve` listens on.",
    )
    national_id_system: str = "https://carevault.lu/fhir/sid/matricule"
    professional_id_system: str = "https://carevault.lu/fhir/sid/hpd"
    organization_id_system: str = "https://carevault.lu/fhir/sid/organization"
    tsa_url: str | None = Field(
        default=None, description="An RFC 3161 time-stamping authority for the tree heads."
    )
    tsa_interval_seconds: float = Field(default=60.0, ge=1.0)
    tree_head_interval_seconds: float = Field(
        default=10.0,
        ge=1.0,
        description="How long the latest signed tree head is served, by the public "
        "/audit/tree-head and the patients' access histories, before one of them has a new "
        "one signed: at most one head per interval however many ask (the chores still sign "
        "every second while the log grows).",
    )
    # The external ATNA audit record repository (syslog over TLS); none = no export.
    atna_host: str | None = None
    atna_transport: Literal["rfc5425", "relp"] = Field(
        default="rfc5425",
        description="rfc5425: syslog over TLS, a batch confirmed all or nothing; relp: RELP "
        "over TLS (rsyslog imrelp), each message acknowledged, exactly once across restarts.",
    )
    atna_port: int = Field(default=6514, ge=1, le=65535)
    atna_ca_file: Path | None = None
    atna_cert_file: Path | None = None
    atna_key_file: Path | None = None
    atna_server_name: str | None = None
    professions_file: Path | None = Field(
        default=None, description="A professions/specialties code system file; None = built-in."
    )

    # Explicit bounds on what a client may send or ask for.
    profile_matrix_file: Path | None = Field(
        default=None,
        description="The authorization profile matrix (JSON, versioned); None = built-in.",
    )
    document_key_source: str | None = Field(
        default=None,
        description="Where documents' key-encryption keys live: 'file:PATH' or "
        "'pkcs11:module=…;token=…;pin-env=VAR'; None = the key source.",
    )
    max_document_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    patient_upload_max_documents: int = Field(
        default=200, ge=0, description="How many documents of their own a patient may add."
    )
    patient_upload_max_bytes: int = Field(
        default=500 * 1024 * 1024,
        ge=0,
        description="How many bytes in all the documents a patient adds may take.",
    )
    patient_uploads_per_minute: int = Field(
        default=6, ge=1, description="How often a record takes a patient's upload (burst too)."
    )
    document_storage: Literal["database", "filesystem"] = Field(
        default="database", description="Where sealed document content lives."
    )
    document_storage_path: Path = Field(
        default=Path("var/documents"), description="The filesystem backend's directory."
    )
    messaging_domain: str = Field(
        default="msg.carevault.localhost",
        description="The domain of the professionals' messaging addresses (hp-123@DOMAIN).",
    )
    smtp_host: str | None = Field(
        default=None,
        description="The SMTP relay that mails patients' notifications (none: no e-mail).",
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="The relay's port.")
    mail_from: str = Field(
        default="carevault@localhost",
        description="The sender address of the notifications mailed to patients.",
    )
    messaging_maildir: Path = Field(
        default=Path("var/mail"),
        description="Where the per-recipient Maildirs of (encrypted) messages live.",
    )
    messaging_mail_user: str | None = Field(
        default=None,
        description="The system user Dovecot serves mail as, and who owns the Maildirs; "
        "needed when CareVault runs as root (Dovecot never serves mail as root).",
    )
    messaging_sender_rate_per_minute: int = Field(
        default=60,
        ge=1,
        description="Messages one professional may begin over SMTP per minute (as many in a "
        "burst); one more is answered 451 4.7.1 and recorded. A colleague sends a few an hour; "
        "a stolen card or a runaway client would otherwise fill the mailboxes and the audit log.",
    )
    document_release_days: int = Field(
        default=14, ge=1, le=366, description="How long a held document waits by default."
    )
    affinity_domain_file: Path | None = Field(
        default=None,
        description="The affinity domain's code lists (JSON, versioned); None = built-in.",
    )
    record_model: Literal["opt-out", "opt-in"] = Field(
        default="opt-out",
        description="opt-out: every identified patient has a record; opt-in: only those who "
        "opened one.",
    )
    care_relationship_days: int = Field(default=90, ge=1, le=3650)
    care_event_proof: Literal["either", "admission-system", "presence-code"] = Field(
        default="either",
        description="What proves a care event, so that it opens the record: the organization's "
        "registered admission system, the patient's presence code, or either.",
    )
    emergency_access_hours: int = Field(default=24, ge=1, le=168)
    emergency_quota: int = Field(
        default=5,
        ge=1,
        le=100,
        description="How many emergencies (break-the-glass) one professional may declare in 24 "
        "hours, on any records; one more is refused and the security officer alerted. Five "
        "leaves room for a night in an emergency department whose patients the platform does "
        "not know yet (an admission system records those as care events, which need no "
        "emergency), while a stolen card or session opens five records at most that way, each "
        "told to its patient.",
    )
    dispensing_professions: tuple[str, ...] = Field(
        default=("pharmacist",),
        description="The professions whose members dispense e-prescriptions (of a pharmacy "
        "they work for).",
    )
    medication_catalogue_file: Path | None = Field(
        default=None,
        description="The national product codes a prescription may name, with their ATC codes "
        "(JSON, versioned); None = the built-in example list.",
    )
    prescription_validity_days: int = Field(
        default=28, ge=1, le=366, description="How long a prescription without an end is valid."
    )
    conformance_key_file: Path | None = Field(
        default=None,
        description="The conformance sandbox's signing key (PEM: the integration platform's "
        "/.well-known/carevault-signing-key.pem), against which `carevault conformance grant` "
        "and `verify` check reports; None = this platform's own key.",
    )
    # A 20 MB document travels base64-encoded (4/3) inside a Bundle.
    max_body_bytes: int = Field(default=28 * 1024 * 1024, ge=1024)
    max_resource_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="The body limit of every FHIR interaction but the ITI-65 transaction "
        "(POST [base], which carries documents): a Consent, a search form, an operation's "
        "Parameters fit in far less, and each body is parsed and validated in memory.",
    )
    max_bundle_entries: int = Field(default=1000, ge=1)
    max_json_depth: int = Field(default=32, ge=4)
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=100, ge=1)
    rate_limit_per_minute: int = Field(default=1200, ge=1)
    introspection_rate_per_minute: int = Field(
        default=600,
        ge=1,
        description="Token introspections (RFC 7662) per authenticated client, and per "
        "address, per minute.",
    )
    # Serving: requests run in a thread pool of this size, each process with a database pool
    # a little larger (the audit writer and the chores have their own connections).
    # 12 threads keep a 2-core machine busy (requests mostly wait on the audit's group commit);
    # more threads only contend for the interpreter lock. Each worker process opens up to
    # 1.5 x (request_threads + 6) connections: keep workers x that under max_connections.
    request_threads: int = Field(default=12, ge=1, le=256)
    workers: int = Field(
        default=1, ge=1, le=64, description="Server processes of `carevault serve`."
    )
    # Transport. `carevault serve` terminates TLS itself when given a certificate and key
    # (`--tls-cert`, `--tls-key` override these), or sits behind a reverse proxy that does.
    tls_cert_file: Path | None = Field(
        default=None, description="The server's certificate chain (PEM), leaf first."
    )
    tls_key_file: Path | None = Field(default=None, description="Its private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="Client certificates are asked for and verified against these CAs (PEM; "
        "the platform CA chain, `carevault pki ca`); None = none asked for.",
    )
    tls_client_cert: Literal["optional", "required"] = Field(
        default="optional",
        description="With a client CA: whether a client without a certificate may connect.",
    )
    # Instruments (docs/operations.md): /metrics asks for this secret (a file holding it, 0600,
    # the same one Prometheus's `credentials_file` reads); without it /metrics is refused.
    metrics_credential_file: Path | None = Field(
        default=None, description="File holding the bearer secret /metrics asks for."
    )
    retention_years: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Years a closed record's documents are kept before `carevault retention "
        "run` purges them.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`carevault serve`'s log lines: text, or JSON lines."
    )
    require_synchronous_replication: bool = Field(
        default=False,
        description="/health/ready says not ready on a PostgreSQL primary without a "
        "synchronous standby (two-site installations that refuse to run on one site).",
    )
    trusted_proxies: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = Field(
        default=(),
        description="Addresses (IPs or CIDRs, comma-separated) of the reverse proxies whose "
        "X-Forwarded-For, X-Client-Certificate and X-Client-Verify headers are believed; "
        "from anyone else those headers are dropped.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        """``"10.0.0.5, 192.168.1.0/24"`` (or a list) into networks; a bad entry is refused."""
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list | tuple):
            try:
                return tuple(ipaddress.ip_network(str(part), strict=False) for part in value)
            except ValueError as error:
                raise ValueError(f"CAREVAULT_TRUSTED_PROXIES: {error}") from None
        return value

    @property
    def care_event_proofs(self) -> frozenset[CareProof]:
        if self.care_event_proof == "either":
            return frozenset(CareProof)
        return frozenset({CareProof(self.care_event_proof)})

    @field_validator("public_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # ``CAREVAULT_PUBLIC_BASE_URL=`` (set but empty) means unset, not the empty address.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def public_url(self) -> str:
        """The public address without a trailing slash: the one set, or in ``dev`` the default
        address of ``carevault serve`` (`served_at` puts the address really served here)."""
        if self.public_base_url is None:
            if self.environment != "dev":
                raise ConfigurationError(_MISSING_PUBLIC_URL.format(env=self.environment))
            return DEV_PUBLIC_BASE_URL
        return self.public_base_url.rstrip("/")

    def served_at(self, host: str, port: int, *, tls: bool = False) -> Settings:
        """These settings for a server listening on ``host:port``: in ``dev`` without an
        explicit public address, clients are told that address (a wildcard address is reached
        through the loopback one). Anything set explicitly, and every other environment, is
        kept as it is."""
        if self.public_base_url is not None or self.environment != "dev":
            return self
        return self.model_copy(update={"public_base_url": local_url(host, port, tls=tls)})

    def check_transport(self) -> None:
        """What `carevault serve` refuses: half a TLS configuration, client certificates
        without TLS, and, outside ``dev``, plain HTTP that no trusted proxy stands in front of
        (the public address is https:// there, see `check_deployable`: someone must speak TLS
        to the clients, CareVault itself or the proxy)."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError(
                "TLS needs both a certificate and its key: set CAREVAULT_TLS_CERT_FILE and "
                "CAREVAULT_TLS_KEY_FILE (--tls-cert, --tls-key), or neither"
            )
        tls = self.tls_cert_file is not None
        if self.tls_client_ca_file is not None and not tls:
            raise ConfigurationError(
                "CAREVAULT_TLS_CLIENT_CA_FILE (--client-ca) needs TLS: set "
                "CAREVAULT_TLS_CERT_FILE and CAREVAULT_TLS_KEY_FILE too"
            )
        if self.tls_client_cert == "required" and self.tls_client_ca_file is None:
            raise ConfigurationError(
                "client certificates cannot be required without CAREVAULT_TLS_CLIENT_CA_FILE "
                "(--client-ca), the CA they are verified against"
            )
        if self.environment != "dev" and not tls and not self.trusted_proxies:
            raise ConfigurationError(
                f"outside dev CareVault does not serve plain HTTP on its own: give it a "
                f"certificate (CAREVAULT_TLS_CERT_FILE and CAREVAULT_TLS_KEY_FILE, or --tls-cert "
                f"and --tls-key), or name the reverse proxy that terminates TLS in front of it "
                f"(CAREVAULT_TRUSTED_PROXIES); environment '{self.environment}'"
            )

    def check_deployable(self) -> None:
        """Refuse development defaults anywhere but ``dev``; say which setting is at fault."""
        if self.environment == "dev":
            return
        env = self.environment
        if self.key_source == DEV_KEY_SOURCE:
            raise ConfigurationError(
                f"CAREVAULT_KEY_SOURCE is the development default; set a key source "
                f"dedicated to the '{env}' environment"
            )
        if not self.key_source.strip():
            raise ConfigurationError("CAREVAULT_KEY_SOURCE is missing")
        if self.database_url == DEV_DATABASE_URL:
            raise ConfigurationError(
                f"CAREVAULT_DATABASE_URL is the development default; set the '{env}' database"
            )
        if self.public_base_url is None:
            raise ConfigurationError(_MISSING_PUBLIC_URL.format(env=env))
        if self.public_base_url.rstrip("/") == DEV_PUBLIC_BASE_URL:
            raise ConfigurationError(
                f"CAREVAULT_PUBLIC_BASE_URL is the development default; set the '{env}' address"
            )
        if not self.public_base_url.startswith("https://"):
            raise ConfigurationError(
                "CAREVAULT_PUBLIC_BASE_URL must be https:// outside dev (got a plain address)"
            )


_MISSING_PUBLIC_URL = (
    "CAREVAULT_PUBLIC_BASE_URL is not set; set the address clients use in the '{env}' "
    "environment (https://…)"
)


def local_url(host: str, port: int, *, tls: bool = False) -> str:
    """The address of a server listening on ``host:port`` of this machine (``https://`` when it
    serves TLS itself)."""
    scheme = "https" if tls else "http"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"{scheme}://{host}:{port}"  # a host name
    if address.is_unspecified:  # 0.0.0.0 or "::" listens on every interface, loopback too
        address = ipaddress.ip_address("::1" if address.version == 6 else DEV_HOST)
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme}://{shown}:{port}"
