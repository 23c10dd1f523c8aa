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
