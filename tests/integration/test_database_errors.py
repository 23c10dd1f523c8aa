"""A failed statement's error, as the engines of `connect` raise it, on both databases: it
names the statement but never its parameters, which are patients' identifiers and names (an
error can reach a log line or a traceback)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

NATIONAL_ID = "1985021512345"


def test_a_failed_statement_does_not_quote_its_parameters(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as failed, engine.connect() as connection:
        connection.execute(text("INSERT INTO no_such_table (national_id) VALUES (:national_id)"),
                           {"national_id": NATIONAL_ID})
    said = str(failed.value)
    assert "no_such_table" in said  # the statement is named
    assert NATIONAL_ID not in said and "parameters hidden" in said


def test_a_connection_the_server_ended_is_replaced_at_check_out(engine: Engine) -> None:
    """A restart or a failover ends the pool's idle connections on the server's side: the next
    check-out finds that without a round trip (`database._still_open`) and hands out a new one,
    so the request that follows is served instead of meeting a closed connection."""
    if engine.dialect.name != "postgresql":
        pytest.skip("an embedded SQLite database has no connection to lose")
    with engine.connect() as other:  # held while the first is returned, then ends it
        with engine.connect() as connection:
            ended = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            connection.rollback()
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": ended})
        other.rollback()
    for _ in range(2):  # whichever pooled connection comes first, both are served
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != ended
