""" "My prescriptions": the patient's e-prescriptions (issue #18) as the prescriber signed them
- the medication, the dosage in words, the quantity, the prescriber, the validity, the status
and the dispense - and, for one that waits for a pharmacy, its number, its access code and its
printout (the PDF with the 2D code a pharmacy scans).

The access code is the patient's own: the engine must let the person do `personal` on the
record (the patient, a representative), and seeing the page is recorded before it is shown.
No medical data in URLs: a printout is asked for by the task's opaque id.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import html, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.authorization import Action
from carevault.domain.errors import CareVaultError, Conflict, NotFound
from carevault.services.audit_log import AuditUnavailable
from carevault.services.portal_sessions import PortalSession
from carevault.web.i18n import day, language
from carevault.web.record_home import actor_of, record_view

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

PAGE = "/me/prescriptions"
PRINT = "/me/prescriptions/print"
_TASK_ID = re.compile(r"[0-9a-f]{32}")  # the tasks' ids (uuid4().hex)


def prescriptions_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages

    def permitted(session: PortalSession, request: Request) -> None:
        """The engine's word: what is the patient's own (their codes) is for the patient and
        their representatives (`personal`); Refused otherwise."""
        ctx.policy.permitted_now(
            actor_of(session, request).subject, session.patient_id or "", Action.PERSONAL
        )

    @router.get(
        PAGE,
        response_class=HTMLResponse,
        responses={
            200: html("the patient's prescriptions, with the codes of those ready"),
            303: redirect("not signed in: to the sign-in page"),
            403: html("the session acts on no record, or the engine refuses it"),
            503: html("the audit log is unavailable; nothing was shown"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def show(request: Request) -> Response:
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        lang, patient_id = language(request), session.patient_id or ""
        service = ctx.prescriptions

        def load() -> list[dict[str, Any]]:
            permitted(session, request)
            found = [] if service is None else service.patient_prescriptions(patient_id, lang)
            record_view(ctx, session, request, "prescriptions", "Task")
            return [
                {
                    "id": p.task_id,
                    "number": p.number,
                    "status": p.status,
                    "medication": p.medication,
                    "dosage": p.dosage,
                    "quantity": p.quantity,
                    "prescriber": p.prescriber,
                    "organization": p.organization,
                    "prescribed": day(p.created_at, lang),
                    "valid_from": day(p.valid_from, lang) if p.valid_from else None,
                    "valid_until": day(p.valid_until, lang) if p.valid_until else None,
                    "dispensed_at": day(p.dispensed_at, lang) if p.dispensed_at else None,
                    "dispensed": p.dispensed,
                    "code": p.access_code,
                }
                for p in found
            ]

        try:
            shown = await run_in_threadpool(load)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        page = pages.render(
            request,
            "prescriptions.html",
            {"csrf": session.csrf, "prescriptions": shown},
            family="prescriptions",
        )
        return page

    @router.get(
        PRINT,
        response_class=Response,
        responses={
            200: {
                "description": "the printed prescription, with its 2D code",
                "content": {"application/pdf": {}},
            },
            303: redirect("not signed in: to the sign-in page"),
            403: html("the session acts on no record, or the engine refuses it"),
            404: html("no prescription of this record has this id"),
            409: html("the prescription no longer waits for a pharmacy"),
            503: html("the audit log is unavailable; nothing was given"),
        },
        openapi_extra=query("lang", ("prescription", {"type": "string"}, True)),
    )
    @access(SESSION)
    async def printout(request: Request) -> Response:
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        task_id = request.query_params.get("prescription", "")
        service = ctx.prescriptions

        def made() -> bytes:
            permitted(session, request)  # the engine first: a refusal says nothing of the id
            if service is None or not _TASK_ID.fullmatch(task_id):
                raise NotFound("no such prescription")
            pdf = service.patient_printout(session.patient_id or "", task_id)
            record_view(ctx, session, request, "prescription-print", "Task")
            return pdf

        try:
            pdf = await run_in_threadpool(made)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except NotFound:
            return pages.error(request, 404, pages.text(request, "unknown", "prescriptions"))
        except Conflict:
            return pages.error(request, 409, pages.text(request, "not_ready", "prescriptions"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={
                "Cache-Control": "no-store",
                "Content-Disposition": 'inline; filename="prescription.pdf"',
            },
        )

    return router


__all__ = ["PAGE", "PRINT", "prescriptions_page_router"]
