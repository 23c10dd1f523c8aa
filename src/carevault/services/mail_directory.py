"""Secure-messaging mailboxes in the providers' directory (mCSD ITI-90): where, and to whom, a
client encrypts.

A mailbox is not stored: it is derived, on every request, from what decides whether it can
receive (`carevault.services.messaging.recipient`): the professional's encryption
certificates in the PKI's table and their directory entry. So a revocation, a suspended licence
or a deactivated entry shows in the very next answer, and the published mailbox cannot drift
from the one the submission server accepts. A professional has a mailbox once they have had an
encryption certificate; it is ``active`` while they can receive, ``suspended`` while their
licence is, ``off`` otherwise (every certificate revoked or expired, or the entry inactive).
Only valid, unrevoked certificates are published.

Its Endpoint's id is ``msg-`` and the Practitioner's id. The managing organization is the one
the professional's active roles name (the first by id, if several), else the platform itself.
A Practitioner served with an active mailbox carries its address in ``telecom``
(``email``/``work``); each of their PractitionerRoles references the Endpoint (``endpoint``).
These are added as the resources are served and are not versions of them.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.domain.errors import InvalidInput, NotFound, TooCostly
from carevault.domain.messaging import address_of, identifier_of
from carevault.domain.queries import Alternatives, Page, PractitionerQuery, RoleQuery, Stored
from carevault.fhirmodel.directory import IdentitySystems, practitioner_entry
from carevault.fhirmodel.endpoint import MailEndpoint, endpoint_resource
from carevault.services.unit_of_work import UnitOfWork

__all__ = [
    "ENDPOINT_PREFIX",
    "MAX_UNNARROWED",
    "EndpointQuery",
    "MailDirectory",
    "endpoint_id",
    "mail_endpoint",
    "mail_endpoints",
    "search_endpoints",
    "serve_practitioners",
    "serve_roles",
]

JsonObject = dict[str, Any]

ENDPOINT_PREFIX = "msg-"
_MAX_ID = 64  # a FHIR id
_ROLES_PAGE = 10_000
# Practitioners whose roles are read at once (each has a few roles: far below _ROLES_PAGE).
_PRACTITIONERS_AT_ONCE = 500
# Mailboxes a search may derive when nothing narrows it (no _id, identifier nor organization),
# or when an organization alone narrows it: every one is derived from its certificates,
# directory entry and roles on every page, so a listing of the directory (or of a hospital of
# thousands) costs all of them per page; beyond this, it is refused.
MAX_UNNARROWED = 10_000


@dataclass(frozen=True)
class MailDirectory:
    systems: IdentitySystems
    domain: str
    clock: Callable[[], datetime]


@dataclass
class EndpointQuery:
    """An Endpoint search: each list is AND-ed, each `Alternatives` OR-ed (as the directory's
    other queries). ``addresses`` are messaging addresses (``identifier=…|mailto:…``)."""

    ids: list[Alternatives] = field(default_factory=list)
    addresses: list[Alternatives] = field(default_factory=list)
    organization: list[Alternatives] = field(default_factory=list)
    status: list[Alternatives] = field(default_factory=list)
    connection_type: list[Alternatives] = field(default_factory=list)


def endpoint_id(practitioner_id: str) -> str | None:
    """The id of a practitioner's mailbox Endpoint (None if it would not be a FHIR id)."""
    ident = ENDPOINT_PREFIX + practitioner_id
    return ident if len(ident) <= _MAX_ID else None


def _practitioner_of(ident: str) -> str | None:
    if not ident.startswith(ENDPOINT_PREFIX) or len(ident) > _MAX_ID:
        return None
    return ident.removeprefix(ENDPOINT_PREFIX) or None


def _valid(record: CertificateRecord, now: datetime) -> bool:
    return record.revoked_at is None and record.not_before <= now < record.not_after


def mail_endpoints(
    uow: UnitOfWork,
    ctx: MailDirectory,
    practitioner_ids: Collection[str] | None,
    *,
    client_id: str | None = None,
) -> dict[str, MailEndpoint]:
    """The mailboxes of these practitioners (of all, with None), by practitioner id; one who
    never had an encryption certificate has none."""
    by_practitioner: dict[str, list[CertificateRecord]] = defaultdict(list)
    for record in uow.pki.encryption_certificates_of(practitioner_ids, client_id=client_id):
        if record.practitioner_id is not None:
            by_practitioner[record.practitioner_id].append(record)
    ids = sorted(p for p in by_practitioner if endpoint_id(p) is not None)
    if not ids:
        return {}
    practitioners = uow.directory.search_practitioners(
        PractitionerQuery(ids=[tuple(ids)]), Page(0, len(ids))
    ).items
    organizations = _organizations(uow, ids)
    now = ctx.clock()
    found = {}
    for stored in practitioners:
        entry = practitioner_entry(stored.resource, ctx.systems)
        try:
            address = address_of(entry.identifier, ctx.domain)
        except InvalidInput:
            continue
        valid = [r for r in by_practitioner[stored.id] if _valid(r, now)]
        if not entry.active or not valid:
            status = "off"
        elif entry.licence_status != "active":
            status = "suspended"
        else:
            status = "active"
        ident = endpoint_id(stored.id)
        assert ident is not None
        found[stored.id] = MailEndpoint(
            id=ident,
            address=address,
            holder=f"{entry.given} {entry.family}".strip(),
            status=status,
            certificates_pem=tuple(r.certificate_pem for r in valid),
            organization_id=organizations.get(stored.id),
            platform=ctx.domain,
        )
    return found


def _organizations(uow: UnitOfWork, practitioner_ids: Sequence[str]) -> dict[str, str]:
    """The organization each practitioner's active roles name (the first by id): every role,
    read ``_PRACTITIONERS_AT_ONCE`` practitioners and ``_ROLES_PAGE`` roles at a time (one
    read of all of them stopped at the page and silently left the others' mailboxes to the
    platform's name)."""
    roles: list[Stored] = []
    for start in range(0, len(practitioner_ids), _PRACTITIONERS_AT_ONCE):
        chunk = tuple(practitioner_ids[start : start + _PRACTITIONERS_AT_ONCE])
        offset = 0
        while True:
            found = uow.directory.search_roles(
                RoleQuery(practitioner=[chunk], active=True), Page(offset, _ROLES_PAGE)
            )
            roles.extend(found.items)
            offset += len(found.items)
            if not found.items or offset >= found.total:
                break
    named: dict[str, set[str]] = defaultdict(set)
    for role in roles:
        practitioner = _reference(role.resource.get("practitioner"), "Practitioner")
        organization = _reference(role.resource.get("organization"), "Organization")
        if practitioner is not None and organization is not None:
            named[practitioner].add(organization)
    return {practitioner: min(ids) for practitioner, ids in named.items()}


def _reference(value: object, kind: str) -> str | None:
    if not isinstance(value, dict):
        return None
    found, _, ident = str(value.get("reference", "")).partition("/")
    return ident if found == kind and ident else None


def mail_endpoint(uow: UnitOfWork, ctx: MailDirectory, ident: str) -> Stored:
    """``Endpoint/{ident}`` (`NotFound` for no such mailbox)."""
    practitioner = _practitioner_of(ident)
    found = mail_endpoints(uow, ctx, [practitioner]) if practitioner else {}
    if practitioner is None or practitioner not in found:
        raise NotFound(f"Endpoint/{ident} is not known")
    return _stored(found[practitioner])


def _stored(endpoint: MailEndpoint) -> Stored:
    # Derived, not stored: no version of its own (the CapabilityStatement says "no-version").
    return Stored(endpoint.id, 0, endpoint_resource(endpoint))


def _local_part(address: str, domain: str) -> str | None:
    text = address.strip()
    if text[:7].lower() != "mailto:":
        return None
    try:
        return identifier_of(text[7:], domain)
    except InvalidInput:
        return None  # an address of another platform: no mailbox here


def search_endpoints(
    uow: UnitOfWork, ctx: MailDirectory, query: EndpointQuery, page: Page
) -> tuple[int, list[Stored]]:
    """The mailboxes that match, by id: their total and one page of them."""
    candidates: set[str] | None = None

    def narrow(found: Iterable[str]) -> None:
        nonlocal candidates
        found = set(found)
        candidates = found if candidates is None else candidates & found

    for alternatives in query.ids:
        narrow(p for p in map(_practitioner_of, alternatives) if p is not None)
    for alternatives in query.organization:
        found = uow.directory.search_roles(
            RoleQuery(organization=[alternatives], active=True), Page(0, _ROLES_PAGE)
        )
        if found.total > MAX_UNNARROWED and not (query.ids or query.addresses):
            # Each of their mailboxes would be derived, on every page of the answer.
            raise TooCostly(
                f"an Endpoint search by organization alone would derive the mailboxes of its "
                f"{found.total} professionals, more than the {MAX_UNNARROWED} allowed: "
                "search by identifier too"
            )
        narrow(
            p
            for r in found.items
            if (p := _reference(r.resource.get("practitioner"), "Practitioner"))
        )
    wanted_locals: list[set[str]] = []
    for alternatives in query.addresses:
        locals_ = {local for a in alternatives if (local := _local_part(a, ctx.domain)) is not None}
        wanted_locals.append(locals_)
        holders: set[str] = set()
        for local in locals_:
            holders |= set(mail_endpoints(uow, ctx, candidates, client_id=local))
        narrow(holders)
    if candidates is None:
        published = uow.pki.count_encryption_holders()
        if published > MAX_UNNARROWED:
            raise TooCostly(
                f"an Endpoint search without _id, identifier or organization would derive the "
                f"{published} mailboxes of the directory, more than the {MAX_UNNARROWED} allowed: "
                "search by organization or by identifier"
            )
    endpoints = mail_endpoints(uow, ctx, candidates) if candidates != set() else {}
    matched = [
        e
        for e in endpoints.values()
        if all(e.address.partition("@")[0] in w for w in wanted_locals)
        and all(e.organization_id in alternatives for alternatives in query.organization)
        and all(e.status in alternatives for alternatives in query.status)
        and all("secure-email" in alternatives for alternatives in query.connection_type)
    ]
    matched.sort(key=lambda e: e.id)
    chosen = matched[page.offset : page.offset + page.count]
    return len(matched), [_stored(e) for e in chosen]


def serve_practitioners(uow: UnitOfWork, ctx: MailDirectory, items: list[Stored]) -> list[Stored]:
    """Practitioners as served: an active mailbox's address in ``telecom`` (email, work)."""
    ids = [s.id for s in items if s.resource.get("resourceType") == "Practitioner"]
    endpoints = mail_endpoints(uow, ctx, ids) if ids else {}
    served = []
    for stored in items:
        endpoint = endpoints.get(stored.id)
        if endpoint is None or endpoint.status != "active":
            served.append(stored)
            continue
        resource = copy.deepcopy(stored.resource)
        telecom = resource.setdefault("telecom", [])
        if not any(
            t.get("system") == "email" and str(t.get("value", "")).lower() == endpoint.address
            for t in telecom
        ):
            telecom.append({"system": "email", "value": endpoint.address, "use": "work"})
        served.append(Stored(stored.id, stored.version_id, resource))
    return served


def serve_roles(
    uow: UnitOfWork, ctx: MailDirectory, items: list[Stored]
) -> tuple[list[Stored], list[Stored]]:
    """PractitionerRoles as served, each referencing its practitioner's mailbox Endpoint
    (``endpoint``), and those Endpoints (for ``_include=PractitionerRole:endpoint``)."""
    holders = {
        s.id: p for s in items if (p := _reference(s.resource.get("practitioner"), "Practitioner"))
    }
    endpoints = mail_endpoints(uow, ctx, set(holders.values())) if holders else {}
    served = []
    for stored in items:
        endpoint = endpoints.get(holders.get(stored.id, ""))
        if endpoint is None:
            served.append(stored)
            continue
        resource = copy.deepcopy(stored.resource)
        reference = f"Endpoint/{endpoint.id}"
        listed = resource.setdefault("endpoint", [])
        if not any(r.get("reference") == reference for r in listed):
            listed.append({"reference": reference})
        served.append(Stored(stored.id, stored.version_id, resource))
    return served, [_stored(e) for e in sorted(endpoints.values(), key=lambda e: e.id)]
