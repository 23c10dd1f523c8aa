"""The security suites' world: built once per module and backend (a module-scoped platform
on SQLite and on PostgreSQL), since attacking every route as every caller needs one rich
record, not a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage import schema
from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import Platform, build
from carevault.domain.audit import STREAMS
from carevault.settings import Settings
from support.access_matrix import SUMMARIES
from support.matrix_world import World, build_world

# Not the loopback: in `dev`, the developer's own loopback may read the audit entries.
MATRIX_CLIENT = ("198.51.100.20", 4000)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``database_url`` for a whole module: a migrated SQLite file, or the session's PostgreSQL
    database emptied first."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'carevault.db'}"
        engine = connect(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    engine = connect(url)
    with engine.begin() as connection:
        names = ", ".join(table.name for table in reversed(schema.metadata.sorted_tables))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        connection.execute(schema.audit_log_state.insert(), [
            {"stream": stream, "tree_size": 0, "frontier": b""} for stream in STREAMS])
    engine.dispose()
    yield url


@pytest.fixture(scope="module")
def module_settings(module_database_url: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Settings:
    key_file = tmp_path_factory.mktemp("matrix-keys") / "carevault.key"
    create_key_file(key_file)
    # Thousands of requests from one address: the rate limit is not what is tested here.
    return Settings(database_url=module_database_url, key_source=f"file:{key_file}",
                    environment="dev", rate_limit_per_minute=10_000_000,
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def module_platform(module_settings: Settings) -> Iterator[Platform]:
    engine = connect(module_settings.database_url)
    yield build(module_settings, engine)
    engine.dispose()


@pytest.fixture(scope="module")
def world(module_platform: Platform) -> Iterator[World]:
    with TestClient(module_platform.app, base_url="http://127.0.0.1:8000",
                    client=MATRIX_CLIENT) as http:
        yield build_world(module_platform, http)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the access matrix checked, in one line per backend."""
    for line in SUMMARIES:
        terminalreporter.write_line(line)
