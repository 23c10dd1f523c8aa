""" "Who can see my record": the accesses the patient gave, their referring physician, the
confidentiality of new documents, closing and reopening (or, under opt-in, opening) the
record, and their representatives — each action with a sentence that says its effect.

Every change goes through `RecordPolicy` (the engine decides, the change is audited in its own
transaction, a representative's change is notified to the patient); the page itself is a
personal reading of the record, recorded before it is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.authorization import Confidentiality, Party, RecordState
from carevault.domain.errors import CareVaultError, NotFound
from carevault.services.audit_log import AuditUnavailable
from carevault.services.finder import practitioner_by_number
from carevault.services.record_policy import RecordChange
from carevault.web.i18n import day, language, messages
from carevault.web.record_home import actor_of, once_recorded, recording_view
from carevault.web.sharing_page import PROFESSIONS, last_day, party_names

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

PAGE = "/me/access"
# What each form of the page changes: the form's ``do`` field.
ACTIONS = ("referring", "unrefer", "confidentiality", "close", "reopen", "revoke", "end-mandate")


def access_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    @router.get(
        PAGE,
        response_class=HTMLResponse,
        responses={
            200: html("who can see the record, and its settings"),
            303: redirect("not signed in: to the sign-in page"),
            403: html("the session acts on no record"),
        },
        openapi_extra=query("lang", "done"),
    )
    @access(SESSION)
    async def show(request: Request) -> Response:
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        lang, patient_id = language(request), session.patient_id or ""
        actor = actor_of(session, request)

        def load() -> tuple[dict[str, Any], Callable[[], list[int]]]:
            overview = ctx.policy.overview(actor, patient_id)
            # Recorded once the engine permitted the reading; the names are read and the page
            # rendered while it commits, and answered only once it did.
            recorded = recording_view(ctx, session, request, "record-settings", "Consent")
            referring_id = overview.record.referring_physician_id
            names = party_names(
                ctx,
                [(g.grant.party, g.grant.party_id) for g in overview.grants]
                + ([(Party.PRACTITIONER, referring_id)] if referring_id else []),
            )
            now = ctx.clock()
            blocked = party_names(ctx, [(b.block.party, b.block.party_id) for b in overview.blocks])
            return {
                "blocks": [
                    {
                        "id": b.block.id,
                        "who": blocked.get(b.block.party_id, b.block.party_id),
                        "organization": b.block.party.value == "organization",
                    }
                    for b in overview.blocks
                ],
                "record": overview.record,
                "opened": overview.opened,
                "grants": [
                    {
                        "id": g.grant.id,
                        "party_id": g.grant.party_id,
                        "practitioner": g.grant.party is Party.PRACTITIONER,
                        "team": g.grant.party is Party.CARE_TEAM,
                        "who": names.get(g.grant.party_id, g.grant.party_id),
                        "level": g.grant.level.value,
                        "end": day(g.grant.end, lang) if g.grant.end else None,
                        "source": g.grant.source,
                    }
                    for g in overview.grants
                ],
                "referring": names.get(overview.record.referring_physician_id or "")
                if overview.record.referring_physician_id
                else None,
                "mandates": [
                    {
                        "id": m.id,
                        "who": _login(ctx, m.representative_account_id),
                        "scope": m.scope,
                        "end": day(m.ends_at, lang) if m.ends_at else None,
                        # The last day included, as the date field shows it.
                        "end_value": last_day(m.ends_at) if m.ends_at else "",
                    }
                    for m in overview.mandates
                    if m.active_at(now)
                ],
            }, recorded

        try:
            context, recorded = await run_in_threadpool(load)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        context["csrf"] = session.csrf
        context["levels"] = [level.value for level in Confidentiality]
        context["done"] = request.query_params.get("done") == "1"
        context["professions"] = PROFESSIONS
        context["profession_names"] = messages(lang, "professions")
        page = pages.render(request, "access.html", context, family="access")
        return await once_recorded(ctx, request, recorded, page)

    @router.post(
        PAGE,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("done: back to the page; or not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed"),
            403: html("the engine refuses this change to this person"),
            404: html("no such professional, access or mandate"),
        },
        openapi_extra=merged(
            query("lang"), form(("csrf", "do", "number", "level", "grant", "mandate"))
        ),
    )
    @access(SESSION)
    async def change(request: Request) -> Response:
        answer = await pages.record_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        action = posted.get("do", "")
        if action not in ACTIONS:
            return pages.error(request, 400, pages.text(request, "form"))

        def apply() -> None:
            if action == "referring":
                practitioner = practitioner_by_number(ctx.units, posted.get("number", ""))
                if practitioner is None:
                    raise NotFound(pages.text(request, "unknown_professional", "access"))
                ctx.policy.change_record(
                    actor, patient_id, RecordChange(referring_physician=practitioner)
                )
            elif action == "unrefer":
                ctx.policy.change_record(actor, patient_id, RecordChange(referring_physician=None))
            elif action == "confidentiality":
                level = Confidentiality(posted.get("level", ""))
                ctx.policy.change_record(
                    actor, patient_id, RecordChange(default_confidentiality=level)
                )
            elif action in ("close", "reopen"):
                state = RecordState.CLOSED if action == "close" else RecordState.ACTIVE
                ctx.policy.change_record(actor, patient_id, RecordChange(state=state))
            elif action == "revoke":
                ctx.policy.revoke_grant(actor, patient_id, posted.get("grant", ""))
            else:
                ctx.representatives.remove(actor, patient_id, posted.get("mandate", ""))

        try:
            await run_in_threadpool(apply)
        except ValueError:
            return pages.error(request, 400, pages.text(request, "form"))
        except NotFound as error:
            return pages.error(request, 404, error.message)
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{PAGE}?lang={language(request)}&done=1", status_code=303)

    return router


def _login(ctx: PortalContext, account_id: str) -> str:
    return ctx.accounts.login_of(account_id) or account_id


__all__ = ["access_page_router"]
