"""FHIR handlers of the directories: Patient (PDQm ITI-78, PIXm ITI-83, identity feed ITI-104),
Practitioner, PractitionerRole and Organization (mCSD ITI-90)."""

from __future__ import annotations

import re
from typing import Any

from carevault.api.fhir import patient_controls
from carevault.api.fhir import search as sp
from carevault.api.fhir.audit_handlers import (
    ACCESS_HISTORY,
    access_history_response,
)
from carevault.api.fhir.context import ApiContext
from carevault.api.fhir.door import (
    AccessNeed,
    FhirRequest,
    FhirResponse,
    Interaction,
    Operation,
    ResourceHandler,
    SearchParam,
    Target,
    reading,
)
from carevault.api.fhir.professional_handlers import (
    DELEGATE,
    END_DELEGATION,
    END_MANDATE,
    MANDATE_ASSISTANT,
    MANDATES,
    delegate_response,
    end_delegation_response,
    end_mandate_response,
    mandate_assistant_response,
    mandates_response,
    practitioner_operation_need,
)
from carevault.api.fhir.record_handlers import (
    EMERGENCY_ACCESS,
    EXPLAIN,
    PRESENCE_CODE,
    emergency_access_response,
    explain_response,
    presence_code_response,
)
from carevault.domain.authorization import Action, DirectoryArea
from carevault.domain.directory import Identifier, IdentityDomain
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.numbers import whole_number
from carevault.domain.queries import (
    OrganizationQuery,
    PatientQuery,
    PractitionerQuery,
    RoleQuery,
    SearchResult,
    Stored,
)
from carevault.fhirmodel.endpoint import CONNECTION_TYPES, MCSD_ENDPOINT, URI_SYSTEM
from carevault.fhirmodel.validate import validate_resource
from carevault.services.directory_service import DirectoryService
from carevault.services.mail_directory import EndpointQuery
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, Any]

_IF_MATCH = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def _patients(stored: Stored) -> tuple[str, ...]:
    return (stored.id,) if stored.resource.get("resourceType") == "Patient" else ()


def resource_response(request: FhirRequest, stored: Stored, status: int = 200) -> FhirResponse:
    headers = {"ETag": f'W/"{stored.version_id}"'}
    last_updated = stored.resource.get("meta", {}).get("lastUpdated")
    if last_updated:
        headers["Last-Modified"] = last_updated
    if status == 201:
        kind = stored.resource["resourceType"]
        headers["Location"] = (
            f"{request.base_url.rstrip('/')}/{kind}/{stored.id}/_history/{stored.version_id}"
        )
    return FhirResponse(status, stored.resource, headers, patients=_patients(stored))


def if_match(request: FhirRequest) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    match = _IF_MATCH.match(value.strip())
    if match is None:
        raise InvalidInput('If-Match must be a version ETag such as W/"3"', expression="If-Match")
    return int(match.group(1))


class DirectoryHandler(ResourceHandler):
    """Read, version read and history, shared by the four directory resources."""

    interactions = frozenset(
        {
            Interaction.READ,
            Interaction.VREAD,
            Interaction.HISTORY,
            Interaction.SEARCH,
            Interaction.CREATE,
        }
    )

    def __init__(self, api: ApiContext) -> None:
        self.api = api

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        return AccessNeed(Target.DIRECTORY, reading(request))

    def body(self, request: FhirRequest) -> JsonObject:
        return request.json_body(self.api.settings.max_json_depth)

    def page(self, request: FhirRequest) -> Any:
        return sp.page(
            request, self.api.settings.default_page_size, self.api.settings.max_page_size
        )

    @property
    def directories(self) -> DirectoryService:
        return self.api.directories

    def read(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        stored = self.directories.read(self.resource_type, request.resource_id)
        return resource_response(request, stored)

    def vread(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        version = request.version_id or ""
        number = whole_number(version, 9)
        if number is None:
            raise NotFound(f"{self.resource_type}/{request.resource_id} has no version {version!r}")
        stored = self.directories.read_version(self.resource_type, request.resource_id, number)
        return resource_response(request, stored)

    def history(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        versions = self.directories.history(self.resource_type, request.resource_id)
        base = request.base_url.rstrip("/")
        entries = [
            {
                "fullUrl": f"{base}/{self.resource_type}/{v.id}",
                "resource": v.resource,
                "request": {
                    "method": "POST" if v.version_id == 1 else "PUT",
                    "url": self.resource_type
                    if v.version_id == 1
                    else f"{self.resource_type}/{v.id}",
                },
                "response": {
                    "status": "201 Created" if v.version_id == 1 else "200 OK",
                    "etag": f'W/"{v.version_id}"',
                },
            }
            for v in versions
        ]
        return FhirResponse(
            200,
            {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries},
            patients=(request.resource_id,) if self.resource_type == "Patient" else (),
        )

    def searchset(
        self,
        request: FhirRequest,
        result: SearchResult,
        paging: Any,
        included: list[Stored] | None = None,
    ) -> FhirResponse:
        body = sp.searchset(request, result, paging, included or [])
        found = tuple(i.id for i in result.items if i.resource.get("resourceType") == "Patient")
        return FhirResponse(200, body, patients=found)


def _own_patient(request: FhirRequest) -> str | None:
    """For a patient or representative, the one record their search may find."""
    admission = request.admission
    if admission is not None and admission.record is not None:
        return admission.record.patient_id
    return None


def _domain(request: FhirRequest) -> IdentityDomain | None:
    """An identity source writes only the patients of its assigning authority (None: a
    registrar, who is not limited)."""
    return request.admission.identity_domain if request.admission is not None else None


def _param(name: str, kind: str, doc: str) -> SearchParam:
    return SearchParam(name, kind, doc)


_PATIENT_CONTROLS = frozenset(o.name for o in patient_controls.OPERATIONS)
PIX_DEFINITION = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"


class PatientHandler(DirectoryHandler):
    resource_type = "Patient"
    profile = "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Patient"
    interactions = DirectoryHandler.interactions | {
        Interaction.UPDATE,
        Interaction.CONDITIONAL_UPDATE,
    }
    search_params = (
        _param("_id", "token", "Logical id"),
        _param("active", "token", "true or false; merged entries are never returned"),
        _param("family", "string", "Family name, case- and accent-insensitive prefix"),
        _param("given", "string", "Given name, case- and accent-insensitive prefix"),
        _param("name", "string", "Any part of the name, case- and accent-insensitive prefix"),
        _param("birthdate", "date", "Birth date, with eq/ne/lt/le/gt/ge prefixes"),
        _param("gender", "token", "male | female | other | unknown"),
        _param(
            "identifier",
            "token",
            "system|value; a merged entry's identifiers find the surviving patient",
        ),
        _param("address-postalcode", "string", "Postal code prefix"),
    )
    operations = (
        Operation(
            "ihe-pix",
            PIX_DEFINITION,
            False,
            frozenset({"GET"}),
            "PIXm ITI-83: the identifiers a patient is known by in other domains",
            parameters=(
                SearchParam("sourceIdentifier", "token", "system|value", required=True),
                SearchParam("targetSystem", "uri", "An assigning authority to answer for"),
            ),
        ),
        Operation(
            "merge",
            "https://carevault.lu/fhir/OperationDefinition/Patient-merge",
            False,
            frozenset({"POST"}),
            "Merge source-patient into target-patient",
            takes="Parameters",
            gives="Patient",
        ),
        Operation(
            "unmerge",
            "https://carevault.lu/fhir/OperationDefinition/Patient-unmerge",
            True,
            frozenset({"POST"}),
            "Undo the merge of this patient; history is kept",
            gives="Patient",
        ),
        ACCESS_HISTORY,
        EMERGENCY_ACCESS,
        EXPLAIN,
        PRESENCE_CODE,
        DELEGATE,
        END_DELEGATION,
        *patient_controls.OPERATIONS,
    )

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        """Identities are the directory for professionals (no medical content) and the
        patient's own record for a patient; changes to them are a directory write, for the
        registered authorities (merges and unmerges decide whose record is whose: they affect
        access); the access history, emergency access, presence codes and explanations are
        record requests."""
        patient = request.resource_id
        if request.operation in _PATIENT_CONTROLS:
            return patient_controls.access_need(request)
        match request.interaction, request.operation:
            case Interaction.OPERATION, ACCESS_HISTORY.name:
                return AccessNeed(Target.RECORD, Action.PERSONAL, patient)
            case Interaction.OPERATION, EMERGENCY_ACCESS.name:
                return AccessNeed(Target.RECORD, Action.EMERGENCY, patient)
            case Interaction.OPERATION, PRESENCE_CODE.name:
                return AccessNeed(Target.RECORD, Action.MANAGE, patient)
            case Interaction.OPERATION, DELEGATE.name | END_DELEGATION.name:
                # Holding an access that reads the record; the service decides the rest.
                return AccessNeed(Target.RECORD, Action.READ, patient)
            case Interaction.OPERATION, EXPLAIN.name:
                return AccessNeed(Target.AUDIT_TRAIL, Action.READ, patient)
            case Interaction.OPERATION, "ihe-pix":
                return AccessNeed(Target.DEMOGRAPHICS, Action.SEARCH)
            case ((Interaction.READ | Interaction.VREAD | Interaction.HISTORY), _):
                return AccessNeed(Target.DEMOGRAPHICS, Action.READ, patient)
            case Interaction.SEARCH, _:
                return AccessNeed(Target.DEMOGRAPHICS, Action.SEARCH)
            case Interaction.OPERATION, _:
                return AccessNeed(Target.DIRECTORY, Action.WRITE, area=DirectoryArea.IDENTITY_LINKS)
            case Interaction.CONDITIONAL_UPDATE, _:
                resource = request.json_body(self.api.settings.max_json_depth)
                merging = (
                    any(
                        isinstance(link, dict) and link.get("type") == "replaced-by"
                        for link in resource.get("link", [])
                    )
                    if isinstance(resource.get("link"), list)
                    else False
                )
                area = DirectoryArea.IDENTITY_LINKS if merging else DirectoryArea.IDENTITIES
                return AccessNeed(Target.DIRECTORY, Action.WRITE, area=area)
        return AccessNeed(Target.DIRECTORY, Action.WRITE, area=DirectoryArea.IDENTITIES)

    def search(self, request: FhirRequest) -> FhirResponse:
        own = _own_patient(request)
        query = PatientQuery(
            ids=sp.exact(request, "_id") + ([(own,)] if own is not None else []),
            family=sp.strings(request, "family"),
            given=sp.strings(request, "given"),
            name=sp.strings(request, "name"),
            birthdate=sp.dates(request, "birthdate"),
            gender=sp.exact(request, "gender"),
            identifier=sp.tokens(request, "identifier"),
            postal_code=[
                tuple(v.upper() for v in alternatives)
                for alternatives in sp.exact(request, "address-postalcode")
            ],
            active=sp.boolean(request, "active"),
        )
        paging = self.page(request)
        result = self.directories.search_patients(query, paging)
        return self.searchset(request, result, paging)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = self.body(request)
        stored = self.directories.create_patient(resource, _domain(request))
        return resource_response(request, stored, 201)

    def update(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        resource = self.body(request)
        if resource.get("id") not in (None, request.resource_id):
            raise InvalidInput(
                "the resource id does not match the id in the URL", expression="Patient.id"
            )
        stored = self.directories.update_patient(
            request.resource_id, resource, if_match(request), _domain(request)
        )
        return resource_response(request, stored)

    def conditional_update(self, request: FhirRequest) -> FhirResponse:
        """ITI-104: ``PUT Patient?identifier=system|value`` creates or updates that patient."""
        if request.param_names() != {"identifier"}:
            raise InvalidInput(
                "an identity feed names the patient by one identifier: "
                "PUT Patient?identifier=system|value",
                expression="identifier",
            )
        criteria = sp.tokens(request, "identifier")
        if len(criteria) != 1 or len(criteria[0]) != 1 or not criteria[0][0].system:
            raise InvalidInput(
                "the identifier must be a single system|value", expression="identifier"
            )
        resource = self.body(request)
        stored, created = self.directories.feed_patient(criteria[0][0], resource, _domain(request))
        return resource_response(request, stored, 201 if created else 200)

    def operation(self, request: FhirRequest) -> FhirResponse:
        if request.operation in _PATIENT_CONTROLS:
            return patient_controls.respond(self.api, request)
        if request.operation == ACCESS_HISTORY.name:
            return access_history_response(self.api, request)
        if request.operation == EMERGENCY_ACCESS.name:
            return emergency_access_response(self.api, request)
        if request.operation == EXPLAIN.name:
            return explain_response(self.api, request)
        if request.operation == PRESENCE_CODE.name:
            return presence_code_response(self.api, request)
        if request.operation == DELEGATE.name:
            return delegate_response(self.api, request)
        if request.operation == END_DELEGATION.name:
            return end_delegation_response(self.api, request)
        if request.operation == "ihe-pix":
            return self._pix(request)
        if request.operation == "merge":
            return self._merge(request)
        return self._unmerge(request)

    def _pix(self, request: FhirRequest) -> FhirResponse:
        names = request.param_names()
        pix = next(o for o in self.operations if o.name == "ihe-pix")
        unknown = names - {p.name for p in pix.parameters} - {"_format"}
        if unknown:
            raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r} for $ihe-pix")
        source = sp.single(request, "sourceIdentifier")
        system, bar, value = (source or "").partition("|")
        if not source or not bar or not system or not value:
            raise InvalidInput(
                "sourceIdentifier must be system|value", expression="sourceIdentifier"
            )
        targets = sp.values(request, "targetSystem")
        answer = self.directories.cross_reference(Identifier(system, value), targets)
        own = _own_patient(request)
        if own is not None and answer.patient_id != own:
            # A patient resolves their own identifiers only; another person's number is
            # answered exactly as an unknown one, so that it tells nothing.
            raise NotFound(
                f"no patient is known by {Identifier(system, value).token()}",
                expression="sourceIdentifier",
            )
        parameters = [
            {"name": "targetIdentifier", "valueIdentifier": {"system": i.system, "value": i.value}}
            for i in answer.identifiers
        ]
        parameters.append(
            {"name": "targetId", "valueReference": {"reference": f"Patient/{answer.patient_id}"}}
        )
        return FhirResponse(
            200,
            {"resourceType": "Parameters", "parameter": parameters},
            patients=(answer.patient_id,),
        )

    def _merge(self, request: FhirRequest) -> FhirResponse:
        parameters = validate_resource(self.body(request), "Parameters")
        refs = {
            p.get("name"): p.get("valueReference", {}).get("reference", "")
            for p in parameters.get("parameter", [])
        }
        ids = []
        for name in ("source-patient", "target-patient"):
            kind, _, ident = str(refs.get(name) or "").partition("/")
            if kind != "Patient" or not ident:
                raise InvalidInput(
                    f"parameter {name!r} must be a reference 'Patient/id'", expression=name
                )
            ids.append(ident)
        stored = self.directories.merge_patients(ids[0], ids[1], _domain(request))
        return resource_response(request, stored)

    def _unmerge(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        stored = self.directories.unmerge_patient(request.resource_id, _domain(request))
        return resource_response(request, stored)


class PractitionerHandler(DirectoryHandler):
    resource_type = "Practitioner"
    profile = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Practitioner"
    interactions = DirectoryHandler.interactions | {Interaction.UPDATE}
    search_params = (
        _param("_id", "token", "Logical id"),
        _param("active", "token", "true or false"),
        _param("family", "string", "Family name, case- and accent-insensitive prefix"),
        _param("given", "string", "Given name, case- and accent-insensitive prefix"),
        _param("name", "string", "Any part of the name, case- and accent-insensitive prefix"),
        _param("identifier", "token", "The professional identifier (system|value)"),
    )
    operations = (MANDATE_ASSISTANT, END_MANDATE, MANDATES)

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        if request.interaction is Interaction.OPERATION:
            return practitioner_operation_need(request)
        return super().access_need(request, uow)

    def operation(self, request: FhirRequest) -> FhirResponse:
        if request.operation == MANDATE_ASSISTANT.name:
            return mandate_assistant_response(self.api, request)
        if request.operation == END_MANDATE.name:
            return end_mandate_response(self.api, request)
        return mandates_response(self.api, request)

    def search(self, request: FhirRequest) -> FhirResponse:
        query = PractitionerQuery(
            ids=sp.exact(request, "_id"),
            family=sp.strings(request, "family"),
            given=sp.strings(request, "given"),
            name=sp.strings(request, "name"),
            identifier=sp.codes_in(request, "identifier", self.api.directory.systems.professional),
            active=sp.boolean(request, "active"),
        )
        paging = self.page(request)
        result = self.directories.search_practitioners(query, paging)
        return self.searchset(request, result, paging)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = self.body(request)
        stored = self.directories.create_practitioner(resource)
        return resource_response(request, stored, 201)

    def update(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        resource = self.body(request)
        stored = self.directories.update_practitioner(
            request.resource_id, resource, if_match(request)
        )
        return resource_response(request, stored)


class PractitionerRoleHandler(DirectoryHandler):
    resource_type = "PractitionerRole"
    profile = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.PractitionerRole"
    search_params = (
        _param("_id", "token", "Logical id"),
        _param("active", "token", "true or false"),
        _param("practitioner", "reference", "The practitioner (Practitioner/id)"),
        _param("organization", "reference", "The organization (Organization/id)"),
        _param("role", "token", "The profession (physician, pharmacist, nurse, …)"),
        _param("specialty", "token", "The specialty (cardiology, psychiatry, …)"),
    )
    includes = (
        "PractitionerRole:practitioner",
        "PractitionerRole:organization",
        "PractitionerRole:endpoint",
    )

    def search(self, request: FhirRequest) -> FhirResponse:
        professions = self.api.directory.professions
        query = RoleQuery(
            ids=sp.exact(request, "_id"),
            practitioner=sp.references(request, "practitioner", "Practitioner"),
            organization=sp.references(request, "organization", "Organization"),
            role=sp.codes_in(request, "role", professions.profession_system),
            specialty=sp.codes_in(request, "specialty", professions.specialty_system),
            active=sp.boolean(request, "active"),
        )
        includes = set(sp.values(request, "_include"))
        unknown = includes - set(self.includes)
        if unknown:
            raise InvalidInput(
                f"_include {sorted(unknown)[0]!r} is not supported; supported: "
                f"{', '.join(self.includes)}",
                expression="_include",
            )
        paging = self.page(request)
        found = self.directories.search_roles(query, paging, includes)
        return self.searchset(request, found.result, paging, found.included)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = self.body(request)
        stored = self.directories.create_role(resource)
        return resource_response(request, stored, 201)


class OrganizationHandler(DirectoryHandler):
    resource_type = "Organization"
    profile = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Organization"
    search_params = (
        _param("_id", "token", "Logical id"),
        _param("active", "token", "true or false"),
        _param("name", "string", "Any word of the name, case- and accent-insensitive prefix"),
        _param("identifier", "token", "The organization identifier (system|value)"),
    )

    def search(self, request: FhirRequest) -> FhirResponse:
        query = OrganizationQuery(
            ids=sp.exact(request, "_id"),
            name=sp.strings(request, "name"),
            identifier=sp.codes_in(request, "identifier", self.api.directory.systems.organization),
            active=sp.boolean(request, "active"),
        )
        paging = self.page(request)
        result = self.directories.search_organizations(query, paging)
        return self.searchset(request, result, paging)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = self.body(request)
        stored = self.directories.create_organization(resource)
        return resource_response(request, stored, 201)


class CareTeamHandler(DirectoryHandler):
    resource_type = "CareTeam"
    interactions = DirectoryHandler.interactions | {Interaction.UPDATE}
    search_params = (
        SearchParam("_id", "token", "Logical id"),
        SearchParam("participant", "reference", "A member: Practitioner/id"),
        SearchParam("organization", "reference", "The managing Organization/id"),
    )

    def access_need(self, request: FhirRequest, uow: UnitOfWork) -> AccessNeed:
        # Care teams decide who a team grant reaches: a change affects access.
        return AccessNeed(Target.DIRECTORY, reading(request), area=DirectoryArea.PROVIDERS)

    def search(self, request: FhirRequest) -> FhirResponse:
        paging = self.page(request)
        participants = [
            tuple(v.removeprefix("Practitioner/") for v in alternatives)
            for alternatives in sp.references(request, "participant", "Practitioner")
        ]
        organizations = [
            tuple(v.removeprefix("Organization/") for v in alternatives)
            for alternatives in sp.references(request, "organization", "Organization")
        ]
        result = self.directories.search_care_teams(
            sp.exact(request, "_id"), organizations, participants, paging
        )
        return self.searchset(request, result, paging)

    def create(self, request: FhirRequest) -> FhirResponse:
        resource = self.body(request)
        stored = self.directories.create_care_team(resource)
        return resource_response(request, stored, 201)

    def update(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        resource = self.body(request)
        stored = self.directories.update_care_team(request.resource_id, resource, if_match(request))
        return resource_response(request, stored)


class EndpointHandler(DirectoryHandler):
    """The secure-messaging mailboxes (`carevault.services.mail_directory`): derived from the
    PKI and the directory on every request, so they have no versions (read and search only)."""

    resource_type = "Endpoint"
    profile = MCSD_ENDPOINT
    interactions = frozenset({Interaction.READ, Interaction.SEARCH})
    versioning = "no-version"
    search_params = (
        _param("_id", "token", "Logical id (msg- and the Practitioner's id)"),
        _param(
            "identifier",
            "token",
            f"The mailbox's address as a URI: {URI_SYSTEM}|mailto:hp-123456@… (any case)",
        ),
        _param(
            "organization",
            "reference",
            "The managing organization (Organization/id): the one its holder's roles name",
        ),
        _param("status", "token", "active | suspended | off"),
        _param("connection-type", "token", f"{CONNECTION_TYPES}|secure-email"),
    )

    def read(self, request: FhirRequest) -> FhirResponse:
        assert request.resource_id is not None
        stored = self.directories.mailbox(request.resource_id)
        return FhirResponse(200, stored.resource)

    def search(self, request: FhirRequest) -> FhirResponse:
        addresses = [
            tuple(i.value for i in alternatives if i.system in ("", URI_SYSTEM))
            for alternatives in sp.tokens(request, "identifier")
        ]
        query = EndpointQuery(
            ids=sp.exact(request, "_id"),
            addresses=addresses,
            organization=sp.references(request, "organization", "Organization"),
            status=sp.exact(request, "status"),
            connection_type=sp.codes_in(request, "connection-type", CONNECTION_TYPES),
        )
        paging = self.page(request)
        return self.searchset(request, self.directories.search_mailboxes(query, paging), paging)
