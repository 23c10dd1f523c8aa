"""Tests for FHIR routing (`parse_route`) and for the door's order of checks.

The door's collaborators (gate, recorder, rate limiter, resource handlers) are its own ports,
so small fakes written here stand in for them.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from carevault.api.fhir.door import (
    PARSED_BEFORE_THE_GATE,
    AccessNeed,
    Admission,
    FhirDoor,
    FhirRequest,
    FhirResponse,
    Interaction,
    NeedOf,
    Operation,
    ResourceHandler,
    SearchParam,
    Target,
    parse_route,
    reading,
)
from carevault.api.fhir.outcome import HttpProblem
from carevault.domain.authorization import Subject, SubjectKind, decide_directory
from carevault.domain.errors import (
    InvalidInput,
    NotAuthenticated,
    NotPermitted,
    RateLimited,
    TooLarge,
)

I = Interaction  # noqa: E741
READER = Subject(SubjectKind.PRACTITIONER, "dr-test", "physician")

# --- parse_route -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "metadata", (I.CAPABILITIES, None, None, None, None)),
        ("GET", "Patient", (I.SEARCH, "Patient", None, None, None)),
        ("POST", "Patient", (I.CREATE, "Patient", None, None, None)),
        ("PUT", "Patient", (I.CONDITIONAL_UPDATE, "Patient", None, None, None)),
        ("GET", "Patient/p-1.a", (I.READ, "Patient", "p-1.a", None, None)),
        ("PUT", "Patient/123", (I.UPDATE, "Patient", "123", None, None)),
        ("GET", "Patient/123/_history", (I.HISTORY, "Patient", "123", None, None)),
        ("GET", "Patient/123/_history/2", (I.VREAD, "Patient", "123", "2", None)),
        ("GET", "Patient/$ihe-pix", (I.OPERATION, "Patient", None, None, "ihe-pix")),
        ("POST", "Patient/123/$unmerge", (I.OPERATION, "Patient", "123", None, "unmerge")),
        ("POST", "Patient/_search", (I.SEARCH, "Patient", None, None, None)),
        ("GET", "PractitionerRole", (I.SEARCH, "PractitionerRole", None, None, None)),
        ("GET", "/Patient/123/", (I.READ, "Patient", "123", None, None)),
        ("GET", "Patient/" + "a" * 64, (I.READ, "Patient", "a" * 64, None, None)),
    ],
)
def test_parse_route(method: str, path: str, expected: tuple[Any, ...]) -> None:
    assert parse_route(method, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "Patient/" + "a" * 65,
        "Patient/abc_def",
        "Patient/abc!",
        "Patient/a b",
        "Patient/é",
        "Patient/a%2Fb",
        "Patient/" + "a" * 65 + "/_history",
        "Patient/bad*id/$unmerge",
    ],
)
def test_bad_resource_ids_are_invalid_input(path: str) -> None:
    with pytest.raises(InvalidInput, match="is not a valid resource id"):
        parse_route("GET", path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "Patient"),
        ("PATCH", "Patient"),
        ("DELETE", "Patient/123"),
        ("PATCH", "Patient/123"),
        ("POST", "Patient/123"),
        ("GET", ""),  # the base takes transactions (POST) only
        ("GET", "/"),
        ("TRACE", "Patient"),
        ("OPTIONS", "metadata"),
    ],
)
def test_unsupported_methods_are_405(method: str, path: str) -> None:
    with pytest.raises(HttpProblem) as caught:
        parse_route(method, path)
    assert caught.value.status == 405
    assert method in caught.value.message


@pytest.mark.parametrize(
    "path",
    [
        "patient",
        "123",
        "metadata/extra",
        "Patient/123/foo",
        "Patient/123/_history/2/extra",
        "Patient/123/$unmerge/extra",
        "P",
    ],
)
def test_unknown_paths_are_404(path: str) -> None:
    with pytest.raises(HttpProblem) as caught:
        parse_route("GET", path)
    assert caught.value.status == 404


# --- the door --------------------------------------------------------------------------------


class Events(list[str]):
    """The order in which the door's collaborators were called."""


class FakeLimiter:
    def __init__(self, events: Events, error: Exception | None = None) -> None:
        self.events = events
        self.error = error

    def check(self, client: str) -> None:
        self.events.append("limit")
        if self.error is not None:
            raise self.error


class FakeGate:
    def __init__(self, events: Events, error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.requests: list[FhirRequest] = []

    def authenticate(self, request: FhirRequest) -> None:
        self.events.append("authenticated")
        if self.error is not None:
            raise self.error

    def admit(self, request: FhirRequest, need_of: NeedOf) -> Admission:
        self.events.append("gate")
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        if request.interaction is I.CAPABILITIES:
            return Admission("test: public")
        need = need_of(request, None)  # type: ignore[arg-type]  # these handlers look nothing up
        return Admission("test: admitted", decision=decide_directory(READER, need.action))


class FakeScope:
    recorded = False

    def __enter__(self) -> FakeScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class FakeRecorder:
    def __init__(self, events: Events, error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.records: list[tuple[FhirRequest, int, str | None]] = []

    def begin(self, request: FhirRequest, admission: Admission | None) -> FakeScope:
        return FakeScope()

    def record(
        self,
        request: FhirRequest,
        response: FhirResponse,
        admission: Admission | None,
        scope: object,
    ) -> None:
        self.events.append("record")
        self.records.append((request, response.status, admission.rule if admission else None))
        if self.error is not None:
            raise self.error


class FakePatients(ResourceHandler):
    resource_type = "Patient"
    interactions = frozenset({I.READ, I.SEARCH, I.CREATE})
    search_params = (
        SearchParam("family", "string", "family name"),
        SearchParam("birthdate", "date", "date of birth"),
    )
    operations = (
        Operation("ihe-pix", "urn:test:pix", False, frozenset({"GET"}), "PIXm query"),
        Operation("unmerge", "urn:test:unmerge", True, frozenset({"POST"}), "unmerge"),
    )

    def __init__(self, events: Events, error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.requests: list[FhirRequest] = []

    def _answer(self, name: str, request: FhirRequest, status: int = 200) -> FhirResponse:
        self.events.append(name)
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return FhirResponse(status, {"resourceType": "Patient", "id": request.resource_id or "n"})

    def access_need(self, request: FhirRequest, uow: object) -> AccessNeed:
        return AccessNeed(Target.DIRECTORY, reading(request))

    def read(self, request: FhirRequest) -> FhirResponse:
        return self._answer("read", request)

    def search(self, request: FhirRequest) -> FhirResponse:
        return self._answer("search", request)

    def create(self, request: FhirRequest) -> FhirResponse:
        return self._answer("create", request, 201)

    def operation(self, request: FhirRequest) -> FhirResponse:
        return self._answer("operation", request)


class Rig:
    def __init__(
        self,
        *,
        gate_error: Exception | None = None,
        limit_error: Exception | None = None,
        handler_error: Exception | None = None,
        record_error: Exception | None = None,
    ) -> None:
        self.events = Events()
        self.limiter = FakeLimiter(self.events, limit_error)
        self.gate = FakeGate(self.events, gate_error)
        self.recorder = FakeRecorder(self.events, record_error)
        self.patients = FakePatients(self.events, handler_error)
        self.door = FhirDoor(
            [self.patients],
            self.gate,
            self.recorder,
            self.limiter,
            lambda door: {"resourceType": "CapabilityStatement", "types": sorted(door.handlers)},
        )

    def handle(self, method: str, path: str, **kwargs: Any) -> FhirResponse:
        kwargs.setdefault("client", "192.0.2.7")
        kwargs.setdefault("base_url", "https://cv.example/fhir")
        return self.door.handle(method, path, **kwargs)

    @property
    def only_record(self) -> tuple[FhirRequest, int, str | None]:
        assert len(self.recorder.records) == 1, self.recorder.records
        return self.recorder.records[0]


JSON = {"content-type": "application/fhir+json"}


def _diagnostics(response: FhirResponse) -> str:
    assert response.body is not None
    assert response.body["resourceType"] == "OperationOutcome"
    return str(response.body["issue"][0]["diagnostics"])


def _code(response: FhirResponse) -> str:
    assert response.body is not None
    return str(response.body["issue"][0]["code"])


def test_a_permitted_read_passes_limiter_gate_handler_then_recorder() -> None:
    rig = Rig()
    response = rig.handle("GET", "Patient/123")
    assert response.status == 200
    assert response.body == {"resourceType": "Patient", "id": "123"}
    assert rig.events == ["limit", "gate", "read", "record"]
    request, status, rule = rig.only_record
    assert (request.interaction, request.resource_type, request.resource_id) == (
        I.READ,
        "Patient",
        "123",
    )
    assert request.client == "192.0.2.7"
    assert (status, rule) == (200, "test: admitted")


def test_the_handler_sees_the_parsed_request() -> None:
    rig = Rig()
    rig.handle("GET", "Patient", params=(("family", "muller"),), headers={"accept": "x"})
    (request,) = rig.patients.requests
    assert request.interaction is I.SEARCH
    assert request.params == (("family", "muller"),)
    assert request.headers == {"accept": "x"}
    assert request.base_url == "https://cv.example/fhir"


def test_capability_statement_is_served_and_recorded() -> None:
    rig = Rig()
    response = rig.handle("GET", "metadata")
    assert response.status == 200
    assert response.body == {"resourceType": "CapabilityStatement", "types": ["Patient"]}
    assert rig.only_record[0].interaction is I.CAPABILITIES
    assert rig.only_record[1] == 200


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotAuthenticated("who are you?"), 401, "login"),
        (NotPermitted("not you"), 403, "forbidden"),
    ],
)
def test_gate_refusal_is_answered_recorded_and_stops_the_handler(
    error: Exception, status: int, code: str
) -> None:
    rig = Rig(gate_error=error)
    response = rig.handle("GET", "Patient/123")
    assert response.status == status
    assert _code(response) == code
    assert rig.patients.requests == []
    assert "read" not in rig.events
    assert rig.events == ["limit", "gate", "record"]
    request, recorded_status, rule = rig.only_record
    assert request.interaction is I.READ
    assert recorded_status == status
    assert rule is None


def test_gate_refusal_stops_a_create_before_the_handler() -> None:
    rig = Rig(gate_error=NotAuthenticated("no"))
    response = rig.handle("POST", "Patient", body=b"{}", headers=JSON)
    assert response.status == 401
    assert rig.patients.requests == []


def test_rate_limited_request_is_answered_429_with_retry_after_and_recorded() -> None:
    rig = Rig(limit_error=RateLimited("slow down", retry_after=7))
    response = rig.handle("GET", "Patient/123")
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert _code(response) == "throttled"
    assert rig.gate.requests == []
    assert rig.patients.requests == []
    assert rig.only_record[1] == 429
    assert rig.only_record[2] is None


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "nonsense/path", 404),
        ("GET", "", 405),
        ("TRACE", "Patient", 405),
        ("DELETE", "Patient/123", 405),
        ("GET", "Patient/bad_id", 400),
    ],
)
def test_unparseable_route_is_recorded_as_unknown(method: str, path: str, status: int) -> None:
    rig = Rig()
    response = rig.handle(method, path)
    assert response.status == status
    assert rig.gate.requests == []
    request, recorded_status, rule = rig.only_record
    assert request.interaction is I.UNKNOWN
    assert request.method == method
    assert recorded_status == status
    assert rule is None


def test_unknown_search_parameter_is_400_naming_it() -> None:
    rig = Rig()
    response = rig.handle("GET", "Patient", params=(("family", "x"), ("colour", "blue")))
    assert response.status == 400
    assert _code(response) == "invalid"
    assert "unknown search parameter 'colour' for Patient" in _diagnostics(response)
    assert response.body is not None
    assert response.body["issue"][0]["expression"] == ["colour"]
    assert rig.patients.requests == []
    assert rig.only_record[1] == 400


def test_search_parameter_with_modifier_is_400_unsupported_modifier() -> None:
    rig = Rig()
    response = rig.handle("GET", "Patient", params=(("family:exact", "Müller"),))
    assert response.status == 400
    assert "'family:exact' has an unsupported modifier" in _diagnostics(response)
    assert rig.patients.requests == []


def test_declared_and_common_search_parameters_are_accepted() -> None:
    rig = Rig()
    params = (("family", "x"), ("birthdate", "1980"), ("_count", "5"), ("_format", "json"))
    response = rig.handle("GET", "Patient", params=params)
    assert response.status == 200
    assert rig.events == ["limit", "gate", "search", "record"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/xml"}],
)
def test_post_without_json_content_type_is_415(headers: dict[str, str]) -> None:
    rig = Rig()
    response = rig.handle("POST", "Patient", body=b"{}", headers=headers)
    assert response.status == 415
    assert _code(response) == "not-supported"
    assert rig.patients.requests == []
    assert rig.only_record[1] == 415


@pytest.mark.parametrize(
    "content_type",
    ["application/fhir+json", "application/json", "Application/FHIR+JSON; charset=utf-8"],
)
def test_post_with_json_content_type_reaches_the_handler(content_type: str) -> None:
    rig = Rig()
    response = rig.handle("POST", "Patient", body=b"{}", headers={"content-type": content_type})
    assert response.status == 201


def test_post_search_accepts_a_form_body() -> None:
    rig = Rig()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = rig.handle("POST", "Patient/_search", params=(("family", "x"),), headers=headers)
    assert response.status == 200
    assert rig.events == ["limit", "gate", "search", "record"]


@pytest.mark.parametrize("value", ["text/html", "turtle", "application/fhir+turtle"])
def test_unserved_format_is_406(value: str) -> None:
    rig = Rig()
    response = rig.handle("GET", "Patient/123", params=(("_format", value),))
    assert response.status == 406
    assert rig.patients.requests == []
    assert rig.only_record[1] == 406


@pytest.mark.parametrize(
    "value", ["json", "application/fhir+json", "application/json", "xml", "application/fhir+xml"]
)
def test_json_and_xml_formats_are_served(value: str) -> None:
    response = Rig().handle("GET", "Patient/123", params=(("_format", value),))
    assert response.status == 200


def test_unexpected_handler_error_is_500_with_an_incident_and_no_internal_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(handler_error=RuntimeError("password=hunter2 at db.internal:5432"))
    with caplog.at_level(logging.ERROR, logger="carevault.api"):
        response = rig.handle("GET", "Patient/123")
    assert response.status == 500
    diagnostics = _diagnostics(response)
    assert "incident" in diagnostics
    assert "hunter2" not in diagnostics
    assert "db.internal" not in diagnostics
    assert "RuntimeError" not in diagnostics
    assert _code(response) == "exception"
    incident = diagnostics.rsplit(" ", 1)[1]
    assert any(incident in record.getMessage() for record in caplog.records)
    assert rig.only_record[1] == 500


def test_unknown_resource_type_is_404_listing_supported_types() -> None:
    rig = Rig()
    response = rig.handle("GET", "Observation/1")
    assert response.status == 404
    assert "'Observation' is not served here; supported: Patient" in _diagnostics(response)
    assert rig.only_record[1] == 404


def test_interaction_the_handler_does_not_declare_is_405() -> None:
    rig = Rig()
    response = rig.handle("PUT", "Patient/123", body=b"{}", headers=JSON)
    assert response.status == 405
    assert "update is not supported on Patient" in _diagnostics(response)
    assert rig.patients.requests == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "Patient/$ihe-pix", 200),
        ("POST", "Patient/123/$unmerge", 200),
        ("GET", "Patient/$unknown", 404),
        ("GET", "Patient/123/$ihe-pix", 404),  # a type operation invoked on an instance
        ("POST", "Patient/$unmerge", 404),  # an instance operation invoked on the type
        ("POST", "Patient/$ihe-pix", 405),
    ],
)
def test_operations_are_routed_by_name_level_and_method(
    method: str, path: str, status: int
) -> None:
    rig = Rig()
    response = rig.handle(method, path, body=b"{}", headers=JSON)
    assert response.status == status
    assert len(rig.patients.requests) == (1 if status == 200 else 0)
    assert rig.only_record[1] == status


def test_body_error_from_the_http_layer_is_answered_and_recorded() -> None:
    rig = Rig()
    response = rig.handle(
        "POST", "Patient", headers=JSON, body_error=TooLarge("body larger than 10 MiB")
    )
    assert response.status == 413
    assert rig.patients.requests == []
    request, status, _ = rig.only_record
    assert (request.interaction, status) == (I.CREATE, 413)


def test_an_access_that_cannot_be_recorded_is_not_served() -> None:
    rig = Rig(record_error=RuntimeError("audit storage is read-only"))
    response = rig.handle("GET", "Patient/p1")
    assert response.status == 503
    assert _code(response) == "transient"
    assert "nothing was served" in _diagnostics(response)
    assert "read-only" not in _diagnostics(response)


def _large_patient(size: int) -> bytes:
    """A Patient padded with JSON whitespace to ``size`` bytes."""
    resource = b'{"resourceType": "Patient"}'
    return resource[:-1] + b" " * (size - len(resource)) + b"}"


def test_a_large_json_body_is_parsed_once_authenticated_before_the_gate_opens_its_transaction(
) -> None:
    rig = Rig()
    body = _large_patient(PARSED_BEFORE_THE_GATE + 1)
    response = rig.handle("POST", "Patient", body=body, headers=JSON)
    assert response.status == 201
    assert rig.events == ["limit", "authenticated", "gate", "create", "record"]
    (at_the_gate,) = rig.gate.requests
    assert at_the_gate._parsed == {32: {"resourceType": "Patient"}}  # parsed before admit


def test_a_large_json_body_from_a_caller_not_authenticated_is_not_parsed() -> None:
    rig = Rig(gate_error=NotAuthenticated("no token"))
    malformed = b"{" + b" " * (PARSED_BEFORE_THE_GATE + 1)  # a parse would answer 400
    response = rig.handle("POST", "Patient", body=malformed, headers=JSON)
    assert response.status == 401
    assert rig.events == ["limit", "authenticated", "record"]


def test_a_small_json_body_costs_no_token_check_of_its_own() -> None:
    rig = Rig()
    body = _large_patient(PARSED_BEFORE_THE_GATE)
    assert rig.handle("POST", "Patient", body=body, headers=JSON).status == 201
    assert rig.events == ["limit", "gate", "create", "record"]
    (at_the_gate,) = rig.gate.requests
    assert at_the_gate._parsed == {}  # left to whoever needs it
