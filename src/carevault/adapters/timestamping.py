"""RFC 3161 time-stamping of signed tree heads, with ``rfc3161-client`` as the client.

A signed tree head proves *what* the audit log contained; an RFC 3161 time-stamp token from an
independent time-stamping authority (TSA) proves *when*, to a third party who does not trust
CareVault's clock.

What is kept: :func:`timestamp` returns the DER **TimeStampToken** (RFC 3161 §2.4.2: a CMS
``ContentInfo`` holding ``SignedData`` over ``TSTInfo``), not the whole ``TimeStampResp``. The
response is a transport envelope: its ``PKIStatusInfo`` only describes that one exchange and is
not signed, while the token is the self-contained, signed evidence (what ``openssl ts -verify
-token_in`` and CMS/CAdES time-stamp attributes carry). Storing the token means a stored value
can never be a rejection or carry an unsigned status text. ``rfc3161-client`` only parses full
responses, so :func:`verify_timestamp` wraps the token in a minimal "granted" ``TimeStampResp``
(``SEQUENCE { SEQUENCE { INTEGER 0 }, token }``) before handing it to the library's verifier,
and checks that the library saw exactly the stored token bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Protocol

import httpx
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpTimeStampAuthority",
    "TimeStampAuthority",
    "TimestampError",
    "timestamp",
    "verify_timestamp",
]

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""A TimeStampResp with its signer certificate is a few KiB; anything past this is refused."""

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
QUERY_CONTENT_TYPE: Final = "application/timestamp-query"
REPLY_CONTENT_TYPE: Final = "application/timestamp-reply"
SHA256_OID: Final = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")

# DER of PKIStatusInfo { status granted(0) }: SEQUENCE { INTEGER 0 }.
_GRANTED_STATUS_INFO: Final = bytes([0x30, 0x03, 0x02, 0x01, 0x00])


class TimestampError(Exception):
    """A time-stamp could not be obtained, or a token does not verify."""


class TimeStampAuthority(Protocol):
    """Something that answers an RFC 3161 request."""

    def stamp(self, request_der: bytes) -> bytes:
        """Send a DER ``TimeStampReq``; return the DER ``TimeStampResp``."""
        ...


class HttpTimeStampAuthority:
    """An RFC 3161 TSA reached over HTTP (RFC 3161 §3.4): POST ``application/timestamp-query``.

    Redirects are not followed, the whole exchange is bounded by ``timeout`` seconds per phase
    (connect, write, read), and a response body larger than ``max_response_bytes`` is refused
    without being read further. Every failure is a :class:`TimestampError`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        self.url = url
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes

    def stamp(self, request_der: bytes) -> bytes:
        headers = {"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE}
        try:
            with (
                httpx.Client(timeout=self.timeout, follow_redirects=False) as client,
                client.stream("POST", self.url, content=request_der, headers=headers) as response,
            ):
                if response.status_code != httpx.codes.OK:
                    raise TimestampError(
                        f"time-stamping authority {self.url} answered HTTP {response.status_code}"
                    )
                return self._read_bounded(response)
        except httpx.HTTPError as error:
            raise TimestampError(
                f"time-stamping authority {self.url} unreachable: {error!r}"
            ) from error

    def _read_bounded(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("Content-Length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.max_response_bytes
        ):
            raise TimestampError(
                f"time-stamp response of {declared} bytes exceeds {self.max_response_bytes}"
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_response_bytes:
                raise TimestampError(f"time-stamp response exceeds {self.max_response_bytes} bytes")
        if not body:
            raise TimestampError(f"time-stamping authority {self.url} sent an empty response")
        return bytes(body)


def timestamp(data: bytes, authority: TimeStampAuthority) -> bytes:
    """Have ``authority`` time-stamp ``data``; return the DER TimeStampToken.

    The request carries a SHA-256 imprint of ``data``, a random nonce and ``certReq`` true (so
    the token embeds the TSA certificate). The response must be *granted* and answer this very
    request: same nonce, same imprint algorithm and digest. The token's signature is not
    checked here (that needs the trust anchors): call :func:`verify_timestamp` for that.
    """
    if not data:
        raise TimestampError("cannot time-stamp empty data")
    request = (
        TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    response_der = authority.stamp(request.as_bytes())
    try:
        response = decode_timestamp_response(response_der)
    except Exception as error:  # untrusted bytes: any decoding failure is a refusal
        raise TimestampError(f"malformed time-stamp response: {error}") from error

    status = response.status
    if status != PKIStatus.GRANTED:
        texts = "; ".join(response.status_string) or "no status text"
        raise TimestampError(f"time-stamp not granted: {_status_name(status)} ({texts})")
    try:
        info = response.tst_info
        token = response.time_stamp_token()
        nonce = info.nonce
        got = info.message_imprint
    except Exception as error:
        raise TimestampError(f"granted time-stamp response has no usable token: {error}") from error

    if request.nonce is None or nonce != request.nonce:
        raise TimestampError("time-stamp response nonce does not match the request")
    wanted = request.message_imprint
    if got.hash_algorithm != SHA256_OID or wanted.hash_algorithm != SHA256_OID:
        raise TimestampError(
            f"time-stamp imprint uses {got.hash_algorithm.dotted_string}, expected SHA-256"
        )
    if got.message != wanted.message:
        raise TimestampError("time-stamp message imprint does not match the data sent")
    return token


def verify_timestamp(
    token: bytes,
    data: bytes,
    *,
    tsa_certificate_pem: bytes,
    root_certificates_pem: list[bytes],
) -> datetime:
    """Verify a DER TimeStampToken over ``data``; return its generation time (aware, UTC).

    Checks, through ``rfc3161-client``'s verifier: the CMS signature and the signer's chain to
    one of ``root_certificates_pem`` at the token's own time; that the signer is exactly
    ``tsa_certificate_pem`` (by certificate, issuer and serial); its critical EKU
    id-kp-timeStamping; and that the message imprint is the digest of ``data``. Any failure,
    including a token that does not parse, raises :class:`TimestampError`.
    """
    if not root_certificates_pem:
        raise TimestampError("at least one root certificate is required")
    tsa_certificate = _load_certificate(tsa_certificate_pem, "TSA certificate")
    roots = [_load_certificate(pem, "root certificate") for pem in root_certificates_pem]

    response = _response_from_token(token)
    builder = VerifierBuilder().tsa_certificate(tsa_certificate)
    for root in dict.fromkeys(roots):  # the builder refuses duplicates
        builder = builder.add_root_certificate(root)
    verifier = builder.build()
    try:
        verifier.verify_message(response, data)
        generated = response.tst_info.gen_time
    except VerificationError as error:
        raise TimestampError(f"time-stamp token does not verify: {error}") from error
    except Exception as error:
        # The token is untrusted input: parts are decoded lazily, and a damaged one surfaces
        # as ValueError from the parser or as cryptography's own errors (e.g. InvalidVersion
        # for an embedded certificate). None of them may escape as anything but a rejection.
        raise TimestampError(
            f"time-stamp token is malformed: {type(error).__name__}: {error}"
        ) from error
    if generated.tzinfo is None:
        return generated.replace(tzinfo=UTC)  # TSTInfo genTime is GeneralizedTime in UTC
    return generated.astimezone(UTC)


def _response_from_token(token: bytes) -> TimeStampResponse:
    """Wrap a stored token in a granted TimeStampResp, the only thing the library parses."""
    if not token or token[0] != 0x30:
        raise TimestampError("time-stamp token is not a DER SEQUENCE")
    body = _GRANTED_STATUS_INFO + token
    try:
        response = decode_timestamp_response(b"\x30" + _der_length(len(body)) + body)
        embedded = response.time_stamp_token()
    except Exception as error:
        raise TimestampError(f"time-stamp token is malformed: {error}") from error
    if embedded != token:  # trailing bytes or a non-canonical encoding
        raise TimestampError("time-stamp token is not a single DER-encoded TimeStampToken")
    return response


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise TimestampError(f"unreadable {what}: {error}") from error


def _status_name(status: int) -> str:
    try:
        return PKIStatus(status).name.lower()
    except ValueError:
        return f"unknown status {status}"
