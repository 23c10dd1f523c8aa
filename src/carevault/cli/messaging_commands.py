"""Secure messaging on the command line.

``carevault messaging …`` is for operators, on the platform's host: it runs the SMTP
submission server and Dovecot, signs a professional's encryption CSR, and issues IMAP
credentials. Each of these is recorded in the operator audit stream.

``carevault message …`` is the professional's client, on their own machine. It needs no
database. It works from a *card folder*: ``cert.pem``, ``key.pem`` and ``chain.pem`` as
``carevault pki issue-practitioner --out`` writes them, plus ``enc.key`` and ``enc.pem``, the
messaging key (made there by ``message keygen``) and its certificate. It talks standard SMTP
and IMAP (the IMAP credential is read from ``CAREVAULT_IMAP_PASSWORD``, never from the command
line) or, with ``--api URL``, the platform's HTTP API with a token its card obtains: the
mailbox, and ``message file``, which files an attachment into a patient's record (ITI-65).
"""

from __future__ import annotations

import email.policy
import imaplib
import json
import mimetypes
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

import httpx
import typer
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from carevault.adapters.messaging.dovecot import (
    DovecotServer,
    ImapPasswords,
    ImapSettings,
    internal_group,
)
from carevault.adapters.messaging.submission import SubmissionServer, server_tls_context
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import audit_log, mail_owner, messaging_service
from carevault.cli import context
from carevault.cli.errors import friendly
from carevault.client import documents as filing
from carevault.client import messaging as client
from carevault.client import platform
from carevault.domain.errors import CareVaultError, InvalidInput
from carevault.domain.numbers import whole_number
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
ImapServerOption = Annotated[
    str | None, typer.Option("--server", help="HOST:PORT of the IMAP server (without --api).")
]
ImapServerCaOption = Annotated[
    Path | None,
    typer.Option("--server-ca", help="The CA file that vouches for the IMAP server's TLS."),
]
ImapUserOption = Annotated[
    str | None, typer.Option("--user", help="Your messaging address (IMAP login).")
]
ApiOption = Annotated[
    str | None,
    typer.Option("--api", help="The platform's address (https://…): use its HTTP API, not IMAP."),
]
ApiCaOption = Annotated[
    Path | None,
    typer.Option("--api-ca", help="The CA file that vouches for the platform's TLS (--api)."),
]
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
    if not out.parent.is_dir():  # checked before the certificate is issued, not after
        raise CareVaultError(f"{out.parent} is not a folder: the certificate would not be written")
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
    with SqlUnitOfWork(context.engine_for(config.database_url)) as uow:
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
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidInput(
                f"{self.folder} holds an enc.pem or enc.key that is not an encryption key pair"
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
    host, digits = server.rpartition(":")[::2]
    port = whole_number(digits, 5)
    if not host or port is None or not 0 < port < 65536:
        raise InvalidInput(f"--server {server!r}: give HOST:PORT")
    return host, port


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
        typer.Option(
            "--to",
            help="A recipient (repeat): ADDRESS, whose certificate the directory gives (--api), "
            "or ADDRESS=CERTIFICATE_FILE.",
        ),
    ],
    subject: Annotated[str, typer.Option("--subject")],
    server: ServerOption,
    server_ca: ServerCaOption,
    body_file: Annotated[
        Path, typer.Option("--body-file", help="The text (UTF-8); '-' reads standard input.")
    ],
    attach: Annotated[list[Path] | None, typer.Option("--attach", help="A file (repeat).")] = None,
    receipt: Annotated[bool, typer.Option("--receipt", help="Ask for a read receipt.")] = False,
    api: Annotated[
        str | None,
        typer.Option("--api", help="The platform (https://…) whose directory (mCSD) to ask."),
    ] = None,
    api_ca: ApiCaOption = None,
    crl: CrlOption = None,
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
        client.Attachment(path.name, _media_type(path.name, ""), path.read_bytes())
        for path in attach or []
    ]
    recipients = _recipients(found, to, api, api_ca, crl)
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


def _recipients(
    card: Card, to: list[str], api: str | None, api_ca: Path | None, crl: Path | None
) -> list[tuple[str, x509.Certificate]]:
    """Each recipient with the certificate to encrypt to: given in a file (ADDRESS=FILE), or
    found in the platform's directory (mCSD: the address's secure-email Endpoint) and checked
    here against the platform's CA, the address and the CRL."""
    named = [item for item in to if "=" not in item]
    if named and api is None:
        raise InvalidInput(
            f"--to {named[0]!r}: give ADDRESS=CERTIFICATE_FILE, or --api to ask the directory"
        )
    found: dict[str, x509.Certificate] = {}
    if named and api is not None:
        trust = _trust(card, crl)
        with _http(api_ca) as http:
            token = platform.access_token(http, api, card.folder, platform.DIRECTORY_SCOPE)
            for address in named:
                pems = platform.mail_certificates(http, api, token, address)
                try:
                    found[address] = client.directory_certificate(address, pems, trust)
                except ValueError as error:
                    raise CareVaultError(str(error)) from None
    return [_recipient(item) if "=" in item else (item, found[item]) for item in to]


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


class _Source:
    """Where the professional's messages are read: IMAP (the default) or, with ``--api``, the
    platform's HTTP API with a token the card obtains."""

    def __init__(
        self,
        card: Card | None,
        server: str | None,
        server_ca: Path | None,
        user: str | None,
        api: str | None,
        api_ca: Path | None,
    ) -> None:
        self.imap: imaplib.IMAP4 | None = None
        self.http: httpx.Client | None = None
        self.mailbox: platform.Mailbox | None = None
        if api is None:
            if server is None or server_ca is None or user is None:
                raise InvalidInput("give --server, --server-ca and --user (IMAP), or --api")
            self.imap = _imap(server, server_ca, user)
            return
        if card is None:
            raise InvalidInput("--api needs --card: your card obtains the access token")
        self.http = _http(api_ca)
        try:
            token = platform.access_token(self.http, api, card.folder, platform.MAILBOX_SCOPE)
        except BaseException:
            self.close()
            raise
        self.mailbox = platform.Mailbox(self.http, api, token)

    def ids(self) -> list[str]:
        if self.mailbox is not None:
            return [entry.id for entry in self.mailbox.listing()[1]]
        assert self.imap is not None
        status, data = self.imap.uid("SEARCH", "ALL")
        return [uid.decode() for uid in (data[0] or b"").split()] if status == "OK" else []

    def fetch(self, message_id: str) -> bytes:
        if self.mailbox is not None:
            return self.mailbox.fetch(message_id)
        assert self.imap is not None
        return _fetch(self.imap, message_id)

    def delete(self, message_id: str) -> None:
        if self.mailbox is not None:
            self.mailbox.delete(message_id)
            return
        assert self.imap is not None
        status, _ = self.imap.uid("STORE", message_id, "+FLAGS", "(\\Deleted)")
        if status != "OK":
            raise InvalidInput(f"no message {message_id} in the mailbox")
        self.imap.expunge()

    def close(self) -> None:
        if self.imap is not None:
            self.imap.logout()
        if self.http is not None:
            self.http.close()


def _http(api_ca: Path | None) -> httpx.Client:
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(api_ca)) if api_ca is not None else True
    )
    return httpx.Client(timeout=60.0, verify=verify)


@client_app.command("list")
@friendly
def list_messages(
    card: CardOption,
    server: ImapServerOption = None,
    server_ca: ImapServerCaOption = None,
    user: ImapUserOption = None,
    api: ApiOption = None,
    api_ca: ApiCaOption = None,
    crl: CrlOption = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your messages: decrypted here to show who wrote, the subject, and any warning."""
    found = _card(card)
    certificate, key = found.encryption()
    trust = _trust(found, crl)
    source = _Source(found, server, server_ca, user, api, api_ca)
    rows: list[dict[str, Any]] = []
    try:
        for uid in source.ids():
            raw = source.fetch(uid)
            try:
                opened = client.read(raw, certificate, key, trust)
                rows.append(
                    {
                        "uid": uid,
                        "from": opened.sender,
                        "subject": opened.subject,
                        "date": opened.sent_at.isoformat() if opened.sent_at else None,
                        "warnings": list(opened.warnings),
                        "receipt_for": opened.receipt_for,
                        "receipt_requested": opened.receipt_requested,
                        "attachments": [a.filename for a in opened.attachments],
                    }
                )
            except (client.MalformedMessage, client.NotForYou, client.SignatureInvalid) as e:
                headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
                rows.append(
                    {
                        "uid": uid,
                        "from": str(headers.get("From", "")),
                        "subject": None,
                        "date": None,
                        "warnings": [f"unreadable: {e}"],
                        "receipt_for": None,
                        "receipt_requested": False,
                        "attachments": [],
                    }
                )
    finally:
        source.close()
    if json_output:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        warnings: list[str] = row["warnings"]
        flags = f"  [{', '.join(warnings)}]" if warnings else ""
        typer.echo(f"{row['uid']:>5}  {row['from']}  {row['subject']}{flags}")


def _opened(found: Card, source: _Source, uid: str, crl: Path | None) -> client.Opened:
    """One message fetched from ``source`` and opened here with your messaging key."""
    certificate, key = found.encryption()
    try:
        raw = source.fetch(uid)
    finally:
        source.close()
    try:
        return client.read(raw, certificate, key, _trust(found, crl))
    except client.SignatureInvalid as error:
        raise CareVaultError(f"do not trust this message: {error}") from None
    except (client.MalformedMessage, client.NotForYou) as error:
        raise CareVaultError(f"cannot read this message: {error}") from None


@client_app.command("read")
@friendly
def read(
    uid: Annotated[str, typer.Argument(help="The message's id in 'message list'.")],
    card: CardOption,
    server: ImapServerOption = None,
    server_ca: ImapServerCaOption = None,
    user: ImapUserOption = None,
    api: ApiOption = None,
    api_ca: ApiCaOption = None,
    crl: CrlOption = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Save the attachments in this folder.")
    ] = None,
) -> None:
    """Decrypt and check one message; print it (and save its attachments)."""
    found = _card(card)
    opened = _opened(found, _Source(found, server, server_ca, user, api, api_ca), uid, crl)
    for warning in opened.warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    typer.echo(f"From: {opened.sender}\nTo: {', '.join(opened.recipients)}")
    typer.echo(f"Subject: {opened.subject}\n")
    typer.echo(opened.body)
    for number, attachment in enumerate(opened.attachments, start=1):
        if save is None:
            typer.echo(
                f"[attachment {number}: {attachment.filename}, {attachment.content_type}, "
                f"{len(attachment.data)} bytes]"
            )
            continue
        save.mkdir(parents=True, exist_ok=True)
        target = save / Path(attachment.filename).name
        with target.open("xb") as file:
            file.write(attachment.data)
        typer.echo(f"[saved {target}]")


@client_app.command("file")
@friendly
def file_attachment(
    uid: Annotated[str, typer.Argument(help="The message's id in 'message list --api'.")],
    card: CardOption,
    attachment: Annotated[
        int, typer.Option("--attachment", min=1, help="Which attachment (1 is the first).")
    ],
    patient: Annotated[str, typer.Option("--patient", help="The patient's id (Patient/…).")],
    api: Annotated[str, typer.Option("--api", help="The platform's address (https://…).")],
    api_ca: ApiCaOption = None,
    crl: CrlOption = None,
    title: Annotated[
        str | None, typer.Option("--title", help="The document's title (its file name).")
    ] = None,
    content_type: Annotated[
        str | None,
        typer.Option("--content-type", help="Its media type (guessed from its name)."),
    ] = None,
    type_code: Annotated[str, typer.Option("--type-code", help="LOINC type.")] = "11488-4",
    class_code: Annotated[str, typer.Option("--class-code", help="LOINC class.")] = "11488-4",
    confidentiality: Annotated[str, typer.Option("--confidentiality", help="N, R or V.")] = "N",
) -> None:
    """File an attachment of a message you received into a patient's record: decrypted here,
    signed with your card, submitted as ITI-65. The record's rules decide, as for any
    document you publish."""
    found = _card(card)
    with _http(api_ca) as http:
        token = platform.access_token(
            http, api, found.folder, f"{platform.MAILBOX_SCOPE} {platform.FILING_SCOPE}"
        )
        raw = platform.Mailbox(http, api, token).fetch(uid)
        certificate, key = found.encryption()
        try:
            opened = client.read(raw, certificate, key, _trust(found, crl))
        except client.SignatureInvalid as error:
            raise CareVaultError(f"do not trust this message: {error}") from None
        except (client.MalformedMessage, client.NotForYou) as error:
            raise CareVaultError(f"cannot read this message: {error}") from None
        if opened.warnings:
            raise CareVaultError(
                f"not filed: the message is flagged ({', '.join(opened.warnings)})"
            )
        if attachment > len(opened.attachments):
            raise InvalidInput(f"the message has {len(opened.attachments)} attachment(s)")
        chosen = opened.attachments[attachment - 1]
        media = content_type or _media_type(chosen.filename, chosen.content_type)
        bundle = filing.provide_bundle(
            patient.removeprefix("Patient/"),
            chosen.data,
            media,
            title or chosen.filename,
            found.folder,
            filing.DocumentCodes(
                type_code=type_code, class_code=class_code, confidentiality=confidentiality
            ),
        )
        made = platform.provide(http, api, token, bundle)
    typer.echo(f"filed {chosen.filename} into Patient/{patient.removeprefix('Patient/')}:")
    for document_id in made:
        typer.echo(f"DocumentReference/{document_id}")


def _media_type(filename: str, declared: str) -> str:
    """The attachment's declared type, or what its name says when it declares none."""
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename, strict=True)
    return guessed or declared or "application/octet-stream"


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
    uid: Annotated[str, typer.Argument(help="The message's id in 'message list'.")],
    server: ImapServerOption = None,
    server_ca: ImapServerCaOption = None,
    user: ImapUserOption = None,
    api: ApiOption = None,
    api_ca: ApiCaOption = None,
    card: Annotated[
        Path | None, typer.Option("--card", help="Your card folder (with --api).")
    ] = None,
) -> None:
    """Delete one of your messages from the server for good (it is expunged at once)."""
    source = _Source(
        _card(card) if card is not None else None, server, server_ca, user, api, api_ca
    )
    try:
        source.delete(uid)
    finally:
        source.close()
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
