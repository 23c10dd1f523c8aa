"""Builders shared by the integration tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from carevault.domain.directory import Identifier
from carevault.domain.national_id import make_luxembourg_national_id
from carevault.fhirmodel.directory import IdentitySystems, new_organization, new_patient

HOSPITAL_SYSTEM = "https://carevault.lu/fhir/sid/local/test-hospital"


# Identity systems of the services' unit tests: URNs of no real registry, and national numbers
# taken as given (no checksum), so that a test's people need no valid matricule.
URN_SYSTEMS = IdentitySystems(national="urn:test:national", professional="urn:test:hpd",
                              organization="urn:test:organizations", validate_national=False)

def national_id(seq: int, born: date = date(1980, 4, 12)) -> str:
    return make_luxembourg_national_id(born, seq)


def patient(systems: IdentitySystems, seq: int, *, family: str = "Müller",
            given: list[str] | None = None, born: date = date(1980, 4, 12),
            gender: str = "female", postal_code: str = "L-1210",
            local: str | None = None) -> dict[str, Any]:
    return new_patient(
        systems, national_id=national_id(seq, born), family=family,
        given=given or ["Anne", "Marie"], birth_date=born, gender=gender,
        postal_code=postal_code, city="Luxembourg",
        local_ids=[Identifier(HOSPITAL_SYSTEM, local)] if local else None)


def hospital(systems: IdentitySystems, identifier: str = "ORG-H1") -> dict[str, Any]:
    return new_organization(systems, identifier=identifier, name="Hôpital Test",
                            kind="hospital", patient_id_system=HOSPITAL_SYSTEM)
