"""The relational schema, shared by SQLite (embedded) and PostgreSQL (production).

Every table that holds data about a patient carries ``patient_id`` so that the data can later be
sharded by patient. Resources are kept as canonical JSON text beside the columns that searches
use; the columns are derived from the JSON on every write and never edited alone. Folded name
columns (see `carevault.domain.text.fold`) are indexed for prefix search with
``text_pattern_ops`` on PostgreSQL, so that ``LIKE 'abc%'`` uses the index under any collation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is stored and returned in UTC, on SQLite too (which has no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: CareVault stores UTC timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(64)


def _prefix_index(name: str, table: str, column: str) -> Index:
    return Index(name, column, postgresql_ops={column: "text_pattern_ops"})


def _word_index(name: str, column: str) -> Index:
    """A trigram index (PostgreSQL's pg_trgm, migration 0029) for a search by the start of any
    word of ``column`` (``LIKE '% x%'``), which a B-tree cannot serve: without one, each such
    search read the whole table (100 ms for a million names, at the rate limit's pace).
    SQLite, for development only, has no such index: its index is empty (``WHERE 0``), so that
    the declared schema is one on both."""
    return Index(
        name,
        column,
        postgresql_using="gin",
        postgresql_ops={column: "gin_trgm_ops"},
        sqlite_where=text("0"),
    )


organization = Table(
    "organization",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("identifier", String(128), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("name_folded", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    # The namespace of the local patient numbers this organization assigns (PIX).
    Column("patient_id_system", String(255), unique=True),
    Column("resource", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    _prefix_index("ix_organization_name_folded", "organization", "name_folded"),
    _word_index("ix_organization_name_words", "name_folded"),
)

practitioner = Table(
    "practitioner",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("identifier", String(128), nullable=False, unique=True),
    Column("family_folded", Text, nullable=False),
    Column("given_folded", Text, nullable=False),
    Column("licence_status", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("resource", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    _prefix_index("ix_practitioner_family_folded", "practitioner", "family_folded"),
    _word_index("ix_practitioner_family_words", "family_folded"),
    _word_index("ix_practitioner_given_words", "given_folded"),
)

practitioner_role = Table(
    "practitioner_role",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("practitioner_id", ID, ForeignKey("practitioner.id"), nullable=False, index=True),
    Column("organization_id", ID, ForeignKey("organization.id"), index=True),
    Column("profession", String(64), nullable=False, index=True),
    Column("specialty", String(64), index=True),
    Column("active", Boolean, nullable=False),
    Column("resource", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

patient = Table(
    "patient",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("national_id", String(32), nullable=False, unique=True),
    Column("birth_date", Date),
    Column("gender", String(16)),
    Column("active", Boolean, nullable=False),
    Column("merged_into", ID, ForeignKey("patient.id"), index=True),
    Column("resource", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_patient_birth_date", "birth_date"),
    # The patients a search may find (not merged away), by id: a search's page and its count
    # read this index alone, whatever the number of matches (migration 0027).
    Index(
        "ix_patient_live_id",
        "id",
        postgresql_where=text("merged_into IS NULL"),
        sqlite_where=text("merged_into IS NULL"),
    ),
)

patient_name = Table(
    "patient_name",
    metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("family_folded", Text, nullable=False),
    # Given names folded and joined by single spaces; a prefix of any of them matches.
    Column("given_folded", Text, nullable=False),
    # With the patient's id: a search by family name reads the index alone (0027).
    Index(
        "ix_patient_name_family_folded",
        "family_folded",
        "patient_id",
        postgresql_ops={"family_folded": "text_pattern_ops"},
    ),
    _word_index("ix_patient_name_family_words", "family_folded"),
    _word_index("ix_patient_name_given_words", "given_folded"),
)

patient_identifier = Table(
    "patient_identifier",
    metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("system", String(255), nullable=False),
    Column("value", String(128), nullable=False),
    UniqueConstraint("system", "value"),
)

patient_postal_code = Table(
    "patient_postal_code",
    metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("postal_code", String(32), nullable=False, index=True),
)

patient_merge = Table(
    "patient_merge",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("survivor_id", ID, ForeignKey("patient.id"), nullable=False),
    Column("merged_at", UTCDateTime, nullable=False),
    Column("unmerged_at", UTCDateTime),
)

# Every version of every directory resource, never updated or deleted.
resource_history = Table(
    "resource_history",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("resource_id", ID, primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("patient_id", ID, index=True),
    Column("resource", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

# --- the audit log (one Merkle tree per stream) -------------------------------------------------

# The entries, in order, with no gaps; ``entry`` holds the canonical bytes the tree commits to.
audit_entry = Table(
    "audit_entry",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_id", ID),
    # Who acted (an identity reference), for the security officer's searches by agent.
    Column("agent", String(255)),
    # Made by a professional or a system, not by the patient or an account reading the record:
    # what the patient's chart counts, read by index (migration 0028).
    Column("by_others", Boolean, nullable=False, server_default=false()),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("entry", LargeBinary, nullable=False),
    Index("ix_audit_entry_patient", "stream", "patient_id", "leaf_index"),
    Index("ix_audit_entry_patient_by_others", "stream", "patient_id", "by_others", "leaf_index"),
    Index("ix_audit_entry_agent", "stream", "agent", "leaf_index"),
    Index("ix_audit_entry_recorded", "stream", "recorded_at"),
)

# Hashes of complete (perfect) subtrees: level 0 holds leaf hashes. Proofs read O(log n) of them.
audit_node = Table(
    "audit_node",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# The writers' shared state: size and right edge of each tree, locked while appending.
audit_log_state = Table(
    "audit_log_state",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
)

audit_tree_head = Table(
    "audit_tree_head",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    # An RFC 3161 time-stamp token over the signed bytes, when a TSA is configured.
    Column("timestamp_token", LargeBinary),
)

# The last entry of each patient's hash chain (`domain/audit_chain.py`), per stream: what the
# next entry about them links to. Read and written under the stream's lock; a cache of what the
# entries themselves say, which the verifiers never trust (migration 0019).
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("patient_id", ID, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
)

# How far each external audit repository has confirmed delivery (the outbox is the log itself).
audit_export_cursor = Table(
    "audit_export_cursor",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("destination", String(255), primary_key=True),
    Column("next_index", BigInteger, nullable=False),
)

# --- the platform PKI (migration 0003) ----------------------------------------------------------

# The two certificate authorities, 'root' and 'issuing'. The key is encrypted PKCS #8 PEM whose
# password is derived from the key file (`carevault.adapters.keys.pki_keys`): never plaintext.
pki_authority = Table(
    "pki_authority",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("certificate", Text, nullable=False),
    Column("encrypted_key", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Every client certificate issued, by serial number (lowercase hex); revocation marks the row.
pki_certificate = Table(
    "pki_certificate",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # 'practitioner', 'system', 'encryption'
    Column("practitioner_id", ID, index=True),
    Column("organization_id", ID),
    Column("subject", Text, nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("certificate", Text, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revocation_reason", String(32)),
)
# A mailbox's owner is found by their directory identifier in any case (migration 0026).
Index("ix_pki_certificate_client_id_lower", func.lower(pki_certificate.c.client_id))

# --- OAuth 2 / SMART tokens (migration 0004) ----------------------------------------------------

# Client assertion ids already used (RFC 7523 §3 "jti"): a replayed assertion is refused. Rows
# older than their expiry can be purged; the assertion itself is then refused as expired.
oauth_assertion = Table(
    "oauth_assertion",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# Access tokens issued, so that they can be revoked and introspected (RFC 7009, RFC 7662).
oauth_token = Table(
    "oauth_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False, index=True),
    Column("certificate_serial", String(64)),
    # Indexed (migration 0021): "sign out everywhere" revokes an account's tokens.
    Column("subject", String(255), nullable=False, index=True),
    Column("scope", Text, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# --- accounts (migration 0005) ------------------------------------------------------------------

# Who signs in: patients (bound to their index entry), representatives, operators. ``login`` is
# stored case-folded; ``password_hash`` is an Argon2id encoded hash; ``totp_secret`` is sealed
# with AES-GCM under a key derived from the key file (`carevault.adapters.security.totp`), never
# plaintext. ``totp_last_step`` is the last TOTP time step accepted (a code is never accepted
# twice); NULL until the first code confirms the enrolment. ``roles``: space-separated.
account = Table(
    "account",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("login", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("totp_secret", LargeBinary, nullable=False),
    Column("totp_last_step", BigInteger),
    Column("patient_id", ID, ForeignKey("patient.id"), unique=True),
    Column("roles", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
)

# Single-use recovery codes, as SHA-256 digests (why not Argon2: `carevault.services.accounts`).
recovery_code = Table(
    "recovery_code",
    metadata,
    Column("account_id", ID, ForeignKey("account.id"), primary_key=True),
    Column("code_hash", LargeBinary(32), primary_key=True),
    Column("used_at", UTCDateTime),
)

# A representative may act on a patient's record, with a scope, between two dates.
mandate = Table(
    "mandate",
    metadata,
    Column("id", ID, primary_key=True),
    Column("representative_account_id", ID, ForeignKey("account.id"), nullable=False, index=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("scope", String(16), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
)

# Failed sign-ins per throttle key ("account:<id>", "login:<sha256>", "ip:<address>").
login_attempt_state = Table(
    "login_attempt_state",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("next_allowed_at", UTCDateTime),
    Column("locked_at", UTCDateTime),
)

# What an account holder or a patient is told (an account locked after repeated failures, an
# emergency access to the record, …): the outbox the portal shows, and a mailer may later
# deliver. ``payload`` is JSON text.
notification = Table(
    "notification",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, index=True),
    # No account: a notification to a patient who has none yet (migration 0009).
    Column("account_id", ID, ForeignKey("account.id"), index=True),
    Column("kind", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Column("read_at", UTCDateTime),
    Column("mailed_at", UTCDateTime),  # the e-mail chore's outbox: NULL until mailed (0017)
)

# --- portal sessions (migration 0006) ------------------------------------------------------------

# Server-side sessions of the web portal. The cookie holds a random token; only its SHA-256 is
# stored, so a copy of the database opens no session. ``csrf`` is the synchronizer token every
# form of the session must echo.
portal_session = Table(
    "portal_session",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", ID, nullable=False, index=True),
    # patient | representative | operator | security-officer
    Column("kind", String(16), nullable=False),
    Column("patient_id", ID),  # the record the session acts on
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    # A professional's session: the serial of the card certificate its passkey was enrolled
    # with; the session lives only while that certificate and the licence do (migration 0020).
    Column("certificate_serial", String(64)),
    # An assistant's session: the practitioner whose mandate it acts under, chosen in the
    # workspace and checked against the mandates in force at each request (migration 0022).
    Column("acting_for", ID),
)

# --- the professionals' workspace: passkeys bound to the card (migration 0020) ------------------

# A professional's passkey (WebAuthn), enrolled once by proving possession of the card's key:
# it is bound to that certificate, and signs in only while the certificate is valid.
passkey = Table(
    "passkey",
    metadata,
    Column("credential_id", String(700), primary_key=True),  # base64url, at most 1023 bytes raw
    Column("practitioner_id", ID, nullable=False, index=True),
    Column("certificate_serial", String(64), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # COSE
    Column("sign_count", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
)

# The single-use challenges of the card proof and the WebAuthn ceremonies, and the enrolment
# codes the card proof yields; only their SHA-256 is kept. ``purpose``: card | enrolment |
# register | signin.
workspace_challenge = Table(
    "workspace_challenge",
    metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),
    Column("practitioner_id", ID),
    Column("certificate_serial", String(64)),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("used_at", UTCDateTime),
    # The account a patient's passkey ceremony was opened for (migration 0021).
    Column("account_id", ID),
)

# A patient's or representative's passkey (migration 0021): a second factor besides the TOTP
# code, checked with the password in one sign-in.
account_passkey = Table(
    "account_passkey",
    metadata,
    Column("credential_id", String(700), primary_key=True),  # base64url
    Column("account_id", ID, nullable=False, index=True),
    Column("public_key", LargeBinary, nullable=False),  # COSE
    Column("sign_count", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
)

# --- patient apps: OAuth clients and authorization codes (migration 0007) ----------------------

# Public clients (apps on a patient's phone) registered by an operator; PKCE protects their
# codes. Redirect URIs are matched exactly (space-separated list).
oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("redirect_uris", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
    # The scopes the app may ever be granted, space-separated (migration 0025).
    Column("scopes", Text, nullable=False),
)

# Authorization codes, stored as SHA-256 and usable once within their minute of life.
oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    Column("account_id", ID, nullable=False),
    # patient | representative (acting for patient_id) | operator | security-officer
    Column("kind", String(16), nullable=False),
    Column("patient_id", ID),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

# --- enrolment invitations (migration 0008) ------------------------------------------------------

# A one-time activation code given to a patient whose identity was checked at a desk (or sent
# by post), so that nobody else can open an account on their record. Only a hash is kept.
enrolment_invitation = Table(
    "enrolment_invitation",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("patient_id", ID, nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

# --- record policy (migration 0009) --------------------------------------------------------------

# The facts the authorization engine decides on (`carevault.domain.authorization.RecordFacts`),
# one patient at a time. Revocations mark rows instead of deleting them: the patient's history of
# who was allowed what stays readable.

# The record's own settings. No row means every default (a record under the opt-out model).
record = Table(
    "record",
    metadata,
    Column("patient_id", ID, ForeignKey("patient.id"), primary_key=True),
    Column("state", String(16), nullable=False),  # active | closed
    Column("referring_physician_id", ID),
    Column("emergency_setting", String(24), nullable=False),  # off | normal | normal+restricted
    Column("delegation_allowed", Boolean, nullable=False),
    Column("default_confidentiality", String(1), nullable=False),  # N | R | V
    Column("updated_at", UTCDateTime, nullable=False),
)

# Access given to a practitioner, an organization or a care team (a FHIR Consent).
record_grant = Table(
    "record_grant",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("party", String(16), nullable=False),  # practitioner | organization | care_team
    Column("party_id", ID, nullable=False),
    Column("level", String(16), nullable=False),  # normal | extended
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime),
    Column("granted_by", String(255), nullable=False),
    Column("delegable", Boolean, nullable=False),
    Column("source", String(16), nullable=False),  # patient | representative | care-event
    Column("source_ref", String(128)),  # what gave it, e.g. "Encounter/<id>"
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(255)),
    # A professional's own accesses across records, in the workspace (migration 0022).
    Index("ix_record_grant_party", "party", "party_id"),
)

# The patient's blacklist: a practitioner, organization or care team kept out, emergencies too.
record_block = Table(
    "record_block",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("party", String(16), nullable=False),
    Column("party_id", ID, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(255)),
)

# A practitioner passing (part of) their access on to another, always until a set date.
record_delegation = Table(
    "record_delegation",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("delegator_id", ID, nullable=False, index=True),  # migration 0022
    Column("delegate_id", ID, nullable=False, index=True),
    Column("level", String(16), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# Break-the-glass windows a practitioner opened on the record, with the reason they gave.
emergency_access = Table(
    "emergency_access",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("practitioner_id", ID, nullable=False, index=True),  # migration 0022
    Column("reason", Text, nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
)

# The facts about a document the engine and the search filter need (its content comes later).
document = Table(
    "document",
    metadata,
    Column("id", ID, primary_key=True),
    # Indexed by the (patient_id, class_code) index below, whose first column it is.
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False),
    Column("author_id", ID, nullable=False),
    Column("author_organization_id", ID, nullable=False),
    Column("class_code", String(64), nullable=False),
    Column("type_code", String(64), nullable=False),
    Column("confidentiality", String(1), nullable=False),
    Column("hidden", Boolean, nullable=False),
    Column("not_yet_visible", Boolean, nullable=False),
    # When a held document becomes visible to the patient by itself (None: held until its
    # author releases it, or not held): a fact the engine compares with the request's time.
    Column("held_until", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_document_patient_id_class_code", "patient_id", "class_code"),
)

# Care events (FHIR Encounter); one may give its practitioner a grant (``source_ref``).
encounter = Table(
    "encounter",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("practitioner_id", ID, nullable=False),
    Column("organization_id", ID),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime),
    Column("resource", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- documents (migration 0010) ------------------------------------------------------------------

# The registry's metadata of a document, beside its authorization facts (``document``). Codes are
# stored as ``system|code``; free text (title, description) only sealed (``sealed_text``).
document_metadata = Table(
    "document_metadata",
    metadata,
    Column("document_id", ID, ForeignKey("document.id"), primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("status", String(24), nullable=False),
    Column("master_identifier", String(255), nullable=False, unique=True),
    Column("xds_class", String(300), nullable=False),
    Column("xds_type", String(300), nullable=False),
    Column("format", String(300), nullable=False),
    Column("practice_setting", String(300), nullable=False),
    Column("facility_type", String(300), nullable=False),
    Column("events", Text, nullable=False),  # " system|code " per context.event, for search
    Column("content_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("sha1", String(40)),
    Column("created", UTCDateTime),
    Column("service_start", UTCDateTime),
    Column("service_end", UTCDateTime),
    Column("language", String(16)),
    Column("replaces", ID, index=True),
    Column("signs", ID, index=True),
    Column("submission_set_id", ID, index=True),
    Column("patient_authored", Boolean, nullable=False),
    # Held from the patient until then (or until the author releases it), when set.
    Column("release_at", UTCDateTime, index=True),
    Column("sealed_text", LargeBinary),
    Column("text_kek_id", String(64), index=True),  # which KEK wraps sealed_text's key
)

# The content, sealed (AES-256-GCM under a per-document data key wrapped by a KEK): the
# database backend of the document storage port.
document_content = Table(
    "document_content",
    metadata,
    Column("document_id", ID, ForeignKey("document.id"), primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("kek_id", String(64), nullable=False, index=True),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary),  # None when the blob lives in a file
    Column("location", String(128)),  # file:<path> for the filesystem backend
    Column("created_at", UTCDateTime, nullable=False),
)

# IHE SubmissionSets (FHIR List): who submitted which documents together.
submission_set = Table(
    "submission_set",
    metadata,
    Column("id", ID, primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("master_identifier", String(255), nullable=False, unique=True),
    Column("source_id", String(255), nullable=False),
    Column("author_id", ID),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("document_ids", Text, nullable=False),  # JSON list, in submission order
    # What the List said that is kept verbatim and returned by ITI-66 (JSON): designationType,
    # intendedRecipient, source and authorOrg, title, note, their contained resources (0013).
    Column("details", Text),
)

# --- who may change the facts the engine trusts (migration 0011) ----------------------------------

# The authorities an operator registered: an organization whose systems may write part of the
# directories (identity source, provider registry) or record care events (admission system).
# Ending one marks the row; the history of who could write what stays readable.
directory_authority = Table(
    "directory_authority",
    metadata,
    Column("id", ID, primary_key=True),
    Column("organization_id", ID, ForeignKey("organization.id"), nullable=False, index=True),
    # identity-source | provider-registry | admission-system
    Column("kind", String(32), nullable=False),
    # An identity source's assigning authority: the system URI of the identifiers it may feed.
    Column("assigning_authority", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("ended_at", UTCDateTime),
    Column("ended_by", String(255)),
)

# Presence codes: a short-lived, single-use code the patient shows a professional to prove they
# are in front of them, which lets that professional record a care event. Only a hash is kept.
presence_code = Table(
    "presence_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("patient_id", ID, ForeignKey("patient.id"), nullable=False, index=True),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("used_by", String(255)),
)

# --- what professionals record about each other (carevault.domain.mandates) ------------------

# An assistant acts in a practitioner's name from ``starts_at`` to ``ends_at`` (mandatory),
# optionally narrowed to some document classes (``classes``: space-separated codes; NULL: all
# the practitioner may read). Ending one early marks the row; the history stays readable.
assistant_mandate = Table(
    "assistant_mandate",
    metadata,
    Column("id", ID, primary_key=True),
    Column("mandator_id", ID, ForeignKey("practitioner.id"), nullable=False, index=True),
    Column("assistant_id", ID, ForeignKey("practitioner.id"), nullable=False, index=True),
    Column("classes", Text),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("ended_at", UTCDateTime),
    Column("ended_by", String(255)),
)

# FHIR CareTeam: a directory resource (versions in resource_history) and its members, each for
# a period, which the gate reads to know which teams a practitioner belongs to now.
care_team = Table(
    "care_team",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("organization_id", ID, ForeignKey("organization.id"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("period_start", UTCDateTime),
    Column("period_end", UTCDateTime),
    Column("resource", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Found by a word of its name from the portal (migration 0024).
    Column("name_folded", Text, nullable=False),
    _prefix_index("ix_care_team_name_folded", "care_team", "name_folded"),
    _word_index("ix_care_team_name_words", "name_folded"),
)

care_team_member = Table(
    "care_team_member",
    metadata,
    Column("care_team_id", ID, ForeignKey("care_team.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("practitioner_id", ID, ForeignKey("practitioner.id"), nullable=False, index=True),
    Column("period_start", UTCDateTime),
    Column("period_end", UTCDateTime),
)

# --- e-prescriptions (migration 0014) ------------------------------------------------------------

# One prescription as a FHIR Task (gematik's E-Rezept workflow). The patient is known once the
# prescriber activates it with the signed prescription (``patient_id`` is empty in ``draft``).
# The access code and the pharmacy's secret are kept as SHA-256 hashes; ``version`` counts the
# changes. A pharmacy takes it with a conditional UPDATE (``status = 'ready'``): the database,
# not the application, lets exactly one of many racing pharmacies win.
prescription_task = Table(
    "prescription_task",
    metadata,
    Column("id", ID, primary_key=True),
    Column("number", String(32), nullable=False, unique=True),
    Column("patient_id", ID, ForeignKey("patient.id"), index=True),
    Column("prescriber_id", ID, nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("access_code_hash", String(64), nullable=False),
    Column("secret_hash", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("valid_from", UTCDateTime),  # not dispensed before (a repeat's window; 0018)
    Column("pharmacist_id", ID),  # who accepted it (and closed it)
    Column("pharmacy_id", ID),  # the organization they accepted it for
    Column("signed_prescription", Text),  # the prescriber's compact JWS over the Bundle
    Column("dispense", Text),  # the MedicationDispense (JSON) of $close
    Column("receipt", Text),  # the platform-signed receipt (JSON) of $close
    Column("repeat_of", ID),  # a repeat prescription's first task
    # The access code sealed for its patient (AES-256-GCM under a key derived from the key
    # file, the task id bound in; `adapters/security/sealed_codes.py`; 0022): the hash above
    # checks a code, this gives it back to the patient. None for tasks created before 0022.
    Column("access_code_sealed", LargeBinary),
)

# Wrong access codes and unknown numbers, per pharmacist: the rate limit of $accept counts them.
prescription_failure = Table(
    "prescription_failure",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("who", String(255), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_prescription_failure_who_at", "who", "at"),
)

# --- the security officer's alerts (migration 0015) -------------------------------------------

# An alert of the access anomaly detector (`domain/anomaly.py`), or an emergency access to
# review: one row per professional, kind, patient (when the kind is about one) and day, which
# later findings extend. It holds who, whom, when and why, never medical content; ``evidence``
# is the JSON list of the clinical stream's leaf indexes it rests on.
access_alert = Table(
    "access_alert",
    metadata,
    Column("id", ID, primary_key=True),
    Column("group_key", String(255), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("severity", SmallInteger, nullable=False),  # 0..100
    Column("status", String(16), nullable=False, index=True),  # open | acknowledged | closed
    Column("verdict", String(16)),  # true-positive | false-positive, once closed
    Column("professional", String(255), nullable=False, index=True),
    Column("organization", String(255)),
    Column("patient_id", ID, index=True),  # no foreign key: the log may name a merged id
    Column("explanation", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("raised_at", UTCDateTime, nullable=False, index=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("assignee", String(255)),
    Column("acknowledged_by", String(255)),
    Column("closed_by", String(255)),
    Column("note", Text),
    Column("patient_notified_at", UTCDateTime),
    Column("version", Integer, nullable=False),
)

# How far the detector has read each audit stream (the next leaf index to read).
anomaly_cursor = Table(
    "anomaly_cursor",
    metadata,
    Column("stream", String(16), primary_key=True),
    Column("position", BigInteger, nullable=False),
)
