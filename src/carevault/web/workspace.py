"""The professionals' workspace: one router of pages built on one `Workspace`
(`web/workspace_context.py`): ``workspace_signin`` (the card proof, passkeys, sign-in and out)
``workspace_record`` (finding a patient, the record as the engine lets this professional
see it, reading, publishing, emergency access) and ``workspace_mine`` (the home page: my
patients and my accesses, my assistants, my delegations, whom an assistant acts for).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter

from carevault.domain.affinity import AffinityDomain
from carevault.services.audit_log import AuditLog
from carevault.services.care_access import CareAccess
from carevault.services.documents import DocumentService
from carevault.services.my_accesses import MyAccesses
from carevault.services.portal_sessions import PortalSessions
from carevault.services.professional_record import ProfessionalRecord
from carevault.services.professionals import Professionals
from carevault.services.record_policy import RecordPolicy
from carevault.services.workspace_signin import WorkspaceSignIn
from carevault.settings import Settings
from carevault.web.pages import Pages
from carevault.web.workspace_context import Workspace
from carevault.web.workspace_mine import workspace_mine_router
from carevault.web.workspace_record import workspace_record_router
from carevault.web.workspace_signin import workspace_signin_router


def workspace_router(
    settings: Settings,
    sessions: PortalSessions,
    signin: WorkspaceSignIn,
    clock: Callable[[], datetime],
    log: AuditLog,
    policy: RecordPolicy,
    care: CareAccess,
    documents: DocumentService,
    professionals: Professionals,
    affinity: AffinityDomain,
    record: ProfessionalRecord,
) -> APIRouter:
    pages = Pages(sessions, secure=settings.environment != "dev")
    ws = Workspace(
        settings,
        pages,
        signin,
        clock,
        log,
        policy,
        care,
        documents,
        professionals,
        affinity,
        record,
    )
    router = APIRouter()
    for part in (workspace_signin_router, workspace_record_router):
        router.include_router(part(ws))
    mine = MyAccesses(policy.units, policy.audit, clock=policy.clock)
    router.include_router(workspace_mine_router(ws, mine))
    return router


__all__ = ["workspace_router"]
