"""The access matrix (issue #12, "Attack ourselves"): every caller × every route, each cell
checked over HTTP against the pure authorization engine.

**Rows come from the registry.** `catalogue` walks the door's handlers (their interactions,
search parameters, ``_include``\\ s and operations, at the level and with the methods each
declares) and the application's non-FHIR routes, and asks `FHIR_ROWS` / `APP_ROWS` for the
expectation row of each; `uncovered` lists what the registry declares and no row expects, so a
new route or operation without an expectation fails the suite.

**The oracle is the engine.** An expectation row says, independently of the handlers, what a
request needs (`Need`: the record, the directory, the audit trail; which action; which
document) and which SMART scope letter; `Oracle.expect` loads the same facts the gate loads
(the token through `authenticate`, the subject through `subject_of`, the record through
`RecordPolicy.facts`, a document's facts from its store) and asks `decide`,
`decide_directory` or `decide_audit_trail`. A permitted cell must answer 2xx; a refused one
401 (no usable token) or 403/404; searches must return exactly what `visible_filter` admits.
Rules the documents service or the identity domain add beyond the engine (only the author
releases a document; an identity source writes only its own patients; a patient's PIXm finds
only their own number) are stated in the row as `beyond`.

Reads run first, on a world that does not change; writes then run each on fresh targets where
a permitted write would use one up, and their expectations are computed from the facts of
that moment.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from carevault.adapters.storage.document_store import DocumentCriteria, DocumentStore
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.api.access import subject_of
from carevault.api.fhir.door import FhirDoor, Target
from carevault.domain.authorization import (
    Action,
    Authority,
    CareProof,
    Confidentiality,
    Decision,
    DirectoryArea,
    DocumentFacts,
    GrantLevel,
    Party,
    RecordFacts,
    Subject,
    SubjectKind,
    decide,
    decide_audit_trail,
    decide_directory,
    visible_filter,
)
from carevault.domain.documents import DocumentMetadata
from carevault.domain.errors import CareVaultError
from carevault.domain.scopes import permits
from carevault.fhirmodel.directory import new_organization
from carevault.fhirmodel.valueset import valueset_url
from carevault.services.authorities import NO_POWERS, Powers, powers_of
from carevault.services.directory import read_patient
from carevault.services.portal_sessions import PortalSessions
from carevault.services.record_policy import Actor, practitioner_subject
from carevault.services.tokens import Caller as TokenCaller
from carevault.services.tokens import authenticate
from carevault.web.portal import SESSION_COOKIE
from support.authorities import presence_code, with_presence
from support.documents import FORMATS, PDF, detached_jws, provide_bundle
from support.matrix_world import (
    CONSULTATION,
    EVENT,
    EVERYTHING,
    IDS_SYSTEM,
    SIGNATURE_FORMAT,
    Caller,
    World,
    bearer,
)

JsonObject = dict[str, Any]

# --- what a row says ------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What a request needs of the engine, as the matrix (not the handler) states it."""

    target: Target
    action: Action
    patient_id: str | None = None
    document_id: str | None = None  # one document, decided on its own facts
    area: DirectoryArea = DirectoryArea.PROVIDERS
    care_proof: CareProof | None = None  # a proof the request itself carries
    # A record's fact that is no stored document but is decided as one (an e-prescription).
    facts: DocumentFacts | None = None
    # Documents a write would create: the documents service decides each one too.
    writes: tuple[DocumentFacts, ...] = ()


@dataclass(frozen=True)
class Call:
    """One HTTP request: ``path`` is under /fhir for FHIR rows, absolute otherwise."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    form: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    fhir: bool = True


@dataclass(frozen=True)
class Expected:
    permit: bool
    statuses: frozenset[int]  # acceptable answers; empty for "any 2xx"
    why: str
    subject: Subject | None = None
    record: RecordFacts | None = None

    def accepts(self, status: int) -> bool:
        if self.statuses:
            return status in self.statuses
        return 200 <= status < 300


DENIED = frozenset({403, 404})
UNAUTHENTICATED = frozenset({401})

Beyond = Callable[["World", Caller, Subject, "Need"], str | None]
Check = Callable[["Oracle", Caller, Expected, Any], list[str]]


@dataclass(frozen=True)
class Row:
    """One route of the matrix: what it is, what it needs, how to call it, what to check."""

    label: str
    key: tuple[str, str]  # what it covers: (resource, interaction) or (path, method)
    scope: tuple[str, str]  # the resource type and letter a SMART scope must grant
    call: Callable[[World, Caller, bool], Call]  # bool: the oracle permits (use fresh targets)
    need: Callable[[World, Caller], Need] | None = None
    writes: bool = False
    beyond: Beyond | None = None  # a refusal beyond the engine (documents service, PIXm…)
    check: Check | None = None
    # Rows outside the engine: what every caller gets, whoever they are…
    fixed: frozenset[int] | None = None
    # …or an expectation of their own (the audit entries, introspection, the portal).
    expect: Callable[[Oracle, World, Caller], Expected] | None = None


# --- the oracle -----------------------------------------------------------------------------


_PERSONAL = (SubjectKind.PATIENT, SubjectKind.REPRESENTATIVE)


class Oracle:
    """Computes each cell's expected answer from the engine and the facts of the moment.

    ``frozen``: the world does not change (the read phase), so tokens, subjects, record facts
    and documents are loaded once each.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.platform = world.platform
        self.frozen = False
        self._callers: dict[str, TokenCaller | None] = {}
        self._facts: dict[str, RecordFacts | None] = {}
        self._documents: dict[str, DocumentMetadata] = {}
        self._record_documents: dict[str, list[DocumentMetadata]] = {}

    def thaw(self) -> None:
        self.frozen = False
        self._callers.clear()
        self._facts.clear()
        self._documents.clear()
        self._record_documents.clear()

    def uow(self) -> SqlUnitOfWork:
        return self.platform.unit_of_work()

    def token_caller(self, uow: SqlUnitOfWork, caller: Caller) -> TokenCaller | None:
        if self.frozen and caller.name in self._callers:
            return self._callers[caller.name]
        found: TokenCaller | None = None
        if caller.token is not None:
            try:
                found = authenticate(uow, self.platform.tokens, caller.token)
            except CareVaultError:
                found = None
        if self.frozen:
            self._callers[caller.name] = found
        return found

    def facts(self, uow: SqlUnitOfWork, patient_id: str) -> RecordFacts | None:
        if self.frozen and patient_id in self._facts:
            return self._facts[patient_id]
        found = self.platform.policy.facts(uow, patient_id, self.now())
        if self.frozen:
            self._facts[patient_id] = found
        return found

    def document(self, uow: SqlUnitOfWork, document_id: str) -> DocumentMetadata:
        if self.frozen and document_id in self._documents:
            return self._documents[document_id]
        stored = DocumentStore(uow.directory.connection).get(document_id)
        assert stored is not None, document_id
        if self.frozen:
            self._documents[document_id] = stored.metadata
        return stored.metadata

    def record_documents(self, patient_id: str) -> list[DocumentMetadata]:
        """Every document of a record, as stored (the search oracle's universe)."""
        if self.frozen and patient_id in self._record_documents:
            return self._record_documents[patient_id]
        with self.uow() as uow:
            _total, found = DocumentStore(uow.directory.connection).search(
                patient_id, EVERYTHING, DocumentCriteria(), offset=0, count=10_000)
        documents = [stored.metadata for stored in found]
        if self.frozen:
            self._record_documents[patient_id] = documents
        return documents

    def now(self) -> datetime:
        return self.platform.policy.clock()

    def subject(self, uow: SqlUnitOfWork, caller: Caller, found: TokenCaller,
                scope: tuple[str, str]) -> tuple[Subject, Powers]:
        subject = subject_of(uow, found, identity_valid=permits(found.scopes, *scope))
        if caller.assistant:
            # docs/authorization.md: an assistant has no mandate link in the directory yet, so
            # the engine sees an assistant without a mandator (rule 1, identity-assistant).
            subject = replace(subject, kind=SubjectKind.ASSISTANT, mandator=None)
        powers = NO_POWERS
        if found.acting_system is not None and found.organization is not None:
            powers = powers_of(uow, found.organization.removeprefix("Organization/"))
        return replace(subject, authorities=powers.authorities), powers

    def expect(self, row: Row, caller: Caller) -> Expected:
        if row.fixed is not None:
            return Expected(all(200 <= s < 300 for s in row.fixed), row.fixed, "fixed")
        if row.expect is not None:
            return row.expect(self, self.world, caller)
        assert row.need is not None
        if caller.token is None:
            return Expected(False, UNAUTHENTICATED, "no token")
        with self.uow() as uow:
            found = self.token_caller(uow, caller)
            if found is None:
                return Expected(False, UNAUTHENTICATED, "the token is refused")
            subject, _powers = self.subject(uow, caller, found, row.scope)
            need = row.need(self.world, caller)
            proofs = self.platform.settings.care_event_proofs
            if need.action is Action.CARE_EVENT:
                proof = None
                if Authority.ADMISSION_SYSTEM in subject.authorities and (
                        CareProof.ADMISSION_SYSTEM in proofs):
                    proof = CareProof.ADMISSION_SYSTEM
                elif need.care_proof in proofs:
                    proof = need.care_proof
                subject = replace(subject, care_proof=proof)
            decision, record = self._decide(uow, subject, found, need)
            if decision is None:
                return Expected(False, DENIED, "the token was issued for another patient's "
                                "record (SMART patient context)", subject, record)
            if decision.permit:
                for created in need.writes:
                    written = decide(subject, Action.WRITE, record, replace(
                        created, author_id=_author_of(subject, record)), self.now(),
                        self.platform.policy.matrix)
                    if not written.permit:
                        decision = written
                        break
        if not decision.permit:
            return Expected(False, DENIED, decision.explain(), subject, record)
        if row.beyond is not None:
            refused = row.beyond(self.world, caller, subject, need)
            if refused is not None:
                return Expected(False, DENIED, refused, subject, record)
        return Expected(True, frozenset(), decision.explain(), subject, record)

    def _decide(self, uow: SqlUnitOfWork, subject: Subject, found: TokenCaller,
                need: Need) -> tuple[Decision | None, RecordFacts | None]:
        """The engine on the need, as the policy states it (docs/authorization.md); None for
        a representative's token used on another record than the one it was issued for."""
        personal = subject.kind in _PERSONAL
        action = need.action
        if need.target is Target.DIRECTORY:
            return decide_directory(subject, action, need.area), None
        if need.target is Target.DEMOGRAPHICS and not personal:
            # Identities are the directory for everyone but patients and representatives.
            return decide_directory(subject, action, DirectoryArea.IDENTITIES), None
        if need.target is Target.AUDIT_TRAIL:
            if subject.kind is SubjectKind.SECURITY_OFFICER or need.patient_id is None:
                return decide_audit_trail(subject), None
            action = Action.PERSONAL  # a patient's own history
        patient_id = need.patient_id
        if patient_id is None and personal:
            patient_id = found.patient  # their own record: the token's context
        if patient_id is None:
            return decide(subject, action, None, None, self.now(),
                          self.platform.policy.matrix), None
        record = self.facts(uow, patient_id)
        if subject.kind is SubjectKind.REPRESENTATIVE and patient_id != found.patient:
            return None, record  # the token reaches the record it was issued for
        document = need.facts
        if need.document_id is not None:
            metadata = self.document(uow, need.document_id)
            document = metadata.facts()
        return decide(subject, action, record, document, self.now(),
                      self.platform.policy.matrix), record


def _author_of(subject: Subject, record: RecordFacts | None) -> str:
    if subject.kind in _PERSONAL and record is not None:
        return record.patient_id
    return subject.id


# --- running it -----------------------------------------------------------------------------


@dataclass
class Cell:
    row: str
    caller: str
    expected: Expected
    status: int
    problems: list[str]
    total: int | None = None  # a searchset's total

    @property
    def disagrees(self) -> bool:
        return bool(self.problems)

    def __str__(self) -> str:
        verdict = "permit" if self.expected.permit else "deny"
        return (f"{self.row} × {self.caller}: engine says {verdict} ({self.expected.why}); "
                f"HTTP {self.status}; {'; '.join(self.problems)}")


@dataclass
class Outcome:
    cells: list[Cell]
    seconds: float

    @property
    def disagreements(self) -> list[Cell]:
        return [c for c in self.cells if c.disagrees]

    def summary(self) -> str:
        callers = {c.caller for c in self.cells}
        rows = {c.row for c in self.cells}
        permits = sum(c.expected.permit for c in self.cells)
        statuses = Counter(c.status for c in self.cells)
        by_status = " ".join(f"{s}×{n}" for s, n in sorted(statuses.items()))
        return (f"access matrix: {len(callers)} callers × {len(rows)} routes = "
                f"{len(self.cells)} cells ({permits} permitted, {len(self.cells) - permits} "
                f"refused or redirected; HTTP {by_status}); "
                f"{len(self.disagreements)} disagreements; {self.seconds:.1f} s")


# The summaries of the runs of this session, printed at its end (tests/security/conftest.py).
SUMMARIES: list[str] = []


class Clients:
    """One HTTP client per caller (its own address, as a real client has): per-address limits
    such as the enrolment form's are then each caller's own. They share one event loop in one
    thread (``portal``), as a server's requests do, where a TestClient outside ``with`` starts
    a thread and a loop for each request (a millisecond of the matrix's eight thousand cells)."""

    def __init__(self, app: Any, portal: BlockingPortal) -> None:
        self.app = app
        self.portal = portal
        self._clients: dict[str, TestClient] = {}

    def __call__(self, caller: Caller) -> TestClient:
        if caller.name not in self._clients:
            host = f"198.51.100.{40 + len(self._clients)}"
            client = TestClient(
                self.app, base_url="http://127.0.0.1:8000", client=(host, 4000),
                follow_redirects=False, raise_server_exceptions=False)
            client.portal = self.portal  # the app's lifespan is not run, as before
            self._clients[caller.name] = client
        return self._clients[caller.name]


def run_matrix(world: World, app: Any, rows: list[Row],
               callers: list[Caller] | None = None) -> Outcome:
    """Every row × every caller over HTTP on ``app``, reads first, each against the oracle."""
    started = time.monotonic()
    world.mint_all()
    world.sessions = open_sessions(world)
    callers = callers if callers is not None else list(world.callers.values())
    oracle = Oracle(world)
    cells: list[Cell] = []
    minted = time.monotonic()
    with start_blocking_portal() as portal:
        clients = Clients(app, portal)
        for writes in (False, True):
            oracle.frozen = not writes
            for row in (r for r in rows if r.writes is writes):
                if time.monotonic() - minted > TOKEN_REFRESH_SECONDS:
                    # Tokens live five minutes; a slow machine gets fresh ones, and the oracle
                    # forgets the callers it authenticated with the old ones.
                    world.mint_all()
                    oracle.thaw()
                    oracle.frozen = not writes
                    minted = time.monotonic()
                for caller in callers:
                    cells.append(_cell(world, oracle, clients(caller), row, caller))
            oracle.thaw()
    return Outcome(cells, time.monotonic() - started)


TOKEN_REFRESH_SECONDS = 180


def _cell(world: World, oracle: Oracle, http: TestClient, row: Row, caller: Caller) -> Cell:
    expected = oracle.expect(row, caller)
    call = row.call(world, caller, expected.permit)
    headers = {**bearer(caller.token), **call.headers}
    url = f"/fhir/{call.path}".rstrip("/") if call.fhir else call.path
    if call.form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    http.cookies.clear()
    for name, value in call.cookies.items():
        http.cookies.set(name, value)
    response = http.request(call.method, url, params=call.params or None, headers=headers,
                            json=call.json, data=call.form)
    problems: list[str] = []
    if not expected.accepts(response.status_code):
        wanted = ("2xx" if not expected.statuses
                  else "/".join(str(s) for s in sorted(expected.statuses)))
        problems.append(f"expected {wanted}: {response.text[:200]}")
    elif expected.permit and row.check is not None:
        problems += row.check(oracle, caller, expected, response)
    if response.headers.get("content-type", "").startswith("text/html") and \
            response.headers.get("cache-control") != "no-store":
        # A page names a person, their documents or who looked at them: a shared browser
        # must not keep it (every page, every caller, whatever the answer).
        kept = response.headers.get("cache-control")
        problems.append(f"an HTML answer that may be cached: {kept}")
    total = None
    if response.headers.get("content-type", "").startswith("application/fhir+json"):
        body = response.json()
        if body.get("type") == "searchset":
            total = body.get("total")
    return Cell(row.label, caller.name, expected, response.status_code, problems, total)


# --- the registry and the rows ---------------------------------------------------------------


def declared(door: FhirDoor) -> set[tuple[str, str]]:
    """What the FHIR registry declares: (resource, what) for every interaction, search
    parameter, _include and operation (at its level, with each method)."""
    keys = {("metadata", "capabilities")}
    for kind, handler in door.handlers.items():
        keys |= {(kind, i.value) for i in handler.interactions}
        keys |= {(kind, f"search:{p.name}") for p in handler.search_params}
        keys |= {(kind, f"_include:{spec}") for spec in handler.includes}
        for operation in handler.operations:
            level = "instance" if operation.instance else "type"
            keys |= {(kind, f"${operation.name}@{level}:{m}") for m in operation.methods}
    return keys


def app_routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """What the application serves outside the door's registry: (path, method); HEAD is
    Starlette's own twin of GET, a mount is (path, "MOUNT"). Included routers are walked
    (FastAPI keeps them as one entry holding the router since 0.16x)."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            keys |= app_routes(included.routes, prefix + str(getattr(context, "prefix", "")))
        elif isinstance(route, Mount):
            keys.add((prefix + route.path, "MOUNT"))
        elif isinstance(route, Route):  # APIRoute is one
            if route.methods is None:  # an ASGI endpoint that takes every method (the door)
                keys.add((prefix + route.path, "*"))
            keys |= {(prefix + route.path, m) for m in route.methods or () if m != "HEAD"}
    return keys


RowFactory = Callable[[World], list[Row]]
FHIR_ROWS: dict[tuple[str, str], RowFactory] = {}
APP_ROWS: dict[tuple[str, str], RowFactory] = {}


def fhir_row(resource: str, what: str) -> Callable[[RowFactory], RowFactory]:
    def register(factory: RowFactory) -> RowFactory:
        assert (resource, what) not in FHIR_ROWS, (resource, what)
        FHIR_ROWS[(resource, what)] = factory
        return factory
    return register


def app_row(path: str, method: str) -> Callable[[RowFactory], RowFactory]:
    def register(factory: RowFactory) -> RowFactory:
        assert (path, method) not in APP_ROWS, (path, method)
        APP_ROWS[(path, method)] = factory
        return factory
    return register


def uncovered(door: FhirDoor, routes: list[BaseRoute]) -> tuple[set[Any], set[Any]]:
    """(declared without a row, rows for nothing declared), FHIR and application keys."""
    fhir, app = declared(door), app_routes(routes)
    missing = (fhir - set(FHIR_ROWS)) | (app - set(APP_ROWS))
    stale = (set(FHIR_ROWS) - fhir) | (set(APP_ROWS) - app)
    return missing, stale


def catalogue(world: World, door: FhirDoor, routes: list[BaseRoute],
              resources: set[str] | None = None, *, app: bool = True) -> list[Row]:
    """The rows of everything the registry and the application declare (and have a row)."""
    rows: list[Row] = []
    for key in sorted(declared(door)):
        if key in FHIR_ROWS and (resources is None or key[0] in resources):
            rows += FHIR_ROWS[key](world)
    if app:
        for key in sorted(app_routes(routes)):
            if key in APP_ROWS:
                rows += APP_ROWS[key](world)
    return rows


# --- helpers for the rows ----------------------------------------------------------------------


def _get(path: str, **params: str) -> Callable[[World, Caller, bool], Call]:
    return lambda _w, _c, _p: Call("GET", path, tuple(params.items()))


def _post_json(path: str, body: JsonObject) -> Callable[[World, Caller, bool], Call]:
    return lambda _w, _c, _p: Call("POST", path, json=body)


def _post_search(kind: str, **params: str) -> Callable[[World, Caller, bool], Call]:
    return lambda _w, _c, _p: Call("POST", f"{kind}/_search", form=params)


def _need(target: Target, action: Action, patient: str | None = None,
          document: str | None = None,
          area: DirectoryArea = DirectoryArea.PROVIDERS) -> Callable[[World, Caller], Need]:
    return lambda _w, _c: Need(target, action, patient, document, area)


def _entries(response: Any) -> list[JsonObject]:
    return [e["resource"] for e in response.json().get("entry", [])]


def _practitioner(world: World, name: str) -> str:
    found = world.caller(name).practitioner_id
    assert found is not None
    return found


def _own_record(expected: Expected) -> str | None:
    return expected.record.patient_id if expected.record is not None else None


def _only_own_patients(oracle: Oracle, caller: Caller, expected: Expected,
                       response: Any) -> list[str]:
    """A patient's or representative's identity search finds their own record only."""
    if expected.subject is None or expected.subject.kind not in _PERSONAL:
        return []
    own = _own_record(expected)
    found = {r["id"] for r in _entries(response) if r.get("resourceType") == "Patient"}
    return [f"found other patients {sorted(found - {own})}"] if found - {own} else []


def _concerning(reference: Callable[[JsonObject], str | None]) -> Check:
    """Every resource found belongs to the record the engine decided on."""
    def check(oracle: Oracle, caller: Caller, expected: Expected, response: Any) -> list[str]:
        own = _own_record(expected)
        if own is None:
            return []
        stray = [r.get("id") for r in _entries(response) if reference(r) != f"Patient/{own}"]
        return [f"resources of another record: {stray}"] if stray else []
    return check


def _ref(*path: str) -> Callable[[JsonObject], str | None]:
    def get(resource: JsonObject) -> str | None:
        value: Any = resource
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        return value if isinstance(value, str) else None
    return get


def _audit_concerning(oracle: Oracle, caller: Caller, expected: Expected,
                      response: Any) -> list[str]:
    """A patient's audit search lists the accesses to their own record only."""
    if expected.subject is None or expected.subject.kind not in _PERSONAL:
        return []
    own = f"Patient/{_own_record(expected)}"
    stray = [r.get("id") for r in _entries(response)
             if own not in {e.get("what", {}).get("reference") for e in r.get("entity", [])}]
    return [f"audit events of another record: {stray}"] if stray else []


def _visible(oracle: Oracle, expected: Expected) -> Callable[[DocumentMetadata], bool]:
    """The engine's search filter for the subject and record the cell was decided on."""
    assert expected.subject is not None
    admitted = visible_filter(expected.subject, expected.record, oracle.now(),
                              oracle.platform.policy.matrix)
    return lambda metadata: admitted.matches(metadata.facts())


Criterion = Callable[[DocumentMetadata, dict[str, DocumentMetadata]], bool]


def _documents_found(criterion: Criterion) -> Check:
    """Exactly the record's documents that match the criterion and that the engine's
    `visible_filter` admits, and a total that counts only those."""
    def check(oracle: Oracle, caller: Caller, expected: Expected, response: Any) -> list[str]:
        own = _own_record(expected)
        assert own is not None
        universe = oracle.record_documents(own)
        by_id = {m.id: m for m in universe}
        admits = _visible(oracle, expected)
        wanted = {m.id for m in universe if criterion(m, by_id) and admits(m)}
        body = response.json()
        found = {r["id"] for r in _entries(response)}
        problems = []
        if found != wanted:
            problems.append(f"found {len(found)} documents, the engine admits {len(wanted)}: "
                            f"extra {sorted(found - wanted)}, missing {sorted(wanted - found)}")
        if body.get("total") != len(wanted):
            problems.append(f"total {body.get('total')}, the engine admits {len(wanted)}")
        return problems
    return check


def _lists_visible(oracle: Oracle, caller: Caller, expected: Expected,
                   response: Any) -> list[str]:
    """A SubmissionSet lists only the documents the engine admits."""
    admits = _visible(oracle, expected)
    body = response.json()
    lists = _entries(response) if body.get("resourceType") == "Bundle" else [body]
    problems = []
    with oracle.uow() as uow:
        store = DocumentStore(uow.directory.connection)
        for listed in lists:
            stored = store.submission_set(listed["id"])
            assert stored is not None
            wanted = {i for i in stored["document_ids"]
                      if (found := store.get(i)) is not None and admits(found.metadata)}
            shown = {e["item"]["reference"].rsplit("/", 1)[-1] for e in listed.get("entry", [])}
            if shown != wanted:
                problems.append(f"List/{listed['id']} shows {sorted(shown)}, "
                                f"the engine admits {sorted(wanted)}")
    return problems


# --- FHIR rows: the directories ----------------------------------------------------------------


def _directory_reads(kind: str, ident: Callable[[World], str]) -> None:
    for what, path in (("read", "{kind}/{id}"), ("vread", "{kind}/{id}/_history/1"),
                       ("history-instance", "{kind}/{id}/_history")):
        def factory(world: World, what: str = what, path: str = path) -> list[Row]:
            target = ident(world)
            if kind == "Patient":
                need = _need(Target.DEMOGRAPHICS, Action.READ, target)
            else:
                need = _need(Target.DIRECTORY, Action.READ)
            return [Row(f"{kind} {what}", (kind, what), (kind, "r"),
                        _get(path.format(kind=kind, id=target)), need)]
        fhir_row(kind, what)(factory)


def _searches(kind: str, values: Callable[[World], dict[str, str]], need: Callable[
        [World, str], Callable[[World, Caller], Need]], check: Check | None = None,
        primary: str = "") -> None:
    """A row per declared search parameter (its value from ``values``), and POST _search."""

    def each(name: str) -> None:
        def factory(world: World) -> list[Row]:
            value = values(world)[name]
            params = {name: value} if "=" not in value else dict(
                p.split("=", 1) for p in value.split("&"))
            return [Row(f"{kind} search {name}", (kind, f"search:{name}"), (kind, "s"),
                        lambda _w, _c, _p: Call("GET", kind, tuple(params.items())),
                        need(world, name), check=check)]
        fhir_row(kind, f"search:{name}")(factory)

    for name in _SEARCH_PARAMS[kind]:
        each(name)

    def posted(world: World) -> list[Row]:
        value = values(world)[primary]
        return [Row(f"{kind} search (POST _search)", (kind, "search-type"), (kind, "s"),
                    _post_search(kind, **{primary: value}), need(world, primary), check=check)]
    fhir_row(kind, "search-type")(posted)


# The search parameters each resource declares; a row needs a value for each (a new
# parameter without one leaves its registry key uncovered).
_SEARCH_PARAMS = {
    "Patient": ["_id", "active", "family", "given", "name", "birthdate", "gender",
                "identifier", "address-postalcode"],
    "Practitioner": ["_id", "active", "family", "given", "name", "identifier"],
    "PractitionerRole": ["_id", "active", "practitioner", "organization", "role", "specialty"],
    "Organization": ["_id", "active", "name", "identifier"],
}


def _patient_values(world: World) -> dict[str, str]:
    systems = world.platform.directory.systems
    return {"_id": world.patient_id, "active": "true", "family": world.patient_family,
            "given": "Zoé", "name": world.patient_family[:6],
            "birthdate": world.patient_birth.isoformat(), "gender": "female",
            "identifier": f"{systems.national}|{world.patient_national_id}",
            "address-postalcode": "L-1210"}


_directory_reads("Patient", lambda w: w.patient_id)
_searches("Patient", _patient_values,
          lambda _w, _n: _need(Target.DEMOGRAPHICS, Action.SEARCH), _only_own_patients,
          primary="family")


def _practitioner_values(world: World) -> dict[str, str]:
    systems = world.platform.directory.systems
    return {"_id": _practitioner(world, "normal-grant"), "active": "true",
            "family": "MatrixNormal", "given": "Theo", "name": "MatrixNormal",
            "identifier": f"{systems.professional}|HP-MX-NORMAL"}


_directory_reads("Practitioner", lambda w: _practitioner(w, "normal-grant"))
_searches("Practitioner", _practitioner_values,
          lambda _w, _n: _need(Target.DIRECTORY, Action.SEARCH), primary="family")


def _role_values(world: World) -> dict[str, str]:
    return {"_id": world.role_id, "active": "true",
            "practitioner": f"Practitioner/{_practitioner(world, 'normal-grant')}",
            "organization": f"Organization/{world.h1_id}", "role": "physician",
            "specialty": "cardiology"}


_directory_reads("PractitionerRole", lambda w: w.role_id)
_searches("PractitionerRole", _role_values,
          lambda _w, _n: _need(Target.DIRECTORY, Action.SEARCH), primary="practitioner")
for _spec in ("PractitionerRole:practitioner", "PractitionerRole:organization",
              "PractitionerRole:endpoint"):
    def _include(world: World, spec: str = _spec) -> list[Row]:
        practitioner = f"Practitioner/{_practitioner(world, 'normal-grant')}"
        return [Row(f"PractitionerRole _include {spec}", ("PractitionerRole", f"_include:{spec}"),
                    ("PractitionerRole", "s"),
                    _get("PractitionerRole", practitioner=practitioner, _include=spec),
                    _need(Target.DIRECTORY, Action.SEARCH))]
    fhir_row("PractitionerRole", f"_include:{_spec}")(_include)


def _organization_values(world: World) -> dict[str, str]:
    systems = world.platform.directory.systems
    return {"_id": world.h1_id, "active": "true", "name": "Matrix",
            "identifier": f"{systems.organization}|ORG-MX-H1"}


_directory_reads("Organization", lambda w: w.h1_id)
_searches("Organization", _organization_values,
          lambda _w, _n: _need(Target.DIRECTORY, Action.SEARCH), primary="name")


_MAILBOXES: dict[int, str] = {}


def _mailbox(world: World) -> str:
    """The normal-grant physician's secure-messaging Endpoint (an encryption certificate
    enrolled from a CSR), made once."""
    found = _MAILBOXES.get(id(world))
    if found is None:
        from carevault.bootstrap import messaging_context
        from carevault.client.messaging import keygen
        from carevault.services.messaging import issue_encryption_certificate

        practitioner = _practitioner(world, "normal-grant")
        _, csr = keygen("Matrix mailbox")
        with world.platform.unit_of_work() as uow:
            issue_encryption_certificate(
                uow, messaging_context(world.platform.settings), practitioner, csr)
        found = _MAILBOXES[id(world)] = f"msg-{practitioner}"
    return found


def _endpoint_values(world: World) -> dict[str, str]:
    address = f"hp-mx-normal@{world.platform.settings.messaging_domain}"
    return {"_id": _mailbox(world), "identifier": f"urn:ietf:rfc:3986|mailto:{address}",
            "organization": f"Organization/{world.h1_id}", "status": "active",
            "connection-type": "secure-email"}


def _endpoint_read(world: World) -> list[Row]:
    return [Row("Endpoint read", ("Endpoint", "read"), ("Endpoint", "r"),
                _get(f"Endpoint/{_mailbox(world)}"), _need(Target.DIRECTORY, Action.READ))]


fhir_row("Endpoint", "read")(_endpoint_read)
_SEARCH_PARAMS["Endpoint"] = ["_id", "identifier", "organization", "status", "connection-type"]
_searches("Endpoint", _endpoint_values,
          lambda _w, _n: _need(Target.DIRECTORY, Action.SEARCH), primary="_id")


_CARE_TEAMS: dict[int, str] = {}


def _care_team(world: World) -> str:
    """The world's care team (the normal-grant physician in the first hospital), made once."""
    found = _CARE_TEAMS.get(id(world))
    if found is None:
        from carevault.services.professionals import create_care_team
        with world.platform.unit_of_work() as uow:
            found = create_care_team(uow, _team_body(world), world.platform.policy.clock()).id
        _CARE_TEAMS[id(world)] = found
    return found


def _team_body(world: World) -> JsonObject:
    return {"resourceType": "CareTeam", "status": "active", "name": "Matrix ward",
            "managingOrganization": [{"reference": f"Organization/{world.h1_id}"}],
            "participant": [{"member": {
                "reference": f"Practitioner/{_practitioner(world, 'normal-grant')}"}}]}


def _care_team_values(world: World) -> dict[str, str]:
    return {"_id": _care_team(world), "organization": f"Organization/{world.h1_id}",
            "participant": f"Practitioner/{_practitioner(world, 'normal-grant')}"}


_SEARCH_PARAMS["CareTeam"] = ["_id", "participant", "organization"]
_directory_reads("CareTeam", _care_team)
_searches("CareTeam", _care_team_values,
          lambda _w, _n: _need(Target.DIRECTORY, Action.SEARCH), primary="organization")


@fhir_row("CareTeam", "create")
def _care_team_create(world: World) -> list[Row]:
    return [Row("CareTeam create", ("CareTeam", "create"), ("CareTeam", "c"),
                lambda w, _c, _p: Call("POST", "CareTeam", json=_team_body(w)),
                _need(Target.DIRECTORY, Action.WRITE), writes=True)]


@fhir_row("CareTeam", "update")
def _care_team_update(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        from carevault.services.professionals import create_care_team
        with w.platform.unit_of_work() as uow:
            team = create_care_team(uow, _team_body(w), w.platform.policy.clock()).id
        return Call("PUT", f"CareTeam/{team}", json={**_team_body(w), "id": team,
                                                      "status": "inactive"})
    return [Row("CareTeam update", ("CareTeam", "update"), ("CareTeam", "u"), call,
                _need(Target.DIRECTORY, Action.WRITE), writes=True)]


# --- FHIR rows: what professionals record about each other and pass on ----------------------


def _own_practitioner(world: World, caller: Caller) -> str:
    """The practitioner a caller names as themselves: their own, else a physician's."""
    return caller.practitioner_id or _practitioner(world, "normal-grant")


def _not_in_person(world: World, caller: Caller, subject: Subject, need: Need) -> str | None:
    """`decide_mandate`: the practitioner named in the path, in person, with their own card."""
    from carevault.domain.authorization import decide_mandate
    decision = decide_mandate(subject, _own_practitioner(world, caller))
    if not decision.permit:
        return decision.explain()
    if caller.kind == "system":
        return "a system acting for the practitioner is not the practitioner"
    return None


def _mandate_for(world: World, caller: Caller) -> tuple[str, str]:
    """A fresh assistant and a mandate to them in the caller's name (stored directly)."""
    from carevault.domain.mandates import AssistantMandate
    assistant = world.new_practitioner(profession="medical-assistant")["id"]
    now = world.platform.policy.clock()
    mandate = AssistantMandate(f"mx-{world.next()}", _own_practitioner(world, caller),
                               assistant, now, now + timedelta(days=7))
    with world.platform.unit_of_work() as uow:
        uow.directory.add_mandate(mandate, now, "access-matrix")
        uow.commit()
    return assistant, mandate.id


@fhir_row("Practitioner", "$mandate-assistant@instance:POST")
def _mandate_assistant(world: World) -> list[Row]:
    def call(w: World, caller: Caller, _p: bool) -> Call:
        assistant = w.new_practitioner(profession="medical-assistant")["id"]
        end = (w.platform.policy.clock() + timedelta(days=30)).isoformat()
        return Call("POST", f"Practitioner/{_own_practitioner(w, caller)}/$mandate-assistant",
                    json={"resourceType": "Parameters", "parameter": [
                        {"name": "assistant",
                         "valueReference": {"reference": f"Practitioner/{assistant}"}},
                        {"name": "end", "valueDateTime": end}]})
    return [Row("Practitioner/[id] $mandate-assistant",
                ("Practitioner", "$mandate-assistant@instance:POST"), ("Practitioner", "r"),
                call, _need(Target.DIRECTORY, Action.READ), writes=True,
                beyond=_not_in_person)]


@fhir_row("Practitioner", "$end-mandate@instance:POST")
def _end_mandate(world: World) -> list[Row]:
    def call(w: World, caller: Caller, _p: bool) -> Call:
        _assistant, mandate = _mandate_for(w, caller)
        return Call("POST", f"Practitioner/{_own_practitioner(w, caller)}/$end-mandate",
                    json={"resourceType": "Parameters",
                          "parameter": [{"name": "mandate", "valueString": mandate}]})
    return [Row("Practitioner/[id] $end-mandate",
                ("Practitioner", "$end-mandate@instance:POST"), ("Practitioner", "r"),
                call, _need(Target.DIRECTORY, Action.READ), writes=True,
                beyond=_not_in_person)]


@fhir_row("Practitioner", "$mandates@instance:GET")
def _mandates(world: World) -> list[Row]:
    def not_theirs(w: World, caller: Caller, subject: Subject, need: Need) -> str | None:
        if subject.id != _own_practitioner(w, caller):
            return "a practitioner lists their own mandates only"
        return None
    return [Row("Practitioner/[id] $mandates", ("Practitioner", "$mandates@instance:GET"),
                ("Practitioner", "r"),
                lambda w, c, _p: Call("GET", f"Practitioner/{_own_practitioner(w, c)}/$mandates"),
                _need(Target.DIRECTORY, Action.READ), beyond=not_theirs)]


@fhir_row("Patient", "$delegate@instance:POST")
def _delegate(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        colleague = w.new_practitioner()["id"]
        end = (w.platform.policy.clock() + timedelta(days=3)).isoformat()
        return Call("POST", f"Patient/{w.patient_id}/$delegate", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "delegate", "valueReference": {"reference": f"Practitioner/{colleague}"}},
                {"name": "end", "valueDateTime": end}]})

    def not_delegable(w: World, caller: Caller, subject: Subject, need: Need) -> str | None:
        """`CareAccess.delegate`: a practitioner in person, whose access is a grant of their
        own that the patient made delegable (or the referring physician's), on a record that
        allows delegation."""
        now = w.platform.policy.clock()
        with w.platform.unit_of_work() as uow:
            record = w.platform.policy.facts(uow, w.patient_id, now)
        assert record is not None
        decision = decide(subject, Action.READ, record, None, now, w.platform.policy.matrix)
        holds = record.referring_physician_id == subject.id or any(
            g.party_id == subject.id and g.delegable and g.active(now) for g in record.grants)
        if (subject.kind is not SubjectKind.PRACTITIONER or decision.rule != "grant"
                or not holds or caller.kind == "system" or not record.delegation_allowed):
            return "only a practitioner holding a delegable access, in person, delegates it"
        return None
    return [Row("Patient/[id] $delegate", ("Patient", "$delegate@instance:POST"),
                ("Patient", "r"), call, _need(Target.RECORD, Action.READ, world.patient_id),
                writes=True, beyond=not_delegable)]


@fhir_row("Patient", "$end-delegation@instance:POST")
def _end_delegation(world: World) -> list[Row]:
    def call(w: World, _c: Caller, permitted: bool) -> Call:
        delegation = "no-such-delegation"
        if permitted:  # a fresh delegation for whoever manages the record to end
            policy = w.platform.policy
            owner = Actor(Subject(SubjectKind.PATIENT, w.patient_id), f"Patient/{w.patient_id}")
            holder, colleague = w.new_practitioner()["id"], w.new_practitioner()["id"]
            end = policy.clock() + timedelta(days=3)
            policy.allow_delegation(owner, w.patient_id, True)
            policy.grant(owner, w.patient_id, Party.PRACTITIONER, holder, GrantLevel.NORMAL,
                         end=end, delegable=True)
            with w.platform.unit_of_work() as uow:
                subject = practitioner_subject(uow, holder)
            delegation = w.platform.care.delegate(
                Actor(subject, f"Practitioner/{holder}"), w.patient_id, colleague,
                GrantLevel.NORMAL, end).id
        return Call("POST", f"Patient/{w.patient_id}/$end-delegation", json={
            "resourceType": "Parameters",
            "parameter": [{"name": "delegation", "valueString": delegation}]})

    def not_managing(w: World, caller: Caller, subject: Subject, need: Need) -> str | None:
        """`CareAccess.end_delegation`: the delegator (none of the matrix's callers) or
        whoever manages the record."""
        now = w.platform.policy.clock()
        with w.platform.unit_of_work() as uow:
            record = w.platform.policy.facts(uow, w.patient_id, now)
        if not decide(subject, Action.MANAGE, record, None, now,
                      w.platform.policy.matrix).permit:
            return "only the delegator or whoever manages the record ends a delegation"
        return None
    return [Row("Patient/[id] $end-delegation", ("Patient", "$end-delegation@instance:POST"),
                ("Patient", "r"), call, _need(Target.RECORD, Action.READ, world.patient_id),
                writes=True, beyond=not_managing)]


def _directory_write(area: DirectoryArea) -> Callable[[World, Caller], Need]:
    return _need(Target.DIRECTORY, Action.WRITE, area=area)


def _outside_domain(world: World, caller: Caller, subject: Subject, need: Need) -> str | None:
    """An identity source writes only the patients it knows by its own number alone."""
    if Authority.IDENTITY_SOURCE in subject.authorities and (
            subject.kind is not SubjectKind.REGISTRAR):
        return "this identity source writes only the patients of its own assigning authority"
    return None


@fhir_row("Patient", "create")
def _patient_create(world: World) -> list[Row]:
    return [Row("Patient create", ("Patient", "create"), ("Patient", "c"),
                lambda w, _c, _p: Call("POST", "Patient",
                                       json=w.identity_source_patient(register=False)),
                _directory_write(DirectoryArea.IDENTITIES), writes=True)]


@fhir_row("Patient", "update")
def _patient_update(world: World) -> list[Row]:
    def own(w: World, _c: Caller, _p: bool) -> Call:
        patient = w.identity_source_patient()
        return Call("PUT", f"Patient/{patient['id']}",
                    json={**patient, "name": [{"family": "Renamed", "given": ["Matrix"]}]})

    def foreign(w: World, _c: Caller, _p: bool) -> Call:
        with w.platform.unit_of_work() as uow:
            resource = read_patient(uow, w.patient_id).resource
        return Call("PUT", f"Patient/{w.patient_id}", json=resource)

    need = _directory_write(DirectoryArea.IDENTITIES)
    return [Row("Patient update (an identity-source patient)", ("Patient", "update"),
                ("Patient", "u"), own, need, writes=True),
            Row("Patient update (another authority's patient)", ("Patient", "update"),
                ("Patient", "u"), foreign, need, writes=True, beyond=_outside_domain)]


@fhir_row("Patient", "conditional-update")
def _patient_feed(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        resource = w.identity_source_patient(register=False)
        local = next(i["value"] for i in resource["identifier"] if i["system"] == IDS_SYSTEM)
        return Call("PUT", "Patient", (("identifier", f"{IDS_SYSTEM}|{local}"),), json=resource)
    return [Row("Patient conditional update (ITI-104 feed)", ("Patient", "conditional-update"),
                ("Patient", "u"), call, _directory_write(DirectoryArea.IDENTITIES),
                writes=True)]


@fhir_row("Patient", "$merge@type:POST")
def _merge(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        source = w.identity_source_patient()["id"]
        survivor = w.identity_source_patient()["id"]
        return Call("POST", "Patient/$merge", json={"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{survivor}"}},
        ]})
    return [Row("Patient $merge", ("Patient", "$merge@type:POST"), ("Patient", "u"), call,
                _directory_write(DirectoryArea.IDENTITY_LINKS), writes=True)]


@fhir_row("Patient", "$unmerge@instance:POST")
def _unmerge(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        source, _survivor = w.merged_pair()
        return Call("POST", f"Patient/{source}/$unmerge", json={"resourceType": "Parameters"})
    return [Row("Patient/[id] $unmerge", ("Patient", "$unmerge@instance:POST"),
                ("Patient", "u"), call, _directory_write(DirectoryArea.IDENTITY_LINKS),
                writes=True)]


@fhir_row("Patient", "$ihe-pix@type:GET")
def _pix(world: World) -> list[Row]:
    def not_theirs(w: World, caller: Caller, subject: Subject, need: Need) -> str | None:
        if subject.kind in _PERSONAL and caller.patient_id != w.patient_id:
            return "a patient resolves only their own identifiers (404, as an unknown one)"
        return None
    systems = world.platform.directory.systems
    return [Row("Patient $ihe-pix", ("Patient", "$ihe-pix@type:GET"), ("Patient", "r"),
                _get("Patient/$ihe-pix",
                     sourceIdentifier=f"{systems.national}|{world.patient_national_id}"),
                _need(Target.DEMOGRAPHICS, Action.SEARCH), beyond=not_theirs)]


@fhir_row("Patient", "$access-history@instance:GET")
def _access_history(world: World) -> list[Row]:
    return [Row(f"Patient/[id] $access-history ({whose})",
                ("Patient", "$access-history@instance:GET"), ("Patient", "r"),
                _get(f"Patient/{patient}/$access-history"),
                _need(Target.RECORD, Action.PERSONAL, patient))
            for whose, patient in _both(world)]


@fhir_row("Patient", "$explain@instance:GET")
def _explain(world: World) -> list[Row]:
    return [Row("Patient/[id] $explain", ("Patient", "$explain@instance:GET"), ("Patient", "r"),
                _get(f"Patient/{world.patient_id}/$explain",
                     practitioner=_practitioner(world, "normal-grant")),
                _need(Target.AUDIT_TRAIL, Action.READ, world.patient_id))]


@fhir_row("Patient", "$emergency-access@instance:POST")
def _emergency(world: World) -> list[Row]:
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "access matrix: unconscious"}]}
    return [Row("Patient/[id] $emergency-access", ("Patient", "$emergency-access@instance:POST"),
                ("Patient", "r"),  # it asks to read the record
                lambda w, _c, _p: Call("POST", f"Patient/{w.patient_id}/$emergency-access",
                                       json=body),
                _need(Target.RECORD, Action.EMERGENCY, world.patient_id), writes=True)]


@fhir_row("Patient", "$presence-code@instance:POST")
def _presence(world: World) -> list[Row]:
    return [Row("Patient/[id] $presence-code", ("Patient", "$presence-code@instance:POST"),
                ("Patient", "u"),
                lambda w, _c, _p: Call("POST", f"Patient/{w.patient_id}/$presence-code",
                                       json={"resourceType": "Parameters"}),
                _need(Target.RECORD, Action.MANAGE, world.patient_id), writes=True)]


@fhir_row("Patient", "$record-settings@instance:GET")
def _record_settings_read(world: World) -> list[Row]:
    return [Row(f"Patient/[id] $record-settings read ({whose})",
                ("Patient", "$record-settings@instance:GET"), ("Patient", "r"),
                _get(f"Patient/{patient}/$record-settings"),
                _need(Target.RECORD, Action.PERSONAL, patient))
            for whose, patient in _both(world)]


@fhir_row("Patient", "$record-settings@instance:POST")
def _record_settings_change(world: World) -> list[Row]:
    # The default level of new documents set to what it is: a real change, harmless to the
    # other cells.
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "default-confidentiality", "valueCode": "N"}]}
    return [Row(f"Patient/[id] $record-settings change ({whose})",
                ("Patient", "$record-settings@instance:POST"), ("Patient", "u"),
                _post_json(f"Patient/{patient}/$record-settings", body),
                _need(Target.RECORD, Action.MANAGE, patient), writes=True)
            for whose, patient in _both(world)]


@fhir_row("Patient", "$representative@instance:POST")
def _representative_named(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        # A fresh representative's account each time: naming is a create.
        login = f"matrix-{time.monotonic_ns()}@representatives.example"
        w.platform.accounts.add_representative(login, "a matrix representative's phrase 7")
        return Call("POST", f"Patient/{w.patient_id}/$representative", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "action", "valueCode": "name"},
                {"name": "login", "valueString": login},
                {"name": "scope", "valueCode": "read"}]})
    return [Row("Patient/[id] $representative", ("Patient", "$representative@instance:POST"),
                ("Patient", "u"), call, _need(Target.RECORD, Action.MANAGE, world.patient_id),
                writes=True)]


@fhir_row("Patient", "$everything@instance:GET")
def _everything(world: World) -> list[Row]:
    return [Row(f"Patient/[id] $everything ({whose})",
                ("Patient", "$everything@instance:GET"), ("Patient", "r"),
                _get(f"Patient/{patient}/$everything"),
                _need(Target.RECORD, Action.PERSONAL, patient))
            for whose, patient in _both(world)]


@fhir_row("Practitioner", "create")
def _practitioner_create(world: World) -> list[Row]:
    return [Row("Practitioner create", ("Practitioner", "create"), ("Practitioner", "c"),
                lambda w, _c, _p: Call("POST", "Practitioner",
                                       json=w.new_practitioner(register=False)),
                _directory_write(DirectoryArea.PROVIDERS), writes=True)]


@fhir_row("Practitioner", "update")
def _practitioner_update(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        practitioner = w.new_practitioner()
        return Call("PUT", f"Practitioner/{practitioner['id']}",
                    json={**practitioner, "active": False})  # a licence suspended
    return [Row("Practitioner update", ("Practitioner", "update"), ("Practitioner", "u"), call,
                _directory_write(DirectoryArea.PROVIDERS), writes=True)]


@fhir_row("PractitionerRole", "create")
def _role_create(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        practitioner = w.new_practitioner()
        professions = w.platform.directory.professions
        return Call("POST", "PractitionerRole", json={
            "resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": f"Practitioner/{practitioner['id']}"},
            "organization": {"reference": f"Organization/{w.h1_id}"},
            "code": [{"coding": [{"system": professions.profession_system,
                                  "code": "physician"}]}]})
    return [Row("PractitionerRole create", ("PractitionerRole", "create"),
                ("PractitionerRole", "c"), call, _directory_write(DirectoryArea.PROVIDERS),
                writes=True)]


@fhir_row("Organization", "create")
def _organization_create(world: World) -> list[Row]:
    def call(w: World, _c: Caller, _p: bool) -> Call:
        n = w.next()
        return Call("POST", "Organization", json=new_organization(
            w.platform.directory.systems, identifier=f"ORG-SAC-{n}", name=f"Sacrifice {n}"))
    return [Row("Organization create", ("Organization", "create"), ("Organization", "c"), call,
                _directory_write(DirectoryArea.PROVIDERS), writes=True)]


# --- FHIR rows: the audit trail and the terminology -------------------------------------------


def _both(world: World) -> list[tuple[str, str]]:
    """The record under attack, and another patient's."""
    return [("the patient's record", world.patient_id),
            ("another patient's record", world.other_patient_id)]


@fhir_row("AuditEvent", "read")
def _audit_read(world: World) -> list[Row]:
    return [Row("AuditEvent read", ("AuditEvent", "read"), ("AuditEvent", "r"),
                _get("AuditEvent/clinical-0"), _need(Target.AUDIT_TRAIL, Action.READ))]


@fhir_row("AuditEvent", "search:patient")
def _audit_patient(world: World) -> list[Row]:
    return [Row(f"AuditEvent search patient ({whose})", ("AuditEvent", "search:patient"),
                ("AuditEvent", "s"), _get("AuditEvent", patient=f"Patient/{patient}"),
                _need(Target.AUDIT_TRAIL, Action.SEARCH, patient), check=_audit_concerning)
            for whose, patient in _both(world)]


@fhir_row("AuditEvent", "search:agent")
def _audit_agent(world: World) -> list[Row]:
    return [Row("AuditEvent search agent", ("AuditEvent", "search:agent"), ("AuditEvent", "s"),
                _get("AuditEvent", agent=f"Practitioner/{_practitioner(world, 'author')}"),
                _need(Target.AUDIT_TRAIL, Action.SEARCH))]


@fhir_row("AuditEvent", "search:date")
def _audit_date(world: World) -> list[Row]:
    return [Row("AuditEvent search date", ("AuditEvent", "search:date"), ("AuditEvent", "s"),
                _get("AuditEvent", date="ge2000-01-01"),
                _need(Target.AUDIT_TRAIL, Action.SEARCH))]


@fhir_row("AuditEvent", "search-type")
def _audit_posted(world: World) -> list[Row]:
    return [Row("AuditEvent search (POST _search)", ("AuditEvent", "search-type"),
                ("AuditEvent", "s"),
                _post_search("AuditEvent", patient=f"Patient/{world.patient_id}"),
                _need(Target.AUDIT_TRAIL, Action.SEARCH, world.patient_id),
                check=_audit_concerning)]


# --- FHIR rows: the security officer's alerts (DetectedIssue) ---------------------------------


def _fresh_alert(world: World) -> str:
    """A new alert about the world's patient, stored as the detector would store it: each call
    that may change one gets its own (a closed alert refuses every further action)."""
    from carevault.domain.anomaly import StoredAlert

    now = datetime.now(UTC)
    alert_id = f"matrix-{time.monotonic_ns()}"
    with world.platform.unit_of_work() as uow:
        uow.alerts.raise_or_extend(StoredAlert(
            alert_id, alert_id, "vip", 80, "open", None, _practitioner(world, "normal-grant"),
            None, world.patient_id, "access matrix", (0,), now, now, None, None, None, None,
            None, 1))
        uow.commit()
    return alert_id


@fhir_row("DetectedIssue", "read")
def _alert_read(world: World) -> list[Row]:
    return [Row("DetectedIssue read", ("DetectedIssue", "read"), ("DetectedIssue", "r"),
                lambda w, _c, _p: Call("GET", f"DetectedIssue/{_fresh_alert(w)}"),
                _need(Target.AUDIT_TRAIL, Action.READ))]


def _alert_search(name: str, value: str) -> None:
    def factory(world: World) -> list[Row]:
        return [Row(f"DetectedIssue search {name}", ("DetectedIssue", f"search:{name}"),
                    ("DetectedIssue", "s"), _get("DetectedIssue", **{name: value}),
                    _need(Target.AUDIT_TRAIL, Action.READ))]
    fhir_row("DetectedIssue", f"search:{name}")(factory)


for _name, _value in (("status", "open"), ("code", "vip")):
    _alert_search(_name, _value)


@fhir_row("DetectedIssue", "search-type")
def _alert_posted(world: World) -> list[Row]:
    return [Row("DetectedIssue search (POST _search)", ("DetectedIssue", "search-type"),
                ("DetectedIssue", "s"), _post_search("DetectedIssue", status="open"),
                _need(Target.AUDIT_TRAIL, Action.READ))]


def _alert_operation(name: str, **values: str) -> None:
    body = {"resourceType": "Parameters",
            "parameter": [{"name": k, "valueString": v} for k, v in values.items()]}

    def factory(world: World) -> list[Row]:
        key = f"${name}@instance:POST"
        return [Row(f"DetectedIssue/[id] ${name}", ("DetectedIssue", key),
                    ("DetectedIssue", "u"),
                    lambda w, _c, _p: Call("POST", f"DetectedIssue/{_fresh_alert(w)}/${name}",
                                           json=body),
                    _need(Target.AUDIT_TRAIL, Action.WRITE), writes=True)]
    fhir_row("DetectedIssue", f"${name}@instance:POST")(factory)


_alert_operation("acknowledge")
_alert_operation("assign", assignee="matrix investigator")
_alert_operation("close", verdict="false-positive")
_alert_operation("notify-patient")


CLASSCODE = "xds-classcode"


@fhir_row("ValueSet", "read")
def _valueset_read(world: World) -> list[Row]:
    return [Row("ValueSet read", ("ValueSet", "read"), ("ValueSet", "r"),
                _get(f"ValueSet/{CLASSCODE}"), _need(Target.DIRECTORY, Action.READ))]


def _valueset_search(name: str, value: str) -> None:
    def factory(world: World) -> list[Row]:
        return [Row(f"ValueSet search {name}", ("ValueSet", f"search:{name}"), ("ValueSet", "s"),
                    _get("ValueSet", **{name: value}), _need(Target.DIRECTORY, Action.SEARCH))]
    fhir_row("ValueSet", f"search:{name}")(factory)


for _name, _value in (("_id", CLASSCODE), ("url", valueset_url(CLASSCODE)),
                      ("name", "XDS")):
    _valueset_search(_name, _value)


@fhir_row("ValueSet", "search-type")
def _valueset_posted(world: World) -> list[Row]:
    return [Row("ValueSet search (POST _search)", ("ValueSet", "search-type"),
                ("ValueSet", "s"), _post_search("ValueSet", _id=CLASSCODE),
                _need(Target.DIRECTORY, Action.SEARCH))]


@fhir_row("ValueSet", "$expand@type:GET")
def _expand(world: World) -> list[Row]:
    return [Row("ValueSet $expand", ("ValueSet", "$expand@type:GET"), ("ValueSet", "r"),
                _get("ValueSet/$expand", url=valueset_url(CLASSCODE), count="5"),
                _need(Target.DIRECTORY, Action.READ))]


@fhir_row("ValueSet", "$expand@instance:GET")
def _expand_instance(world: World) -> list[Row]:
    return [Row("ValueSet/[id] $expand", ("ValueSet", "$expand@instance:GET"),
                ("ValueSet", "r"), _get(f"ValueSet/{CLASSCODE}/$expand", filter="consult"),
                _need(Target.DIRECTORY, Action.READ))]


@fhir_row("metadata", "capabilities")
def _metadata(world: World) -> list[Row]:
    return [Row("CapabilityStatement (metadata)", ("metadata", "capabilities"), ("", ""),
                _get("metadata"), fixed=frozenset({200}))]


# --- FHIR rows: the patient's say over the record ----------------------------------------------


def _record_search(kind: str, action: Action, check: Check | None = None,
                   extra: Mapping[str, str] | None = None) -> None:
    """``patient`` on both records, the other declared parameters (with ``patient``), and POST
    _search: the record-level search of a resource."""

    def factory(world: World) -> list[Row]:
        return [Row(f"{kind} search patient ({whose})", (kind, "search:patient"), (kind, "s"),
                    _get(kind, patient=f"Patient/{patient}"),
                    _need(Target.RECORD, action, patient), check=check)
                for whose, patient in _both(world)]
    fhir_row(kind, "search:patient")(factory)

    for name, value in (extra or {}).items():
        def other(world: World, name: str = name, value: str = value) -> list[Row]:
            return [Row(f"{kind} search {name}", (kind, f"search:{name}"), (kind, "s"),
                        _get(kind, patient=f"Patient/{world.patient_id}", **{name: value}),
                        _need(Target.RECORD, action, world.patient_id), check=check)]
        fhir_row(kind, f"search:{name}")(other)

    def posted(world: World) -> list[Row]:
        return [Row(f"{kind} search (POST _search)", (kind, "search-type"), (kind, "s"),
                    _post_search(kind, patient=f"Patient/{world.patient_id}"),
                    _need(Target.RECORD, action, world.patient_id), check=check)]
    fhir_row(kind, "search-type")(posted)


_record_search("Consent", Action.PERSONAL, _concerning(_ref("patient", "reference")),
               {"status": "active"})
_record_search("Encounter", Action.SEARCH, _concerning(_ref("subject", "reference")))
_record_search("Communication", Action.PERSONAL, _concerning(_ref("subject", "reference")))


@fhir_row("Consent", "read")
def _consent_read(world: World) -> list[Row]:
    return [Row("Consent read", ("Consent", "read"), ("Consent", "r"),
                _get(f"Consent/{world.consent_id}"),
                _need(Target.RECORD, Action.PERSONAL, world.patient_id))]


def _consent(patient_id: str, practitioner_id: str, status: str = "active") -> JsonObject:
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "provision": {"type": "permit", "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                "reference": {"reference": f"Practitioner/{practitioner_id}"}}],
                "securityLabel": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                    "code": "N"}]}}


@fhir_row("Consent", "create")
def _consent_create(world: World) -> list[Row]:
    return [Row("Consent create (a grant)", ("Consent", "create"), ("Consent", "c"),
                lambda w, _c, _p: Call("POST", "Consent", json=_consent(
                    w.patient_id, w.sacrificial_practitioner_id)),
                _need(Target.RECORD, Action.MANAGE, world.patient_id), writes=True)]


@fhir_row("Consent", "update")
def _consent_update(world: World) -> list[Row]:
    return [Row("Consent update (a grant's level)", ("Consent", "update"), ("Consent", "u"),
                lambda w, _c, _p: Call("PUT", f"Consent/{w.sacrificial_consent_id}", json={
                    **_consent(w.patient_id, w.sacrificial_practitioner_id),
                    "id": w.sacrificial_consent_id}),
                _need(Target.RECORD, Action.MANAGE, world.patient_id), writes=True)]


@fhir_row("Encounter", "read")
def _encounter_read(world: World) -> list[Row]:
    return [Row("Encounter read", ("Encounter", "read"), ("Encounter", "r"),
                _get(f"Encounter/{world.encounter_id}"),
                _need(Target.RECORD, Action.READ, world.patient_id))]


def _encounter(world: World, caller: Caller) -> JsonObject:
    participant = caller.practitioner_id or _practitioner(world, "normal-grant")
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": f"Patient/{world.patient_id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{participant}"}}],
            "period": {"start": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}}


@fhir_row("Encounter", "create")
def _encounter_create(world: World) -> list[Row]:
    unproved = Row("Encounter create (a care event, unproved)", ("Encounter", "create"),
                   ("Encounter", "c"),
                   lambda w, c, _p: Call("POST", "Encounter", json=_encounter(w, c)),
                   lambda w, _c: Need(Target.RECORD, Action.CARE_EVENT, w.patient_id),
                   writes=True)
    proved = Row("Encounter create (a care event with the patient's presence code)",
                 ("Encounter", "create"), ("Encounter", "c"),
                 lambda w, c, _p: Call("POST", "Encounter", json=with_presence(
                     _encounter(w, c), presence_code(w.platform, w.patient_id))),
                 lambda w, _c: Need(Target.RECORD, Action.CARE_EVENT, w.patient_id,
                                    care_proof=CareProof.PRESENCE_CODE),
                 writes=True)
    return [unproved, proved]


@fhir_row("Communication", "read")
def _communication_read(world: World) -> list[Row]:
    return [Row("Communication read", ("Communication", "read"), ("Communication", "r"),
                _get(f"Communication/{world.notification_id}"),
                _need(Target.RECORD, Action.PERSONAL, world.patient_id))]


# --- FHIR rows: documents ---------------------------------------------------------------------


def _read_documents(world: World) -> list[tuple[str, str]]:
    """Every document of the record by role, and the signature of the hidden one."""
    documents = world.documents
    named = list(documents.by_name.items())
    return [*named, ("signature of hidden", documents.signatures[documents.by_name["hidden"]])]


def _document_rows(kind: str, what: str, path: str) -> None:
    def factory(world: World) -> list[Row]:
        return [Row(f"{kind} {what} [{name}]", (kind, what), (kind, "r"),
                    _get(path.format(id=document_id)),
                    _need(Target.RECORD, Action.READ, world.patient_id, document_id))
                for name, document_id in _read_documents(world)]
    fhir_row(kind, what)(factory)


_document_rows("DocumentReference", "read", "DocumentReference/{id}")
_document_rows("DocumentReference", "vread", "DocumentReference/{id}/_history/1")
_document_rows("Binary", "read", "Binary/{id}")
_document_rows("Binary", "vread", "Binary/{id}/_history/1")


def _document_criteria(world: World) -> dict[str, tuple[str, Criterion]]:
    """Each ITI-67 parameter: a value, and which documents it selects (before the engine)."""
    docs = world.documents
    n, referring = docs.by_name["N"], _practitioner(world, "referring")
    systems = world.platform.directory.systems
    return {
        "patient.identifier": (f"{systems.national}|{world.patient_national_id}",
                               lambda m, _b: True),
        "status": ("current", lambda m, _b: m.status.value == "current"),
        "category": (CONSULTATION[0], lambda m, _b: m.class_code.code == CONSULTATION[0]),
        "type": ("34788-0", lambda m, _b: m.type_code.code == "34788-0"),
        "setting": ("394802001", lambda m, _b: m.practice_setting.code == "394802001"),
        "facility": ("22232009", lambda m, _b: m.facility_type.code == "22232009"),
        "format": (f"{FORMATS}|{SIGNATURE_FORMAT}",
                   lambda m, _b: m.format_code.code == SIGNATURE_FORMAT),
        "event": (f"{EVENT[0]}|{EVENT[1]}",
                  lambda m, _b: any(e.code == EVENT[1] for e in m.events)),
        "security-label": ("R", lambda m, _b: m.confidentiality is Confidentiality.R),
        "date": ("ge2000-01-01", lambda m, _b: True),
        "period": ("ge2026-01-01", lambda m, _b: m.service_start is not None
                   and m.service_start >= datetime(2026, 1, 1, tzinfo=UTC)),
        "author": (f"Practitioner/{referring}", lambda m, _b: m.author_id == referring),
        "related": (f"DocumentReference/{n}", lambda m, by_id: (
            m.signs == n or m.replaces == n
            or m.id in {by_id[n].signs, by_id[n].replaces})),
    }


_DOCUMENT_PARAMS = ["patient.identifier", "status", "category", "type", "setting", "facility",
                    "format", "event", "security-label", "date", "period", "author", "related"]

for _param in _DOCUMENT_PARAMS:
    def _document_search(world: World, name: str = _param) -> list[Row]:
        value, criterion = _document_criteria(world)[name]
        params = {name: value} if name == "patient.identifier" else {
            "patient": f"Patient/{world.patient_id}", name: value}
        return [Row(f"DocumentReference search {name}", ("DocumentReference", f"search:{name}"),
                    ("DocumentReference", "s"),
                    _get("DocumentReference", _count="100", **params),
                    _need(Target.RECORD, Action.SEARCH, world.patient_id),
                    check=_documents_found(criterion))]
    fhir_row("DocumentReference", f"search:{_param}")(_document_search)


@fhir_row("DocumentReference", "search:patient")
def _document_search_patient(world: World) -> list[Row]:
    return [Row(f"DocumentReference search patient ({whose})",
                ("DocumentReference", "search:patient"), ("DocumentReference", "s"),
                _get("DocumentReference", patient=f"Patient/{patient}", _count="100"),
                _need(Target.RECORD, Action.SEARCH, patient),
                check=_documents_found(lambda m, _b: True))
            for whose, patient in _both(world)]


@fhir_row("DocumentReference", "search-type")
def _document_posted(world: World) -> list[Row]:
    return [Row("DocumentReference search (POST _search)", ("DocumentReference", "search-type"),
                ("DocumentReference", "s"),
                _post_search("DocumentReference", patient=f"Patient/{world.patient_id}",
                             _count="100"),
                _need(Target.RECORD, Action.SEARCH, world.patient_id),
                check=_documents_found(lambda m, _b: True))]


def _only_the_author(what: str, *, signatures: bool = True) -> Beyond:
    def beyond(world: World, caller: Caller, subject: Subject, need: Need) -> str | None:
        if subject.kind in _PERSONAL or subject.id != _practitioner(world, "author"):
            return f"only the document's author {what}"
        return None
    return beyond


def _author_operation(operation: str, template: str, held: bool, what: str) -> None:
    def factory(world: World) -> list[Row]:
        document_id = world.documents.by_name[template]

        def call(w: World, _c: Caller, permitted: bool) -> Call:
            # A permitted call uses up its document: it gets one of its own.
            target = w.publish(f"{operation} target", held=held) if permitted else document_id
            return Call("POST", f"DocumentReference/{target}/${operation}",
                        json={"resourceType": "Parameters"})
        return [Row(f"DocumentReference/[id] ${operation}",
                    ("DocumentReference", f"${operation}@instance:POST"),
                    ("DocumentReference", "u"), call,
                    _need(Target.RECORD, Action.READ, world.patient_id, document_id),
                    writes=True, beyond=_only_the_author(what))]
    fhir_row("DocumentReference", f"${operation}@instance:POST")(factory)


_author_operation("release", "held", True, "releases it to the patient")
_author_operation("entered-in-error", "N", False, "marks it entered-in-error")


@fhir_row("DocumentReference", "$privacy@instance:POST")
def _privacy(world: World) -> list[Row]:
    document_id = world.documents.by_name["N"]
    return [Row("DocumentReference/[id] $privacy", ("DocumentReference", "$privacy@instance:POST"),
                ("DocumentReference", "u"),
                _post_json(f"DocumentReference/{document_id}/$privacy", {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "hidden", "valueBoolean": False}]}),
                _need(Target.RECORD, Action.MANAGE, world.patient_id), writes=True)]


@fhir_row("Bundle", "transaction")
def _transaction(world: World) -> list[Row]:
    def call(w: World, caller: Caller, _p: bool) -> Call:
        if caller.kind in ("patient", "representative"):
            return Call("POST", "", json=provide_bundle(
                w.patient_id, f"Patient/{w.patient_id}", title="Matrix upload"))
        signer = caller.signer or w.author_signer
        author = caller.practitioner_id or _practitioner(w, "author")
        return Call("POST", "", json=provide_bundle(
            w.patient_id, f"Practitioner/{author}", signature=detached_jws(PDF, *signer),
            title="Matrix publication"))

    def need(w: World, caller: Caller) -> Need:
        # The documents service decides each new document on its own facts (its class).
        created = DocumentFacts("new", "", "", "consultation-report", CONSULTATION[1])
        if caller.kind in ("patient", "representative"):
            created = replace(created, class_code="patient-summary")
        return Need(Target.RECORD, Action.WRITE, w.patient_id, writes=(created,))

    return [Row("ITI-65 Provide Document Bundle (POST [base])", ("Bundle", "transaction"),
                ("DocumentReference", "c"), call, need, writes=True)]


def _nothing_in_the_set_visible(world: World, caller: Caller, subject: Subject,
                                need: Need) -> str | None:
    """A SubmissionSet of which the caller may see no document is not one they may know of:
    it answers 404, as an unknown one (the engine's filter over its documents)."""
    platform = world.platform
    now = platform.policy.clock()
    with platform.unit_of_work() as uow:
        record = platform.policy.facts(uow, world.patient_id, now)
        store = DocumentStore(uow.directory.connection)
        stored = store.submission_set(world.documents.submission_set)
        assert stored is not None
        members = [found.metadata for i in stored["document_ids"]
                   if (found := store.get(i)) is not None]
    admitted = visible_filter(subject, record, now, platform.policy.matrix)
    if any(admitted.matches(m.facts()) for m in members):
        return None
    return "none of the SubmissionSet's documents is visible to the caller"


def _list_rows() -> None:
    def read(what: str, path: str) -> None:
        def factory(world: World) -> list[Row]:
            return [Row(f"List {what}", ("List", what), ("List", "r"),
                        _get(path.format(id=world.documents.submission_set)),
                        _need(Target.RECORD, Action.READ, world.patient_id),
                        check=_lists_visible, beyond=_nothing_in_the_set_visible)]
        fhir_row("List", what)(factory)

    read("read", "List/{id}")
    read("vread", "List/{id}/_history/1")

    def searches(world: World) -> list[Row]:
        return [Row(f"List search patient ({whose})", ("List", "search:patient"), ("List", "s"),
                    _get("List", patient=f"Patient/{patient}"),
                    _need(Target.RECORD, Action.SEARCH, patient), check=_lists_visible)
                for whose, patient in _both(world)]
    fhir_row("List", "search:patient")(searches)

    def by_identifier(world: World) -> list[Row]:
        systems = world.platform.directory.systems
        return [Row("List search patient.identifier", ("List", "search:patient.identifier"),
                    ("List", "s"), _get("List", **{
                        "patient.identifier": f"{systems.national}|{world.patient_national_id}"}),
                    _need(Target.RECORD, Action.SEARCH, world.patient_id),
                    check=_lists_visible)]
    fhir_row("List", "search:patient.identifier")(by_identifier)

    def by_code(world: World) -> list[Row]:
        return [Row("List search code", ("List", "search:code"), ("List", "s"),
                    _get("List", patient=f"Patient/{world.patient_id}", code="submissionset"),
                    _need(Target.RECORD, Action.SEARCH, world.patient_id),
                    check=_lists_visible)]
    fhir_row("List", "search:code")(by_code)

    def posted(world: World) -> list[Row]:
        return [Row("List search (POST _search)", ("List", "search-type"), ("List", "s"),
                    _post_search("List", patient=f"Patient/{world.patient_id}"),
                    _need(Target.RECORD, Action.SEARCH, world.patient_id),
                    check=_lists_visible)]
    fhir_row("List", "search-type")(posted)


_list_rows()


# --- the application's other routes ------------------------------------------------------------


def _fixed(path: str, method: str, status: int | set[int], label: str = "",
           call: Callable[[World, Caller, bool], Call] | None = None) -> None:
    """A route whose answer does not depend on who asks: public, or for no token at all."""
    statuses = frozenset({status} if isinstance(status, int) else status)

    def factory(world: World) -> list[Row]:
        return [Row(label or f"{method} {path}", (path, method), ("", ""),
                    call or (lambda _w, _c, _p: Call(method, path, fhir=False)),
                    fixed=statuses)]
    app_row(path, method)(factory)


def _absolute(method: str, path: str, params: Mapping[str, str] | None = None,
              form: Mapping[str, str] | None = None) -> Callable[[World, Caller, bool], Call]:
    return lambda _w, _c, _p: Call(method, path, tuple((params or {}).items()), form=form,
                                   fhir=False)


# The FHIR door is walked by the FHIR rows above; what it does not implement, it refuses to
# everyone alike, before any credential is looked at.
@app_row("/fhir", "*")
def _the_door(world: World) -> list[Row]:
    return []  # the FHIR rows (the ITI-65 transaction among them)


@app_row("/fhir/{path:path}", "*")
def _every_method(world: World) -> list[Row]:
    """Every method reaches the door, which serves its interactions (the FHIR rows) and
    refuses every other method alike, before any credential is looked at."""
    return [Row(f"{method} /fhir/Patient/[id] (not supported)", ("/fhir/{path:path}", "*"),
                ("", ""), lambda w, _c, _p, m=method: Call(m, f"Patient/{w.patient_id}"),
                fixed=frozenset({405}))
            for method in ("DELETE", "PATCH", "TRACE", "OPTIONS")]

_fixed("/audit/public-key", "GET", 200)
_fixed("/audit/tree-head", "GET", 200)
_fixed("/audit/tree-head/timestamp", "GET", 404, "GET /audit/tree-head/timestamp (none made)",
       _absolute("GET", "/audit/tree-head/timestamp", {"tree_size": "1"}))
_fixed("/audit/proof/inclusion", "GET", 200, "",
       _absolute("GET", "/audit/proof/inclusion", {"leaf_index": "0", "tree_size": "1"}))
_fixed("/audit/proof/consistency", "GET", 200, "",
       _absolute("GET", "/audit/proof/consistency", {"first": "1", "second": "2"}))
_fixed("/pki/crl", "GET", 200)
_fixed("/pki/ca", "GET", 200)
_fixed("/.well-known/smart-configuration", "GET", 200)
_fixed("/.well-known/oauth-authorization-server", "GET", 200)
_fixed("/.well-known/jwks.json", "GET", 200)
_fixed("/health", "GET", 200)
_fixed("/health/live", "GET", 200)
_fixed("/health/ready", "GET", 200)
# The metrics credential is no token: every token holder is refused (tests/integration/
# test_instruments.py serves it to the credential).
_fixed("/metrics", "GET", 401)
_fixed("/openapi.json", "GET", 200)  # public, like the CapabilityStatement
_fixed("/favicon.ico", "GET", 308)
_fixed("/static", "MOUNT", 200, "GET /static/favicon.svg",
       _absolute("GET", "/static/favicon.svg"))
# A bearer token is no client authentication at the token endpoint, and no sign-in anywhere.
_fixed("/oauth/token", "POST", 401, "POST /oauth/token (a bearer token, no client assertion)",
       _absolute("POST", "/oauth/token", form={"grant_type": "client_credentials",
                                               "scope": "system/*.rs"}))
# Revocation authenticates the client as the token endpoint does (RFC 7009 §2.1): a bearer
# token is no client authentication there either.
_fixed("/oauth/revoke", "POST", 401, "POST /oauth/revoke (no client authentication)",
       _absolute("POST", "/oauth/revoke", form={"token": "not-a-token"}))
_fixed("/oauth/authorize", "GET", 400, "GET /oauth/authorize (no registered app)")
_fixed("/", "GET", 200)
_fixed("/login", "GET", 200)
_fixed("/operator/login", "GET", 200)
_fixed("/enrol", "GET", 200)
for _path in ("/login", "/operator/login", "/enrol", "/enrol/confirm"):
    _fixed(_path, "POST", 403, f"POST {_path} (no CSRF token)",
           _absolute("POST", _path, form={"login": "x", "password": "y"}))

# The professional workspace's doors (tests/integration/test_workspace_signin.py): a bearer
# token is no card proof and no passkey; the anonymous forms need their CSRF cookie.
_fixed("/workspace/card/challenge", "POST", 200)
_fixed("/workspace/card/enrol", "POST", 401, "POST /workspace/card/enrol (no card assertion)",
       _absolute("POST", "/workspace/card/enrol", form={"client_assertion": "x"}))
_fixed("/workspace/enrol", "GET", 200)
_fixed("/workspace/login", "GET", 200)
for _path in ("/workspace/enrol/options", "/workspace/enrol", "/workspace/login/options",
              "/workspace/login"):
    _fixed(_path, "POST", 400, f"POST {_path} (no CSRF token)",
           _absolute("POST", _path, form={"code": "x", "credential": "{}"}))
_fixed("/workspace/logout", "POST", 303, "POST /workspace/logout (no session)",
       _absolute("POST", "/workspace/logout", form={"csrf": "x"}))


# The patients' passkeys (tests/integration/test_portal_passkeys.py adds, uses and removes them).
_fixed("/login/passkey", "POST", 400, "POST /login/passkey (no CSRF token)",
       _absolute("POST", "/login/passkey", form={"csrf": "x"}))


def _persons_page(path: str, method: str, label: str, *, json_answers: bool) -> list[Row]:
    """A page of the patients' and representatives' own accounts: no session, the sign-in
    (or 401 for the ceremonies' JSON); a session without the page's CSRF token changes
    nothing (400); an operator's session has no passkeys here (403, on the page itself)."""
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        if caller.name not in w.sessions:
            if json_answers:
                return Expected(False, frozenset({401}), "no session")
            return Expected(False, frozenset({303}), "no session: to the sign-in page")
        if method == "POST":
            return Expected(False, frozenset({400}), "no CSRF token: nothing changes")
        if caller.session_kind in ("patient", "representative"):
            return Expected(True, frozenset({200}), "their own passkeys")
        return Expected(False, frozenset({403}), "an operator's session")

    return [Row(label, (path, method), ("", ""),
                _session_call(method, path, lambda _w, _c: {"credential_id": "x"}),
                expect=expect)]


APP_ROWS[("/me/passkeys", "GET")] = lambda _w: _persons_page(
    "/me/passkeys", "GET", "GET /me/passkeys (the account's passkeys)", json_answers=False)
APP_ROWS[("/me/passkeys/options", "POST")] = lambda _w: _persons_page(
    "/me/passkeys/options", "POST", "POST /me/passkeys/options (no CSRF token)",
    json_answers=True)
APP_ROWS[("/me/passkeys", "POST")] = lambda _w: _persons_page(
    "/me/passkeys", "POST", "POST /me/passkeys (no CSRF token)", json_answers=True)
APP_ROWS[("/me/password", "GET")] = lambda _w: _persons_page(
    "/me/password", "GET", "GET /me/password (the form that changes the password)",
    json_answers=False)
APP_ROWS[("/me/password", "POST")] = lambda _w: _persons_page(
    "/me/password", "POST", "POST /me/password (no CSRF token)", json_answers=False)
APP_ROWS[("/me/passkeys/remove", "POST")] = lambda _w: _persons_page(
    "/me/passkeys/remove", "POST", "POST /me/passkeys/remove (no CSRF token)",
    json_answers=False)


@app_row("/workspace", "GET")
def _workspace_home(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """Only a professional's session (a passkey) opens the workspace; the matrix's
        sessions are patients', representatives' and operators'."""
        if caller.name in w.sessions:
            return Expected(False, frozenset({403}), "not a professional's session")
        return Expected(False, frozenset({303}), "no session: to the workspace's sign-in")

    return [Row("GET /workspace (the professional workspace)", ("/workspace", "GET"), ("", ""),
                _session_call("GET", "/workspace", lambda _w, _c: {}), expect=expect)]


# The workspace's record pages (tests/integration/test_workspace_record.py signs a professional
# in with a passkey and walks each): the matrix's sessions are no professional's, so each page
# sends them away before reading a path parameter or a body.
_WORKSPACE_PAGES = (
    ("/workspace/patients", "GET"),
    ("/workspace/patients", "POST"),
    ("/workspace/record/{patient_id}", "GET"),
    ("/workspace/record/{patient_id}/document/{document_id}", "GET"),
    ("/workspace/record/{patient_id}/document/{document_id}/content", "GET"),
    ("/workspace/record/{patient_id}/publish", "GET"),
    ("/workspace/record/{patient_id}/publish", "POST"),
    ("/workspace/record/{patient_id}/emergency", "GET"),
    ("/workspace/record/{patient_id}/emergency", "POST"),
)


def _workspace_page(path: str, method: str) -> Callable[[World], list[Row]]:
    def rows(world: World) -> list[Row]:
        def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
            if caller.name in w.sessions:
                return Expected(False, frozenset({403}), "not a professional's session")
            return Expected(False, frozenset({303}), "no session: to the workspace's sign-in")

        def form(w: World, caller: Caller) -> dict[str, str]:
            session = w.sessions.get(caller.name)
            return {"csrf": session[1] if session else "", "family": "Muller", "reason": "x"}

        concrete = path.replace("{patient_id}", "some-patient").replace(
            "{document_id}", "some-document")
        return [Row(f"{method} {path} (the professional workspace)", (path, method), ("", ""),
                    _session_call(method, concrete, form), expect=expect)]
    return rows


for _path, _method in _WORKSPACE_PAGES:
    app_row(_path, _method)(_workspace_page(_path, _method))


def _workspace_form(path: str) -> Callable[[World], list[Row]]:
    """A form of the professional's home (web/workspace_mine.py): no session, the workspace's
    sign-in; a session that is not a professional's, with its own CSRF token, is refused before
    anything is read (tests/integration/test_workspace_mine.py drives the professionals')."""
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        if caller.name in w.sessions:
            return Expected(False, frozenset({403}), "not a professional's session")
        return Expected(False, frozenset({303}), "no session: to the workspace's sign-in")

    def fields(w: World, caller: Caller) -> dict[str, str]:
        session = w.sessions.get(caller.name)
        return {"csrf": session[1] if session else "x", "do": "end", "patient": w.patient_id,
                "mandate": "m", "delegation": "d", "mandator": "p"}

    def rows(_world: World) -> list[Row]:
        return [Row(f"POST {path} (a professional's form)", (path, "POST"), ("", ""),
                    _session_call("POST", path, fields), expect=expect)]
    return rows


for _path in ("/workspace/acting-for", "/workspace/assistants", "/workspace/delegations"):
    APP_ROWS[(_path, "POST")] = _workspace_form(_path)


def _officer_rows(path: str, method: str, officer_status: int, label: str
                  ) -> Callable[[World], list[Row]]:
    """A page of the security officer's workspace (web/officer_pages.py): the door admits the
    officer's portal session (or token) alone; every other session or none is refused there."""
    def rows(world: World) -> list[Row]:
        def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
            if caller.name in w.sessions and caller.session_kind == "security-officer":
                return Expected(officer_status == 200, frozenset({officer_status}),
                                "the security officer's session")
            return Expected(False, frozenset({401}), "not the security officer")

        def form(w: World, caller: Caller) -> dict[str, str]:
            session = w.sessions.get(caller.name)
            return {"csrf": session[1] if session else "", "action": "none-such"}

        return [Row(label, (path, method), ("", ""),
                    _session_call(method, path.replace("{alert_id}", "no-such-alert"), form),
                    expect=expect)]
    return rows


for _path, _method, _status, _label in (
        ("/officer", "GET", 200, "GET /officer (the alert queue)"),
        ("/officer/alerts/{alert_id}", "GET", 404, "GET /officer/alerts/{id} (unknown alert)"),
        ("/officer/alerts/{alert_id}", "POST", 400,
         "POST /officer/alerts/{id} (an action the form does not know)"),
        ("/officer/emergencies", "GET", 200, "GET /officer/emergencies"),
        ("/officer/audit", "GET", 200, "GET /officer/audit"),
        ("/officer/integrity", "GET", 200, "GET /officer/integrity"),
        ("/officer/pki", "GET", 200, "GET /officer/pki")):
    app_row(_path, _method)(_officer_rows(_path, _method, _status, _label))


@app_row("/audit/entries", "GET")
def _audit_entries(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """The whole audit trail is the security officer's (`decide_audit_trail`)."""
        with oracle.uow() as uow:
            found = oracle.token_caller(uow, caller)
            if found is None:
                return Expected(False, UNAUTHENTICATED, "no usable token")
            subject, _ = oracle.subject(uow, caller, found, ("AuditEvent", "r"))
        decision = decide_audit_trail(subject)
        if decision.permit:
            return Expected(True, frozenset(), decision.explain(), subject)
        return Expected(False, UNAUTHENTICATED, decision.explain(), subject)
    return [Row("GET /audit/entries", ("/audit/entries", "GET"), ("AuditEvent", "r"),
                _absolute("GET", "/audit/entries", {"start": "0", "end": "2"}), expect=expect)]


@app_row("/oauth/introspect", "POST")
def _introspect(world: World) -> list[Row]:
    """RFC 7662 §2.1: introspection is for authenticated clients (a signed client assertion,
    tested in test_smart_backend.py); a bearer of a token learns nothing of it here."""

    def check(oracle: Oracle, caller: Caller, expected: Expected, response: Any) -> list[str]:
        leaked = {"active", "scope", "sub"} & set(response.json())
        return [f"introspection without client authentication answers {sorted(leaked)}"] if (
            leaked) else []

    return [Row("POST /oauth/introspect (the caller's own token, no client authentication)",
                ("/oauth/introspect", "POST"), ("", ""),
                lambda _w, c, _p: Call("POST", "/oauth/introspect", form={"token": c.token or ""},
                                       fhir=False),
                fixed=frozenset({400, 401}), check=check)]


# The portal: a bearer token opens nothing there; a portal session (cookie) is what counts.
def _session_call(method: str, path: str, form: Callable[[World, Caller], dict[str, str]]
                  ) -> Callable[[World, Caller, bool], Call]:
    def call(w: World, caller: Caller, _p: bool) -> Call:
        session = w.sessions.get(caller.name)
        cookies = {SESSION_COOKIE: session[0]} if session else {}
        return Call(method, path, form=form(w, caller) if method == "POST" else None,
                    cookies=cookies, fhir=False)
    return call


@app_row("/me", "GET")
def _me(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        if caller.name in w.sessions and caller.session_kind == "security-officer":
            return Expected(False, frozenset({303}), "the officer's session: to /officer")
        if caller.name in w.sessions:
            return Expected(True, frozenset({200}), "a portal session")
        return Expected(False, frozenset({303}), "no session: to the sign-in page")

    def check(oracle: Oracle, caller: Caller, expected: Expected, response: Any) -> list[str]:
        """The page names the patient to the patient, and to a representative the engine lets
        read the record (among the mandates to choose from); to no one else."""
        w = oracle.world
        shows = w.patient_family in response.text
        should = caller.session_kind == "patient" and caller.patient_id == w.patient_id
        if caller.session_kind == "representative" and caller.account_id is not None:
            should = _representative_reads(w, caller.account_id)
        return [] if shows is should else [f"the page names the patient: {shows}"]

    return [Row("GET /me (the portal)", ("/me", "GET"), ("", ""),
                _session_call("GET", "/me", lambda _w, _c: {}), expect=expect, check=check)]


@app_row("/me/presence-code", "POST")
def _presence_code(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """The patient makes codes for their own record (the engine's `manage`); a session
        that acts on no record (an operator's, a representative's before choosing) makes
        none."""
        if caller.name not in w.sessions:
            return Expected(False, frozenset({303}), "no session: to the sign-in page")
        now = w.platform.policy.clock()
        # The record the session acts on now (a representative chooses one with /act-for).
        session = PortalSessions(w.platform.unit_of_work, w.platform.policy.clock).resume(
            w.sessions[caller.name][0])
        if session.patient_id is None or caller.session_kind not in ("patient", "representative"):
            return Expected(False, frozenset({403}), "the session acts on no record")
        subject = (Subject(SubjectKind.PATIENT, session.patient_id)
                   if caller.session_kind == "patient"
                   else Subject(SubjectKind.REPRESENTATIVE, caller.account_id or ""))
        with w.platform.unit_of_work() as uow:
            record = w.platform.policy.facts(uow, session.patient_id, now)
        decision = decide(subject, Action.MANAGE, record, None, now, w.platform.policy.matrix)
        return Expected(decision.permit, frozenset({200} if decision.permit else {403}),
                        decision.explain())

    def form(w: World, caller: Caller) -> dict[str, str]:
        session = w.sessions.get(caller.name)
        return {"csrf": session[1] if session else ""}

    return [Row("POST /me/presence-code (the patient's code for a professional)",
                ("/me/presence-code", "POST"), ("", ""),
                _session_call("POST", "/me/presence-code", form), expect=expect)]


def _record_page(path: str, method: str, action: Action, form: dict[str, str],
                 permitted: int, label: str) -> Callable[[World], list[Row]]:
    """A portal page of the record (/me/documents, /me/access): a session acting on a record
    the engine lets it reach with ``action``; a session on no record is refused."""
    def rows(world: World) -> list[Row]:
        def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
            if caller.name not in w.sessions:
                return Expected(False, frozenset({303}), "no session: to the sign-in page")
            now = w.platform.policy.clock()
            session = PortalSessions(w.platform.unit_of_work, w.platform.policy.clock).resume(
                w.sessions[caller.name][0])
            if session.patient_id is None or caller.session_kind not in (
                    "patient", "representative"):
                return Expected(False, frozenset({403}), "the session acts on no record")
            subject = (Subject(SubjectKind.PATIENT, session.patient_id)
                       if caller.session_kind == "patient"
                       else Subject(SubjectKind.REPRESENTATIVE, caller.account_id or ""))
            with w.platform.unit_of_work() as uow:
                record = w.platform.policy.facts(uow, session.patient_id, now)
            decision = decide(subject, action, record, None, now, w.platform.policy.matrix)
            return Expected(decision.permit,
                            frozenset({permitted} if decision.permit else {403}),
                            decision.explain())

        def fields(w: World, caller: Caller) -> dict[str, str]:
            session = w.sessions.get(caller.name)
            return {**form, "csrf": session[1] if session else ""} if method == "POST" else {}

        return [Row(label, (path, method), ("", ""), _session_call(method, path, fields),
                    expect=expect)]
    return rows


APP_ROWS[("/me/documents", "GET")] = _record_page(
    "/me/documents", "GET", Action.SEARCH, {}, 200, "GET /me/documents (the patient's documents)")
APP_ROWS[("/me/documents", "POST")] = _record_page(
    "/me/documents", "POST", Action.MANAGE, {"document": "no-such-document", "hidden": "false"},
    404, "POST /me/documents (hide or show a document; an unknown one here)")
@app_row("/me/documents/upload", "POST")
def _upload(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """The matrix posts a plain form, not a file: refused as malformed once a session on a
        record is found (tests/integration/test_portal_upload.py adds real files and checks
        the engine's word); nothing is stored either way."""
        if caller.name not in w.sessions:
            return Expected(False, frozenset({303}), "no session: to the sign-in page")
        session = PortalSessions(w.platform.unit_of_work, w.platform.policy.clock).resume(
            w.sessions[caller.name][0])
        if session.patient_id is None:
            return Expected(False, frozenset({403}), "the session acts on no record")
        return Expected(False, frozenset({400}), "not a file upload: nothing stored")

    return [Row("POST /me/documents/upload (a form without its file)",
                ("/me/documents/upload", "POST"), ("", ""),
                _session_call("POST", "/me/documents/upload",
                              lambda _w, _c: {"title": "x", "kind": "consultation"}),
                expect=expect)]


APP_ROWS[("/me/export", "GET")] = _record_page(
    "/me/export", "GET", Action.PERSONAL, {}, 200, "GET /me/export (the record's Bundle)")
APP_ROWS[("/me/prescriptions", "GET")] = _record_page(
    "/me/prescriptions", "GET", Action.PERSONAL, {}, 200,
    "GET /me/prescriptions (the patient's prescriptions and their access codes)")
APP_ROWS[("/me/prescriptions/print", "GET")] = _record_page(
    "/me/prescriptions/print", "GET", Action.PERSONAL, {}, 404,
    "GET /me/prescriptions/print (a ready prescription's printout; none named here)")
APP_ROWS[("/me/access", "GET")] = _record_page(
    "/me/access", "GET", Action.PERSONAL, {}, 200, "GET /me/access (who can see the record)")
APP_ROWS[("/me/access", "POST")] = _record_page(
    "/me/access", "POST", Action.MANAGE, {"do": "confidentiality", "level": "N"}, 303,
    "POST /me/access (a setting of the record)")
APP_ROWS[("/me/access/find", "POST")] = _record_page(
    "/me/access/find", "POST", Action.MANAGE, {"name": "zz-nobody"}, 200,
    "POST /me/access/find (the directory, to choose whom to grant or block)")
APP_ROWS[("/me/access/share", "POST")] = _record_page(
    "/me/access/share", "POST", Action.MANAGE, {"do": "unblock", "block": "no-such-block"}, 404,
    "POST /me/access/share (grant, block, unblock; an unknown block here)")
APP_ROWS[("/me/access/representatives", "POST")] = _record_page(
    "/me/access/representatives", "POST", Action.MANAGE,
    {"do": "limit", "mandate": "no-such-mandate", "scope": "read"}, 404,
    "POST /me/access/representatives (name or limit a representative; an unknown one here)")
APP_ROWS[("/me/access/preview", "POST")] = _record_page(
    "/me/access/preview", "POST", Action.PERSONAL, {"party_id": "no-such-practitioner"}, 404,
    "POST /me/access/preview (what a professional would see; an unknown one here)")


@app_row("/act-for", "POST")
def _act_for(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """A representative chooses a record they hold a mandate for: the engine's word on
        their reading it."""
        if caller.name not in w.sessions:
            return Expected(False, frozenset({303}), "no session: to the sign-in page")
        if caller.session_kind != "representative" or caller.account_id is None:
            return Expected(False, frozenset({403}), "not a representative")
        permitted = _representative_reads(w, caller.account_id)
        return Expected(permitted, frozenset({303} if permitted else {403}),
                        "the engine lets them read the record" if permitted else "no mandate")

    def form(w: World, caller: Caller) -> dict[str, str]:
        session = w.sessions.get(caller.name)
        return {"patient_id": w.patient_id, "csrf": session[1] if session else ""}

    return [Row("POST /act-for (a representative chooses the record)", ("/act-for", "POST"),
                ("", ""), _session_call("POST", "/act-for", form), expect=expect)]


@app_row("/logout", "POST")
def _logout(world: World) -> list[Row]:
    return [Row("POST /logout (no CSRF token: the session stays)", ("/logout", "POST"), ("", ""),
                _session_call("POST", "/logout", lambda _w, _c: {}), fixed=frozenset({303}))]


@app_row("/logout/everywhere", "POST")
def _logout_everywhere(world: World) -> list[Row]:
    def expect(oracle: Oracle, w: World, caller: Caller) -> Expected:
        """Without the session's CSRF token nothing is ended (the other rows need the
        sessions); tests/integration/test_portal_everywhere.py ends them."""
        if caller.name not in w.sessions:
            return Expected(False, frozenset({303}), "no session: to the sign-in page")
        return Expected(False, frozenset({400}), "no CSRF token: every session stays")

    return [Row("POST /logout/everywhere (no CSRF token: every session stays)",
                ("/logout/everywhere", "POST"), ("", ""),
                _session_call("POST", "/logout/everywhere", lambda _w, _c: {}), expect=expect)]


@app_row("/oauth/authorize", "POST")
def _authorize_post(world: World) -> list[Row]:
    return [Row("POST /oauth/authorize (no CSRF token)", ("/oauth/authorize", "POST"), ("", ""),
                _session_call("POST", "/oauth/authorize", lambda _w, _c: {"decision": "approve"}),
                fixed=frozenset({403}))]


def _representative_reads(world: World, account_id: str) -> bool:
    """Whether the engine lets this representative read the record under attack."""
    with world.platform.unit_of_work() as uow:
        record = world.platform.policy.facts(uow, world.patient_id, world.platform.policy.clock())
    return decide(Subject(SubjectKind.REPRESENTATIVE, account_id), Action.READ, record, None,
                  world.platform.policy.clock(), world.platform.policy.matrix).permit


def open_sessions(world: World) -> dict[str, tuple[str, str]]:
    """A portal session for each person who signs in there: (cookie, CSRF token)."""
    sessions = PortalSessions(world.platform.unit_of_work, world.platform.policy.clock)
    opened = {}
    for caller in world.callers.values():
        if caller.session_kind is None or caller.account_id is None:
            continue
        patient = caller.patient_id if caller.session_kind == "patient" else None
        token, session = sessions.open(caller.account_id, caller.session_kind, patient)
        opened[caller.name] = (token, session.csrf)
    return opened


def summary_table(outcome: Outcome) -> str:
    """One line per caller: how many cells, permitted, refused."""
    lines = []
    per: dict[str, list[Cell]] = {}
    for cell in outcome.cells:
        per.setdefault(cell.caller, []).append(cell)
    for name, cells in per.items():
        permitted = sum(c.expected.permit for c in cells)
        lines.append(f"  {name:<24} {len(cells):>5} cells {permitted:>4} permitted "
                     f"{len(cells) - permitted:>5} refused")
    return "\n".join(lines)


# The e-prescription rows (Task and its operations) live in their own module.
import support.access_matrix_messaging  # noqa: E402
import support.access_matrix_prescriptions  # noqa: E402, F401
