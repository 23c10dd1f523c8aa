"""The HTTP application: FHIR under ``/fhir`` through the door, the portal at ``/``.

Only transport lives here: reading a bounded body, turning the door's `FhirResponse` into an
HTTP response, and the security headers every response carries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carevault import __version__
from carevault.adapters.storage.lease import Lease, try_chores_lease
from carevault.adapters.syslog.relp_sender import RelpSender
from carevault.adapters.syslog.tls_sender import TlsSyslogSender
from carevault.adapters.timestamping import HttpTimeStampAuthority
from carevault.api.audit_routes import SecurityOfficer, audit_router
from carevault.api.fhir.door import (
    BEARER_IN_URL,
    FORM,
    FhirDoor,
    FhirResponse,
    carries_url_token,
    without_url_token,
)
from carevault.api.fhir.outcome import from_error
from carevault.api.openapi import answer, html, openapi_document, redirect
from carevault.api.transport import TransportIdentity, client_certificate
from carevault.domain.audit import STREAMS
from carevault.domain.errors import (
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooLarge,
)
from carevault.services.atna_export import start_exporters
from carevault.services.audit_log import AuditLog
from carevault.settings import ConfigurationError, Settings

FHIR_JSON = "application/fhir+json"
HEALTH = {
    "type": "object",
    "required": ["status", "version"],
    "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
}


def utc_now() -> datetime:
    return datetime.now(UTC)


WEB = Path(__file__).parent.parent / "web"
TEMPLATES = Jinja2Templates(directory=str(WEB / "templates"))
STATIC = str(WEB / "static")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Browsers must not fall back to plain HTTP for two years, subdomains included (RFC 6797): sent
# outside dev (served over HTTPS only: settings refuse a plain public address) and on every
# response CareVault serves over its own TLS (`carevault serve --tls-cert`); behind a proxy,
# the proxy sends it too (deploy/nginx/carevault.conf).
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every HTTP response that does not set them itself, and
    HSTS to those served over HTTPS or, with ``strict_transport`` (outside dev), to all.

    A plain ASGI middleware: it only edits the ``http.response.start`` message. (Starlette's
    ``@app.middleware("http")`` would re-stream every request and response body through memory
    channels and a task group, which cost a fifth of the server's CPU on document retrieval.)
    """

    _ENCODED = tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in SECURITY_HEADERS.items()
    )

    def __init__(self, app: ASGIApp, *, strict_transport: bool = False) -> None:
        self.app = app
        self.strict_transport = strict_transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        strict = self.strict_transport or scope.get("scheme") == "https"
        added = (*self._ENCODED, HSTS) if strict else self._ENCODED

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in added if pair[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TokensNotInUrls:
    """Refuses an access token in the query string (RFC 6750 §2.3), and keeps it out of every
    record: its value is replaced in the request's ``scope`` before anything reads it, the
    server's access log included (uvicorn logs the path and query of that same ``scope``).
    Under ``/fhir`` the door refuses the request and records the refusal; elsewhere it is
    refused here, with the same OperationOutcome.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"") if scope["type"] == "http" else b""
        # The parameter's name is written out, or percent-encoded: anything else is skipped
        # without parsing.
        if not query or (b"%" not in query and b"access_token" not in query.lower()):
            await self.app(scope, receive, send)
            return
        params = tuple(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        if not carries_url_token(params):
            await self.app(scope, receive, send)
            return
        scope["query_string"] = urlencode(without_url_token(params)).encode("latin-1")
        path: str = scope.get("path", "")
        if path == "/fhir" or path.startswith("/fhir/"):
            await self.app(scope, receive, send)
            return
        status, outcome, headers = from_error(NotAuthenticated(BEARER_IN_URL))
        refusal = JSONResponse(
            outcome, status_code=status, headers=headers, media_type=f"{FHIR_JSON}; charset=utf-8"
        )
        await refusal(scope, receive, send)


class EveryMethod:
    """An endpoint that takes every HTTP method: Starlette routes a plain function for the
    methods listed only, and answers the others itself, unrecorded."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)
        self.__name__ = endpoint.__name__  # the route's name, as for the plain function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it exceeds ``limit`` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidInput("Content-Length is not a number")
        # Compared by length first: a header of thousands of digits is not converted.
        if len(declared.lstrip("0")) > len(str(limit)) or int(declared) > limit:
            raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def render(response: FhirResponse) -> Response:
    if response.raw is not None:
        return Response(
            response.raw,
            status_code=response.status,
            headers={**response.headers, "Cache-Control": "no-store"},
            media_type=response.media_type or "application/octet-stream",
        )
    content = (
        b""
        if response.body is None
        else json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    )
    headers = {**response.headers, "Cache-Control": "no-store"}
    return Response(
        content,
        status_code=response.status,
        headers=headers,
        media_type=f"{FHIR_JSON}; charset=utf-8",
    )


TREE_HEAD_INTERVAL_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 30.0


@contextlib.asynccontextmanager
async def _lifespan_with(
    log: AuditLog, settings: Settings, housekeeping: Sequence[Callable[[], object]] = ()
) -> AsyncIterator[None]:
    """Size the request thread pool; run the chores in the one process that holds the chores
    lease; flush the log on shutdown."""
    to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
    stop = threading.Event()
    chores = threading.Thread(
        target=_chores, args=(log, settings, housekeeping, stop), name="chores", daemon=True
    )
    chores.start()
    try:
        yield
    finally:
        stop.set()
        chores.join(timeout=10)
        log.close()


def _chores(
    log: AuditLog,
    settings: Settings,
    housekeeping: Sequence[Callable[[], object]],
    stop: threading.Event,
) -> None:
    """While this process holds the chores lease (see ``adapters.storage.lease``): publish
    signed tree heads every second, have one time-stamped by the configured TSA every
    ``tsa_interval_seconds``, run the ``housekeeping`` tasks (releasing held documents…)
    every ``HOUSEKEEPING_SECONDS``, and export to the ATNA repository. A process that does
    not hold it asks again every second, so the chores move on when their holder ends."""
    authority = HttpTimeStampAuthority(settings.tsa_url) if settings.tsa_url else None
    audit_logger = logging.getLogger("carevault.audit")
    lease: Lease | None = None
    leading = threading.Event()  # set: the exporters of the lease stop
    exporters: list[threading.Thread] = []
    next_stamp = next_chores = 0.0
    try:
        while not stop.wait(TREE_HEAD_INTERVAL_SECONDS):
            if lease is not None and not lease.alive():
                audit_logger.warning("the chores lease was lost; chores paused")
                leading.set()
                for thread in exporters:
                    thread.join(timeout=5)
                lease.release()
                lease = None
            if lease is None:
                try:
                    lease = try_chores_lease(log.engine)
                except Exception:  # asked again at the next tick; the chores must not die
                    audit_logger.exception("the chores lease could not be asked for")
                if lease is None:
                    continue
                leading = threading.Event()
                exporters = _start_atna_export(log, settings, leading)
            if time.monotonic() >= next_chores:
                next_chores = time.monotonic() + HOUSEKEEPING_SECONDS
                for chore in housekeeping:
                    try:
                        chore()
                    except Exception:  # retried at the next round
                        audit_logger.exception("housekeeping failed")
            for stream in STREAMS:
                try:
                    log.sign_tree_head(stream)
                except Exception:  # the next tick retries; a failure must not stop serving
                    audit_logger.exception("tree head not signed")
            if authority is not None and time.monotonic() >= next_stamp:
                next_stamp = time.monotonic() + settings.tsa_interval_seconds
                for stream in STREAMS:
                    try:
                        log.stamp_latest_tree_head(stream, authority)
                    except Exception as error:
                        audit_logger.warning("tree head not time-stamped: %s", error)
    finally:
        leading.set()
        for thread in exporters:
            thread.join(timeout=5)
        if lease is not None:
            lease.release()


def _start_atna_export(
    log: AuditLog, settings: Settings, stop: threading.Event
) -> list[threading.Thread]:
    """Forward both audit streams to the configured ATNA repository, if there is one."""
    if not settings.atna_host:
        return []
    if settings.atna_ca_file is None:
        raise ConfigurationError("CAREVAULT_ATNA_CA_FILE is needed to trust the ATNA repository")
    transport = RelpSender if settings.atna_transport == "relp" else TlsSyslogSender
    sender = transport.from_files(
        settings.atna_host,
        settings.atna_port,
        str(settings.atna_ca_file),
        str(settings.atna_cert_file) if settings.atna_cert_file else None,
        str(settings.atna_key_file) if settings.atna_key_file else None,
        server_name=settings.atna_server_name,
    )
    return start_exporters(
        log.engine,
        sender,
        destination=f"{settings.atna_host}:{settings.atna_port}",
        hostname=socket.gethostname(),
        stop=stop,
    )


def create_app(
    settings: Settings,
    door: FhirDoor,
    log: AuditLog,
    routers: Sequence[APIRouter] = (),
    security_officer: SecurityOfficer = lambda _token: None,
    housekeeping: Sequence[Callable[[], object]] = (),
) -> FastAPI:
    app = FastAPI(
        title="CareVault",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lambda _app: _lifespan_with(log, settings, housekeeping),
    )
    fhir_base = settings.public_url + "/fhir"

    @app.exception_handler(StarletteHTTPException)
    async def unrouted(request: Request, error: StarletteHTTPException) -> Response:
        """A path no route matches (a FHIR path holding a line break, say): under /fhir the
        answer is an OperationOutcome, as from the door."""
        if not request.url.path.startswith("/fhir"):
            return JSONResponse({"detail": error.detail}, error.status_code, error.headers)
        _status, outcome, _headers = from_error(NotFound("no FHIR interaction has this path"))
        return Response(json.dumps(outcome), error.status_code, media_type="application/fhir+json")

    app.add_middleware(TokensNotInUrls)
    app.add_middleware(SecurityHeaders, strict_transport=settings.environment != "dev")
    # Before anything reads the client's address or the transport's headers.
    app.add_middleware(TransportIdentity, trusted_proxies=settings.trusted_proxies)

    async def fhir(request: Request) -> Response:
        path = str(request.path_params.get("path", ""))
        params = tuple(request.query_params.multi_items())
        body, body_error = b"", None
        try:
            body = await read_body(request, settings.max_body_bytes)
        except CareVaultError as error:
            body_error = error
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body_error is None and request.method == "POST" and content_type == FORM:
            # POST [type]/_search: the parameters travel in the body.
            try:
                params += tuple(
                    parse_qsl(
                        body.decode("utf-8"),
                        keep_blank_values=True,
                        max_num_fields=100,
                        strict_parsing=bool(body),
                    )
                )
            except (UnicodeDecodeError, ValueError):
                body_error = InvalidInput("the form body of a search is malformed")
            body = b""
        client = request.client.host if request.client else ""
        certificate = client_certificate(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        response = await run_in_threadpool(
            door.handle,
            request.method,
            path,
            params=params,
            body=body,
            headers=headers,
            client=client,
            tls_client=certificate.serial if certificate else "",
            base_url=fhir_base,
            body_error=body_error,
        )
        return render(response)

    # Plain Starlette routes: the door parses everything itself, so FastAPI's per-request
    # parameter resolution would be pure cost. Every method goes to the door, which answers
    # those it does not serve (TRACE, OPTIONS, …) with 405 and records them like any request.
    door_endpoint = EveryMethod(fhir)
    for path in ("/fhir/{path:path}", "/fhir"):
        app.router.routes.append(Route(path, door_endpoint, include_in_schema=False))
    # Routes are matched in the order they are added: the FHIR API, by far the busiest, first.
    app.include_router(audit_router(log, settings, utc_now, security_officer))
    for router in routers:
        app.include_router(router)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get(
        "/favicon.ico",
        response_class=Response,
        status_code=308,
        responses={308: redirect("the icon is a static file")},
    )
    async def favicon() -> Response:
        return Response(status_code=308, headers={"Location": "/static/favicon.svg"})

    @app.get("/health", responses={200: answer("the server answers", schema=HEALTH)})
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    document: dict[str, Any] = {}

    @app.get("/openapi.json", responses={200: answer("this document", schema={"type": "object"})})
    async def openapi() -> JSONResponse:
        """This API's OpenAPI 3.1 description, generated from the routes and the FHIR door's
        registry (`carevault.api.openapi`); public, like the CapabilityStatement."""
        if not document:
            document.update(openapi_document(app, door, settings.max_page_size))
        return JSONResponse(document)

    @app.get("/", response_class=HTMLResponse, responses={200: html("the home page")})
    async def home(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            request,
            "home.html",
            {"version": __version__, "environment": settings.environment, "fhir_base": fhir_base},
        )

    return app
