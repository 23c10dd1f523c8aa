"""The security officer's workspace: the alert queue and each alert explained, the emergency
accesses to review, the audit search, the log's integrity, and the PKI's state.

Every route declares the route door's `SECURITY_OFFICER_PAGE` rule: the door admits the officer's
bearer token or their portal session (`bootstrap.officer_session`) and refuses, recorded,
anyone else; each page also requires the security officer's own portal session (the forms'
CSRF token is the session's, and the officer's name goes on what they do), so that in ``dev``
the developer's loopback alone reaches nothing here. The door records every page shown and every
action, refused or not, in the operators' stream. Nothing medical is ever shown: accesses are
who, whom, when, why and the outcome, never the resource read.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.api.fhir.outcome import status_and_code
from carevault.api.openapi import form, html, merged, query, redirect
from carevault.api.route_door import SECURITY_OFFICER_PAGE, Admission, Audited, access, admitted
from carevault.domain.anomaly import KINDS
from carevault.domain.audit import STREAMS
from carevault.domain.errors import CareVaultError, InvalidInput, NotAuthenticated, Unavailable
from carevault.domain.numbers import whole_number
from carevault.services.anomaly_detection import (
    EMERGENCY_REVIEW,
    STATUSES,
    VERDICTS,
    AnomalyDetection,
)
from carevault.services.audit_log import AuditUnavailable
from carevault.services.officer_workspace import (
    OUTCOMES,
    PAGE,
    AuditQuery,
    alert_accesses,
    features,
    integrity,
    search,
)
from carevault.services.portal_sessions import PortalSession
from carevault.web.i18n import language, moment
from carevault.web.pages import FormRefused

if TYPE_CHECKING:
    from carevault.web.portal import PortalContext

ROOT = "/officer"
OFFICER = "security-officer"
ALERT_KINDS = (*KINDS, EMERGENCY_REVIEW)
FILTERS = ("active", *STATUSES, "all")  # active: open or acknowledged
ACTIONS = ("acknowledge", "assign", "close", "notify")
QUEUE_PAGE = 50


def _audited(interaction: str, action: str = "R") -> Audited:
    return Audited("operator", "security", action, interaction, entity_type="DetectedIssue")


QUEUE = _audited("officer-alert-queue")
ALERT = _audited("officer-alert")
REVIEW = _audited("officer-alert-review", "U")
EMERGENCIES = _audited("officer-emergency-reviews")
AUDIT = Audited("operator", "security", "R", "officer-audit-search", "AuditLog", query=True)
INTEGRITY = Audited("operator", "security", "R", "officer-log-integrity", "AuditLog")
PKI = Audited("operator", "security", "R", "officer-pki-status")


def officer_pages_router(ctx: PortalContext) -> APIRouter:
    router = APIRouter(prefix=ROOT)
    pages = ctx.pages

    async def officer(request: Request) -> PortalSession | Response:
        """The security officer's session, or the answer to anyone else (recorded refused)."""
        admission = admitted(request)
        session = await pages.session(request)
        if session is None:
            admission.note("4", {"result": "refused: no portal session"}, status=303)
            return RedirectResponse(f"/operator/login?lang={language(request)}", 303)
        if session.kind != OFFICER:
            admission.note("4", {"result": f"refused: a {session.kind} session"}, status=403)
            return pages.error(request, 403, pages.text(request, "refused", "officer"))
        return session

    def alerts_service(admission: Admission) -> AnomalyDetection:
        if ctx.alerts is None:
            admission.note("8", {"result": "the alerts are not configured"}, status=503)
            raise Unavailable("the alerts are not configured")
        return ctx.alerts

    def failed(request: Request, admission: Admission, error: CareVaultError) -> Response:
        status, _ = status_and_code(error)
        if admission.noted is None:
            admission.note("4" if status < 500 else "8", {"result": error.message}, status=status)
        return pages.error(request, status, error.message)

    def shown(admission: Admission, **detail: str) -> None:
        admission.note("0", {k.replace("_", "-"): v for k, v in detail.items()})

    # --- the alert queue --------------------------------------------------------------------

    @router.get(
        "",
        response_class=HTMLResponse,
        responses={
            200: html("the alert queue"),
            303: redirect("not signed in: to the operators' sign-in"),
            400: html("an unknown filter"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
        },
        openapi_extra=query("lang", "status", "kind", "page", "done"),
    )
    @access(SECURITY_OFFICER_PAGE, QUEUE)
    async def queue(request: Request) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)
        status = request.query_params.get("status", "active")
        kind = request.query_params.get("kind", "")
        try:
            if status not in FILTERS or (kind and kind not in ALERT_KINDS):
                raise InvalidInput(pages.text(request, "bad_filter", "officer"))
            page = _page(request)
            service = alerts_service(admission)
            statuses = {"active": ("open", "acknowledged"), "all": ()}.get(status, (status,))
            total, listed = await run_in_threadpool(
                service.search,
                status=statuses,
                kind=(kind,) if kind else (),
                offset=page * QUEUE_PAGE,
                count=QUEUE_PAGE,
            )
        except CareVaultError as error:
            return failed(request, admission, error)
        shown(admission, result=f"{len(listed)} of {total} alerts", status=status, kind=kind)
        return pages.render(
            request,
            "officer_queue.html",
            {
                "csrf": found.csrf,
                "alerts": [_alert_row(a, lang) for a in listed],
                "total": total,
                "status": status,
                "kind": kind,
                "filters": FILTERS,
                "kinds": ALERT_KINDS,
                "page": page,
                "more": (page + 1) * QUEUE_PAGE < total,
            },
            family="officer",
        )

    # --- one alert, explained ---------------------------------------------------------------

    @router.get(
        "/alerts/{alert_id}",
        response_class=HTMLResponse,
        responses={
            200: html("an alert, its explanation and the accesses behind it"),
            303: redirect("not signed in: to the operators' sign-in"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
            404: html("no such alert"),
        },
        openapi_extra=query("lang", "done"),
    )
    @access(SECURITY_OFFICER_PAGE, ALERT)
    async def alert(request: Request, alert_id: str) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)

        def load() -> dict[str, Any]:
            stored = alerts_service(admission).alert(alert_id[:64])
            accesses = alert_accesses(ctx.log, stored)
            size = ctx.log.size("clinical")
            return {
                "alert": _alert_row(stored, lang),
                "features": features(accesses),
                "accesses": [_access_row(a, lang, size) for a in reversed(accesses)],
            }

        try:
            context = await run_in_threadpool(load)
        except AuditUnavailable:
            return failed(request, admission, Unavailable(pages.text(request, "unavailable")))
        except CareVaultError as error:
            return failed(request, admission, error)
        shown(admission, alert=alert_id, accesses=str(len(context["accesses"])))
        feature_set = context["features"]
        context.update(
            csrf=found.csrf,
            verdicts=VERDICTS,
            done=request.query_params.get("done") == "1",
            first=moment(feature_set.first, lang) if feature_set.first else None,
            last=moment(feature_set.last, lang) if feature_set.last else None,
        )
        return pages.render(request, "officer_alert.html", context, family="officer")

    @router.post(
        "/alerts/{alert_id}",
        response_class=Response,
        status_code=303,
        responses={
            303: redirect("done: back to the alert or the emergency reviews"),
            400: html("the form is out of date (CSRF), malformed, or a closing without reason"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
            404: html("no such alert"),
            409: html("someone changed the alert meanwhile"),
            422: html("the alert is closed, or the patient was already told"),
        },
        openapi_extra=merged(
            query("lang"), form(("csrf", "do", "assignee", "verdict", "note", "back"))
        ),
    )
    @access(SECURITY_OFFICER_PAGE, REVIEW)
    async def review(request: Request, alert_id: str) -> Response:
        admission, lang = admitted(request), language(request)
        try:
            session, posted = await pages.signed_post(request)
        except NotAuthenticated:
            admission.note("4", {"result": "refused: no portal session"}, status=303)
            return RedirectResponse(f"/operator/login?lang={lang}", 303)
        except FormRefused as error:
            admission.note("4", {"result": error.message}, status=400)
            return pages.error(request, 400, pages.text(request, "form"))
        if session.kind != OFFICER:
            admission.note("4", {"result": f"refused: a {session.kind} session"}, status=403)
            return pages.error(request, 403, pages.text(request, "refused", "officer"))
        action = posted.get("do", "")
        who = f"account:{session.account_id}"

        def apply() -> None:
            service = alerts_service(admission)
            if action == "acknowledge":
                service.acknowledge(alert_id, who)
            elif action == "assign":
                service.assign(alert_id, who, posted.get("assignee", ""))
            elif action == "close":
                note = posted.get("note", "").strip()
                if not note:
                    raise InvalidInput(pages.text(request, "reason_needed", "officer"))
                service.close(alert_id, who, posted.get("verdict", ""), note)
            elif action == "notify":
                service.notify_patient(alert_id, who)
            else:
                raise InvalidInput(pages.text(request, "form"))

        try:
            await run_in_threadpool(apply)
        except CareVaultError as error:
            return failed(request, admission, error)
        shown(admission, alert=alert_id, action=action)
        back = (
            f"{ROOT}/emergencies?lang={lang}&done=1"
            if posted.get("back") == "emergencies"
            else f"{ROOT}/alerts/{alert_id}?lang={lang}&done=1"
        )
        return RedirectResponse(back, status_code=303)

    # --- emergency accesses to review -------------------------------------------------------

    @router.get(
        "/emergencies",
        response_class=HTMLResponse,
        responses={
            200: html("the emergency accesses still to review"),
            303: redirect("not signed in: to the operators' sign-in"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
        },
        openapi_extra=query("lang", "done"),
    )
    @access(SECURITY_OFFICER_PAGE, EMERGENCIES)
    async def emergencies(request: Request) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)
        try:
            total, listed = await run_in_threadpool(
                alerts_service(admission).search,
                status=("open", "acknowledged"),
                kind=(EMERGENCY_REVIEW,),
                count=QUEUE_PAGE,
            )
        except CareVaultError as error:
            return failed(request, admission, error)
        shown(admission, result=f"{total} emergency accesses to review")
        return pages.render(
            request,
            "officer_emergencies.html",
            {
                "csrf": found.csrf,
                "alerts": [_alert_row(a, lang) for a in listed],
                "total": total,
                "done": request.query_params.get("done") == "1",
            },
            family="officer",
        )

    # --- the audit search -------------------------------------------------------------------

    @router.get(
        "/audit",
        response_class=HTMLResponse,
        responses={
            200: html("the audit search, and its results"),
            303: redirect("not signed in: to the operators' sign-in"),
            400: html("a criterion that is not understood"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
        },
        openapi_extra=query(
            "lang",
            "stream",
            "patient",
            "professional",
            "organization",
            "outcome",
            "from",
            "to",
            "page",
        ),
    )
    @access(SECURITY_OFFICER_PAGE, AUDIT)
    async def audit(request: Request) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)
        params = request.query_params
        asked = {
            name: params.get(name, "")[:100]
            for name in (
                "stream",
                "patient",
                "professional",
                "organization",
                "outcome",
                "from",
                "to",
            )
        }
        results: list[dict[str, str]] | None = None
        total = 0
        problem = None
        status = 200
        if any(asked[name] for name in asked if name != "stream"):
            try:
                criteria = AuditQuery(
                    stream=asked["stream"] or "clinical",
                    patient=asked["patient"],
                    professional=asked["professional"],
                    organization=asked["organization"],
                    outcome=asked["outcome"],
                    start=_day(asked["from"], pages.text(request, "bad_date", "officer")),
                    end=_day(asked["to"], pages.text(request, "bad_date", "officer")),
                    page=_page(request),
                )
                total, rows = await run_in_threadpool(search, ctx.log, criteria)
                size = await run_in_threadpool(ctx.log.size, criteria.stream)
                results = [_access_row(a, lang, size) for a in rows]
            except AuditUnavailable:
                return failed(request, admission, Unavailable(pages.text(request, "unavailable")))
            except CareVaultError as error:
                problem, status = error.message, status_and_code(error)[0]
        if problem is not None:
            admission.note("4", {"result": problem}, status=status)
        else:
            shown(admission, result=f"{total} entries" if results is not None else "the form")
        page = _page_or_zero(request)
        return pages.render(
            request,
            "officer_audit.html",
            {
                "csrf": found.csrf,
                "asked": asked,
                "streams": STREAMS,
                "outcomes": OUTCOMES,
                "results": results,
                "total": total,
                "problem": problem,
                "page": page,
                "more": (page + 1) * PAGE < total,
                "next_query": _next_query(asked, page + 1, lang),
            },
            status,
            family="officer",
        )

    # --- the log's integrity, and the PKI ---------------------------------------------------

    @router.get(
        "/integrity",
        response_class=HTMLResponse,
        responses={
            200: html("each audit stream's latest signed tree head, checked"),
            303: redirect("not signed in: to the operators' sign-in"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
            503: html("the audit log is unavailable"),
        },
        openapi_extra=query("lang"),
    )
    @access(SECURITY_OFFICER_PAGE, INTEGRITY)
    async def log_integrity(request: Request) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)
        try:
            streams = await run_in_threadpool(integrity, ctx.log, ctx.clock)
        except AuditUnavailable:
            return failed(request, admission, Unavailable(pages.text(request, "unavailable")))
        sound = all(
            s.signature_valid and s.consistent is not False and s.stamped_consistent is not False
            for s in streams
        )
        admission.note(
            "0" if sound else "8",
            {
                "result": " ".join(f"{s.stream}:{s.tree_size}" for s in streams),
                "sound": "yes" if sound else "no",
            },
        )
        rows = [
            {
                "stream": s.stream,
                "size": s.tree_size,
                "root": s.root_hash,
                "signed_at": moment(s.signed_at, lang) if s.signed_at else "",
                "signature_valid": s.signature_valid,
                "previous": s.previous_size,
                "consistent": s.consistent,
                "stamped": s.stamped_size,
                "stamped_at": moment(s.stamped_at, lang) if s.stamped_at else "",
                "stamped_consistent": s.stamped_consistent,
                "checked_at": moment(s.checked_at, lang),
            }
            for s in streams
        ]
        return pages.render(
            request,
            "officer_integrity.html",
            {"csrf": found.csrf, "streams": rows, "sound": sound},
            family="officer",
        )

    @router.get(
        "/pki",
        response_class=HTMLResponse,
        responses={
            200: html("the CA certificates and the CRL"),
            303: redirect("not signed in: to the operators' sign-in"),
            401: html("not the security officer"),
            403: html("a session that is not the security officer's"),
        },
        openapi_extra=query("lang"),
    )
    @access(SECURITY_OFFICER_PAGE, PKI)
    async def pki(request: Request) -> Response:
        found = await officer(request)
        if isinstance(found, Response):
            return found
        admission, lang = admitted(request), language(request)
        if ctx.pki is None:
            return failed(request, admission, Unavailable("the PKI is not configured"))
        status = await run_in_threadpool(ctx.pki.status)
        now = status.checked_at
        shown(admission, result="initialized" if status.initialized else "not initialized")
        return pages.render(
            request,
            "officer_pki.html",
            {
                "csrf": found.csrf,
                "status": status,
                "authorities": [
                    {
                        "role": a.role,
                        "subject": a.subject,
                        "serial": a.serial,
                        "until": moment(a.not_after, lang),
                        "days": (a.not_after - now).days,
                        "valid": a.not_before <= now < a.not_after,
                    }
                    for a in status.authorities
                ],
                "crl_issued": moment(status.crl_issued, lang) if status.crl_issued else "",
                "crl_next": moment(status.crl_next, lang) if status.crl_next else "",
                "checked_at": moment(now, lang),
            },
            family="officer",
        )

    return router


def _page(request: Request) -> int:
    page = whole_number(request.query_params.get("page", "0"), 5)
    if page is None:
        raise InvalidInput("no such page")
    return page


def _page_or_zero(request: Request) -> int:
    try:
        return _page(request)
    except InvalidInput:
        return 0


def _day(value: str, message: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(message) from None
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)


def _next_query(asked: dict[str, str], page: int, lang: str) -> str:
    return urlencode({**{k: v for k, v in asked.items() if v}, "page": str(page), "lang": lang})


def _alert_row(alert: Any, lang: str) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "status": alert.status,
        "verdict": alert.verdict,
        "professional": alert.professional,
        "organization": alert.organization or "",
        "patient": alert.patient_id or "",
        "explanation": alert.explanation,
        "raised": moment(alert.raised_at, lang),
        "updated": moment(alert.updated_at, lang),
        "assignee": alert.assignee or "",
        "acknowledged_by": alert.acknowledged_by or "",
        "closed_by": alert.closed_by or "",
        "note": alert.note or "",
        "notified": moment(alert.patient_notified_at, lang) if alert.patient_notified_at else "",
        "evidence": len(alert.evidence),
    }


def _access_row(access: Any, lang: str, size: int) -> dict[str, str]:
    return {
        "leaf": str(access.leaf),
        "stream": access.stream,
        "when": moment(access.recorded, lang),
        "professional": access.professional,
        "organization": access.organization,
        "patient": access.patient or "",
        "interaction": access.interaction,
        "outcome": access.outcome,
        "basis": access.basis or "",
        "proof": "/audit/proof/inclusion?"
        + urlencode({"stream": access.stream, "leaf_index": access.leaf, "tree_size": size}),
    }


__all__ = ["officer_pages_router"]
