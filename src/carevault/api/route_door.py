"""The one door of every HTTP route outside ``/fhir``: each route declares its access rule, and
a route that declares none is refused (fail closed).

FHIR requests have their own door (`carevault.api.fhir.door`); everything else - OAuth, the
audit log's API, the PKI's documents, the portal's pages, and whatever comes next - is declared
here, on the endpoint, in one line beneath the router's decorator::

    @router.get("/audit/entries", ...)
    @access(SECURITY_OFFICER, Audited("operator", "security", "R", "audit-entries"))
    def entries(request: Request) -> Response:
        admitted(request).note("0", {"result": "..."})   # what the door records
        ...

Admission is authentication (the rule's authenticator, if it has one) → decision (no caller:
refused, and recorded) → the handler → one audit record (what the handler noted, built here,
durable before the response leaves; 503 in the route's error style if it cannot be). Errors of
the domain's hierarchy raised by a handler are answered in one place (`carevault.api.errors`),
and so is a lost database met by the authenticator or the handler (a failover:
`carevault.services.availability`), as `Unavailable`; any other exception is an incident.

`access` wraps the endpoint itself (FastAPI builds a route from its endpoint, however the
router is included), and `RouteDoor.check_declared` is a dependency of the whole application
(`create_app`): a route whose endpoint declares no rule answers 403 to every request, before
its handler runs, and the refusal is recorded as ``undeclared-route``.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Route

from carevault.api.errors import ErrorStyle, error_response
from carevault.api.instruments import current_request_id
from carevault.api.transport import client_certificate
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import (
    SEND_AGAIN,
    CareVaultError,
    NotAuthenticated,
    NotPermitted,
    Unavailable,
)
from carevault.services.audit_log import AuditLog, AuditUnavailable
from carevault.services.availability import as_unavailable

ACCESS_ATTRIBUTE = "__carevault_access__"
ADMISSION_KEY = "carevault.admission"
_INJECTED = "carevault_door_request"
UNRECORDED = f"the request could not be recorded; nothing was done; {SEND_AGAIN}"


@dataclass(frozen=True)
class AccessRule:
    """Who may call a route, and how its errors are answered.

    ``authenticator`` names one of the door's authenticators (given by `create_app`): the
    door calls it before the handler and refuses the request, recorded, when it finds no
    caller. A rule without one leaves authentication to the service the handler calls (a
    token request authenticates itself) or to nobody (public documents)."""

    name: str
    why: str
    errors: ErrorStyle = ErrorStyle.PLAIN
    authenticator: str | None = None
    refusal: str = ""  # the answer to a request the authenticator finds no caller for
    refused: str = ""  # what the record of that refusal says
    challenge: str | None = None  # the WWW-Authenticate header of that answer


PUBLIC = AccessRule(
    "public",
    "anyone: documents that say nothing about anyone (metadata, keys, the CRL, tree heads, "
    "health, the home page, static files); not recorded",
)
TOKEN_REQUEST = AccessRule(
    "token-request",
    "a client that authenticates itself by the request (a client assertion, a PKCE code, the "
    "token it revokes): the service decides, the handler notes the outcome, the door records",
    errors=ErrorStyle.OAUTH,
)
FORM = AccessRule(
    "form",
    "an anonymous form of the portal (sign-in, enrolment), guarded by its CSRF double-submit "
    "cookie; the view records what it does",
    errors=ErrorStyle.PAGE,  # what a page does not answer itself (a lost database): a page
)
SESSION = AccessRule(
    "session",
    "a portal page or form behind a portal session (`PortalSessions.resolve`) and its CSRF "
    "token; the view records what it shows or does",
    errors=ErrorStyle.PAGE,
)
SECURITY_OFFICER = AccessRule(
    "security-officer",
    "the security officer's bearer token (and, in dev only, the developer's loopback)",
    authenticator="security-officer",
    refusal="this is for the security officer",
    refused="refused: not the security officer",
)
SECURITY_OFFICER_PAGE = AccessRule(
    "security-officer-page",
    "a page of the security officer's workspace: the officer's bearer token or portal session "
    "(the same authenticator as `SECURITY_OFFICER`); the door's refusals are pages",
    errors=ErrorStyle.PAGE,
    authenticator="security-officer",
    refusal="this is for the security officer",
    refused="refused: not the security officer",
)
METRICS = AccessRule(
    "metrics-credential",
    "the operator's monitoring, holding the metrics credential (compared in constant time)",
    authenticator="metrics-credential",
    refusal="the metrics are for the operator's monitoring (metrics credential)",
    refused="refused: no valid metrics credential",
    challenge='Bearer realm="metrics"',
)
PROFESSIONAL = AccessRule(
    "professional",
    "a professional's own SMART access token (their card's, checked as the FHIR gate checks "
    "it) for what is theirs alone: their mailbox; another valid token is refused (403)",
    authenticator="professional",
    refusal="a professional's SMART access token is required",
    refused="refused: no valid access token",
    challenge='Bearer realm="carevault"',
)
FHIR_DOOR = AccessRule(
    "fhir-door",
    "the FHIR door's own routes: `FhirDoor.handle` admits and records every request itself",
)


@dataclass(frozen=True)
class Audited:
    """The fixed fields of the record the door writes for a request on a route."""

    stream: str
    kind: str
    action: str
    interaction: str
    entity_type: str | None = None
    query: bool = False  # record the query string (500 characters at most)


@dataclass(frozen=True)
class Caller:
    """Who the rule's authenticator found."""

    who: str | None
    role: str | None = None
    # Authenticated, but not someone the rule admits (a patient's token on a professional's
    # route): refused with 403 and this reason, and recorded with who it was.
    refused: str | None = None


@dataclass
class _Note:
    outcome: str
    detail: dict[str, str]
    interaction: str | None
    status: int | None


@dataclass
class Admission:
    """A request let in by the door: its rule, its caller (if the rule authenticates), and what
    the handler notes for the one record."""

    rule: AccessRule
    audited: Audited | None
    caller: Caller | None = None
    noted: _Note | None = field(default=None)

    def note(
        self,
        outcome: str,
        detail: dict[str, str],
        *,
        interaction: str | None = None,
        status: int | None = None,
    ) -> None:
        """What the door records of this request, once (``outcome``: FHIR AuditEvent's 0, 4,
        8, 12); ``interaction`` overrides the route's."""
        if self.audited is None:
            raise RuntimeError(f"this route declares no audit record (rule {self.rule.name})")
        if self.noted is not None:
            raise RuntimeError("one audit record per request")
        self.noted = _Note(outcome, detail, interaction, status)


Endpoint = Callable[..., Any]


def access(rule: AccessRule, audited: Audited | None = None) -> Callable[[Endpoint], Endpoint]:
    """Declare the access rule of an endpoint (and the record the door writes for it): the
    endpoint is wrapped so that every request on it passes `RouteDoor.admit` first.

    Written beneath the router's decorator, so that the router registers the wrapper."""

    def declare(endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint) or not inspect.isfunction(endpoint):
            # A mounted application or the FHIR door's endpoint: declared, not wrapped (the
            # FHIR door admits and records itself; static files are public).
            setattr(endpoint, ACCESS_ATTRIBUTE, (rule, audited))
            return endpoint
        return _wrapped(endpoint, rule, audited)

    return declare


def _wrapped(endpoint: Endpoint, rule: AccessRule, audited: Audited | None) -> Endpoint:
    signature = inspect.signature(endpoint, eval_str=True)
    requests = [p.name for p in signature.parameters.values() if p.annotation is Request]
    parameters = list(signature.parameters.values())
    if not requests:
        parameters.append(
            inspect.Parameter(_INJECTED, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    asynchronous = inspect.iscoroutinefunction(endpoint)

    @functools.wraps(endpoint)
    async def admitted_endpoint(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs.pop(_INJECTED) if not requests else kwargs[requests[0]]

        async def handler() -> Any:
            if asynchronous:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)

        door = getattr(request.app.state, "route_door", None)
        if not isinstance(door, RouteDoor):
            # Served by an application that has no door: fail closed.
            return error_response(Unavailable("this route has no door"), rule.errors)
        return await door.admit(request, rule, audited, handler)

    admitted_endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters
    )
    setattr(admitted_endpoint, ACCESS_ATTRIBUTE, (rule, audited))
    return admitted_endpoint


def walk(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route of an application, those of its included routers too (FastAPI keeps an
    included router as one entry that holds the router)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from walk(included.routes)
        else:
            yield route


def declared(route: BaseRoute) -> tuple[AccessRule, Audited | None] | None:
    """The rule a route's endpoint (or mounted application) declares, if any."""
    target = route.endpoint if isinstance(route, Route) else getattr(route, "app", None)
    found = getattr(target, ACCESS_ATTRIBUTE, None)
    return found if isinstance(found, tuple) else None


def admitted(request: Request) -> Admission:
    """The admission of a request on a declared route."""
    found = request.scope.get(ADMISSION_KEY)
    if not isinstance(found, Admission):
        raise RuntimeError("this request did not come through the route door")
    return found


Authenticator = Callable[[Request], Caller | None]


def _domain_error(error: Exception) -> CareVaultError:
    """``error`` as the domain's, or raised again: an incident is the server's to answer."""
    if isinstance(error, CareVaultError):
        return error
    unavailable = as_unavailable(error)
    if unavailable is None:
        raise error
    return unavailable


class UndeclaredRoute(Exception):
    """Raised before the handler of a route that declares no access rule."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"{method} {path} declares no access rule")
        self.method = method
        self.path = path


class RouteDoor:
    """Admits, refuses and records the requests of every non-FHIR route."""

    def __init__(
        self,
        log: AuditLog,
        clock: Callable[[], datetime],
        authenticators: dict[str, Authenticator] | None = None,
    ) -> None:
        self.log = log
        self.clock = clock
        self.authenticators = dict(authenticators or {})

    def check_declared(self, request: Request) -> None:
        """A dependency of every route of the application: refuses one that declares no rule
        (answered by `refuse_undeclared`), before anything of its own runs."""
        if getattr(request.scope.get("endpoint"), ACCESS_ATTRIBUTE, None) is None:
            route = request.scope.get("route")
            raise UndeclaredRoute(request.method, str(getattr(route, "path", request.url.path)))

    async def refuse_undeclared(self, request: Request, error: Exception) -> Response:
        path = error.path if isinstance(error, UndeclaredRoute) else request.url.path
        try:
            await run_in_threadpool(self.record_undeclared, request, path)
        except AuditUnavailable:
            return error_response(Unavailable(UNRECORDED), ErrorStyle.PLAIN)
        return JSONResponse(
            {"error": "this route declares no access rule, so it serves no one"},
            status_code=403,
        )

    async def admit(
        self,
        request: Request,
        rule: AccessRule,
        audited: Audited | None,
        handler: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Authentication → decision → handler → one record, durable before the answer."""
        admission = Admission(rule, audited)
        if rule.authenticator is not None:
            authenticate = self.authenticators.get(rule.authenticator)
            try:
                caller = (
                    None if authenticate is None else await run_in_threadpool(authenticate, request)
                )
            except Exception as error:
                return error_response(_domain_error(error), rule.errors)
            if caller is None:
                if audited is not None:
                    admission.note("4", {"result": rule.refused}, status=401)
                refusal = error_response(NotAuthenticated(rule.refusal), rule.errors)
                if rule.challenge is not None:
                    refusal.headers["WWW-Authenticate"] = rule.challenge
                return await self._recorded(request, admission, refusal)
            admission.caller = caller
            if caller.refused is not None:
                if audited is not None:
                    admission.note("4", {"result": f"refused: {caller.refused}"}, status=403)
                refusal = error_response(NotPermitted(caller.refused), rule.errors)
                return await self._recorded(request, admission, refusal)
        request.scope[ADMISSION_KEY] = admission
        try:
            answer = await handler()
        except Exception as error:
            answer = error_response(_domain_error(error), rule.errors)
        return await self._recorded(request, admission, answer)

    async def _recorded(self, request: Request, admission: Admission, answer: Any) -> Any:
        if admission.noted is None:
            return answer
        try:
            await run_in_threadpool(self.record, request, admission)
        except AuditUnavailable:
            return error_response(Unavailable(UNRECORDED), admission.rule.errors)
        return answer

    def record(self, request: Request, admission: Admission) -> None:
        """Append the one record of ``request``; raises `AuditUnavailable`."""
        note, audited = admission.noted, admission.audited
        if note is None or audited is None:
            return
        caller = admission.caller
        detail = dict(note.detail)
        certificate = client_certificate(request)
        if certificate is not None:
            # The transport's verified client certificate: evidence, not identity.
            detail["tls-client"] = certificate.serial
        record = AuditRecord(
            stream=audited.stream,
            recorded=rfc3339_ms(self.clock()),
            kind=audited.kind,
            action=audited.action,
            interaction=note.interaction or audited.interaction,
            outcome=note.outcome,
            agent=Agent(
                who=caller.who if caller else None,
                role=caller.role if caller else None,
                network=request.client.host if request.client else None,
            ),
            entity_type=audited.entity_type,
            query=str(request.query_params)[:500] if audited.query else None,
            status=note.status,
            request_id=current_request_id() or uuid.uuid4().hex,
            detail=detail,
        )
        self.log.append([record])

    def record_undeclared(self, request: Request, path: str) -> None:
        self.log.append(
            [
                AuditRecord(
                    stream="operator",
                    recorded=rfc3339_ms(self.clock()),
                    kind="security",
                    action="E",
                    interaction="undeclared-route",
                    outcome="8",
                    agent=Agent(who=None, network=request.client.host if request.client else None),
                    status=403,
                    request_id=current_request_id() or uuid.uuid4().hex,
                    detail={"method": request.method, "route": path},
                )
            ]
        )
