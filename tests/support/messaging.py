"""A messaging world for the tests: an initialized platform PKI, four professionals of the
directory, each with a card (client certificate, ECDSA) and a messaging key of their own
(RSA, made on "their machine" here, enrolled with a CSR), and the files openssl reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.pki.credential_files import write_credentials
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import directory_context, messaging_service
from carevault.client import messaging as client
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services import messaging, pki
from carevault.services.audit_log import AuditLog
from carevault.settings import Settings
from support.builders import hospital


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Professional:
    name: str
    practitioner_id: str
    address: str
    card_certificate: x509.Certificate
    card_key: ec.EllipticCurvePrivateKey
    card_serial: str
    encryption_certificate: x509.Certificate
    encryption_key: rsa.RSAPrivateKey
    encryption_serial: str
    folder: Path  # cert.pem, key.pem, chain.pem (card); enc.pem, enc.key (messaging)


@dataclass(frozen=True)
class World:
    settings: Settings
    engine: Engine
    ctx: messaging.MessagingContext
    chain_pem: bytes  # issuing CA then root
    people: dict[str, Professional]

    def units(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    def trust(self) -> client.Trust:
        with self.units() as uow:
            crl = pki.current_crl(uow, self.ctx.pki.ca_password, now())
        return client.Trust.from_files(self.chain_pem, crl)

    def compose(self, sender: str, to: list[str], body: str, *, copy: bool = True,
                subject: str = "Avis", **extra: object) -> bytes:
        author = self.people[sender]
        return client.compose(
            sender=author.address, signer_certificate=author.card_certificate,
            signer_key=author.card_key,
            recipients=[(self.people[n].address, self.people[n].encryption_certificate)
                        for n in to],
            subject=subject, body=body,
            own_certificate=author.encryption_certificate if copy else None,
            now=now(), **extra)  # type: ignore[arg-type]

    def service(self, log: AuditLog) -> messaging.MessagingService:
        return messaging_service(self.settings, self.engine, log)


NAMES = ("anne", "paul", "lea", "marc")


def build_world(settings: Settings, engine: Engine, folder: Path,
                names: tuple[str, ...] = NAMES) -> World:
    systems = directory_context(settings).systems
    ctx = messaging.MessagingContext(
        pki=pki.PkiContext(systems=systems,
                           ca_password=ca_key_password(settings.key_source), clock=now),
        domain=settings.messaging_domain)
    dctx = directory_context(settings)
    with SqlUnitOfWork(engine) as uow:
        assert pki.init_pki(uow, ctx.pki)
    with SqlUnitOfWork(engine) as uow:
        (org,) = svc.register_organizations(uow, dctx, [hospital(systems, "ORG-0001")])
    with SqlUnitOfWork(engine) as uow:
        pairs = svc.register_professionals(uow, dctx, [
            svc.NewProfessional(new_practitioner(systems, identifier=f"HP-10000{i}",
                                                 family=name.title(), given=["Dr"]),
                                "physician", organization_id=org.id)
            for i, name in enumerate(names)])
    with SqlUnitOfWork(engine) as uow:
        chain_pem = pki.ca_chain_pem(uow).encode()
    people = {}
    for name, (practitioner, _) in zip(names, pairs, strict=True):
        where = folder / name
        delivered: list[pki.Credentials] = []
        with SqlUnitOfWork(engine) as uow:
            card = pki.issue_practitioner_certificate(uow, ctx.pki, practitioner.id,
                                                      delivered.append)
        files = write_credentials(where, card.certificate_pem, delivered[0].private_key_pem,
                                  delivered[0].chain_pem)
        key_pem, csr_pem = client.keygen(name)
        with SqlUnitOfWork(engine) as uow:
            record = messaging.issue_encryption_certificate(uow, ctx, practitioner.id, csr_pem)
        (where / "enc.pem").write_text(record.certificate_pem)
        (where / "enc.key").write_bytes(key_pem)
        (where / "enc.key").chmod(0o600)
        card_key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        enc_key = serialization.load_pem_private_key(key_pem, None)
        assert isinstance(card_key, ec.EllipticCurvePrivateKey)
        assert isinstance(enc_key, rsa.RSAPrivateKey)
        people[name] = Professional(
            name=name, practitioner_id=practitioner.id,
            address=f"{card.client_id.lower()}@{settings.messaging_domain}",
            card_certificate=x509.load_pem_x509_certificate(card.certificate_pem.encode()),
            card_key=card_key, card_serial=card.serial,
            encryption_certificate=x509.load_pem_x509_certificate(
                record.certificate_pem.encode()),
            encryption_key=enc_key, encryption_serial=record.serial, folder=where)
    (folder / "chain.pem").write_bytes(chain_pem)
    return World(settings, engine, ctx, chain_pem, people)
