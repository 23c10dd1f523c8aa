"""RELP frames and the sender's error paths, against an in-process TLS server speaking RELP badly.

The well-behaved receiver is the real rsyslog (``tests/e2e/test_atna_relp.py``); here a small
server on a loopback socket plays the broken ones: a 500 answer, ``serverclose``, malformed,
oversize or out-of-order answers, silence, a dropped connection. Its own frame reader is
written here, independently of the parser under test.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carevault.adapters.syslog import DeliveryError
from carevault.adapters.syslog.relp_sender import (
    DEFAULT_WINDOW,
    MAX_RESPONSE_BYTES,
    MAX_TXNR,
    OFFERS,
    Frame,
    FrameParser,
    RelpProtocolError,
    RelpSender,
    encode_frame,
    next_txnr,
    parse_offers,
    parse_response,
)
from support.rsyslog import Pki, make_pki

SECRET = "Müller-Zoë-7781"
MESSAGES = [f"<85>1 - - carevault-clinical - - - {SECRET} {n}".encode() for n in range(10)]
SERVER_OFFERS = b"200 OK\nrelp_version=0\nrelp_software=fake,1,x\ncommands=syslog"
WAIT = 10.0

# --- frames --------------------------------------------------------------------------------


def test_frames_have_data_and_its_space_only_when_there_is_data() -> None:
    assert encode_frame(1, "open", b"relp_version=0") == b"1 open 14 relp_version=0\n"
    assert encode_frame(3, "close") == b"3 close 0\n"
    assert encode_frame(0, "serverclose") == b"0 serverclose 0\n"
    assert encode_frame(2, "syslog", "é\n".encode()) == b"2 syslog 3 \xc3\xa9\n\n"


@pytest.mark.parametrize(
    ("txnr", "command"),
    [(-1, "syslog"), (MAX_TXNR + 1, "syslog"), (1, ""), (1, "sys log"), (1, "x" * 33), (1, "rsp1")],
)
def test_frames_refuse_what_relp_cannot_carry(txnr: int, command: str) -> None:
    with pytest.raises(ValueError, match=r"TXNR|COMMAND"):
        encode_frame(txnr, command, b"x")


def test_transaction_numbers_wrap_after_999999999_to_1_as_the_specification_says() -> None:
    assert next_txnr(1) == 2
    assert next_txnr(MAX_TXNR - 1) == MAX_TXNR
    assert next_txnr(MAX_TXNR) == 1
    for wrong in (0, MAX_TXNR + 1):
        with pytest.raises(ValueError, match="TXNR"):
            next_txnr(wrong)


def test_the_parser_takes_frames_in_any_pieces() -> None:
    offers = b"200 OK\nrelp_version=0\ncommands=syslog,x\n"  # data may hold LFs
    stream = b"2 rsp 6 200 OK\n0 serverclose 0\n3 rsp %d %s\n" % (len(offers), offers)
    parser = FrameParser()
    frames = [frame for byte in stream for frame in parser.feed(bytes([byte]))]
    assert frames == [
        Frame(2, "rsp", b"200 OK"),
        Frame(0, "serverclose", b""),
        Frame(3, "rsp", offers),
    ]
    assert FrameParser().feed(stream) == frames
    assert FrameParser().feed(b"7 rsp 6 200") == []  # incomplete: wait for the rest


def test_frames_before_a_malformed_one_are_kept_and_the_error_comes_next() -> None:
    parser = FrameParser()
    assert parser.feed(b"2 rsp 6 200 OK\n3 rsp 6 200 OK!") == [Frame(2, "rsp", b"200 OK")]
    with pytest.raises(RelpProtocolError, match="LF"):
        parser.raise_pending()
    with pytest.raises(RelpProtocolError, match="LF"):
        parser.feed(b"\n")


@pytest.mark.parametrize(
    "malformed",
    [
        b"x rsp 6 200 OK\n",  # TXNR not a number
        b"1234567890 rsp 6 200 OK\n",  # TXNR of ten digits
        b"2 rs-p 6 200 OK\n",  # COMMAND not letters
        b"2 " + b"r" * 33 + b" 6 200 OK\n",  # COMMAND over 32 letters
        b"2 rsp 6x200 OK\n",  # no space after DATALEN
        b"2 rsp 1234567890 ",  # DATALEN of ten digits
        b"2 rsp 6 200 OK!",  # no LF after DATALEN octets
        b"2 rsp 0 \n",  # DATALEN 0 with a data separator
        b"2 rsp 6\n200 OK\n",  # DATALEN not 0 and no data
        b" 2 rsp 6 200 OK\n",  # leading space
    ],
)
def test_the_parser_refuses_a_malformed_frame(malformed: bytes) -> None:
    with pytest.raises(RelpProtocolError):
        FrameParser().feed(malformed)


def test_the_parser_refuses_an_oversize_frame_from_its_header() -> None:
    parser = FrameParser()
    header = b"2 rsp %d " % (MAX_RESPONSE_BYTES + 1)
    with pytest.raises(RelpProtocolError, match="over the limit"):
        parser.feed(header)  # refused before any data is buffered
    assert FrameParser(max_data=5).feed(b"2 rsp 5 200 O\n") == [Frame(2, "rsp", b"200 O")]


def test_responses_and_offers() -> None:
    ok = parse_response(SERVER_OFFERS)
    assert (ok.status, ok.text) == (200, "OK")
    assert parse_offers(ok.body) == {
        "relp_version": ["0"],
        "relp_software": ["fake", "1", "x"],
        "commands": ["syslog"],
    }
    assert parse_response(b"500").status == 500
    refused = parse_response(b"500 command \x07disabled " + b"z" * 200)
    assert refused.text.startswith("command ?disabled z")
    assert len(refused.text) == 80
    for malformed in (b"", b"20", b"2000 OK", b"OK 200"):
        with pytest.raises(RelpProtocolError):
            parse_response(malformed)
    assert parse_offers(OFFERS) == {
        "relp_version": ["0"],
        "relp_software": ["carevault"],
        "commands": ["syslog"],
    }


# --- a receiver that speaks RELP badly ------------------------------------------------------

_HEAD = re.compile(rb"([0-9]{1,9}) ([a-z]+) ([0-9]{1,9})")


class Peer:
    """The server side of one connection, with a frame reader of its own."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls = tls
        self.buffer = b""
        self.received: list[tuple[int, str, bytes]] = []

    def read(self) -> tuple[int, str, bytes]:
        while True:
            match = _HEAD.match(self.buffer)
            if match is not None and len(self.buffer) > match.end():
                length = int(match[3])
                start = match.end() + (1 if length else 0)
                if len(self.buffer) > start + length:
                    assert self.buffer[start + length] == 0x0A, self.buffer[:80]
                    frame = (int(match[1]), match[2].decode(), self.buffer[start : start + length])
                    self.buffer = self.buffer[start + length + 1 :]
                    self.received.append(frame)
                    return frame
            chunk = self.tls.recv(65536)
            if not chunk:
                raise EOFError("the client closed")
            self.buffer += chunk

    def answer(self, txnr: int, data: bytes) -> None:
        self.send(b"%d rsp %d %s\n" % (txnr, len(data), data) if data else b"%d rsp 0\n" % txnr)

    def send(self, raw: bytes) -> None:
        self.tls.sendall(raw)

    def open(self, offers: bytes = SERVER_OFFERS) -> None:
        txnr, command, _ = self.read()
        assert (txnr, command) == (1, "open")
        self.answer(txnr, offers)

    def ack(self, count: int) -> None:
        for _ in range(count):
            txnr, command, _ = self.read()
            assert command == "syslog"
            self.answer(txnr, b"200 OK")


Script = Callable[[Peer], None]


class FakeReceiver:
    """A TLS listener on 127.0.0.1 that runs ``script`` on each connection, one at a time."""

    def __init__(self, pki: Pki, script: Script) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                peer = Peer(tls)
                self.peers.append(peer)
                self.script(peer)
        except (OSError, EOFError):
            pass  # the client went away: part of several scripts
        except BaseException as error:  # an assertion in a script: report it to the test
            self.errors.append(error)
        finally:
            raw.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(WAIT)
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("relp-pki"))


@pytest.fixture
def receiver(pki: Pki) -> Iterator[Callable[[Script], FakeReceiver]]:
    started: list[FakeReceiver] = []

    def start(script: Script) -> FakeReceiver:
        started.append(FakeReceiver(pki, script))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def sender(pki: Pki, fake: FakeReceiver, **options: object) -> RelpSender:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    return RelpSender("127.0.0.1", fake.port, context, server_name="localhost", **options)  # type: ignore[arg-type]


def fails(relp: RelpSender, messages: list[bytes] = MESSAGES) -> DeliveryError:
    with pytest.raises(DeliveryError) as raised:
        relp.deliver(messages)
    assert SECRET not in str(raised.value)
    return raised.value


def test_a_well_behaved_session_sends_the_exact_frames_and_closes(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.ack(len(MESSAGES))
        txnr, command, data = peer.read()
        assert (command, data) == ("close", b"")
        peer.answer(txnr, b"")  # librelp answers close with an empty rsp
        peer.send(b"0 serverclose 0\n")

    fake = receiver(script)
    sender(pki, fake).deliver(MESSAGES)
    fake.close()
    (peer,) = fake.peers
    assert peer.received[0] == (1, "open", OFFERS)
    assert peer.received[1:-1] == [(n + 2, "syslog", m) for n, m in enumerate(MESSAGES)]
    assert peer.received[-1] == (len(MESSAGES) + 2, "close", b"")


def test_a_500_answer_confirms_only_the_messages_before_it(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.ack(3)
        txnr, _, _ = peer.read()
        peer.answer(txnr, b"500 command disabled")
        peer.ack(6)  # later answers do not extend the confirmed prefix

    error = fails(sender(pki, receiver(script)))
    assert error.confirmed == 3
    assert "500 command disabled" in str(error)


def test_serverclose_ends_the_session_with_what_was_answered(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.ack(4)
        peer.send(b"0 serverclose 0\n")

    error = fails(sender(pki, receiver(script)))
    assert error.confirmed == 4
    assert "serverclose" in str(error)


def test_a_connection_dropped_mid_batch_confirms_the_answered_prefix(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.ack(7)

    error = fails(sender(pki, receiver(script)))
    assert error.confirmed == 7


def test_answers_that_arrived_before_a_reset_still_count(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    """Two answers and a reset in one go: the client reads the first, its next write meets
    the reset, and the second answer, already received, is still counted."""

    def script(peer: Peer) -> None:
        peer.open()
        first, _, _ = peer.read()
        second, _, _ = peer.read()
        peer.tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.send(b"%d rsp 6 200 OK\n%d rsp 6 200 OK\n" % (first, second))

    error = fails(sender(pki, receiver(script), window=2))
    assert error.confirmed == 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"2 rsp 6 200 OK\n3 rsp 2 OK\n", "no three-digit status"),  # malformed rsp data
        (b"2 rsp 6 200 OK\n3 rsp 99999999 ", "over the limit"),  # oversize rsp
        (b"2 rsp 6 200 OK\n3 rsp 6 200 OK!", "does not end with LF"),  # bad trailer
        (b"2 rsp 6 200 OK\n4 rsp 6 200 OK\n", "TXNR 4, expected 3"),  # out of order
        (b"2 rsp 6 200 OK\n3 syslog 2 hi\n", "sent the command 'syslog'"),  # not an answer
    ],
)
def test_a_malformed_or_oversize_answer_ends_the_session(
    pki: Pki, receiver: Callable[[Script], FakeReceiver], answer: bytes, expected: str
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.read()
        peer.read()
        peer.send(answer)
        time.sleep(0.5)

    error = fails(sender(pki, receiver(script)))
    assert "broke the RELP protocol" in str(error)
    assert expected in str(error)
    assert error.confirmed == 1


@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        (b"500 required command not supported by client", "refused the session: 500"),
        (b"200 OK\nrelp_version=0\ncommands=", "does not offer the syslog command"),
        (b"200 OK\ncommands=syslog", "without a relp_version offer"),
    ],
)
def test_an_open_that_is_refused_or_lacks_syslog_confirms_nothing(
    pki: Pki, receiver: Callable[[Script], FakeReceiver], offers: bytes, expected: str
) -> None:
    error = fails(sender(pki, receiver(lambda peer: peer.open(offers))))
    assert error.confirmed == 0
    assert expected in str(error)


def test_one_deadline_covers_the_whole_session(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        for _ in range(6):  # an answer every 0.2 s: each read is quick, the whole is not
            peer.ack(1)
            time.sleep(0.2)
        time.sleep(2)

    started = time.monotonic()
    error = fails(sender(pki, receiver(script), timeout=0.7))
    assert time.monotonic() - started < 1.5
    assert "did not answer in time" in str(error)
    assert 1 <= error.confirmed <= 4


def test_at_most_window_commands_are_unanswered(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    seen_before_answering: list[int] = []

    def script(peer: Peer) -> None:
        peer.open()
        peer.tls.settimeout(0.3)
        pending = []
        try:
            while True:
                pending.append(peer.read()[0])  # everything the client sends unanswered
        except TimeoutError:
            pass
        seen_before_answering.append(len(pending))
        peer.tls.settimeout(WAIT)
        for txnr in pending:
            peer.answer(txnr, b"200 OK")
        peer.ack(len(MESSAGES) - len(pending))
        txnr, _, _ = peer.read()
        peer.answer(txnr, b"")

    fake = receiver(script)
    sender(pki, fake, window=4).deliver(MESSAGES)
    fake.close()
    assert seen_before_answering == [4]


def test_messages_over_the_size_limit_are_not_sent_and_end_the_confirmed_prefix(
    pki: Pki, receiver: Callable[[Script], FakeReceiver]
) -> None:
    def script(peer: Peer) -> None:
        peer.open()
        peer.ack(2)
        txnr, _, _ = peer.read()
        peer.answer(txnr, b"")

    fake = receiver(script)
    relp = sender(pki, fake, max_message_bytes=100)
    error = fails(relp, [MESSAGES[0], MESSAGES[1], b"x" * 101, MESSAGES[3]])
    fake.close()
    assert error.confirmed == 2
    assert "longer than 100 octets (101)" in str(error)
    assert [frame[1] for frame in fake.peers[0].received] == ["open", "syslog", "syslog", "close"]


def test_nothing_listening_is_a_delivery_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relp = RelpSender("127.0.0.1", port, ssl.create_default_context(), timeout=1.0)
    with pytest.raises(DeliveryError, match="cannot connect") as raised:
        relp.deliver(MESSAGES)
    assert raised.value.confirmed == 0


def test_the_sender_refuses_an_unsafe_context_and_unbounded_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="verify"):
        RelpSender("127.0.0.1", 1, ssl._create_unverified_context())
    old = ssl.create_default_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: the point
        old.minimum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ValueError, match=r"TLS 1\.2"):
        RelpSender("127.0.0.1", 1, old)
    context = ssl.create_default_context()
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    RelpSender("127.0.0.1", 1, context)
    assert not context.options & ssl.OP_IGNORE_UNEXPECTED_EOF  # a bare EOF stays an error
    for options in ({"window": 0}, {"window": 100_000}, {"timeout": 0}, {"max_message_bytes": 0}):
        with pytest.raises(ValueError, match="must be"):
            RelpSender("127.0.0.1", 1, ssl.create_default_context(), **options)  # type: ignore[arg-type]
    assert RelpSender("127.0.0.1", 1, ssl.create_default_context()).window == DEFAULT_WINDOW
    RelpSender("127.0.0.1", 1, ssl.create_default_context()).deliver([])  # nothing to do
