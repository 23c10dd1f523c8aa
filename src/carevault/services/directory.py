"""Use cases of the patient directory (MPI: PDQm, PIXm, identity feed) and the professional
directory (HPD: mCSD).

Each use case validates through the domain, writes through the unit of work and commits once,
so a refused request writes nothing. Resource ids are random (they reveal neither order nor
count); every write gets a new ``meta.versionId`` and a history row.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carevault.adapters.storage.directory_store import PatientWrite
from carevault.domain.directory import (
    Identifier,
    IdentityDomain,
    MergeState,
    PatientEntry,
    check_local_identifiers,
    check_merge,
    check_unmerge,
    is_directory_type,
)
from carevault.domain.errors import BusinessRuleViolation, Conflict, NotFound, VersionConflict
from carevault.domain.professions import Professions
from carevault.domain.queries import (
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
    SearchResult,
    Stored,
)
from carevault.fhirmodel.directory import (
    IdentitySystems,
    new_role,
    organization_entry,
    patient_entry,
    practitioner_entry,
    require_organization_type,
    role_entry,
    with_national_id,
)
from carevault.fhirmodel.validate import validate_resource
from carevault.services.unit_of_work import UnitOfWork, Units

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class DirectoryContext:
    """What the directory use cases need besides storage."""

    systems: IdentitySystems
    professions: Professions
    clock: Callable[[], datetime]


def _new_id() -> str:
    return uuid.uuid4().hex


def _stamp(resource: JsonObject, resource_id: str, version_id: int, now: datetime) -> JsonObject:
    stamped = copy.deepcopy(resource)
    stamped["id"] = resource_id
    meta = stamped.setdefault("meta", {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return stamped


def _check_if_match(current: Stored, if_match: int | None) -> None:
    if if_match is not None and if_match != current.version_id:
        raise VersionConflict(
            f"If-Match names version {if_match} but the current version is {current.version_id}"
        )


def _require(stored: Stored | None, resource_type: str, resource_id: str) -> Stored:
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    return stored


# --- patients (MPI) ---------------------------------------------------------------------------


def _prepare_patient(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    resource: JsonObject,
    patient_id: str,
    version_id: int,
    now: datetime,
    merged_into: str | None = None,
    allowed: Callable[[PatientEntry], None] | None = None,
) -> PatientWrite:
    """Validate and index a patient; ``allowed`` (an identity source's bounds) is asked first,
    so that a write outside them is refused as such, whatever else is wrong with it."""
    resource = validate_resource(resource, "Patient")
    entry = patient_entry(resource, ctx.systems)
    if allowed is not None:
        allowed(entry)
    with_national_id(resource, ctx.systems, entry.national_id)
    check_local_identifiers(entry.local_ids, uow.directory.assigning_authorities())
    return PatientWrite(
        patient_id, version_id, entry, _stamp(resource, patient_id, version_id, now), merged_into
    )


def _check_identifiers_free(
    uow: UnitOfWork, ctx: DirectoryContext, writes: Sequence[PatientWrite]
) -> None:
    claimed: dict[tuple[str, str], str] = {}
    for write in writes:
        pairs = [(ctx.systems.national, write.entry.national_id)]
        pairs += [(i.system, i.value) for i in write.entry.local_ids]
        for pair in pairs:
            other = claimed.setdefault(pair, write.id)
            if other != write.id:
                raise Conflict(f"identifier {pair[0]}|{pair[1]} is given to two patients")
    owners = uow.directory.identifier_owners(claimed)
    for pair, owner in owners.items():
        if owner != claimed[pair]:
            raise Conflict(
                f"identifier {pair[0]}|{pair[1]} already identifies Patient/{owner}",
                expression="Patient.identifier",
            )


def register_patients(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    resources: Sequence[JsonObject],
    domain: IdentityDomain | None = None,
) -> list[Stored]:
    """Create patients (an identity feed or the demo loader); all or none are stored. An
    identity source (``domain``) creates only patients it identifies itself."""
    now = ctx.clock()
    creating = None if domain is None else functools.partial(domain.check_write, None)
    writes = [_prepare_patient(uow, ctx, r, _new_id(), 1, now, allowed=creating) for r in resources]
    _check_identifiers_free(uow, ctx, writes)
    uow.directory.write_patients(writes, now, national_system=ctx.systems.national, new=True)
    uow.commit()
    return [Stored(w.id, w.version_id, w.resource) for w in writes]


def create_patient(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    resource: JsonObject,
    domain: IdentityDomain | None = None,
) -> Stored:
    return register_patients(uow, ctx, [resource], domain)[0]


def read_patient(uow: UnitOfWork, patient_id: str) -> Stored:
    return _require(uow.directory.read("Patient", patient_id), "Patient", patient_id)


def patient_resource(units: Units, patient_id: str) -> dict[str, Any]:
    """The patient's current resource, read in a transaction of its own (a page's heading)."""
    with units() as uow:
        return read_patient(uow, patient_id).resource


def update_patient(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    patient_id: str,
    resource: JsonObject,
    if_match: int | None = None,
    domain: IdentityDomain | None = None,
) -> Stored:
    """Replace a patient's demographics; merge links are kept as the merge set them."""
    stored = _replace_patient(uow, ctx, patient_id, resource, if_match, ctx.clock(), domain)
    uow.commit()
    return stored


def _replace_patient(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    patient_id: str,
    resource: JsonObject,
    if_match: int | None,
    now: datetime,
    domain: IdentityDomain | None = None,
) -> Stored:
    current = read_patient(uow, patient_id)
    _check_if_match(current, if_match)
    state = uow.directory.patient_merge_state(patient_id)
    assert state is not None
    incoming = copy.deepcopy(resource)
    incoming.pop("link", None)
    if current.resource.get("link"):
        incoming["link"] = current.resource["link"]
    if state.merged_into is not None:
        incoming["active"] = False
    before = patient_entry(current.resource, ctx.systems)
    if domain is not None:
        _keep_foreign_identifiers(incoming, current.resource, domain, ctx.systems)
    write = _prepare_patient(
        uow,
        ctx,
        incoming,
        patient_id,
        current.version_id + 1,
        now,
        state.merged_into,
        allowed=None if domain is None else functools.partial(domain.check_write, before),
    )
    _check_identifiers_free(uow, ctx, [write])
    uow.directory.write_patients([write], now, national_system=ctx.systems.national, new=False)
    return Stored(write.id, write.version_id, write.resource)


def _keep_foreign_identifiers(
    incoming: JsonObject, current: JsonObject, domain: IdentityDomain, systems: IdentitySystems
) -> None:
    """An identity source sends what it knows; the other authorities' numbers stay."""
    mine = {systems.national, domain.system}
    sent = {(i.get("system"), i.get("value")) for i in incoming.get("identifier", [])}
    kept = [
        i
        for i in current.get("identifier", [])
        if i.get("system") not in mine and (i.get("system"), i.get("value")) not in sent
    ]
    if kept:
        incoming["identifier"] = [*incoming.get("identifier", []), *copy.deepcopy(kept)]


def feed_patient(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    identifier: Identifier,
    resource: JsonObject,
    domain: IdentityDomain | None = None,
) -> tuple[Stored, bool]:
    """ITI-104 identity feed: create or update the patient the identifier names.

    A resource that comes with ``active: false`` and a ``replaced-by`` link is the feed's way
    of saying "this entry is a duplicate of that one": the entry is updated and merged.
    Returns the stored patient and whether it was created. An identity source (``domain``)
    names patients by its own identifiers only.
    """
    if domain is not None:
        domain.check_names(identifier)
    if not any(
        i.get("system") == identifier.system and i.get("value") == identifier.value
        for i in resource.get("identifier", [])
    ):
        raise BusinessRuleViolation(
            "the resource must carry the identifier named in the conditional update",
            expression="Patient.identifier",
        )
    matches = uow.directory.patients_by_identifier(identifier.system, identifier.value)
    if not matches:
        if _replaced_by(uow, resource) is not None:
            raise BusinessRuleViolation("cannot merge a patient that does not exist yet")
        return register_patients(uow, ctx, [resource], domain)[0], True
    survivor = _replaced_by(uow, resource)
    now = ctx.clock()
    stored = _replace_patient(uow, ctx, matches[0], resource, None, now, domain)
    if survivor is not None:
        stored = _merge(uow, ctx, matches[0], survivor, now, domain)
    uow.commit()
    return stored, False


def _replaced_by(uow: UnitOfWork, resource: JsonObject) -> str | None:
    """The surviving patient a feed's ``replaced-by`` link names: ITI-104 (PIXm 3,
    §2:3.104.4.2.2) names it by its identifier (``link.other.identifier``); a reference
    ``Patient/id`` is read too."""
    for link in resource.get("link", []):
        if link.get("type") != "replaced-by":
            continue
        other = link.get("other") if isinstance(link.get("other"), dict) else {}
        named = other.get("identifier")
        if "reference" not in other and isinstance(named, dict):
            system, value = named.get("system"), named.get("value")
            if not isinstance(system, str) or not isinstance(value, str) or not system:
                raise BusinessRuleViolation(
                    "a replaced-by link's identifier needs a system and a value",
                    expression="Patient.link.other.identifier",
                )
            holders = uow.directory.patients_by_identifier(system, value)
            if not holders:
                raise BusinessRuleViolation(
                    f"the surviving patient {system}|{value} is not known",
                    expression="Patient.link.other.identifier",
                )
            return holders[0]
        reference = str(other.get("reference", ""))
        kind, _, target = reference.partition("/")
        if kind != "Patient" or not target:
            raise BusinessRuleViolation(
                "a replaced-by link must name the surviving patient by its identifier or "
                "reference it as 'Patient/id'",
                expression="Patient.link.other",
            )
        return target
    return None


def merge_patients(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    source_id: str,
    survivor_id: str,
    domain: IdentityDomain | None = None,
) -> Stored:
    """Fold a duplicate entry into the surviving one; the duplicate answers with a link. An
    identity source merges only a duplicate that is its own alone."""
    stored = _merge(uow, ctx, source_id, survivor_id, ctx.clock(), domain)
    uow.commit()
    return stored


def _merge_states(uow: UnitOfWork, *ids: str) -> list[MergeState]:
    states = []
    for patient_id in ids:
        state = uow.directory.patient_merge_state(patient_id)
        if state is None:
            raise NotFound(f"Patient/{patient_id} is not known")
        states.append(state)
    return states


def _relink(
    resource: JsonObject, other: str, link_type: str | None, active: bool | None
) -> JsonObject:
    """The resource with its link to ``other`` removed, then (if ``link_type``) set anew."""
    updated = copy.deepcopy(resource)
    links = [
        link
        for link in updated.get("link", [])
        if link.get("other", {}).get("reference") != f"Patient/{other}"
    ]
    if link_type is not None:
        links.append({"other": {"reference": f"Patient/{other}"}, "type": link_type})
    if links:
        updated["link"] = links
    else:
        updated.pop("link", None)
    if active is not None:
        updated["active"] = active
    return updated


def _rewrite(
    uow: UnitOfWork,
    ctx_systems: IdentitySystems,
    current: Stored,
    resource: JsonObject,
    merged_into: str | None,
    now: datetime,
) -> Stored:
    entry = patient_entry(resource, ctx_systems)
    write = PatientWrite(
        current.id,
        current.version_id + 1,
        entry,
        _stamp(resource, current.id, current.version_id + 1, now),
        merged_into,
    )
    uow.directory.write_patients([write], now, national_system=ctx_systems.national, new=False)
    return Stored(write.id, write.version_id, write.resource)


def _merge(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    source_id: str,
    survivor_id: str,
    now: datetime,
    domain: IdentityDomain | None = None,
) -> Stored:
    source_state, survivor_state = _merge_states(uow, source_id, survivor_id)
    check_merge(source_state, survivor_state)
    systems = ctx.systems
    source = read_patient(uow, source_id)
    survivor = read_patient(uow, survivor_id)
    if domain is not None:
        domain.check_link(patient_entry(source.resource, systems))
    merged = _rewrite(
        uow,
        systems,
        source,
        _relink(source.resource, survivor_id, "replaced-by", active=False),
        survivor_id,
        now,
    )
    _rewrite(
        uow, systems, survivor, _relink(survivor.resource, source_id, "replaces", None), None, now
    )
    uow.directory.record_merge(source_id, survivor_id, now)
    return merged


def unmerge_patient(
    uow: UnitOfWork, ctx: DirectoryContext, source_id: str, domain: IdentityDomain | None = None
) -> Stored:
    """Undo a merge: the entry answers for itself again; both versions stay in the history."""
    now = ctx.clock()
    (state,) = _merge_states(uow, source_id)
    survivor_id = check_unmerge(state)
    source = read_patient(uow, source_id)
    survivor = read_patient(uow, survivor_id)
    if domain is not None:
        domain.check_link(patient_entry(source.resource, ctx.systems))
    restored = _rewrite(
        uow,
        ctx.systems,
        source,
        _relink(source.resource, survivor_id, None, active=True),
        None,
        now,
    )
    _rewrite(
        uow, ctx.systems, survivor, _relink(survivor.resource, source_id, None, None), None, now
    )
    uow.directory.record_unmerge(source_id, now)
    uow.commit()
    return restored


def search_patients(uow: UnitOfWork, query: PatientQuery, page: Page) -> SearchResult:
    return uow.directory.search_patients(query, page)


@dataclass(frozen=True)
class CrossReference:
    """PIXm's answer: the patient an identifier names, and every identifier it is known by."""

    patient_id: str
    identifiers: list[Identifier]


def cross_reference(
    uow: UnitOfWork, identifier: Identifier, target_systems: Sequence[str]
) -> CrossReference:
    holders = uow.directory.patients_by_identifier(identifier.system, identifier.value)
    if not holders:
        raise NotFound(
            f"no patient is known by {identifier.token()}", expression="sourceIdentifier"
        )
    (state,) = _merge_states(uow, holders[0])
    survivor = state.merged_into or state.patient_id
    members = [survivor, *uow.directory.merged_into(survivor)]
    found = [Identifier(s, v) for s, v in uow.directory.identifiers_of(members)]
    if target_systems:
        found = [i for i in found if i.system in target_systems]
    found = [i for i in found if i != identifier]
    return CrossReference(survivor, found)


# --- professionals (HPD) ----------------------------------------------------------------------


def create_organization(uow: UnitOfWork, ctx: DirectoryContext, resource: JsonObject) -> Stored:
    return register_organizations(uow, ctx, [resource])[0]


def register_organizations(
    uow: UnitOfWork, ctx: DirectoryContext, resources: Sequence[JsonObject]
) -> list[Stored]:
    now = ctx.clock()
    writes = []
    for resource in resources:
        valid = validate_resource(resource, "Organization")
        require_organization_type(valid)
        entry = organization_entry(valid, ctx.systems)
        org_id = _new_id()
        writes.append((Stored(org_id, 1, _stamp(valid, org_id, 1, now)), entry))
    taken = uow.directory.organization_ids_by_identifier(e.identifier for _, e in writes)
    if taken:
        value, owner = next(iter(taken.items()))
        raise Conflict(
            f"organization identifier {value!r} already names Organization/{owner}",
            expression="Organization.identifier",
        )
    uow.directory.write_organizations(writes, now, new=True)
    uow.commit()
    return [stored for stored, _ in writes]


def read_resource(uow: UnitOfWork, resource_type: str, resource_id: str) -> Stored:
    """A directory resource by type and id; a type the directories do not hold is not found."""
    if not is_directory_type(resource_type):
        raise NotFound(f"the directories hold no {resource_type}")
    return _require(uow.directory.read(resource_type, resource_id), resource_type, resource_id)


def history(uow: UnitOfWork, resource_type: str, resource_id: str) -> list[Stored]:
    read_resource(uow, resource_type, resource_id)
    return uow.directory.history(resource_type, resource_id)


def read_version(uow: UnitOfWork, resource_type: str, resource_id: str, version_id: int) -> Stored:
    found = uow.directory.version(resource_type, resource_id, version_id)
    if found is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}")
    return found


@dataclass(frozen=True)
class NewProfessional:
    """A practitioner with the role that says what they are and, optionally, where."""

    practitioner: JsonObject
    profession: str
    specialty: str | None = None
    organization_id: str | None = None


def register_professionals(
    uow: UnitOfWork, ctx: DirectoryContext, professionals: Sequence[NewProfessional]
) -> list[tuple[Stored, Stored]]:
    """Add practitioners, each with one PractitionerRole, in one transaction."""
    now = ctx.clock()
    practitioners, roles = [], []
    for item in professionals:
        valid = validate_resource(item.practitioner, "Practitioner")
        entry = practitioner_entry(valid, ctx.systems)
        ctx.professions.check(item.profession, item.specialty)
        practitioner_id = _new_id()
        practitioners.append(
            (Stored(practitioner_id, 1, _stamp(valid, practitioner_id, 1, now)), entry)
        )
        role = new_role(
            ctx.professions,
            practitioner_id=practitioner_id,
            profession=item.profession,
            specialty=item.specialty,
            organization_id=item.organization_id,
        )
        role_id = _new_id()
        roles.append(
            (Stored(role_id, 1, _stamp(role, role_id, 1, now)), role_entry(role, ctx.professions))
        )
    taken = uow.directory.practitioner_ids_by_identifier(e.identifier for _, e in practitioners)
    if taken:
        value, owner = next(iter(taken.items()))
        raise Conflict(
            f"professional identifier {value!r} already names Practitioner/{owner}",
            expression="Practitioner.identifier",
        )
    _check_organizations(uow, [e.organization_id for _, e in roles])
    uow.directory.write_practitioners(practitioners, now, new=True)
    uow.directory.write_roles(roles, now, new=True)
    uow.commit()
    return [(p, r) for (p, _), (r, _) in zip(practitioners, roles, strict=True)]


def _check_organizations(uow: UnitOfWork, ids: Sequence[str | None]) -> None:
    wanted = {i for i in ids if i is not None}
    missing = wanted - uow.directory.existing_ids("Organization", wanted)
    if missing:
        raise BusinessRuleViolation(
            f"Organization/{sorted(missing)[0]} is not known",
            expression="PractitionerRole.organization",
        )


def create_practitioner(uow: UnitOfWork, ctx: DirectoryContext, resource: JsonObject) -> Stored:
    now = ctx.clock()
    valid = validate_resource(resource, "Practitioner")
    entry = practitioner_entry(valid, ctx.systems)
    taken = uow.directory.practitioner_ids_by_identifier([entry.identifier])
    if taken:
        raise Conflict(
            f"professional identifier {entry.identifier!r} is already registered",
            expression="Practitioner.identifier",
        )
    practitioner_id = _new_id()
    stored = Stored(practitioner_id, 1, _stamp(valid, practitioner_id, 1, now))
    uow.directory.write_practitioners([(stored, entry)], now, new=True)
    uow.commit()
    return stored


def create_role(uow: UnitOfWork, ctx: DirectoryContext, resource: JsonObject) -> Stored:
    now = ctx.clock()
    valid = validate_resource(resource, "PractitionerRole")
    entry = role_entry(valid, ctx.professions)
    if not uow.directory.existing_ids("Practitioner", [entry.practitioner_id]):
        raise BusinessRuleViolation(
            f"Practitioner/{entry.practitioner_id} is not known",
            expression="PractitionerRole.practitioner",
        )
    _check_organizations(uow, [entry.organization_id])
    role_id = _new_id()
    stored = Stored(role_id, 1, _stamp(valid, role_id, 1, now))
    uow.directory.write_roles([(stored, entry)], now, new=True)
    uow.commit()
    return stored


def update_practitioner(
    uow: UnitOfWork,
    ctx: DirectoryContext,
    practitioner_id: str,
    resource: JsonObject,
    if_match: int | None = None,
) -> Stored:
    """Replace a practitioner entry, e.g. to suspend a licence."""
    now = ctx.clock()
    current = read_resource(uow, "Practitioner", practitioner_id)
    _check_if_match(current, if_match)
    valid = validate_resource(resource, "Practitioner")
    entry = practitioner_entry(valid, ctx.systems)
    owner = uow.directory.practitioner_ids_by_identifier([entry.identifier])
    if owner.get(entry.identifier, practitioner_id) != practitioner_id:
        raise Conflict(
            f"professional identifier {entry.identifier!r} names another practitioner",
            expression="Practitioner.identifier",
        )
    stored = Stored(
        practitioner_id,
        current.version_id + 1,
        _stamp(valid, practitioner_id, current.version_id + 1, now),
    )
    uow.directory.write_practitioners([(stored, entry)], now, new=False)
    uow.commit()
    return stored


def search_practitioners(uow: UnitOfWork, query: PractitionerQuery, page: Page) -> SearchResult:
    return uow.directory.search_practitioners(query, page)


def search_roles(uow: UnitOfWork, query: RoleQuery, page: Page) -> SearchResult:
    return uow.directory.search_roles(query, page)


def search_organizations(uow: UnitOfWork, query: OrganizationQuery, page: Page) -> SearchResult:
    return uow.directory.search_organizations(query, page)
