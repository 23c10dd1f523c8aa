"""The ASGI application factory of ``carevault serve --workers N``: every worker process
builds its own platform (engine, audit writer, door) from the environment's settings."""

from __future__ import annotations

from fastapi import FastAPI

from carevault.bootstrap import build
from carevault.settings import Settings


def application() -> FastAPI:
    return build(Settings()).app
