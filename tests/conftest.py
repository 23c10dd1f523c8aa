"""Shared fixtures: a fresh database on each backend, a wired platform, an HTTP client.

Every test that asks for ``database_url`` runs twice, on SQLite and on PostgreSQL. PostgreSQL
comes from ``CAREVAULT_TEST_DATABASE_URL`` (default: the local server); each test session
creates its own database there and drops it at the end. Outside CI an unreachable PostgreSQL
skips its half of the tests; under ``CI=true`` it fails them.

At the end of every run, one block says which suites did not run for lack of something on this
machine, and the ``apt-get install`` line that brings it all (`support.requirements`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage import schema
from carevault.adapters.storage.database import connect, upgrade
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import Platform, build, directory_context
from carevault.domain.audit import STREAMS
from carevault.services.directory import DirectoryContext
from carevault.settings import Settings
from support.attacked import attacked  # noqa: F401  (a fixture, shared: tests/security)
from support.command_line import cli_env  # noqa: F401  (a fixture, shared)
from support.databases import private_database
from support.r4_responses import (  # every FHIR response is R4 and its IHE profiles
    pytest_configure,  # noqa: F401
    pytest_runtest_call,  # noqa: F401
    pytest_runtest_setup,  # noqa: F401
    pytest_runtest_teardown,  # noqa: F401
)
from support.requirements import (  # the hooks: which suites did not run, and why
    pytest_runtest_makereport,  # noqa: F401
    pytest_terminal_summary,  # noqa: F401
)
from support.softhsm import softhsm  # noqa: F401  (a fixture, shared)
from support.tokens import professional_token


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL database for this test session, migrated to the latest schema."""
    with private_database("carevault_test") as url:
        engine = connect(url)
        upgrade(engine)
        engine.dispose()
        yield url


def _truncate(engine: Engine) -> None:
    """Empty every table, then restore what migrations seed (the empty audit trees)."""
    with engine.begin() as connection:
        names = ", ".join(table.name for table in reversed(schema.metadata.sorted_tables))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        connection.execute(schema.audit_log_state.insert(), [
            {"stream": stream, "tree_size": 0, "frontier": b""} for stream in STREAMS])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'carevault.db'}"
        engine = connect(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    engine = connect(url)
    _truncate(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    key_file = tmp_path / "keys" / "carevault.key"
    create_key_file(key_file)
    return Settings(database_url=database_url, key_source=f"file:{key_file}",
                    environment="dev", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def uow(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    return lambda: SqlUnitOfWork(engine)


@pytest.fixture
def ctx(settings: Settings) -> DirectoryContext:
    return directory_context(settings)


@pytest.fixture
def platform(settings: Settings, engine: Engine) -> Platform:
    return build(settings, engine)


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    """An HTTP client on the loopback address that acts as a professional's system: it holds a
    real SMART access token (see `support.tokens`). Requests may override the header."""
    token = professional_token(platform)
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50000),
                    headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client


@pytest.fixture
def registrar(platform: Platform) -> Iterator[TestClient]:
    """An HTTP client holding a registrar's token: the directories' writer (patients'
    identities, professionals, organizations). It reaches no record."""
    from support.authorities import registrar_token

    token = registrar_token(platform)
    with TestClient(platform.app, base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50001),
                    headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client
