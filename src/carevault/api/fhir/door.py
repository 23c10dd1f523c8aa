"""The single door of the FHIR API.

Every FHIR interaction, whatever its resource, arrives here as a `FhirRequest` and leaves as a
`FhirResponse`. In between, always in this order:

1. the rate limit of the client;
2. the **gate** (`AccessGate`): who is calling, and the authorization engine's decision on what
   the handler declares the request needs (`ResourceHandler.access_need`) — a handler that
   declares nothing is unreachable (deny by default);
3. the resource handler, found in a registry keyed by resource type, which receives the
   `Admission` (subject, decision, record facts) to filter what it returns;
4. the **recorder** (`AccessRecorder`): one record per request, permitted or refused, with the
   rule path that decided it.

HTTP routing does nothing but build the request and render the response, so a new resource is
a new handler in the registry, and it cannot be reached without passing the gate and the
recorder. The CapabilityStatement is generated from the same registry, so it lists exactly what
is implemented.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from carevault.api.fhir.formats import BundleStream, format_param, media_type
from carevault.api.fhir.outcome import HttpProblem, from_error
from carevault.domain.authorization import (
    Action,
    CareProof,
    Decision,
    DirectoryArea,
    DocumentFacts,
    RecordFacts,
    Subject,
)
from carevault.domain.directory import IdentityDomain
from carevault.domain.errors import (
    SEND_AGAIN,
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    Unavailable,
    UnsupportedMediaType,
)
from carevault.fhirmodel.validate import parse_json

if TYPE_CHECKING:
    from carevault.services.documents import LoadedDocument
    from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


class Interaction(enum.Enum):
    UNKNOWN = "unknown"  # the route could not be parsed; kept so the refusal is recorded
    CAPABILITIES = "capabilities"
    READ = "read"
    VREAD = "vread"
    HISTORY = "history-instance"
    SEARCH = "search-type"
    CREATE = "create"
    UPDATE = "update"
    CONDITIONAL_UPDATE = "conditional-update"
    OPERATION = "operation"
    TRANSACTION = "transaction"  # POST [base] with a transaction Bundle (IHE ITI-65)


@dataclass(frozen=True)
class FhirRequest:
    method: str
    interaction: Interaction
    resource_type: str | None
    resource_id: str | None = None
    version_id: str | None = None
    operation: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    client: str = ""
    # The serial of the client certificate the transport verified (CareVault's own TLS or the
    # trusted proxy's, `carevault.api.transport`), or "": recorded, never used to authenticate.
    tls_client: str = ""
    base_url: str = ""
    # An operation's declared scope letter (`Operation.permission`), set by the door.
    operation_permission: str = ""
    admission: Admission | None = None  # set by the door once the gate has admitted it
    # The parsed body, shared by the copies `replace` makes: the gate's `access_need` and the
    # handler read the same JSON, parsed once (an ITI-65 Bundle can be tens of megabytes).
    _parsed: dict[int, JsonObject] = field(default_factory=dict, compare=False, repr=False)

    def json_body(self, max_depth: int) -> JsonObject:
        """The body as a JSON object (see `parse_json`), parsed once per request."""
        parsed = self._parsed.get(max_depth)
        if parsed is None:
            parsed = self._parsed[max_depth] = parse_json(self.body, max_depth=max_depth)
        return parsed

    def param_names(self) -> set[str]:
        return {name for name, _ in self.params}


@dataclass
class FhirResponse:
    status: int
    body: JsonObject | None
    headers: dict[str, str] = field(default_factory=dict)
    # The patients this response concerns (read, found, written): each gets an audit entry.
    patients: tuple[str, ...] = ()
    # Bytes served as they are (ITI-68 retrieve), with ``media_type``; ``body`` is then None.
    raw: bytes | None = None
    media_type: str | None = None
    # A Bundle written as it is read (the export of a record), in the format the client asked
    # for: ``body`` is then None.
    stream: BundleStream | None = None


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # FHIR search parameter type: string, token, date, reference
    documentation: str
    required: bool = False  # an operation's parameter without which it is refused


@dataclass(frozen=True)
class Operation:
    name: str  # without the '$'
    definition: str  # canonical URL of the OperationDefinition
    instance: bool  # invoked on Type/id rather than on Type
    methods: frozenset[str]
    documentation: str
    # The SMART scope letter (c r u d s) a token needs on the resource type to invoke it; by
    # default "r" for GET and "u" for POST.
    permission: str = ""
    # What the operation takes and gives, for the OpenAPI document (`api/openapi.py`): its
    # query parameters, the resource type of its POST body (None: no body), the resource type
    # of its answer.
    parameters: tuple[SearchParam, ...] = ()
    takes: str | None = None
    gives: str = "Parameters"


class Target(enum.Enum):
    """What a request reaches, for the engine."""

    RECORD = "record"  # one patient's record: ``decide`` over its facts
    DIRECTORY = "directory"  # professionals and organizations: ``decide_directory``
    # Patients' identities: the directory for professionals; for a patient or a
    # representative, their own record (``patient_id``), nothing else.
    DEMOGRAPHICS = "demographics"
    # The audit trail: the security officer's; a patient's own entries (``patient_id``) are a
    # personal request on their record.
    AUDIT_TRAIL = "audit-trail"
    # E-prescriptions: writing one as its prescriber (``decide_prescribing``), taking one as a
    # pharmacist (``decide_dispensing``); a prescription that names its patient is decided on
    # that patient's record (``RECORD``) as well, where it says so.
    PRESCRIBING = "prescribing"
    DISPENSING = "dispensing"


@dataclass(frozen=True)
class AccessNeed:
    """What a request needs of the engine, as its handler declares it."""

    target: Target
    action: Action
    patient_id: str | None = None
    # One document of the record (an e-prescription's Task, say): decided on its own facts,
    # so that its author reads it even without a grant to the record.
    document: DocumentFacts | None = None
    # One stored document (a DocumentReference or its Binary) the handler read, in the gate's
    # transaction, to state the need: the engine decides on its facts (``document`` is then
    # ignored), and the Admission hands it back, typed, so that it is neither read nor
    # decided on twice.
    loaded: LoadedDocument | None = None
    # Which part of the directories a directory request reaches (``Target.DIRECTORY``).
    area: DirectoryArea = DirectoryArea.PROVIDERS
    # A care event's proof found in the request itself (a presence code that is usable now);
    # the gate adds the proof it knows of the caller (a registered admission system).
    care_proof: CareProof | None = None
    # What a refused caller is told instead of the engine's reason, when the request writes to
    # the document it names: the state of a document they may not read is not theirs to learn.
    refusal: str | None = None
    # The request opens the record (opt-in): a record its patient has not opened yet is then
    # decided as a closed one, which only the patient may open, rather than as none.
    opening: bool = False
    # Whose prescriptions a request lists across patients (``Target.PRESCRIBING``: the
    # prescriber's id; ``Target.DISPENSING``: the pharmacy's): the engine admits them alone.
    owner: str | None = None
    # What the audit entry says of the request beyond its route, as its handler read it: an
    # ITI-65 Bundle that replaces documents, a retrieval of an author's signature.
    detail: Mapping[str, str] = field(default_factory=dict)


def reading(request: FhirRequest) -> Action:
    """The engine action of a plain interaction: read, search or write."""
    if request.interaction is Interaction.SEARCH:
        return Action.SEARCH
    if request.interaction in (Interaction.READ, Interaction.VREAD, Interaction.HISTORY):
        return Action.READ
    return Action.WRITE


class ResourceHandler:
    """One resource type's interactions. Subclasses override what they support and declare it
    in ``interactions``, ``search_params``, ``includes`` and ``operations``, and say in
    ``access_need`` what each request needs of the authorization engine."""

    resource_type: str = ""
    profile: str | None = None
    # Further profiles its resources claim, each where it applies (listed after ``profile``).
    more_profiles: tuple[str, ...] = ()
    interactions: frozenset[Interaction] = frozenset()
    search_params: tuple[SearchParam, ...] = ()
    includes: tuple[str, ...] = ()
    operations: tuple[Operation, ...] = ()
    # The CapabilityStatement's ``versioning``: "no-version" for a resource derived on every
    # request (an Endpoint), which has no versions to keep.
    versioning: str = "versioned"

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        """What this request needs of the engine; ``uow`` is the gate's transaction, for a
        handler that must look up which record a resource belongs to."""
        raise NotPermitted(
            f"no access rule is declared for {request.resource_type}: refused by default",
            issue_code="forbidden",
        )

    def read(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def vread(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def history(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def search(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def create(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def update(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def conditional_update(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def operation(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError

    def transaction(self, request: FhirRequest) -> FhirResponse:
        raise NotImplementedError


@dataclass(frozen=True)
class Admission:
    """Why the gate let a request in, and on whose behalf: what the recorder keeps."""

    rule: str
    who: str | None = None  # an identity reference, e.g. Practitioner/<id>
    organization: str | None = None
    client_id: str | None = None  # the authenticated client (a card, a hospital system)
    role: str | None = None
    subject: Subject | None = None
    decision: Decision | None = None  # None only for the public CapabilityStatement
    record: RecordFacts | None = None  # the facts the decision was made on, if a record
    on_behalf_of: str | None = None
    purpose_of_use: str | None = None
    # The need's ``loaded`` document, which ``decision`` was made on (see AccessNeed).
    document: LoadedDocument | None = None
    # An identity source's assigning authority, which bounds the patients it may write.
    identity_domain: IdentityDomain | None = None
    # Said in the request's audit entry: e.g. that a directory change affects access.
    detail: Mapping[str, str] = field(default_factory=dict)


class UnknownPatient(NotFound):
    """A request names its patient by an identifier nobody has. A professional is told so (the
    patients' identities are the directory); a patient's or a representative's app is answered
    exactly as for another person's number (`carevault.api.access.TokenGate`), so that it never
    learns whether a number is in the index."""


class Refusal(NotPermitted):
    """A refusal by the engine, carrying the admission-to-be so the attempt is recorded with
    who tried and the rule that refused them."""

    def __init__(self, message: str, admission: Admission) -> None:
        super().__init__(message, issue_code="forbidden")
        self.admission = admission


NeedOf = Callable[[FhirRequest, "UnitOfWork"], AccessNeed]


class AccessGate(Protocol):
    """Decides, before any handler runs, whether the caller may make this request, asking
    ``need_of`` what the request needs once the caller is authenticated.

    Raises `NotAuthenticated` or `NotPermitted` (`Refusal` when the engine refused) to refuse;
    returns the `Admission`.
    """

    def admit(self, request: FhirRequest, need_of: NeedOf) -> Admission: ...

    def authenticate(self, request: FhirRequest) -> None:
        """Check the caller's credentials only, no decision: before the door decodes a body
        whose decoding costs more than reading it (XML), so that no anonymous caller makes it
        spend that. Raises as `admit` does."""
        ...


# What the HTTP layer gives the door to turn a body in another format into FHIR JSON (XML):
# the JSON bytes, or a CareVaultError for a body that does not decode.
BodyDecoder = Callable[[bytes], bytes]


class AccessScope(Protocol):
    """The recorder's context while a handler runs; ``recorded`` once the handler's own
    transaction has recorded the access (a change is recorded atomically with itself)."""

    recorded: bool

    def __enter__(self) -> AccessScope: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class AccessRecorder(Protocol):
    """Keeps a durable record of every request that reached the door, refused ones included.

    ``record`` runs before the response leaves; if it raises, the door answers 503 and serves
    nothing (fail closed).
    """

    def begin(self, request: FhirRequest, admission: Admission | None) -> AccessScope: ...

    def record(
        self,
        request: FhirRequest,
        response: FhirResponse,
        admission: Admission | None,
        scope: AccessScope | None,
    ) -> None: ...


class RateLimiter(Protocol):
    def check(self, client: str) -> None: ...


_JSON_TYPES = ("application/fhir+json", "application/json")
# The most parameters one request may carry (query string and search form together). Each
# search criterion becomes a condition of the search's SQL, and past a few dozen of them
# PostgreSQL spends seconds planning one query (SQLite refuses it, its expression tree too
# deep): a search that really needs more is not one CareVault serves. The fullest legitimate
# search (ITI-67 with every criterion, a date range and paging) uses 18.
MAX_PARAMETERS = 20
JSON_MEDIA_TYPE = "application/fhir+json"  # what a decoded body is
MAX_PARAMETER_NAME = 100  # the longest FHIR search names (chains, _has) are far shorter
MAX_VALUE_LENGTH = 256  # a parameter's whole value, its comma-separated alternatives included
FORM = "application/x-www-form-urlencoded"
# A JSON body larger than this is parsed by the door once the caller is authenticated, before
# the gate opens its transaction: a handler's `access_need` reads the body (which record an
# ITI-65 Bundle is for), and parsing megabytes there held a database connection for seconds
# (1.2 s for 5 MB). A smaller body is parsed where it is needed, without the extra token check.
PARSED_BEFORE_THE_GATE = 64 * 1024

# RFC 6750 §2.3 (and §2.2, in a form body) is not supported: a token in a URL ends up in
# server and proxy logs and browser histories. Its value is replaced by ``REDACTED`` before
# anything keeps the request, and the request is refused.
BEARER_PARAMETER = "access_token"
REDACTED = "redacted"
# The E-Rezept API's codes travel in the query string (``$accept?ac=…``, ``$close?secret=…``):
# the handlers read them, nothing keeps them (the audit trail, the server's access log).
SECRET_PARAMETERS = frozenset({"ac", "secret"})
BEARER_IN_URL = (
    "an access token is never accepted in the URL or a form (RFC 6750 §2.3): it ends up in "
    "logs and browser histories. Send it in the header 'Authorization: Bearer <token>', and "
    "treat this one as exposed (revoke it at /oauth/revoke)"
)


def carries_url_token(params: tuple[tuple[str, str], ...]) -> bool:
    return any(name.casefold() == BEARER_PARAMETER for name, _ in params)


def without_url_token(params: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``params`` with the value of every ``access_token`` replaced by ``REDACTED``."""
    return tuple(
        (name, REDACTED if name.casefold() == BEARER_PARAMETER else value) for name, value in params
    )


class FhirDoor:
    def __init__(
        self,
        handlers: list[ResourceHandler],
        gate: AccessGate,
        recorder: AccessRecorder,
        limiter: RateLimiter,
        capabilities: Callable[[FhirDoor], JsonObject],
        max_json_depth: int = 32,
    ) -> None:
        self.handlers = {h.resource_type: h for h in handlers}
        self.gate = gate
        self.recorder = recorder
        self.limiter = limiter
        self._capabilities = capabilities
        self.max_json_depth = max_json_depth  # the handlers' (`Settings.max_json_depth`)

    def handle(
        self,
        method: str,
        path: str,
        *,
        params: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        client: str = "",
        tls_client: str = "",
        base_url: str = "",
        body_error: CareVaultError | None = None,
        decode: BodyDecoder | None = None,
    ) -> FhirResponse:
        """Serve one HTTP exchange on ``/fhir/<path>``.

        ``body_error`` carries a refusal the HTTP layer met while reading the body (too large),
        so that it is answered and recorded like every other refusal. ``decode`` turns a body
        in another format (XML) into FHIR JSON, once the caller is authenticated.
        """
        token_in_url = carries_url_token(params)
        if token_in_url:
            params = without_url_token(params)  # so that no record ever holds it
        request = FhirRequest(
            method,
            Interaction.UNKNOWN,
            None,
            params=params,
            body=body,
            headers=headers or {},
            client=client,
            tls_client=tls_client,
            base_url=base_url,
        )
        admission: Admission | None = None
        scope: AccessScope | None = None
        try:
            self.limiter.check(client)
            interaction, kind, resource_id, version_id, operation = parse_route(method, path)
            request = replace(
                request,
                interaction=interaction,
                resource_type=kind,
                resource_id=resource_id,
                version_id=version_id,
                operation=operation,
            )
            if body_error is not None:
                raise body_error
            if token_in_url:
                raise NotAuthenticated(BEARER_IN_URL)
            if len(params) > MAX_PARAMETERS:
                raise InvalidInput(
                    f"the request has {len(params)} parameters; at most {MAX_PARAMETERS} are "
                    "accepted"
                )
            if any(
                len(name) > MAX_PARAMETER_NAME or len(value) > MAX_VALUE_LENGTH
                for name, value in params
            ):
                # Before anything reads them (the gate, a handler): no parameter needs more.
                raise InvalidInput(
                    f"a request parameter's name is longer than {MAX_PARAMETER_NAME} characters "
                    f"or its value longer than {MAX_VALUE_LENGTH}"
                )
            if any("\x00" in name or "\x00" in value for name, value in params):
                # No search matches a NUL byte, and PostgreSQL refuses to compare with one.
                raise InvalidInput("a request parameter holds a NUL character")
            _check_format(request)
            large = method in ("POST", "PUT") and len(request.body) > PARSED_BEFORE_THE_GATE
            if decode is not None or large:
                # Once the rate limit let it through and the caller is authenticated: an XML
                # body costs seconds per megabyte to map, a large JSON body a second or more
                # to parse (found by a review of limits).
                self.gate.authenticate(request)
            if decode is not None:
                request = replace(
                    request,
                    body=decode(request.body),
                    headers={**request.headers, "content-type": JSON_MEDIA_TYPE},
                )
            if large and media_type(request.headers.get("content-type", "")) in _JSON_TYPES:
                request.json_body(self.max_json_depth)  # kept for the gate and the handler
            if operation is not None:
                request = replace(request, operation_permission=self._permission_of(request))
            admission = self.gate.admit(request, self.need_of)
            if admission.decision is None and request.interaction is not Interaction.CAPABILITIES:
                raise NotPermitted("no decision was made on this request", issue_code="forbidden")
            request = replace(request, admission=admission)
            scope = self.recorder.begin(request, admission)
            with scope:
                response = self._dispatch(request)
        except Exception as error:  # every error becomes an OperationOutcome
            if isinstance(error, Refusal):
                admission = error.admission
            response = _error_response(error)
        try:
            self.recorder.record(request, response, admission, scope)
        except Exception as error:  # fail closed: an unrecorded access is not served
            response = _error_response(
                error
                if isinstance(error, CareVaultError)
                else Unavailable(
                    f"the access could not be recorded, so nothing was served; {SEND_AGAIN}"
                )
            )
        return response

    def _dispatch(self, request: FhirRequest) -> FhirResponse:
        if request.interaction is Interaction.CAPABILITIES:
            return FhirResponse(200, self._capabilities(self))
        handler = self.handler_for(request)
        _check_body(request)
        match request.interaction:
            case Interaction.READ:
                return handler.read(request)
            case Interaction.VREAD:
                return handler.vread(request)
            case Interaction.HISTORY:
                return handler.history(request)
            case Interaction.SEARCH:
                _check_search_params(handler, request)
                return handler.search(request)
            case Interaction.CREATE:
                return handler.create(request)
            case Interaction.UPDATE:
                return handler.update(request)
            case Interaction.CONDITIONAL_UPDATE:
                _check_search_params(handler, request)
                return handler.conditional_update(request)
            case Interaction.OPERATION:
                return handler.operation(request)
            case Interaction.TRANSACTION:
                return handler.transaction(request)
        raise HttpProblem(405, "not-supported", "interaction not supported")

    def _permission_of(self, request: FhirRequest) -> str:
        handler = self.handlers.get(request.resource_type or "")
        operations = handler.operations if handler is not None else ()
        return next((o.permission for o in operations if o.name == request.operation), "")

    def need_of(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        """What the request needs of the engine, as its (existing, supporting) handler says."""
        return self.handler_for(request).access_need(request, uow)

    def handler_for(self, request: FhirRequest) -> ResourceHandler:
        assert request.resource_type is not None
        handler = self.handlers.get(request.resource_type)
        if handler is None:
            supported = ", ".join(sorted(self.handlers))
            raise NotFound(
                f"resource type {request.resource_type!r} is not served here; "
                f"supported: {supported}"
            )
        if request.interaction is Interaction.OPERATION:
            known = {(o.name, o.instance) for o in handler.operations}
            if (request.operation, request.resource_id is not None) not in known:
                raise NotFound(
                    f"operation ${request.operation} is not defined on "
                    f"{request.resource_type}" + ("/[id]" if request.resource_id else "")
                )
            operation = next(o for o in handler.operations if o.name == request.operation)
            if request.method not in operation.methods:
                raise HttpProblem(
                    405,
                    "not-supported",
                    f"${operation.name} accepts {', '.join(sorted(operation.methods))}",
                )
        elif request.interaction not in handler.interactions:
            raise HttpProblem(
                405,
                "not-supported",
                f"{request.interaction.value} is not supported on {request.resource_type}",
            )
        return handler


def _error_response(error: BaseException) -> FhirResponse:
    status, outcome, headers = from_error(error)
    return FhirResponse(status, outcome, headers)


def _check_body(request: FhirRequest) -> None:
    if request.method not in ("POST", "PUT"):
        return
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.interaction is Interaction.SEARCH and content_type == FORM:
        return
    if request.interaction is Interaction.OPERATION and not request.body and not content_type:
        return  # an operation invoked without parameters (``POST …/$presence-code``)
    if content_type not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the resource as application/fhir+json (got {content_type or 'no content type'})"
        )


def _check_format(request: FhirRequest) -> None:
    """``_format`` names JSON or XML (`formats`: the HTTP layer converts XML both ways)."""
    for name, value in request.params:
        if name == "_format" and format_param(((name, value),)) is None:
            raise HttpProblem(
                406, "not-supported", "_format takes json or xml (or their FHIR media types)"
            )


COMMON_PARAMS = frozenset({"_count", "_offset", "_format", "_include"})


def _check_search_params(handler: ResourceHandler, request: FhirRequest) -> None:
    known = {p.name for p in handler.search_params}
    for name in request.param_names():
        if name in COMMON_PARAMS or name in known:
            continue
        base = name.split(":", 1)[0]
        message = (
            f"search parameter {name!r} has an unsupported modifier"
            if base in known
            else f"unknown search parameter {name!r} for {handler.resource_type}"
        )
        raise InvalidInput(
            f"{message}; supported: {', '.join(sorted(known | COMMON_PARAMS))}", expression=name
        )


def parse_route(
    method: str, path: str
) -> tuple[Interaction, str | None, str | None, str | None, str | None]:
    """Map ``METHOD /fhir/<path>`` to (interaction, type, id, version, operation)."""
    parts = [p for p in path.split("/") if p]
    bad = HttpProblem(404, "not-found", f"no FHIR endpoint at /fhir/{path}")
    if parts == ["metadata"]:
        if method != "GET":
            raise HttpProblem(405, "not-supported", f"{method} is not allowed on /fhir/metadata")
        return Interaction.CAPABILITIES, None, None, None, None
    if not parts:
        if method != "POST":
            raise HttpProblem(405, "not-supported", f"{method} is not allowed on /fhir")
        return Interaction.TRANSACTION, "Bundle", None, None, None
    if not _TYPE.match(parts[0]):
        raise bad
    kind = parts[0]
    rest = parts[1:]
    if not rest:
        interaction = {
            "GET": Interaction.SEARCH,
            "POST": Interaction.CREATE,
            "PUT": Interaction.CONDITIONAL_UPDATE,
        }.get(method)
        if interaction is None:
            raise HttpProblem(405, "not-supported", f"{method} is not allowed on /fhir/{kind}")
        return interaction, kind, None, None, None
    if rest[0].startswith("$") and len(rest) == 1:
        return Interaction.OPERATION, kind, None, None, rest[0][1:]
    if rest == ["_search"] and method == "POST":
        return Interaction.SEARCH, kind, None, None, None
    resource_id = rest[0]
    if not _ID.match(resource_id):
        raise InvalidInput(f"{resource_id!r} is not a valid resource id")
    if len(rest) == 1:
        interaction = {"GET": Interaction.READ, "PUT": Interaction.UPDATE}.get(method)
        if interaction is None:
            raise HttpProblem(405, "not-supported", f"{method} is not allowed on /fhir/{kind}/[id]")
        return interaction, kind, resource_id, None, None
    if len(rest) == 2 and rest[1].startswith("$"):
        return Interaction.OPERATION, kind, resource_id, None, rest[1][1:]
    if rest[1] == "_history" and method == "GET":
        if len(rest) == 2:
            return Interaction.HISTORY, kind, resource_id, None, None
        if len(rest) == 3:
            return Interaction.VREAD, kind, resource_id, rest[2], None
    raise bad


__all__ = [
    "REDACTED",
    "SECRET_PARAMETERS",
    "AccessGate",
    "AccessNeed",
    "AccessRecorder",
    "CareVaultError",
    "FhirDoor",
    "FhirRequest",
    "FhirResponse",
    "Interaction",
    "Operation",
    "Refusal",
    "ResourceHandler",
    "SearchParam",
    "Target",
    "UnknownPatient",
    "parse_route",
]
