"""Directory resources: reading the index out of a FHIR resource, and building new ones.

CareVault-specific facts ride on small extensions whose URLs are below; everything else is
plain FHIR R4 as IHE PDQm, PIXm and mCSD expect it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from carevault.domain.directory import Identifier, PatientEntry, PersonName
from carevault.domain.errors import BusinessRuleViolation, InvalidInput
from carevault.domain.mandates import MAX_TEAM_MEMBERS, CareTeam, TeamMember
from carevault.domain.national_id import parse_luxembourg_national_id
from carevault.domain.professions import Professions
from carevault.fhirmodel.validate import date_time

JsonObject = dict[str, Any]

EXT_BASE = "https://carevault.lu/fhir/StructureDefinition/"
LICENCE_STATUS_URL = EXT_BASE + "licence-status"
PATIENT_ID_SYSTEM_URL = EXT_BASE + "patient-identifier-system"
ORGANIZATION_KIND_URL = EXT_BASE + "organization-kind"
# Every organization of the providers' directory is a care provider: its mCSD type (IHE mCSD
# 4.0.0, IHE.mCSD.Organization: ``type 1..*``), from HL7's organization-type code system.
ORGANIZATION_TYPE_PROVIDER = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
            "code": "prov",
            "display": "Healthcare Provider",
        }
    ]
}

GENDERS = frozenset({"male", "female", "other", "unknown"})
LICENCE_STATUSES = frozenset({"active", "suspended"})


@dataclass(frozen=True)
class IdentitySystems:
    """The namespaces the platform itself assigns or recognizes."""

    national: str
    professional: str
    organization: str
    validate_national: bool = True


def _names(resource: JsonObject, where: str) -> tuple[PersonName, ...]:
    names = tuple(
        PersonName(family=n.get("family", ""), given=tuple(n.get("given", [])))
        for n in _few(resource.get("name"), f"{where}.name")
    )
    if not any(n.family.strip() for n in names):
        raise BusinessRuleViolation(
            f"a {where} needs a name with a family name", expression=f"{where}.name"
        )
    return names


def patient_entry(resource: JsonObject, systems: IdentitySystems) -> PatientEntry:
    """The MPI index of a Patient; exactly one national identifier is required."""
    national = [i for i in resource.get("identifier", []) if i.get("system") == systems.national]
    if len(national) != 1:
        raise BusinessRuleViolation(
            f"a Patient needs exactly one identifier with system {systems.national!r} "
            f"(the national identification number); found {len(national)}",
            expression="Patient.identifier",
        )
    national_id = str(national[0].get("value", "")).strip()
    birth = resource.get("birthDate")
    birth_date = _full_date(birth) if birth else None
    if systems.validate_national:
        parsed = parse_luxembourg_national_id(national_id)
        national_id = parsed.value
        # Identity vigilance: the number encodes the birth date; a mismatch is a typing error
        # in one of them, and registering it would create a wrong identity.
        if parsed.birth_date and birth_date and parsed.birth_date != birth_date:
            raise BusinessRuleViolation(
                f"birthDate {birth_date.isoformat()} does not match the birth date "
                f"{parsed.birth_date.isoformat()} encoded in the national identification number",
                expression="Patient.birthDate",
            )
    local_ids = []
    for item in _few(resource.get("identifier"), "Patient.identifier"):
        if item.get("system") == systems.national:
            continue
        if not item.get("system") or not item.get("value"):
            raise InvalidInput(
                "every Patient identifier needs a system and a value",
                expression="Patient.identifier",
            )
        local_ids.append(
            Identifier(
                _bounded(item["system"], MAX_URI, "Patient.identifier.system"),
                _bounded(item["value"], MAX_IDENTIFIER_VALUE, "Patient.identifier.value"),
            )
        )
    gender = resource.get("gender")
    if gender is not None and gender not in GENDERS:
        raise InvalidInput(
            f"gender must be one of {', '.join(sorted(GENDERS))}", expression="Patient.gender"
        )
    return PatientEntry(
        national_id=national_id,
        names=_names(resource, "Patient"),
        birth_date=birth_date,
        gender=gender,
        postal_codes=tuple(
            _bounded(a["postalCode"], MAX_POSTAL_CODE, "Patient.address.postalCode")
            for a in _few(resource.get("address"), "Patient.address")
            if "postalCode" in a
        ),
        local_ids=tuple(local_ids),
        active=bool(resource.get("active", True)),
    )


def with_national_id(resource: JsonObject, systems: IdentitySystems, national_id: str) -> None:
    """Write the canonical form of the national identifier back (people type spaces)."""
    for item in resource.get("identifier", []):
        if item.get("system") == systems.national:
            item["value"] = national_id


def _full_date(value: str) -> date | None:
    # FHIR allows a partial birth date (YYYY or YYYY-MM); only a full one is indexed as a date.
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        raise InvalidInput(
            f"birthDate {value!r} is not a date", expression="Patient.birthDate"
        ) from None


@dataclass(frozen=True)
class PractitionerEntry:
    identifier: str
    family: str
    given: str
    licence_status: str
    active: bool


# What the directory's columns hold (adapters/storage/schema.py), checked here so that a longer
# value is refused with its name on both databases (PostgreSQL refused it as a 500, SQLite
# stored it), and how many of each a resource may list.
MAX_IDENTIFIER_VALUE = 128
MAX_URI = 255
MAX_POSTAL_CODE = 32
MAX_REPEATS = 20  # identifiers, names or addresses of one resource


def _bounded(value: str, limit: int, where: str) -> str:
    if len(value) > limit:
        raise InvalidInput(f"{where} is at most {limit} characters", expression=where)
    return value


def _few(items: Any, where: str) -> list[Any]:
    found = list(items or [])
    if len(found) > MAX_REPEATS:
        raise InvalidInput(f"at most {MAX_REPEATS} {where} are accepted", expression=where)
    return found


def _single_identifier(resource: JsonObject, system: str, where: str) -> str:
    identifiers = _few(resource.get("identifier"), f"{where}.identifier")
    values = [i.get("value") for i in identifiers if i.get("system") == system]
    if len(values) != 1 or not values[0]:
        raise BusinessRuleViolation(
            f"a {where} needs exactly one identifier with system {system!r}",
            expression=f"{where}.identifier",
        )
    return _bounded(str(values[0]), MAX_IDENTIFIER_VALUE, f"{where}.identifier.value")


def _extension(resource: JsonObject, url: str, key: str) -> Any:
    for extension in resource.get("extension", []):
        if extension.get("url") == url:
            return extension.get(key)
    return None


def practitioner_entry(resource: JsonObject, systems: IdentitySystems) -> PractitionerEntry:
    names = _names(resource, "Practitioner")
    status = _extension(resource, LICENCE_STATUS_URL, "valueCode") or "active"
    if status not in LICENCE_STATUSES:
        raise InvalidInput(
            "licence status must be 'active' or 'suspended'", expression="Practitioner.extension"
        )
    return PractitionerEntry(
        identifier=_single_identifier(resource, systems.professional, "Practitioner"),
        family=names[0].family,
        given=" ".join(names[0].given),
        licence_status=status,
        active=bool(resource.get("active", True)),
    )


@dataclass(frozen=True)
class RoleEntry:
    practitioner_id: str
    organization_id: str | None
    profession: str
    specialty: str | None
    active: bool


def _reference_id(reference: JsonObject | None, resource_type: str, where: str) -> str | None:
    if reference is None:
        return None
    text = str(reference.get("reference", ""))
    kind, _, ident = text.partition("/")
    if kind != resource_type or not ident or "/" in ident:
        raise InvalidInput(
            f"{where} must reference a {resource_type} as '{resource_type}/id'", expression=where
        )
    return ident


def _coded(concepts: list[JsonObject], system: str) -> str | None:
    for concept in concepts:
        for coding in concept.get("coding", []):
            if coding.get("system") == system and coding.get("code"):
                return str(coding["code"])
    return None


def role_entry(resource: JsonObject, professions: Professions) -> RoleEntry:
    practitioner_id = _reference_id(
        resource.get("practitioner"), "Practitioner", "PractitionerRole.practitioner"
    )
    if practitioner_id is None:
        raise BusinessRuleViolation(
            "a PractitionerRole needs a practitioner", expression="PractitionerRole.practitioner"
        )
    profession = _coded(resource.get("code", []), professions.profession_system)
    if profession is None:
        raise BusinessRuleViolation(
            f"a PractitionerRole needs a code from {professions.profession_system!r}",
            expression="PractitionerRole.code",
        )
    specialty = _coded(resource.get("specialty", []), professions.specialty_system)
    professions.check(profession, specialty)
    return RoleEntry(
        practitioner_id=practitioner_id,
        organization_id=_reference_id(
            resource.get("organization"), "Organization", "PractitionerRole.organization"
        ),
        profession=profession,
        specialty=specialty,
        active=bool(resource.get("active", True)),
    )


@dataclass(frozen=True)
class OrganizationEntry:
    identifier: str
    name: str
    patient_id_system: str | None
    active: bool


def organization_entry(resource: JsonObject, systems: IdentitySystems) -> OrganizationEntry:
    name = str(resource.get("name", "")).strip()
    if not name:
        raise BusinessRuleViolation("an Organization needs a name", expression="Organization.name")
    return OrganizationEntry(
        identifier=_single_identifier(resource, systems.organization, "Organization"),
        name=name,
        patient_id_system=_patient_id_system(resource),
        active=bool(resource.get("active", True)),
    )


def _patient_id_system(resource: JsonObject) -> str | None:
    value = _extension(resource, PATIENT_ID_SYSTEM_URL, "valueUri")
    if value is None:
        return None
    return _bounded(str(value), MAX_URI, "Organization.extension.valueUri")


def require_organization_type(resource: JsonObject) -> None:
    """A new Organization says what kind it is: the directory serves mCSD Organizations."""
    if not resource.get("type"):
        raise BusinessRuleViolation(
            "an Organization needs a type (IHE mCSD Organization: type 1..*), e.g. "
            "http://terminology.hl7.org/CodeSystem/organization-type#prov",
            expression="Organization.type",
        )


# --- building resources (the CLI and the demo loader speak through the same services) ---


def new_patient(
    systems: IdentitySystems,
    *,
    national_id: str,
    family: str,
    given: list[str],
    birth_date: date,
    gender: str,
    postal_code: str | None = None,
    city: str | None = None,
    line: str | None = None,
    phone: str | None = None,
    local_ids: list[Identifier] | None = None,
) -> JsonObject:
    resource: JsonObject = {
        "resourceType": "Patient",
        "identifier": [{"use": "official", "system": systems.national, "value": national_id}]
        + [{"use": "usual", "system": i.system, "value": i.value} for i in local_ids or []],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "gender": gender,
        "birthDate": birth_date.isoformat(),
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    if postal_code or city or line:
        address: JsonObject = {"use": "home", "country": "LU"}
        if line:
            address["line"] = [line]
        if city:
            address["city"] = city
        if postal_code:
            address["postalCode"] = postal_code
        resource["address"] = [address]
    return resource


def new_practitioner(
    systems: IdentitySystems,
    *,
    identifier: str,
    family: str,
    given: list[str],
    gender: str | None = None,
    licence_status: str = "active",
) -> JsonObject:
    resource: JsonObject = {
        "resourceType": "Practitioner",
        "extension": [{"url": LICENCE_STATUS_URL, "valueCode": licence_status}],
        "identifier": [{"system": systems.professional, "value": identifier}],
        "active": True,
        "name": [{"family": family, "given": given}],
    }
    if gender:
        resource["gender"] = gender
    return resource


def new_role(
    professions: Professions,
    *,
    practitioner_id: str,
    profession: str,
    specialty: str | None = None,
    organization_id: str | None = None,
) -> JsonObject:
    code = professions.professions.get(profession)
    resource: JsonObject = {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner_id}"},
        "code": [
            {
                "coding": [
                    {
                        "system": professions.profession_system,
                        "code": profession,
                        "display": code.display_en if code else profession,
                    }
                ]
            }
        ],
    }
    if organization_id:
        resource["organization"] = {"reference": f"Organization/{organization_id}"}
    if specialty:
        found = professions.specialties.get(specialty)
        resource["specialty"] = [
            {
                "coding": [
                    {
                        "system": professions.specialty_system,
                        "code": specialty,
                        "display": found.display_en if found else specialty,
                    }
                ]
            }
        ]
    return resource


def new_organization(
    systems: IdentitySystems,
    *,
    identifier: str,
    name: str,
    kind: str | None = None,
    patient_id_system: str | None = None,
    postal_code: str | None = None,
    city: str | None = None,
) -> JsonObject:
    resource: JsonObject = {
        "resourceType": "Organization",
        "identifier": [{"system": systems.organization, "value": identifier}],
        "active": True,
        "type": [ORGANIZATION_TYPE_PROVIDER],
        "name": name,
    }
    extensions = []
    if patient_id_system:
        extensions.append({"url": PATIENT_ID_SYSTEM_URL, "valueUri": patient_id_system})
    if kind:
        extensions.append({"url": ORGANIZATION_KIND_URL, "valueCode": kind})
    if extensions:
        resource["extension"] = extensions
    if postal_code or city:
        resource["address"] = [
            {k: v for k, v in (("city", city), ("postalCode", postal_code), ("country", "LU")) if v}
        ]
    return resource


def _moment(value: Any, where: str) -> datetime | None:
    return None if value is None else date_time(value, where)


def _period(value: Any, where: str) -> tuple[datetime | None, datetime | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a Period", expression=where)
    start = _moment(value.get("start"), f"{where}.start")
    end = _moment(value.get("end"), f"{where}.end")
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"{where} must end after it starts", expression=f"{where}.end")
    return start, end


def care_team_entry(resource: JsonObject, team_id: str = "") -> CareTeam:
    """What the engine needs of a validated FHIR CareTeam: its one managing organization, name,
    status, period and Practitioner members with their periods (other kinds of member, a
    patient or a related person, give no access and are refused rather than silently kept)."""
    organizations = resource.get("managingOrganization") or []
    if len(organizations) != 1:
        raise InvalidInput(
            "a care team has exactly one managingOrganization",
            expression="CareTeam.managingOrganization",
        )
    organization = _reference_id(organizations[0], "Organization", "CareTeam.managingOrganization")
    name = resource.get("name")
    if not isinstance(name, str) or not name.strip() or organization is None:
        raise InvalidInput("a care team has a name", expression="CareTeam.name")
    start, end = _period(resource.get("period"), "CareTeam.period")
    members: list[TeamMember] = []
    participants = resource.get("participant") or []
    if len(participants) > MAX_TEAM_MEMBERS:
        raise InvalidInput(
            f"a care team has at most {MAX_TEAM_MEMBERS} participants",
            expression="CareTeam.participant",
        )
    for index, participant in enumerate(participants):
        where = f"CareTeam.participant[{index}]"
        member = _reference_id(participant.get("member"), "Practitioner", f"{where}.member")
        if member is None:
            raise InvalidInput(
                "each participant is a Practitioner (member)", expression=f"{where}.member"
            )
        member_start, member_end = _period(participant.get("period"), f"{where}.period")
        members.append(TeamMember(member, member_start, member_end))
    return CareTeam(
        team_id,
        organization,
        name.strip(),
        resource.get("status") == "active",
        start,
        end,
        tuple(members),
    )
