"""Secure messaging on the command line.

``carevault messaging …`` is for operators, on the platform's host: it runs the SMTP
submission server and Dovecot, signs a professional's encryption CSR, and issues IMAP
credentials. Each of these is recorded in the operator audit stream.

``carevault message …`` is the professional's client, on their own machine. It needs no
database. It works from a *card folder*: ``cert.pem``, ``key.pem`` and ``chain.pem`` as
``carevault pki issue-practitioner --out`` writes them, plus ``enc.key`` and ``enc.pem``, the
messaging key (made there by ``message keygen``) and its certificate. It talks only standard
SMTP and IMAP. The IMAP credential is read from ``CAREVAULT_IMAP_PASSWORD``, never from the
command line.
"""

from __future__ import annotations

import email.policy
import imaplib
import json
import os
import signal
import smtplib
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from carevault.adapters.messaging.dovecot import (
    DovecotServer,
    ImapPasswords,
    ImapSettings,
    internal_group,
)
from carevault.adapters.messaging.submission import SubmissionServer, server_tls_context
from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.bootstrap import audit_log, mail_owner, messaging_service
from carevault.cli import context
from carevault.cli.errors import friendly
from carevault.client import messaging as client
from carevault.domain.errors import CareVaultError, InvalidInput
from carevault.services import messaging, pki

operator_app = typer.Typer(
    help="Secure messaging, operator side: servers, encryption certificates, IMAP credentials.",
    no_args_is_help=True,
)
client_app = typer.Typer(
    help="Secure messaging, the professional's client: keys, send, list, read, delete.",
    no_args_is_help=True,
)

CardOption = Annotated[
    Path, typer.Option("--card", help="The card folder: cert.pem, key.pem, chain.pem, enc.*.")
]
ServerOption = Annotated[str, typer.Option("--server", help="HOST:PORT of the server.")]
ServerCaOption = Annotated[
    Path, typer.Option("--server-ca", help="The CA file that vouches for the server's TLS.")
]
UserOption = Annotated[str, typer.Option("--user", help="Your messaging address.")]
CrlOption = Annotated[
    Path | None, typer.Option("--crl", help="The platform CRL (GET /pki/crl), to flag revoked.")
]
PASSWORD_ENV = "CAREVAULT_IMAP_PASSWORD"  # noqa: S105 - the variable's name, not a secret


# --- operators --------------------------------------------------------------------------------


def _service() -> messaging.MessagingService:
    config = context.settings()
    engine = context.engine_for(config.database_url)
    return messaging_service(config, engine, audit_log(config, engine))


def _passwords() -> ImapPasswords:
    config = context.settings()
    return ImapPasswords(config.messaging_maildir.parent / "imap", internal_group())


@operator_app.command("enrol")
@friendly
def enrol(
    practitioner_id: Annotated[str, typer.Argument(help="The Practitioner id.")],
    csr: Annotated[Path, typer.Option("--csr", help="The CSR 'message keygen' wrote.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the certificate (new).")],
) -> None:
    """Sign a professional's encryption CSR: their messaging certificate."""
    config = context.settings()
    service = _service()
    detail = {"practitioner_id": practitioner_id}
    units = context.audited_units(config, "messaging enrol", detail=detail)
    if out.exists():
        raise CareVaultError(f"{out} exists; it is never overwritten")
    try:
        csr_pem = csr.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {csr}: {error.strerror}") from None
    with units() as uow:
        record = messaging.issue_encryption_certificate(uow, service.ctx, practitioner_id, csr_pem)
    with out.open("x", encoding="ascii") as file:
        file.write(record.certificate_pem)
    address = f"{record.client_id.lower()}@{service.domain}"
    typer.echo(f"issued encryption certificate {record.serial} for {address}; wrote {out}")


@operator_app.command("imap-credential")
@friendly
def imap_credential(
    practitioner_id: Annotated[str, typer.Argument(help="The Practitioner id.")],
) -> None:
    """Issue a new IMAP credential (printed once; any older one stops working)."""
    service = _service()
    credential = service.imap_credential(practitioner_id, _passwords())
    typer.echo(f"username: {credential.username}\npassword: {credential.secret}")


@operator_app.command("serve")
@friendly
def serve(
    tls_cert: Annotated[Path, typer.Option("--tls-cert", help="The servers' certificate.")],
    tls_key: Annotated[Path, typer.Option("--tls-key", help="Its key.")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    smtp_port: Annotated[int, typer.Option("--smtp-port")] = 1587,
    imap_port: Annotated[int, typer.Option("--imap-port", help="0: no IMAP server.")] = 1143,
) -> None:
    """Run the SMTP submission server and Dovecot until SIGINT or SIGTERM."""
    config = context.settings()
    service = _service()
    with UnitOfWork(context.engine_for(config.database_url)) as uow:
        chain = pki.ca_chain_pem(uow)
    smtp = SubmissionServer(
        service,
        server_tls_context(tls_cert, tls_key, chain),
        host=host,
        listen_port=smtp_port,
        max_message_bytes=service.ctx.max_message_bytes,
    )
    owner = mail_owner(config) or (os.getuid(), os.getgid())
    imap = (
        DovecotServer(
            ImapSettings(
                state_dir=config.messaging_maildir.parent / "dovecot",
                maildir_root=config.messaging_maildir,
                passwd_dir=_passwords().directory,
                cert_file=tls_cert,
                key_file=tls_key,
                mail_uid=owner[0],
                mail_gid=owner[1],
                host=host,
                port=imap_port,
            )
        )
        if imap_port
        else None
    )
    stop = threading.Event()
    for received in (signal.SIGINT, signal.SIGTERM):
        signal.signal(received, lambda *_: stop.set())
    smtp.start()
    try:
        if imap is not None:
            imap.start()
        typer.echo(
            f"SMTP submission on {host}:{smtp_port} (STARTTLS)"
            + (f", IMAP on {host}:{imap_port} (STARTTLS)" if imap else "")
        )
        stop.wait()
    finally:
        if imap is not None:
            imap.stop()
        smtp.stop()


# --- the professional's client ----------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain_pem: bytes
    folder: Path

    def encryption(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        try:
            certificate = x509.load_pem_x509_certificate((self.folder / "enc.pem").read_bytes())
            key = serialization.load_pem_private_key((self.folder / "enc.key").read_bytes(), None)
        except FileNotFoundError as error:
            raise InvalidInput(
                f"{error.filename} is missing: run 'message keygen' and have it enrolled"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise InvalidInput("enc.key is not an RSA key")
        return certificate, key


def _card(folder: Path) -> Card:
    try:
        certificate = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
        chain = (folder / "chain.pem").read_bytes()
    except FileNotFoundError as error:
        raise InvalidInput(f"{error.filename} is missing: not a card folder") from None
    except ValueError:
        raise InvalidInput(f"{folder} holds something that is not a card") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("key.pem is not a card key (ECDSA)")
    return Card(certificate, key, chain, folder)


def _endpoint(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--server {server!r}: give HOST:PORT")
    return host, int(port)


def _own_address(card: Card) -> str:
    """Your messaging address, as your encryption certificate names it."""
    certificate, _ = card.encryption()
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = None
    emails = names.value.get_values_for_type(x509.RFC822Name) if names else []
    if not emails:
        raise InvalidInput("enc.pem names no messaging address: is it a platform certificate?")
    return str(emails[0])


@client_app.command("keygen")
@friendly
def keygen(card: CardOption) -> None:
    """Make your messaging key (enc.key, 0600) and its request (enc.csr) in the card folder.
    Hand enc.csr to the platform ('carevault messaging enrol'); the key never leaves."""
    found = _card(card)
    name = found.certificate.subject.rfc4514_string()
    key_pem, csr_pem = client.keygen(name[:64])
    key_path = card / "enc.key"
    try:
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CareVaultError(f"{key_path} exists; it is never overwritten") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(key_pem)
    (card / "enc.csr").write_bytes(csr_pem)
    typer.echo(f"wrote {key_path} (0600) and {card / 'enc.csr'}")


def _recipient(text: str) -> tuple[str, x509.Certificate]:
    address, _, path = text.partition("=")
    if not address or not path:
        raise InvalidInput(f"--to {text!r}: give ADDRESS=CERTIFICATE_FILE")
    try:
        return address, x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        raise InvalidInput(f"{path}: not a PEM certificate") from None


def _tls(server_ca: Path, card: Card | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca))
    if card is not None:
        context.load_cert_chain(card.folder / "cert.pem", card.folder / "key.pem")
    return context


@client_app.command("send")
@friendly
def send(
    card: CardOption,
    to: Annotated[
        list[str],
        typer.Option("--to", help="ADDRESS=CERTIFICATE_FILE of a recipient (repeat)."),
    ],
    subject: Annotated[str, typer.Option("--subject")],
    server: ServerOption,
    server_ca: ServerCaOption,
    body_file: Annotated[
        Path, typer.Option("--body-file", help="The text (UTF-8); '-' reads standard input.")
    ],
    attach: Annotated[list[Path] | None, typer.Option("--attach", help="A file (repeat).")] = None,
    receipt: Annotated[bool, typer.Option("--receipt", help="Ask for a read receipt.")] = False,
) -> None:
    """Sign with your card, encrypt to each recipient and to yourself, submit over SMTP."""
    found = _card(card)
    own_certificate, _ = found.encryption()
    sender = _own_address(found)
    body = (
        typer.get_text_stream("stdin").read()
        if str(body_file) == "-"
        else body_file.read_text(encoding="utf-8")
    )
    attachments = [
        client.Attachment(path.name, "application/octet-stream", path.read_bytes())
        for path in attach or []
    ]
    recipients = [_recipient(item) for item in to]
    message = client.compose(
        sender=sender,
        signer_certificate=found.certificate,
        signer_key=found.key,
        recipients=recipients,
        subject=subject,
        body=body,
        attachments=attachments,
        own_certificate=own_certificate,
        receipt_requested=receipt,
        now=datetime.now(UTC),
    )
    _submit(found, server, server_ca, sender, [a for a, _ in recipients], message)
    typer.echo(f"sent to {', '.join(a for a, _ in recipients)} ({len(message)} bytes)")


def _submit(
    card: Card, server: str, server_ca: Path, sender: str, to: list[str], message: bytes
) -> None:
    host, port = _endpoint(server)
    try:
        with smtplib.SMTP(host, port, timeout=60) as smtp:
            smtp.starttls(context=_tls(server_ca, card))
            smtp.sendmail(sender, to, message)
    except smtplib.SMTPResponseException as error:
        said = error.smtp_error
        text = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        raise CareVaultError(f"refused: {error.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as error:
        said = "; ".join(
            f"{address}: {code} {bytes(text).decode(errors='replace')}"
            for address, (code, text) in error.recipients.items()
        )
        raise CareVaultError(f"refused: {said}") from None
    except (OSError, smtplib.SMTPException) as error:
        raise CareVaultError(f"cannot submit to {server}: {error}") from None


def _imap(server: str, server_ca: Path, user: str) -> imaplib.IMAP4:
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise InvalidInput(f"set {PASSWORD_ENV} to your IMAP credential")
    host, port = _endpoint(server)
    try:
        imap = imaplib.IMAP4(host, port, timeout=60)
        imap.starttls(_tls(server_ca))
        imap.login(user, password)
    except (OSError, imaplib.IMAP4.error) as error:
        raise CareVaultError(f"cannot open the mailbox on {server}: {error}") from None
    status, _ = imap.select("INBOX")
    if status != "OK":
        raise CareVaultError("the mailbox cannot be opened")
    return imap


def _trust(card: Card, crl: Path | None) -> client.Trust:
    return client.Trust.from_files(card.chain_pem, crl.read_bytes() if crl else None)


def _fetch(imap: imaplib.IMAP4, uid: str) -> bytes:
    status, data = imap.uid("FETCH", uid, "(RFC822)")
    first = data[0] if data else None
    if status != "OK" or not isinstance(first, tuple):
        raise InvalidInput(f"no message {uid} in the mailbox")
    return bytes(first[1])


@client_app.command("list")
@friendly
def list_messages(
    card: CardOption,
    server: ServerOption,
    server_ca: ServerCaOption,
    user: UserOption,
    crl: CrlOption = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your messages: decrypted here to show who wrote, the subject, and any warning."""
    found = _card(card)
    certificate, key = found.encryption()
    trust = _trust(found, crl)
    imap = _imap(server, server_ca, user)
    rows: list[dict[str, Any]] = []
    try:
        status, data = imap.uid("SEARCH", "ALL")
        for uid in (data[0] or b"").split() if status == "OK" else []:
            raw = _fetch(imap, uid.decode())
            try:
                opened = client.read(raw, certificate, key, trust)
                rows.append(
                    {
                        "uid": uid.decode(),
                        "from": opened.sender,
                        "subject": opened.subject,
                        "date": opened.sent_at.isoformat() if opened.sent_at else None,
                        "warnings": list(opened.warnings),
                        "receipt_for": opened.receipt_for,
                        "receipt_requested": opened.receipt_requested,
                    }
                )
            except (client.MalformedMessage, client.NotForYou, client.SignatureInvalid) as e:
                headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
                rows.append(
                    {
                        "uid": uid.decode(),
                        "from": str(headers.get("From", "")),
                        "subject": None,
                        "date": None,
                        "warnings": [f"unreadable: {e}"],
                        "receipt_for": None,
                        "receipt_requested": False,
                    }
                )
    finally:
        imap.logout()
    if json_output:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        warnings: list[str] = row["warnings"]
        flags = f"  [{', '.join(warnings)}]" if warnings else ""
        typer.echo(f"{row['uid']:>5}  {row['from']}  {row['subject']}{flags}")


@client_app.command("read")
@friendly
def read(
    uid: Annotated[str, typer.Argument(help="The message's number in 'message list'.")],
    card: CardOption,
    server: ServerOption,
    server_ca: ServerCaOption,
    user: UserOption,
    crl: CrlOption = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Save the attachments in this folder.")
    ] = None,
) -> None:
    """Decrypt and check one message; print it (and save its attachments)."""
    found = _card(card)
    certificate, key = found.encryption()
    imap = _imap(server, server_ca, user)
    try:
        raw = _fetch(imap, uid)
    finally:
        imap.logout()
    try:
        opened = client.read(raw, certificate, key, _trust(found, crl))
    except client.SignatureInvalid as error:
        raise CareVaultError(f"do not trust this message: {error}") from None
    except (client.MalformedMessage, client.NotForYou) as error:
        raise CareVaultError(f"cannot read this message: {error}") from None
    for warning in opened.warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    typer.echo(f"From: {opened.sender}\nTo: {', '.join(opened.recipients)}")
    typer.echo(f"Subject: {opened.subject}\n")
    typer.echo(opened.body)
    for attachment in opened.attachments:
        if save is None:
            typer.echo(f"[attachment {attachment.filename}, {len(attachment.data)} bytes]")
            continue
        save.mkdir(parents=True, exist_ok=True)
        target = save / Path(attachment.filename).name
        with target.open("xb") as file:
            file.write(attachment.data)
        typer.echo(f"[saved {target}]")


@client_app.command("receipt")
@friendly
def send_receipt(
    uid: Annotated[str, typer.Argument(help="The message's number in 'message list'.")],
    card: CardOption,
    server: ServerOption,
    smtp: Annotated[str, typer.Option("--smtp", help="HOST:PORT of the submission server.")],
    server_ca: ServerCaOption,
    user: UserOption,
    sender_cert: Annotated[
        Path, typer.Option("--sender-cert", help="The sender's encryption certificate.")
    ],
) -> None:
    """Send the signed read receipt a message asked for, encrypted to its sender."""
    found = _card(card)
    certificate, key = found.encryption()
    imap = _imap(server, server_ca, user)
    try:
        raw = _fetch(imap, uid)
    finally:
        imap.logout()
    try:
        opened = client.read(raw, certificate, key, None)
        sender, sender_certificate = _recipient(f"{opened.sender}={sender_cert}")
        message = client.receipt(
            opened,
            reader=_own_address(found),
            signer_certificate=found.certificate,
            signer_key=found.key,
            sender_certificate=sender_certificate,
            own_certificate=certificate,
            now=datetime.now(UTC),
        )
    except (client.MalformedMessage, client.NotForYou, client.SignatureInvalid) as error:
        raise CareVaultError(f"cannot read this message: {error}") from None
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    _submit(found, smtp, server_ca, _own_address(found), [sender], message)
    typer.echo(f"sent a read receipt to {sender}")


@client_app.command("delete")
@friendly
def delete(
    uid: Annotated[str, typer.Argument(help="The message's number in 'message list'.")],
    server: ServerOption,
    server_ca: ServerCaOption,
    user: UserOption,
) -> None:
    """Delete one of your messages from the server for good (it is expunged at once)."""
    imap = _imap(server, server_ca, user)
    try:
        status, _ = imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
        if status != "OK":
            raise InvalidInput(f"no message {uid} in the mailbox")
        imap.expunge()
    finally:
        imap.logout()
    typer.echo(f"deleted message {uid}")


@client_app.command("imap-config")
def imap_config(
    user: UserOption,
    server: ServerOption,
) -> None:
    """What to give an ordinary mail client (Thunderbird, Outlook…) to read your mailbox."""
    host, port = _endpoint(server)
    typer.echo(
        f"IMAP server: {host}\nport: {port}\nconnection security: STARTTLS\n"
        f"authentication: normal password\nusername: {user}\n"
        "password: the IMAP credential the platform issued you\n"
        "S/MIME: import enc.key with enc.pem (to decrypt) and your card (to sign)"
    )
