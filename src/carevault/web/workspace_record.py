"""The professional's work with the record, as the engine lets them: finding a patient, the
patient's record, reading, publishing, emergency access (their home page, my patients and my
accesses, is `web/workspace_mine.py`).

Every page goes through the services the FHIR API uses, so the engine decides here exactly as
it does there, and every access is recorded by the service before the page is shown
(`services/professional_record.py`). No medical data in URLs: the search's criteria travel in
a form's body; a patient and a document are named by the opaque ids the platform gives them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.openapi import form, html, merged, multipart, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.affinity import TYPE_CODES
from carevault.domain.documents import DocumentMetadata
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound, NotPermitted
from carevault.services.audit_log import AuditUnavailable
from carevault.services.portal_sessions import check_csrf
from carevault.services.professional_record import (
    MAX_FOUND,
    PUBLISH_KINDS,
    SHOWN_TYPES,
    PatientSearch,
    PublishRefused,
    SignedUpload,
)
from carevault.services.record_policy import Refused
from carevault.web.i18n import day, language, messages, moment
from carevault.web.pages import FormRefused, TooLarge, read_uploads
from carevault.web.workspace_context import Answered, Professional

if TYPE_CHECKING:
    from carevault.web.workspace_context import Workspace

FIND = "/workspace/patients"
RECORD = "/workspace/record/{patient_id}"
DOCUMENT = "/workspace/record/{patient_id}/document/{document_id}"
CONTENT = "/workspace/record/{patient_id}/document/{document_id}/content"
PUBLISH = "/workspace/record/{patient_id}/publish"
EMERGENCY = "/workspace/record/{patient_id}/emergency"
UPLOAD_OVERHEAD = 16_384  # the multipart envelope, the form's other fields
MAX_SIGNATURE_FILE = 32_768
SEARCH_FIELDS = ("family", "given", "birthdate", "national_id", "hospital_number")
# The content of a document, served to the workspace's own page only: nothing in it runs
# (a sandbox without scripts), it is never sniffed as another type, nobody else frames it.
_CONTENT_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; "
    "style-src 'unsafe-inline'; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}
# A PDF is shown by the browser's own viewer, which refuses to run in a sandboxed frame; it
# runs in the viewer's origin, not CareVault's, and nothing of the document's may load more.
_PDF_CSP = "default-src 'none'; frame-ancestors 'self'"


def content_headers(content_type: str) -> dict[str, str]:
    """The headers of a document's bytes served inline (see `_CONTENT_HEADERS`)."""
    if content_type == "application/pdf":
        return {**_CONTENT_HEADERS, "Content-Security-Policy": _PDF_CSP}
    return _CONTENT_HEADERS


def record_path(patient_id: str) -> str:
    return RECORD.replace("{patient_id}", patient_id)


def workspace_record_router(ws: Workspace) -> APIRouter:
    router = APIRouter()
    pages = ws.pages
    service = ws.record

    def page(
        request: Request, me: Professional, template: str, context: dict[str, Any]
    ) -> Response:
        return pages.render(
            request,
            template,
            {
                "csrf": me.session.csrf,
                "me": me.name,
                "r": messages(language(request), "clinical"),
                **context,
            },
            family="workspace",
        )

    def clinical(request: Request, key: str, **values: Any) -> str:
        return pages.text(request, key, "clinical", **values)

    def refused(request: Request, error: CareVaultError) -> Response:
        """A refusal in the person's language: the engine's reason as it may be told to them;
        anything else with its own message (never a trace)."""
        if isinstance(error, Refused):
            told = error.decision.told
            reason = told.get(language(request)) or told.get("en") or error.message
            return pages.error(request, 403, reason)
        if isinstance(error, NotFound):
            return pages.error(request, 404, clinical(request, "not_found"))
        if isinstance(error, InvalidInput):
            return pages.error(request, 422, error.message)
        return pages.error(request, 403, error.message)

    async def signed_in(
        request: Request, work: Callable[[Professional], Awaitable[Response]]
    ) -> Response:
        try:
            me = await ws.professional(request)
        except Answered as answered:
            return answered.response
        try:
            return await work(me)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))

    def title_of(metadata: DocumentMetadata, lang: str) -> str:
        return (
            metadata.title
            or ws.affinity.display(
                TYPE_CODES,
                metadata.type_code.system,
                metadata.type_code.code,
                lang if lang in ("en", "fr") else "en",
            )
            or metadata.type_code.code
        )

    # --- finding a patient ----------------------------------------------------------------

    @router.get(
        FIND,
        response_class=HTMLResponse,
        responses={
            200: html("the search form"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("not a professional's session"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def find_form(request: Request) -> Response:
        async def work(me: Professional) -> Response:
            return page(request, me, "workspace_find.html", {"search": {}, "found": None})

        return await signed_in(request, work)

    @router.post(
        FIND,
        response_class=HTMLResponse,
        responses={
            200: html("the patients found (at most twenty), or why none were"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            400: html("the form is out of date (CSRF)"),
            403: html("not a professional's session"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", *SEARCH_FIELDS))),
    )
    @access(SESSION)
    async def find(request: Request) -> Response:
        try:
            me, posted = await ws.posted(request)
        except Answered as answered:
            return answered.response
        search = PatientSearch(**{name: posted.get(name, "") for name in SEARCH_FIELDS})
        values = {name: posted.get(name, "") for name in SEARCH_FIELDS}
        try:
            found = await run_in_threadpool(service.find, me.actor, search)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except InvalidInput as error:
            message = clinical(request, f"search_{error.expression}")
            return page(request, me, "workspace_find.html", {"search": values, "problem": message})
        patients = [
            {"id": p.id, "name": p.name, "birthdate": p.birthdate, "gender": p.gender}
            for p in found.patients
        ]
        return page(
            request,
            me,
            "workspace_find.html",
            {"search": values, "found": patients, "more": found.more, "max": MAX_FOUND},
        )

    # --- the record -----------------------------------------------------------------------

    @router.get(
        RECORD,
        response_class=HTMLResponse,
        responses={
            200: html("the record as the engine lets this professional see it"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("the engine refuses this professional the record: the page says why"),
            404: html("no such patient"),
        },
        openapi_extra=query("lang", "published"),
    )
    @access(SESSION)
    async def record(request: Request, patient_id: str) -> Response:
        lang = language(request)

        async def work(me: Professional) -> Response:
            try:
                view = await run_in_threadpool(service.open, me.actor, patient_id)
            except Refused as error:
                patient, possible = await run_in_threadpool(
                    lambda: (
                        service.patient(patient_id),
                        service.emergency_possible(me.actor, patient_id),
                    )
                )
                told = error.decision.told
                return page(
                    request,
                    me,
                    "workspace_record.html",
                    {
                        "patient": patient,
                        "patient_id": patient_id,
                        "refusal": told.get(lang) or told.get("en") or error.message,
                        "emergency_possible": possible,
                    },
                )
            except CareVaultError as error:
                return refused(request, error)
            documents = [
                {
                    "id": m.id,
                    "title": title_of(m, lang),
                    "date": day(m.created or m.indexed, lang),
                    "author": clinical(request, "by_patient")
                    if m.patient_authored
                    else view.authors.get(m.author_id or "", m.author_id or ""),
                    "confidentiality": m.confidentiality.value,
                }
                for m in view.documents
            ]
            return page(
                request,
                me,
                "workspace_record.html",
                {
                    "patient": view.patient,
                    "patient_id": patient_id,
                    "documents": documents,
                    "not_visible": view.not_visible,
                    "emergency_until": moment(view.emergency_until, lang)
                    if view.emergency_until
                    else None,
                    "published": request.query_params.get("published") == "1",
                },
            )

        return await signed_in(request, work)

    # --- reading ----------------------------------------------------------------------------

    @router.get(
        DOCUMENT,
        response_class=HTMLResponse,
        responses={
            200: html("one document, with its author's signature checked now"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("the engine refuses this document to this professional"),
            404: html("no such document in this record"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def document(request: Request, patient_id: str, document_id: str) -> Response:
        lang = language(request)

        async def work(me: Professional) -> Response:
            try:
                reading = await run_in_threadpool(service.read, me.actor, patient_id, document_id)
            except CareVaultError as error:
                return refused(request, error)
            text = None
            if reading.content_type == "text/plain":
                text = reading.content.decode("utf-8", errors="replace")
            return page(
                request,
                me,
                "workspace_document.html",
                {
                    "patient_id": patient_id,
                    "document_id": document_id,
                    "title": title_of(reading.metadata, lang),
                    "date": day(reading.metadata.created or reading.metadata.indexed, lang),
                    "author": clinical(request, "by_patient")
                    if reading.metadata.patient_authored
                    else reading.author or reading.metadata.author_id or "",
                    "content_type": reading.content_type,
                    "size": len(reading.content),
                    "text": text,
                    "signature": reading.signature,
                    "shown": reading.content_type in SHOWN_TYPES,
                },
            )

        return await signed_in(request, work)

    @router.get(
        CONTENT,
        response_class=Response,
        responses={
            200: {"description": "the document's exact bytes (a sandboxed inline view)"},
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("the engine refuses this document to this professional"),
            404: html("no such document in this record"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def content(request: Request, patient_id: str, document_id: str) -> Response:
        async def work(me: Professional) -> Response:
            try:
                reading = await run_in_threadpool(service.read, me.actor, patient_id, document_id)
            except CareVaultError as error:
                return refused(request, error)
            inline = reading.content_type in SHOWN_TYPES
            disposition = "inline" if inline else "attachment"
            return Response(
                reading.content,
                media_type=reading.content_type if inline else "application/octet-stream",
                headers={
                    **content_headers(reading.content_type if inline else ""),
                    "Content-Disposition": f'{disposition}; filename="{document_id}"',
                },
            )

        return await signed_in(request, work)

    # --- publishing -------------------------------------------------------------------------

    @router.get(
        PUBLISH,
        response_class=HTMLResponse,
        responses={
            200: html("the form to publish a signed document"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("not a professional's session"),
            404: html("no such patient"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def publish_form(request: Request, patient_id: str) -> Response:
        async def work(me: Professional) -> Response:
            try:
                patient = await run_in_threadpool(service.patient, patient_id)
            except CareVaultError as error:
                return refused(request, error)
            return page(
                request,
                me,
                "workspace_publish.html",
                {
                    "patient": patient,
                    "patient_id": patient_id,
                    "kinds": list(PUBLISH_KINDS),
                    "max_mb": ws.settings.max_document_bytes // 1_048_576,
                },
            )

        return await signed_in(request, work)

    @router.post(
        PUBLISH,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("published: to the record; or not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed"),
            403: html("the engine refuses this professional a document on this record"),
            413: html("the file is larger than the deployment takes"),
            422: html("the file, its signature or its description is refused: the page says why"),
        },
        openapi_extra=merged(
            query("lang"),
            multipart(
                {
                    "csrf": {"type": "string"},
                    "title": {"type": "string", "maxLength": 200},
                    "kind": {"type": "string", "enum": list(PUBLISH_KINDS)},
                    "confidentiality": {"type": "string", "enum": ["N", "R", "V"]},
                },
                ["file", "signature"],
            ),
        ),
    )
    @access(SESSION)
    async def publish(request: Request, patient_id: str) -> Response:
        """A document the professional signed with their card (``carevault card sign``),
        published to the record as ITI-65 publishes it."""

        async def work(me: Professional) -> Response:
            limit = ws.settings.max_document_bytes
            try:
                posted, files = await read_uploads(
                    request, limit + MAX_SIGNATURE_FILE + UPLOAD_OVERHEAD, max_files=2
                )
                check_csrf(me.session.csrf, posted.get("csrf"))
            except TooLarge:
                return pages.error(
                    request, 413, clinical(request, "refused_size", limit=limit // 1_048_576)
                )
            except (FormRefused, NotPermitted):
                return pages.error(request, 400, pages.text(request, "form", "workspace"))
            document, signature = files.get("file"), files.get("signature")
            upload = SignedUpload(
                content=document.content if document else b"",
                content_type=document.content_type if document else "",
                signature=signature.content if signature else b"",
                title=posted.get("title", ""),
                kind=posted.get("kind", ""),
                confidentiality=posted.get("confidentiality", ""),
            )
            try:
                await run_in_threadpool(service.publish, me.actor, patient_id, upload)
            except PublishRefused as error:
                message = clinical(request, f"refused_{error.reason}", limit=limit // 1_048_576)
                return pages.error(request, 422, message)
            except InvalidInput as error:  # the signature, or ITI-65's own checks
                return pages.error(
                    request, 422, clinical(request, "publish_invalid", detail=error.message)
                )
            except CareVaultError as error:
                return refused(request, error)
            return RedirectResponse(
                f"{record_path(patient_id)}?lang={language(request)}&published=1",
                status_code=303,
            )

        return await signed_in(request, work)

    # --- emergency access -----------------------------------------------------------------

    @router.get(
        EMERGENCY,
        response_class=HTMLResponse,
        responses={
            200: html("the warning, and the reason to give"),
            303: redirect("not signed in: to the workspace's sign-in page"),
            403: html("not a professional's session, or no emergency access possible here"),
            404: html("no such patient"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def emergency_form(request: Request, patient_id: str) -> Response:
        async def work(me: Professional) -> Response:
            try:
                patient = await run_in_threadpool(service.patient, patient_id)
                possible = await run_in_threadpool(service.emergency_possible, me.actor, patient_id)
            except CareVaultError as error:
                return refused(request, error)
            if not possible:
                return pages.error(request, 403, clinical(request, "emergency_impossible"))
            return page(
                request,
                me,
                "workspace_emergency.html",
                {"patient": patient, "patient_id": patient_id},
            )

        return await signed_in(request, work)

    @router.post(
        EMERGENCY,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("declared: to the record; or not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF)"),
            403: html("the engine refuses emergency access here: the page says why"),
            422: html("no reason given, or too long"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "reason"), ("csrf", "reason"))),
    )
    @access(SESSION)
    async def emergency(request: Request, patient_id: str) -> Response:
        try:
            me, posted = await ws.posted(request)
        except Answered as answered:
            return answered.response
        try:
            await run_in_threadpool(
                lambda: ws.care.declare_emergency(
                    me.actor, patient_id, posted.get("reason", ""), alert=True
                )
            )
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except InvalidInput:
            return pages.error(request, 422, clinical(request, "emergency_reason"))
        except CareVaultError as error:
            return refused(request, error)
        return RedirectResponse(
            f"{record_path(patient_id)}?lang={language(request)}", status_code=303
        )

    return router


__all__ = [
    "CONTENT",
    "DOCUMENT",
    "EMERGENCY",
    "FIND",
    "PUBLISH",
    "RECORD",
    "workspace_record_router",
]
