"""The world every OWASP API Top 10 attack is aimed at, on both databases (see
`support.owasp`): built the production way, then attacked over HTTP from an address of its own
(not the loopback: only tokens let a client in)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from support.owasp import Target, World, build_world

ATTACKER = ("203.0.113.66", 4444)


@pytest.fixture
def http(platform: Platform) -> Iterator[TestClient]:
    with TestClient(platform.app, base_url="http://127.0.0.1:8000", client=ATTACKER,
                    raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def world(platform: Platform, http: TestClient) -> World:
    return build_world(platform, http)


@pytest.fixture
def target(platform: Platform, http: TestClient, world: World) -> Target:
    return Target(http, platform, world)
