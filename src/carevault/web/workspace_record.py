"""The professional's work with the record, as the engine lets them: their home page (my
patients, my accesses), finding a patient, the patient's record, reading, publishing,
emergency access.

Every page goes through the services the FHIR API uses, so the engine decides here exactly as
it does there, and every access is recorded by the service or before the page is shown. No
medical data in URLs: a patient or a document is named in a form's body, or by the opaque
ids the directory gives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import html, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.web.workspace_context import HOME, Answered, Professional

if TYPE_CHECKING:
    from carevault.web.workspace_context import Workspace


def workspace_record_router(ws: Workspace) -> APIRouter:
    router = APIRouter()
    pages = ws.pages

    def page(
        request: Request, me: Professional, template: str, context: dict[str, Any]
    ) -> Response:
        return pages.render(
            request,
            template,
            {"csrf": me.session.csrf, "me": me.name, **context},
            family="workspace",
        )

    @router.get(
        HOME,
        response_class=HTMLResponse,
        responses={
            200: html("the professional's home: my patients, my accesses"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("not a professional's session"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def home(request: Request) -> Response:
        try:
            me = await ws.professional(request)
        except Answered as answered:
            return answered.response
        return await run_in_threadpool(page, request, me, "workspace_home.html", {})

    return router


__all__ = ["workspace_record_router"]
