"""Portal sessions, on a unit of work in memory (no database): only the cookie's hash is kept,
sessions expire when idle, end at once, and a representative's session changes record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.errors import NotAuthenticated, NotPermitted
from carevault.services.portal_sessions import (
    EXTEND_STEP,
    IDLE_LIFETIME,
    PortalSessions,
    check_csrf,
)
from support.fake_uow import FakeUnitOfWork

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def sessions(uow: FakeUnitOfWork, clock: Clock) -> PortalSessions:
    return PortalSessions(lambda: uow, clock)


def test_only_the_hash_of_the_cookie_is_kept(sessions: PortalSessions, uow: FakeUnitOfWork) -> None:
    token, session = sessions.open("acc-1", "patient", "pat-1")
    assert uow.commits == 1
    assert token not in uow.sessions.rows
    assert token not in repr(uow.sessions.rows)
    assert sessions.resume(token) == session


def test_a_session_lives_while_it_is_used(sessions: PortalSessions, clock: Clock) -> None:
    token, _ = sessions.open("acc-1", "patient", "pat-1")
    for _ in range(3):
        clock.now += IDLE_LIFETIME - timedelta(seconds=1)
        assert sessions.resume(token).expires_at == clock.now + IDLE_LIFETIME
    clock.now += IDLE_LIFETIME
    with pytest.raises(NotAuthenticated, match="ended"):
        sessions.resume(token)


def test_a_session_used_again_within_the_step_is_not_written_back(
    sessions: PortalSessions, uow: FakeUnitOfWork, clock: Clock
) -> None:
    """Every page reads the session: writing its expiry back each time cost a durable commit
    per page. Within EXTEND_STEP of the last push, the expiry stays (it only comes sooner
    than a push would make it, never later); past it, it is pushed back again."""
    token, opened = sessions.open("acc-1", "patient", "pat-1")
    commits = uow.commits
    clock.now += EXTEND_STEP - timedelta(seconds=1)
    assert sessions.resume(token).expires_at == opened.expires_at
    assert uow.commits == commits
    clock.now += timedelta(seconds=1)
    assert sessions.resume(token).expires_at == clock.now + IDLE_LIFETIME
    assert uow.commits == commits + 1
    # Used only within the steps, it still ends at most IDLE_LIFETIME after its last use.
    last_use = clock.now + EXTEND_STEP / 2
    clock.now = last_use
    sessions.resume(token)
    clock.now = last_use + IDLE_LIFETIME
    with pytest.raises(NotAuthenticated, match="ended"):
        sessions.resume(token)


def test_an_ended_or_unknown_session_opens_nothing(sessions: PortalSessions) -> None:
    token, _ = sessions.open("acc-1", "patient", "pat-1")
    sessions.end(token)
    sessions.end(None)
    for presented in (token, "nonsense", "", None, "x" * 101):
        with pytest.raises(NotAuthenticated):
            sessions.resume(presented)


def test_only_a_representative_changes_record(sessions: PortalSessions) -> None:
    representative, _ = sessions.open("acc-1", "representative", None)
    patient, _ = sessions.open("acc-2", "patient", "pat-2")
    sessions.act_for(representative, "pat-9")
    sessions.act_for(patient, "pat-9")
    assert sessions.resume(representative).patient_id == "pat-9"
    assert sessions.resume(patient).patient_id == "pat-2"


def test_every_form_echoes_its_session_csrf(sessions: PortalSessions) -> None:
    _, session = sessions.open("acc-1", "patient", "pat-1")
    check_csrf(session.csrf, session.csrf)
    for presented in (None, "", session.csrf + "x"):
        with pytest.raises(NotPermitted):
            check_csrf(session.csrf, presented)
