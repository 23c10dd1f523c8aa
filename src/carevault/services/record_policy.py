"""The patient's say over their record: the facts the engine decides on, and the use cases that
change them.

Every decision is made by `carevault.domain.authorization` over facts loaded fresh, in one
query, for the request at hand: nothing is cached, so a revocation or a block applies to the very
next request. Every change runs in one transaction together with its audit entry and, when the
engine's obligations call for one, the notification to the patient (an outbox the portal and
the API read as FHIR ``Communication``): a crash leaves either all of it or none of it.

Who may change what is itself an engine decision (`Action.MANAGE`: the patient, or a
representative whose mandate lets them manage the record), so the portal, the CLI and the FHIR
``Consent`` resource cannot disagree about it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.record_store import UNSET, StoredBlock, StoredGrant, Unset
from carevault.domain.accounts import AccountKind, Mandate
from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_EXECUTE,
    ACTION_UPDATE,
    Agent,
    AuditRecord,
    rfc3339_ms,
)
from carevault.domain.authorization import (
    ALERT_SECURITY_OFFICER,
    NOTIFY_PATIENT,
    Action,
    Block,
    CareProof,
    Confidentiality,
    Decision,
    Delegation,
    DocumentFacts,
    DocumentFilter,
    EmergencyQuota,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Party,
    ProfileMatrix,
    RecordFacts,
    RecordModel,
    RecordState,
    Subject,
    SubjectKind,
    decide,
    visible_filter,
)
from carevault.domain.errors import BusinessRuleViolation, InvalidInput, NotFound, NotPermitted
from carevault.domain.records import StoredEncounter
from carevault.fhirmodel.directory import LICENCE_STATUS_URL
from carevault.services import presence
from carevault.services.presence import PresenceCode, code_hash, normalize
from carevault.services.unit_of_work import UnitOfWork

CARE_RELATIONSHIP = timedelta(days=90)  # ELGA's default for a care contact
EMERGENCY_WINDOW = timedelta(hours=24)
# The emergencies one professional may declare over `EMERGENCY_QUOTA_PERIOD` (the setting
# ``emergency_quota``, which says why five).
EMERGENCY_QUOTA = 5
EMERGENCY_QUOTA_PERIOD = timedelta(hours=24)
MAX_REASON = 1_000
_SUCCESS = "0"


class AuditAppender(Protocol):
    def append_with(self, store: AuditStore, records: Sequence[AuditRecord]) -> list[int]: ...


class Refused(NotPermitted):
    """The engine said no: the decision travels with the error, so that the refusal is recorded
    with its rule and the caller reads the reason in plain words (what they may be told:
    `Decision.told`, or ``told`` instead when the request names a document they may not see)."""

    def __init__(
        self, decision: Decision, language: str = "en", *, told: str | None = None
    ) -> None:
        super().__init__(told or decision.told[language], issue_code="forbidden")
        self.decision = decision


def unseen(what: str) -> str:
    """What the caller of a write is told when the document it names is not theirs to read:
    nothing of the document's state (hidden, secret, restricted, of a class their profession
    may not see), which would tell them what the patient or the author keep from them."""
    return f"the document to {what} is not one you may see"


def require_visible(
    subject: Subject,
    record: RecordFacts | None,
    document: DocumentFacts,
    now: datetime,
    matrix: ProfileMatrix,
    what: str,
) -> Decision:
    """A write that names an existing document (to replace it, retract it, release it, hide it
    or change its confidentiality) is decided first as a read of that document by the same
    caller, exactly as a read is: nobody changes what they may not see. The refusal carries the
    engine's decision, for the audit, and tells the caller only `unseen`."""
    decision = decide(subject, Action.READ, record, document, now, matrix)
    if not decision.permit:
        raise Refused(decision, told=unseen(what))
    return decision


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, as the audit names them."""

    subject: Subject
    who: str  # an identity reference: account:<id>, Practitioner/<id>
    network: str | None = None
    organization: str | None = None

    def agent(self, on_behalf_of: str | None = None) -> Agent:
        """The audit entry's agent: this actor, acting for ``on_behalf_of`` if given."""
        return Agent(
            who=self.who,
            role=self.subject.kind.value,
            organization=self.organization,
            network=self.network,
            on_behalf_of=on_behalf_of,
        )


# --- who is asking ---------------------------------------------------------------------------


# Professions whose members act only under a practitioner's mandate (PRODUCT.md, rule 8): the
# directory's `carevault.domain.mandates.AssistantMandate` names who they act for; without one
# in force the engine refuses them by rule 1 (identity-assistant).
ASSISTANT_PROFESSIONS = frozenset({"medical-assistant"})


def practitioner_subject(
    uow: UnitOfWork,
    practitioner_id: str,
    organization_id: str | None = None,
    *,
    now: datetime | None = None,
    mandator_id: str | None = None,
) -> Subject:
    """A practitioner as the directory describes them at ``now``: the profession and specialty
    of their role at ``organization_id`` (when a system acts for them) or of their first active
    role, every organization they work for and the care teams they are an active member of.

    An assistant (`ASSISTANT_PROFESSIONS`) is described with their mandator: the practitioner
    whose mandate is in force (``mandator_id`` chooses among several; with several and no
    choice, none is assumed and the engine refuses), with that practitioner's licence as the
    directory holds it now. The assistant's own licence and revocation were checked with the
    token."""
    moment = now if now is not None else datetime.now(UTC)
    subject = _described(uow, practitioner_id, organization_id, moment)
    if subject.kind is not SubjectKind.ASSISTANT:
        return subject
    mandates = [
        m
        for m in uow.directory.active_mandates(practitioner_id, moment)
        if mandator_id is None or m.mandator_id == mandator_id
    ]
    if len({m.mandator_id for m in mandates}) != 1:
        return subject
    mandate = mandates[0]
    mandator = _described(uow, mandate.mandator_id, None, moment)
    if mandator.kind is not SubjectKind.PRACTITIONER:
        return subject  # an assistant's mandate to another assistant gives nothing
    stored = uow.directory.practitioner(mandate.mandator_id)
    mandator = replace(mandator, licence_active=stored is not None and licensed(stored.resource))
    classes = None
    for m in mandates:  # several mandates of one practitioner: the widest
        if m.classes is None:
            classes = None
            break
        classes = (classes or frozenset()) | m.classes
    return replace(subject, mandator=mandator, mandate_classes=classes)


def _described(
    uow: UnitOfWork, practitioner_id: str, organization_id: str | None, now: datetime
) -> Subject:
    profession: str | None = None
    specialty: str | None = None
    organizations: set[str] = set()
    chosen = False
    for role in uow.directory.active_roles(practitioner_id):
        org = role.organization_id or ""
        if org:
            organizations.add(org)
        if chosen and org != organization_id:
            continue
        profession, specialty = role.profession, role.specialty
        chosen = chosen or organization_id is None or org == organization_id
    return Subject(
        SubjectKind.ASSISTANT if profession in ASSISTANT_PROFESSIONS else SubjectKind.PRACTITIONER,
        practitioner_id,
        profession,
        specialty,
        organization_ids=frozenset(organizations),
        care_team_ids=uow.directory.care_team_ids(practitioner_id, now),
    )


# --- the record's settings, changed together ------------------------------------------------

_WORDS: dict[str, tuple[str, str]] = {
    "referring-physician": (
        "Your representative changed your referring physician.",
        "Votre représentant a changé votre médecin référent.",
    ),
    "default-confidentiality": (
        "Your representative changed the default confidentiality of new documents.",
        "Votre représentant a modifié la confidentialité par défaut des nouveaux documents.",
    ),
    "emergency-setting": (
        "Your representative changed the emergency access setting.",
        "Votre représentant a modifié le réglage de l'accès d'urgence.",
    ),
    "delegation-setting": (
        "Your representative changed whether professionals may pass on their access.",
        "Votre représentant a modifié la possibilité pour les professionnels de déléguer "
        "leur accès.",
    ),
    "record-close": (
        "Your representative closed your record.",
        "Votre représentant a fermé votre dossier.",
    ),
    "record-reopen": (
        "Your representative reopened your record.",
        "Votre représentant a rouvert votre dossier.",
    ),
    "record-open": ("Your record was opened.", "Votre dossier a été ouvert."),
}


@dataclass(frozen=True)
class RecordOverview:
    record: RecordFacts
    opened: bool  # False only under opt-in, before the patient opens their record
    grants: tuple[StoredGrant, ...]
    mandates: tuple[Mandate, ...]
    blocks: tuple[StoredBlock, ...] = ()


@dataclass(frozen=True)
class RecordChange:
    """The settings of a record to change together; None (UNSET for the referring physician,
    where None removes them) leaves a setting as it is."""

    state: RecordState | None = None
    referring_physician: str | Unset | None = UNSET
    default_confidentiality: Confidentiality | None = None
    emergency_setting: EmergencySetting | None = None
    delegation_allowed: bool | None = None

    def is_empty(self) -> bool:
        return self == RecordChange()

    def entries(
        self, before: RecordFacts, unopened: bool
    ) -> list[tuple[str, dict[str, str], tuple[str, str]]]:
        """One audit entry per setting changed: its interaction, detail and words."""
        found: list[tuple[str, dict[str, str]]] = []
        if self.state is not None:
            if unopened:
                found.append(("record-open", {"state": self.state.value}))
            elif self.state is not before.state:
                closing = self.state is RecordState.CLOSED
                found.append(
                    ("record-close" if closing else "record-reopen", {"state": self.state.value})
                )
        if not isinstance(self.referring_physician, Unset):
            named = self.referring_physician or ""
            found.append(("referring-physician", {"referring_physician": named}))
        if self.default_confidentiality is not None:
            found.append(
                (
                    "default-confidentiality",
                    {"default_confidentiality": self.default_confidentiality.value},
                )
            )
        if self.emergency_setting is not None:
            found.append(("emergency-setting", {"emergency_setting": self.emergency_setting.value}))
        if self.delegation_allowed is not None:
            found.append(
                (
                    "delegation-setting",
                    {"delegation_allowed": "true" if self.delegation_allowed else "false"},
                )
            )
        return [(name, detail, _WORDS[name]) for name, detail in found]


def licensed(resource: dict[str, Any]) -> bool:
    status = next(
        (
            e.get("valueCode")
            for e in resource.get("extension", [])
            if isinstance(e, dict) and e.get("url") == LICENCE_STATUS_URL
        ),
        "active",
    )
    return bool(resource.get("active", True)) and status == "active"


# --- the service -----------------------------------------------------------------------------


def _new_id() -> str:
    return uuid.uuid4().hex


class RecordPolicy:
    """Decisions over stored facts, and the changes a patient (or their representative) makes."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditAppender,
        *,
        clock: Callable[[], datetime],
        matrix: ProfileMatrix,
        care_relationship: timedelta = CARE_RELATIONSHIP,
        emergency_window: timedelta = EMERGENCY_WINDOW,
        emergency_quota: int = EMERGENCY_QUOTA,
    ) -> None:
        self.units = units
        self.audit = audit
        self.clock = clock
        self.matrix = matrix
        self.care_relationship = care_relationship
        self.emergency_window = emergency_window
        self.emergency_quota = emergency_quota

    # --- decisions --------------------------------------------------------------------------

    def facts(
        self, uow: UnitOfWork, patient_id: str, now: datetime, *, opening: bool = False
    ) -> RecordFacts | None:
        """The record's facts, or None when there is none. ``opening``: under opt-in, a
        patient's record they have not opened yet is a closed one (only they can open it)
        rather than none."""
        record = uow.records.load(patient_id, now)
        if record is None and opening and uow.records.unopened(patient_id, now):
            return RecordFacts(patient_id, RecordState.CLOSED, RecordModel.OPT_IN)
        return record

    def decide(
        self,
        subject: Subject,
        action: Action,
        record: RecordFacts | None,
        document: DocumentFacts | None,
        now: datetime,
    ) -> Decision:
        return decide(subject, action, record, document, now, self.matrix)

    def require(
        self,
        subject: Subject,
        action: Action,
        record: RecordFacts | None,
        document: DocumentFacts | None,
        now: datetime,
    ) -> Decision:
        decision = self.decide(subject, action, record, document, now)
        if not decision.permit:
            raise Refused(decision)
        return decision

    def permitted_record(
        self, uow: UnitOfWork, subject: Subject, patient_id: str, action: Action, now: datetime
    ) -> RecordFacts:
        """The record's facts, once the engine lets ``subject`` do ``action`` on it; Refused
        otherwise (the engine permits nothing on a record that is not there)."""
        record = self.facts(uow, patient_id, now)
        self.require(subject, action, record, None, now)
        assert record is not None
        return record

    def unopened(self, patient_id: str) -> bool:
        """Whether the patient, under opt-in, has not opened their record yet (it stays closed
        until they do)."""
        with self.units() as uow:
            return uow.records.unopened(patient_id, self.clock())

    def permitted_now(self, subject: Subject, patient_id: str, action: Action) -> RecordFacts:
        """`permitted_record` now, in a read of its own (a page that decides before it reads
        through other services)."""
        with self.units() as uow:
            return self.permitted_record(uow, subject, patient_id, action, self.clock())

    def check(self, actor: Actor, patient_id: str, action: Action) -> Decision:
        """The engine's word on ``actor`` doing ``action`` on the record now; Refused if no
        (a page that only prepares a change asks before showing anything)."""
        now = self.clock()
        with self.units() as uow:
            record = self.facts(uow, patient_id, now, opening=True)
            return self.require(actor.subject, action, record, None, now)

    def visible(
        self, subject: Subject, record: RecordFacts | None, now: datetime
    ) -> DocumentFilter:
        return visible_filter(subject, record, now, self.matrix)

    def explain(
        self, practitioner_id: str, patient_id: str, document_id: str | None = None
    ) -> Decision:
        """The rule path for one practitioner reading one record (or one of its documents)."""
        now = self.clock()
        with self.units() as uow:
            if uow.directory.read(t.practitioner, practitioner_id) is None:
                raise NotFound(f"Practitioner/{practitioner_id} is not in the directory")
            subject = practitioner_subject(uow, practitioner_id, now=now)
            record = self.facts(uow, patient_id, now)
            document = None
            if document_id is not None:
                document = uow.records.document(patient_id, document_id)
                if document is None:
                    raise NotFound(
                        f"document {document_id} is not in Patient/{patient_id}'s record"
                    )
        return self.decide(subject, Action.READ, record, document, now)

    # --- changes made by the patient or a representative ------------------------------------

    def _managed(self, uow: UnitOfWork, actor: Actor, patient_id: str, now: datetime) -> Decision:
        record = self.facts(uow, patient_id, now)
        return self.require(actor.subject, Action.MANAGE, record, None, now)

    def _change(
        self,
        uow: UnitOfWork,
        actor: Actor,
        patient_id: str,
        decision: Decision,
        now: datetime,
        interaction: str,
        action: str,
        detail: dict[str, str],
        *,
        entity: tuple[str, str] | None = None,
        words: tuple[str, str] | None = None,
    ) -> AuditRecord:
        """Audit a change in its transaction, and tell the patient when a representative made
        it (the engine's obligation); the entry written."""
        record = AuditRecord(
            stream="clinical",
            recorded=rfc3339_ms(now),
            kind="policy",
            action=action,
            interaction=interaction,
            outcome=_SUCCESS,
            agent=actor.agent(
                f"Patient/{patient_id}"
                if actor.subject.kind is SubjectKind.REPRESENTATIVE
                else None
            ),
            patient=patient_id,
            entity_type=entity[0] if entity else None,
            entity_id=entity[1] if entity else None,
            purpose_of_use=purpose_of_use(decision),
            rule=" → ".join(decision.path),
            detail=detail,
        )
        self.audit.append_with(uow.audit, [record])
        if NOTIFY_PATIENT in decision.obligations and words is not None:
            self._notify(uow, patient_id, interaction, words, actor, now, detail)
        return record

    def _notify(
        self,
        uow: UnitOfWork,
        patient_id: str,
        kind: str,
        words: tuple[str, str],
        actor: Actor,
        now: datetime,
        detail: dict[str, str],
    ) -> str:
        payload = {"en": words[0], "fr": words[1], "sender": actor.who, **detail}
        return uow.records.notify(patient_id, kind, payload, now)

    def grant(
        self,
        actor: Actor,
        patient_id: str,
        party: Party,
        party_id: str,
        level: GrantLevel,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        delegable: bool = False,
    ) -> Grant:
        now = self.clock()
        start = start or now
        if end is not None and end <= start:
            raise InvalidInput("a grant must end after it starts", expression="end")
        if party is not Party.PRACTITIONER and end is None:
            raise BusinessRuleViolation(
                "a grant to an organization or a care team needs an end date", expression="end"
            )
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            self._require_party(uow, party, party_id)
            source = (
                "representative" if actor.subject.kind is SubjectKind.REPRESENTATIVE else "patient"
            )
            grant = Grant(
                party, party_id, level, start, end, actor.who, delegable, _new_id(), source
            )
            uow.records.ensure_record(patient_id, now)
            uow.records.add_grant(patient_id, grant, now)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "grant-create",
                ACTION_CREATE,
                _grant_detail(grant),
                entity=("Consent", grant.id),
                words=(
                    f"Your representative gave {party.value} {party_id} {level.value} access "
                    "to your record.",
                    f"Votre représentant a donné un accès {level.value} à votre dossier à "
                    f"{party_id}.",
                ),
            )
            uow.commit()
        return grant

    def revoke_grant(self, actor: Actor, patient_id: str, grant_id: str) -> None:
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            if not uow.records.revoke_grant(patient_id, grant_id, now, actor.who):
                raise NotFound(f"there is no active grant {grant_id} on this record")
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "grant-revoke",
                ACTION_DELETE,
                {"grant": grant_id},
                entity=("Consent", grant_id),
                words=(
                    "Your representative withdrew an access to your record.",
                    "Votre représentant a retiré un accès à votre dossier.",
                ),
            )
            uow.commit()

    def change_grant(
        self,
        actor: Actor,
        patient_id: str,
        grant_id: str,
        *,
        level: GrantLevel | None = None,
        end: datetime | Unset | None = UNSET,
    ) -> None:
        """Change a grant's level and/or end; ``end=None`` removes the end date (a
        practitioner's grant only), leaving ``end`` out keeps it."""
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            stored = uow.records.grant(patient_id, grant_id)
            if stored is None or stored.revoked_at is not None:
                raise NotFound(f"there is no active grant {grant_id} on this record")
            if isinstance(end, datetime) and end <= stored.grant.start:
                raise InvalidInput("a grant must end after it starts", expression="end")
            if end is None and stored.grant.party is not Party.PRACTITIONER:
                raise BusinessRuleViolation(
                    "a grant to an organization or a care team needs an end date",
                    expression="end",
                )
            uow.records.update_grant(patient_id, grant_id, level=level, end=end)
            detail = {"grant": grant_id}
            if level is not None:
                detail["level"] = level.value
            if not isinstance(end, Unset):
                detail["end"] = rfc3339_ms(end) if end is not None else "none"
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "grant-change",
                ACTION_UPDATE,
                detail,
                entity=("Consent", grant_id),
                words=(
                    "Your representative changed an access to your record.",
                    "Votre représentant a modifié un accès à votre dossier.",
                ),
            )
            uow.commit()

    def block(self, actor: Actor, patient_id: str, party: Party, party_id: str) -> Block:
        if party is Party.CARE_TEAM:
            raise InvalidInput("block a professional or an organization", expression="party")
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            self._require_party(uow, party, party_id)
            block = Block(party, party_id, _new_id())
            uow.records.ensure_record(patient_id, now)
            uow.records.add_block(patient_id, block, now, actor.who)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "block-create",
                ACTION_CREATE,
                {"block": block.id, "party": party.value, "party_id": party_id},
                entity=("Consent", block.id),
                words=(
                    f"Your representative blocked {party_id} from your record.",
                    f"Votre représentant a bloqué l'accès de {party_id} à votre dossier.",
                ),
            )
            uow.commit()
        return block

    def unblock(self, actor: Actor, patient_id: str, block_id: str) -> None:
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            if not uow.records.revoke_block(patient_id, block_id, now, actor.who):
                raise NotFound(f"there is no active block {block_id} on this record")
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "block-revoke",
                ACTION_DELETE,
                {"block": block_id},
                entity=("Consent", block_id),
                words=(
                    "Your representative lifted a block on your record.",
                    "Votre représentant a levé un blocage sur votre dossier.",
                ),
            )
            uow.commit()

    def set_emergency_setting(
        self, actor: Actor, patient_id: str, setting: EmergencySetting
    ) -> None:
        self._update_record(
            actor,
            patient_id,
            "emergency-setting",
            {"emergency_setting": setting.value},
            (
                f"Your representative set emergency access to '{setting.value}'.",
                f"Votre représentant a réglé l'accès d'urgence sur « {setting.value} ».",
            ),
            emergency_setting=setting,
        )

    def name_referring_physician(
        self, actor: Actor, patient_id: str, practitioner_id: str | None
    ) -> None:
        if practitioner_id is not None:
            with self.units() as uow:
                self._require_party(uow, Party.PRACTITIONER, practitioner_id)
        self._update_record(
            actor,
            patient_id,
            "referring-physician",
            {"referring_physician": practitioner_id or ""},
            (
                "Your representative changed your referring physician.",
                "Votre représentant a changé votre médecin référent.",
            ),
            referring_physician_id=practitioner_id,
        )

    def allow_delegation(self, actor: Actor, patient_id: str, allowed: bool) -> None:
        self._update_record(
            actor,
            patient_id,
            "delegation-setting",
            {"delegation_allowed": "true" if allowed else "false"},
            (
                "Your representative changed whether professionals may pass on their access.",
                "Votre représentant a modifié la possibilité pour les professionnels de "
                "déléguer leur accès.",
            ),
            delegation_allowed=allowed,
        )

    def set_default_confidentiality(
        self, actor: Actor, patient_id: str, level: Confidentiality
    ) -> None:
        self._update_record(
            actor,
            patient_id,
            "default-confidentiality",
            {"default_confidentiality": level.value},
            (
                "Your representative changed the default confidentiality of new documents.",
                "Votre représentant a modifié la confidentialité par défaut des nouveaux "
                "documents.",
            ),
            default_confidentiality=level,
        )

    def close_record(self, actor: Actor, patient_id: str) -> None:
        self._update_record(
            actor,
            patient_id,
            "record-close",
            {"state": RecordState.CLOSED.value},
            (
                "Your representative closed your record.",
                "Votre représentant a fermé votre dossier.",
            ),
            state=RecordState.CLOSED,
        )

    def reopen_record(self, actor: Actor, patient_id: str) -> None:
        self._update_record(
            actor,
            patient_id,
            "record-reopen",
            {"state": RecordState.ACTIVE.value},
            (
                "Your representative reopened your record.",
                "Votre représentant a rouvert votre dossier.",
            ),
            state=RecordState.ACTIVE,
        )

    def change_record(self, actor: Actor, patient_id: str, change: RecordChange) -> RecordFacts:
        """Change several settings of the record at once, in one transaction, each change its
        own audit entry: the referring physician, the default confidentiality of new
        documents, the emergency setting, delegation, and the state (closing is the
        patient's objection; ``active`` reopens a closed record or, under opt-in, opens it).
        Returns the record's facts afterwards."""
        if change.is_empty():
            raise InvalidInput("name at least one setting to change")
        now = self.clock()
        with self.units() as uow:
            opening = change.state is RecordState.ACTIVE
            record = self.facts(uow, patient_id, now, opening=True)
            decision = self.require(actor.subject, Action.MANAGE, record, None, now)
            assert record is not None  # the engine refuses a missing record
            unopened = uow.records.unopened(patient_id, now)
            if unopened and not opening:
                raise BusinessRuleViolation(
                    "this record is not open yet: open it first (state 'active')",
                    expression="state",
                )
            if isinstance(change.referring_physician, str):
                self._require_party(uow, Party.PRACTITIONER, change.referring_physician)
            uow.records.update_record(
                patient_id,
                now,
                state=change.state,
                referring_physician_id=change.referring_physician,
                emergency_setting=change.emergency_setting,
                delegation_allowed=change.delegation_allowed,
                default_confidentiality=change.default_confidentiality,
            )
            for interaction, detail, words in change.entries(record, unopened):
                self._change(
                    uow,
                    actor,
                    patient_id,
                    decision,
                    now,
                    interaction,
                    ACTION_UPDATE,
                    detail,
                    entity=("Patient", patient_id),
                    words=words,
                )
            after = uow.records.load(patient_id, now)
            uow.commit()
        assert after is not None
        return after

    def overview(self, actor: Actor, patient_id: str) -> RecordOverview:
        """What the patient's "who can see my record" page shows: the settings, the grants and
        blocks in force, and every mandate (the engine's personal reading)."""
        now = self.clock()
        with self.units() as uow:
            record = self.facts(uow, patient_id, now, opening=True)
            self.require(actor.subject, Action.PERSONAL, record, None, now)
            assert record is not None
            return RecordOverview(
                record=record,
                opened=not uow.records.unopened(patient_id, now),
                grants=tuple(g for g in uow.records.grants(patient_id) if g.revoked_at is None),
                mandates=tuple(uow.accounts.mandates_for(patient_id)),
                blocks=tuple(uow.records.blocks(patient_id)),
            )

    def representatives(self, actor: Actor, patient_id: str) -> list[Mandate]:
        """Every mandate on the record, ended ones too, for the patient or a representative
        (the engine's personal reading)."""
        now = self.clock()
        with self.units() as uow:
            record = self.facts(uow, patient_id, now, opening=True)
            self.require(actor.subject, Action.PERSONAL, record, None, now)
            return uow.accounts.mandates_for(patient_id)

    def name_representative(
        self,
        actor: Actor,
        patient_id: str,
        login: str,
        scope: MandateScope,
        *,
        end: datetime | None = None,
    ) -> Mandate:
        """The patient names a representative by the login of their representative's account
        (the person opened it at the desk, with their own identity checked)."""
        with self.units() as uow:
            account = uow.accounts.by_login(login.strip())
        if account is None or account.kind is not AccountKind.REPRESENTATIVE:
            raise NotFound("no representative's account has this login", expression="login")
        return self.add_representative(actor, patient_id, account.id, scope, end=end)

    def limit_representative(
        self,
        actor: Actor,
        patient_id: str,
        mandate_id: str,
        scope: MandateScope,
        end: datetime | None,
    ) -> None:
        """Change a mandate in force: its scope (read or manage) and its end."""
        now = self.clock()
        if end is not None and end <= now:
            raise InvalidInput("the end of a mandate is in the future", expression="end")
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            own = [
                m
                for m in uow.accounts.mandates_for(patient_id)
                if m.id == mandate_id and m.representative_account_id == actor.subject.id
            ]
            if actor.subject.kind is SubjectKind.REPRESENTATIVE and own:
                raise NotPermitted("a representative does not change their own mandate")
            if not uow.accounts.limit_mandate(patient_id, mandate_id, scope.value, end, now):
                raise NotFound(f"there is no mandate {mandate_id} in force on this record")
            uow.records.ensure_record(patient_id, now)
            detail = {"mandate": mandate_id, "scope": scope.value}
            if end is not None:
                detail["end"] = rfc3339_ms(end)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-limit",
                ACTION_UPDATE,
                detail,
                words=(
                    "Your representative changed a representative's mandate.",
                    "Votre représentant a modifié le mandat d'un représentant.",
                ),
            )
            uow.commit()

    def _update_record(
        self,
        actor: Actor,
        patient_id: str,
        interaction: str,
        detail: dict[str, str],
        words: tuple[str, str],
        **fields: Any,
    ) -> None:
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            uow.records.update_record(patient_id, now, **fields)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                interaction,
                ACTION_UPDATE,
                detail,
                entity=("Patient", patient_id),
                words=words,
            )
            uow.commit()

    def _managed_document(
        self, uow: UnitOfWork, actor: Actor, patient_id: str, document_id: str, now: datetime
    ) -> Decision:
        """Managing one document: the record's manager, who may also read that document (a
        representative does not relabel a secret document to read it, a patient does not hide
        what their doctor has not yet released to them)."""
        record = self.facts(uow, patient_id, now)
        decision = self.require(actor.subject, Action.MANAGE, record, None, now)
        document = uow.records.document(patient_id, document_id)
        if document is None:
            raise NotFound(f"document {document_id} is not in this record")
        require_visible(actor.subject, record, document, now, self.matrix, "change")
        return decision

    def hide_document(self, actor: Actor, patient_id: str, document_id: str, hidden: bool) -> None:
        now = self.clock()
        with self.units() as uow:
            decision = self._managed_document(uow, actor, patient_id, document_id, now)
            if not uow.records.set_document_hidden(patient_id, document_id, hidden):
                raise NotFound(f"document {document_id} is not in this record")
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "document-hide" if hidden else "document-unhide",
                ACTION_UPDATE,
                {"document": document_id},
                entity=("DocumentReference", document_id),
                words=(
                    "Your representative changed who can see one of your documents.",
                    "Votre représentant a modifié qui peut voir l'un de vos documents.",
                ),
            )
            uow.commit()

    def set_document_confidentiality(
        self, actor: Actor, patient_id: str, document_id: str, level: Confidentiality
    ) -> None:
        now = self.clock()
        with self.units() as uow:
            decision = self._managed_document(uow, actor, patient_id, document_id, now)
            if not uow.records.set_document_confidentiality(patient_id, document_id, level):
                raise NotFound(f"document {document_id} is not in this record")
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "document-confidentiality",
                ACTION_UPDATE,
                {"document": document_id, "confidentiality": level.value},
                entity=("DocumentReference", document_id),
                words=(
                    "Your representative changed the confidentiality of one of your documents.",
                    "Votre représentant a modifié la confidentialité de l'un de vos documents.",
                ),
            )
            uow.commit()

    def add_representative(
        self,
        actor: Actor,
        patient_id: str,
        account_id: str,
        scope: MandateScope,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Mandate:
        """Name a person (a representative's account) to read or manage the record."""
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            store = uow.accounts
            account = store.by_id(account_id)
            if account is None or account.kind is not AccountKind.REPRESENTATIVE:
                raise NotFound(f"account:{account_id} is not a representative's account")
            if actor.subject.kind is SubjectKind.REPRESENTATIVE and account_id == actor.subject.id:
                raise NotPermitted("a representative does not give themselves a mandate")
            if end is not None and end <= (start or now):
                raise InvalidInput("the end of a mandate comes after its start", expression="end")
            mandate = Mandate(_new_id(), account_id, patient_id, scope.value, start or now, end)
            store.add_mandate(mandate, now)
            uow.records.ensure_record(patient_id, now)  # marks the record as written
            detail = {
                "mandate": mandate.id,
                "representative": f"account:{account_id}",
                "scope": scope.value,
            }
            if end is not None:
                detail["end"] = rfc3339_ms(end)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-create",
                ACTION_CREATE,
                detail,
                words=(
                    "Your representative named another representative for you.",
                    "Votre représentant vous a désigné un autre représentant.",
                ),
            )
            uow.commit()
        return mandate

    def remove_representative(self, actor: Actor, patient_id: str, mandate_id: str) -> None:
        """End a mandate now; the representative is refused from the very next request."""
        now = self.clock()
        with self.units() as uow:
            decision = self._managed(uow, actor, patient_id, now)
            if not uow.accounts.end_mandate(patient_id, mandate_id, now):
                raise NotFound(f"there is no mandate {mandate_id} in force on this record")
            uow.records.ensure_record(patient_id, now)
            self._change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "mandate-end",
                ACTION_DELETE,
                {"mandate": mandate_id},
                words=(
                    "Your representative ended a representative's mandate.",
                    "Votre représentant a mis fin au mandat d'un représentant.",
                ),
            )
            uow.commit()

    # --- what professionals do --------------------------------------------------------------

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
            record = self.facts(uow, patient_id, now)
            decision = self.require(actor.subject, Action.READ, record, None, now)
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
            self._require_party(uow, Party.PRACTITIONER, delegate_id)
            delegation = Delegation(actor.subject.id, delegate_id, level, now, end, _new_id())
            uow.records.add_delegation(patient_id, delegation, now)
            self._change(
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
            record = self.facts(uow, patient_id, now)
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
                decision = self.decide(subject, Action.READ, record, None, now)
                by = "delegator"
            else:
                decision = self.require(subject, Action.MANAGE, record, None, now)
                by = "record"
            if found is None or not uow.records.revoke_delegation(patient_id, found.id, now):
                raise NotFound(f"there is no delegation {delegation_id} in force on this record")
            self._change(
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
            decision = self._managed(uow, actor, patient_id, now)
            code = presence.new_code(uow, patient_id, actor.who, now)
            self._change(
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
            record = self.facts(uow, patient_id, now)
            declared = uow.records.emergencies_declared(
                actor.subject.id, now - EMERGENCY_QUOTA_PERIOD
            )
            subject = replace(
                actor.subject, emergency_quota=EmergencyQuota(declared, self.emergency_quota)
            )
            # The gate made the same decision but for the quota; its alert obligation is
            # fulfilled by the recorder with the request's own entry
            # (`carevault.api.audit_trail`).
            decision = self.decide(subject, Action.EMERGENCY, record, None, now)
            if not decision.permit:
                if alert and ALERT_SECURITY_OFFICER in decision.obligations:
                    self._refused_declaration(uow, actor, patient_id, decision, now)
                    uow.commit()
                raise Refused(decision)
            window = EmergencyWindow(actor.subject.id, now + self.emergency_window, _new_id())
            uow.records.open_emergency(patient_id, window, reason, now)
            detail = {"emergency": window.id, "reason": reason, "until": rfc3339_ms(window.until)}
            entry = self._change(
                uow, actor, patient_id, decision, now, "emergency-access", ACTION_EXECUTE, detail
            )
            if alert and ALERT_SECURITY_OFFICER in decision.obligations:
                told = {**detail, "decision": "permit", "rule": decision.rule}
                self.audit.append_with(uow.audit, [replace(entry, kind="alert", detail=told)])
            self._notify(
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
        record = self.facts(uow, patient_id, now)
        decision = self.require(actor.subject, Action.CARE_EVENT, record, None, now)
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
            _new_id(),
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
        self._change(
            uow,
            actor,
            patient_id,
            decision,
            now,
            "care-event",
            ACTION_CREATE,
            {
                **_grant_detail(grant),
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

    # --- helpers ----------------------------------------------------------------------------

    def _require_party(self, uow: UnitOfWork, party: Party, party_id: str) -> None:
        table = {Party.PRACTITIONER: t.practitioner, Party.ORGANIZATION: t.organization}.get(party)
        if table is not None and uow.directory.read(table, party_id) is None:
            kind = "Practitioner" if party is Party.PRACTITIONER else "Organization"
            raise NotFound(f"{kind}/{party_id} is not in the directory")


def purpose_of_use(decision: Decision) -> str | None:
    """The purpose of use the engine's audit obligation names, for the access's entry."""
    for obligation in decision.obligations:
        if obligation.kind == "audit":
            return obligation.purpose_of_use
    return None


def _grant_detail(grant: Grant) -> dict[str, str]:
    detail = {
        "grant": grant.id,
        "party": grant.party.value,
        "party_id": grant.party_id,
        "level": grant.level.value,
        "start": rfc3339_ms(grant.start),
    }
    if grant.end is not None:
        detail["end"] = rfc3339_ms(grant.end)
    return detail
