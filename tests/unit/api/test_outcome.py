"""Tests for the mapping of every error to an HTTP status and a FHIR OperationOutcome."""

from __future__ import annotations

import inspect

import pytest
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
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
    VersionConflict,
)

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
def test_only_rate_limiting_and_authentication_set_headers(
    case: tuple[CareVaultError, int, str],
) -> None:
    _, _, headers = from_error(case[0])
    if isinstance(case[0], RateLimited):
        assert headers == {"Retry-After": "30"}
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
