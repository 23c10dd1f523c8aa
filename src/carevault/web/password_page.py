"""A patient's or representative's password: the page that changes it.

The current password proves it is the holder (an open session is not enough: a computer left
signed in must not let someone lock the holder out), and counts towards the account's throttle
like a failed sign-in when wrong; the new one must pass the same policy as at enrolment
(`domain.accounts.check_password`), typed twice. `AccountService.change_password` records the
change, or the failed attempt, in the person's audit stream. The sessions stay open: the page
says how to end the others ("sign out everywhere" on the home page).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.accounts import AuthenticationFailed, Throttled
from carevault.domain.errors import CareVaultError
from carevault.web.i18n import language
from carevault.web.pages import PERSONS, client_address

if TYPE_CHECKING:
    from carevault.services.portal_sessions import PortalSession
    from carevault.web.portal import PortalContext

PAGE = "/me/password"


def password_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    def show_form(
        request: Request, session: PortalSession, status: int = 200, error: str | None = None
    ) -> Response:
        context = {
            "csrf": session.csrf,
            "error": error,
            "done": request.query_params.get("done") == "1",
        }
        return pages.render(request, "password.html", context, status, family="password")

    @router.get(
        PAGE,
        response_class=HTMLResponse,
        responses={
            200: html("the form that changes the account's password"),
            303: redirect("not signed in: to the sign-in page"),
            403: html("an operator's session: operators change theirs elsewhere"),
        },
        openapi_extra=query("lang", "done"),
    )
    @access(SESSION)
    async def show(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            return pages.to_login(request)
        if session.kind not in PERSONS:
            return pages.error(request, 403, pages.text(request, "persons_only", "password"))
        return show_form(request, session)

    @router.post(
        PAGE,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("changed: back to the page, which says so; or not signed in"),
            400: html("the form is out of date (CSRF), or the new password typed twice differs"),
            401: html("the current password is not this account's: nothing changed"),
            403: html("an operator's session: operators change theirs elsewhere"),
            422: html("the new password breaks the policy: the page says which rule"),
            429: html("too many attempts (Retry-After)"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "current", "new", "again"))),
    )
    @access(SESSION)
    async def change(request: Request) -> Response:
        answer = await pages.form_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        if session.kind not in PERSONS:
            return pages.error(request, 403, pages.text(request, "persons_only", "password"))

        def text(key: str) -> str:
            return pages.text(request, key, "password")

        new = posted.get("new", "")
        if new != posted.get("again", ""):
            return show_form(request, session, 400, text("mismatch"))
        current, client = posted.get("current", ""), client_address(request)
        try:
            await run_in_threadpool(
                lambda: ctx.accounts.change_password(
                    session.account_id, current, new, client_ip=client
                )
            )
        except Throttled as error:
            page = show_form(request, session, 429, text("throttled"))
            page.headers["Retry-After"] = str(error.retry_after)
            return page
        except AuthenticationFailed:
            return show_form(request, session, 401, text("wrong_password"))
        except CareVaultError as error:  # the policy's rule, as at enrolment
            return show_form(request, session, 422, error.message)
        return RedirectResponse(f"{PAGE}?lang={language(request)}&done=1", status_code=303)

    return router


__all__ = ["PAGE", "password_page_router"]
