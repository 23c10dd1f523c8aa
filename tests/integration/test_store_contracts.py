"""The fakes answer as the real stores do: the same checks run on the stores of
`support.fake_uow` and on the real ones (SQLite and PostgreSQL), so that a service tested on the
fake (tests/unit/services) is tested against the behaviour it will meet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.adapters.storage.portal_store import StoredSession
from carevault.adapters.storage.unit_of_work import UnitOfWork
from carevault.domain.authorization import Authority
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import hospital, patient
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def authority(id: str, organization_id: str, kind: Authority, minutes: int) -> RegisteredAuthority:
    return RegisteredAuthority(id, organization_id, kind, None, NOW + timedelta(minutes=minutes),
                               "op")


def check_authority_store(uow: Any, org: str) -> None:
    with uow:
        uow.authorities.add(authority("b", org, Authority.PROVIDER_REGISTRY, 1))
        uow.authorities.add(authority("a", org, Authority.ADMISSION_SYSTEM, 1))
        uow.authorities.add(authority("c", org, Authority.IDENTITY_SOURCE, 0))
        uow.commit()
    with uow:
        assert uow.authorities.end("a", "op-2", NOW) is True
        assert uow.authorities.end("a", "op-2", NOW) is False
        assert uow.authorities.end("nobody", "op-2", NOW) is False
        uow.commit()
    with uow:
        assert sorted(a.id for a in uow.authorities.active_of(org)) == ["b", "c"]
        assert uow.authorities.active_of("org-other") == []
        assert [a.id for a in uow.authorities.listing()] == ["c", "b"]
        listed = uow.authorities.listing(include_ended=True)
        assert [a.id for a in listed] == ["c", "a", "b"]  # by creation, then id
        assert (listed[1].ended_at, listed[1].ended_by) == (NOW, "op-2")
        uow.authorities.end("b", "op", NOW)  # not committed
    with uow:
        assert sorted(a.id for a in uow.authorities.active_of(org)) == ["b", "c"]


def check_presence_code_store(uow: Any, patient_id: str, other_id: str) -> None:
    expires = NOW + timedelta(minutes=10)
    with uow:
        uow.presence_codes.add("h1", patient_id, "account:a", NOW, expires)
        uow.presence_codes.add("h2", patient_id, "account:a", NOW, expires)
        uow.commit()
    with uow:
        codes = uow.presence_codes
        assert codes.usable("h1", patient_id, NOW)
        assert not codes.usable("h1", other_id, NOW)
        assert not codes.usable("h1", patient_id, expires)
        assert not codes.usable("nope", patient_id, NOW)
        assert not codes.use("h1", other_id, "dr", NOW)
        assert not codes.use("h2", patient_id, "dr", expires)
        assert codes.use("h1", patient_id, "dr", NOW)
        assert not codes.use("h1", patient_id, "dr", NOW)
        assert not codes.usable("h1", patient_id, NOW)
        uow.commit()
    with uow:
        assert not uow.presence_codes.usable("h1", patient_id, NOW)
        assert uow.presence_codes.usable("h2", patient_id, NOW)


def check_session_store(uow: Any) -> None:
    later = NOW + timedelta(minutes=30)
    with uow:
        uow.sessions.add(StoredSession("s1", "acc-1", "representative", None, "c1", NOW, later))
        uow.sessions.add(StoredSession("s2", "acc-2", "patient", "pat-2", "c2", NOW, later))
        uow.commit()
    with uow:
        assert uow.sessions.get("s1") == StoredSession(
            "s1", "acc-1", "representative", None, "c1", NOW, later)
        assert uow.sessions.get("nope") is None
        uow.sessions.extend("s1", later + timedelta(minutes=5))
        uow.sessions.act_for("s1", "pat-9")
        uow.sessions.act_for("s2", "pat-9")
        uow.sessions.end("s2", later)
        uow.sessions.end("s2", later + timedelta(hours=1))  # ended once
        uow.commit()
    with uow:
        one, two = uow.sessions.get("s1"), uow.sessions.get("s2")
        assert (one.patient_id, one.expires_at, one.ended_at) == (
            "pat-9", later + timedelta(minutes=5), None)
        assert (two.patient_id, two.ended_at) == ("pat-2", later)
        uow.sessions.end("s1", later)  # not committed
    with uow:
        assert uow.sessions.get("s1").ended_at is None


def test_the_fake_session_store() -> None:
    check_session_store(FakeUnitOfWork())


def test_the_real_session_store(uow: Callable[[], UnitOfWork]) -> None:
    check_session_store(_Reused(uow))


def _organization(uow: Callable[[], UnitOfWork], ctx: DirectoryContext) -> str:
    with uow() as unit:
        [stored] = svc.register_organizations(unit, ctx, [hospital(ctx.systems)])
    return stored.id


def test_the_fake_authority_store() -> None:
    fake = FakeUnitOfWork()
    fake.directory.add_organization("org-1")
    check_authority_store(fake, "org-1")


def test_the_real_authority_store(uow: Callable[[], UnitOfWork], ctx: DirectoryContext) -> None:
    org = _organization(uow, ctx)
    check_authority_store(_Reused(uow), org)


def test_the_fake_presence_code_store() -> None:
    check_presence_code_store(FakeUnitOfWork(), "pat-1", "pat-2")


def test_the_real_presence_code_store(
    uow: Callable[[], UnitOfWork], ctx: DirectoryContext
) -> None:
    with uow() as unit:
        one, two = svc.register_patients(unit, ctx, [patient(ctx.systems, 1),
                                                     patient(ctx.systems, 2)])
    check_presence_code_store(_Reused(uow), one.id, two.id)


class _Reused:
    """A fresh real unit of work at each ``with``, used as the fake is (one object)."""

    def __init__(self, units: Callable[[], UnitOfWork]) -> None:
        self._units = units
        self._current: UnitOfWork | None = None

    def __enter__(self) -> UnitOfWork:
        self._current = self._units().__enter__()
        return self._current

    def __exit__(self, *exc: Any) -> None:
        assert self._current is not None
        self._current.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)
