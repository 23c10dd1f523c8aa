"""The signed-in person's home: their record and who accessed it, the choice of whose record a
representative acts on, and the presence code a patient shows a professional.

Reading one's own history is an access too: it is recorded before the page is shown, and if the
audit log cannot take it the page says so and shows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.access_history import Shown, break_the_glass_parts, is_emergency, shows
from carevault.domain.access_history import moment as told_moment
from carevault.domain.accounts import AccountKind
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import Subject, SubjectKind
from carevault.domain.errors import InvalidInput, NotAuthenticated, NotPermitted
from carevault.services.access_history import (
    MAX_CHART_ENTRIES,
    MAX_FILTER_SCAN,
    HistoryEntry,
    MonthlyAccesses,
    access_history,
    accesses_per_month,
    verified_completeness,
)
from carevault.services.accounts import Principal
from carevault.services.audit_log import AuditUnavailable
from carevault.services.directory import patient_resource
from carevault.services.portal_sessions import PortalSession
from carevault.services.record_policy import Actor
from carevault.services.record_reads import page_viewed
from carevault.web.i18n import language, messages
from carevault.web.i18n import month as month_name
from carevault.web.pages import SESSION_COOKIE, FormRefused, client_address

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

OPERATOR_SESSIONS = ("operator", "security-officer", "registrar")
HISTORY_PAGE = 50
# The chart of accesses per month spans this many months, this one included.
CHART_MONTHS = 12
# The chart's bars: drawn as SVG shapes (presentation attributes pass the strict CSP that
# refuses inline styles), with the same figures in a table beside it for every reader.
_CHART_HEIGHT = 100
_BAR_STEP = 30
_BAR_WIDTH = 22


@dataclass(frozen=True)
class HistoryChoice:
    """What the person asked to see: which entries, and of which month (``?show=&month=``)."""

    shown: Shown
    month: tuple[int, int] | None

    def between(self) -> tuple[datetime, datetime] | None:
        if self.month is None:
            return None
        year, month = self.month
        start = datetime(year, month, 1, tzinfo=UTC)
        end = (
            datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else start.replace(month=month + 1)
        )
        return start, end


def history_choice(request: Request) -> HistoryChoice:
    """The filter of the history page from its query; InvalidInput on a value it never offers."""
    show = request.query_params.get("show") or Shown.ALL.value
    try:
        shown = Shown(show)
    except ValueError:
        raise InvalidInput("bad_show", expression="show") from None
    raw = request.query_params.get("month") or ""
    if not raw:
        return HistoryChoice(shown, None)
    match = _MONTH.fullmatch(raw)
    if match is None or not 1 <= int(match["month"]) <= 12:
        raise InvalidInput("bad_month", expression="month")
    return HistoryChoice(shown, (int(match["year"]), int(match["month"])))


_MONTH = re.compile(r"(?P<year>20[0-9]{2})-(?P<month>[0-9]{2})")


def _at(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


def chart(monthly: MonthlyAccesses, lang: str, shown: Shown) -> dict[str, Any]:
    """The accesses-per-month chart: its bars (SVG coordinates) and its table rows."""
    highest = max((m.accesses for m in monthly.months), default=0) or 1
    bars = []
    for position, month in enumerate(monthly.months):
        first = datetime(month.year, month.month, 15, tzinfo=UTC)
        height = round(_CHART_HEIGHT * month.accesses / highest)
        urgent = round(_CHART_HEIGHT * month.emergencies / highest)
        bars.append(
            {
                "label": month_name(first, lang),
                "key": f"{month.year:04d}-{month.month:02d}",
                "accesses": month.accesses,
                "emergencies": month.emergencies,
                "x": position * _BAR_STEP + 4,
                "y": _CHART_HEIGHT - height,
                "height": height,
                "urgent_y": _CHART_HEIGHT - urgent,
                "urgent_height": urgent,
                "link": f"/me?lang={lang}&show={shown.value}&month="
                f"{month.year:04d}-{month.month:02d}#history",
            }
        )
    return {
        "bars": bars,
        "width": len(bars) * _BAR_STEP + 8,
        "height": _CHART_HEIGHT,
        "bar_width": _BAR_WIDTH,
        "capped": monthly.capped,
        "counted": MAX_CHART_ENTRIES,
    }


def lines(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    """The history's lines, in the order given: one per entry, except that a break-the-glass
    is one line (its declaration, with the reason) and its request and the officer's alert
    are folded under it as ``related`` (`break_the_glass_parts`), in the same order."""
    folded = break_the_glass_parts((e.leaf_index, e.record) for e in entries)
    shown: dict[int, dict[str, Any]] = {}
    for entry in entries:
        line = {
            "text": entry.text,
            "index": entry.leaf_index,
            "emergency": is_emergency(entry.record),
            "refused": entry.record.outcome != "0",
            "related": [],
        }
        if entry.leaf_index not in folded:
            shown[entry.leaf_index] = line
    for entry in entries:
        if entry.leaf_index in folded:
            shown[folded[entry.leaf_index]]["related"].append(
                {"text": entry.text, "index": entry.leaf_index}
            )
    return list(shown.values())


def patient_name(resource: dict[str, Any]) -> str:
    name = resource.get("name", [{}])[0]
    return " ".join([*name.get("given", []), name.get("family", "")])


def actor_of(session: PortalSession, request: Request) -> Actor:
    """Who acts, for the engine and the audit: the patient, or a representative acting for
    them (audited "on behalf of")."""
    representative = session.kind == "representative"
    subject = Subject(
        SubjectKind.REPRESENTATIVE if representative else SubjectKind.PATIENT,
        session.account_id if representative else session.patient_id or "",
    )
    return Actor(subject, f"account:{session.account_id}", network=client_address(request))


def record_view(
    ctx: PortalContext,
    session: PortalSession,
    request: Request,
    interaction: str,
    entity_type: str,
) -> None:
    """Record that the person saw a page of their record (reading is an access too), before
    the page is shown; AuditUnavailable if the log cannot take it."""
    recording_view(ctx, session, request, interaction, entity_type)()


def recording_view(
    ctx: PortalContext,
    session: PortalSession,
    request: Request,
    interaction: str,
    entity_type: str,
) -> Callable[[], list[int]]:
    """`record_view` that returns at once the wait for the durable commit, so that the page
    is read and rendered meanwhile; the page is answered only through `once_recorded`."""
    return ctx.log.submit(
        [
            page_viewed(
                account_id=session.account_id,
                role=session.kind,
                network=client_address(request),
                patient_id=session.patient_id or "",
                interaction=interaction,
                entity_type=entity_type,
                now=ctx.clock(),
            )
        ]
    )


async def once_recorded(
    ctx: PortalContext, request: Request, recorded: Callable[[], list[int]], page: Response
) -> Response:
    """``page``, once the reading it shows is durably recorded (`recording_view`); the 503
    page instead if the audit log could not take it: nothing is shown (fail closed)."""
    try:
        await run_in_threadpool(recorded)
    except AuditUnavailable:
        return ctx.pages.error(request, 503, ctx.pages.text(request, "unavailable"))
    return page


def record_home_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    @router.get(
        "/me",
        response_class=HTMLResponse,
        responses={
            200: html("the signed-in person's page: their access history"),
            303: redirect("not signed in: to the sign-in page"),
            400: html("a choice of entries or a month the page never offers"),
            503: html("the audit log is unavailable; nothing was shown"),
        },
        openapi_extra=query(
            "lang",
            ("show", {"type": "string", "enum": [s.value for s in Shown]}, False),
            ("month", {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])$"}, False),
        ),
    )
    @access(SESSION)
    async def my_record(request: Request) -> Response:
        lang = language(request)
        session = await pages.session(request)
        if session is None:
            return pages.to_login(request)
        context: dict[str, Any] = {
            "csrf": session.csrf,
            "entries": [],
            "name": None,
            "tree_size": None,
        }
        if session.kind == "security-officer":
            # The security officer's home is their workspace (`web/officer_pages.py`).
            return RedirectResponse(f"/officer?lang={lang}", status_code=303)
        if session.kind in OPERATOR_SESSIONS:
            context["notice"] = pages.text(request, "operator")
            return pages.render(request, "me.html", context)
        if session.patient_id is None:
            # A representative chooses whose record to act on, among their mandates.
            def mandates() -> list[dict[str, str]]:
                choices = []
                for mandate in ctx.accounts.mandates_of(session.account_id):
                    resource = patient_resource(ctx.units, mandate.patient_id)
                    choices.append(
                        {
                            "patient_id": mandate.patient_id,
                            "scope": mandate.scope,
                            "name": patient_name(resource),
                        }
                    )
                return choices

            context["mandates"] = await run_in_threadpool(mandates)
            context["notice"] = pages.text(request, "choose")
            return pages.render(request, "me.html", context)
        patient_id = session.patient_id
        try:
            choice = history_choice(request)
        except InvalidInput as error:
            return pages.error(request, 400, messages(lang, "history")[error.message])

        def load() -> None:
            # The lines are read in a head covering every entry about the patient (signed now
            # only if the latest does not, or is an interval old: not on every view), taken
            # before the reading is recorded: the reading is not one of its own lines. Its
            # append is queued at once so that its durable commit overlaps the reads below,
            # and waited for before the page is rendered: AuditUnavailable then, and nothing
            # is shown (fail closed).
            head = ctx.log.recent_tree_head("clinical", patient=patient_id)
            recorded = recording_view(ctx, session, request, "access-history", "AuditEvent")
            resource = patient_resource(ctx.units, patient_id)
            context["name"] = patient_name(resource)
            history = access_history(
                ctx.log,
                ctx.units,
                patient_id,
                known_size=None,
                after=-1,
                limit=HISTORY_PAGE,
                language=lang,
                affinity=ctx.affinity,
                newest_first=True,
                keep=None if choice.shown is Shown.ALL else lambda r: shows(r, choice.shown),
                recorded_between=choice.between(),
                # The page shows the lines, not their proofs: it verifies the completeness
                # proof of the same head below, which proves every line it covers.
                with_proofs=False,
                head=head,
            )
            monthly = accesses_per_month(ctx.log, patient_id, now=ctx.clock(), months=CHART_MONTHS)
            context["entries"] = lines(history.entries)
            context["tree_size"] = history.tree_head.tree_size
            context["h"] = messages(lang, "history")
            context["choice"] = {
                "show": choice.shown.value,
                "month": f"{choice.month[0]:04d}-{choice.month[1]:02d}" if choice.month else "",
                "filtered": choice.shown is not Shown.ALL or choice.month is not None,
                "options": [s.value for s in Shown],
                "partial": history.partial,
                "scan": MAX_FILTER_SCAN,
            }
            context["chart"] = chart(monthly, lang, choice.shown)
            context["month_label"] = (
                month_name(datetime(*choice.month, 15, tzinfo=UTC), lang) if choice.month else None
            )
            if history.entries:
                # The badge is what the verifier says of the proof, from the last tree head
                # signed before the oldest line shown to the head the lines were proven in.
                oldest = min(e.leaf_index for e in history.entries)
                report = verified_completeness(ctx.log, patient_id, oldest, head=history.tree_head)
                context["completeness"] = (
                    {
                        "verified": True,
                        # Written as the lines above it write their times (UTC).
                        "start": told_moment(rfc3339_ms(_at(report.start_ms)), lang),
                        "end": told_moment(rfc3339_ms(_at(report.end_ms)), lang),
                    }
                    if report is not None
                    else {"verified": False}
                )
            context["presence"] = messages(lang, "presence")
            recorded()

        try:
            await run_in_threadpool(load)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        return pages.render(request, "me.html", context)

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
    @access(SESSION)
    async def act_for(request: Request) -> Response:
        lang = language(request)
        try:
            session, posted = await pages.signed_post(request)
        except (NotAuthenticated, FormRefused):
            return pages.to_login(request)
        if session.kind != "representative":
            return pages.error(request, 403, pages.text(request, "form"))
        principal = Principal(
            session.account_id,
            AccountKind.REPRESENTATIVE,
            None,
            frozenset(),
            "session",
            ctx.clock(),
        )
        patient_id = posted.get("patient_id", "")
        client = client_address(request)
        try:
            await run_in_threadpool(
                lambda: ctx.accounts.choose_patient(principal, patient_id, client_ip=client)
            )
        except NotPermitted as error:
            return pages.error(request, 403, error.message)
        token = request.cookies.get(SESSION_COOKIE) or ""
        await run_in_threadpool(ctx.sessions.act_for, token, patient_id)
        return RedirectResponse(f"/me?lang={lang}", status_code=303)

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
    @access(SESSION)
    async def presence_code(request: Request) -> Response:
        """A code to show the professional in front of the patient, so that their encounter
        opens the record (docs/authorization.md, "What proves a care relationship")."""
        answer = await pages.form_post(request)
        if isinstance(answer, Response):
            return answer
        session = answer[0]
        if session.patient_id is None or session.kind not in ("patient", "representative"):
            return pages.error(request, 403, pages.text(request, "nobody", "presence"))
        try:
            code = await run_in_threadpool(
                ctx.care.issue_presence_code, actor_of(session, request), session.patient_id
            )
        except NotPermitted as error:
            return pages.error(request, 403, error.message)
        page = pages.render(
            request,
            "presence.html",
            {"code": code.code, "expires": f"{code.expires:%H:%M} UTC"},
            family="presence",
        )
        return page

    return router


__all__ = [
    "OPERATOR_SESSIONS",
    "actor_of",
    "once_recorded",
    "patient_name",
    "record_home_router",
    "recording_view",
]
