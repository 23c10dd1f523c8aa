"""The OAuth consent page: a person allows (or refuses) an app's request to reach their record.

A request that cannot be answered at its redirect URI (an unknown client, a redirect URI it did
not register) is told to the person instead, never redirected; every other problem goes back to
the app as an OAuth error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound
from carevault.domain.scopes import IDENTITY_SCOPES
from carevault.services.patient_apps import AppRequest, approve_request, request_in_force
from carevault.web.i18n import language, messages
from carevault.web.record_home import OPERATOR_SESSIONS
from carevault.web.scope_words import scope_sentence

if TYPE_CHECKING:
    from carevault.services.portal_sessions import PortalSession
    from carevault.web.portal import PortalContext

AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "aud",
    }
)


class _UntrustedRedirect(Exception):
    """The request cannot be answered at its redirect URI: tell the person instead."""


def _redirect_error(params: dict[str, str], error: str, description: str) -> Response:
    answer = {
        "error": error,
        "error_description": description,
        **({"state": params["state"]} if "state" in params else {}),
    }
    uri = params.get("redirect_uri", "")
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{separator}{urlencode(answer)}", status_code=303)


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


def consent_page_csp(redirect_uri: str) -> str:
    """The consent page's Content-Security-Policy: the platform's, with the app's registered
    redirect URI's origin added to ``form-action``. Browsers apply ``form-action`` to the
    redirects that follow a form's submission, so with ``'self'`` alone the person's "Allow"
    would never reach the app (Chromium blocks the 303 to its redirect URI). The URI was checked
    against the app's registration before the page is shown; a form that would not parse as a
    plain origin adds nothing."""
    parts = urlsplit(redirect_uri)
    scheme = parts.scheme.lower()
    source = ""
    if scheme in ("http", "https") and _HOST.match(parts.netloc):
        source = f" {scheme}://{parts.netloc}"
    elif _SCHEME.match(scheme) and scheme not in ("http", "https", "javascript", "data"):
        source = f" {scheme}:"  # a native app's private-use scheme (RFC 8252 §7.1)
    return f"default-src 'self'; frame-ancestors 'none'; form-action 'self'{source}"


def oauth_consent_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    def _check(params: dict[str, str]) -> AppRequest:
        try:
            return request_in_force(ctx.units, params)
        except NotFound as error:
            raise _UntrustedRedirect(error.message) from None
        except InvalidInput as error:
            if error.expression is None:  # about the client or its redirect URI
                raise _UntrustedRedirect(error.message) from None
            raise

    @router.get(
        "/oauth/authorize",
        response_class=HTMLResponse,
        responses={
            200: html("the consent page"),
            303: redirect("to sign in first, or back to the app with an error"),
            400: html("an unknown client or redirect URI: told to the person"),
        },
        openapi_extra=query(*sorted(AUTHORIZE_PARAMS), "lang"),
    )
    @access(SESSION)
    async def authorize(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            app_request = await run_in_threadpool(_check, params)
        except _UntrustedRedirect as error:
            return pages.error(request, 400, str(error))
        except InvalidInput as error:
            return _redirect_error(
                params,
                "invalid_scope" if error.expression == "scope" else "invalid_request",
                error.message,
            )
        session = await pages.session(request)
        if session is None:
            here = f"{request.url.path}?{request.url.query}"
            lang = language(request)
            return RedirectResponse(
                f"/login?{urlencode({'next': here, 'lang': lang})}", status_code=303
            )
        if not _scopes_fit(session, app_request):
            return _redirect_error(
                params, "access_denied", "these scopes are not for this kind of account"
            )
        try:
            app_request = app_request.for_role(session.kind)
        except InvalidInput as error:
            return _redirect_error(params, "invalid_scope", error.message)
        words = app_request.scope.split()
        page = pages.render(
            request,
            "authorize.html",
            {
                "csrf": session.csrf,
                "app": app_request,
                "params": params,
                # Identity scopes are shown; each resource scope is a box the person may untick.
                "identity": [w for w in words if w in IDENTITY_SCOPES],
                "scopes": [
                    (w, scope_sentence(w, messages(language(request))))
                    for w in words
                    if w not in IDENTITY_SCOPES
                ],
            },
        )
        page.headers["Content-Security-Policy"] = consent_page_csp(app_request.redirect_uri)
        return page

    @router.post(
        "/oauth/authorize",
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("back to the app, with a code or an error"),
            400: html("an unknown client or redirect URI, or a bad request"),
            403: html("not signed in, or the form is out of date (CSRF)"),
        },
        openapi_extra=merged(query("lang"), form((*sorted(AUTHORIZE_PARAMS), "decision", "csrf"))),
    )
    @access(SESSION)
    async def decide(request: Request) -> Response:
        try:
            session, posted = await pages.signed_post(request)
        except CareVaultError:
            return pages.error(request, 403, pages.text(request, "form"))
        params = {k: v for k, v in posted.items() if k in AUTHORIZE_PARAMS}
        try:
            app_request = await run_in_threadpool(_check, params)
        except (_UntrustedRedirect, InvalidInput) as error:
            return pages.error(request, 400, str(error))
        if posted.get("decision") != "approve" or not _scopes_fit(session, app_request):
            return _redirect_error(params, "access_denied", "the request was declined")
        try:
            app_request = app_request.for_role(session.kind)
        except InvalidInput as error:
            return _redirect_error(params, "invalid_scope", error.message)
        # The boxes left ticked (``allow-N``: one per resource scope shown); an unticked one is
        # not granted, and nothing ticked is a refusal.
        ticked = {v for k, v in posted.items() if k.startswith("allow-")}
        try:
            app_request = app_request.consented(ticked)
        except InvalidInput:
            return _redirect_error(params, "access_denied", "no scope was allowed")

        def issue() -> str:
            return approve_request(
                ctx.units,
                app_request,
                session.account_id,
                session.patient_id,
                ctx.clock(),
                kind=session.kind,
            )

        return RedirectResponse(await run_in_threadpool(issue), status_code=303)

    return router


__all__ = ["AUTHORIZE_PARAMS", "oauth_consent_router"]


def _scopes_fit(session: PortalSession, app_request: AppRequest) -> bool:
    """Whether the request's scopes are for this kind of account: patient scopes for a patient,
    or a representative who has chosen whose record (a token without a patient is refused
    later anyway), and user scopes for an operator. Checked on the page and again on the
    decision, which can be posted without the page."""
    operator = session.kind in OPERATOR_SESSIONS
    if operator:
        return app_request.scope_context != "patient"
    return app_request.scope_context == "patient" and session.patient_id is not None
