"""The patient's representatives, from "who can see my record": name one (by the login of
the account the person opened at the desk), limit one (what they may do, until when), and end
one (on `/me/access`).

Every change is `RecordPolicy`'s (the engine's ``manage`` on the record, audited in its
transaction; a representative who changes another's mandate is told to the patient, and
nobody changes their own).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.authorization import MandateScope
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound
from carevault.web.i18n import TIME_ZONE, language
from carevault.web.record_home import actor_of
from carevault.web.sharing_page import grant_end

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

PAGE = "/me/access/representatives"
BACK = "/me/access"
MAX_LOGIN = 256


def representatives_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    @router.post(
        PAGE,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("done: back to who can see the record; or to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed, or its end date"),
            403: html("the engine refuses this change to this person"),
            404: html("no representative's account with this login, or no such mandate"),
        },
        openapi_extra=merged(
            query("lang"), form(("csrf", "do", "login", "mandate", "scope", "end"))
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
        if action not in ("name", "limit"):
            return pages.error(request, 400, pages.text(request, "form"))

        def apply() -> None:
            scope = MandateScope(posted.get("scope", ""))
            end = grant_end(posted.get("end", ""), datetime.now(TIME_ZONE).date())
            if action == "name":
                login = posted.get("login", "").strip()
                if not login or len(login) > MAX_LOGIN:
                    raise NotFound("no login")
                ctx.representatives.name_by_login(actor, patient_id, login, scope, end=end)
            else:
                mandate = posted.get("mandate", "")
                ctx.representatives.limit(actor, patient_id, mandate, scope, end)

        try:
            await run_in_threadpool(apply)
        except ValueError:
            return pages.error(request, 400, pages.text(request, "form"))
        except InvalidInput:
            return pages.error(request, 400, pages.text(request, "end", "sharing"))
        except NotFound:
            return pages.error(
                request, 404, pages.text(request, "unknown_representative", "access")
            )
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{BACK}?lang={language(request)}&done=1", status_code=303)

    return router


__all__ = ["representatives_page_router"]
