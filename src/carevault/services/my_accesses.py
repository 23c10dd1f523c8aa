"""What concerns a professional, for their workspace's home page ("my patients and my
accesses"): the grants that reach them (to them, to an organization they work for, to a care
team they are an active member of) and when they end, the emergency windows they opened, the
delegations they gave and received, and their assistants' mandates (given, or held).

An assistant acting for a practitioner (`Subject.mandator`) sees what reaches that practitioner:
they read in their name. Each list is bounded (`LIMIT`, the closest ends first) and the page
says when more exist. Showing the list is an access to the patients it names: it is recorded
(one entry, the patients counted, not named) before the answer, in the read's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from carevault.domain.audit import AuditRecord, rfc3339_ms
from carevault.domain.authorization import Delegation, Grant, Party, Subject, SubjectKind
from carevault.domain.directory import DirectoryType
from carevault.domain.errors import NotPermitted
from carevault.domain.mandates import AssistantMandate
from carevault.domain.records import PartyEmergency
from carevault.services.record_policy import Actor, AuditAppender
from carevault.services.unit_of_work import UnitOfWork

LIMIT = 100  # per list; the page says when there are more
# How the access lists name a party's kind, and the directory type that holds it (practitioners
# are read with their roles, apart).
_DIRECTORY_TYPE: dict[str, DirectoryType] = {
    "patient": "Patient",
    "organization": "Organization",
    "care_team": "CareTeam",
}


@dataclass(frozen=True)
class GrantLine:
    patient_id: str
    patient: str  # the name the directory has
    grant: Grant
    via: str  # the organization's or the care team's name; "" for a grant to the person


@dataclass(frozen=True)
class EmergencyLine:
    patient_id: str
    patient: str
    window: PartyEmergency


@dataclass(frozen=True)
class DelegationLine:
    patient_id: str
    patient: str
    delegation: Delegation
    given: bool  # True: I passed it on (to ``colleague``); False: I received it
    colleague: str  # the other practitioner's name


@dataclass(frozen=True)
class MandateLine:
    mandate: AssistantMandate
    other: str  # the assistant's name (mandates given) or the mandator's (held)


@dataclass(frozen=True)
class MyAccessesView:
    whose: str  # the practitioner the lists are about (an assistant's mandator)
    grants: tuple[GrantLine, ...]
    emergencies: tuple[EmergencyLine, ...]
    delegations: tuple[DelegationLine, ...]
    mandates_given: tuple[MandateLine, ...]
    mandates_held: tuple[MandateLine, ...]  # in force only: whom an assistant may act for
    more: bool  # a list was cut at LIMIT

    @property
    def delegable(self) -> tuple[GrantLine, ...]:
        """My own grants I may pass on (the engine decides again when I do)."""
        return tuple(
            g for g in self.grants if g.grant.party is Party.PRACTITIONER and g.grant.delegable
        )


def display_name(resource: dict[str, object] | None) -> str:
    """A person's first name in the directory, as "Given Family"; "" when it has none."""
    names = (resource or {}).get("name")
    if not isinstance(names, list) or not names or not isinstance(names[0], dict):
        return ""
    name = names[0]
    given = name.get("given", [])
    parts = [*(given if isinstance(given, list) else []), name.get("family", "")]
    return " ".join(str(p) for p in parts if p)


class _Names:
    """Names read once each from the directory, for one page."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.seen: dict[tuple[str, str], str] = {}

    def of(self, kind: str, ident: str) -> str:
        key = (kind, ident)
        if key not in self.seen:
            self.seen[key] = self._read(kind, ident) or ident
        return self.seen[key]

    def _read(self, kind: str, ident: str) -> str:
        resource_type = _DIRECTORY_TYPE.get(kind)
        stored = (
            self.uow.directory.practitioner(ident)
            if resource_type is None
            else self.uow.directory.read(resource_type, ident)
        )
        if stored is None:
            return ""
        if kind in ("organization", "care_team"):
            return str(stored.resource.get("name") or "")
        return display_name(stored.resource)


class MyAccesses:
    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditAppender,
        *,
        clock: Callable[[], datetime],
        limit: int = LIMIT,
    ) -> None:
        self.units = units
        self.audit = audit
        self.clock = clock
        self.limit = limit

    def overview(self, actor: Actor) -> MyAccessesView:
        """What concerns ``actor`` (an assistant: their mandator) now; recorded."""
        now = self.clock()
        me = actor.subject
        whose: Subject = me.mandator if me.mandator is not None else me
        limit = self.limit
        with self.units() as uow:
            names = _Names(uow)
            parties = [
                (Party.PRACTITIONER, whose.id),
                *((Party.ORGANIZATION, o) for o in sorted(whose.organization_ids)),
                *((Party.CARE_TEAM, c) for c in sorted(whose.care_team_ids)),
            ]
            found = (
                uow.records.grants_to(parties, now, limit + 1)
                if whose.kind is SubjectKind.PRACTITIONER
                else []
            )
            grants = tuple(
                GrantLine(
                    f.patient_id,
                    names.of("patient", f.patient_id),
                    f.grant,
                    ""
                    if f.grant.party is Party.PRACTITIONER
                    else names.of(f.grant.party.value, f.grant.party_id),
                )
                for f in found[:limit]
            )
            windows = uow.records.emergencies_of(whose.id, now, limit + 1)
            emergencies = tuple(
                EmergencyLine(w.patient_id, names.of("patient", w.patient_id), w)
                for w in windows[:limit]
            )
            passed = uow.records.delegations_of(whose.id, now, limit + 1)
            delegations = tuple(
                DelegationLine(
                    d.patient_id,
                    names.of("patient", d.patient_id),
                    d.delegation,
                    d.delegation.delegator_id == whose.id,
                    names.of(
                        "practitioner",
                        d.delegation.delegate_id
                        if d.delegation.delegator_id == whose.id
                        else d.delegation.delegator_id,
                    ),
                )
                for d in passed[:limit]
            )
            given = tuple(
                MandateLine(m, names.of("practitioner", m.assistant_id))
                for m in uow.directory.mandates(mandator_id=me.id)
                if m.active(now) or m.start > now
            )
            held = tuple(
                MandateLine(m, names.of("practitioner", m.mandator_id))
                for m in _unique_mandators(uow.directory.active_mandates(me.id, now))
            )
            patients = {g.patient_id for g in grants} | {e.patient_id for e in emergencies}
            patients |= {d.patient_id for d in delegations}
            mandator = me.mandator
            self._record(
                uow,
                actor,
                now,
                interaction="workspace-accesses",
                action="R",
                outcome="0",
                detail={"patients": str(len(patients))},
                on_behalf_of=f"Practitioner/{mandator.id}" if mandator else None,
            )
            uow.commit()
        return MyAccessesView(
            whose.id,
            grants,
            emergencies,
            delegations,
            given,
            held,
            more=any(len(listed) > limit for listed in (found, windows, passed)),
        )

    def practitioner_by_identifier(self, identifier: str) -> str | None:
        """The practitioner a professional identifier names in the directory, if any."""
        with self.units() as uow:
            return uow.directory.practitioner_ids_by_identifier([identifier]).get(identifier)

    def choose_mandator(self, actor: Actor, mandator_id: str) -> None:
        """An assistant chooses to act for ``mandator_id``: allowed only under a mandate of
        theirs in force now (the workspace checks it again at each request). Recorded, and
        so is a refusal (NotPermitted)."""
        now = self.clock()
        me = actor.subject
        with self.units() as uow:
            held = {m.mandator_id for m in uow.directory.active_mandates(me.id, now)}
            allowed = me.kind is SubjectKind.ASSISTANT and mandator_id in held
            self._record(
                uow,
                actor,
                now,
                interaction="workspace-act-for",
                action="E",
                outcome="0" if allowed else "4",
                detail={"mandator": f"Practitioner/{mandator_id}"},
                on_behalf_of=f"Practitioner/{mandator_id}" if allowed else None,
            )
            uow.commit()
        if not allowed:
            raise NotPermitted(
                "an assistant acts only for a practitioner whose mandate to them is in force",
                issue_code="forbidden",
            )

    def _record(
        self,
        uow: UnitOfWork,
        actor: Actor,
        now: datetime,
        *,
        interaction: str,
        action: str,
        outcome: str,
        detail: dict[str, str],
        on_behalf_of: str | None,
    ) -> None:
        entry = AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(now),
            kind="access",
            action=action,
            interaction=interaction,
            outcome=outcome,
            agent=actor.agent(on_behalf_of),
            entity_type="Practitioner",
            entity_id=actor.subject.id,
            detail=detail,
        )
        self.audit.append_with(uow.audit, [entry])


def _unique_mandators(mandates: Iterable[AssistantMandate]) -> list[AssistantMandate]:
    """One line per mandating practitioner (several mandates of one: the first, newest)."""
    seen: set[str] = set()
    kept = []
    for m in mandates:
        if m.mandator_id not in seen:
            seen.add(m.mandator_id)
            kept.append(m)
    return kept


__all__ = [
    "LIMIT",
    "DelegationLine",
    "EmergencyLine",
    "GrantLine",
    "MandateLine",
    "MyAccesses",
    "MyAccessesView",
    "display_name",
]
