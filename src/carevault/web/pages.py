"""What every portal page shares: the base layout, the language, the forms and their CSRF
tokens, the session, and errors a person can read.

Each page module (``signin``, ``record_home``, ``oauth_consent``, …, and the professionals'
workspace) builds its routes on one ``Pages``: it renders a template with the chosen language's
messages and the language choice, reads a bounded form, resumes the session and checks the form's
CSRF token (before sign-in a double-submit cookie, after it the session's own token). The
security headers, the strict CSP among them (no inline script or style: scripts are files under
``/static``), are set on every answer by the application (``api/app.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from carevault.api.errors import NO_STORE
from carevault.domain.errors import (
    RETRY_AFTER_SECONDS,
    NotAuthenticated,
    NotPermitted,
    RateLimited,
)
from carevault.domain.numbers import exceeds, is_digits
from carevault.domain.scopes import MAX_SCOPES
from carevault.services.portal_sessions import PortalSession, PortalSessions, check_csrf
from carevault.web.i18n import LANGUAGE_NAMES, language, messages

TEMPLATE_DIRECTORY = Path(__file__).parent / "templates"
SESSION_COOKIE = "cv_session"
# The people of the patients' door, whose accounts have a password and passkeys managed in
# the portal (operators sign in at their own door; professionals with their card and passkey).
PERSONS = frozenset({"patient", "representative"})
LOGIN_CSRF_COOKIE = "cv_login_csrf"
SESSION_MAX_AGE = 1800  # the cookie's; the server ends an idle session after the same time
MAX_FORM_BYTES = 8_192
# The OAuth consent form has the most: 8 parameters, decision, csrf, and a box per scope
MAX_FORM_FIELDS = 10 + MAX_SCOPES


class FormRefused(NotPermitted):
    """A form that is too large, malformed, or whose CSRF token is not the session's."""


class TooLarge(FormRefused):
    """An upload larger than the deployment takes."""


# Whom a representative's session acts for, for the banner of every page: the patient's name
# and the mandate's scope (read | manage), or None when the mandate is no longer in force.
Acting = Callable[[PortalSession], dict[str, str] | None]
ACTING_KEY = "carevault.acting"


class Pages:
    """Rendering and the checks every page of the portal shares."""

    def __init__(
        self, sessions: PortalSessions, *, secure: bool, acting: Acting | None = None
    ) -> None:
        self.templates = Jinja2Templates(directory=str(TEMPLATE_DIRECTORY))
        self.sessions = sessions
        self.secure = secure  # cookies are Secure outside ``dev``
        self.acting = acting

    # --- rendering ----------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        status: int = 200,
        *,
        family: str = "portal",
    ) -> Response:
        """``template`` in the person's language: ``t`` holds the ``family``'s messages,
        ``portal`` the shared ones, ``languages`` the language choice. Never cached: a page
        names a person, their documents or who looked at them, and a browser shared at a
        hospital workstation or at home would keep it on disk and show it again (back button)
        after its session ended."""
        lang = language(request)
        page = {
            "lang": lang,
            "t": messages(lang, family),
            "portal": messages(lang, "portal"),
            "languages": LANGUAGE_NAMES,
            # The language choice links to the same page: only a page reached by GET has one.
            "here": request.url.path if request.method == "GET" else None,
            # A representative reads on every page whose record they act on, and as whom.
            "acting": request.scope.get(ACTING_KEY),
            **(context or {}),
        }
        return self.templates.TemplateResponse(
            request, template, page, status_code=status, headers=NO_STORE
        )

    def error(self, request: Request, status: int, message: str) -> Response:
        """A page that says what went wrong; a 503 (the audit log or the database away for a
        moment) tells the browser when to try again, as every 503 does."""
        page = self.render(request, "error.html", {"message": message}, status)
        if status == 503:
            page.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return page

    def text(self, request: Request, key: str, family: str = "portal", **values: Any) -> str:
        """One message in the person's language, its ``{placeholders}`` filled."""
        message = messages(language(request), family)[key]
        return message.format(**values) if values else message

    def to_login(self, request: Request) -> Response:
        return RedirectResponse(f"/login?lang={language(request)}", status_code=303)

    # --- cookies and anonymous forms ----------------------------------------------------

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            secure=self.secure,
            samesite="strict",
            path="/",
        )

    def anonymous_form(
        self,
        request: Request,
        template: str,
        status: int,
        context: Mapping[str, Any],
        *,
        family: str = "portal",
    ) -> Response:
        """A form shown before sign-in: its CSRF token is a double-submit cookie."""
        csrf = secrets.token_urlsafe(32)
        response = self.render(request, template, {"csrf": csrf, **context}, status, family=family)
        self.set_cookie(response, LOGIN_CSRF_COOKIE, csrf, SESSION_MAX_AGE)
        return response

    async def anonymous_post(self, request: Request) -> dict[str, str]:
        """The form of an anonymous page, once its double-submit token matches."""
        form = await read_form(request)
        try:
            check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf"))
        except NotPermitted:
            raise FormRefused("the form is out of date") from None
        return form

    # --- sessions -----------------------------------------------------------------------

    async def session(self, request: Request) -> PortalSession | None:
        """The live session of the request's cookie (its idle expiry pushed back), or None;
        for a representative acting on a record, whom they act for (the pages' banner)."""
        try:
            session = await run_in_threadpool(
                self.sessions.resume, request.cookies.get(SESSION_COOKIE)
            )
        except NotAuthenticated:
            return None
        if session.kind == "representative" and session.patient_id and self.acting:
            request.scope[ACTING_KEY] = await run_in_threadpool(self.acting, session)
        return session

    async def signed_post(self, request: Request) -> tuple[PortalSession, dict[str, str]]:
        """The session and the form of a signed-in person's POST, once the form's CSRF token
        is the session's; NotAuthenticated without a live session, FormRefused otherwise."""
        session = await self.session(request)
        if session is None:
            raise NotAuthenticated("no session")
        form = await read_form(request)
        try:
            check_csrf(session.csrf, form.get("csrf"))
        except NotPermitted:
            raise FormRefused("the form is out of date") from None
        return session, form

    async def record_session(self, request: Request) -> PortalSession | Response:
        """The session of a page about one record, or the answer instead of the page: the
        sign-in page without a live session, 403 (choose a record first) when the session
        acts on no record yet (a representative before choosing)."""
        session = await self.session(request)
        if session is None:
            return self.to_login(request)
        if session.patient_id is None:
            return self.error(request, 403, self.text(request, "choose"))
        return session

    async def form_post(self, request: Request) -> tuple[PortalSession, dict[str, str]] | Response:
        """`signed_post`, or the page's answer instead: the sign-in page without a live
        session, 400 for a form out of date."""
        try:
            return await self.signed_post(request)
        except NotAuthenticated:
            return self.to_login(request)
        except FormRefused:
            return self.error(request, 400, self.text(request, "form"))

    async def record_post(
        self, request: Request
    ) -> tuple[PortalSession, dict[str, str]] | Response:
        """`form_post` for a form about one record: 403 without a record chosen."""
        answer = await self.form_post(request)
        if isinstance(answer, Response):
            return answer
        if answer[0].patient_id is None:
            return self.error(request, 403, self.text(request, "choose"))
        return answer


@dataclass(frozen=True)
class UploadedFile:
    content_type: str
    content: bytes = field(repr=False)


MAX_UPLOAD_FIELDS = 4  # csrf, title, kind, confidentiality (files are counted apart)


async def read_upload(
    request: Request, max_bytes: int
) -> tuple[dict[str, str], UploadedFile | None]:
    """A multipart form with one file, its whole body at most ``max_bytes`` (and saying so in
    Content-Length before a byte is read); FormRefused otherwise, ``TooLarge`` for the size."""
    fields, files = await read_uploads(request, max_bytes, max_files=1)
    return fields, next(iter(files.values()), None)


async def read_uploads(
    request: Request, max_bytes: int, *, max_files: int
) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """A multipart form with up to ``max_files`` files, by their field's name (see
    `read_upload`)."""
    declared = request.headers.get("content-length", "")
    if not is_digits(declared):
        raise FormRefused("the form does not say its length")
    if exceeds(declared, max_bytes):
        raise TooLarge("the file is too large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise FormRefused("the form is not a file upload")
    try:
        form = await request.form(
            max_files=max_files,
            max_fields=MAX_UPLOAD_FIELDS,
            max_part_size=MAX_FORM_BYTES,
        )
    except (ValueError, KeyError, HTTPException):
        raise FormRefused("the form is malformed") from None
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields[name] = value
        elif name not in files:
            content = await value.read(max_bytes + 1)
            if len(content) > max_bytes:
                raise TooLarge("the file is too large")
            kind = (value.content_type or "").split(";")[0].strip().lower()
            files[name] = UploadedFile(kind, content)
    await form.close()
    return fields, files


class JsonAnswers:
    """The JSON answers of a page's WebAuthn ceremonies (their script reads ``error``): a
    refusal in the person's language, from the messages of ``family``, and the per-address
    throttle that answers 429 with Retry-After."""

    def __init__(self, pages: Pages, family: str, limiter: Limiter) -> None:
        self.pages = pages
        self.family = family
        self.limiter = limiter

    def refusal(self, request: Request, status: int, key: str) -> JSONResponse:
        message = self.pages.text(request, key, self.family)
        return JSONResponse({"error": message}, status_code=status)

    def limited(self, request: Request) -> JSONResponse | None:
        """The 429 answer when this address asks too often, else None."""
        try:
            self.limiter.check(client_address(request) or "")
        except RateLimited as error:
            refused = self.refusal(request, 429, "throttled")
            refused.headers["Retry-After"] = str(error.retry_after)
            return refused
        return None


class Limiter(Protocol):
    """`carevault.api.access.TokenBucketLimiter`: RateLimited when a key asks too often."""

    def check(self, key: str) -> None: ...


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form, at most ``MAX_FORM_BYTES`` and ``MAX_FORM_FIELDS`` fields."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused("the form is too large")
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), max_num_fields=MAX_FORM_FIELDS))
    except (UnicodeDecodeError, ValueError):
        raise FormRefused("the form is malformed") from None
    if any("\x00" in name or "\x00" in value for name, value in fields.items()):
        # No field of a form holds one, and PostgreSQL refuses text with one (a 500).
        raise FormRefused("the form holds a NUL character")
    return fields


def signed_out(response: Response) -> Response:
    """``response`` that ends the session in the browser too: its cookie deleted, and the
    browser asked to drop what it cached of the site (``Clear-Site-Data``; browsers heed it
    over HTTPS and on localhost), for the pages cached before they were all ``no-store``."""
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "FormRefused",
    "Pages",
    "client_address",
    "read_form",
]
