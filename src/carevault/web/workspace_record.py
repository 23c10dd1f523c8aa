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

from carevault.web.workspace_context import Professional

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

    return router


__all__ = ["workspace_record_router"]
