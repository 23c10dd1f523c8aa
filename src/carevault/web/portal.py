"""The patient portal: sign-in (password + TOTP), the access history, sign-out.

Server-rendered pages with the same security headers as the API (no inline script or style).
Sessions live on the server (`carevault.services.portal_sessions`); the cookie is HttpOnly,
SameSite=Strict and Secure outside ``dev``. Every form carries a CSRF token: before sign-in a
double-submit cookie, after it the session's own token. Errors are pages a person can read.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.domain.accounts import AccountKind, AuthenticationFailed, Throttled
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import CareVaultError, NotAuthenticated, NotPermitted
from carevault.services.access_history import access_history
from carevault.services.accounts import AccountService
from carevault.services.audit_log import AuditLog, AuditUnavailable
from carevault.services.directory import read_patient
from carevault.services.portal_sessions import PortalSessions, check_csrf
from carevault.settings import Settings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SESSION_COOKIE = "cv_session"
LOGIN_CSRF_COOKIE = "cv_login_csrf"
MAX_FORM_BYTES = 8_192
HISTORY_PAGE = 50

TEXT = {
    "en": {
        "title": "Sign in",
        "login": "Login",
        "password": "Password",
        "code": "Code from your authenticator app (or a recovery code)",
        "submit": "Sign in",
        "failed": "The login, the password or the code is not right.",
        "throttled": "Too many attempts. Please wait {seconds} seconds and try again.",
        "history": "Who accessed your record",
        "signout": "Sign out",
        "empty": "Nobody has accessed your record yet.",
        "hello": "Your record",
        "proof": "Each line is proven to be in the tamper-evident log of size {size}.",
        "form": "The form is out of date. Please try again.",
        "representative": "You act for other people: choosing whose record comes soon; "
        "until then, use the FHIR API.",
    },
    "fr": {
        "title": "Connexion",
        "login": "Identifiant",
        "password": "Mot de passe",
        "code": "Code de votre application d'authentification (ou un code de secours)",
        "submit": "Se connecter",
        "failed": "L'identifiant, le mot de passe ou le code n'est pas correct.",
        "throttled": "Trop de tentatives. Veuillez patienter {seconds} secondes.",
        "history": "Qui a consulté votre dossier",
        "signout": "Se déconnecter",
        "empty": "Personne n'a encore consulté votre dossier.",
        "hello": "Votre dossier",
        "proof": "Chaque ligne est prouvée présente dans le journal infalsifiable de "
        "taille {size}.",
        "form": "Le formulaire a expiré. Veuillez réessayer.",
        "representative": "Vous agissez pour d'autres personnes : le choix du dossier "
        "arrive bientôt.",
    },
}


def _language(request: Request) -> str:
    lang = request.query_params.get("lang", "en")
    return lang if lang in TEXT else "en"


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise NotPermitted("the form is too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), max_num_fields=10))
    except (UnicodeDecodeError, ValueError):
        raise NotPermitted("the form is malformed") from None


def portal_router(
    settings: Settings,
    accounts: AccountService,
    sessions: PortalSessions,
    log: AuditLog,
    units: Callable[[], UnitOfWork],
    clock: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter()
    secure = settings.environment != "dev"

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, secure=secure, samesite="strict", path="/"
        )

    def login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        lang = _language(request)
        csrf = secrets.token_urlsafe(32)
        response = TEMPLATES.TemplateResponse(
            request,
            "login.html",
            {"t": TEXT[lang], "lang": lang, "csrf": csrf, "error": error},
            status_code=status,
        )
        set_cookie(response, LOGIN_CSRF_COOKIE, csrf, 900)
        return response

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def show_login(request: Request) -> Response:
        return login_page(request)

    @router.post("/login", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        lang = _language(request)
        try:
            form = await _form(request)
            check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf"))
        except NotPermitted:
            return login_page(request, 403, TEXT[lang]["form"])
        client = request.client.host if request.client else ""
        try:
            principal = await run_in_threadpool(
                accounts.login,
                form.get("login", ""),
                form.get("password", ""),
                form.get("code", ""),
                client,
            )
        except Throttled as error:
            page = login_page(
                request, 429, TEXT[lang]["throttled"].format(seconds=error.retry_after)
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return page
        except AuthenticationFailed:
            return login_page(request, 401, TEXT[lang]["failed"])
        patient = principal.patient_id if principal.kind is AccountKind.PATIENT else None
        if principal.kind is AccountKind.OPERATOR:
            return login_page(request, 403, TEXT[lang]["failed"])
        token, _session = await run_in_threadpool(sessions.open, principal.account_id, patient)
        response = RedirectResponse(f"/me?lang={lang}", status_code=303)
        set_cookie(response, SESSION_COOKIE, token, 1800)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @router.get("/me", response_class=HTMLResponse, include_in_schema=False)
    async def my_record(request: Request) -> Response:
        lang = _language(request)
        try:
            session = await run_in_threadpool(sessions.resume, request.cookies.get(SESSION_COOKIE))
        except NotAuthenticated:
            return RedirectResponse(f"/login?lang={lang}", status_code=303)
        context: dict[str, Any] = {
            "t": TEXT[lang],
            "lang": lang,
            "csrf": session.csrf,
            "entries": [],
            "name": None,
            "tree_size": None,
        }
        if session.patient_id is None:
            context["notice"] = TEXT[lang]["representative"]
            return TEMPLATES.TemplateResponse(request, "me.html", context)
        client = request.client.host if request.client else None

        def load() -> None:
            with units() as uow:
                resource = read_patient(uow, session.patient_id or "").resource
            name = resource.get("name", [{}])[0]
            context["name"] = " ".join([*name.get("given", []), name.get("family", "")])
            history = access_history(
                log,
                units,
                session.patient_id or "",
                known_size=None,
                after=-1,
                limit=HISTORY_PAGE,
                language=lang,
            )
            # The patient reading their own history is an access too: it is recorded.
            log.append(
                [
                    AuditRecord(
                        stream="clinical",
                        recorded=rfc3339_ms(clock()),
                        kind="patient-action",
                        action="R",
                        interaction="access-history",
                        outcome="0",
                        agent=Agent(
                            who=f"account:{session.account_id}", role="patient", network=client
                        ),
                        patient=session.patient_id,
                        entity_type="AuditEvent",
                    )
                ]
            )
            context["entries"] = [
                {"text": e.text, "index": e.leaf_index} for e in reversed(history.entries)
            ]
            context["tree_size"] = history.tree_head.tree_size

        try:
            await run_in_threadpool(load)
        except AuditUnavailable:
            return HTMLResponse("<p>The service is unavailable; nothing was shown.</p>", 503)
        return TEMPLATES.TemplateResponse(request, "me.html", context)

    @router.post("/logout", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        lang = _language(request)
        token = request.cookies.get(SESSION_COOKIE)
        try:
            session = await run_in_threadpool(sessions.resume, token)
            form = await _form(request)
            check_csrf(session.csrf, form.get("csrf"))
        except CareVaultError:
            return RedirectResponse(f"/login?lang={lang}", status_code=303)
        await run_in_threadpool(sessions.end, token)
        response = RedirectResponse(f"/login?lang={lang}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router
