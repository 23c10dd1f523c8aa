"""RELP over TLS: syslog messages that the receiver acknowledges one by one.

RELP, the Reliable Event Logging Protocol (rsyslog's ``imrelp``; specification: librelp's
``doc/relp.md``), is a command/response protocol. Every frame is::

    TXNR SP COMMAND SP DATALEN [SP DATA] LF

TXNR and DATALEN have 1 to 9 digits, COMMAND 1 to 32 letters; DATA (DATALEN octets) is present
only when DATALEN is not 0. The client numbers its commands 1, 2, ... 999,999,999 and then 1
again; the server answers each with an ``rsp`` frame carrying the same TXNR, in the order the
commands arrived, whose DATA is ``STATUS [SP HUMAN-TEXT] [LF CMDDATA]`` (200 = OK). TXNR 0 is
for hints, which get no answer; the server sends ``serverclose`` before it closes a session.

``RelpSender.deliver`` opens one TLS connection per batch (the same TLS rules as the RFC 5425
sender: server certificate and host name verified, TLS 1.2 or later, an optional client
certificate), sends ``open`` with the offers ``relp_version=0``, ``relp_software=carevault``
and ``commands=syslog``, and requires a 200 answer that offers ``relp_version`` and the
``syslog`` command. It then sends every message as one ``syslog`` command whose DATA is the
RFC 5424 message itself (no RFC 5425 octet count), keeping at most ``window`` commands
unanswered, and ends with ``close``. A message counts as delivered when its ``rsp 200``
arrives. When the session fails part-way (connection lost, timeout, ``serverclose``, a non-200
answer, a malformed or oversize frame), ``DeliveryError.confirmed`` is the number of leading
messages answered 200, so the caller sends again only the rest. One deadline covers the whole
exchange. Nothing of a message ever goes into an error text.

What an acknowledgement means with rsyslog, read in librelp's source (rsyslog/librelp on
GitHub, recent revisions; nothing in its ChangeLog up to 1.11.0, the version Debian 12 ships
with rsyslog 8.2302, changes these paths) and in rsyslog's ``plugins/imrelp/imrelp.c``:

- ``relpsess.c``, ``relpSessRcvData``: the server reads what the socket has and feeds it octet
  by octet to ``relpFrameProcessOctetRcvd`` (``relpframe.c``), checking
  ``relpEngineShouldStop`` before every octet. When rsyslog shuts down, the rest of that
  buffer and everything not yet read are dropped: never handed to rsyslog, never answered.
- ``relpframe.c``, ``relpFrameProcessOctetRcvd``: at the LF of a complete frame it checks that
  TXNR is the next expected one and calls ``relpEngineDispatchFrame`` (``relp.c``) at once.
- ``scsyslog.c``, the ``syslog`` command handler: it first calls rsyslog's callback
  (``imrelp.c``, ``onSyslogRcv``: build the message, ``submitMsg2`` into the ruleset's or the
  main queue), and only after it returned queues ``"200 OK"`` with ``relpSessSendResponse``,
  whose ``relpSendqAddBuf`` (``sendq.c``) tries a non-blocking send immediately. So the
  answer follows the enqueue, synchronously, in the same step, before the next octet is read.
  The callback's return code is not looked at (``relpEngineDispatchFrame``: duplicates are
  preferred to losses), so 200 means "handed to rsyslog", not "rsyslog accepted it".
- On shutdown each session is destroyed; ``relpSessSrvDoDisconnect`` sends the ``serverclose``
  hint directly (not through the send queue) and the connection closes.

Hence, for a graceful stop (SIGTERM) of rsyslog, every message is either enqueued and answered
in one step, or neither; nothing enqueued goes unanswered unless the answer could not be
written (our receive window full - the window of 128 answers of some 15 bytes cannot fill it -
or the input thread cancelled between the two, which rsyslog does only to an input that does
not stop within its shutdown timeout). When a write fails, the answers already received are
still read before giving up, so none is wasted. Measured with rsyslog 8.2302 and a ``Direct``
queue: SIGTERM in the middle of a 500-message batch leaves in rsyslog's file exactly the
acknowledged prefix (say 449 messages), no more, and the rest arrives once after the restart
(``tests/e2e/test_atna_relp.py``).

Residual risks:

- Loss: 200 means enqueued. With a ``Direct`` main queue (the test repository's), the file
  action runs inside ``submitMsg2``, so an acknowledged message is already written (to the
  page cache). With rsyslog's default in-memory queue, an acknowledged message still in memory
  is lost if rsyslog is killed (SIGKILL, crash, power loss) or a graceful stop outlasts
  ``queue.timeoutShutdown`` without a disk-assisted queue and ``queue.saveOnShutdown``. A
  written but not synced file loses it on power loss. Nothing on the wire can reveal this.
- Duplicates: a message enqueued whose answer never reached us (the two cases above, or the
  connection cut between the enqueue and the answer's arrival) is sent again. Each message
  carries its stream and leaf index, so a repository can drop repeats.
- TXNR wrap: librelp's ``relpEngineNextTXNR`` (``relp.h``) goes from 999,999,999 to
  1,000,000,000, which its own parser refuses; we follow the specification (back to 1), and a
  session carries one batch, so it never comes near the wrap.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from carevault.adapters.syslog import DeliveryError
from carevault.adapters.syslog.tls_sender import TlsClient

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_WINDOW",
    "MAX_RESPONSE_BYTES",
    "MAX_TXNR",
    "OFFERS",
    "DeliveryError",
    "Frame",
    "FrameParser",
    "RelpProtocolError",
    "RelpSender",
    "Response",
    "encode_frame",
    "next_txnr",
    "parse_offers",
    "parse_response",
]

MAX_TXNR = 999_999_999  # 9 digits; the next one is 1 again
MAX_DATALEN = 999_999_999
MAX_COMMAND = 32
DEFAULT_WINDOW = 128  # unanswered commands at most (librelp's default window too)
MAX_WINDOW = 1024
DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024  # the RELP specification's data limit
MAX_RESPONSE_BYTES = 16 * 1024  # answers are short: a status, a text, the offers
MAX_HUMAN_TEXT = 80
OK = 200
OFFERS = b"relp_version=0\nrelp_software=carevault\ncommands=syslog"
DRAIN_SECONDS = 1.0  # how long to collect answers already sent after a failed write
_RECV = 64 * 1024

_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
# What may still become a header when more bytes arrive.
_HEADER_PREFIX = re.compile(
    rb"[0-9]{0,9}|[0-9]{1,9} [A-Za-z]{0,32}|[0-9]{1,9} [A-Za-z]{1,32} [0-9]{0,9}"
)
_RESPONSE_HEAD = re.compile(rb"([0-9]{3})(?: ([^\n]*))?")
_COMMAND = re.compile(r"[A-Za-z]{1,32}")


class RelpProtocolError(ValueError):
    """The server sent something that is not valid RELP, or is over one of our limits."""


@dataclass(frozen=True)
class Frame:
    txnr: int
    command: str
    data: bytes


@dataclass(frozen=True)
class Response:
    """The DATA of an ``rsp`` frame: a status, its human text, and what follows the first LF."""

    status: int
    text: str
    body: bytes


def next_txnr(txnr: int) -> int:
    """The transaction number after ``txnr``: 1, 2, ..., 999,999,999, then 1 again."""
    if not 1 <= txnr <= MAX_TXNR:
        raise ValueError(f"a command's TXNR is 1 to {MAX_TXNR}, got {txnr}")
    return 1 if txnr == MAX_TXNR else txnr + 1


def encode_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One RELP frame; DATA and its separating space only when there is data."""
    if not 0 <= txnr <= MAX_TXNR:
        raise ValueError(f"TXNR must be 0 to {MAX_TXNR}, got {txnr}")
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"COMMAND must be 1 to {MAX_COMMAND} ASCII letters")
    if len(data) > MAX_DATALEN:
        raise ValueError(f"DATA is longer than {MAX_DATALEN} octets")
    header = b"%d %s %d" % (txnr, command.encode("ascii"), len(data))
    return header + b" " + data + b"\n" if data else header + b"\n"


class FrameParser:
    """Splits what a RELP server sends into frames; refuses a malformed or oversize frame.

    Bytes may arrive in any pieces: ``feed`` keeps an incomplete frame until the rest comes.
    At most ``max_data`` octets of DATA are accepted per frame, so the buffer stays bounded.
    """

    def __init__(self, max_data: int = MAX_RESPONSE_BYTES) -> None:
        if not 0 <= max_data <= MAX_DATALEN:
            raise ValueError(f"max_data must be 0 to {MAX_DATALEN}")
        self.max_data = max_data
        self._buffer = bytearray()
        self._error: RelpProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``, in order.

        When a malformed frame follows complete ones in the same bytes, those frames are
        returned and the error is raised by the next call: an acknowledgement that arrived
        before garbage still counts.
        """
        self.raise_pending()
        self._buffer += data
        frames: list[Frame] = []
        try:
            while (frame := self._take()) is not None:
                frames.append(frame)
        except RelpProtocolError as error:
            if not frames:
                raise
            self._error = error
        return frames

    def raise_pending(self) -> None:
        """Raise the error found after the frames the last ``feed`` returned, if any."""
        if self._error is not None:
            raise self._error

    def _take(self) -> Frame | None:
        buffer = self._buffer
        header = _HEADER.match(buffer)
        if header is None:
            if _HEADER_PREFIX.fullmatch(buffer):
                return None
            raise RelpProtocolError("malformed RELP frame header")
        txnr, command, datalen = int(header[1]), header[2].decode("ascii"), int(header[3])
        if datalen > self.max_data:
            raise RelpProtocolError(
                f"a {command!r} frame of {datalen} octets is over the limit of {self.max_data}"
            )
        start = header.end()
        if datalen == 0:
            if header[4] != b"\n":
                raise RelpProtocolError("a frame without data must end right after DATALEN")
            del buffer[:start]
            return Frame(txnr, command, b"")
        if header[4] != b" ":
            raise RelpProtocolError("DATALEN is not 0 but the frame has no data")
        end = start + datalen
        if len(buffer) <= end:
            return None
        if buffer[end] != 0x0A:
            raise RelpProtocolError("the frame does not end with LF after DATALEN octets")
        data = bytes(buffer[start:end])
        del buffer[: end + 1]
        return Frame(txnr, command, data)


def parse_response(data: bytes) -> Response:
    """``STATUS [SP HUMAN-TEXT] [LF CMDDATA]``; the text is kept printable and short."""
    head, _, body = data.partition(b"\n")
    match = _RESPONSE_HEAD.fullmatch(head)
    if match is None:
        raise RelpProtocolError("malformed rsp: no three-digit status")
    text = (match[2] or b"").decode("ascii", errors="replace")
    printable = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return Response(int(match[1]), printable[:MAX_HUMAN_TEXT], body)


def parse_offers(body: bytes) -> dict[str, list[str]]:
    """Offers, one per line: ``NAME[=VALUE{,VALUE}]``."""
    offers: dict[str, list[str]] = {}
    for line in body.split(b"\n"):
        if not line:
            continue
        name, _, values = line.partition(b"=")
        try:
            key = name.decode("ascii")
            offers[key] = [value.decode("utf-8") for value in values.split(b",") if value]
        except UnicodeDecodeError as error:
            raise RelpProtocolError("an offer is not text") from error
    return offers


class _SessionEnded(Exception):
    """The session ended before every message was answered; the text says why."""


class _Session:
    """One RELP session on a connected TLS socket, all of it under one deadline."""

    def __init__(self, tls: ssl.SSLSocket, deadline: float) -> None:
        self.tls = tls
        self.deadline = deadline
        self.txnr = 1
        self.parser = FrameParser()
        self.frames: deque[Frame] = deque()

    def encode(self, commands: Sequence[tuple[str, bytes]]) -> tuple[list[int], bytes]:
        """The frames of ``commands`` as one payload, and the transaction numbers they took."""
        numbers, frames = [], []
        for command, data in commands:
            numbers.append(self.txnr)
            frames.append(encode_frame(self.txnr, command, data))
            self.txnr = next_txnr(self.txnr)
        return numbers, b"".join(frames)

    def write(self, payload: bytes) -> None:
        _set_remaining(self.tls, self.deadline)
        self.tls.sendall(payload)

    def next_frame(self, deadline: float | None = None) -> Frame:
        """The next frame from the server; waits until ``deadline`` (default: the session's)."""
        while not self.frames:
            self.parser.raise_pending()
            _set_remaining(self.tls, min(self.deadline, deadline or self.deadline))
            data = self.tls.recv(_RECV)
            if not data:
                raise _SessionEnded("closed the connection")
            self.frames.extend(self.parser.feed(data))
        return self.frames.popleft()


class RelpSender(TlsClient):
    """Delivers batches of RFC 5424 messages to one RELP receiver, one TLS session each."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        server_name: str | None = None,
        timeout: float = 10.0,
        window: int = DEFAULT_WINDOW,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(host, port, context, server_name=server_name, timeout=timeout)
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1 to {MAX_WINDOW}")
        if not 1 <= max_message_bytes <= MAX_DATALEN:
            raise ValueError(f"max_message_bytes must be 1 to {MAX_DATALEN}")
        self.window = window
        self.max_message_bytes = max_message_bytes

    def deliver(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` in one session; return once the receiver answered 200 to each."""
        sendable = self._sendable(messages)
        if sendable:
            self._deliver(messages[:sendable])
        if sendable < len(messages):
            raise DeliveryError(
                f"message {sendable} of the batch for {self.destination} is empty or longer "
                f"than {self.max_message_bytes} octets ({len(messages[sendable])})",
                confirmed=sendable,
            )

    def _sendable(self, messages: Sequence[bytes]) -> int:
        """How many leading messages fit in a RELP frame we are willing to send."""
        for position, message in enumerate(messages):
            if not 0 < len(message) <= self.max_message_bytes:
                return position
        return len(messages)

    def _deliver(self, messages: Sequence[bytes]) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as error:
            raise DeliveryError(f"cannot connect to {self.destination}: {error}") from error
        with raw:
            # Commands and answers are small and wait for each other: no Nagle delay.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                _set_remaining(raw, deadline)
                tls = self.context.wrap_socket(raw, server_hostname=self.server_name)
            except OSError as error:
                raise self._failure(error, confirmed=0) from error
            with tls:
                session = _Session(tls, deadline)
                try:
                    self._open(session)
                except (OSError, RelpProtocolError, _SessionEnded) as error:
                    raise self._failure(error, confirmed=0) from error
                self._stream(session, messages)
                self._close(session)

    def _open(self, session: _Session) -> None:
        (txnr,), payload = session.encode([("open", OFFERS)])
        session.write(payload)
        frame = session.next_frame()
        if frame.txnr == 0 and frame.command == "serverclose":
            raise _SessionEnded("closed the session before answering open")
        if frame.command != "rsp" or frame.txnr != txnr:
            raise RelpProtocolError(f"expected the answer to open, got {frame.command!r}")
        response = parse_response(frame.data)
        if response.status != OK:
            raise _SessionEnded(f"refused the session: {response.status} {response.text}")
        offers = parse_offers(response.body)
        if "relp_version" not in offers:
            raise _SessionEnded("answered open without a relp_version offer")
        if "syslog" not in offers.get("commands", []):
            raise _SessionEnded("does not offer the syslog command")

    def _stream(self, session: _Session, messages: Sequence[bytes]) -> None:
        """Send with at most ``window`` commands unanswered; raise with the answered prefix."""
        in_flight: deque[int] = deque()  # TXNRs written (or being written), oldest first
        sent = 0
        try:
            while sent < len(messages) or in_flight:
                room = min(self.window - len(in_flight), len(messages) - sent)
                if room > 0:
                    numbers, payload = session.encode(
                        [("syslog", message) for message in messages[sent : sent + room]]
                    )
                    in_flight.extend(numbers)
                    sent += room
                    try:
                        session.write(payload)
                    except OSError:
                        _drain(session, in_flight)
                        raise
                _settle(session.next_frame(), in_flight)
        except (OSError, RelpProtocolError, _SessionEnded) as error:
            raise self._failure(error, confirmed=sent - len(in_flight)) from error

    def _close(self, session: _Session) -> None:
        """Say goodbye; every message is confirmed already, so a failure here changes nothing."""
        try:
            (txnr,), payload = session.encode([("close", b"")])
            session.write(payload)
            while session.next_frame().txnr != txnr:
                pass  # a hint (txnr 0) before the answer
        except (OSError, RelpProtocolError, _SessionEnded):
            return

    def _failure(self, error: BaseException, *, confirmed: int) -> DeliveryError:
        where = self.destination
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = f"the certificate of {where} is not trusted: {error.verify_message}"
        elif isinstance(error, ssl.SSLEOFError):
            reason = f"{where} closed the connection (without a TLS close_notify)"
        elif isinstance(error, TimeoutError):
            reason = f"{where} did not answer in time"
        elif isinstance(error, _SessionEnded):
            reason = f"{where} {error}"
        elif isinstance(error, RelpProtocolError):
            reason = f"{where} broke the RELP protocol: {error}"
        else:
            reason = f"delivery to {where} failed: {error}"
        return DeliveryError(f"{reason} ({confirmed} confirmed)", confirmed=confirmed)


def _drain(session: _Session, in_flight: deque[int]) -> None:
    """After a failed write, read the answers the server sent before it went away.

    They sit in our receive buffer in front of the reset or the end of the connection (Linux
    keeps received data readable after a reset, and OpenSSL lets us read after a failed
    write), so they still count; the wait is short because the connection is gone.
    """
    drain_until = time.monotonic() + DRAIN_SECONDS
    try:
        while in_flight:
            _settle(session.next_frame(drain_until), in_flight)
    except (OSError, RelpProtocolError, _SessionEnded):
        return


def _settle(frame: Frame, in_flight: deque[int]) -> None:
    """Apply one frame from the server to the unanswered commands, oldest first."""
    if frame.txnr == 0:
        if frame.command == "serverclose":
            raise _SessionEnded("closed the session (serverclose)")
        return  # another hint: advisory only, and unknown to us
    if frame.command != "rsp":
        raise RelpProtocolError(f"the server sent the command {frame.command!r}")
    if not in_flight or frame.txnr != in_flight[0]:
        expected = in_flight[0] if in_flight else "none"
        raise RelpProtocolError(f"an answer to TXNR {frame.txnr}, expected {expected}")
    response = parse_response(frame.data)
    if response.status != OK:
        raise _SessionEnded(f"refused TXNR {frame.txnr}: {response.status} {response.text}")
    in_flight.popleft()


def _set_remaining(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)
