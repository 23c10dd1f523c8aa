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
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.api.access import TokenBucketLimiter
from carevault.api.openapi import form, html, merged, query, redirect
from carevault.domain.accounts import AccountKind, AuthenticationFailed, Throttled
from carevault.domain.affinity import AffinityDomain
from carevault.domain.audit import ACTION_CREATE, Agent, AuditRecord, rfc3339_ms
from carevault.domain.authorization import Subject, SubjectKind
from carevault.domain.errors import (
    CareVaultError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    RateLimited,
)
from carevault.services.access_history import access_history
from carevault.services.accounts import AccountService, Principal
from carevault.services.audit_log import AuditLog, AuditUnavailable
from carevault.services.directory import read_patient
from carevault.services.invitations import InvitationRefused, mark_used, redeemable
from carevault.services.patient_apps import AppRequest, approve, check_request
from carevault.services.portal_sessions import PortalSessions, check_csrf
from carevault.services.record_policy import Actor, RecordPolicy
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
        "authorize": "An app asks to reach your record",
        "approve": "Allow",
        "deny": "Refuse",
        "asks": "{app} asks for:",
        "error": "Something is wrong",
        "operators": "Operators and security officers",
        "to_operators": "Operators and security officers sign in here",
        "to_patients": "Patients sign in here",
        "enrol": "Open your account",
        "national": "Your national identification number (13 digits)",
        "activation": "The activation code you were given",
        "password2": "The same password again",
        "mismatch": "The two passwords are not the same.",
        "invitation": "This activation code and national number do not match an invitation "
        "in force. Ask the desk for a new code.",
        "scan": "Scan this code with your authenticator app, then type the code it shows.",
        "recovery": "Your recovery codes: keep them somewhere safe. Each works once, if you "
        "lose your phone.",
        "confirm": "Confirm",
        "badcode": "That code is not right. Type the code your app shows now.",
        "ready": "Your account is ready.",
        "signin_now": "Sign in",
        "choose": "You act for other people. Choose whose record to open:",
        "act": "Open this record",
        "operator": "Operators never see medical content. Security officers read the audit "
        "log through the API (AuditEvent) with a token of their own.",
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
        "authorize": "Une application demande l'accès à votre dossier",
        "approve": "Autoriser",
        "deny": "Refuser",
        "asks": "{app} demande :",
        "error": "Un problème est survenu",
        "operators": "Opérateurs et responsables de la sécurité",
        "to_operators": "Connexion des opérateurs et responsables de la sécurité",
        "to_patients": "Connexion des patients",
        "enrol": "Ouvrir votre compte",
        "national": "Votre numéro d'identification national (13 chiffres)",
        "activation": "Le code d'activation que vous avez reçu",
        "password2": "Le même mot de passe, à nouveau",
        "mismatch": "Les deux mots de passe ne sont pas identiques.",
        "invitation": "Ce code d'activation et ce numéro ne correspondent à aucune invitation "
        "en cours. Demandez un nouveau code au guichet.",
        "scan": "Scannez ce code avec votre application d'authentification, puis saisissez "
        "le code qu'elle affiche.",
        "recovery": "Vos codes de secours : gardez-les en lieu sûr. Chacun sert une fois, "
        "si vous perdez votre téléphone.",
        "confirm": "Confirmer",
        "badcode": "Ce code n'est pas correct. Saisissez le code affiché maintenant.",
        "ready": "Votre compte est prêt.",
        "signin_now": "Se connecter",
        "choose": "Vous agissez pour d'autres personnes. Choisissez le dossier à ouvrir :",
        "act": "Ouvrir ce dossier",
        "operator": "Les opérateurs ne voient jamais de contenu médical. Les responsables de "
        "la sécurité lisent le journal d'audit par l'API (AuditEvent).",
    },
}


OPERATOR_SESSIONS = ("operator", "security-officer", "registrar")


# The presence code's words (PRODUCT.md: the patient proves to a professional that they are there).
PRESENCE_TEXT = {
    "en": {
        "offer": "Seeing a professional who is not yet on your access list? Give them a code "
        "valid ten minutes, once: their visit then opens your record to them for 90 days.",
        "make": "Make a code for my professional",
        "title": "Your code for the professional in front of you",
        "until": "Valid once, until {until}. Give it only to the professional you are seeing.",
        "back": "Back to my record",
        "nobody": "Only the patient, or a representative who manages the record, makes codes.",
    },
    "fr": {
        "offer": "Vous consultez un professionnel qui n'a pas encore accès à votre dossier ? "
        "Donnez-lui un code valable dix minutes, une fois : sa consultation lui ouvre alors "
        "votre dossier pour 90 jours.",
        "make": "Créer un code pour mon professionnel",
        "title": "Votre code pour le professionnel en face de vous",
        "until": "Valable une fois, jusqu'à {until}. Ne le donnez qu'au professionnel que vous "
        "consultez.",
        "back": "Retour à mon dossier",
        "nobody": "Seul le patient, ou un représentant qui gère le dossier, crée des codes.",
    },
}


SIGN_IN: dict[str, Any] = {
    "response_class": Response,
    "status_code": 303,
    "responses": {
        303: redirect("signed in: to the page asked for"),
        401: html("the login, the password or the code is not right"),
        403: html("the form is out of date (CSRF)"),
        429: html("too many attempts (Retry-After)"),
    },
    "openapi_extra": merged(query("lang"), form(("login", "password", "code", "csrf", "next"))),
}


def _session_kind(kind: AccountKind, security_officer: bool, registrar: bool = False) -> str:
    if kind is AccountKind.OPERATOR:
        if security_officer:
            return "security-officer"
        return "registrar" if registrar else "operator"
    return kind.value


def _safe_next(value: str | None) -> str | None:
    """Only our own authorization page may be returned to after sign-in (no open redirect)."""
    if value and value.startswith("/oauth/authorize?") and "\\" not in value and len(value) < 4096:
        return value
    return None


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
    policy: RecordPolicy,
    *,
    affinity: AffinityDomain,
) -> APIRouter:
    router = APIRouter()
    secure = settings.environment != "dev"

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, secure=secure, samesite="strict", path="/"
        )

    def anonymous_form(
        request: Request, template: str, status: int, context: dict[str, Any]
    ) -> Response:
        """A form shown before sign-in: its CSRF token is a double-submit cookie."""
        lang = _language(request)
        csrf = secrets.token_urlsafe(32)
        response = TEMPLATES.TemplateResponse(
            request,
            template,
            {"t": TEXT[lang], "lang": lang, "csrf": csrf, **context},
            status_code=status,
        )
        set_cookie(response, LOGIN_CSRF_COOKIE, csrf, 1800)
        return response

    def login_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        next_url: str | None = None,
        *,
        operators: bool = False,
    ) -> Response:
        next_url = _safe_next(next_url or request.query_params.get("next"))
        other = "/login" if operators else "/operator/login"
        return anonymous_form(
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
    async def show_login(request: Request) -> Response:
        return login_page(request)

    @router.post("/login", **SIGN_IN)
    async def sign_in(request: Request) -> Response:
        return await _sign_in(request, operators=False)

    @router.get(
        "/operator/login",
        response_class=HTMLResponse,
        responses={200: html("the operators' sign-in page")},
        openapi_extra=query("lang", "next"),
    )
    async def show_operator_login(request: Request) -> Response:
        return login_page(request, operators=True)

    @router.post("/operator/login", **SIGN_IN)
    async def operator_sign_in(request: Request) -> Response:
        return await _sign_in(request, operators=True)

    async def _sign_in(request: Request, *, operators: bool) -> Response:
        """Patients and representatives sign in at /login, operators and security officers
        at /operator/login ("one function, one directory"); an account at the wrong door
        gets the same answer as a wrong password."""
        lang = _language(request)
        try:
            form = await _form(request)
            check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf"))
        except NotPermitted:
            return login_page(request, 403, TEXT[lang]["form"], operators=operators)
        next_url = _safe_next(form.get("next"))
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
                request,
                429,
                TEXT[lang]["throttled"].format(seconds=error.retry_after),
                next_url,
                operators=operators,
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return page
        except AuthenticationFailed:
            return login_page(request, 401, TEXT[lang]["failed"], next_url, operators=operators)
        if (principal.kind is AccountKind.OPERATOR) != operators:
            return login_page(request, 401, TEXT[lang]["failed"], next_url, operators=operators)
        kind = _session_kind(principal.kind, principal.security_officer, principal.registrar)
        patient = principal.patient_id if principal.kind is AccountKind.PATIENT else None
        token, _session = await run_in_threadpool(
            sessions.open, principal.account_id, kind, patient
        )
        response = RedirectResponse(next_url or f"/me?lang={lang}", status_code=303)
        set_cookie(response, SESSION_COOKIE, token, 1800)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @router.get(
        "/me",
        response_class=HTMLResponse,
        responses={
            200: html("the signed-in person's page: their access history"),
            303: redirect("not signed in: to the sign-in page"),
            503: html("the audit log is unavailable; nothing was shown"),
        },
        openapi_extra=query("lang"),
    )
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
        if session.kind in OPERATOR_SESSIONS:
            context["notice"] = TEXT[lang]["operator"]
            return TEMPLATES.TemplateResponse(request, "me.html", context)
        if session.patient_id is None:
            # A representative chooses whose record to act on, among their mandates.
            def mandates() -> list[dict[str, str]]:
                choices = []
                for mandate in accounts.mandates_of(session.account_id):
                    with units() as uow:
                        resource = read_patient(uow, mandate.patient_id).resource
                    name = resource.get("name", [{}])[0]
                    choices.append(
                        {
                            "patient_id": mandate.patient_id,
                            "scope": mandate.scope,
                            "name": " ".join([*name.get("given", []), name.get("family", "")]),
                        }
                    )
                return choices

            context["mandates"] = await run_in_threadpool(mandates)
            context["notice"] = TEXT[lang]["choose"]
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
                affinity=affinity,
                newest_first=True,
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
                            who=f"account:{session.account_id}", role=session.kind, network=client
                        ),
                        patient=session.patient_id,
                        entity_type="AuditEvent",
                    )
                ]
            )
            context["entries"] = [{"text": e.text, "index": e.leaf_index} for e in history.entries]
            context["tree_size"] = history.tree_head.tree_size
            context["presence"] = PRESENCE_TEXT[lang]

        try:
            await run_in_threadpool(load)
        except AuditUnavailable:
            return HTMLResponse("<p>The service is unavailable; nothing was shown.</p>", 503)
        return TEMPLATES.TemplateResponse(request, "me.html", context)

    enrol_limiter = TokenBucketLimiter(10)

    def enrol_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        return anonymous_form(request, "enrol.html", status, {"error": error})

    @router.get(
        "/enrol",
        response_class=HTMLResponse,
        responses={200: html("the enrolment form")},
        openapi_extra=query("lang"),
    )
    async def show_enrol(request: Request) -> Response:
        return enrol_page(request)

    def refused_enrolment(client: str, status: int, reason: str, page: Response) -> Response:
        """``page``, once the refused enrolment is in the audit log: guessing activation codes
        must be visible to the security officer. Nothing typed is kept (the national number
        names someone who may not be the one trying)."""
        try:
            log.append(
                [
                    AuditRecord(
                        stream="clinical",
                        recorded=rfc3339_ms(clock()),
                        kind="authentication",
                        action=ACTION_CREATE,
                        interaction="enrol",
                        outcome="4",
                        agent=Agent(who=None, network=client or None),
                        status=status,
                        detail={"reason": reason},
                    )
                ]
            )
        except AuditUnavailable:
            return HTMLResponse("<p>The service is unavailable; nothing was done.</p>", 503)
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
    async def enrol(request: Request) -> Response:
        lang = _language(request)
        client = request.client.host if request.client else ""
        try:
            enrol_limiter.check(client)
            form = await _form(request)
            check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf"))
        except RateLimited as error:
            page = enrol_page(
                request, 429, TEXT[lang]["throttled"].format(seconds=error.retry_after)
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return await run_in_threadpool(refused_enrolment, client, 429, "throttled", page)
        except CareVaultError:
            return enrol_page(request, 403, TEXT[lang]["form"])
        if form.get("password", "") != form.get("password2", ""):
            return enrol_page(request, 422, TEXT[lang]["mismatch"])
        code = form.get("activation", "")

        def open_account() -> Any:
            with units() as uow:
                patient_id = redeemable(
                    uow, code, form.get("national_id", ""), settings.national_id_system, clock()
                )
            enrolment = accounts.enrol_patient(
                form.get("login", ""),
                form.get("password", ""),
                patient_id=patient_id,
                client_ip=client,
            )
            with units() as uow:
                mark_used(uow, code, clock())
            return enrolment

        try:
            enrolment = await run_in_threadpool(open_account)
        except InvitationRefused:
            page = enrol_page(request, 401, TEXT[lang]["invitation"])
            return await run_in_threadpool(
                refused_enrolment, client, 401, "invitation refused", page
            )
        except CareVaultError as error:
            return enrol_page(request, 422, error.message)
        csrf = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        return TEMPLATES.TemplateResponse(
            request,
            "enrol_done.html",
            {
                "t": TEXT[lang],
                "lang": lang,
                "csrf": csrf,
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
    async def confirm_enrolment(request: Request) -> Response:
        lang = _language(request)
        client = request.client.host if request.client else None
        try:
            form = await _form(request)
            check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf"))
        except CareVaultError:
            return _error_page(request, lang, 403, TEXT[lang]["form"])
        account_id, code = form.get("account_id", ""), form.get("code", "")
        try:
            await run_in_threadpool(
                lambda: accounts.confirm_totp(account_id, code, client_ip=client)
            )
        except RateLimited as error:
            return _error_page(
                request, lang, 429, TEXT[lang]["throttled"].format(seconds=error.retry_after)
            )
        except CareVaultError:
            return TEMPLATES.TemplateResponse(
                request,
                "enrol_done.html",
                {
                    "t": TEXT[lang],
                    "lang": lang,
                    "csrf": form.get("csrf", ""),
                    "account_id": account_id,
                    "error": TEXT[lang]["badcode"],
                },
                status_code=401,
            )
        return TEMPLATES.TemplateResponse(
            request, "enrol_ready.html", {"t": TEXT[lang], "lang": lang}
        )

    @router.post(
        "/act-for",
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("to the chosen record, or to the sign-in page"),
            403: html("not a representative, or no mandate for this patient"),
        },
        openapi_extra=merged(query("lang"), form(("patient_id", "csrf"))),
    )
    async def act_for(request: Request) -> Response:
        lang = _language(request)
        token = request.cookies.get(SESSION_COOKIE) or ""
        try:
            session = await run_in_threadpool(sessions.resume, token)
            form = await _form(request)
            check_csrf(session.csrf, form.get("csrf"))
        except CareVaultError:
            return RedirectResponse(f"/login?lang={lang}", status_code=303)
        if session.kind != "representative":
            return _error_page(request, lang, 403, TEXT[lang]["form"])
        principal = Principal(
            session.account_id, AccountKind.REPRESENTATIVE, None, frozenset(), "session", clock()
        )
        patient_id = form.get("patient_id", "")
        client = request.client.host if request.client else None
        try:
            await run_in_threadpool(
                lambda: accounts.choose_patient(principal, patient_id, client_ip=client)
            )
        except NotPermitted as error:
            return _error_page(request, lang, 403, error.message)
        await run_in_threadpool(sessions.act_for, token, patient_id)
        return RedirectResponse(f"/me?lang={lang}", status_code=303)

    @router.post(
        "/logout",
        response_class=Response,
        status_code=303,
        responses={303: redirect("to the sign-in page")},
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
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
    async def authorize(request: Request) -> Response:
        lang = _language(request)
        params = dict(request.query_params)
        try:
            app_request = await run_in_threadpool(_check, params)
        except _UntrustedRedirect as error:
            return _error_page(request, lang, 400, str(error))
        except InvalidInput as error:
            return _redirect_error(
                params,
                "invalid_scope" if error.expression == "scope" else "invalid_request",
                error.message,
            )
        try:
            session = await run_in_threadpool(sessions.resume, request.cookies.get(SESSION_COOKIE))
        except NotAuthenticated:
            here = f"{request.url.path}?{request.url.query}"
            return RedirectResponse(
                f"/login?{urlencode({'next': here, 'lang': lang})}", status_code=303
            )
        operator = session.kind in OPERATOR_SESSIONS
        patient_scopes = app_request.scope_context == "patient"
        if operator == patient_scopes or (not operator and session.patient_id is None):
            return _redirect_error(
                params, "access_denied", "these scopes are not for this kind of account"
            )
        return TEMPLATES.TemplateResponse(
            request,
            "authorize.html",
            {
                "t": TEXT[lang],
                "lang": lang,
                "csrf": session.csrf,
                "app": app_request,
                "params": params,
                "scopes": app_request.scope.split(),
            },
        )

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
    async def decide(request: Request) -> Response:
        lang = _language(request)
        token = request.cookies.get(SESSION_COOKIE)
        try:
            session = await run_in_threadpool(sessions.resume, token)
            form = await _form(request)
            check_csrf(session.csrf, form.get("csrf"))
        except CareVaultError:
            return _error_page(request, lang, 403, TEXT[lang]["form"])
        params = {k: v for k, v in form.items() if k in AUTHORIZE_PARAMS}
        try:
            app_request = await run_in_threadpool(_check, params)
        except (_UntrustedRedirect, InvalidInput) as error:
            return _error_page(request, lang, 400, str(error))
        operator = session.kind in OPERATOR_SESSIONS
        if form.get("decision") != "approve" or operator == (
            app_request.scope_context == "patient"
        ):
            return _redirect_error(params, "access_denied", "the request was declined")

        def issue() -> str:
            with units() as uow:
                return approve(
                    uow,
                    app_request,
                    session.account_id,
                    session.patient_id,
                    clock(),
                    kind=session.kind,
                )

        return RedirectResponse(await run_in_threadpool(issue), status_code=303)

    def _check(params: dict[str, str]) -> AppRequest:
        with units() as uow:
            try:
                return check_request(uow, params)
            except NotFound as error:
                raise _UntrustedRedirect(error.message) from None
            except InvalidInput as error:
                if error.expression is None:  # about the client or its redirect URI
                    raise _UntrustedRedirect(error.message) from None
                raise

    @router.post(
        "/me/presence-code",
        response_class=HTMLResponse,
        responses={
            200: html("the code, valid ten minutes and once"),
            303: redirect("not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF)"),
            403: html("only the patient or a managing representative makes codes"),
        },
        openapi_extra=merged(query("lang"), form(("csrf",))),
    )
    async def presence_code(request: Request) -> Response:
        """A code to show the professional in front of the patient, so that their encounter
        opens the record (docs/authorization.md, "What proves a care relationship")."""
        lang = _language(request)
        try:
            session = await run_in_threadpool(sessions.resume, request.cookies.get(SESSION_COOKIE))
            check_csrf(session.csrf, (await _form(request)).get("csrf"))
        except NotAuthenticated:
            return RedirectResponse(f"/login?lang={lang}", status_code=303)
        except CareVaultError:
            return _error_page(request, lang, 400, TEXT[lang]["form"])
        if session.patient_id is None or session.kind not in ("patient", "representative"):
            return _error_page(request, lang, 403, PRESENCE_TEXT[lang]["nobody"])
        representative = session.kind == "representative"
        subject = Subject(
            SubjectKind.REPRESENTATIVE if representative else SubjectKind.PATIENT,
            session.account_id if representative else session.patient_id,
        )
        actor = Actor(
            subject,
            f"account:{session.account_id}",
            network=request.client.host if request.client else None,
        )
        try:
            code = await run_in_threadpool(policy.issue_presence_code, actor, session.patient_id)
        except NotPermitted as error:
            return _error_page(request, lang, 403, error.message)
        page = TEMPLATES.TemplateResponse(
            request,
            "presence.html",
            {
                "t": TEXT[lang],
                "p": PRESENCE_TEXT[lang],
                "lang": lang,
                "csrf": session.csrf,
                "code": code.code,
                "expires": f"{code.expires:%H:%M} UTC",
            },
        )
        page.headers["Cache-Control"] = "no-store"
        return page

    def _error_page(request: Request, lang: str, status: int, message: str) -> Response:
        return TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {"t": TEXT[lang], "lang": lang, "message": message},
            status_code=status,
        )

    return router


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
    query = {
        "error": error,
        "error_description": description,
        **({"state": params["state"]} if "state" in params else {}),
    }
    uri = params.get("redirect_uri", "")
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{separator}{urlencode(query)}", status_code=303)
