"""The directories' use cases as the FHIR API calls them: each opens its own unit of work.

`carevault.services.directory` holds the rules, as functions of a unit of work that a
caller may share (the demo loader registers thousands of patients in one transaction); this
class is their transactional face for one request each, with what the directory derives on
the way out (the secure-messaging mailboxes of `carevault.services.mail_directory`), so that
no handler opens a transaction of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carevault.domain.directory import Identifier, IdentityDomain
from carevault.domain.errors import NotFound, NotPermitted
from carevault.domain.queries import (
    Alternatives,
    OrganizationQuery,
    Page,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
    SearchResult,
    Stored,
)
from carevault.services import directory as rules
from carevault.services import mail_directory as mail
from carevault.services import professionals as teams
from carevault.services.directory import CrossReference, DirectoryContext
from carevault.services.unit_of_work import Units

JsonObject = dict[str, Any]

# What a PractitionerRole search may bring along, and where each reference is read from.
ROLE_INCLUDES = {
    "PractitionerRole:practitioner": ("Practitioner", "practitioner"),
    "PractitionerRole:organization": ("Organization", "organization"),
}
ROLE_ENDPOINTS = "PractitionerRole:endpoint"


class UnknownTargetSystem(NotPermitted):
    """PIXm asks for 403 when a target domain is unknown (ITI-83 §3.83.4.2.3, case 4)."""

    def __init__(self, target: str) -> None:
        super().__init__(
            f"targetSystem {target!r} not found",
            expression="targetSystem",
            issue_code="code-invalid",
        )


@dataclass(frozen=True)
class RoleSearch:
    """A page of roles (with their mailboxes) and the resources ``_include`` asked for."""

    result: SearchResult
    included: list[Stored]


class DirectoryService:
    """One transaction per use case over the patient and professional directories."""

    def __init__(self, units: Units, context: DirectoryContext, mailboxes: mail.MailDirectory):
        self.units = units
        self.context = context
        self.mailboxes = mailboxes

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.context.clock

    # --- reads shared by every directory resource --------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> Stored:
        """The current resource as served (a practitioner's or a role's mailbox added)."""
        with self.units() as uow:
            stored = rules.read_resource(uow, resource_type, resource_id)
            if resource_type == "Practitioner":
                (stored,) = mail.serve_practitioners(uow, self.mailboxes, [stored])
            elif resource_type == "PractitionerRole":
                (stored,) = mail.serve_roles(uow, self.mailboxes, [stored])[0]
            return stored

    def read_version(self, resource_type: str, resource_id: str, version_id: int) -> Stored:
        with self.units() as uow:
            return rules.read_version(uow, resource_type, resource_id, version_id)

    def history(self, resource_type: str, resource_id: str) -> list[Stored]:
        with self.units() as uow:
            return rules.history(uow, resource_type, resource_id)

    # --- patients (MPI) ----------------------------------------------------------------------

    def search_patients(self, query: PatientQuery, page: Page) -> SearchResult:
        with self.units() as uow:
            return rules.search_patients(uow, query, page)

    def create_patient(self, resource: JsonObject, domain: IdentityDomain | None) -> Stored:
        with self.units() as uow:
            return rules.create_patient(uow, self.context, resource, domain)

    def update_patient(
        self,
        patient_id: str,
        resource: JsonObject,
        if_match: int | None,
        domain: IdentityDomain | None,
    ) -> Stored:
        with self.units() as uow:
            return rules.update_patient(uow, self.context, patient_id, resource, if_match, domain)

    def feed_patient(
        self, identifier: Identifier, resource: JsonObject, domain: IdentityDomain | None
    ) -> tuple[Stored, bool]:
        """ITI-104: create or update the patient ``identifier`` names (True: created)."""
        with self.units() as uow:
            return rules.feed_patient(uow, self.context, identifier, resource, domain)

    def merge_patients(
        self, source_id: str, target_id: str, domain: IdentityDomain | None
    ) -> Stored:
        with self.units() as uow:
            return rules.merge_patients(uow, self.context, source_id, target_id, domain)

    def unmerge_patient(self, patient_id: str, domain: IdentityDomain | None) -> Stored:
        with self.units() as uow:
            return rules.unmerge_patient(uow, self.context, patient_id, domain)

    def cross_reference(
        self, identifier: Identifier, target_systems: Sequence[str]
    ) -> CrossReference:
        """PIXm ITI-83: an unknown source domain is a 404, an unknown target domain a 403."""
        with self.units() as uow:
            known = uow.directory.assigning_authorities() | {self.context.systems.national}
            if identifier.system not in known:
                raise NotFound(
                    "sourceIdentifier Assigning Authority not found",
                    expression="sourceIdentifier",
                    issue_code="code-invalid",
                )
            for target in target_systems:
                if target not in known:
                    raise UnknownTargetSystem(target)
            return rules.cross_reference(uow, identifier, target_systems)

    # --- professionals (HPD) -----------------------------------------------------------------

    def search_practitioners(self, query: PractitionerQuery, page: Page) -> SearchResult:
        with self.units() as uow:
            result = rules.search_practitioners(uow, query, page)
            served = mail.serve_practitioners(uow, self.mailboxes, result.items)
            return SearchResult(result.total, served)

    def create_practitioner(self, resource: JsonObject) -> Stored:
        with self.units() as uow:
            return rules.create_practitioner(uow, self.context, resource)

    def update_practitioner(
        self, practitioner_id: str, resource: JsonObject, if_match: int | None
    ) -> Stored:
        with self.units() as uow:
            return rules.update_practitioner(uow, self.context, practitioner_id, resource, if_match)

    def search_roles(self, query: RoleQuery, page: Page, includes: Iterable[str]) -> RoleSearch:
        """A page of roles and, in the same snapshot, the practitioners, organizations and
        mailboxes ``includes`` names (any of `ROLE_INCLUDES` and `ROLE_ENDPOINTS`)."""
        wanted_includes = set(includes)
        with self.units() as uow:
            found = rules.search_roles(uow, query, page)
            roles, endpoints = mail.serve_roles(uow, self.mailboxes, found.items)
            included: list[Stored] = []
            for spec, (kind, key) in ROLE_INCLUDES.items():
                if spec not in wanted_includes:
                    continue
                ids = {
                    str(role.resource[key]["reference"]).split("/")[-1]
                    for role in roles
                    if key in role.resource
                }
                read = [rules.read_resource(uow, kind, ident) for ident in sorted(ids)]
                if kind == "Practitioner":
                    read = mail.serve_practitioners(uow, self.mailboxes, read)
                included += read
            if ROLE_ENDPOINTS in wanted_includes:
                included += endpoints
            return RoleSearch(SearchResult(found.total, roles), included)

    def create_role(self, resource: JsonObject) -> Stored:
        with self.units() as uow:
            return rules.create_role(uow, self.context, resource)

    def search_organizations(self, query: OrganizationQuery, page: Page) -> SearchResult:
        with self.units() as uow:
            return rules.search_organizations(uow, query, page)

    def create_organization(self, resource: JsonObject) -> Stored:
        with self.units() as uow:
            return rules.create_organization(uow, self.context, resource)

    # --- care teams --------------------------------------------------------------------------

    def search_care_teams(
        self,
        ids: Sequence[Alternatives],
        organizations: Sequence[Alternatives],
        participants: Sequence[Alternatives],
        page: Page,
    ) -> SearchResult:
        with self.units() as uow:
            return teams.search_care_teams(uow, ids, organizations, participants, page)

    def create_care_team(self, resource: JsonObject) -> Stored:
        with self.units() as uow:
            return teams.create_care_team(uow, resource, self.clock())

    def update_care_team(self, team_id: str, resource: JsonObject, if_match: int | None) -> Stored:
        with self.units() as uow:
            return teams.update_care_team(uow, team_id, resource, self.clock(), if_match)

    # --- secure-messaging mailboxes (Endpoint) -----------------------------------------------

    def mailbox(self, endpoint_id: str) -> Stored:
        with self.units() as uow:
            return mail.mail_endpoint(uow, self.mailboxes, endpoint_id)

    def search_mailboxes(self, query: mail.EndpointQuery, page: Page) -> SearchResult:
        with self.units() as uow:
            total, items = mail.search_endpoints(uow, self.mailboxes, query, page)
            return SearchResult(total, items)
