"""A patient's or representative's passkeys: the page that lists, adds and removes them, and
the sign-in's request for a passkey challenge.

A passkey is a second factor besides the TOTP code: at ``/login`` the person types their login
and password, and their browser's passkey stands where the code would (`AccountService.login`
checks both in one attempt). The ceremonies run in ``/static/passkey.js`` (the CSP allows no
inline script); these routes hand it the options and check its answers. Adding one asks for the
password again (a session left open is not enough to add a way to sign in). Adding and removing
are recorded by `AccountPasskeys`, in the person's audit stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.access import TokenBucketLimiter
from carevault.api.openapi import answer, form, html, merged, query, redirect
from carevault.api.route_door import FORM, SESSION, access
from carevault.domain.accounts import AuthenticationFailed, Throttled
from carevault.domain.errors import NotAuthenticated, NotFound
from carevault.services.passkey_ceremony import PasskeyRefused
from carevault.web.i18n import language
from carevault.web.pages import PERSONS, FormRefused, JsonAnswers, client_address

if TYPE_CHECKING:
    from carevault.services.account_passkeys import AccountPasskeys
    from carevault.services.portal_sessions import PortalSession
    from carevault.web.portal import PortalContext

PAGE = "/me/passkeys"
SIGN_IN_OPTIONS = "/login/passkey"
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: answer("the form is out of date (CSRF) or malformed"),
    401: answer("refused: the message says what to do"),
    403: answer("an operator's session: operators have no passkeys here"),
    429: answer("too many attempts (Retry-After)"),
}


def passkeys_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages
    limiter = TokenBucketLimiter(ctx.settings.rate_limit_per_minute)

    def service() -> AccountPasskeys:
        if ctx.passkeys is None:  # wired by bootstrap; a portal without it has no passkeys
            raise NotFound("passkeys are not offered here")
        return ctx.passkeys

    answers = JsonAnswers(pages, "passkeys", limiter)
    refusal, limited = answers.refusal, answers.limited

    async def person_post(request: Request) -> tuple[PortalSession, dict[str, str]] | Response:
        """The session and form of a patient's or representative's ceremony step, or the JSON
        refusal instead: signed out (401), the form out of date (400), an operator (403)."""
        try:
            session, posted = await pages.signed_post(request)
        except NotAuthenticated:
            return refusal(request, 401, "signed_out")
        except FormRefused:
            return refusal(request, 400, "form")
        if session.kind not in PERSONS:
            return refusal(request, 403, "persons_only")
        return session, posted

    @router.post(
        SIGN_IN_OPTIONS,
        responses={200: answer("WebAuthn request options for the sign-in"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    @access(FORM)
    async def sign_in_options(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        try:
            await pages.anonymous_post(request)
        except FormRefused:
            return refusal(request, 400, "form")
        options = await run_in_threadpool(lambda: service().sign_in_options())
        return Response(options, media_type="application/json")

    @router.get(
        PAGE,
        response_class=HTMLResponse,
        responses={
            200: html("the account's passkeys"),
            303: redirect("to the sign-in page"),
            403: html("an operator's session: operators have no passkeys here"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def show(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            return pages.to_login(request)
        if session.kind not in PERSONS:
            return pages.error(request, 403, pages.text(request, "persons_only", "passkeys"))
        keys = await run_in_threadpool(lambda: service().of_account(session.account_id))
        return pages.render(
            request,
            "passkeys.html",
            {"csrf": session.csrf, "keys": keys, "removed": request.query_params.get("removed")},
            family="passkeys",
        )

    @router.post(
        PAGE + "/options",
        responses={200: answer("WebAuthn creation options"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf", "password"))),
    )
    @access(SESSION)
    async def add_options(request: Request) -> Response:
        if (slow := limited(request)) is not None:
            return slow
        answer = await person_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        password, client = posted.get("password", ""), client_address(request)
        try:
            confirmed = await run_in_threadpool(
                lambda: ctx.accounts.confirm_password(
                    session.account_id, password, interaction="passkey-add", client_ip=client
                )
            )
        except Throttled as error:
            refused = refusal(request, 429, "throttled")
            refused.headers["Retry-After"] = str(error.retry_after)
            return refused
        except AuthenticationFailed:
            return refusal(request, 401, "wrong_password")
        try:
            options = await run_in_threadpool(lambda: service().registration_options(confirmed))
        except PasskeyRefused:
            return refusal(request, 401, "refused")
        return Response(options, media_type="application/json")

    @router.post(
        PAGE,
        responses={200: answer("the passkey is added: where to go"), **JSON_ERRORS},
        openapi_extra=merged(query("lang"), form(("csrf", "credential"))),
    )
    @access(SESSION)
    async def add(request: Request) -> Response:
        answer = await person_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        client = client_address(request)
        try:
            await run_in_threadpool(
                lambda: service().register(session.account_id, posted.get("credential", ""), client)
            )
        except PasskeyRefused:
            return refusal(request, 401, "refused")
        return JSONResponse({"next": f"{PAGE}?lang={language(request)}&added=1"})

    @router.post(
        PAGE + "/remove",
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("removed: back to the passkeys"),
            400: html("the form is out of date (CSRF)"),
            404: html("no such passkey on this account"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "credential_id"))),
    )
    @access(SESSION)
    async def remove(request: Request) -> Response:
        answer = await pages.form_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        client = client_address(request)
        try:
            await run_in_threadpool(
                lambda: service().remove(
                    session.account_id, posted.get("credential_id", ""), client
                )
            )
        except NotFound:
            return pages.error(request, 404, pages.text(request, "unknown", "passkeys"))
        return RedirectResponse(f"{PAGE}?lang={language(request)}&removed=1", status_code=303)

    return router


__all__ = ["PAGE", "SIGN_IN_OPTIONS", "passkeys_page_router"]
