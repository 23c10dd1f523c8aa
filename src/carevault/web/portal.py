"""The portal: every page router built on one ``PortalContext``.

The pages are server-rendered (Jinja2) in French, English and German (`web/i18n.py`), with the
same security headers as the API (a strict CSP: no inline script or style; scripts are files
under ``/static``). Sessions live on the server (`carevault.services.portal_sessions`); the cookie
is HttpOnly, SameSite=Strict and Secure outside ``dev``, and a session unused for 30 minutes
ends. Every form carries a CSRF token (`web/pages.py`). Errors are pages a person can read.

One module per part of the portal: ``signin`` (sign-in, sign-out, enrolment), ``record_home``
(the person's record, acting for someone, presence codes), ``oauth_consent`` (an app asks to
reach the record), ``officer_pages`` (the security officer's workspace). A new part is one
more router built on the same context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter

from carevault.domain.affinity import AffinityDomain
from carevault.services.account_passkeys import AccountPasskeys
from carevault.services.accounts import AccountService
from carevault.services.anomaly_detection import AnomalyDetection
from carevault.services.audit_log import AuditLog
from carevault.services.care_access import CareAccess
from carevault.services.directory import patient_resource
from carevault.services.documents import DocumentService
from carevault.services.patient_uploads import PatientUploads
from carevault.services.pki import PublicDocuments
from carevault.services.portal_sessions import PortalSession, PortalSessions
from carevault.services.prescriptions import PrescriptionService
from carevault.services.record_policy import RecordPolicy
from carevault.services.representatives import Representatives
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings
from carevault.web.access_page import access_page_router
from carevault.web.documents_page import documents_page_router
from carevault.web.oauth_consent import AUTHORIZE_PARAMS, oauth_consent_router
from carevault.web.officer_pages import officer_pages_router
from carevault.web.pages import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Pages
from carevault.web.passkeys_page import passkeys_page_router
from carevault.web.password_page import password_page_router
from carevault.web.prescriptions_page import prescriptions_page_router
from carevault.web.record_home import patient_name, record_home_router
from carevault.web.representatives_page import representatives_page_router
from carevault.web.sharing_page import sharing_page_router
from carevault.web.signin import signin_router


@dataclass(frozen=True)
class PortalContext:
    """What the portal's pages are given by ``bootstrap``: the services they call, and the
    shared page machinery."""

    settings: Settings
    accounts: AccountService
    sessions: PortalSessions
    log: AuditLog
    units: Callable[[], UnitOfWork]
    clock: Callable[[], datetime]
    policy: RecordPolicy
    care: CareAccess
    representatives: Representatives
    affinity: AffinityDomain
    pages: Pages
    documents: DocumentService
    alerts: AnomalyDetection | None = None
    pki: PublicDocuments | None = None
    passkeys: AccountPasskeys | None = None  # patients' passkeys (a second factor)
    uploads: PatientUploads | None = None  # patients' own documents
    prescriptions: PrescriptionService | None = None  # patients' e-prescriptions and codes


def acting_for(
    accounts: AccountService, units: Callable[[], UnitOfWork], session: PortalSession
) -> dict[str, str] | None:
    """Whom a representative's session acts for: the patient's name and the broadest scope of
    the mandates in force (None once none is: the engine refuses them anyway)."""
    patient_id = session.patient_id or ""
    scopes = {
        m.scope for m in accounts.mandates_of(session.account_id) if m.patient_id == patient_id
    }
    if not scopes:
        return None
    resource = patient_resource(units, patient_id)
    return {"name": patient_name(resource), "scope": "manage" if "manage" in scopes else "read"}


def portal_router(
    settings: Settings,
    accounts: AccountService,
    sessions: PortalSessions,
    log: AuditLog,
    units: Callable[[], UnitOfWork],
    clock: Callable[[], datetime],
    policy: RecordPolicy,
    *,
    care: CareAccess,
    representatives: Representatives,
    affinity: AffinityDomain,
    documents: DocumentService,
    alerts: AnomalyDetection | None = None,
    pki: PublicDocuments | None = None,
    passkeys: AccountPasskeys | None = None,
    uploads: PatientUploads | None = None,
    prescriptions: PrescriptionService | None = None,
) -> APIRouter:
    pages = Pages(
        sessions,
        secure=settings.environment != "dev",
        acting=lambda session: acting_for(accounts, units, session),
    )
    ctx = PortalContext(
        settings=settings,
        accounts=accounts,
        sessions=sessions,
        log=log,
        units=units,
        clock=clock,
        policy=policy,
        care=care,
        representatives=representatives,
        affinity=affinity,
        pages=pages,
        documents=documents,
        alerts=alerts,
        pki=pki,
        passkeys=passkeys,
        uploads=uploads,
        prescriptions=prescriptions,
    )
    router = APIRouter()
    parts = (
        signin_router,
        record_home_router,
        documents_page_router,
        prescriptions_page_router,
        access_page_router,
        sharing_page_router,
        representatives_page_router,
        passkeys_page_router,
        password_page_router,
        oauth_consent_router,
        officer_pages_router,
    )
    for part in parts:
        router.include_router(part(ctx))
    return router


__all__ = [
    "AUTHORIZE_PARAMS",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "PortalContext",
    "portal_router",
]
