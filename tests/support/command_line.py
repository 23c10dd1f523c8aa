"""The command line on the test's database and key file, in the dev environment: a fixture
for the tests that run ``carevault …`` through typer's runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from carevault.cli import context
from carevault.settings import Settings


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands' settings come from the environment and their engine is cached by URL:
    both point at this test's database, and the cached engine is disposed of afterwards."""
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    monkeypatch.setenv("CAREVAULT_ENVIRONMENT", "dev")
    context.engine_for.cache_clear()
    yield
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()
