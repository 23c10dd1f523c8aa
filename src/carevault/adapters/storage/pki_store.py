"""SQL storage of the platform PKI: its two authorities and the certificates they issued.

Like the other stores it works inside the caller's transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from carevault.adapters.storage import schema as t


@dataclass(frozen=True)
class StoredAuthority:
    name: str  # 'root' or 'issuing'
    certificate_pem: str
    encrypted_key_pem: str
    created_at: datetime


@dataclass(frozen=True)
class CertificateRecord:
    serial: str  # lowercase hexadecimal, no leading zeros
    client_id: str
    kind: str  # 'practitioner', 'system' or 'encryption' (secure messaging)
    practitioner_id: str | None
    organization_id: str | None
    subject: str
    not_before: datetime
    not_after: datetime
    certificate_pem: str
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


# Read on every token request and every signed document: built once.
_AUTHORITIES = select(
    t.pki_authority.c.name,
    t.pki_authority.c.certificate,
    t.pki_authority.c.encrypted_key,
    t.pki_authority.c.created_at,
)
_CERTIFICATE = select(t.pki_certificate).where(t.pki_certificate.c.serial == bindparam("serial"))


class PkiStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def authorities(self) -> dict[str, StoredAuthority]:
        rows = self.connection.execute(_AUTHORITIES)
        return {
            row.name: StoredAuthority(row.name, row.certificate, row.encrypted_key, row.created_at)
            for row in rows
        }

    def add_authorities(self, authorities: list[StoredAuthority]) -> bool:
        """Store the authorities; False if another transaction stored them first (the caller's
        transaction is then unusable and must be rolled back)."""
        try:
            self.connection.execute(
                insert(t.pki_authority),
                [
                    {
                        "name": a.name,
                        "certificate": a.certificate_pem,
                        "encrypted_key": a.encrypted_key_pem,
                        "created_at": a.created_at,
                    }
                    for a in authorities
                ],
            )
        except IntegrityError:
            return False
        return True

    def add_certificate(self, record: CertificateRecord) -> None:
        self.connection.execute(
            insert(t.pki_certificate).values(
                serial=record.serial,
                client_id=record.client_id,
                kind=record.kind,
                practitioner_id=record.practitioner_id,
                organization_id=record.organization_id,
                subject=record.subject,
                not_before=record.not_before,
                not_after=record.not_after,
                certificate=record.certificate_pem,
                revoked_at=record.revoked_at,
                revocation_reason=record.revocation_reason,
            )
        )

    def certificate(self, serial: str) -> CertificateRecord | None:
        row = self.connection.execute(_CERTIFICATE, {"serial": serial}).first()
        return None if row is None else _record(row._mapping)

    def certificates_of(self, client_id: str) -> list[CertificateRecord]:
        c = t.pki_certificate
        rows = self.connection.execute(
            select(c).where(c.c.client_id == client_id).order_by(c.c.not_before, c.c.serial)
        )
        return [_record(row._mapping) for row in rows]

    def encryption_certificates(self, client_id: str, now: datetime) -> list[CertificateRecord]:
        """The valid, unrevoked encryption certificates of a client_id given in any case,
        newest first: where messages to them may be encrypted."""
        c = t.pki_certificate
        rows = self.connection.execute(
            select(c)
            .where(
                c.c.kind == "encryption",
                func.lower(c.c.client_id) == client_id.lower(),
                c.c.revoked_at.is_(None),
                c.c.not_before <= now,
                c.c.not_after > now,
            )
            .order_by(c.c.not_before.desc(), c.c.serial)
        )
        return [_record(row._mapping) for row in rows]

    def encryption_certificates_of(
        self, practitioner_ids: Collection[str] | None, *, client_id: str | None = None
    ) -> list[CertificateRecord]:
        """Every encryption certificate (valid, expired or revoked) of these practitioners, or
        of every practitioner (None), by practitioner, then newest first: what the directory
        publishes of their mailboxes, revocations included. ``client_id`` (in any case) keeps
        only the certificates of that directory identifier."""
        c = t.pki_certificate
        query = select(c).where(c.c.kind == "encryption", c.c.practitioner_id.is_not(None))
        if client_id is not None:
            query = query.where(func.lower(c.c.client_id) == client_id.lower())
        if practitioner_ids is not None:
            if not practitioner_ids:
                return []
            query = query.where(c.c.practitioner_id.in_(sorted(set(practitioner_ids))))
        rows = self.connection.execute(
            query.order_by(c.c.practitioner_id, c.c.not_before.desc(), c.c.serial)
        )
        return [_record(row._mapping) for row in rows]

    def count_encryption_holders(self) -> int:
        """How many practitioners have had an encryption certificate: how many mailboxes the
        directory publishes."""
        c = t.pki_certificate
        return int(
            self.connection.execute(
                select(func.count(func.distinct(c.c.practitioner_id))).where(
                    c.c.kind == "encryption", c.c.practitioner_id.is_not(None)
                )
            ).scalar_one()
        )

    def revoke(self, serial: str, at: datetime, reason: str) -> bool:
        """Mark a certificate revoked; False if it is unknown or already revoked."""
        c = t.pki_certificate
        done = self.connection.execute(
            update(c)
            .where(c.c.serial == serial, c.c.revoked_at.is_(None))
            .values(revoked_at=at, revocation_reason=reason)
        )
        return done.rowcount == 1

    def revoked_unexpired(self, now: datetime) -> list[CertificateRecord]:
        """Revoked certificates that would still be valid: what a CRL must list."""
        c = t.pki_certificate
        rows = self.connection.execute(
            select(c)
            .where(c.c.revoked_at.is_not(None), c.c.not_after > now)
            .order_by(c.c.revoked_at, c.c.serial)
        )
        return [_record(row._mapping) for row in rows]


def _record(values: RowMapping) -> CertificateRecord:
    return CertificateRecord(
        serial=values["serial"],
        client_id=values["client_id"],
        kind=values["kind"],
        practitioner_id=values["practitioner_id"],
        organization_id=values["organization_id"],
        subject=values["subject"],
        not_before=values["not_before"],
        not_after=values["not_after"],
        certificate_pem=values["certificate"],
        revoked_at=values["revoked_at"],
        revocation_reason=values["revocation_reason"],
    )
