"""Every error becomes one FHIR ``OperationOutcome`` with the right HTTP status, here only.

An exception outside the domain's hierarchy that says the database is unavailable for the
moment (a failover) is the domain's `Unavailable` (`carevault.services.availability`): 503
with ``Retry-After``. Other unexpected exceptions are logged with an incident id and answered
with that id and nothing else: no stack trace, no internal message ever reaches a client.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

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
from carevault.services.availability import as_unavailable

log = logging.getLogger("carevault.api")

JsonObject = dict[str, Any]

# (HTTP status, OperationOutcome.issue.code); the first matching class wins, most specific first.
_MAPPING: list[tuple[type[CareVaultError], int, str]] = [
    (BusinessRuleViolation, 422, "business-rule"),
    (InvalidInput, 400, "invalid"),
    (NotAuthenticated, 401, "login"),
    (NotPermitted, 403, "forbidden"),
    (NotFound, 404, "not-found"),
    (Gone, 410, "deleted"),
    (Conflict, 409, "conflict"),
    (VersionConflict, 412, "conflict"),
    (TooLarge, 413, "too-costly"),
    (TooCostly, 400, "too-costly"),
    (UnsupportedMediaType, 415, "not-supported"),
    (RateLimited, 429, "throttled"),
    (StorageFull, 507, "transient"),
    (Unavailable, 503, "transient"),
    (IntegrityFailure, 500, "exception"),
]


class HttpProblem(CareVaultError):
    """An HTTP-level refusal with no domain meaning (405 method, 406 format)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def operation_outcome(
    severity: str, code: str, diagnostics: str, expression: str | None = None
) -> JsonObject:
    issue: JsonObject = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def status_and_code(error: CareVaultError) -> tuple[int, str]:
    if isinstance(error, HttpProblem):
        return error.status, error.code
    for kind, status, code in _MAPPING:
        if isinstance(error, kind):
            return status, error.issue_code or code
    return 400, "processing"


def retry_headers(error: CareVaultError) -> dict[str, str]:
    """``Retry-After`` for an error that asks the client to come back (429, 503)."""
    if isinstance(error, (RateLimited, Unavailable)) and error.retry_after is not None:
        return {"Retry-After": str(error.retry_after)}
    return {}


def from_error(error: BaseException) -> tuple[int, JsonObject, dict[str, str]]:
    """Status, OperationOutcome body and extra headers for any exception."""
    if not isinstance(error, CareVaultError):
        error = as_unavailable(error) or error
    if isinstance(error, CareVaultError):
        status, code = status_and_code(error)
        headers = retry_headers(error)
        if isinstance(error, NotAuthenticated):
            headers["WWW-Authenticate"] = 'Bearer realm="CareVault"'  # RFC 6750 §3
        return status, operation_outcome("error", code, error.message, error.expression), headers
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: unexpected error", incident, exc_info=error)
    body = operation_outcome(
        "fatal",
        "exception",
        f"internal error; the operators can find it under incident {incident}",
    )
    return 500, body, {}
