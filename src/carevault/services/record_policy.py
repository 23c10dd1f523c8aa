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

from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.record_store import UNSET, StoredBlock, StoredGrant, Unset
from carevault.domain.accounts import Mandate
from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_UPDATE,
    Agent,
    AuditRecord,
    rfc3339_ms,
)
from carevault.domain.authorization import (
    NOTIFY_PATIENT,
    Action,
    Block,
    Confidentiality,
    Decision,
    DocumentFacts,
    DocumentFilter,
    EmergencySetting,
    Grant,
    GrantLevel,
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
from carevault.domain.directory import DirectoryType
from carevault.domain.errors import BusinessRuleViolation, InvalidInput, NotFound, NotPermitted
from carevault.fhirmodel.directory import LICENCE_STATUS_URL
from carevault.services.unit_of_work import UnitOfWork

CARE_RELATIONSHIP = timedelta(days=90)  # ELGA's default for a care contact
EMERGENCY_WINDOW = timedelta(hours=24)
# The emergencies one professional may declare over `EMERGENCY_QUOTA_PERIOD` (the setting
# ``emergency_quota``, which says why five).
EMERGENCY_QUOTA = 5
EMERGENCY_QUOTA_PERIOD = timedelta(hours=24)
MAX_REASON = 1_000
# The longest a grant to an organization or a care team may run: it must end (everyone who
# joins the group later would read the record), and an end in 9999 would be no end at all.
# Five years of 366 days, and the day the portal's latest end date runs through.
MAX_GROUP_GRANT = timedelta(days=5 * 366 + 1)
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


def new_id() -> str:
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
    ) -> None:
        self.units = units
        self.audit = audit
        self.clock = clock
        self.matrix = matrix

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
            if uow.directory.read("Practitioner", practitioner_id) is None:
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

    # --- the steps every change takes (here and in `representatives`, `care_access`) ---------

    def managed(self, uow: UnitOfWork, actor: Actor, patient_id: str, now: datetime) -> Decision:
        record = self.facts(uow, patient_id, now)
        return self.require(actor.subject, Action.MANAGE, record, None, now)

    def audited_change(
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
            self.notify(uow, patient_id, interaction, words, actor, now, detail)
        return record

    def notify(
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

    def require_party(self, uow: UnitOfWork, party: Party, party_id: str) -> None:
        """A grantee, delegate or referring physician must be in the directory."""
        kinds: dict[Party, DirectoryType] = {
            Party.PRACTITIONER: "Practitioner",
            Party.ORGANIZATION: "Organization",
        }
        kind = kinds.get(party)
        if kind is not None and uow.directory.read(kind, party_id) is None:
            raise NotFound(f"{kind}/{party_id} is not in the directory")

    # --- changes made by the patient or a representative ------------------------------------

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
        if party is not Party.PRACTITIONER:
            _check_group_end(start, end)
        with self.units() as uow:
            decision = self.managed(uow, actor, patient_id, now)
            self.require_party(uow, party, party_id)
            source = (
                "representative" if actor.subject.kind is SubjectKind.REPRESENTATIVE else "patient"
            )
            grant = Grant(
                party, party_id, level, start, end, actor.who, delegable, new_id(), source
            )
            uow.records.ensure_record(patient_id, now)
            uow.records.add_grant(patient_id, grant, now)
            self.audited_change(
                uow,
                actor,
                patient_id,
                decision,
                now,
                "grant-create",
                ACTION_CREATE,
                grant_detail(grant),
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
            decision = self.managed(uow, actor, patient_id, now)
            if not uow.records.revoke_grant(patient_id, grant_id, now, actor.who):
                raise NotFound(f"there is no active grant {grant_id} on this record")
            self.audited_change(
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
            decision = self.managed(uow, actor, patient_id, now)
            stored = uow.records.grant(patient_id, grant_id)
            if stored is None or stored.revoked_at is not None:
                raise NotFound(f"there is no active grant {grant_id} on this record")
            if isinstance(end, datetime) and end <= stored.grant.start:
                raise InvalidInput("a grant must end after it starts", expression="end")
            if stored.grant.party is not Party.PRACTITIONER and not isinstance(end, Unset):
                _check_group_end(now, end)
            uow.records.update_grant(patient_id, grant_id, level=level, end=end)
            detail = {"grant": grant_id}
            if level is not None:
                detail["level"] = level.value
            if not isinstance(end, Unset):
                detail["end"] = rfc3339_ms(end) if end is not None else "none"
            self.audited_change(
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
            decision = self.managed(uow, actor, patient_id, now)
            self.require_party(uow, party, party_id)
            block = Block(party, party_id, new_id())
            uow.records.ensure_record(patient_id, now)
            uow.records.add_block(patient_id, block, now, actor.who)
            self.audited_change(
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
            decision = self.managed(uow, actor, patient_id, now)
            if not uow.records.revoke_block(patient_id, block_id, now, actor.who):
                raise NotFound(f"there is no active block {block_id} on this record")
            self.audited_change(
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
                self.require_party(uow, Party.PRACTITIONER, practitioner_id)
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
                self.require_party(uow, Party.PRACTITIONER, change.referring_physician)
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
                self.audited_change(
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
            decision = self.managed(uow, actor, patient_id, now)
            uow.records.update_record(patient_id, now, **fields)
            self.audited_change(
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
            self.audited_change(
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
            self.audited_change(
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


def purpose_of_use(decision: Decision) -> str | None:
    """The purpose of use the engine's audit obligation names, for the access's entry."""
    for obligation in decision.obligations:
        if obligation.kind == "audit":
            return obligation.purpose_of_use
    return None


def grant_detail(grant: Grant) -> dict[str, str]:
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


def _check_group_end(start: datetime, end: datetime | None) -> None:
    """A grant to an organization or a care team ends, and within `MAX_GROUP_GRANT` of
    ``start`` (its start, or now for a change of its end)."""
    if end is None:
        raise BusinessRuleViolation(
            "a grant to an organization or a care team needs an end date", expression="end"
        )
    if end > start + MAX_GROUP_GRANT:
        raise BusinessRuleViolation(
            "a grant to an organization or a care team ends within five years",
            expression="end",
        )
