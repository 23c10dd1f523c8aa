"""Signing in and out, and opening an account: the portal's doors.

Patients and representatives sign in at ``/login``, operators and security officers at
``/operator/login`` ("one function, one directory"); an account at the wrong door gets the same
answer as a wrong password. A patient opens their account at ``/enrol`` with the activation
code the desk gave them, then proves their authenticator app works. Signing out ends the
session on the server; "sign out everywhere" ends every session of the account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from carevault.api.access import TokenBucketLimiter
from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import FORM, SESSION, Audited, access, admitted
from carevault.domain.accounts import AccountKind, AuthenticationFailed, Throttled
from carevault.domain.audit import ACTION_CREATE
from carevault.domain.errors import CareVaultError, NotAuthenticated, RateLimited
from carevault.services import invitations
from carevault.services.audit_log import AuditUnavailable
from carevault.services.invitations import InvitationRefused
from carevault.web.i18n import language
from carevault.web.pages import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    FormRefused,
    client_address,
    signed_out,
)

# What the door records of an enrolment the view refuses (an opened account is recorded by the
# accounts service, in its transaction).
REFUSED_ENROLMENT = Audited("clinical", "authentication", ACTION_CREATE, "enrol")

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

SIGN_IN: dict[str, Any] = {
    "response_class": Response,
    "status_code": 303,
    "responses": {
        303: redirect("signed in: to the page asked for"),
        401: html("the login, the password or the code is not right"),
        403: html("the form is out of date (CSRF)"),
        429: html("too many attempts (Retry-After)"),
    },
    "openapi_extra": merged(
        query("lang"), form(("login", "password", "code", "passkey", "csrf", "next"))
    ),
}


def session_kind(kind: AccountKind, security_officer: bool, registrar: bool = False) -> str:
    if kind is AccountKind.OPERATOR:
        if security_officer:
            return "security-officer"
        return "registrar" if registrar else "operator"
    return kind.value


def safe_next(value: str | None) -> str | None:
    """Only our own authorization page may be returned to after sign-in (no open redirect)."""
    if value and value.startswith("/oauth/authorize?") and "\\" not in value and len(value) < 4096:
        return value
    return None


def signin_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    def login_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        next_url: str | None = None,
        *,
        operators: bool = False,
    ) -> Response:
        next_url = safe_next(next_url or request.query_params.get("next"))
        other = "/login" if operators else "/operator/login"
        return pages.anonymous_form(
            request,
            "login.html",
            status,
            {
                "error": error,
                "next": next_url,
                "operators": operators,
                "action": "/operator/login" if operators else "/login",
                "other": other + (f"?{urlencode({'next': next_url})}" if next_url else ""),
            },
        )

    @router.get(
        "/login",
        response_class=HTMLResponse,
        responses={200: html("the sign-in page")},
        openapi_extra=query("lang", "next"),
    )
    @access(FORM)
    async def show_login(request: Request) -> Response:
        return login_page(request)

    @router.post("/login", **SIGN_IN)
    @access(FORM)
    async def sign_in(request: Request) -> Response:
        return await _sign_in(request, operators=False)

    @router.get(
        "/operator/login",
        response_class=HTMLResponse,
        responses={200: html("the operators' sign-in page")},
        openapi_extra=query("lang", "next"),
    )
    @access(FORM)
    async def show_operator_login(request: Request) -> Response:
        return login_page(request, operators=True)

    @router.post("/operator/login", **SIGN_IN)
    @access(FORM)
    async def operator_sign_in(request: Request) -> Response:
        return await _sign_in(request, operators=True)

    async def _sign_in(request: Request, *, operators: bool) -> Response:
        lang = language(request)
        try:
            posted = await pages.anonymous_post(request)
        except FormRefused:
            return login_page(request, 403, pages.text(request, "form"), operators=operators)
        next_url = safe_next(posted.get("next"))
        try:
            principal = await run_in_threadpool(
                ctx.accounts.login,
                posted.get("login", ""),
                posted.get("password", ""),
                posted.get("code", ""),
                client_address(request) or "",
                passkey="" if operators else posted.get("passkey", ""),
            )
        except Throttled as error:
            page = login_page(
                request,
                429,
                pages.text(request, "throttled", seconds=error.retry_after),
                next_url,
                operators=operators,
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return page
        except AuthenticationFailed:
            failed = pages.text(request, "failed")
            return login_page(request, 401, failed, next_url, operators=operators)
        if (principal.kind is AccountKind.OPERATOR) != operators:
            failed = pages.text(request, "failed")
            return login_page(request, 401, failed, next_url, operators=operators)
        kind = session_kind(principal.kind, principal.security_officer, principal.registrar)
        patient = principal.patient_id if principal.kind is AccountKind.PATIENT else None
        token, _session = await run_in_threadpool(
            ctx.sessions.open, principal.account_id, kind, patient
        )
        response = RedirectResponse(next_url or f"/me?lang={lang}", status_code=303)
        pages.set_cookie(response, SESSION_COOKIE, token, SESSION_MAX_AGE)
        return response

    @router.post(
        "/logout",
        response_class=Response,
        status_code=303,
        responses={303: redirect("to the sign-in page")},
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    @access(SESSION)
    async def sign_out(request: Request) -> Response:
        try:
            await pages.signed_post(request)
        except (NotAuthenticated, FormRefused):
            return pages.to_login(request)
        await run_in_threadpool(ctx.sessions.end, request.cookies.get(SESSION_COOKIE))
        return signed_out(pages.to_login(request))

    @router.post(
        "/logout/everywhere",
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("every session of the account ended: to the sign-in page"),
            400: html("the form is out of date (CSRF): nothing was ended"),
            503: html("the audit log is unavailable; nothing was ended"),
        },
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    @access(SESSION)
    async def sign_out_everywhere(request: Request) -> Response:
        """End every session of the account (this browser's and every other's): after a
        phone is lost, or a shared computer was left signed in."""
        try:
            session, _posted = await pages.signed_post(request)
        except NotAuthenticated:
            return pages.to_login(request)
        except FormRefused:
            return pages.error(request, 400, pages.text(request, "form"))
        client = client_address(request)
        try:
            await run_in_threadpool(
                lambda: ctx.accounts.sign_out_everywhere(session.account_id, client_ip=client)
            )
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable_done"))
        return signed_out(pages.to_login(request))

    enrol_limiter = TokenBucketLimiter(10)

    def enrol_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        return pages.anonymous_form(request, "enrol.html", status, {"error": error})

    @router.get(
        "/enrol",
        response_class=HTMLResponse,
        responses={200: html("the enrolment form")},
        openapi_extra=query("lang"),
    )
    @access(FORM)
    async def show_enrol(request: Request) -> Response:
        return enrol_page(request)

    def refused_enrolment(request: Request, status: int, reason: str, page: Response) -> Response:
        """``page``, once the door has the refused enrolment to record before it answers:
        guessing activation codes must be visible to the security officer. Nothing typed is
        kept (the national number names someone who may not be the one trying)."""
        admitted(request).note("4", {"reason": reason}, status=status)
        return page

    @router.post(
        "/enrol",
        response_class=HTMLResponse,
        responses={
            200: html("the account is opened: its TOTP secret and recovery codes"),
            401: html("no invitation in force for this code and number"),
            403: html("the form is out of date (CSRF)"),
            422: html("the passwords differ, or a rule refuses the account"),
            429: html("too many enrolments from this address (Retry-After)"),
        },
        openapi_extra=merged(
            query("lang"),
            form(("national_id", "activation", "login", "password", "password2", "csrf")),
        ),
    )
    @access(FORM, REFUSED_ENROLMENT)
    async def enrol(request: Request) -> Response:
        client = client_address(request) or ""
        try:
            enrol_limiter.check(client)
            posted = await pages.anonymous_post(request)
        except RateLimited as error:
            page = enrol_page(
                request, 429, pages.text(request, "throttled", seconds=error.retry_after)
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return refused_enrolment(request, 429, "throttled", page)
        except CareVaultError:
            return enrol_page(request, 403, pages.text(request, "form"))
        if posted.get("password", "") != posted.get("password2", ""):
            return enrol_page(request, 422, pages.text(request, "mismatch"))
        code = posted.get("activation", "")

        def open_account() -> Any:
            return invitations.open_account(
                ctx.units,
                code,
                posted.get("national_id", ""),
                ctx.settings.national_id_system,
                ctx.clock(),
                lambda patient_id: ctx.accounts.enrol_patient(
                    posted.get("login", ""),
                    posted.get("password", ""),
                    patient_id=patient_id,
                    client_ip=client,
                ),
            )

        try:
            enrolment = await run_in_threadpool(open_account)
        except InvitationRefused:
            page = enrol_page(request, 401, pages.text(request, "invitation"))
            return refused_enrolment(request, 401, "invitation refused", page)
        except CareVaultError as error:
            return enrol_page(request, 422, error.message)
        return pages.render(
            request,
            "enrol_done.html",
            {
                "csrf": request.cookies.get(LOGIN_CSRF_COOKIE, ""),
                "account_id": enrolment.account_id,
                # Safe to inline: segno draws the URI as path data only, with a fixed title;
                # no byte of user input reaches the markup as text (tested).
                "qr": Markup(enrolment.qr_svg),  # noqa: S704
                "uri": enrolment.totp_provisioning_uri,
                "codes": enrolment.recovery_codes,
            },
        )

    @router.post(
        "/enrol/confirm",
        response_class=HTMLResponse,
        responses={
            200: html("the account is ready"),
            401: html("the code is not right"),
            403: html("the form is out of date (CSRF)"),
            429: html("too many attempts"),
        },
        openapi_extra=merged(query("lang"), form(("account_id", "code", "csrf"))),
    )
    @access(FORM)
    async def confirm_enrolment(request: Request) -> Response:
        client = client_address(request)
        try:
            posted = await pages.anonymous_post(request)
        except CareVaultError:
            return pages.error(request, 403, pages.text(request, "form"))
        account_id, code = posted.get("account_id", ""), posted.get("code", "")
        try:
            await run_in_threadpool(
                lambda: ctx.accounts.confirm_totp(account_id, code, client_ip=client)
            )
        except RateLimited as error:
            message = pages.text(request, "throttled", seconds=error.retry_after)
            return pages.error(request, 429, message)
        except CareVaultError:
            return pages.render(
                request,
                "enrol_done.html",
                {
                    "csrf": posted.get("csrf", ""),
                    "account_id": account_id,
                    "error": pages.text(request, "badcode"),
                },
                401,
            )
        return pages.render(request, "enrol_ready.html")

    return router


__all__ = ["SIGN_IN", "safe_next", "session_kind", "signin_router"]
