"""What a lost database means to a request (`as_unavailable`): the domain's `Unavailable`,
with a message that says to send the request again and nothing of the driver's; anything else
stays what it was (an incident, or the domain error it already is).

The module reaches no storage, so there is no unit of work to fake: the doors call it with
whatever exception a request met (tests/unit/api/test_outcome.py checks the 503 they make of
it)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy.exc

from carevault.domain.errors import (
    SEND_AGAIN,
    BusinessRuleViolation,
    NotFound,
    Unavailable,
)
from carevault.services.audit_log import AuditUnavailable
from carevault.services.availability import LOST, as_unavailable

DRIVER_SAYS = "server closed the connection unexpectedly (10.0.0.9:5432, user carevault)"


def _wrapped(driver: Exception) -> Exception:
    """``driver`` as SQLAlchemy raises it from a statement: wrapped, the driver's as cause."""
    wrapped = sqlalchemy.exc.OperationalError("SELECT secret FROM t", {}, driver)
    wrapped.__cause__ = driver
    return wrapped


@pytest.mark.parametrize("error", [
    _wrapped(psycopg.OperationalError(DRIVER_SAYS)),
    sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 5 reached"),
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
], ids=lambda e: type(e).__name__)
def test_a_lost_database_is_unavailable_and_says_to_send_again(error: Exception) -> None:
    unavailable = as_unavailable(error)
    assert isinstance(unavailable, Unavailable)
    assert unavailable.message == LOST and SEND_AGAIN in unavailable.message
    # Nothing of the driver's words (a host, a user, a statement) reaches the caller.
    assert "10.0.0.9" not in unavailable.message and "SELECT" not in unavailable.message
    assert unavailable.retry_after is not None


def test_an_error_raised_while_handling_a_lost_database_is_unavailable_too() -> None:
    error = RuntimeError("the rollback found no connection")
    error.__context__ = _wrapped(psycopg.OperationalError("terminating connection"))
    assert isinstance(as_unavailable(error), Unavailable)


def test_an_unavailable_error_passes_through_as_it_is() -> None:
    """The audit log's own `AuditUnavailable` (and any `Unavailable`) keeps its message and
    its Retry-After: it is not rewritten as a lost database."""
    said = AuditUnavailable("the audit log could not record this access")
    assert as_unavailable(said) is said
    own = Unavailable("the key service is restarting", retry_after=30)
    assert as_unavailable(own) is own and own.retry_after == 30


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate")),
    sqlalchemy.exc.ProgrammingError("SELEC", {}, psycopg.errors.SyntaxError("syntax")),
    NotFound("Patient/x is not known"),
    BusinessRuleViolation("not allowed"),
    KeyError("bug"),
], ids=lambda e: type(e).__name__)
def test_what_is_not_a_lost_database_is_not_called_one(error: Exception) -> None:
    assert as_unavailable(error) is None


def test_an_exception_chain_that_loops_is_read_once_and_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert as_unavailable(first) is None
