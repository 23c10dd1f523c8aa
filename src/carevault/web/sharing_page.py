"""Giving access and blocking, from "who can see my record": find a professional, an
organization or a care team in the directory (by name, profession, city), give them access until
a date or block them, lift a block; and "what would they see?", the engine's own answer for one
professional.

A care team is given access like an organization, with an end date always: its members change
as its organization keeps it up to date, without the patient hearing of it, so an access to a
team without end would keep reaching people the patient never saw listed. A team is not
blocked: a block keeps people out whatever else lets them in, and a team's members are
professionals (and its organization an organization) the patient can block themselves.

Every change goes through `RecordPolicy` (the engine's ``manage`` on the record, audited in its
transaction, a representative's change notified to the patient); the preview through
`services/preview.py` (the engine's filter, recorded as a preview). Searches and previews are
forms sent by POST: who a patient looks for says something about them, and stays out of URLs
and server logs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.affinity import TYPE_CODES
from carevault.domain.authorization import Action, GrantLevel, Party
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound
from carevault.services.audit_log import AuditUnavailable
from carevault.services.finder import care_team_is_active, lookup_party_names, search_parties
from carevault.services.preview import what_they_would_see
from carevault.web.i18n import TIME_ZONE, day, language, messages
from carevault.web.record_home import actor_of

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

FIND = "/me/access/find"
SHARE = "/me/access/share"
PREVIEW = "/me/access/preview"
BACK = "/me/access"
MAX_GRANT_DAYS = 5 * 366  # the latest end date a grant given in the portal may have
DEFAULT_GRANT_DAYS = 30  # the end date the grant form proposes
PROFESSIONS = (
    "physician",
    "dentist",
    "pharmacist",
    "nurse",
    "midwife",
    "physiotherapist",
    "laboratory-biologist",
    "psychotherapist",
    "medical-assistant",
)
SHARE_ACTIONS = ("grant", "block", "unblock")


def grant_end(value: str, today: date) -> datetime | None:
    """The end of a grant chosen as a day: the access holds through that whole day, local
    time, and ends at the next midnight. Empty: no end. InvalidInput for a day that is not
    after today, or further than `MAX_GRANT_DAYS`."""
    value = value.strip()
    if not value:
        return None
    try:
        chosen = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("the end date is a day (YYYY-MM-DD)", expression="end") from None
    if chosen < today or chosen > today + timedelta(days=MAX_GRANT_DAYS):
        raise InvalidInput("the end date is out of range", expression="end")
    return datetime.combine(chosen + timedelta(days=1), time(0), TIME_ZONE).astimezone(UTC)


def last_day(end: datetime) -> str:
    """The last day an access or a mandate ending at ``end`` holds, local time (YYYY-MM-DD):
    the inverse of `grant_end`."""
    try:
        local = end.astimezone(TIME_ZONE)
    except OverflowError:  # an end at the edge of the years Python holds (given through the API)
        local = end
    return (local - timedelta(microseconds=1)).date().isoformat()


def party_names(ctx: PortalContext, parties: list[tuple[Party, str]]) -> dict[str, str]:
    """Names of professionals, organizations and care teams as the directory gives them, by
    id."""
    return lookup_party_names(ctx.units, parties)


def sharing_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    @router.post(
        FIND,
        response_class=HTMLResponse,
        responses={
            200: html("the professionals, organizations and care teams found, to grant"),
            303: redirect("not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF), or the search is too vague or long"),
            403: html("the engine refuses this person managing the record"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "name", "profession", "city"))),
    )
    @access(SESSION)
    async def find(request: Request) -> Response:
        answer = await pages.record_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        criteria = {k: posted.get(k, "") for k in ("name", "profession", "city")}
        if criteria["profession"] and criteria["profession"] not in PROFESSIONS:
            return pages.error(request, 400, pages.text(request, "form"))

        def search() -> Any:
            ctx.policy.check(actor, patient_id, Action.MANAGE)
            return search_parties(
                ctx.units,
                name=criteria["name"],
                profession=criteria["profession"],
                city=criteria["city"],
                now=ctx.clock(),
            )

        try:
            found = await run_in_threadpool(search)
        except InvalidInput:
            return pages.error(request, 400, pages.text(request, "vague", "sharing"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        today = datetime.now(TIME_ZONE).date()
        context = {
            "csrf": session.csrf,
            "criteria": criteria,
            "found": found.parties,
            "more": found.more,
            "professions": PROFESSIONS,
            "profession_names": messages(language(request), "professions"),
            "default_end": (today + timedelta(days=DEFAULT_GRANT_DAYS)).isoformat(),
            "min_end": today.isoformat(),
            "max_end": (today + timedelta(days=MAX_GRANT_DAYS)).isoformat(),
        }
        return pages.render(request, "find.html", context, family="sharing")

    @router.post(
        SHARE,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("done: back to who can see the record; or to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed, or its end date"),
            403: html("the engine refuses this change to this person"),
            404: html("no such professional, organization, active care team or block"),
        },
        openapi_extra=merged(
            query("lang"), form(("csrf", "do", "party", "party_id", "level", "end", "block"))
        ),
    )
    @access(SESSION)
    async def share(request: Request) -> Response:
        answer = await pages.record_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        action = posted.get("do", "")
        if action not in SHARE_ACTIONS:
            return pages.error(request, 400, pages.text(request, "form"))

        def apply() -> None:
            if action == "unblock":
                ctx.policy.unblock(actor, patient_id, posted.get("block", ""))
                return
            party = Party(posted.get("party", ""))
            party_id = posted.get("party_id", "")
            if action == "block":
                if party is Party.CARE_TEAM:
                    raise ValueError("a care team is not blocked")
                ctx.policy.block(actor, patient_id, party, party_id)
                return
            # The engine keeps any team id; the portal offers active teams only.
            if party is Party.CARE_TEAM and not care_team_is_active(
                ctx.units, party_id, ctx.clock()
            ):
                raise NotFound(f"CareTeam/{party_id} is not an active care team")
            end = grant_end(posted.get("end", ""), datetime.now(TIME_ZONE).date())
            if end is None and party is not Party.PRACTITIONER:
                raise InvalidInput("a group's access has an end date", expression="end")
            level = GrantLevel(posted.get("level", ""))
            ctx.policy.grant(actor, patient_id, party, party_id, level, end=end)

        try:
            await run_in_threadpool(apply)
        except ValueError:
            return pages.error(request, 400, pages.text(request, "form"))
        except InvalidInput:
            return pages.error(request, 400, pages.text(request, "end", "sharing"))
        except NotFound:
            return pages.error(request, 404, pages.text(request, "unknown", "sharing"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{BACK}?lang={language(request)}&done=1", status_code=303)

    @router.post(
        PREVIEW,
        response_class=HTMLResponse,
        responses={
            200: html("the documents this professional would see now, as the engine decides"),
            303: redirect("not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF)"),
            403: html("the engine refuses this person reading the record's settings"),
            404: html("no such professional"),
            503: html("the audit log is unavailable; nothing was shown"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "party_id"))),
    )
    @access(SESSION)
    async def preview(request: Request) -> Response:
        answer = await pages.record_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        lang = language(request)
        practitioner_id = posted.get("party_id", "")

        def load() -> dict[str, Any]:
            seen = what_they_would_see(
                ctx.policy, ctx.documents, ctx.units, actor, patient_id, practitioner_id
            )
            names = party_names(ctx, [(Party.PRACTITIONER, practitioner_id)])
            return {
                "who": names.get(practitioner_id, practitioner_id),
                "permit": seen.decision.permit,
                "reason": seen.decision.reasons.get(lang, seen.decision.reasons["en"]),
                "total": seen.total,
                "documents": [
                    {
                        "date": day(m.created or m.indexed, lang),
                        "title": m.title
                        or ctx.affinity.display(
                            TYPE_CODES,
                            m.type_code.system,
                            m.type_code.code,
                            lang if lang in ("en", "fr") else "en",
                        )
                        or m.type_code.code,
                        "confidentiality": m.confidentiality.value,
                    }
                    for m in seen.documents
                ],
            }

        try:
            context = await run_in_threadpool(load)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except NotFound:
            return pages.error(request, 404, pages.text(request, "unknown", "sharing"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        context["csrf"] = session.csrf
        return pages.render(request, "preview.html", context, family="sharing")

    return router


__all__ = ["MAX_GRANT_DAYS", "grant_end", "last_day", "party_names", "sharing_page_router"]
