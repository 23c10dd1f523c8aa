"""The domain's error hierarchy.

Every error a use case can raise on purpose derives from `CareVaultError`. The HTTP layer maps
each class to one HTTP status and one FHIR ``OperationOutcome`` issue code in a single handler
(`carevault.api.fhir.outcome`), and the CLI prints ``str(error)``: the message is written for the
person who sent the request, so it names the field and the rule, never internal state.

    CareVaultError
    ├── InvalidInput          the request is malformed or violates a rule on its content (400/422)
    │   └── BusinessRuleViolation   well-formed, but refused by a domain rule (422)
    ├── NotAuthenticated      no valid identity (401)
    ├── NotPermitted          the identity may not do this (403)
    ├── NotFound              no such resource (404)
    ├── Gone                  deleted or merged away, kept for history (410)
    ├── Conflict              would duplicate or contradict stored state (409)
    ├── VersionConflict       If-Match names an older version (412)
    ├── TooLarge              a size limit was exceeded (413)
    ├── UnsupportedMediaType  the body is not in a format we accept (415)
    ├── RateLimited           too many requests from this client (429)
    └── Unavailable           a dependency the request cannot be served without is down (503,
                              with ``Retry-After``), e.g. the audit log (nothing is served that
                              was not recorded) or the database during a failover
        └── StorageFull       the document store is full (507)
"""

from __future__ import annotations


class CareVaultError(Exception):
    """Base of every error raised on purpose.

    ``expression`` names the offending field, if any; ``issue_code`` overrides the FHIR issue
    code of the class where a profile demands a specific one (PIXm's ``code-invalid``).
    """

    def __init__(
        self, message: str, *, expression: str | None = None, issue_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.issue_code = issue_code


class InvalidInput(CareVaultError):
    """The request cannot be understood: bad syntax, wrong type, unknown parameter."""


class BusinessRuleViolation(InvalidInput):
    """The request is well-formed but a domain rule refuses it (e.g. a wrong check digit)."""


class NotAuthenticated(CareVaultError):
    """No identity, or one that could not be verified."""


class NotPermitted(CareVaultError):
    """The identity is known but may not perform this action."""


class NotFound(CareVaultError):
    """The addressed resource does not exist (or is not visible to the caller)."""


class Gone(CareVaultError):
    """The resource existed but no longer answers (kept for history)."""


class Conflict(CareVaultError):
    """The change would contradict stored state, such as a duplicate identifier."""


class VersionConflict(CareVaultError):
    """An ``If-Match`` precondition named a version that is no longer current."""


class TooLarge(CareVaultError):
    """A size, count or nesting limit was exceeded; the message names the limit."""


class TooCostly(CareVaultError):
    """A search would read more than its limit allows for want of a criterion that narrows it;
    the message names the limit and the criteria that would."""


class UnsupportedMediaType(CareVaultError):
    """The request body is in a media type the endpoint does not accept."""


class RateLimited(CareVaultError):
    """The client sent more requests than its rate allows; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IntegrityFailure(CareVaultError):
    """Stored data failed its integrity check (a changed ciphertext, key or hash): nothing is
    served and the security officer is alerted."""


# What a client is told to do when the database went away under its request (a failover, a
# restart): the outcome of a change may be unknown, and submissions are idempotent by their
# unique identifiers, so the same request again is always right.
SEND_AGAIN = "send the same request again"
# Seconds a client is asked to wait before it does (``Retry-After``): a switch-over of the
# two-site cluster takes from a few seconds to Patroni's ``ttl`` (docs/operations.md).
RETRY_AFTER_SECONDS = 5


class Unavailable(CareVaultError):
    """The request cannot be served safely right now; nothing was served. ``retry_after``
    (seconds) is what the answer's ``Retry-After`` says; None says nothing of when."""

    retry_after: int | None = RETRY_AFTER_SECONDS

    def __init__(
        self,
        message: str,
        *,
        expression: str | None = None,
        issue_code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, expression=expression, issue_code=issue_code)
        if retry_after is not None:
            self.retry_after = retry_after


class StorageFull(Unavailable):
    """The document store has no space left (HTTP 507): nothing of the request was stored,
    and the same request succeeds once the operators have made room (no one knows when)."""

    retry_after = None
