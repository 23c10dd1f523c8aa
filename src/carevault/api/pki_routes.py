"""The platform PKI's public documents: the CRL and the CA chain.

Both are public, as a CA's CRL and certificates always are: relying parties need them to check
a client certificate. The CRL is signed afresh on every request and is good for five minutes
(`carevault.services.pki.CRL_LIFETIME`), the longest life of an access token, so a revocation
reaches every relying party that honours ``nextUpdate`` within a token's lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.api.openapi import PLAIN_ERROR
from carevault.api.openapi import answer as documented
from carevault.services import pki

CRL_MEDIA_TYPE = "application/pkix-crl"
CHAIN_MEDIA_TYPE = "application/pem-certificate-chain"
NO_STORE = {"Cache-Control": "no-store"}
BINARY = {"type": "string", "format": "binary"}
TEXT = {"type": "string"}
UNREADY: dict[int | str, dict[str, Any]] = {
    404: documented("the PKI is not initialized", schema=PLAIN_ERROR),
    503: documented("the CRL cannot be signed now", schema=PLAIN_ERROR),
}


def pki_router(
    units: Callable[[], UnitOfWork], password: bytes, clock: Callable[[], datetime]
) -> APIRouter:
    """``password`` opens the CA key (bootstrap reads it from the key source)."""
    router = APIRouter(prefix="/pki")

    def answer(produce: Callable[[UnitOfWork], Response]) -> Response:
        try:
            with units() as uow:
                return produce(uow)
        except pki.PkiNotInitialized as error:
            return JSONResponse({"error": str(error)}, status_code=404, headers=NO_STORE)
        except pki.CaKeyUnavailable:
            return JSONResponse(
                {"error": "the CRL cannot be signed now"}, status_code=503, headers=NO_STORE
            )

    @router.get(
        "/crl",
        response_class=Response,
        responses={200: documented("the CRL (DER)", CRL_MEDIA_TYPE, BINARY), **UNREADY},
    )
    def crl() -> Response:
        return answer(
            lambda uow: Response(
                pki.current_crl(uow, password, clock()),
                media_type=CRL_MEDIA_TYPE,
                headers=NO_STORE,
            )
        )

    @router.get(
        "/ca",
        response_class=Response,
        responses={200: documented("the CA chain (PEM)", CHAIN_MEDIA_TYPE, TEXT), **UNREADY},
    )
    def ca() -> Response:
        return answer(
            lambda uow: Response(
                pki.ca_chain_pem(uow), media_type=CHAIN_MEDIA_TYPE, headers=NO_STORE
            )
        )

    return router
