"""The platform PKI's public documents: the CRL and the CA chain.

Both are public, as a CA's CRL and certificates always are: relying parties need them to check
a client certificate. The CRL is signed afresh on every request and is good for five minutes
(`carevault.services.pki.CRL_LIFETIME`), the longest life of an access token, so a revocation
reaches every relying party that honours ``nextUpdate`` within a token's lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from carevault.api.openapi import PLAIN_ERROR
from carevault.api.openapi import answer as documented
from carevault.api.route_door import PUBLIC, access
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


def pki_router(documents: pki.PublicDocuments) -> APIRouter:
    """``documents`` reads them (bootstrap gave it the CA key's password)."""
    router = APIRouter(prefix="/pki")

    def answer(produce: Callable[[], Response]) -> Response:
        try:
            return produce()
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
    @access(PUBLIC)
    def crl() -> Response:
        return answer(
            lambda: Response(documents.crl(), media_type=CRL_MEDIA_TYPE, headers=NO_STORE)
        )

    @router.get(
        "/ca",
        response_class=Response,
        responses={200: documented("the CA chain (PEM)", CHAIN_MEDIA_TYPE, TEXT), **UNREADY},
    )
    @access(PUBLIC)
    def ca() -> Response:
        return answer(
            lambda: Response(documents.chain_pem(), media_type=CHAIN_MEDIA_TYPE, headers=NO_STORE)
        )

    return router


SIGNING_KEY_PATH = "/.well-known/carevault-signing-key.pem"


def signing_key_router(public_key_pem: bytes) -> APIRouter:
    """The platform's own signing key (Ed25519, PEM): it signs dispense receipts and printed
    prescriptions, which anyone verifies offline with it (`carevault.verifier`). Public."""
    router = APIRouter()

    @router.get(
        SIGNING_KEY_PATH,
        response_class=Response,
        responses={200: documented("the platform's Ed25519 key", "application/x-pem-file", TEXT)},
    )
    @access(PUBLIC)
    def signing_key() -> Response:
        return Response(public_key_pem, media_type="application/x-pem-file")

    return router
