"""The audit log's read API, modelled on Certificate Transparency's (JSON, base64 hashes).

Tree heads and proofs reveal only sizes and hashes: they are public, so that anyone can
monitor the log. Entries are not: they go to the security officer only, and reading them is
itself recorded, in the operators' stream.

What anyone may ask is what anyone may make the server spend: the public routes are throttled
per client address (a `TokenBucketLimiter`: 429 with ``Retry-After``), and the tree head they
serve is signed at most once per ``CAREVAULT_TREE_HEAD_INTERVAL_SECONDS``
(`AuditLog.recent_tree_head`), not on every request that finds the log grown.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from carevault.api.access import TokenBucketLimiter
from carevault.api.errors import ErrorStyle, error_response
from carevault.api.openapi import PLAIN_ERROR, bearer, merged, query
from carevault.api.openapi import answer as documented
from carevault.api.route_door import PUBLIC, SECURITY_OFFICER, Audited, access, admitted
from carevault.domain.audit import STREAMS
from carevault.domain.errors import (
    CareVaultError,
    InvalidInput,
    NotFound,
    RateLimited,
    Unavailable,
)
from carevault.domain.merkle import ProofError
from carevault.domain.numbers import whole_number
from carevault.services.audit_log import AuditLog, AuditUnavailable

MAX_ENTRIES = 1000


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _int(request: Request, name: str, *, minimum: int = 0) -> int:
    number = whole_number(request.query_params.get(name) or "", 18)
    if number is None:
        raise InvalidInput(f"{name} must be a whole number")
    if number < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}")
    return number


def _stream(request: Request) -> str:
    stream = request.query_params.get("stream", "clinical")
    if stream not in STREAMS:
        raise InvalidInput(f"stream must be one of {', '.join(STREAMS)}")
    return stream


TEXT = {"type": "string"}
STREAM = ("stream", {"enum": list(STREAMS)}, False)
HASHES = {"type": "array", "items": {"type": "string"}}
TREE_HEAD = {
    "type": "object",
    "required": ["tree_size", "root_hash", "timestamp", "signature"],
    "properties": {
        "tree_size": {"type": "integer"},
        "root_hash": TEXT,
        "timestamp": {"type": "integer"},
        "signature": TEXT,
    },
}
TIMESTAMP = {"type": "object", "required": ["tree_size", "timestamp_token"]}
INCLUSION = {
    "type": "object",
    "required": ["leaf_index", "tree_size", "audit_path"],
    "properties": {"audit_path": HASHES},
}
CONSISTENCY = {"type": "object", "required": ["consistency"], "properties": {"consistency": HASHES}}
ENTRIES = {"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array"}}}
_STATUS = {
    400: "a parameter is missing, not a whole number, or out of range",
    401: "the audit entries are for the security officer",
    404: "no such tree head, time-stamp or entry",
    429: "too many requests from this address (the public routes); see Retry-After",
    503: "the audit log is unavailable",
}


def number(name: str) -> tuple[str, dict[str, Any], bool]:
    return name, {"type": "integer", "minimum": 0}, True


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: documented(_STATUS[status], schema=PLAIN_ERROR) for status in statuses}


SecurityOfficer = Callable[[str], str | None]


ENTRIES_AUDITED = Audited(
    "operator", "security", "R", "audit-entries", entity_type="AuditLog", query=True
)


def audit_router(log: AuditLog, limiter: TokenBucketLimiter) -> APIRouter:
    """The tree heads, proofs and keys are public; the entries are for the security officer
    (the route door's `SECURITY_OFFICER` rule: in ``dev`` only, the developer's loopback too),
    and every attempt on them is recorded in the operators' stream, refused or not.

    ``limiter`` throttles the public routes per client address: they answer without a caller,
    so nothing else bounds what one address makes the server read, hash and sign."""
    router = APIRouter(prefix="/audit")

    def throttled(request: Request) -> Response | None:
        """429 with ``Retry-After``, in the routes' error shape, once the address's bucket is
        empty; None while it lets the request through. Checked before anything is read."""
        try:
            limiter.check(request.client.host if request.client else "")
        except RateLimited as error:
            return error_response(error, ErrorStyle.PLAIN)
        return None

    def answer(produce: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(produce(), headers={"Cache-Control": "no-store"})
        except ProofError as error:
            return error_response(InvalidInput(str(error)), ErrorStyle.PLAIN)
        except LookupError as error:
            return error_response(NotFound(str(error)), ErrorStyle.PLAIN)
        except AuditUnavailable:
            return error_response(Unavailable("the audit log is unavailable"), ErrorStyle.PLAIN)
        except CareVaultError as error:
            return error_response(error, ErrorStyle.PLAIN)

    @router.get(
        "/public-key",
        response_class=Response,
        responses={
            200: documented("the stream's Ed25519 public key", "application/x-pem-file", TEXT),
            400: documented("an unknown stream", schema=PLAIN_ERROR),
            **errors(429),
        },
        openapi_extra=query(STREAM),
    )
    @access(PUBLIC)
    def public_key(request: Request) -> Response:
        if (refused := throttled(request)) is not None:
            return refused
        try:
            stream = _stream(request)
        except CareVaultError as error:
            return error_response(error, ErrorStyle.PLAIN)
        return Response(log.public_key_pem(stream), media_type="application/x-pem-file")

    @router.get(
        "/tree-head",
        responses={
            200: documented("the latest signed tree head", schema=TREE_HEAD),
            **errors(400, 429, 503),
        },
        openapi_extra=query(STREAM),
    )
    @access(PUBLIC)
    def tree_head(request: Request) -> Response:
        if (refused := throttled(request)) is not None:
            return refused

        def produce() -> dict[str, Any]:
            # The latest head, a new one only once it is an interval old: signing whenever
            # the log grew would store a head and cost a signature per request.
            head = log.recent_tree_head(_stream(request))
            return {
                "tree_size": head.tree_size,
                "root_hash": b64(head.root_hash),
                "timestamp": head.timestamp_ms,
                "signature": b64(head.signature),
            }

        return answer(produce)

    @router.get(
        "/tree-head/timestamp",
        responses={
            200: documented("the RFC 3161 time-stamp of a tree head", schema=TIMESTAMP),
            **errors(400, 404, 429, 503),
        },
        openapi_extra=query(number("tree_size"), STREAM),
    )
    @access(PUBLIC)
    def tree_head_timestamp(request: Request) -> Response:
        if (refused := throttled(request)) is not None:
            return refused

        def produce() -> dict[str, Any]:
            size = _int(request, "tree_size")
            token = log.timestamp_token(_stream(request), size)
            if token is None:
                raise LookupError(f"the tree head of size {size} has no time-stamp yet")
            return {"tree_size": size, "timestamp_token": b64(token)}

        return answer(produce)

    @router.get(
        "/proof/inclusion",
        responses={
            200: documented("an RFC 9162 inclusion proof", schema=INCLUSION),
            **errors(400, 404, 429, 503),
        },
        openapi_extra=query(number("leaf_index"), number("tree_size"), STREAM),
    )
    @access(PUBLIC)
    def inclusion(request: Request) -> Response:
        if (refused := throttled(request)) is not None:
            return refused

        def produce() -> dict[str, Any]:
            index = _int(request, "leaf_index")
            size = _int(request, "tree_size", minimum=1)
            path = log.inclusion_proof(_stream(request), index, size)
            return {"leaf_index": index, "tree_size": size, "audit_path": [b64(h) for h in path]}

        return answer(produce)

    @router.get(
        "/proof/consistency",
        responses={
            200: documented("an RFC 9162 consistency proof", schema=CONSISTENCY),
            **errors(400, 404, 429, 503),
        },
        openapi_extra=query(number("first"), number("second"), STREAM),
    )
    @access(PUBLIC)
    def consistency(request: Request) -> Response:
        if (refused := throttled(request)) is not None:
            return refused

        def produce() -> dict[str, Any]:
            first = _int(request, "first")
            second = _int(request, "second")
            proof = log.consistency_proof(_stream(request), first, second)
            return {"consistency": [b64(h) for h in proof]}

        return answer(produce)

    @router.get(
        "/entries",
        responses={
            200: documented("leaves of the log", schema=ENTRIES),
            **errors(400, 401, 404, 503),
        },
        openapi_extra=merged(query(number("start"), number("end"), STREAM), bearer()),
    )
    @access(SECURITY_OFFICER, ENTRIES_AUDITED)
    def entries(request: Request) -> Response:
        admission = admitted(request)

        def produce() -> dict[str, Any]:
            try:
                stream = _stream(request)
                start = _int(request, "start")
                end = _int(request, "end")
                if end <= start or end - start > MAX_ENTRIES:
                    raise InvalidInput(f"ask for 1 to {MAX_ENTRIES} entries (start < end)")
            except CareVaultError as error:
                admission.note("4", {"result": error.message})
                raise
            admission.note("0", {"result": f"{stream} {start}..{end}"})
            rows = log.entries(stream, start, end)
            return {"entries": [{"leaf_index": i, "leaf_input": b64(data)} for i, data in rows]}

        return answer(produce)

    return router
