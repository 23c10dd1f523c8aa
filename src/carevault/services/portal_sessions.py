"""Server-side sessions of the web portal.

The cookie carries 256 random bits; the database keeps only their SHA-256, so neither a backup
nor an operator reading the table can take over a session. Sessions expire after
``IDLE_LIFETIME`` without use and can be ended at once (sign-out; "sign out everywhere" ends
every session of the account, `AccountService.sign_out_everywhere`). Each session has its own
CSRF token that every form must echo.

A professional's session (kind ``practitioner``, opened with a passkey in the workspace) stands
on the card certificate the passkey was enrolled with and on the licence: at every request both
are checked again (`workspace_signin.binding_problem`), and when either fails every session of
that professional ends at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from carevault.adapters.storage.portal_store import StoredSession
from carevault.domain.errors import NotAuthenticated, NotPermitted
from carevault.services.unit_of_work import UnitOfWork
from carevault.services.workspace_signin import binding_problem

IDLE_LIFETIME = timedelta(minutes=30)
# A request pushes the idle expiry back only once it would move by at least this much: every
# page reads the session, and writing it back each time cost a durable commit (an fsync) per
# page. A session used again within the step keeps its expiry, so it ends between
# ``IDLE_LIFETIME - EXTEND_STEP`` and ``IDLE_LIFETIME`` after its last use: never later.
EXTEND_STEP = timedelta(minutes=1)
PRACTITIONER_SESSION = "practitioner"  # a professional signed in to the workspace


@dataclass(frozen=True)
class PortalSession:
    account_id: str  # a professional's: their practitioner id
    kind: str  # patient | representative | operator | security-officer | practitioner
    patient_id: str | None
    csrf: str
    expires_at: datetime
    certificate_serial: str | None = None  # a professional's card certificate
    acting_for: str | None = None  # an assistant's: the practitioner whose mandate they use


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class PortalSessions:
    def __init__(self, units: Callable[[], UnitOfWork], clock: Callable[[], datetime]) -> None:
        self.units = units
        self.clock = clock

    def open(
        self,
        account_id: str,
        kind: str,
        patient_id: str | None,
        certificate_serial: str | None = None,
    ) -> tuple[str, PortalSession]:
        """Start a session; return the cookie value (shown once) and the session."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = PortalSession(
            account_id,
            kind,
            patient_id,
            secrets.token_urlsafe(32),
            now + IDLE_LIFETIME,
            certificate_serial,
        )
        with self.units() as uow:
            uow.sessions.add(
                StoredSession(
                    _hash(token),
                    account_id,
                    kind,
                    patient_id,
                    session.csrf,
                    now,
                    session.expires_at,
                    certificate_serial=certificate_serial,
                )
            )
            uow.commit()
        return token, session

    def resume(self, token: str | None) -> PortalSession:
        """The live session a cookie names, its idle expiry pushed back (when it moves by
        ``EXTEND_STEP`` or more); else NotAuthenticated."""
        if not token or len(token) > 100:
            raise NotAuthenticated("please sign in")
        now = self.clock()
        with self.units() as uow:
            row = uow.sessions.get(_hash(token))
            if row is None or row.ended_at is not None or row.expires_at <= now:
                raise NotAuthenticated("your session has ended; please sign in again")
            if row.kind == PRACTITIONER_SESSION:
                problem = binding_problem(uow, row.account_id, row.certificate_serial, now)
                if problem is not None:
                    uow.sessions.end_all(row.account_id, now)
                    uow.commit()
                    raise NotAuthenticated(f"your session has ended: {problem}")
            expires = now + IDLE_LIFETIME
            if expires - row.expires_at >= EXTEND_STEP:
                uow.sessions.extend(_hash(token), expires)
                uow.commit()
            else:
                expires = row.expires_at
        return PortalSession(
            row.account_id,
            row.kind,
            row.patient_id,
            row.csrf,
            expires,
            row.certificate_serial,
            row.acting_for,
        )

    def act_for(self, token: str, patient_id: str) -> None:
        """A representative's session now acts on this patient's record (mandate checked by
        the caller, through `AccountService.choose_patient`)."""
        with self.units() as uow:
            uow.sessions.act_for(_hash(token), patient_id)
            uow.commit()

    def act_for_professional(self, token: str | None, practitioner_id: str | None) -> None:
        """An assistant's workspace session now acts for ``practitioner_id`` (their mandate in
        force checked by the caller, `Professionals.act_for`), or for nobody (None)."""
        if not token:
            return
        with self.units() as uow:
            uow.sessions.act_for_practitioner(_hash(token), practitioner_id)
            uow.commit()

    def end_all(self, account_id: str) -> int:
        """End every session of an account (a professional: of their practitioner id)."""
        with self.units() as uow:
            ended = uow.sessions.end_all(account_id, self.clock())
            uow.commit()
        return ended

    def end(self, token: str | None) -> None:
        if not token:
            return
        with self.units() as uow:
            uow.sessions.end(_hash(token), self.clock())
            uow.commit()


def check_csrf(expected: str, presented: str | None) -> None:
    """Constant-time comparison of the form's CSRF token with the session's."""
    if not presented or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise NotPermitted(
            "the form is out of date or was not sent from this site; "
            "please reload the page and try again"
        )
