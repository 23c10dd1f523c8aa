"""The SMTP submission server (RFC 6409 over `aiosmtpd`): STARTTLS, the sender authenticated by
their professional certificate, every command checked by the messaging service.

Nothing is accepted before STARTTLS (``530``). The client certificate presented in the TLS
handshake (verified against the platform CA by TLS, then checked for revocation and the
directory by the service) names the sender; ``MAIL FROM`` must be that sender's own address,
and the sender within their message rate (``451 4.7.1`` past it). Each ``RCPT TO`` must be able
to receive (a valid encryption certificate): otherwise ``550`` at once, so that a revoked
colleague is refused before any content is sent; a recipient named twice is refused (``550
5.5.4``), and one more than `MAX_RECIPIENTS` gets ``452 4.5.3``. ``DATA`` is answered ``250``
only once the message is checked, recorded in the audit log and delivered. A session may send
each command only so many times (`COMMAND_CALL_LIMIT`), then it is closed with ``421``.

The service is reached through `SubmissionPort` (bootstrap hands `MessagingService`): this
module only speaks SMTP. Its calls touch the database, so they run in the default executor,
not on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from carevault.domain.errors import (
    BusinessRuleViolation,
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    Unavailable,
)
from carevault.domain.messaging import MAX_RECIPIENTS, DuplicateRecipient, TooManyRecipients

__all__ = [
    "COMMAND_CALL_LIMIT",
    "MESSAGES_PER_SESSION",
    "SubmissionHandler",
    "SubmissionPort",
    "SubmissionServer",
    "server_tls_context",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

MESSAGES_PER_SESSION: Final = 20
"""How many messages one SMTP session may carry. A mail client sends its queue in one session,
rarely more than a few messages; more than this, it connects again (each time a TLS handshake
and the card checked again), and the sender's message rate bounds the total anyway."""

COMMAND_CALL_LIMIT: Final[dict[str, int]] = {
    "MAIL": MESSAGES_PER_SESSION,
    "DATA": MESSAGES_PER_SESSION,
    "RSET": MESSAGES_PER_SESSION,
    "RCPT": MESSAGES_PER_SESSION * MAX_RECIPIENTS,
    "*": 10,
}
"""How many times one session may send each command (aiosmtpd's ``command_call_limit``: per
command, ``*`` for any other), after which the server answers ``421 4.7.0`` and closes it.
Without it a session is bounded by nothing but its idle timeout, which every command resets:
each ``MAIL`` checks a certificate chain and each ``RCPT`` looks a recipient up in the database
(and a refused one writes an audit record), so one connection could keep the database and the
audit log busy for ever. ``MAIL``, ``DATA`` and ``RSET`` go once per message, ``RCPT`` once per
recipient; anything else (``EHLO`` before and after STARTTLS, ``STARTTLS``, ``NOOP``, ``QUIT``)
a client needs a few times in a session, not ten."""


class AuthenticatedSender(Protocol):
    @property
    def address(self) -> str: ...


class SubmissionPort(Protocol):
    def authenticate(self, chain_der: list[bytes], network: str | None) -> Any: ...

    def admit_message(self, sender: Any, network: str | None) -> None: ...

    def admit_recipient(
        self, sender: Any, address: str, network: str | None, admitted: list[str]
    ) -> Any: ...

    def submit(
        self, sender: Any, recipients: list[str], message: bytes, network: str | None
    ) -> Any: ...


def server_tls_context(cert_file: Path, key_file: Path, client_ca_pem: str) -> ssl.SSLContext:
    """TLS 1.2+ for STARTTLS, asking for (not requiring) a client certificate of the platform
    CA: a connection without one may say EHLO and QUIT, and is refused at MAIL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=client_ca_pem)
    return context


def _reply(error: CareVaultError) -> str:
    text = " ".join(str(error).split())[:400]
    if isinstance(error, NotAuthenticated):
        return f"530 5.7.0 {text}"
    if isinstance(error, RateLimited):
        # 451 (450 is not a reply to MAIL, RFC 5321 §4.3.2): transient, the client tries later.
        return f"451 4.7.1 {text}"
    if isinstance(error, TooManyRecipients):
        # RFC 5321 §4.5.3.1.10: transient, the client sends to the others in another message.
        return f"452 4.5.3 Too many recipients: {text}"
    if isinstance(error, DuplicateRecipient):
        return f"550 5.5.4 {text}"
    if isinstance(error, BusinessRuleViolation | NotFound):
        return f"550 5.7.1 {text}"
    if isinstance(error, InvalidInput):
        return f"554 5.6.0 {text}"
    if isinstance(error, Unavailable):
        return "451 4.3.0 the platform cannot take the message now; try again later"
    return f"554 5.0.0 {text}"


class SubmissionHandler:
    def __init__(self, port: SubmissionPort) -> None:
        self.port = port
        # Each session's authenticated sender, from its MAIL to its DATA; gone with the session
        # (one that sends MAIL and hangs up leaves nothing behind).
        self._senders: weakref.WeakKeyDictionary[Session, Any] = weakref.WeakKeyDictionary()

    async def _call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, work)

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:  # noqa: N802
        # The handshake is done; who the certificate names is decided at MAIL.
        return True

    def _peer_certificate(self, session: Session) -> bytes | None:
        extra = session.ssl or {}
        ssl_object = extra.get("ssl_object") if isinstance(extra, dict) else None
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        return bytes(der) if der else None

    async def handle_MAIL(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        der = self._peer_certificate(session)
        if der is None:
            return "530 5.7.0 present your professional certificate in the TLS handshake"
        peer = session.peer
        network = str(peer[0]) if isinstance(peer, tuple) and peer else None
        try:
            sender = await self._call(lambda: self.port.authenticate([der], network))
        except CareVaultError as error:
            return _reply(error)
        if address.strip().lower() != str(sender.address).lower():
            return f"553 5.7.1 you may send only as {sender.address}"
        try:
            await self._call(lambda: self.port.admit_message(sender, network))
        except CareVaultError as error:
            return _reply(error)
        self._senders[session] = sender
        envelope.mail_from = sender.address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        sender = self._senders.get(session)
        if sender is None:
            return "503 5.5.1 MAIL first"
        peer = session.peer
        network = str(peer[0]) if isinstance(peer, tuple) and peer else None
        admitted = list(envelope.rcpt_tos)
        try:
            found = await self._call(
                lambda: self.port.admit_recipient(sender, address, network, admitted)
            )
        except CareVaultError as error:
            return _reply(error)
        envelope.rcpt_tos.append(str(found.address))
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        sender = self._senders.pop(session, None)
        if sender is None:
            return "503 5.5.1 MAIL first"
        content = envelope.original_content or b""
        peer = session.peer
        network = str(peer[0]) if isinstance(peer, tuple) and peer else None
        recipients = list(envelope.rcpt_tos)
        try:
            envelope_info = await self._call(
                lambda: self.port.submit(sender, recipients, content, network)
            )
        except CareVaultError as error:
            return _reply(error)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("message submission failed (incident %s)", incident)
            return f"451 4.3.0 internal error (incident {incident}); try again later"
        return f"250 2.0.0 accepted {envelope_info.digest}"


class SubmissionServer:
    """The server on a loopback (or given) address; `start` returns once it listens."""

    def __init__(
        self,
        port: SubmissionPort,
        tls: ssl.SSLContext,
        *,
        host: str = "127.0.0.1",
        listen_port: int = 587,
        max_message_bytes: int,
        server_name: str = "carevault",
    ) -> None:
        # aiosmtpd logs every line it receives at DEBUG, a message's content included (a
        # client that sends a message in clear would have it written to the log): never below
        # INFO, whatever the root logger says.
        logging.getLogger("mail.log").setLevel(logging.INFO)
        self.controller = Controller(
            SubmissionHandler(port),
            hostname=host,
            port=listen_port,
            server_hostname=server_name,
            ready_timeout=10.0,
            tls_context=tls,
            require_starttls=True,
            data_size_limit=max_message_bytes,
            decode_data=False,
            command_call_limit=dict(COMMAND_CALL_LIMIT),
            ident="CareVault secure messaging",
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
