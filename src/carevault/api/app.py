"""The HTTP application: FHIR under ``/fhir`` through the door, the portal at ``/``.

Only transport lives here: reading a bounded body, turning the door's `FhirResponse` into an
HTTP response, and the security headers every response carries.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carevault import __version__
from carevault.api.access import TokenBucketLimiter, is_loopback
from carevault.api.audit_routes import SecurityOfficer, audit_router
from carevault.api.errors import NO_STORE, ErrorStyle, error_response
from carevault.api.fhir.door import (
    BEARER_IN_URL,
    FORM,
    REDACTED,
    SECRET_PARAMETERS,
    FhirDoor,
    FhirResponse,
    carries_url_token,
    without_url_token,
)
from carevault.api.fhir.formats import (
    FHIR_XML,
    XML_TYPES,
    Preference,
    json_to_xml,
    media_type,
    negotiate,
    preferred_body,
    xml_to_json,
)
from carevault.api.fhir.outcome import from_error
from carevault.api.instruments import Instruments, RequestInstruments
from carevault.api.instruments_routes import instruments_router, metrics_credential_check
from carevault.api.openapi import answer, html, openapi_document, redirect
from carevault.api.route_door import (
    FHIR_DOOR,
    PUBLIC,
    Authenticator,
    Caller,
    RouteDoor,
    UndeclaredRoute,
    access,
)
from carevault.api.transport import TransportIdentity, client_certificate
from carevault.domain.errors import (
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooLarge,
)
from carevault.domain.numbers import exceeds, is_digits
from carevault.services.audit_log import AuditLog
from carevault.settings import Settings

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


# Where the door finds the query's parameters when the query string had to be redacted.
QUERY_KEPT = "carevault.query"


def _codes_kept(scope: Scope, query: bytes) -> bytes:
    """An e-prescription's access code or secret (``$accept?ac=…``, the E-Rezept API's own
    shape) reaches the door from ``scope[QUERY_KEPT]``; the query string everything else
    reads (the server's access log) holds ``redacted`` instead."""
    params = tuple(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    if not any(name in SECRET_PARAMETERS for name, _ in params):
        return query
    scope[QUERY_KEPT] = params
    redacted = tuple(
        (name, REDACTED if name in SECRET_PARAMETERS else value) for name, value in params
    )
    scope["query_string"] = urlencode(redacted).encode("latin-1")
    return bytes(scope["query_string"])


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
        if query and (b"ac=" in query or b"secret=" in query or b"%" in query):
            query = _codes_kept(scope, query)
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
        refusal = error_response(NotAuthenticated(BEARER_IN_URL), ErrorStyle.FHIR)
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
        if not is_digits(declared):
            raise InvalidInput("Content-Length is not a number")
        if exceeds(declared, limit):
            raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def body_limit(method: str, path: str, settings: Settings) -> int:
    """The body limit of a FHIR request: documents travel only in the ITI-65 transaction
    (``POST [base]``), which takes `Settings.max_body_bytes`; every other interaction takes at
    most `Settings.max_resource_body_bytes`, so that what is parsed and validated in memory
    (a Consent took 1.8 s per 1.3 MB) stays small."""
    if method == "POST" and not path.strip("/"):
        return settings.max_body_bytes
    return min(settings.max_resource_body_bytes, settings.max_body_bytes)


def render(
    response: FhirResponse,
    fmt: str = "json",
    preference: Preference | None = None,
    method: str = "",
) -> Response:
    """The door's answer on the wire: the negotiated format (`formats.negotiate`), and for a
    write what ``Prefer: return=…`` asked for."""
    if response.stream is not None:
        in_xml = fmt == "xml"
        return StreamingResponse(
            response.stream.xml() if in_xml else response.stream.json(),
            status_code=response.status,
            headers={**response.headers, "Cache-Control": "no-store"},
            media_type=f"{FHIR_XML if in_xml else FHIR_JSON}; charset=utf-8",
        )
    if response.raw is None and (fmt == "xml" or preference is not None):
        body = preferred_body(method, response.status, response.body, preference or Preference())
        xml = json_to_xml(body) if fmt == "xml" and body is not None else None
        if xml is not None or body is None:
            return Response(
                xml or b"",
                status_code=response.status,
                headers={**response.headers, "Cache-Control": "no-store"},
                media_type=f"{FHIR_XML if fmt == 'xml' else FHIR_JSON}; charset=utf-8",
            )
        response = replace(response, body=body)
    if response.raw is not None:
        return Response(
            response.raw,
            status_code=response.status,
            headers={**response.headers, "Cache-Control": "no-store"},
            media_type=response.media_type or "application/octet-stream",
        )
    headers = {**response.headers, "Cache-Control": "no-store"}
    if response.body is None:  # 204 No Content ($reject, $abort): no body, no media type
        return Response(status_code=response.status, headers=headers)
    content = json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(
        content,
        status_code=response.status,
        headers=headers,
        media_type=f"{FHIR_JSON}; charset=utf-8",
    )


@contextlib.asynccontextmanager
async def _lifespan_with(
    log: AuditLog, settings: Settings, chores: Callable[[threading.Event], None] | None = None
) -> AsyncIterator[None]:
    """Size the request thread pool; run the chores (`carevault.services.chores`, wired by
    bootstrap) in a thread of their own; flush the log on shutdown."""
    to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
    stop = threading.Event()
    thread = None
    if chores is not None:
        thread = threading.Thread(target=chores, args=(stop,), name="chores", daemon=True)
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=10)
        log.close()


class CareVaultApp(FastAPI):
    """FastAPI, with the FHIR API's requests taken down a lane of their own.

    Every request to ``/fhir`` passes the FHIR door (`FhirDoor`), which authenticates,
    decides, records and answers every error itself; what FastAPI adds around a route (its
    exception and dependency middlewares, the router's walk, the endpoint's wrappers) did
    nothing for those requests and cost a few hundredths of a retrieval's CPU (py-spy). The
    lane is built, on the first request as Starlette builds its own stack, from the app's own
    middlewares in their order (``user_middleware``: whatever is added with
    ``add_middleware`` is on both paths), around the FHIR routes' endpoint and a last resort
    that answers 500 with an OperationOutcome and raises, as FastAPI's would. A path the FHIR
    routes do not match (a line break) goes through FastAPI, whose handler answers it."""

    fhir_routes: tuple[Route, ...] = ()
    _fhir_lane: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fhir_routes and scope["type"] == "http":
            path = scope["path"]
            if path == "/fhir" or path.startswith("/fhir/"):
                for route in self.fhir_routes:
                    match, child = route.matches(scope)
                    if match is Match.FULL:
                        scope["app"] = self
                        scope.update(child)
                        await self._lane(route)(scope, receive, send)
                        return
        await super().__call__(scope, receive, send)

    def _lane(self, route: Route) -> ASGIApp:
        if self._fhir_lane is None:
            lane: ASGIApp = LastResort(route.app)  # the same endpoint for every FHIR route
            for middleware in reversed(self.user_middleware):  # the outermost comes first
                lane = middleware.cls(lane, *middleware.args, **middleware.kwargs)
            self._fhir_lane = lane
        return self._fhir_lane


class LastResort:
    """The FHIR lane's innermost layer: an exception nothing answered becomes a 500
    OperationOutcome (if no answer has started), which the middlewares around it give the
    request id and the security headers, and is raised again for the server's log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if not started:
                _status, outcome, _headers = from_error(error)  # logged under an incident
                answer = Response(json.dumps(outcome), 500, media_type="application/fhir+json")
                await answer(scope, receive, send)
            raise


def create_app(
    settings: Settings,
    door: FhirDoor,
    log: AuditLog,
    routers: Sequence[APIRouter] = (),
    security_officer: SecurityOfficer = lambda _token: None,
    chores: Callable[[threading.Event], None] | None = None,
    instruments: Instruments | None = None,
    metrics_credential: bytes | None = None,
    officer_session: Callable[[Request], str | None] = lambda _request: None,
    authenticators: Mapping[str, Authenticator] | None = None,
    audit_limiter: TokenBucketLimiter | None = None,
) -> CareVaultApp:
    """``instruments``: the metrics this app counts into and the readiness it reports
    (`carevault.api.instruments`); ``metrics_credential``: what ``/metrics`` asks for;
    ``officer_session``: the security officer a portal session cookie belongs to (the
    officer's workspace pages, `carevault.web.officer_pages`); ``authenticators``: the route
    door's others, by the name their rule gives (``professional``:
    `carevault.api.mailbox_routes`); ``audit_limiter``: the per-address throttle of the audit
    log's public routes (bootstrap gives it; without one, a bucket of
    ``rate_limit_per_minute`` of its own, so that no app serves them unthrottled)."""
    instruments = instruments or Instruments()
    instruments.fhir_types = frozenset(door.handlers)
    instruments.fhir_operations = frozenset(
        operation.name for handler in door.handlers.values() for operation in handler.operations
    )

    def officer(request: Request) -> Caller | None:
        """The security officer a bearer token or a portal session belongs to; in ``dev`` only,
        the developer's loopback too."""
        client = request.client.host if request.client else ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        who = security_officer(token.strip()) if scheme.lower() == "bearer" else None
        if who is None and not scheme:
            who = officer_session(request)
        if who is not None:
            return Caller(who, "security-officer")
        if settings.environment == "dev" and is_loopback(client):
            return Caller(None, "security-officer")
        return None

    route_door = RouteDoor(
        log,
        utc_now,
        {
            "security-officer": officer,
            "metrics-credential": metrics_credential_check(metrics_credential),
            **(authenticators or {}),
        },
    )

    app = CareVaultApp(
        title="CareVault",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lambda _app: _lifespan_with(log, settings, chores),
        # Every route of every router passes the one door of non-FHIR routes
        # (`carevault.api.route_door`); one that declares no access rule is refused.
        dependencies=[Depends(route_door.check_declared)],
    )
    app.state.route_door = route_door
    app.add_exception_handler(UndeclaredRoute, route_door.refuse_undeclared)
    fhir_base = settings.public_url + "/fhir"

    @app.exception_handler(StarletteHTTPException)
    async def unrouted(request: Request, error: StarletteHTTPException) -> Response:
        """A path no route matches (a FHIR path holding a line break, say): under /fhir the
        answer is an OperationOutcome, as from the door."""
        if not request.url.path.startswith("/fhir"):
            return JSONResponse({"detail": error.detail}, error.status_code, error.headers)
        _status, outcome, _headers = from_error(NotFound("no FHIR interaction has this path"))
        return Response(json.dumps(outcome), error.status_code, media_type="application/fhir+json")

    # Innermost: it reads the route Starlette's router matched (the metrics' route template).
    app.add_middleware(RequestInstruments, instruments=instruments)
    app.add_middleware(TokensNotInUrls)
    app.add_middleware(SecurityHeaders, strict_transport=settings.environment != "dev")
    # Before anything reads the client's address or the transport's headers.
    app.add_middleware(TransportIdentity, trusted_proxies=settings.trusted_proxies)

    async def fhir(request: Request) -> Response:
        path = str(request.path_params.get("path", ""))
        kept = request.scope.get(QUERY_KEPT)
        params = tuple(request.query_params.multi_items()) if kept is None else kept
        body, body_error = b"", None
        try:
            body = await read_body(request, body_limit(request.method, path, settings))
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
        fmt = negotiate(params, headers.get("accept", ""))
        prefer = headers.get("prefer")
        preference = Preference.of(prefer) if prefer else None

        def from_xml(body: bytes) -> bytes:
            return xml_to_json(body, max_depth=settings.max_json_depth)

        def exchange(body: bytes, body_error: CareVaultError | None) -> Response:
            """The door, the answer out: one thread, off the event loop. An XML body is mapped
            to JSON by the door, once the caller is authenticated (the mapping costs seconds
            per megabyte)."""
            xml = bool(body) and media_type(headers.get("content-type", "")) in XML_TYPES
            response = door.handle(
                request.method,
                path,
                params=params,
                body=body,
                headers=headers,
                client=client,
                tls_client=certificate.serial if certificate else "",
                base_url=fhir_base,
                body_error=body_error,
                decode=from_xml if xml and body_error is None else None,
            )
            return render(response, fmt, preference, request.method)

        return await run_in_threadpool(exchange, body, body_error)

    # Plain Starlette routes: the door parses everything itself, so FastAPI's per-request
    # parameter resolution would be pure cost. Every method goes to the door, which answers
    # those it does not serve (TRACE, OPTIONS, …) with 405 and records them like any request.
    door_endpoint = access(FHIR_DOOR)(EveryMethod(fhir))
    fhir_routes = tuple(
        Route(path, door_endpoint, include_in_schema=False)
        for path in ("/fhir/{path:path}", "/fhir")
    )
    app.router.routes.extend(fhir_routes)
    app.fhir_routes = fhir_routes  # and their own lane (`CareVaultApp`)
    # Routes are matched in the order they are added: the FHIR API, by far the busiest, first.
    app.include_router(
        audit_router(log, audit_limiter or TokenBucketLimiter(settings.rate_limit_per_minute))
    )
    app.include_router(instruments_router(instruments))
    for router in routers:
        app.include_router(router)

    app.mount("/static", access(PUBLIC)(StaticFiles(directory=STATIC)), name="static")

    @app.get(
        "/favicon.ico",
        response_class=Response,
        status_code=308,
        responses={308: redirect("the icon is a static file")},
    )
    @access(PUBLIC)
    async def favicon() -> Response:
        return Response(status_code=308, headers={"Location": "/static/favicon.svg"})

    @app.get("/health", responses={200: answer("the server answers", schema=HEALTH)})
    @access(PUBLIC)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    document: dict[str, Any] = {}

    @app.get("/openapi.json", responses={200: answer("this document", schema={"type": "object"})})
    @access(PUBLIC)
    async def openapi() -> JSONResponse:
        """This API's OpenAPI 3.1 description, generated from the routes and the FHIR door's
        registry (`carevault.api.openapi`); public, like the CapabilityStatement."""
        if not document:
            document.update(openapi_document(app, door, settings.max_page_size))
        return JSONResponse(document)

    @app.get("/", response_class=HTMLResponse, responses={200: html("the home page")})
    @access(PUBLIC)
    async def home(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            request,
            "home.html",
            {"version": __version__, "environment": settings.environment, "fhir_base": fhir_base},
            headers=NO_STORE,  # as every page: no HTML answer is cached
        )

    return app
