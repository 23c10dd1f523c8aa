"""Private PostgreSQL databases for tests: made on the server `CAREVAULT_TEST_DATABASE_URL`
names, dropped after, so that test processes never share one. An unreachable server is a
missing requirement (the suite says so, and fails under CI=true), not an error."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.requirements import POSTGRESQL, missing

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def private_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database named ``prefix`` and a random suffix."""
    admin_url = make_url(os.environ.get("CAREVAULT_TEST_DATABASE_URL", DEFAULT_PG))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        where = admin_url.render_as_string(hide_password=True)
        missing(POSTGRESQL, f"{where} is unreachable ({str(error).strip().splitlines()[0]})")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
