"""Who may change the facts the engine trusts: the authorities an operator registers.

An organization's systems get no more than its professionals until an operator registers the
organization, explicitly, as one of the `Authority` kinds: an identity source (feeds and merges
the patients of its own assigning authority), the provider registry (professionals, their roles,
organizations, licences), or an admission system (records the care events that open a record to
its professionals). A professional's own card never holds an authority. Registering and ending
one is an operator's act, recorded in the operators' audit stream by the caller's unit of work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from carevault.adapters.storage.authority_store import RegisteredAuthority
from carevault.domain.authorization import Authority
from carevault.domain.directory import IdentityDomain
from carevault.domain.errors import BusinessRuleViolation, Conflict, NotFound
from carevault.services.unit_of_work import UnitOfWork

__all__ = ["Powers", "end_authority", "list_authorities", "powers_of", "register_authority"]


@dataclass(frozen=True)
class Powers:
    """What a system acting for an organization may do beyond its professionals."""

    authorities: frozenset[Authority] = frozenset()
    identity_domain: IdentityDomain | None = None  # an identity source's assigning authority


NO_POWERS = Powers()


def register_authority(
    uow: UnitOfWork,
    organization_id: str,
    kind: Authority,
    *,
    by: str,
    now: datetime,
    assigning_authority: str | None = None,
) -> RegisteredAuthority:
    """Register ``organization_id`` as an authority of ``kind``. An identity source writes the
    identifiers of one system: ``assigning_authority``, by default the organization's own
    patient-identifier system."""
    stored = uow.directory.read("Organization", organization_id)
    if stored is None:
        raise NotFound(f"Organization/{organization_id} is not in the directory")
    if kind is Authority.IDENTITY_SOURCE:
        own = uow.directory.organization_patient_id_system(organization_id)
        assigning_authority = assigning_authority or own
        if assigning_authority is None:
            raise BusinessRuleViolation(
                "an identity source needs an assigning authority: give --assigning-authority "
                "or register the organization with --patient-id-system"
            )
        if assigning_authority not in uow.directory.assigning_authorities():
            raise BusinessRuleViolation(
                f"{assigning_authority!r} is not the patient-identifier system of any "
                "registered organization"
            )
    elif assigning_authority is not None:
        raise BusinessRuleViolation("only an identity source has an assigning authority")
    if any(a.kind is kind for a in uow.authorities.active_of(organization_id)):
        raise Conflict(f"Organization/{organization_id} is already registered as {kind.value}")
    authority = RegisteredAuthority(
        id=uuid.uuid4().hex,
        organization_id=organization_id,
        kind=kind,
        assigning_authority=assigning_authority,
        created_at=now,
        created_by=by,
    )
    uow.authorities.add(authority)
    uow.commit()
    return authority


def end_authority(uow: UnitOfWork, authority_id: str, *, by: str, now: datetime) -> None:
    """End a registration at once: the organization's live tokens lose it on their next use."""
    if not uow.authorities.end(authority_id, by, now):
        raise NotFound(f"no active authority {authority_id!r}")
    uow.commit()


def list_authorities(uow: UnitOfWork, *, include_ended: bool = False) -> list[RegisteredAuthority]:
    return uow.authorities.listing(include_ended=include_ended)


def powers_of(uow: UnitOfWork, organization_id: str | None) -> Powers:
    """The authorities of the organization a system acts for, read fresh on every request
    that needs them (an ended registration stops at once)."""
    if organization_id is None:
        return NO_POWERS
    registered = uow.authorities.active_of(organization_id)
    if not registered:
        return NO_POWERS
    domain = next(
        (
            IdentityDomain(a.assigning_authority)
            for a in registered
            if a.kind is Authority.IDENTITY_SOURCE and a.assigning_authority
        ),
        None,
    )
    return Powers(frozenset(a.kind for a in registered), domain)
