"""The workspace's doors: the card proof, a passkey's enrolment, signing in and out.

``carevault card enrol`` asks ``POST /workspace/card/challenge`` for a challenge and signs it
with the card's key (``POST /workspace/card/enrol``): it gets an enrolment code. At
``/workspace/enrol`` the professional types the code and their browser makes a passkey; at
``/workspace/login`` the passkey signs them in. The ceremonies run in ``/static/passkey.js``
(the CSP allows no inline script); these routes hand it the options and check its answers,
each behind the page's double-submit CSRF cookie. Every enrolment and sign-in, refused ones
too, is recorded by the route door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.access import TokenBucketLimiter
from carevault.api.openapi import answer, form, html, merged, query, redirect
from carevault.api.route_door import FORM, SESSION, TOKEN_REQUEST, Audited, access, admitted
from carevault.domain.errors import CareVaultError
from carevault.services.portal_sessions import PRACTITIONER_SESSION
from carevault.services.workspace_signin import (
    CARD_ENROL_PATH,
    CardRefused,
    PasskeyRefused,
    SignedIn,
)
from carevault.web.i18n import language
from carevault.web.pages import (
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    FormRefused,
    JsonAnswers,
    read_form,
    signed_out,
)
from carevault.web.workspace_context import HOME, LOGIN, Answered

if TYPE_CHECKING:
    from carevault.web.workspace_context import Workspace

ENROL = "/workspace/enrol"
CARD_CHALLENGE = "/workspace/card/challenge"
SIGN_IN_AUDITED = Audited("clinical", "authentication", "E", "workspace-sign-in")
ENROL_AUDITED = Audited("clinical", "authentication", "C", "workspace-passkey")
CARD_AUDITED = Audited("clinical", "authentication", "E", "workspace-card")
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: answer("the form is out of date (CSRF) or malformed"),
    401: answer("refused: the message says what to do"),
    429: answer("too many attempts (Retry-After)"),
}


def workspace_signin_router(ws: Workspace) -> APIRouter:
    router = APIRouter()
    pages = ws.pages
    limiter = TokenBucketLimiter(ws.settings.rate_limit_per_minute)

    answers = JsonAnswers(pages, "workspace", limiter)
    refusal, limited = answers.refusal, answers.limited

    def signed_in(request: Request, who: SignedIn) -> JSONResponse:
        """The session of a professional who just proved their passkey, and where to go."""
        token, _ = ws.signin_session(who)
        response = JSONResponse({"next": f"{HOME}?lang={language(request)}"})
        pages.set_cookie(response, SESSION_COOKIE, token, SESSION_MAX_AGE)
        return response

    # --- the card proof (the command line) -------------------------------------------------

    @router.post(
        CARD_CHALLENGE,
        responses={200: answer("a challenge for the card to sign"), 429: JSON_ERRORS[429]},
    )
    @access(TOKEN_REQUEST)
    async def card_challenge(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        challenge = await run_in_threadpool(ws.signin.card_challenge)
        return JSONResponse(
            {"challenge": challenge, "audience": ws.signin.card_audience},
            headers={"Cache-Control": "no-store"},
        )

    @router.post(
        CARD_ENROL_PATH,
        responses={200: answer("the enrolment code for a passkey"), **JSON_ERRORS},
        openapi_extra=form(("client_assertion",), ("client_assertion",)),
    )
    @access(TOKEN_REQUEST, CARD_AUDITED)
    async def card_enrol(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        try:
            posted = await read_form(request)
        except FormRefused:
            return refusal(request, 400, "form")
        try:
            enrolment = await run_in_threadpool(
                ws.signin.enrol_card, posted.get("client_assertion", "")
            )
        except CardRefused as error:
            admitted(request).note("4", {"reason": error.message[:300]}, status=401)
            return JSONResponse({"error": error.message}, status_code=401)
        admitted(request).note(
            "0",
            {
                "practitioner": f"Practitioner/{enrolment.practitioner_id}",
                "certificate": enrolment.certificate_serial,
            },
        )
        return JSONResponse(
            {
                "code": enrolment.code,
                "expires_at": enrolment.expires_at.isoformat(),
                "enrol_url": ws.settings.public_url + ENROL,
            },
            headers={"Cache-Control": "no-store"},
        )

    # --- enrolling a passkey (the browser) -------------------------------------------------

    @router.get(
        ENROL,
        response_class=HTMLResponse,
        responses={200: html("the passkey enrolment page")},
        openapi_extra=query("lang"),
    )
    @access(FORM)
    async def show_enrol(request: Request) -> Response:
        return pages.anonymous_form(request, "workspace_enrol.html", 200, {}, family="workspace")

    @router.post(
        ENROL + "/options",
        responses={200: answer("WebAuthn creation options"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf", "code"))),
    )
    @access(FORM, ENROL_AUDITED)
    async def enrol_options(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        try:
            posted = await pages.anonymous_post(request)
        except FormRefused:
            return refusal(request, 400, "form")
        try:
            options = await run_in_threadpool(
                ws.signin.registration_options, posted.get("code", "")
            )
        except PasskeyRefused as error:
            admitted(request).note(
                "4", {"reason": error.message[:300]}, interaction="workspace-code", status=401
            )
            return refusal(request, 401, "bad_code")
        return Response(options, media_type="application/json")

    @router.post(
        ENROL,
        responses={200: answer("enrolled and signed in: where to go"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf", "credential"))),
    )
    @access(FORM, ENROL_AUDITED)
    async def enrol(request: Request) -> Response:
        try:
            posted = await pages.anonymous_post(request)
        except FormRefused:
            return refusal(request, 400, "form")
        try:
            who = await run_in_threadpool(ws.signin.register, posted.get("credential", ""))
        except PasskeyRefused as error:
            admitted(request).note("4", {"reason": error.message[:300]}, status=401)
            return refusal(request, 401, "passkey_refused")
        admitted(request).note("0", _who(who))
        return await run_in_threadpool(signed_in, request, who)

    # --- signing in and out ----------------------------------------------------------------

    @router.get(
        LOGIN,
        response_class=HTMLResponse,
        responses={200: html("the workspace's sign-in page")},
        openapi_extra=query("lang"),
    )
    @access(FORM)
    async def show_login(request: Request) -> Response:
        return pages.anonymous_form(request, "workspace_login.html", 200, {}, family="workspace")

    @router.post(
        LOGIN + "/options",
        responses={200: answer("WebAuthn request options"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    @access(FORM)
    async def login_options(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        try:
            await pages.anonymous_post(request)
        except FormRefused:
            return refusal(request, 400, "form")
        options = await run_in_threadpool(ws.signin.sign_in_options)
        return Response(options, media_type="application/json")

    @router.post(
        LOGIN,
        responses={200: answer("signed in: where to go"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf", "credential"))),
    )
    @access(FORM, SIGN_IN_AUDITED)
    async def sign_in(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        try:
            posted = await pages.anonymous_post(request)
        except FormRefused:
            return refusal(request, 400, "form")
        try:
            who = await run_in_threadpool(ws.signin.sign_in, posted.get("credential", ""))
        except PasskeyRefused as error:
            admitted(request).note("4", {"reason": error.message[:300]}, status=401)
            return refusal(request, 401, "passkey_refused")
        admitted(request).note("0", _who(who))
        return await run_in_threadpool(signed_in, request, who)

    @router.post(
        "/workspace/logout",
        response_class=Response,
        status_code=303,
        responses={303: redirect("to the workspace's sign-in page")},
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    @access(SESSION)
    async def sign_out(request: Request) -> Response:
        try:
            await ws.posted(request)
        except (Answered, CareVaultError):
            return ws.to_login(request)
        await run_in_threadpool(ws.sessions.end, request.cookies.get(SESSION_COOKIE))
        return signed_out(ws.to_login(request))

    return router


def _who(who: SignedIn) -> dict[str, str]:
    return {
        "practitioner": f"Practitioner/{who.practitioner_id}",
        "certificate": who.certificate_serial,
        "kind": PRACTITIONER_SESSION,
    }


__all__ = ["ENROL", "workspace_signin_router"]
