"""Tests for the mapping of every error to an HTTP status and a FHIR OperationOutcome."""

from __future__ import annotations

import inspect

import psycopg
import pytest
import sqlalchemy.exc
from fhir.resources.R4B.operationoutcome import OperationOutcome

from carevault.api.fhir.outcome import HttpProblem, from_error, status_and_code
from carevault.domain import errors
from carevault.domain.errors import (
    BusinessRuleViolation,
    CareVaultError,
    Conflict,
    Gone,
    IntegrityFailure,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    RateLimited,
    StorageFull,
    TooCostly,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
    VersionConflict,
)
from carevault.services.audit_log import AuditUnavailable

EXPECTED: list[tuple[CareVaultError, int, str]] = [
    (InvalidInput("bad"), 400, "invalid"),
    (BusinessRuleViolation("refused"), 422, "business-rule"),
    (NotAuthenticated("who?"), 401, "login"),
    (NotPermitted("no"), 403, "forbidden"),
    (NotFound("none"), 404, "not-found"),
    (Gone("gone"), 410, "deleted"),
    (Conflict("clash"), 409, "conflict"),
    (VersionConflict("old"), 412, "conflict"),
    (TooLarge("big"), 413, "too-costly"),
    (TooCostly("every mailbox"), 400, "too-costly"),
    (UnsupportedMediaType("xml"), 415, "not-supported"),
    (RateLimited("slow", retry_after=30), 429, "throttled"),
    (Unavailable("audit log down"), 503, "transient"),
    (StorageFull("the document store is full"), 507, "transient"),
    (IntegrityFailure("a stored document failed its check"), 500, "exception"),
]


# http://hl7.org/fhir/R4/valueset-issue-type.html (a required binding; the model does not check it)
ISSUE_TYPES = frozenset(
    {
        "invalid", "structure", "required", "value", "invariant", "security", "login",
        "unknown", "expired", "forbidden", "suppressed", "processing", "not-supported",
        "duplicate", "multiple-matches", "not-found", "deleted", "too-long", "code-invalid",
        "extension", "too-costly", "business-rule", "conflict", "transient", "lock-error",
        "no-store", "exception", "timeout", "incomplete", "throttled", "informational",
    }
)  # fmt: skip


def _ids(case: tuple[CareVaultError, int, str]) -> str:
    return type(case[0]).__name__


def test_every_error_class_of_the_domain_is_covered_here() -> None:
    declared = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, CareVaultError) and cls is not CareVaultError
    }
    assert declared == {type(error) for error, _, _ in EXPECTED}


@pytest.mark.parametrize("case", EXPECTED, ids=_ids)
def test_error_maps_to_its_status_and_code(case: tuple[CareVaultError, int, str]) -> None:
    error, status, code = case
    assert status_and_code(error) == (status, code)
    got_status, body, _ = from_error(error)
    assert got_status == status
    (issue,) = body["issue"]
    assert issue == {"severity": "error", "code": code, "diagnostics": error.message}


@pytest.mark.parametrize("case", EXPECTED, ids=_ids)
def test_outcome_is_a_valid_r4_operation_outcome(case: tuple[CareVaultError, int, str]) -> None:
    _, body, _ = from_error(case[0])
    outcome = OperationOutcome.model_validate(body)
    assert outcome.issue[0].code == case[2]
    assert outcome.issue[0].code in ISSUE_TYPES
    assert outcome.issue[0].severity in ("fatal", "error", "warning", "information")


@pytest.mark.parametrize("case", EXPECTED, ids=_ids)
def test_only_rate_limiting_unavailability_and_authentication_set_headers(
    case: tuple[CareVaultError, int, str],
) -> None:
    _, _, headers = from_error(case[0])
    if isinstance(case[0], RateLimited):
        assert headers == {"Retry-After": "30"}
    elif isinstance(case[0], Unavailable) and not isinstance(case[0], StorageFull):
        assert headers == {"Retry-After": "5"}  # a failover: come back in a few seconds
    elif isinstance(case[0], NotAuthenticated):
        assert headers == {"WWW-Authenticate": 'Bearer realm="CareVault"'}  # RFC 6750 §3
    else:
        assert headers == {}


def test_expression_is_reported() -> None:
    _, body, _ = from_error(InvalidInput("bad date", expression="Patient.birthDate"))
    assert body["issue"][0]["expression"] == ["Patient.birthDate"]
    OperationOutcome.model_validate(body)


def test_no_expression_means_no_expression_element() -> None:
    _, body, _ = from_error(NotFound("none"))
    assert "expression" not in body["issue"][0]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("bad code", issue_code="code-invalid"), 400),
        (BusinessRuleViolation("unknown system", issue_code="code-invalid"), 422),
        (NotFound("no such target system", issue_code="code-invalid"), 404),
    ],
)
def test_issue_code_overrides_the_class_code(error: CareVaultError, status: int) -> None:
    got_status, body, _ = from_error(error)
    assert got_status == status
    assert body["issue"][0]["code"] == "code-invalid"
    OperationOutcome.model_validate(body)


@pytest.mark.parametrize(("status", "code"), [(405, "not-supported"), (406, "not-supported")])
def test_http_problem_keeps_its_status_and_code(status: int, code: str) -> None:
    got_status, body, headers = from_error(HttpProblem(status, code, "nope"))
    assert got_status == status
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["diagnostics"] == "nope"
    assert headers == {}
    OperationOutcome.model_validate(body)


def test_unexpected_error_is_500_with_an_incident_and_no_internal_details() -> None:
    status, body, headers = from_error(KeyError("SELECT * FROM patient WHERE secret"))
    assert status == 500
    assert headers == {}
    (issue,) = body["issue"]
    assert issue["severity"] == "fatal"
    assert issue["code"] == "exception"
    assert "incident" in issue["diagnostics"]
    assert "SELECT" not in issue["diagnostics"]
    assert "KeyError" not in issue["diagnostics"]
    OperationOutcome.model_validate(body)


def test_each_unexpected_error_gets_its_own_incident() -> None:
    first = from_error(RuntimeError("x"))[1]["issue"][0]["diagnostics"]
    second = from_error(RuntimeError("x"))[1]["issue"][0]["diagnostics"]
    assert first != second


def _lost(error: Exception) -> Exception:
    """``error`` as SQLAlchemy raises it from a statement: wrapped, the driver's as cause."""
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, error)
    wrapped.__cause__ = error
    return wrapped


LOST_DATABASE = [
    _lost(psycopg.OperationalError("server closed the connection unexpectedly")),
    sqlalchemy.exc.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("connection closed")),
    sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 5 reached"),
    sqlalchemy.exc.DisconnectionError("the pool found the connection dead"),
    psycopg.OperationalError("connection failed: Connection refused"),  # raw, from the driver
    psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
]


@pytest.mark.parametrize("error", LOST_DATABASE, ids=lambda e: type(e).__name__)
def test_a_lost_database_is_a_503_to_send_again_not_an_incident(error: Exception) -> None:
    """A failover surfaces as the driver's or the pool's exception wherever the request met
    it: it is the domain's `Unavailable`, with Retry-After, never an incident (500)."""
    status, body, headers = from_error(error)
    assert status == 503
    assert headers == {"Retry-After": "5"}
    (issue,) = body["issue"]
    assert issue["code"] == "transient"
    assert "send the same request again" in issue["diagnostics"]
    assert "incident" not in issue["diagnostics"]
    assert "SELECT" not in issue["diagnostics"]  # nothing of the driver's message
    OperationOutcome.model_validate(body)


def test_an_audit_log_that_cannot_record_is_a_503_wherever_it_is_raised() -> None:
    status, body, headers = from_error(AuditUnavailable("the audit log could not record"))
    assert (status, headers) == (503, {"Retry-After": "5"})
    assert body["issue"][0]["code"] == "transient"


def test_an_error_raised_while_the_database_was_lost_is_one_too() -> None:
    error = RuntimeError("the rollback found no connection")
    error.__cause__ = _lost(psycopg.OperationalError("terminating connection"))
    assert from_error(error)[0] == 503


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate")),
    sqlalchemy.exc.ProgrammingError("SELEC", {}, psycopg.errors.SyntaxError("syntax")),
    sqlalchemy.exc.DataError("SELECT", {}, psycopg.errors.NumericValueOutOfRange("range")),
], ids=lambda e: type(e).__name__)
def test_other_database_errors_stay_incidents(error: Exception) -> None:
    assert from_error(error)[0] == 500
