"""What every page of the professionals' workspace shares.

A health professional without practice software of their own signs in with a passkey bound to
their card (`web/workspace_signin.py`) and works with the record as the engine lets them
(`web/workspace_record.py`), in the browser.

It is built like the patient portal (`web/portal.py`): server-rendered pages in French,
English and German, the same page machinery (`web/pages.py`: sessions, CSRF, the strict CSP),
the same services. Every page starts with the same question, asked once here
(`Workspace.professional` / `Workspace.posted`): is a professional signed in (else to the
workspace's sign-in), is this session a professional's (else 403); a session whose card
certificate or licence no longer holds has already ended (`PortalSessions.resume`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from carevault.domain.affinity import AffinityDomain
from carevault.domain.authorization import Subject
from carevault.domain.errors import NotAuthenticated
from carevault.services.audit_log import AuditLog
from carevault.services.care_access import CareAccess
from carevault.services.documents import DocumentService
from carevault.services.portal_sessions import PRACTITIONER_SESSION, PortalSession, PortalSessions
from carevault.services.professional_record import ProfessionalRecord
from carevault.services.professionals import Professionals
from carevault.services.record_policy import Actor, RecordPolicy
from carevault.services.workspace_signin import SignedIn, WorkspaceSignIn
from carevault.settings import Settings
from carevault.web.i18n import language
from carevault.web.pages import ACTING_KEY, SESSION_COOKIE, FormRefused, Pages, client_address

LOGIN = "/workspace/login"
HOME = "/workspace"


@dataclass(frozen=True)
class Professional:
    """The signed-in professional of a request: their session, and who they are for the
    engine and the audit (the directory read again at each request)."""

    session: PortalSession
    actor: Actor
    name: str  # as the directory has it
    # An assistant acting under a mandate in force: the practitioner, and their name.
    acting_for: str | None = None
    acting_for_name: str = ""

    @property
    def practitioner_id(self) -> str:
        return self.session.account_id

    @property
    def subject(self) -> Subject:
        return self.actor.subject


class Answered(Exception):
    """A page's preamble answered the request itself (to the sign-in page, or refused)."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered")
        self.response = response


@dataclass(frozen=True)
class Workspace:
    """What the workspace's pages are given by ``bootstrap``: the services they call, and the
    page machinery."""

    settings: Settings
    pages: Pages
    signin: WorkspaceSignIn
    clock: Callable[[], datetime]
    log: AuditLog
    policy: RecordPolicy
    care: CareAccess
    documents: DocumentService
    professionals: Professionals
    affinity: AffinityDomain
    record: ProfessionalRecord

    @property
    def sessions(self) -> PortalSessions:
        return self.pages.sessions

    def signin_session(self, who: SignedIn) -> tuple[str, PortalSession]:
        """A session for a professional who has just proved their passkey, standing on the
        passkey's card certificate."""
        return self.sessions.open(
            who.practitioner_id, PRACTITIONER_SESSION, None, who.certificate_serial
        )

    def to_login(self, request: Request) -> Response:
        return RedirectResponse(f"{LOGIN}?lang={language(request)}", status_code=303)

    def refused(self, request: Request, status: int, key: str) -> Answered:
        return Answered(
            self.pages.error(request, status, self.pages.text(request, key, "workspace"))
        )

    def _professional(self, request: Request, session: PortalSession) -> Professional:
        if session.kind != PRACTITIONER_SESSION:
            raise self.refused(request, 403, "not_professional")
        chosen = session.acting_for
        subject, name = self.signin.describe(session.account_id, chosen)
        acting = subject.mandator.id if subject.mandator is not None else None
        if chosen is not None and acting != chosen:
            # The mandate ended (or was never theirs): the session acts for nobody from now.
            self.sessions.act_for_professional(request.cookies.get(SESSION_COOKIE), None)
            session = replace(session, acting_for=None)
        who = f"Practitioner/{session.account_id}"
        actor = Actor(subject, who, network=client_address(request))
        if acting is None:
            return Professional(session, actor, name)
        acting_name = self.signin.name_of(acting)
        # Every page's banner (`_workspace_header.html`): in whose name this assistant acts.
        request.scope[ACTING_KEY] = {"name": acting_name, "practitioner": acting}
        return Professional(session, actor, name, acting, acting_name)

    async def professional(self, request: Request) -> Professional:
        """The signed-in professional of a page (GET); `Answered` otherwise."""
        session = await self.pages.session(request)
        if session is None:
            raise Answered(self.to_login(request))
        return await run_in_threadpool(self._professional, request, session)

    async def posted(self, request: Request) -> tuple[Professional, dict[str, str]]:
        """The signed-in professional and the form of a POST whose CSRF token is the
        session's; `Answered` otherwise (to the sign-in page, 400, 403)."""
        try:
            session, form = await self.pages.signed_post(request)
        except NotAuthenticated:
            raise Answered(self.to_login(request)) from None
        except FormRefused:
            raise self.refused(request, 400, "form") from None
        return await run_in_threadpool(self._professional, request, session), form


__all__ = ["HOME", "LOGIN", "Answered", "Professional", "Workspace"]
