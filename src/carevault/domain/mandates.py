"""What professionals record about each other in the directory: an assistant's mandate, and
the care teams the patients' grants may name.

An **assistant's mandate** (PRODUCT.md, "professional's assistant": "linked by a mandate from a
professional") says that an assistant acts in a practitioner's name, from a start to a mandatory
end, optionally narrowed to some document classes (``classes``; ``None``: whatever the
practitioner's profile allows). Only the practitioner writes it, in person (the engine's
`decide_mandate`); the engine then lets the assistant read with the practitioner's profile and
grants, never write (`carevault.domain.authorization`).

A **care team** (FHIR ``CareTeam``) belongs to an organization, lasts a period and has members,
each for a period of their own; a patient's grant to a team reaches the members active at the
moment of the request. Care teams are directory facts: the registered authorities write them,
like roles and organizations.

Standard library only: the values and their rules, raising `carevault.domain.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from carevault.domain.errors import BusinessRuleViolation, InvalidInput

__all__ = [
    "MAX_MANDATE",
    "MAX_MANDATE_CLASSES",
    "MAX_TEAM_MEMBERS",
    "AssistantMandate",
    "CareTeam",
    "TeamMember",
    "check_mandate",
]

# A mandate is renewed at least yearly: an assistant who left keeps no access by oversight.
MAX_MANDATE = timedelta(days=366)
MAX_MANDATE_CLASSES = 64
MAX_TEAM_MEMBERS = 500


@dataclass(frozen=True)
class AssistantMandate:
    """A practitioner's mandate to an assistant; ``ended_at`` is set when ended early."""

    id: str
    mandator_id: str
    assistant_id: str
    start: datetime
    end: datetime
    classes: frozenset[str] | None = None
    ended_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        if self.ended_at is not None and self.ended_at <= now:
            return False
        return self.start <= now < self.end


def check_mandate(mandate: AssistantMandate, now: datetime) -> None:
    """The rules on a new mandate, whoever writes it."""
    if mandate.mandator_id == mandate.assistant_id:
        raise BusinessRuleViolation(
            "a professional cannot mandate themselves", expression="assistant"
        )
    if mandate.end <= now or mandate.end <= mandate.start:
        raise InvalidInput("a mandate needs an end date in the future", expression="end")
    if mandate.end - max(mandate.start, now) > MAX_MANDATE:
        raise BusinessRuleViolation(
            f"a mandate lasts at most {MAX_MANDATE.days} days; renew it when it ends",
            expression="end",
        )
    if mandate.classes is not None:
        if not mandate.classes:
            raise InvalidInput("name at least one document class, or none", expression="scope")
        if len(mandate.classes) > MAX_MANDATE_CLASSES:
            raise InvalidInput(
                f"a mandate names at most {MAX_MANDATE_CLASSES} document classes",
                expression="scope",
            )


@dataclass(frozen=True)
class TeamMember:
    practitioner_id: str
    start: datetime | None = None
    end: datetime | None = None

    def active(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(frozen=True)
class CareTeam:
    """A care team as the engine needs it; the FHIR resource is kept beside it."""

    id: str
    organization_id: str
    name: str
    active_status: bool
    start: datetime | None
    end: datetime | None
    members: tuple[TeamMember, ...]

    def active(self, now: datetime) -> bool:
        return (
            self.active_status
            and (self.start is None or self.start <= now)
            and (self.end is None or now < self.end)
        )

    def reaches(self, practitioner_id: str, now: datetime) -> bool:
        return self.active(now) and any(
            m.practitioner_id == practitioner_id and m.active(now) for m in self.members
        )
