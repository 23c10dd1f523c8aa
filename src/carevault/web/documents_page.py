""" "My documents": every document of the record the person may see, newest first, with its
author, its confidentiality and whether it is hidden; hiding and showing again go through
`RecordPolicy.hide_document` (the engine decides, the change is audited). No medical data in
URLs: a document is named in the form's body only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.access import TokenBucketLimiter
from carevault.api.fhir.formats import BundleStream
from carevault.api.fhir.record_export import attachment_headers, bundle_entries
from carevault.api.openapi import form, html, merged, multipart, query, redirect
from carevault.api.route_door import SESSION, access
from carevault.domain.affinity import TYPE_CODES
from carevault.domain.audit import rfc3339_ms
from carevault.domain.authorization import Action
from carevault.domain.errors import CareVaultError, NotFound, NotPermitted, RateLimited
from carevault.services.audit_log import AuditUnavailable
from carevault.services.patient_uploads import UPLOAD_KINDS, PatientUpload, UploadRefused
from carevault.services.portal_sessions import check_csrf
from carevault.services.record_export import RecordExport
from carevault.web.i18n import day, language
from carevault.web.pages import FormRefused, TooLarge, read_upload
from carevault.web.record_home import actor_of, once_recorded, record_view, recording_view

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

PAGE = "/me/documents"
EXPORT = "/me/export"
UPLOAD = "/me/documents/upload"
UPLOAD_OVERHEAD = 16_384  # the multipart envelope and the form's other fields


def documents_page_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter()
    pages = ctx.pages
    # Per record, whoever uploads (the patient or a representative), counted before the file
    # is read: a session cannot have the server take in files as fast as it can send them.
    upload_limiter = TokenBucketLimiter(ctx.settings.patient_uploads_per_minute)

    @router.get(
        PAGE,
        response_class=HTMLResponse,
        responses={
            200: html("the documents of the record"),
            303: redirect("not signed in: to the sign-in page"),
            403: html("the session acts on no record"),
        },
        openapi_extra=query("lang", "done", "added"),
    )
    @access(SESSION)
    async def show(request: Request) -> Response:
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        lang, patient_id = language(request), session.patient_id or ""
        actor = actor_of(session, request)
        you = pages.text(request, "you", "documents")

        def load() -> tuple[list[dict[str, Any]], Callable[[], list[int]]]:
            found = ctx.documents.listing(ctx.units, actor.subject, patient_id)
            # The reading is recorded once the engine permitted it; the list is built and
            # rendered while it commits, and answered only once it did.
            recorded = recording_view(ctx, session, request, "documents", "DocumentReference")
            shown = []
            for metadata in found:
                if metadata.signs is not None:
                    continue  # an author's signature is shown with its document
                shown.append(
                    {
                        "id": metadata.id,
                        "date": day(metadata.created or metadata.indexed, lang),
                        "title": metadata.title
                        or ctx.affinity.display(
                            TYPE_CODES,
                            metadata.type_code.system,
                            metadata.type_code.code,
                            lang if lang in ("en", "fr") else "en",
                        )
                        or metadata.type_code.code,
                        "author": you if metadata.patient_authored else metadata.author_id,
                        "confidentiality": metadata.confidentiality.value,
                        "hidden": metadata.hidden,
                    }
                )
            return shown, recorded

        try:
            documents, recorded = await run_in_threadpool(load)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        context = {
            "csrf": session.csrf,
            "documents": documents,
            "done": request.query_params.get("done") == "1",
            "added": request.query_params.get("added") == "1",
            "kinds": list(UPLOAD_KINDS),
            "max_mb": ctx.settings.max_document_bytes // 1_048_576,
        }
        page = pages.render(request, "documents.html", context, family="documents")
        return await once_recorded(ctx, request, recorded, page)

    @router.post(
        PAGE,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("done: back to the list; or not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed"),
            403: html("the engine refuses this change to this person"),
            404: html("no such document in this record"),
        },
        openapi_extra=merged(query("lang"), form(("csrf", "document", "hidden"))),
    )
    @access(SESSION)
    async def change(request: Request) -> Response:
        answer = await pages.record_post(request)
        if isinstance(answer, Response):
            return answer
        session, posted = answer
        if posted.get("hidden") not in ("true", "false"):
            return pages.error(request, 400, pages.text(request, "form"))
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        hidden = posted["hidden"] == "true"
        try:
            await run_in_threadpool(
                ctx.policy.hide_document, actor, patient_id, posted.get("document", ""), hidden
            )
        except NotFound as error:
            return pages.error(request, 404, error.message)
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{PAGE}?lang={language(request)}&done=1", status_code=303)

    @router.post(
        UPLOAD,
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("added: back to the list; or not signed in: to the sign-in page"),
            400: html("the form is out of date (CSRF) or malformed"),
            403: html("the engine refuses this person a document on this record"),
            413: html("the file is larger than the deployment takes"),
            422: html(
                "the file or its description is refused, or the record holds its quota of the "
                "patient's own files: the page says why"
            ),
            429: html("the record took many uploads just now: the page says when to retry"),
        },
        openapi_extra=merged(
            query("lang"),
            multipart(
                {
                    "csrf": {"type": "string"},
                    "title": {"type": "string", "maxLength": 200},
                    "kind": {"type": "string", "enum": list(UPLOAD_KINDS)},
                },
                ["file"],
            ),
        ),
    )
    @access(SESSION)
    async def upload(request: Request) -> Response:
        """The person's own document (PDF, JPEG, PNG), added to the record as theirs."""
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        limit = ctx.settings.max_document_bytes
        try:
            upload_limiter.check(f"record:{session.patient_id}")
        except RateLimited as error:
            throttled = pages.error(
                request,
                429,
                pages.text(request, "upload_throttled", "documents", seconds=error.retry_after),
            )
            throttled.headers["Retry-After"] = str(error.retry_after)
            return throttled
        try:
            posted, uploaded = await read_upload(request, limit + UPLOAD_OVERHEAD)
            check_csrf(session.csrf, posted.get("csrf"))
        except TooLarge:
            message = pages.text(request, "upload_size", "documents", limit=limit // 1_048_576)
            return pages.error(request, 413, message)
        except (FormRefused, NotPermitted):
            return pages.error(request, 400, pages.text(request, "form"))
        if ctx.uploads is None or uploaded is None:
            return pages.error(request, 422, pages.text(request, "upload_empty", "documents"))
        actor, patient_id = actor_of(session, request), session.patient_id or ""
        item = PatientUpload(
            uploaded.content, uploaded.content_type, posted.get("title", ""), posted.get("kind", "")
        )
        uploads = ctx.uploads
        try:
            await run_in_threadpool(uploads.upload, actor, patient_id, item)
        except UploadRefused as refused:
            quota = uploads.quota
            message = pages.text(
                request,
                f"upload_{refused.reason}",
                "documents",
                limit=limit // 1_048_576,
                max_documents=quota.max_documents,
                max_mb=quota.max_bytes // 1_048_576,
            )
            return pages.error(request, 422, message)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        return RedirectResponse(f"{PAGE}?lang={language(request)}&added=1", status_code=303)

    @router.get(
        EXPORT,
        response_class=Response,
        responses={
            200: {
                "description": "the record as a FHIR Bundle (collection), streamed as a download",
                "content": {"application/fhir+json": {}},
            },
            303: redirect("not signed in: to the sign-in page"),
            403: html("the session acts on no record, or the engine refuses the export"),
            503: html("the audit log is unavailable: nothing was exported"),
        },
        openapi_extra=query("lang"),
    )
    @access(SESSION)
    async def export(request: Request) -> Response:
        """Everything the person may see of the record (GDPR portability), as the FHIR API's
        ``$everything`` gives it: decided and recorded before the first byte, then streamed."""
        session = await pages.record_session(request)
        if isinstance(session, Response):
            return session
        lang, patient_id = language(request), session.patient_id or ""
        actor = actor_of(session, request)

        def prepare() -> tuple[Iterator[bytes], int]:
            now = ctx.clock()
            record = ctx.policy.permitted_now(actor.subject, patient_id, Action.PERSONAL)
            record_view(ctx, session, request, "export", "Bundle")
            reader = RecordExport(ctx.units, ctx.documents, ctx.log, ctx.affinity)
            total = reader.document_count(actor.subject, record)
            entries = bundle_entries(
                reader.parts(actor.subject, record, lang),
                record,
                ctx.settings.public_url + "/fhir",
                lang,
            )
            return BundleStream(entries, rfc3339_ms(now)).json(), total

        try:
            stream, total = await run_in_threadpool(prepare)
        except AuditUnavailable:
            return pages.error(request, 503, pages.text(request, "unavailable"))
        except CareVaultError as error:
            return pages.error(request, 403, error.message)
        headers = {**attachment_headers(patient_id), "X-Export-Documents": str(total)}
        return StreamingResponse(
            stream, headers=headers, media_type="application/fhir+json; charset=utf-8"
        )

    return router


__all__ = ["EXPORT", "documents_page_router"]
