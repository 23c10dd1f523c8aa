"""The shared fake directory (`support.fake_uow.FakeDirectory`) with what the services of
accounts and of access tokens read of it besides: practitioners by id, their roles, and
patients' merge state. Kept apart from `support.fake_accounts`, which `support.fake_uow` imports.

The real directory answers the same: tests/integration/test_store_contracts_accounts.py.
"""

from __future__ import annotations

from typing import Any

from carevault.adapters.storage.directory_store import SearchResult, Stored
from carevault.domain.directory import MergeState
from carevault.domain.queries import Page, RoleQuery
from support.fake_uow import FakeDirectory, FakeUnitOfWork


class FakeProfessionalDirectory(FakeDirectory):
    """The shared fake directory, with practitioners read by id, their roles (searched by
    practitioner, organization and activity) and patients' merge state."""

    def __init__(self) -> None:
        super().__init__()
        self.practitioner_resources: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        self.merged_into: dict[str, str] = {}

    def add_professional(self, practitioner_id: str, resource: dict[str, Any]) -> None:
        """A Practitioner resource; known by its first identifier too."""
        self.practitioner_resources[practitioner_id] = {**resource, "id": practitioner_id}
        self.add_practitioner(practitioner_id, resource["identifier"][0]["value"])

    def add_role(self, role_id: str, practitioner_id: str, organization_id: str | None,
                 *, active: bool = True) -> None:
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": role_id,
                                "active": active,
                                "practitioner": {"reference": f"Practitioner/{practitioner_id}"}}
        if organization_id is not None:
            role["organization"] = {"reference": f"Organization/{organization_id}"}
        self.roles[role_id] = role

    def set_organization(self, organization_id: str, resource: dict[str, Any]) -> None:
        """An Organization resource as registered (`FakeDirectory.add_organization` keeps only
        its id)."""
        self.organizations[organization_id] = ({**resource, "id": organization_id}, None)

    def merge(self, patient_id: str, into: str) -> None:
        self.merged_into[patient_id] = into

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        if resource_type == "Practitioner":
            return self.practitioner(resource_id)
        return super().read(resource_type, resource_id)

    def practitioner(self, practitioner_id: str) -> Stored | None:
        found = self.practitioner_resources.get(practitioner_id)
        return None if found is None else Stored(practitioner_id, 1, found)

    def search_roles(self, query: RoleQuery, page: Page) -> SearchResult:
        if query.ids or query.role or query.specialty:
            raise NotImplementedError("the fake directory searches roles by practitioner, "
                                      "organization and activity only")

        def reference(role: dict[str, Any], name: str) -> str | None:
            text = str(role.get(name, {}).get("reference", ""))
            return text.partition("/")[2] or None

        found = [
            Stored(role_id, 1, role) for role_id, role in sorted(self.roles.items())
            if all(reference(role, "practitioner") in ids for ids in query.practitioner)
            and all(reference(role, "organization") in ids for ids in query.organization)
            and query.active in (None, role["active"])
        ]
        return SearchResult(len(found), found[page.offset:page.offset + page.count])

    def patient_merge_state(self, patient_id: str) -> MergeState | None:
        if patient_id not in self.patients:
            return None
        return MergeState(patient_id, self.merged_into.get(patient_id))


def professional_unit_of_work() -> FakeUnitOfWork:
    """A fake unit of work whose directory also knows practitioners, roles and merges."""
    uow = FakeUnitOfWork()
    uow.directory = FakeProfessionalDirectory()
    return uow
