"""The directories' own model: the master patient index (MPI) and the professional directory (HPD).

The directories hold FHIR resources (a hospital sends a ``Patient``, we answer with one), but the
rules that protect patient identity live here, away from HTTP and SQL: which identifiers a
patient must and may carry, and when two patient entries may be merged or split again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from carevault.domain.errors import BusinessRuleViolation, Conflict


@dataclass(frozen=True)
class Identifier:
    """A FHIR identifier reduced to what identifies: its namespace and its value."""

    system: str
    value: str

    def token(self) -> str:
        return f"{self.system}|{self.value}"


@dataclass(frozen=True)
class PersonName:
    family: str
    given: tuple[str, ...]


@dataclass(frozen=True)
class PatientEntry:
    """What the MPI indexes about a patient, extracted from the FHIR resource."""

    national_id: str
    names: tuple[PersonName, ...]
    birth_date: date | None
    gender: str | None
    postal_codes: tuple[str, ...]
    local_ids: tuple[Identifier, ...]
    active: bool


@dataclass(frozen=True)
class MergeState:
    """A patient entry's place in the merge graph."""

    patient_id: str
    merged_into: str | None


def check_local_identifiers(local_ids: tuple[Identifier, ...], authorities: set[str]) -> None:
    """Local identifiers must come from a known assigning authority, one number per authority.

    A hospital assigns one local number per patient; two numbers from the same hospital on one
    entry means the hospital itself has a duplicate, which must be merged there first.
    """
    seen: set[str] = set()
    for identifier in local_ids:
        if identifier.system not in authorities:
            raise BusinessRuleViolation(
                f"identifier system {identifier.system!r} is not the assigning authority of any "
                "registered organization",
                expression="Patient.identifier",
            )
        if identifier.system in seen:
            raise BusinessRuleViolation(
                f"two local identifiers from the same assigning authority {identifier.system!r}",
                expression="Patient.identifier",
            )
        seen.add(identifier.system)


def check_merge(source: MergeState, survivor: MergeState) -> None:
    """A merge folds ``source`` into ``survivor``; chains and cycles are refused.

    Only one level of merge is allowed so that every merged entry points straight at the entry
    that answers for it, and an unmerge restores exactly what was there.
    """
    if source.patient_id == survivor.patient_id:
        raise BusinessRuleViolation("a patient cannot be merged into itself")
    if source.merged_into is not None:
        raise Conflict(
            f"Patient/{source.patient_id} is already merged into Patient/{source.merged_into}"
        )
    if survivor.merged_into is not None:
        raise Conflict(
            f"Patient/{survivor.patient_id} is itself merged into "
            f"Patient/{survivor.merged_into}; merge into that one"
        )


def check_unmerge(source: MergeState) -> str:
    """Return the survivor an unmerge detaches ``source`` from; refuse if it is not merged."""
    if source.merged_into is None:
        raise Conflict(f"Patient/{source.patient_id} is not merged")
    return source.merged_into
