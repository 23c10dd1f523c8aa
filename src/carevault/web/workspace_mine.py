"""The professional's own page in the workspace (`/workspace`): my patients and my accesses
(`MyAccesses`), my assistants' mandates, my delegations, and, for an assistant, whom they act
for.

- A practitioner mandates an assistant (by the assistant's professional identifier, until a
  day, optionally for some document classes) and ends a mandate (`Professionals`, which only
  lets a practitioner mandate in their own name, in person); the mandator is always the
  signed-in professional, never a field of the form.
- A practitioner passes a patient's access on to a colleague until a day and ends a
  delegation (`CareAccess.delegate` / `end_delegation`: the engine decides).
- An assistant chooses, among the practitioners whose mandate to them is in force, whom they
  act for (`MyAccesses.choose_mandator`); the choice is kept in the session, server-side, and
  `Workspace._professional` checks it again at each request (an ended mandate ends it).

Every form carries the session's CSRF token (`Workspace.posted`); every change and every view
is recorded by the service that makes it. Patients are named by their opaque directory ids in
the forms' bodies and in `/workspace/record/{id}` links: no medical data in URLs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.authorization import GrantLevel
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound
from carevault.services.my_accesses import MyAccesses
from carevault.web.i18n import TIME_ZONE, day, language
from carevault.web.pages import SESSION_COOKIE
from carevault.web.sharing_page import grant_end, last_day
from carevault.web.workspace_context import HOME, Answered, Professional

if TYPE_CHECKING:
    from carevault.web.workspace_context import Workspace

ACTING_FOR = "/workspace/acting-for"
ASSISTANTS = "/workspace/assistants"
DELEGATIONS = "/workspace/delegations"
MAX_FIELD = 128
MAX_CLASSES = 20
_LEVELS = {"normal": GrantLevel.NORMAL, "extended": GrantLevel.EXTENDED}

_ANSWERS: dict[int | str, dict[str, Any]] = {
    303: redirect("done: back to the workspace's home; or to the sign-in page"),
    400: html("the form is out of date (CSRF), malformed, or its end date out of range"),
    403: html("not a professional's session, or the engine or the directory refuses it"),
    404: html("no such professional, mandate or delegation"),
}


def _end_of(value: str) -> datetime:
    end = grant_end(value, datetime.now(TIME_ZONE).date())
    if end is None:
        raise InvalidInput("an end date is required", expression="end")
    return end


def _field(posted: dict[str, str], name: str) -> str:
    value = posted.get(name, "").strip()
    if not value or len(value) > MAX_FIELD:
        raise InvalidInput(f"'{name}' is required", expression=name)
    return value


def workspace_mine_router(ws: Workspace, mine: MyAccesses) -> APIRouter:
    router = APIRouter()
    pages = ws.pages

    def page(request: Request, me: Professional) -> Response:
        view = mine.overview(me.actor)
        lang = language(request)
        return pages.render(
            request,
            "workspace_home.html",
            {
                "csrf": me.session.csrf,
                "me": me.name,
                "view": view,
                "acting_for": me.acting_for,
                "assistant": me.subject.kind.value == "assistant",
                "day": lambda value: day(value, lang),
                "last_day": last_day,
                "done": request.query_params.get("done") == "1",
            },
            family="workspace",
        )

    @router.get(
        HOME,
        response_class=HTMLResponse,
        responses={
            200: html("the professional's home: my patients, my accesses"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("not a professional's session"),
            503: html("the audit log is unavailable; nothing was shown"),
        },
        openapi_extra=query("lang", ("done", {"type": "string", "enum": ["1"]}, False)),
    )
    @access(SESSION)
    async def home(request: Request) -> Response:
        try:
            me = await ws.professional(request)
        except Answered as answered:
            return answered.response
        return await run_in_threadpool(page, request, me)

    async def change(
        request: Request, apply: Callable[[Professional, dict[str, str]], Any]
    ) -> Response:
        try:
            me, posted = await ws.posted(request)
        except Answered as answered:
            return answered.response
        try:
            await run_in_threadpool(apply, me, posted)
        except InvalidInput:
            return pages.error(request, 400, pages.text(request, "mine_invalid", "workspace"))
        except NotFound:
            return pages.error(request, 404, pages.text(request, "mine_not_found", "workspace"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{HOME}?lang={language(request)}&done=1", status_code=303)

    @router.post(
        ACTING_FOR,
        response_class=Response,
        status_code=303,
        responses=_ANSWERS,
        openapi_extra=merged(query("lang"), form(("csrf", "do", "mandator"))),
    )
    @access(SESSION)
    async def acting_for(request: Request) -> Response:
        """An assistant acts for a practitioner whose mandate to them is in force, or stops."""

        def apply(me: Professional, posted: dict[str, str]) -> None:
            token = request.cookies.get(SESSION_COOKIE)
            action = posted.get("do", "")
            if action == "stop":
                ws.sessions.act_for_professional(token, None)
                return
            if action != "act":
                raise InvalidInput("do: act or stop", expression="do")
            mandator = _field(posted, "mandator")
            mine.choose_mandator(me.actor, mandator)
            ws.sessions.act_for_professional(token, mandator)

        return await change(request, apply)

    @router.post(
        ASSISTANTS,
        response_class=Response,
        status_code=303,
        responses=_ANSWERS,
        openapi_extra=merged(
            query("lang"), form(("csrf", "do", "assistant", "end", "classes", "mandate"))
        ),
    )
    @access(SESSION)
    async def assistants(request: Request) -> Response:
        """A practitioner mandates an assistant in their own name, or ends a mandate."""

        def apply(me: Professional, posted: dict[str, str]) -> None:
            action = posted.get("do", "")
            if action == "end":
                ws.professionals.end_mandate(
                    me.actor, me.practitioner_id, _field(posted, "mandate")
                )
                return
            if action != "mandate":
                raise InvalidInput("do: mandate or end", expression="do")
            identifier = _field(posted, "assistant")
            assistant = mine.practitioner_by_identifier(identifier)
            if assistant is None:
                raise NotFound("no professional with this identifier")
            codes = posted.get("classes", "").replace(",", " ").split()
            if len(codes) > MAX_CLASSES or any(len(c) > 64 or c == "*" for c in codes):
                raise InvalidInput("classes", expression="classes")
            ws.professionals.mandate_assistant(
                me.actor,
                me.practitioner_id,
                assistant,
                _end_of(posted.get("end", "")),
                frozenset(codes) if codes else None,
            )

        return await change(request, apply)

    @router.post(
        DELEGATIONS,
        response_class=Response,
        status_code=303,
        responses=_ANSWERS,
        openapi_extra=merged(
            query("lang"),
            form(("csrf", "do", "patient", "colleague", "end", "level", "delegation")),
        ),
    )
    @access(SESSION)
    async def delegations(request: Request) -> Response:
        """A practitioner passes a patient's access on to a colleague, or ends a delegation."""

        def apply(me: Professional, posted: dict[str, str]) -> None:
            action = posted.get("do", "")
            patient_id = _field(posted, "patient")
            if action == "end":
                ws.care.end_delegation(me.actor, patient_id, _field(posted, "delegation"))
                return
            if action != "delegate":
                raise InvalidInput("do: delegate or end", expression="do")
            level = _LEVELS.get(posted.get("level", "normal"))
            if level is None:
                raise InvalidInput("level", expression="level")
            colleague = mine.practitioner_by_identifier(_field(posted, "colleague"))
            if colleague is None:
                raise NotFound("no professional with this identifier")
            end = _end_of(posted.get("end", ""))
            ws.care.delegate(me.actor, patient_id, colleague, level, end)

        return await change(request, apply)

    return router


__all__ = ["ACTING_FOR", "ASSISTANTS", "DELEGATIONS", "workspace_mine_router"]
