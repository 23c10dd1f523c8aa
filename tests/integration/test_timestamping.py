"""RFC 3161 time-stamping against a real ``openssl ts`` authority, directly and over HTTP.

Nothing is mocked: requests are built and tokens verified by ``rfc3161-client``, replies are
produced by the ``openssl`` command line with a freshly generated test PKI.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from carevault.adapters.timestamping import (
    MAX_RESPONSE_BYTES,
    HttpTimeStampAuthority,
    TimestampError,
    timestamp,
    verify_timestamp,
)
from support.tsa import OpenSslTsa

TREE_HEAD = b'{"tree_size":42,"root_hash":"9f86d081884c7d65","timestamp":1700000000000}'
SLACK = timedelta(seconds=1)


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> OpenSslTsa:
    return OpenSslTsa(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="module")
def other_tsa(tmp_path_factory: pytest.TempPathFactory) -> OpenSslTsa:
    """A second TSA under a second, unrelated root CA."""
    return OpenSslTsa(tmp_path_factory.mktemp("other-tsa"), common_name="Other Test TSA")


def verify(token: bytes, data: bytes, tsa: OpenSslTsa) -> datetime:
    return verify_timestamp(
        token, data,
        tsa_certificate_pem=tsa.certificate_pem,
        root_certificates_pem=[tsa.root_certificate_pem],
    )


def stamp_and_verify(tsa: OpenSslTsa, data: bytes) -> tuple[bytes, datetime, datetime, datetime]:
    before = datetime.now(UTC)
    token = timestamp(data, tsa)
    after = datetime.now(UTC)
    return token, verify(token, data, tsa), before, after


def test_token_verifies_and_carries_the_time_of_stamping(tsa: OpenSslTsa) -> None:
    token, generated, before, after = stamp_and_verify(tsa, TREE_HEAD)

    assert generated.tzinfo is not None
    assert generated.utcoffset() == timedelta(0)
    # genTime is whole seconds (clock_precision_digits = 0): truncated, hence the slack.
    assert before - SLACK <= generated <= after + SLACK
    # What is returned is the bare TimeStampToken (CMS ContentInfo), not a TimeStampResp.
    assert token[0] == 0x30
    assert b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02" in token[:32]  # id-signedData


def test_each_request_gets_its_own_token(tsa: OpenSslTsa) -> None:
    first = timestamp(TREE_HEAD, tsa)
    second = timestamp(TREE_HEAD, tsa)

    assert first != second  # fresh nonce and serial number each time
    assert verify(first, TREE_HEAD, tsa) <= verify(second, TREE_HEAD, tsa)


def test_token_does_not_verify_for_other_data(tsa: OpenSslTsa) -> None:
    token = timestamp(TREE_HEAD, tsa)

    with pytest.raises(TimestampError, match="does not verify"):
        verify(token, TREE_HEAD.replace(b"42", b"43"), tsa)
    with pytest.raises(TimestampError, match="does not verify"):
        verify(token, TREE_HEAD + b"\n", tsa)


def test_token_from_a_different_tsa_is_refused(tsa: OpenSslTsa, other_tsa: OpenSslTsa) -> None:
    foreign = timestamp(TREE_HEAD, other_tsa)
    assert verify(foreign, TREE_HEAD, other_tsa)  # a valid token, just not from our TSA

    with pytest.raises(TimestampError, match="does not verify"):
        verify(foreign, TREE_HEAD, tsa)
    # Trusting both roots does not make the other TSA's token ours: the signer is pinned.
    with pytest.raises(TimestampError, match="Embedded certificate does not match"):
        verify_timestamp(
            foreign, TREE_HEAD,
            tsa_certificate_pem=tsa.certificate_pem,
            root_certificates_pem=[tsa.root_certificate_pem, other_tsa.root_certificate_pem],
        )
    # Pinning the other TSA's certificate without its root: no chain to a trusted root.
    with pytest.raises(TimestampError, match="unable to get local issuer certificate"):
        verify_timestamp(
            foreign, TREE_HEAD,
            tsa_certificate_pem=other_tsa.certificate_pem,
            root_certificates_pem=[tsa.root_certificate_pem],
        )


def flipped(token: bytes, index: int, mask: int = 0x01) -> bytes:
    damaged = bytearray(token)
    damaged[index] ^= mask
    return bytes(damaged)


def test_corrupted_token_is_refused(tsa: OpenSslTsa) -> None:
    token = timestamp(TREE_HEAD, tsa)
    imprint = token.find(hashlib.sha256(TREE_HEAD).digest())
    assert imprint > 0

    # A byte of the signed TSTInfo (the message imprint), and the last byte of the signature.
    for index in (imprint, imprint + 31, len(token) - 1):
        with pytest.raises(TimestampError):
            verify(flipped(token, index), TREE_HEAD, tsa)
    # Truncated, extended, empty.
    for damaged in (token[:-1], token + b"\x00", b""):
        with pytest.raises(TimestampError):
            verify(damaged, TREE_HEAD, tsa)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_no_single_bit_flip_changes_what_the_token_attests(tsa: OpenSslTsa) -> None:
    """Every one-bit corruption is refused with TimestampError, or, where CMS leaves a field
    unsigned and OpenSSL ignores it (the SignedData and SignerInfo version numbers, the
    SignerInfo signatureAlgorithm OID), still attests the same time over the same data."""
    token, generated, _, _ = stamp_and_verify(tsa, TREE_HEAD)
    refused = 0
    for index in range(len(token)):
        try:
            again = verify(flipped(token, index), TREE_HEAD, tsa)
        except TimestampError:
            refused += 1
        else:
            assert again == generated, f"flipping byte {index} changed the attested time"
    assert refused >= len(token) - 16


def test_request_is_sha256_with_nonce_and_cert_request(tsa: OpenSslTsa) -> None:
    seen: list[bytes] = []

    class Recording:
        def stamp(self, request_der: bytes) -> bytes:
            seen.append(request_der)
            return tsa.stamp(request_der)

    timestamp(TREE_HEAD, Recording())
    timestamp(TREE_HEAD, Recording())

    first, second = seen
    assert hashlib.sha256(TREE_HEAD).digest() in first
    assert hashlib.sha512(TREE_HEAD).digest() not in first
    assert b"\x01\x01\xff" in first  # certReq BOOLEAN TRUE
    assert first != second  # only the nonce differs


def test_replayed_response_is_refused(tsa: OpenSslTsa) -> None:
    """A response to an earlier request (same data, other nonce) must not be accepted."""
    recorded: list[bytes] = []

    class Recording:
        def stamp(self, request_der: bytes) -> bytes:
            recorded.append(tsa.stamp(request_der))
            return recorded[-1]

    class Replaying:
        def stamp(self, request_der: bytes) -> bytes:
            return recorded[0]

    timestamp(TREE_HEAD, Recording())
    with pytest.raises(TimestampError, match="nonce"):
        timestamp(TREE_HEAD, Replaying())


def test_rejection_from_the_tsa_is_an_error(tmp_path: Path) -> None:
    sha512_only = OpenSslTsa(tmp_path / "tsa", digests="sha512")

    with pytest.raises(TimestampError, match="not granted: rejection"):
        timestamp(TREE_HEAD, sha512_only)


def test_garbage_response_is_an_error() -> None:
    class Garbage:
        def stamp(self, request_der: bytes) -> bytes:
            return b"\x30\x03\x02\x01"

    with pytest.raises(TimestampError, match="malformed"):
        timestamp(TREE_HEAD, Garbage())


def test_empty_data_cannot_be_stamped(tsa: OpenSslTsa) -> None:
    with pytest.raises(TimestampError, match="empty"):
        timestamp(b"", tsa)


# --- over HTTP --------------------------------------------------------------------------------


class TsaHttpServer:
    """``http.server`` on 127.0.0.1 (port 0) answering RFC 3161 POSTs with ``OpenSslTsa``."""

    def __init__(self, tsa: OpenSslTsa) -> None:
        self.tsa = tsa
        self.content_types: list[str | None] = []
        self.mode = "ok"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.content_types.append(self.headers.get("Content-Type"))
                if outer.mode == "error":
                    self.send_error(503, "TSA unavailable")
                    return
                reply = outer.tsa.stamp(body)
                if outer.mode.startswith("huge"):
                    reply = reply + b"\x00" * MAX_RESPONSE_BYTES
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                if outer.mode != "huge-unsized":  # else HTTP/1.0: the body ends at close
                    self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def http_tsa(tsa: OpenSslTsa) -> Iterator[TsaHttpServer]:
    server = TsaHttpServer(tsa)
    yield server
    server.close()


def test_http_authority_round_trip(tsa: OpenSslTsa, http_tsa: TsaHttpServer) -> None:
    authority = HttpTimeStampAuthority(http_tsa.url, timeout=30.0)

    before = datetime.now(UTC)
    token = timestamp(TREE_HEAD, authority)
    after = datetime.now(UTC)

    assert before - SLACK <= verify(token, TREE_HEAD, tsa) <= after + SLACK
    assert http_tsa.content_types == ["application/timestamp-query"]
    with pytest.raises(TimestampError):
        verify(token, b"another tree head", tsa)


def test_http_error_status_is_an_error(http_tsa: TsaHttpServer) -> None:
    http_tsa.mode = "error"

    with pytest.raises(TimestampError, match="HTTP 503"):
        timestamp(TREE_HEAD, HttpTimeStampAuthority(http_tsa.url, timeout=30.0))


@pytest.mark.parametrize("mode", ["huge", "huge-unsized"])
def test_http_oversized_response_is_refused(http_tsa: TsaHttpServer, mode: str) -> None:
    http_tsa.mode = mode

    with pytest.raises(TimestampError, match="exceeds"):
        timestamp(TREE_HEAD, HttpTimeStampAuthority(http_tsa.url, timeout=30.0))


def test_http_unreachable_authority_is_an_error(http_tsa: TsaHttpServer) -> None:
    url = http_tsa.url
    http_tsa.close()  # nothing listens on that port any more

    with pytest.raises(TimestampError, match="unreachable"):
        timestamp(TREE_HEAD, HttpTimeStampAuthority(url, timeout=5.0))
