"""What professionals do to reach a record: a care event (an encounter proved by the
organization's admission system or the patient's presence code), breaking the glass in an
emergency, passing their access on to a colleague when the patient allows it; and the presence
code the patient makes for the professional in front of them.

Each is decided by the engine on facts loaded in the same transaction that writes the access,
its audit entry and the patient's notification (`RecordPolicy`'s shared steps): the patient
sees every way in, and a crash leaves all of it or none.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_EXECUTE,
    AuditRecord,
    rfc3339_ms,
)
from carevault.domain.authorization import (
    ALERT_SECURITY_OFFICER,
    Action,
    CareProof,
    Decision,
    Delegation,
    EmergencyQuota,
    EmergencyWindow,
    Grant,
    GrantLevel,
    Party,
    SubjectKind,
)
from carevault.domain.errors import BusinessRuleViolation, InvalidInput, NotFound, NotPermitted
from carevault.domain.records import StoredEncounter
from carevault.services import presence
from carevault.services.presence import PresenceCode, code_hash, normalize
from carevault.services.record_policy import (
    CARE_RELATIONSHIP,
    EMERGENCY_QUOTA,
    EMERGENCY_QUOTA_PERIOD,
    EMERGENCY_WINDOW,
    MAX_REASON,
    Actor,
    RecordPolicy,
    Refused,
    grant_detail,
    new_id,
    purpose_of_use,
)
from carevault.services.unit_of_work import UnitOfWork


class CareAccess:
    """Care events, emergency access, delegations and presence codes."""

    def __init__(
        self,
        policy: RecordPolicy,
        *,
        care_relationship: timedelta = CARE_RELATIONSHIP,
        emergency_window: timedelta = EMERGENCY_WINDOW,
        emergency_quota: int = EMERGENCY_QUOTA,
    ) -> None:
        self.policy = policy
        self.units = policy.units
        self.clock = policy.clock
        self.audit = policy.audit
        self.care_relationship = care_relationship
        self.emergency_window = emergency_window
        self.emergency_quota = emergency_quota

    def delegate(
        self,
        actor: Actor,
        patient_id: str,
        delegate_id: str,
        level: GrantLevel,
        end: datetime,
    ) -> Delegation:
        """A practitioner passes their access on, when the patient allows it; the engine never
        lets a delegation give more than the delegator holds at the moment it is used."""
        now = self.clock()
        if end <= now:
            raise InvalidInput("a delegation needs an end date in the future", expression="end")
        with self.units() as uow:
            record = self.policy.facts(uow, patient_id, now)
            decision = self.policy.require(actor.subject, Action.READ, record, None, now)
            assert record is not None
            holds = record.referring_physician_id == actor.subject.id or any(
                grant.party is Party.PRACTITIONER
                and grant.party_id == actor.subject.id
                and grant.delegable
                and grant.active(now)
                for grant in record.grants
            )
            if (
                actor.subject.kind is not SubjectKind.PRACTITIONER
                or decision.rule != "grant"
                or not holds
                or actor.organization is not None
            ):
                # A delegate never passes a delegation on (the engine would give it nothing),
                # nor does a system acting for the practitioner.
                raise NotPermitted(
                    "only a practitioner holding a delegable access from the patient, in "
                    "person, can delegate it",
                    issue_code="forbidden",
                )
            if delegate_id == actor.subject.id:
                raise InvalidInput("delegate to a colleague", expression="delegate")
            if not record.delegation_allowed:
                raise NotPermitted(
                    "the patient does not allow professionals to delegate their access",
                    issue_code="forbidden",
                )
            self.policy.require_party(uow, Party.PRACTITIONER, delegate_id)
            delegation = Delegation(actor.subject.id, delegate_id, level, now, end, new_id())
            uow.records.add_delegation(patient_id, delegation, now)
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "delegation-create",
                ACTION_CREATE,
                {
                    "delegation": delegation.id,
                    "delegate": f"Practitioner/{delegate_id}",
                    "end": rfc3339_ms(end),  # the patient's history says until when
                },
            )
            uow.commit()
        return delegation

    def end_delegation(self, actor: Actor, patient_id: str, delegation_id: str) -> None:
        """End a delegation in force now: its delegator ends it in person, and whoever manages
        the record (the patient, a representative who manages it) ends any; the delegate is
        refused from the very next request. Anyone else is refused by the engine (manage), and
        a delegation that is not in force on this record is not found."""
        now = self.clock()
        with self.units() as uow:
            record = self.policy.facts(uow, patient_id, now)
            found = next(
                (d for d in (record.delegations if record else ()) if d.id == delegation_id),
                None,
            )
            subject = actor.subject
            if (
                found is not None
                and subject.kind is SubjectKind.PRACTITIONER
                and actor.organization is None
                and found.delegator_id == subject.id
            ):
                # The delegator takes back what they passed on, whatever they hold today.
                decision = self.policy.decide(subject, Action.READ, record, None, now)
                by = "delegator"
            else:
                decision = self.policy.require(subject, Action.MANAGE, record, None, now)
                by = "record"
            if found is None or not uow.records.revoke_delegation(patient_id, found.id, now):
                raise NotFound(f"there is no delegation {delegation_id} in force on this record")
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "delegation-end",
                ACTION_DELETE,
                {
                    "delegation": found.id,
                    "delegate": f"Practitioner/{found.delegate_id}",
                    "delegator": f"Practitioner/{found.delegator_id}",
                    "by": by,
                },
                words=(
                    "Your representative ended a professional's delegated access.",
                    "Votre représentant a mis fin à l'accès délégué d'un professionnel.",
                ),
            )
            uow.commit()

    def issue_presence_code(self, actor: Actor, patient_id: str) -> PresenceCode:
        """A presence code for the patient to give the professional in front of them (see
        `carevault.services.presence`): the patient's or a managing representative's act,
        audited (never the code itself) in the transaction that stores its hash."""
        now = self.clock()
        with self.units() as uow:
            decision = self.policy.managed(uow, actor, patient_id, now)
            code = presence.new_code(uow, patient_id, actor.who, now)
            self.policy.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "presence-code",
                ACTION_CREATE,
                {"expires": rfc3339_ms(code.expires)},
                words=(
                    "Your representative made a presence code, which lets the professional "
                    "who receives it record a care event with you.",
                    "Votre représentant a créé un code de présence, qui permet au "
                    "professionnel qui le reçoit d'enregistrer une prise en charge.",
                ),
            )
            uow.commit()
        return code

    def declare_emergency(
        self, actor: Actor, patient_id: str, reason: str, *, alert: bool = False
    ) -> EmergencyWindow:
        """Break the glass: a window of ``emergency_window`` for this practitioner alone; the
        patient is told at once and the security officer alerted (both in this transaction).
        The API's recorder writes the alert with the request's entry; a caller without one
        (the workspace) asks for it here with ``alert``.

        The engine also weighs the professional's quota (``emergency_quota`` declarations over
        `EMERGENCY_QUOTA_PERIOD`), counted here from the stored declarations while the
        professional's row is locked: of two declarations racing for the last place, the
        second counts the first. Beyond it, Refused (with the alert: the recorder's, or here
        with ``alert``)."""
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("an emergency access needs a reason", expression="reason")
        if len(reason) > MAX_REASON:
            raise InvalidInput(
                f"the reason may hold at most {MAX_REASON} characters", expression="reason"
            )
        now = self.clock()
        with self.units() as uow:
            record = self.policy.facts(uow, patient_id, now)
            declared = uow.records.emergencies_declared(
                actor.subject.id, now - EMERGENCY_QUOTA_PERIOD
            )
            subject = replace(
                actor.subject, emergency_quota=EmergencyQuota(declared, self.emergency_quota)
            )
            # The gate made the same decision but for the quota; its alert obligation is
            # fulfilled by the recorder with the request's own entry
            # (`carevault.api.audit_trail`).
            decision = self.policy.decide(subject, Action.EMERGENCY, record, None, now)
            if not decision.permit:
                if alert and ALERT_SECURITY_OFFICER in decision.obligations:
                    self._refused_declaration(uow, actor, patient_id, decision, now)
                    uow.commit()
                raise Refused(decision)
            window = EmergencyWindow(actor.subject.id, now + self.emergency_window, new_id())
            uow.records.open_emergency(patient_id, window, reason, now)
            detail = {"emergency": window.id, "reason": reason, "until": rfc3339_ms(window.until)}
            entry = self.policy.audited_change(
                uow, actor, patient_id, decision, now, "emergency-access", ACTION_EXECUTE, detail
            )
            if alert and ALERT_SECURITY_OFFICER in decision.obligations:
                told = {**detail, "decision": "permit", "rule": decision.rule}
                self.audit.append_with(uow.audit, [replace(entry, kind="alert", detail=told)])
            self.policy.notify(
                uow,
                patient_id,
                "emergency-access",
                (
                    f"{actor.who} declared an emergency to open your record until "
                    f"{rfc3339_ms(window.until)}. Reason: {reason}",
                    f"{actor.who} a déclaré une urgence pour ouvrir votre dossier jusqu'au "
                    f"{rfc3339_ms(window.until)}. Motif : {reason}",
                ),
                actor,
                now,
                detail,
            )
            uow.commit()
        return window

    def _refused_declaration(
        self, uow: UnitOfWork, actor: Actor, patient_id: str, decision: Decision, now: datetime
    ) -> None:
        """The refused declaration's entry and the engine's alert beside it, for a caller that
        has no recorder of its own (the workspace)."""
        entry = AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(now),
            kind="policy",
            action=ACTION_EXECUTE,
            interaction="emergency-access",
            outcome="4",
            agent=actor.agent(None),
            patient=patient_id,
            purpose_of_use=purpose_of_use(decision),
            rule=" → ".join(decision.path),
            detail={"reason": decision.reason},
        )
        told = {**entry.detail, "decision": "deny", "rule": decision.rule}
        self.audit.append_with(uow.audit, [entry, replace(entry, kind="alert", detail=told)])

    def open_encounter(
        self, actor: Actor, encounter: StoredEncounter, presence_code: str | None = None
    ) -> Grant:
        """Store a practitioner's encounter and the care event it declares
        (`record_care_event`), in one transaction: both or neither."""
        with self.units() as uow:
            uow.records.add_encounter(encounter)
            grant = self.record_care_event(
                uow,
                actor,
                encounter.patient_id,
                encounter.id,
                encounter.period_start,
                encounter.created_at,
                presence_code,
            )
            uow.commit()
        return grant

    def record_care_event(
        self,
        uow: UnitOfWork,
        actor: Actor,
        patient_id: str,
        encounter_id: str,
        start: datetime,
        now: datetime,
        presence_code: str | None = None,
    ) -> Grant:
        """An encounter gives its practitioner a ``normal`` grant for ``care_relationship`` from
        its start, unless the patient blocked them, when it is proved (``actor.subject``'s
        ``care_proof``): by the organization's registered admission system, or by the
        patient's ``presence_code``, which is spent here. Runs inside the caller's transaction
        (the encounter is stored by the same unit of work)."""
        record = self.policy.facts(uow, patient_id, now)
        decision = self.policy.require(actor.subject, Action.CARE_EVENT, record, None, now)
        if actor.subject.care_proof is CareProof.PRESENCE_CODE:
            plain = normalize(presence_code or "")
            if plain is None or not uow.presence_codes.use(
                code_hash(patient_id, plain), patient_id, actor.who, now
            ):
                raise NotPermitted(
                    "the patient's presence code is wrong, used or expired: ask the patient "
                    "for a new one",
                    expression="Encounter.extension",
                )
        grant = Grant(
            Party.PRACTITIONER,
            actor.subject.id,
            GrantLevel.NORMAL,
            start,
            start + self.care_relationship,
            actor.who,
            False,
            new_id(),
            "care-event",
        )
        if grant.end is not None and grant.end <= now:
            raise BusinessRuleViolation(
                f"this encounter started more than {self.care_relationship.days} days ago and "
                "gives no access any more",
                expression="Encounter.period.start",
            )
        uow.records.ensure_record(patient_id, now)
        uow.records.add_grant(patient_id, grant, now, source_ref=f"Encounter/{encounter_id}")
        self.policy.audited_change(
            uow,
            actor,
            patient_id,
            decision,
            now,
            "care-event",
            ACTION_CREATE,
            {
                **grant_detail(grant),
                "encounter": f"Encounter/{encounter_id}",
                "proof": str(actor.subject.care_proof or ""),
            },
            entity=("Consent", grant.id),
            words=(
                f"{actor.who} recorded a care event with you, which gives them access to your "
                f"record until {rfc3339_ms(grant.end or now)}. You can withdraw it.",
                f"{actor.who} a enregistré une prise en charge, qui lui donne accès à votre "
                f"dossier jusqu'au {rfc3339_ms(grant.end or now)}. Vous pouvez le retirer.",
            ),
        )
        return grant
