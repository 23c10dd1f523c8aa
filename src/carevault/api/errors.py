"""Every error of a route outside ``/fhir`` becomes its response here, in one place.

The errors are the domain's one hierarchy (`carevault.domain.errors`); their HTTP status is the
one `carevault.api.fhir.outcome` gives them. What differs from surface to surface is only the
shape of the body its clients expect, the route's `ErrorStyle`:

- ``PLAIN``: ``{"error": message}`` (the audit log's read API, the PKI's documents);
- ``OAUTH``: RFC 6749 §5.2, ``{"error": code, "error_description": message}`` (the OAuth
  endpoints), with ``Cache-Control: no-store``;
- ``FHIR``: an ``OperationOutcome`` (a token in a URL, refused before any route);
- ``PAGE``: a short HTML page (the refusals the door answers for a page, before the page's
  own code runs: a browser shows it, and the OpenAPI document says pages answer ``text/html``).

Pages answer their own errors in their language (`carevault.web.portal`); an error a page does
not catch is answered here, in the route's style.
"""

from __future__ import annotations

import enum
import html

from fastapi.responses import HTMLResponse, JSONResponse, Response

from carevault.api.fhir.outcome import from_error, retry_headers, status_and_code
from carevault.domain.errors import (
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    RateLimited,
    Unavailable,
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FHIR_JSON = "application/fhir+json"


class ErrorStyle(enum.Enum):
    PLAIN = "plain"
    OAUTH = "oauth"
    FHIR = "fhir"
    PAGE = "page"


def oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 §5.2 error answer."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


def _oauth_code(error: CareVaultError, status: int) -> str:
    if isinstance(error, RateLimited):
        return "slow_down"
    if isinstance(error, Unavailable):
        return "temporarily_unavailable"
    if isinstance(error, NotAuthenticated):
        return "invalid_client"
    if isinstance(error, InvalidInput):
        return "invalid_scope" if error.expression == "scope" else "invalid_request"
    return "invalid_request" if status < 500 else "server_error"


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    """A page that says why, for a browser: the door's own refusals come before a page knows
    its reader's language: the message is the door's own, the way home is in the portal's
    three languages."""
    text = html.escape(message)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{status} - CareVault</title></head><body><main><h1>CareVault</h1>"
        f"<p>{text}</p>"
        '<p><a href="/" lang="fr">Accueil</a> · <a href="/" lang="en">Home</a> · '
        '<a href="/" lang="de">Startseite</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def error_response(error: CareVaultError, style: ErrorStyle) -> Response:
    """The answer to ``error`` in ``style``: its status from the one mapping, its headers
    (``Retry-After``), its body in the shape the route's clients read."""
    status, _code = status_and_code(error)
    headers = retry_headers(error)
    if style is ErrorStyle.OAUTH:
        return oauth_error(status, _oauth_code(error, status), error.message, headers)
    if style is ErrorStyle.FHIR:
        status, outcome, extra = from_error(error)
        return JSONResponse(
            outcome,
            status_code=status,
            headers={**headers, **extra},
            media_type=f"{FHIR_JSON}; charset=utf-8",
        )
    if style is ErrorStyle.PAGE:
        return error_page(status, error.message, headers)
    return JSONResponse({"error": error.message}, status_code=status, headers=headers)
