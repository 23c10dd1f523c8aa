"""The directories' own model: the master patient index (MPI) and the professional directory (HPD).

The directories hold FHIR resources (a hospital sends a ``Patient``, we answer with one), but the
rules that protect patient identity live here, away from HTTP and SQL: which identifiers a
patient must and may carry, and when two patient entries may be merged or split again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, TypeGuard

from carevault.domain.errors import BusinessRuleViolation, Conflict, NotPermitted

DirectoryType = Literal["Patient", "Practitioner", "PractitionerRole", "Organization", "CareTeam"]
"""The FHIR resource types the directories hold: what a use case names when it reads one."""

DIRECTORY_TYPES: Final[tuple[DirectoryType, ...]] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CareTeam",
)


def is_directory_type(resource_type: str) -> TypeGuard[DirectoryType]:
    """Whether a resource type named by a caller is one the directories hold."""
    return resource_type in DIRECTORY_TYPES


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


@dataclass(frozen=True)
class IdentityDomain:
    """What an identity source may write: the patients of its own assigning authority.

    A hospital's system feeds the patient index with the numbers it assigns; it must not
    create, rename, merge or split a patient that it does not know by one of its numbers,
    touch another hospital's numbers, or change the national identifier (which would move an
    identity, and the record behind it, to somebody else). ``system`` is its assigning
    authority's identifier system. Registrars are not limited: they pass no domain.
    """

    system: str

    def _refuse(self, message: str) -> NotPermitted:
        return NotPermitted(
            f"{message}; this identity source writes only the patients it identifies in "
            f"{self.system}",
            expression="Patient.identifier",
        )

    def _own(self, entry: PatientEntry) -> bool:
        return any(i.system == self.system for i in entry.local_ids)

    def _foreign(self, entry: PatientEntry) -> set[Identifier]:
        return {i for i in entry.local_ids if i.system != self.system}

    def check_names(self, identifier: Identifier) -> None:
        """The identifier a feed names a patient by must be one of its own."""
        if identifier.system != self.system:
            raise self._refuse(f"the identifier {identifier.system}|… is not yours")

    def check_write(self, before: PatientEntry | None, after: PatientEntry) -> None:
        """Creating (``before`` is None) or updating one patient. An update need not repeat
        the other authorities' identifiers (the service keeps them), but may not add any."""
        if not self._own(after):
            raise self._refuse("the patient must carry an identifier of your own")
        if before is None:
            if self._foreign(after):
                raise self._refuse("a new patient may carry only your own local identifier")
            return
        if not self._own(before):
            raise self._refuse("this patient is not known by one of your identifiers")
        if self._foreign(after) - self._foreign(before):
            raise self._refuse("another assigning authority's identifiers may not be added")
        if before.national_id != after.national_id:
            raise self._refuse("the national identifier may not change")

    def check_link(self, entry: PatientEntry) -> None:
        """Merging ``entry`` into another patient, or splitting it off again: only an entry
        that is the source's alone (its own number, nobody else's)."""
        if not self._own(entry):
            raise self._refuse("this patient is not known by one of your identifiers")
        if self._foreign(entry):
            raise self._refuse(
                "this patient also carries another assigning authority's identifiers"
            )
