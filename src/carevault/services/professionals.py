"""What professionals record about each other in the directory: assistants' mandates and care
teams (`carevault.domain.mandates`).

- A practitioner mandates an assistant, in person (`decide_mandate`: never an assistant, never
  a system acting for them, never a colleague), until an end date, optionally for some document
  classes; they end it early when they like. From the next request on, the assistant's token
  acts in their name (`carevault.services.record_policy.practitioner_subject`), read only, and
  the audit names both.
- Care teams are directory resources: written by the registered authorities only (the door's
  gate decides it as any directory write), read by every authenticated professional; a patient's
  grant to a team reaches the members active at the moment of each request.

Each change runs in one transaction with its audit entry.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE, AuditRecord, rfc3339_ms
from carevault.domain.authorization import Decision, SubjectKind, decide_mandate
from carevault.domain.errors import BusinessRuleViolation, NotFound, NotPermitted, VersionConflict
from carevault.domain.mandates import AssistantMandate, CareTeam, check_mandate
from carevault.domain.queries import Alternatives, Page, SearchResult, Stored
from carevault.fhirmodel.directory import care_team_entry
from carevault.fhirmodel.validate import validate_resource
from carevault.services.record_policy import Actor, AuditAppender, Refused, practitioner_subject
from carevault.services.unit_of_work import UnitOfWork

JsonObject = dict[str, object]
_SUCCESS = "0"


class Professionals:
    """Assistants' mandates; the care teams' reads and writes."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditAppender,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.units = units
        self.audit = audit
        self.clock = clock

    # --- assistants' mandates -------------------------------------------------------------

    def _mandating(self, actor: Actor, mandator_id: str) -> Decision:
        decision = decide_mandate(actor.subject, mandator_id)
        if not decision.permit:
            raise Refused(decision)
        if actor.organization is not None:
            # A hospital system acting for the practitioner is not the practitioner.
            raise NotPermitted(
                "a practitioner mandates their assistants in person, with their own card, not "
                "through a system acting for them",
                issue_code="forbidden",
            )
        return decision

    def mandate_assistant(
        self,
        actor: Actor,
        mandator_id: str,
        assistant_id: str,
        end: datetime,
        classes: frozenset[str] | None = None,
        start: datetime | None = None,
    ) -> AssistantMandate:
        now = self.clock()
        decision = self._mandating(actor, mandator_id)
        mandate = AssistantMandate(
            uuid.uuid4().hex, mandator_id, assistant_id, start or now, end, classes
        )
        check_mandate(mandate, now)
        with self.units() as uow:
            if uow.directory.practitioner(assistant_id) is None:
                raise NotFound(f"Practitioner/{assistant_id} is not in the directory")
            assistant = practitioner_subject(uow, assistant_id, now=now)
            if assistant.kind is not SubjectKind.ASSISTANT:
                raise BusinessRuleViolation(
                    f"Practitioner/{assistant_id} is not an assistant: a colleague is given "
                    "access by the patient, or by a delegation",
                    expression="assistant",
                )
            uow.directory.add_mandate(mandate, now, actor.who)
            detail = {
                "mandate": mandate.id,
                "mandator": f"Practitioner/{mandator_id}",
                "assistant": f"Practitioner/{assistant_id}",
                "start": rfc3339_ms(mandate.start),
                "end": rfc3339_ms(mandate.end),
            }
            if classes is not None:
                detail["classes"] = " ".join(sorted(classes))
            self._record(uow, actor, decision, now, "assistant-mandate", ACTION_CREATE, detail)
            uow.commit()
        return mandate

    def end_mandate(self, actor: Actor, mandator_id: str, mandate_id: str) -> None:
        """End one of the practitioner's mandates now: the assistant is refused from the very
        next request."""
        now = self.clock()
        decision = self._mandating(actor, mandator_id)
        with self.units() as uow:
            if not uow.directory.end_mandate(mandate_id, mandator_id, now, actor.who):
                raise NotFound(f"Practitioner/{mandator_id} has no mandate {mandate_id} in force")
            detail = {"mandate": mandate_id, "mandator": f"Practitioner/{mandator_id}"}
            self._record(uow, actor, decision, now, "assistant-mandate-end", ACTION_DELETE, detail)
            uow.commit()

    def mandates(
        self, *, mandator_id: str | None = None, assistant_id: str | None = None
    ) -> list[AssistantMandate]:
        """The mandates a practitioner gave, or an assistant holds, ended ones included."""
        with self.units() as uow:
            return uow.directory.mandates(mandator_id=mandator_id, assistant_id=assistant_id)

    def _record(
        self,
        uow: UnitOfWork,
        actor: Actor,
        decision: Decision,
        now: datetime,
        interaction: str,
        action: str,
        detail: dict[str, str],
    ) -> None:
        entry = AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(now),
            kind="policy",
            action=action,
            interaction=interaction,
            outcome=_SUCCESS,
            agent=actor.agent(),
            patient=None,
            entity_type="Practitioner",
            entity_id=detail["mandator"].removeprefix("Practitioner/"),
            purpose_of_use=None,
            rule=" → ".join(decision.path),
            detail=detail,
        )
        self.audit.append_with(uow.audit, [entry])


# --- care teams (directory resources; the door's gate decided the write) -------------------


def _stamp(resource: JsonObject, resource_id: str, version_id: int, now: datetime) -> JsonObject:
    stamped = copy.deepcopy(resource)
    stamped["id"] = resource_id
    stamped["meta"] = {"versionId": str(version_id), "lastUpdated": rfc3339_ms(now)}
    return stamped


def _checked(uow: UnitOfWork, resource: JsonObject, team_id: str) -> tuple[JsonObject, CareTeam]:
    valid = validate_resource(dict(resource), "CareTeam")
    team = care_team_entry(valid, team_id)
    if not uow.directory.existing_ids("Organization", [team.organization_id]):
        raise BusinessRuleViolation(
            f"Organization/{team.organization_id} is not known",
            expression="CareTeam.managingOrganization",
        )
    members = {m.practitioner_id for m in team.members}
    missing = members - uow.directory.existing_ids("Practitioner", members)
    if missing:
        raise BusinessRuleViolation(
            f"Practitioner/{sorted(missing)[0]} is not known",
            expression="CareTeam.participant.member",
        )
    return valid, team


def create_care_team(uow: UnitOfWork, resource: JsonObject, now: datetime) -> Stored:
    team_id = uuid.uuid4().hex
    valid, team = _checked(uow, resource, team_id)
    stored = Stored(team_id, 1, _stamp(valid, team_id, 1, now))
    uow.directory.write_care_team(stored, team, now, new=True)
    uow.commit()
    return stored


def update_care_team(
    uow: UnitOfWork, team_id: str, resource: JsonObject, now: datetime, if_match: int | None
) -> Stored:
    current = uow.directory.read("CareTeam", team_id)
    if current is None:
        raise NotFound(f"CareTeam/{team_id} is not known")
    if if_match is not None and if_match != current.version_id:
        raise VersionConflict(
            f"If-Match names version {if_match} but the current version is {current.version_id}"
        )
    if resource.get("id") not in (None, team_id):
        raise BusinessRuleViolation("the id does not match the URL", expression="CareTeam.id")
    valid, team = _checked(uow, resource, team_id)
    version = current.version_id + 1
    stored = Stored(team_id, version, _stamp(valid, team_id, version, now))
    uow.directory.write_care_team(stored, team, now, new=False)
    uow.commit()
    return stored


def read_care_team(uow: UnitOfWork, team_id: str) -> Stored:
    stored = uow.directory.read("CareTeam", team_id)
    if stored is None:
        raise NotFound(f"CareTeam/{team_id} is not known")
    return stored


def search_care_teams(
    uow: UnitOfWork,
    ids: Sequence[Alternatives],
    organizations: Sequence[Alternatives],
    participants: Sequence[Alternatives],
    page: Page,
) -> SearchResult:
    return uow.directory.search_care_teams(ids, organizations, participants, page)


__all__ = [
    "Professionals",
    "create_care_team",
    "read_care_team",
    "search_care_teams",
    "update_care_team",
]
