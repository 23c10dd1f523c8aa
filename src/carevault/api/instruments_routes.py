"""The instruments' routes: liveness and readiness, public and unrecorded (so that probes can
use them; states only, no error text), and the Prometheus metrics for the holder of the
metrics credential, every attempt recorded by the route door."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from carevault.api.instruments import PROMETHEUS_TEXT, Instruments
from carevault.api.openapi import PLAIN_ERROR, bearer
from carevault.api.openapi import answer as documented
from carevault.api.route_door import (
    METRICS,
    PUBLIC,
    Audited,
    Authenticator,
    Caller,
    access,
    admitted,
)


def metrics_credential_check(metrics_credential: bytes | None) -> Authenticator:
    """The route door's authenticator of `METRICS`: the bearer credential, compared in
    constant time (None configured: refused to all)."""
    expected = hashlib.sha256(metrics_credential).digest() if metrics_credential else None

    def check(request: Request) -> Caller | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        allowed = (
            expected is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), expected)
        )
        return Caller("metrics-credential") if allowed else None

    return check


METRICS_AUDITED = Audited("operator", "security", "R", "metrics", entity_type="Metrics")


def instruments_router(instruments: Instruments) -> APIRouter:
    """Liveness and readiness are public; ``/metrics`` is for the holder of the metrics
    credential (the route door's `METRICS` rule), every attempt recorded."""
    router = APIRouter()

    @router.get(
        "/health/live",
        responses={200: documented("the process answers", schema={"type": "object"})},
    )
    @access(PUBLIC)
    async def live() -> JSONResponse:
        return JSONResponse({"status": "live"}, headers={"Cache-Control": "no-store"})

    @router.get(
        "/health/ready",
        responses={
            200: documented("ready to serve", schema={"type": "object"}),
            503: documented("not ready: the failing checks say why", schema={"type": "object"}),
        },
    )
    @access(PUBLIC)
    def ready() -> JSONResponse:
        readiness = instruments.readiness
        if readiness is None:
            return JSONResponse({"status": "ready", "checks": {}})
        report = readiness.report()
        body = {
            "status": "ready" if report.ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "state": c.state} for c in report.checks},
        }
        return JSONResponse(
            body, status_code=200 if report.ready else 503, headers={"Cache-Control": "no-store"}
        )

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            200: documented("Prometheus text exposition", PROMETHEUS_TEXT, {"type": "string"}),
            401: documented("the metrics credential is missing or wrong", schema=PLAIN_ERROR),
            503: documented("the access could not be recorded", schema=PLAIN_ERROR),
        },
        openapi_extra=bearer(),
    )
    @access(METRICS, METRICS_AUDITED)
    def metrics(request: Request) -> Response:
        admitted(request).note("0", {"result": "served"}, status=200)
        return Response(
            instruments.exposition(),
            media_type=PROMETHEUS_TEXT,
            headers={"Cache-Control": "no-store"},
        )

    return router
