"""Syslog over TLS (RFC 5425) with a delivery confirmation from the receiving side.

``TlsSyslogSender.deliver`` sends a batch of RFC 5424 messages on one fresh TLS connection
(TLS 1.2 or later, the server certificate verified against the configured CA and host name)
and returns only once the receiver has shown that it read every byte of the batch. RFC 5425
has no application-level acknowledgement, so the confirmation comes from the end of the
connection:

1. After the last frame the sender sends its TLS close_notify (``SSLSocket.unwrap()``). TLS
   records arrive in order, so a receiver that reads the close_notify has read every frame.
2. If the receiver answers with its own close_notify, that answer is the confirmation (and the
   sender also checks, as below, that its TCP peer acknowledged every byte).
3. rsyslog does not answer: measured with rsyslog 8.2302 (gtls driver) it closes the TCP
   connection without a close_notify, and ``unwrap()`` raises ``SSLEOFError``. Its source
   agrees: ``gtlsEndSess`` calls ``gnutls_bye`` only when rsyslog initiated the connection. For
   such a receiver the confirmation is the way the connection ended, read from the kernel: an
   orderly FIN (the socket is in CLOSE_WAIT, no reset and no socket error) and an empty send
   queue (``TIOCOUTQ`` is 0: the peer's TCP acknowledged every byte, the close_notify
   included). A TCP whose application closes while received data is unread, or that receives
   data after the close, sends a reset (RFC 1122 §4.2.2.13; Linux does both); so an orderly
   FIN after every byte was acknowledged means the receiving application read every byte, up
   to and including the close_notify, before it closed. A receiver rejecting our certificate
   (which TLS 1.3 lets the client notice only after it has "sent" the batch), stopping
   mid-batch, or crashing with unread data fails these checks, and the batch is reported as
   not delivered. This check needs Linux (``TCP_INFO``, ``TIOCOUTQ``); elsewhere only an
   answered close_notify confirms.

Anything else - refused connection, TLS failure, certificate not trusted, timeout (one deadline
covers the whole exchange), reset, EOF without the kernel evidence - raises ``DeliveryError``
with ``confirmed`` 0: nothing tells which part of the batch was read, so the caller retries the
whole batch later on a new connection. (``carevault.adapters.syslog.relp_sender`` is the
transport that acknowledges each message.)

Residual risks. Each message arrives exactly once when the receiver stores what it reads and
either reads a whole batch or stores none of it; outside that:

- Loss: the receiver read the bytes but crashed, or was stopped, before writing them to its
  store (messages in its memory queue, or a write not yet flushed to disk). Nothing on the
  wire can reveal this; a receiver with a direct or disk-backed queue and synced writes narrows
  it. A receiver that sends its own close_notify before reading ours is also not supported.
- Duplicates: the receiver stored part or all of a batch but the connection did not end as
  above (it was stopped mid-batch, or the FIN or close_notify was lost); the whole batch is sent
  again. Each message carries its stream and leaf index, so a repository can drop repeats.
"""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from typing import Self

from carevault.adapters.syslog import DeliveryError
from carevault.adapters.syslog.rfc5424 import frame

__all__ = ["DeliveryError", "TlsSyslogSender", "check_client_context", "client_context"]

TCP_CLOSE_WAIT = 8  # tcp_states.h: the peer sent FIN, we have not closed yet
_CHUNK = 64 * 1024


def client_context(
    ca_file: str, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_file``, with an optional client certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    elif key_file is not None:
        raise ValueError("a client key needs its certificate (cert_file)")
    return context


def check_client_context(context: ssl.SSLContext) -> None:
    """Refuse a context that would not verify the receiver; make a bare EOF an error.

    Shared by every syslog transport: the server certificate and host name are verified, TLS
    1.2 is the oldest version allowed, and ``OP_IGNORE_UNEXPECTED_EOF`` is cleared (with it,
    OpenSSL would take a bare EOF for the peer's close_notify, and a receiver that vanished
    would look like one that closed in order).
    """
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ValueError("the TLS context must verify the server certificate and host name")
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        raise ValueError("the TLS context must not allow versions below TLS 1.2")
    context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF


class TlsClient:
    """What every syslog transport shares: one receiver over TLS, under ``check_client_context``'s
    rules, with one deadline of ``timeout`` seconds per exchange."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        check_client_context(context)
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.context = context
        self.server_name = server_name or host
        self.timeout = timeout

    @classmethod
    def from_files(
        cls,
        host: str,
        port: int,
        ca_file: str,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> Self:
        """A sender trusting ``ca_file``, with an optional client certificate and key."""
        context = client_context(ca_file, cert_file, key_file)
        return cls(host, port, context, server_name=server_name, timeout=timeout)

    @property
    def destination(self) -> str:
        return f"{self.host}:{self.port}"


class TlsSyslogSender(TlsClient):
    """Delivers batches of RFC 5424 messages to one RFC 5425 receiver, one connection each."""

    def deliver(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` on one connection; return only once the receiver read them all."""
        if not messages:
            return
        payload = b"".join(frame(message) for message in messages)
        deadline = time.monotonic() + self.timeout
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as error:
            raise DeliveryError(f"cannot connect to {self.destination}: {error}") from error
        try:
            with raw:
                # No Nagle delay for the small close_notify record after the last frame.
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _set_remaining(raw, deadline)
                with self.context.wrap_socket(raw, server_hostname=self.server_name) as tls:
                    view = memoryview(payload)
                    for start in range(0, len(view), _CHUNK):
                        _set_remaining(tls, deadline)
                        tls.sendall(view[start : start + _CHUNK])
                    _set_remaining(tls, deadline)
                    self._close_and_confirm(tls)
        except DeliveryError:
            raise
        except ssl.SSLCertVerificationError as error:
            raise DeliveryError(
                f"the certificate of {self.destination} is not trusted: {error.verify_message}"
            ) from error
        except TimeoutError as error:
            raise DeliveryError(f"{self.destination} did not confirm in time") from error
        except (OSError, ValueError) as error:
            raise DeliveryError(f"delivery to {self.destination} failed: {error}") from error

    def _close_and_confirm(self, tls: ssl.SSLSocket) -> None:
        try:
            tls.unwrap()  # sends close_notify, then waits for the peer's
        except ssl.SSLEOFError:
            # The peer closed the TCP connection without answering (rsyslog does this).
            if not _peer_read_everything(tls):
                raise DeliveryError(
                    f"{self.destination} closed the connection before reading the whole batch"
                ) from None
            return
        if not _all_acknowledged(tls, require=False):
            raise DeliveryError(f"{self.destination} did not acknowledge the whole batch")


def _set_remaining(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)


def _tcp_state(sock: socket.socket) -> int | None:
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 8)[0]
    except OSError:
        return None


def _unacknowledged_bytes(sock: socket.socket) -> int | None:
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("i", queued)[0])


def _all_acknowledged(sock: socket.socket, *, require: bool) -> bool:
    """Whether the peer's TCP acknowledged every byte sent (unmeasurable: ``not require``)."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
        return False
    unacknowledged = _unacknowledged_bytes(sock)
    if unacknowledged is None:
        return not require
    return unacknowledged == 0


def _peer_read_everything(sock: socket.socket) -> bool:
    """An orderly FIN with every byte acknowledged: the peer application read it all."""
    return _tcp_state(sock) == TCP_CLOSE_WAIT and _all_acknowledged(sock, require=True)
