"""Registering and ending authorities, on a unit of work in memory (no database): the rules are
the service's; the stores are faked (`support.fake_uow`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.authorization import Authority
from carevault.domain.directory import IdentityDomain
from carevault.domain.errors import BusinessRuleViolation, Conflict, NotFound
from carevault.services.authorities import (
    Powers,
    end_authority,
    list_authorities,
    powers_of,
    register_authority,
)
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOSPITAL = "org-hospital"
HOSPITAL_SYSTEM = "urn:oid:1.2.3.4.5"


@pytest.fixture
def uow() -> FakeUnitOfWork:
    fake = FakeUnitOfWork()
    fake.directory.add_organization(HOSPITAL, HOSPITAL_SYSTEM)
    fake.directory.add_organization("org-registry")
    fake.commit()
    fake.commits = 0
    return fake


def test_an_identity_source_writes_its_own_system_by_default(uow: FakeUnitOfWork) -> None:
    with uow:
        authority = register_authority(uow, HOSPITAL, Authority.IDENTITY_SOURCE, by="op", now=NOW)
    assert authority.assigning_authority == HOSPITAL_SYSTEM
    assert uow.commits == 1
    assert powers_of(uow, HOSPITAL) == Powers(
        frozenset({Authority.IDENTITY_SOURCE}), IdentityDomain(HOSPITAL_SYSTEM)
    )


def test_an_unknown_organization_is_not_found_and_nothing_is_kept(uow: FakeUnitOfWork) -> None:
    with pytest.raises(NotFound), uow:
        register_authority(uow, "org-nowhere", Authority.ADMISSION_SYSTEM, by="op", now=NOW)
    assert list_authorities(uow, include_ended=True) == []
    assert uow.commits == 0


def test_an_identity_source_needs_a_known_assigning_authority(uow: FakeUnitOfWork) -> None:
    with pytest.raises(BusinessRuleViolation, match="needs an assigning authority"), uow:
        register_authority(uow, "org-registry", Authority.IDENTITY_SOURCE, by="op", now=NOW)
    with pytest.raises(BusinessRuleViolation, match="not the patient-identifier system"), uow:
        register_authority(uow, "org-registry", Authority.IDENTITY_SOURCE, by="op", now=NOW,
                           assigning_authority="urn:oid:9.9")
    with uow:
        registered = register_authority(uow, "org-registry", Authority.IDENTITY_SOURCE, by="op",
                                        now=NOW, assigning_authority=HOSPITAL_SYSTEM)
    assert registered.assigning_authority == HOSPITAL_SYSTEM


def test_only_an_identity_source_has_an_assigning_authority(uow: FakeUnitOfWork) -> None:
    with pytest.raises(BusinessRuleViolation, match="only an identity source"), uow:
        register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW,
                           assigning_authority=HOSPITAL_SYSTEM)


def test_one_active_registration_per_kind(uow: FakeUnitOfWork) -> None:
    with uow:
        register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW)
    with pytest.raises(Conflict), uow:
        register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW)
    with uow:
        register_authority(uow, HOSPITAL, Authority.PROVIDER_REGISTRY, by="op", now=NOW)
    assert powers_of(uow, HOSPITAL).authorities == {
        Authority.ADMISSION_SYSTEM, Authority.PROVIDER_REGISTRY}


def test_an_ended_registration_stops_at_once_and_stays_listed(uow: FakeUnitOfWork) -> None:
    with uow:
        admission = register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW)
    later = NOW + timedelta(hours=1)
    with uow:
        end_authority(uow, admission.id, by="op-2", now=later)
    assert powers_of(uow, HOSPITAL) == Powers()
    assert list_authorities(uow) == []
    [ended] = list_authorities(uow, include_ended=True)
    assert (ended.ended_at, ended.ended_by) == (later, "op-2")
    with pytest.raises(NotFound), uow:
        end_authority(uow, admission.id, by="op", now=later)
    with uow:  # and it may be registered again
        register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=later)


def test_no_organization_no_powers(uow: FakeUnitOfWork) -> None:
    assert powers_of(uow, None) == Powers()
    assert powers_of(uow, "org-registry") == Powers()


def test_leaving_without_commit_keeps_nothing(uow: FakeUnitOfWork) -> None:
    """The fake keeps the unit of work's promise, as the real one does."""
    with uow:
        uow.authorities.end("none", "op", NOW)
        register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW)
        with pytest.raises(Conflict), uow:
            register_authority(uow, HOSPITAL, Authority.ADMISSION_SYSTEM, by="op", now=NOW)
    assert len(list_authorities(uow)) == 1
