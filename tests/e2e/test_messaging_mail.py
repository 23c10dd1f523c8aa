"""Secure messaging over real mail servers: submission over SMTP (the `aiosmtpd` server
CareVault runs) with STARTTLS and the sender's card, every refusal the server owes, delivery
into the recipients' Maildirs, retrieval over IMAP from Debian's Dovecot as CareVault
configures it, with Python's `smtplib` and `imaplib` as the mail client; the audit record, and
nothing readable left anywhere on the server."""

from __future__ import annotations

import gc
import imaplib
import json
import logging
import mailbox
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.messaging.dovecot import (
    DovecotServer,
    ImapPasswords,
    ImapSettings,
    internal_group,
)
from carevault.adapters.messaging.submission import (
    COMMAND_CALL_LIMIT,
    SubmissionServer,
    server_tls_context,
)
from carevault.adapters.storage.database import connect, upgrade
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.api.access import TokenBucketLimiter
from carevault.bootstrap import audit_log, directory_context
from carevault.cli import context
from carevault.cli.main import app
from carevault.client import messaging as client
from carevault.domain.audit import AuditRecord
from carevault.domain.messaging import MAX_RECIPIENTS, message_digest
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services import messaging, pki
from carevault.services.audit_log import AuditLog
from carevault.settings import Settings
from support.messaging import World, build_world, now
from support.requirements import DOVECOT_IMAPD, require
from support.rsyslog import free_port
from support.x509_ca import LocalCa

MARKER = b"MARKER-91c2-never-stored-in-clear"


@dataclass(frozen=True)
class Mail:
    world: World
    log: AuditLog
    port: int
    imap_port: int
    tls_ca: Path
    roots: tuple[Path, ...]  # everything the servers write: database, maildirs, logs, indexes
    passwords: ImapPasswords
    server_tls: ssl.SSLContext

    def client(self, who: str | None, port: int | None = None) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=str(self.tls_ca))
        if who is not None:
            folder = self.world.people[who].folder
            context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        smtp = smtplib.SMTP("127.0.0.1", port or self.port, timeout=30)
        smtp.starttls(context=context)
        smtp.ehlo()
        return smtp

    def imap(self, who: str, secret: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        imap.starttls(ssl.create_default_context(cafile=str(self.tls_ca)))
        imap.login(self.world.people[who].address, secret)
        return imap

    def maildir(self, who: str) -> mailbox.Maildir:
        local = self.world.people[who].address.partition("@")[0]
        return mailbox.Maildir(self.world.settings.messaging_maildir / local / "Maildir",
                               create=False)


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mail]:
    require(DOVECOT_IMAPD)
    root = tmp_path_factory.mktemp("mailserver")
    # Dovecot's login processes and the mail user must reach their folders: not under
    # pytest's 0700 temporary root.
    served = Path(tempfile.mkdtemp(prefix="carevault-mail-"))
    served.chmod(0o755)
    key_file = root / "keys" / "carevault.key"
    create_key_file(key_file)
    url = f"sqlite:///{root / 'carevault.db'}"
    engine = connect(url)
    upgrade(engine)
    mail_user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() != 0 else "nobody"
    settings = Settings(database_url=url, key_source=f"file:{key_file}",
                        messaging_maildir=served / "mail", messaging_mail_user=mail_user,
                        _env_file=None)  # type: ignore[call-arg]
    world = build_world(settings, engine, tmp_path_factory.mktemp("people"))
    handler = logging.FileHandler(root / "server.log")
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)  # the server's every line, to search them
    log = audit_log(settings, engine)
    tls = LocalCa(tmp_path_factory.mktemp("tls"))
    server_files = tls.server()
    port = free_port()
    server_tls = server_tls_context(server_files.certificate, server_files.key,
                                    world.chain_pem.decode())
    server = SubmissionServer(world.service(log), server_tls, listen_port=port,
                              max_message_bytes=world.ctx.max_message_bytes)
    server.start()
    owner = pwd.getpwnam(mail_user)
    passwords = ImapPasswords(served / "imap", internal_group())
    imap = DovecotServer(ImapSettings(
        state_dir=served / "dovecot", maildir_root=settings.messaging_maildir,
        passwd_dir=passwords.directory, cert_file=server_files.certificate,
        key_file=server_files.key, mail_uid=owner.pw_uid, mail_gid=owner.pw_gid,
        port=free_port()))
    imap.start()
    try:
        yield Mail(world, log, port, imap.settings.port, tls.pem, (root, served), passwords,
                   server_tls)
    finally:
        imap.stop()
        server.stop()
        shutil.rmtree(served, ignore_errors=True)
    log.close()
    logging.getLogger().removeHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    engine.dispose()


def audit_records(log: AuditLog) -> list[AuditRecord]:
    size = log.size("clinical")
    return [AuditRecord.from_canonical(d) for _, d in log.entries("clinical", 0, size)]


def test_a_message_to_two_colleagues_is_delivered_and_recorded(mail: Mail) -> None:
    world = mail.world
    anne, paul, lea = (world.people[n] for n in ("anne", "paul", "lea"))
    message = world.compose("anne", ["paul", "lea"], f"Bonjour {MARKER.decode()}")
    with mail.client("anne") as smtp:
        assert smtp.mail(anne.address)[0] == 250
        assert smtp.rcpt(paul.address)[0] == 250
        assert smtp.rcpt(lea.address.upper())[0] == 250
        code, answer = smtp.data(message)
    assert code == 250, answer
    for who in ("paul", "lea"):
        (delivered,) = [m.as_bytes() for m in mail.maildir(who)]
        opened = client.read(
            delivered, world.people[who].encryption_certificate,
            world.people[who].encryption_key, world.trust())
        assert MARKER.decode() in opened.body and opened.warnings == ()
    (record,) = [r for r in audit_records(mail.log) if r.interaction == "message-submit"]
    assert record.agent.who == f"Practitioner/{anne.practitioner_id}"
    assert record.detail["recipients"] == f"{paul.address},{lea.address}"
    assert record.detail["size"] == str(len(message))
    assert record.detail["sha256"] == message_digest(message)
    assert record.entity_id == record.detail["sha256"]
    assert set(record.detail) == {"sender", "recipients", "size", "sha256", "certificate"}
    assert MARKER not in record.canonical()


def test_refusals(mail: Mail) -> None:
    world = mail.world
    anne, paul, lea = (world.people[n] for n in ("anne", "paul", "lea"))
    before = {who: len(mail.maildir(who)) for who in ("paul", "lea")}
    # No STARTTLS: nothing is accepted.
    with smtplib.SMTP("127.0.0.1", mail.port, timeout=30) as plain:
        plain.ehlo()
        code, _ = plain.mail(anne.address)
        assert code == 530
    # TLS but no card: no sender.
    with mail.client(None) as smtp:
        code, answer = smtp.mail(anne.address)
        assert code == 530 and b"certificate" in answer
    with mail.client("anne") as smtp:
        # Another's address.
        assert smtp.mail(paul.address)[0] == 553
        smtp.rset()
        assert smtp.mail(anne.address)[0] == 250
        # Someone who is not on the platform.
        assert smtp.rcpt("someone@example.org")[0] == 550
        assert smtp.rcpt(f"hp-999999@{world.ctx.domain}")[0] == 550
        assert smtp.rcpt(paul.address)[0] == 250
        # A message in clear.
        code, answer = smtp.data(b"From: x\r\nSubject: clear\r\n\r\n" + MARKER + b"\r\n")
        assert code == 554 and b"not S/MIME-encrypted" in answer
    refused = {
        # encrypted to Paul only, but also sent to Léa: she could not read it
        "not encrypted to": (world.compose("anne", ["paul"], "x"), [paul, lea]),
        # encrypted to Marc too, who is no recipient
        "not a valid platform": (world.compose("anne", ["paul", "marc"], "x"), [paul]),
    }
    for reason, (message, to) in refused.items():
        with mail.client("anne") as smtp:
            assert smtp.mail(anne.address)[0] == 250
            for person in to:
                assert smtp.rcpt(person.address)[0] == 250
            code, answer = smtp.data(message)
            assert code == 554 and reason.encode() in answer, answer
    assert {who: len(mail.maildir(who)) for who in ("paul", "lea")} == before
    # Every refused message is recorded, with its reason and never its content.
    refusals = [r for r in audit_records(mail.log)
                if r.interaction == "message-submit" and r.outcome == "4"]
    assert [r.detail["refused"].split(":")[0] for r in refusals] == [
        "the message is not S/MIME-encrypted", "the message is not encrypted to "
        + lea.address, "the message is encrypted to a certificate that is not a valid "
        "platform encryption certificate of its sender or recipients"]
    assert all(r.agent.who == f"Practitioner/{anne.practitioner_id}" for r in refusals)


def test_revoked_sender_and_recipient_are_refused(mail: Mail) -> None:
    world = mail.world
    anne, lea, marc = (world.people[n] for n in ("anne", "lea", "marc"))
    with world.units() as uow:
        pki.revoke(uow, lea.encryption_serial, "superseded", now())
    with mail.client("anne") as smtp:
        assert smtp.mail(anne.address)[0] == 250
        code, answer = smtp.rcpt(lea.address)
        assert code == 550 and b"cannot receive" in answer
    (refused,) = [r for r in audit_records(mail.log) if r.interaction == "message-recipient"
                  and r.detail["recipients"] == lea.address]
    assert refused.outcome == "4" and "cannot receive" in refused.detail["refused"]
    assert refused.agent.who == f"Practitioner/{anne.practitioner_id}"
    with world.units() as uow:
        pki.revoke(uow, marc.card_serial, "keyCompromise", now())
    with mail.client("marc") as smtp:
        code, answer = smtp.mail(marc.address)
        assert code == 530 and b"revoked" in answer
    (refused,) = [r for r in audit_records(mail.log) if r.interaction == "message-sender"]
    assert refused.outcome == "8" and "revoked" in refused.detail["refused"]
    assert refused.agent.network == "127.0.0.1"


class FromElsewhere(imaplib.IMAP4):
    """An IMAP client connecting from 127.0.0.2: another host, as far as the server knows."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=("127.0.0.2", 0))


def test_submitted_over_smtp_and_read_over_imap(mail: Mail) -> None:
    world = mail.world
    anne, paul = world.people["anne"], world.people["paul"]
    service = world.service(mail.log)
    first = service.imap_credential(paul.practitioner_id, mail.passwords)
    credential = service.imap_credential(paul.practitioner_id, mail.passwords)
    assert credential.username == paul.address and credential.secret != first.secret
    # Only the digest is kept.
    assert credential.secret not in mail.passwords.path("hp-100001").read_text()
    # An older credential stops working at once; a wrong one never works; TLS comes first.
    for wrong in (first.secret, "guess"):
        with pytest.raises(imaplib.IMAP4.error):
            mail.imap("paul", wrong)
    # Dovecot counts a client on the server's own address as secured (the same machine); from
    # any other address, nothing is accepted before STARTTLS.
    with FromElsewhere("127.0.0.1", mail.imap_port, timeout=30) as plain:
        assert "LOGINDISABLED" in plain.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            plain.login(paul.address, credential.secret)

    message = world.compose("anne", ["paul"], f"Résultats joints {MARKER.decode()}",
                             subject="IRM du 3/12")
    with mail.client("anne") as smtp:
        smtp.sendmail(anne.address, [paul.address], message)

    imap = mail.imap("paul", credential.secret)
    try:
        status, _count = imap.select("INBOX")
        assert status == "OK"
        status, found = imap.search(None, "ALL")
        fetched = []
        for number in found[0].split():
            status, data = imap.fetch(number, "(RFC822)")
            assert status == "OK" and isinstance(data[0], tuple)
            fetched.append(data[0][1])
    finally:
        imap.logout()
    # The server cannot tell which one it is (the subject is inside): the client opens them.
    opened_all = [client.read(raw, paul.encryption_certificate, paul.encryption_key,
                              world.trust()) for raw in fetched]
    (opened,) = [o for o in opened_all if o.subject == "IRM du 3/12"]
    assert opened.body.strip() == f"Résultats joints {MARKER.decode()}"
    assert opened.sender == anne.address and opened.warnings == ()
    # Léa's credential opens Léa's mailbox, never Paul's.
    lea = world.people["lea"]
    lea_credential = service.imap_credential(lea.practitioner_id, mail.passwords)
    imap = mail.imap("lea", lea_credential.secret)
    try:
        assert imap.select("INBOX")[0] == "OK"
        for elsewhere in (f"../{paul.address.partition('@')[0]}/Maildir", "../../",
                          str(world.settings.messaging_maildir / "hp-100001" / "Maildir")):
            assert imap.select(elsewhere)[0] == "NO"
    finally:
        imap.logout()
    issued = [r for r in audit_records(mail.log) if r.interaction == "message-imap-credential"]
    assert issued == []  # the credential is an operator event
    operator = [AuditRecord.from_canonical(d) for _, d in
                mail.log.entries("operator", 0, mail.log.size("operator"))]
    assert [r.entity_id for r in operator if r.interaction == "message-imap-credential"] == [
        paul.address, paul.address, lea.address]
    assert all(credential.secret not in r.canonical().decode() for r in operator)


def test_the_command_line_client(mail: Mail, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """keygen, enrolment by an operator, send, list, read and delete, as a professional's
    machine and the platform's operator would run them."""
    world, settings = mail.world, mail.world.settings
    anne, paul, lea = (world.people[n] for n in ("anne", "paul", "lea"))
    for name, value in (("DATABASE_URL", settings.database_url),
                        ("KEY_SOURCE", settings.key_source),
                        ("MESSAGING_MAILDIR", str(settings.messaging_maildir)),
                        ("MESSAGING_MAIL_USER", settings.messaging_mail_user or "")):
        monkeypatch.setenv(f"CAREVAULT_{name}", value)
    context.engine_for.cache_clear()
    runner = CliRunner()
    card = tmp_path / "card"
    card.mkdir()
    for name in ("cert.pem", "key.pem", "chain.pem"):
        shutil.copy(anne.folder / name, card / name)
    done = runner.invoke(app, ["message", "keygen", "--card", str(card)])
    assert done.exit_code == 0, done.output
    assert (card / "enc.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["message", "keygen", "--card", str(card)])
    assert again.exit_code != 0 and "never overwritten" in again.output
    done = runner.invoke(app, ["messaging", "enrol", anne.practitioner_id,
                               "--csr", str(card / "enc.csr"), "--out", str(card / "enc.pem")])
    assert done.exit_code == 0, done.output
    assert anne.address in done.output
    body = tmp_path / "body.txt"
    body.write_text("Pouvez-vous revoir ce patient ?", encoding="utf-8")
    attachment = tmp_path / "ecg.pdf"
    attachment.write_bytes(b"%PDF-1.4 ecg")
    server = ["--server", f"127.0.0.1:{mail.port}", "--server-ca", str(mail.tls_ca)]
    send = ["message", "send", "--card", str(card), "--subject", "Avis ECG",
            "--body-file", str(body), "--attach", str(attachment), *server]
    refused = runner.invoke(app, [*send, "--to", f"{lea.address}={lea.folder / 'enc.pem'}"])
    assert refused.exit_code != 0 and "550" in refused.output, refused.output
    done = runner.invoke(app, [*send, "--receipt",
                               "--to", f"{paul.address}={paul.folder / 'enc.pem'}"])
    assert done.exit_code == 0, done.output

    done = runner.invoke(app, ["messaging", "imap-credential", paul.practitioner_id])
    assert done.exit_code == 0, done.output
    password = done.output.split("password: ")[1].split()[0]
    monkeypatch.setenv("CAREVAULT_IMAP_PASSWORD", password)
    imap = ["--server", f"127.0.0.1:{mail.imap_port}", "--server-ca", str(mail.tls_ca),
            "--user", paul.address]
    paul_card = ["--card", str(paul.folder)]
    listed = runner.invoke(app, ["message", "list", *paul_card, *imap, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    (mine,) = [row for row in rows if row["subject"] == "Avis ECG"]
    assert mine["from"] == anne.address and mine["warnings"] == []
    assert mine["receipt_requested"] is True
    # Paul sends the signed read receipt; Anne (her new card folder) sees it, and what for.
    done = runner.invoke(app, ["message", "receipt", mine["uid"], *paul_card, *imap,
                               "--smtp", f"127.0.0.1:{mail.port}",
                               "--sender-cert", str(card / "enc.pem")])
    assert done.exit_code == 0, done.output
    anne_password = runner.invoke(app, ["messaging", "imap-credential", anne.practitioner_id]
                                  ).output.split("password: ")[1].split()[0]
    monkeypatch.setenv("CAREVAULT_IMAP_PASSWORD", anne_password)
    anne_imap = [*imap[:-1], anne.address]
    listed = runner.invoke(app, ["message", "list", "--card", str(card), *anne_imap, "--json"])
    assert listed.exit_code == 0, listed.output
    receipts = [row for row in json.loads(listed.output) if row["receipt_for"]]
    assert [row["from"] for row in receipts] == [paul.address]
    monkeypatch.setenv("CAREVAULT_IMAP_PASSWORD", password)
    saved = tmp_path / "saved"
    shown = runner.invoke(app, ["message", "read", mine["uid"], *paul_card, *imap,
                                "--save", str(saved)])
    assert shown.exit_code == 0, shown.output
    assert "Pouvez-vous revoir ce patient ?" in shown.output
    assert (saved / "ecg.pdf").read_bytes() == b"%PDF-1.4 ecg"
    gone = runner.invoke(app, ["message", "delete", mine["uid"], *imap])
    assert gone.exit_code == 0, gone.output
    listed = runner.invoke(app, ["message", "list", *paul_card, *imap, "--json"])
    assert mine["uid"] not in {row["uid"] for row in json.loads(listed.output)}
    monkeypatch.setenv("CAREVAULT_IMAP_PASSWORD", "wrong")
    refused = runner.invoke(app, ["message", "list", *paul_card, *imap])
    assert refused.exit_code != 0 and "cannot open the mailbox" in refused.output
    context.engine_for.cache_clear()


def test_a_recipient_named_twice_is_refused_and_the_message_stored_once(mail: Mail) -> None:
    world = mail.world
    anne, paul = world.people["anne"], world.people["paul"]
    def stored() -> int:
        try:
            return len(mail.maildir("paul"))
        except mailbox.NoSuchMailboxError:  # nothing delivered to Paul yet
            return 0

    before = stored()
    with mail.client("anne") as smtp:
        assert smtp.mail(anne.address)[0] == 250
        assert smtp.rcpt(paul.address)[0] == 250
        for again in (paul.address, f"<{paul.address.upper()}>"):
            code, answer = smtp.rcpt(again)
            assert code == 550 and b"5.5.4" in answer, answer
            assert b"already a recipient of this message" in answer
        code, answer = smtp.data(world.compose("anne", ["paul"], "une fois"))
        assert code == 250, answer
    assert stored() == before + 1
    refused = [r for r in audit_records(mail.log) if r.interaction == "message-recipient"
               and "already a recipient" in r.detail.get("refused", "")]
    assert len(refused) == 2 and {r.outcome for r in refused} == {"4"}


def colleagues(world: World, count: int) -> list[str]:
    """The addresses of ``count`` more professionals who can receive: registered in the
    directory, each with an encryption certificate (one RSA key for all: only the certificates
    count here, and a key takes a second to make)."""
    dctx = directory_context(world.settings)
    with SqlUnitOfWork(world.engine) as uow:
        (org,) = svc.register_organizations(uow, dctx, [new_organization(
            dctx.systems, identifier="ORG-0452", name="Clinique", kind="clinic")])
    with SqlUnitOfWork(world.engine) as uow:
        pairs = svc.register_professionals(uow, dctx, [
            svc.NewProfessional(new_practitioner(dctx.systems, identifier=f"HP-452{n:03}",
                                                 family=f"Collegue{n}", given=["Dr"]),
                                "physician", organization_id=org.id)
            for n in range(count)])
    _key, csr = client.keygen("colleagues")
    addresses = []
    for practitioner, _ in pairs:
        with SqlUnitOfWork(world.engine) as uow:
            record = messaging.issue_encryption_certificate(uow, world.ctx, practitioner.id,
                                                            csr)
        addresses.append(f"{record.client_id.lower()}@{world.ctx.domain}")
    return addresses


def test_one_recipient_more_than_the_limit_is_told_452(mail: Mail) -> None:
    """RFC 5321 §4.5.3.1.10: ``452``, so that the client sends to the others in another
    message; the recipients admitted so far stay admitted."""
    anne = mail.world.people["anne"]
    *admitted, extra = colleagues(mail.world, MAX_RECIPIENTS + 1)
    with mail.client("anne") as smtp:
        assert smtp.mail(anne.address)[0] == 250
        for address in admitted:
            assert smtp.rcpt(address)[0] == 250, address
        code, answer = smtp.rcpt(extra)
        assert code == 452 and answer.startswith(b"4.5.3 Too many recipients"), answer
        assert smtp.rset()[0] == 250
        assert smtp.mail(anne.address)[0] == 250
        assert smtp.rcpt(extra)[0] == 250  # a new message has room again
    (refused,) = [r for r in audit_records(mail.log) if r.interaction == "message-recipient"
                  and r.detail["recipients"] == extra]
    assert refused.outcome == "4" and "at most" in refused.detail["refused"]


@contextmanager
def limited_server(mail: Mail, rate_per_minute: int) -> Iterator[int]:
    """Another submission server on the same platform whose senders are held to
    ``rate_per_minute`` by a limiter whose clock never moves: no token ever comes back, so
    the test does not depend on how fast it runs. Yields its port."""
    service = mail.world.service(mail.log)
    limiter = TokenBucketLimiter(rate_per_minute, clock=lambda: 0.0)
    limited = messaging.MessagingService(service.units, service.ctx, service.mailboxes,
                                         service.audit, sender_rate=limiter.check)
    port = free_port()
    server = SubmissionServer(limited, mail.server_tls, listen_port=port,
                              max_message_bytes=service.ctx.max_message_bytes)
    server.start()
    try:
        yield port
    finally:
        server.stop()


def test_a_sender_past_their_message_rate_is_refused_at_mail(mail: Mail) -> None:
    world = mail.world
    anne, paul = world.people["anne"], world.people["paul"]
    with limited_server(mail, 2) as port, mail.client("anne", port) as smtp:
        for _ in range(2):
            assert smtp.mail(anne.address)[0] == 250
            assert smtp.rset()[0] == 250
        code, answer = smtp.mail(anne.address)
        assert code == 451 and answer.startswith(b"4.7.1 "), answer
        assert f"{anne.address} sent too many messages".encode() in answer
        with mail.client("paul", port) as other:  # a rate for each sender
            assert other.mail(paul.address)[0] == 250
    (refused,) = [r for r in audit_records(mail.log) if r.interaction == "message-submit"
                  and "too many messages" in r.detail.get("refused", "")]
    assert refused.outcome == "4" and refused.agent.who == f"Practitioner/{anne.practitioner_id}"


def test_a_session_that_hangs_up_after_mail_leaves_no_sender_behind(mail: Mail) -> None:
    """The server keeps a session's sender from MAIL to DATA: a client that sends MAIL and hangs
    up, again and again, must not leave one behind each time."""
    service = mail.world.service(mail.log)
    port = free_port()
    server = SubmissionServer(service, mail.server_tls, listen_port=port,
                              max_message_bytes=service.ctx.max_message_bytes)
    server.start()
    try:
        handler = server.controller.handler
        anne = mail.world.people["anne"]
        for _ in range(5):
            with mail.client("anne", port) as smtp:
                assert smtp.mail(anne.address)[0] == 250
                assert len(handler._senders) >= 1  # held while the session lives
        # aiosmtpd's controller keeps its latest connection's protocol (``smtpd``), and with it
        # that session: at most that one is left.
        for _ in range(200):  # until the server's loop has let the closed sessions go
            gc.collect()
            if len(handler._senders) <= 1:
                break
            time.sleep(0.05)
        assert len(handler._senders) <= 1
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["NOOP", "RSET"])
def test_a_session_that_sends_a_command_too_often_is_closed(mail: Mail, command: str) -> None:
    limit = COMMAND_CALL_LIMIT.get(command, COMMAND_CALL_LIMIT["*"])
    with mail.client(None) as smtp:
        for _ in range(limit):
            assert smtp.docmd(command)[0] == 250
        code, answer = smtp.docmd(command)
        assert code == 421 and b"too many times" in answer, answer
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.docmd("NOOP")


def test_nothing_readable_is_left_on_the_server(mail: Mail) -> None:
    """Run last: after messages went through SMTP, the Maildirs and Dovecot (its indexes and
    caches, its log), the body marker is nowhere on the server: database files, mail, logs."""
    stored = [p for root in mail.roots for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in stored}
    assert any(p.suffix == ".db" for p in stored)
    assert any("new" in p.parts or "cur" in p.parts for p in stored)  # delivered mail
    assert "dovecot.log" in names and "dovecot.index.log" in names  # IMAP was used
    assert any(p.name == "server.log" and p.stat().st_size > 0 for p in stored)
    for path in stored:
        assert MARKER not in path.read_bytes(), path
