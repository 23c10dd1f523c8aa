"""The authorization engine (*moteur d'habilitation*): who may read, search and write what.

A pure function over facts loaded for one patient: ``decide(subject, action, record, document,
now, matrix)`` returns a `Decision` — permit or deny, the deciding rule, reasons in plain English
and French, the obligations the caller must fulfil (audit with a purpose of use, notify the
patient, alert the security officer) and the path of rules evaluated, for ``explain``.
``visible_filter`` describes, for a search, exactly the documents a single read would permit, so
that a storage layer can turn it into SQL and hidden results never leave the database.

The rules, first deny wins, deny by default (PRODUCT.md, "The authorization engine")::

    identity → operator → record → blacklist → author | patient | representative → hidden
      → profile → mandate → confidentiality → grant → emergency → deny-by-default

Rules 7 (grant) and 10 (emergency) are the only ways a professional gets in, so they are tried
last, after the rules that can only deny (mandate, confidentiality): a decision then always ends
with the rule that decided it, and a refusal names the most specific reason (a secret document
is refused as secret, not as "no grant"). Rules that do not apply to a kind of subject are not
evaluated and do not appear in the path.

Choices the specification leaves open, made here:

- the author exception is personal: it covers the practitioner who wrote the document, not their
  organization's system nor their assistant; so is the referring physician's exception to
  *hidden*;
- an assistant acts with the mandating practitioner's profile and grants, narrowed: never writes,
  never declares or uses emergency access, never sees hidden or ``V`` documents;
- a representative reads what the patient reads except ``V`` documents (secret documents, e.g. a
  minor's, stay between author and patient) and documents not yet released to the patient;
- grants to an organization or a care team without an end date are ignored (group grants need
  one); delegations count only while the patient allows delegation, and give at most the level
  the delegator holds through their own delegable grants at that instant;
- the record model (opt-in / opt-out) decides whether a record exists, which the loader already
  knows: a missing record is passed as ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import TypeVar, cast

__all__ = [
    "ORGANIZATION_SYSTEM_PROFILE",
    "Action",
    "Authority",
    "Block",
    "CareProof",
    "Confidentiality",
    "Decision",
    "Delegation",
    "DirectoryArea",
    "DocumentFacts",
    "DocumentFilter",
    "EmergencyQuota",
    "EmergencySetting",
    "EmergencyWindow",
    "Grant",
    "GrantLevel",
    "MandateScope",
    "Obligation",
    "Party",
    "ProfileMatrix",
    "RecordFacts",
    "RecordModel",
    "RecordState",
    "Representative",
    "Subject",
    "SubjectKind",
    "decide",
    "decide_audit_trail",
    "decide_directory",
    "decide_mandate",
    "refused_identity",
    "stricter",
    "visible_filter",
]


# --- facts -----------------------------------------------------------------------------------


class SubjectKind(StrEnum):
    PRACTITIONER = "practitioner"
    ASSISTANT = "assistant"
    ORGANIZATION_SYSTEM = "organization_system"
    PATIENT = "patient"
    REPRESENTATIVE = "representative"
    OPERATOR = "operator"
    SECURITY_OFFICER = "security_officer"  # an operator who reads the audit trail, nothing more
    REGISTRAR = "registrar"  # an operator with the directory role: writes the directories only


class Authority(StrEnum):
    """What an organization's registered systems may write, beyond what their professionals
    may (PRODUCT.md, "Who may change the facts the engine trusts"). An operator registers each
    one explicitly (`carevault authorities add`); a professional never holds one in person."""

    IDENTITY_SOURCE = "identity-source"  # feeds and merges patients of its assigning authority
    PROVIDER_REGISTRY = "provider-registry"  # professionals, their roles, organizations, licences
    ADMISSION_SYSTEM = "admission-system"  # records care events (encounters) for its professionals


class CareProof(StrEnum):
    """What proves a care relationship, so that a care event may open the record (rule 7)."""

    ADMISSION_SYSTEM = "admission-system"  # the organization's registered admission system
    PRESENCE_CODE = "presence-code"  # a short-lived code the patient gave the professional


class DirectoryArea(StrEnum):
    """Which part of the directories a request reaches, for ``decide_directory``."""

    IDENTITIES = "identities"  # patients' demographics and identifiers
    IDENTITY_LINKS = "identity-links"  # merging and unmerging patients: whose record is whose
    PROVIDERS = "providers"  # professionals, roles, organizations, licence status

    @property
    def affects_access(self) -> bool:
        """A change here changes what the engine lets someone see (a role, an organization, a
        licence, a merge), so it is audited as such."""
        return self is not DirectoryArea.IDENTITIES

    @property
    def authority(self) -> Authority:
        """The registered authority that writes this area in the normal course of things."""
        if self is DirectoryArea.PROVIDERS:
            return Authority.PROVIDER_REGISTRY
        return Authority.IDENTITY_SOURCE


class Action(StrEnum):
    READ = "read"
    SEARCH = "search"
    WRITE = "write"
    EMERGENCY = "emergency"  # declaring break-the-glass on the record
    CARE_EVENT = "care-event"  # recording an encounter, which opens a care relationship
    PERSONAL = "personal"  # reading what is the patient's own: consents, notifications, history
    MANAGE = "manage"  # deciding who sees what: grants, blocks, hiding, representatives, closing


class RecordState(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class RecordModel(StrEnum):
    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"


class Confidentiality(StrEnum):
    """HL7 v3 confidentiality codes."""

    N = "N"
    R = "R"
    V = "V"


_CONFIDENTIALITY_ORDER = {"N": 0, "R": 1, "V": 2}


def stricter(first: Confidentiality, second: Confidentiality) -> Confidentiality:
    """The more confidential of two levels: a new document takes at least the patient's
    default level, whatever its author labelled it (a patient who keeps everything restricted
    is not opened up by a hospital's default)."""
    return max(first, second, key=lambda level: _CONFIDENTIALITY_ORDER[level.value])


class GrantLevel(StrEnum):
    NORMAL = "normal"  # sees N
    EXTENDED = "extended"  # sees N and R


class Party(StrEnum):
    """Who a grant or a block names."""

    PRACTITIONER = "practitioner"
    ORGANIZATION = "organization"
    CARE_TEAM = "care_team"


class EmergencySetting(StrEnum):
    OFF = "off"
    NORMAL = "normal"
    NORMAL_AND_RESTRICTED = "normal+restricted"


class MandateScope(StrEnum):
    READ = "read"
    MANAGE = "manage"  # read, write and manage the record for the patient


_E = TypeVar("_E", bound=Enum)


def _members(enum: type[_E]) -> type[_E]:
    """A plain class holding the members of ``enum``, read by the rules on every decision.

    Python 3.11 reads a member through its enum class (``SubjectKind.PRACTITIONER``) by way of
    ``EnumType.__getattr__``, several times slower than a plain class attribute
    (python/cpython#106762, gone in 3.12); those reads were about a fifth of a decision's time.
    ``_SubjectKind.PRACTITIONER`` *is* ``SubjectKind.PRACTITIONER``; the class is typed as the
    enum because only its members are ever read from it.
    """
    return cast("type[_E]", type(f"_{enum.__name__}", (), dict(enum.__members__)))


_SubjectKind = _members(SubjectKind)
_Action = _members(Action)
_Party = _members(Party)
_RecordState = _members(RecordState)
_Confidentiality = _members(Confidentiality)
_EmergencySetting = _members(EmergencySetting)
_GrantLevel = _members(GrantLevel)
_MandateScope = _members(MandateScope)


@dataclass(frozen=True)
class Subject:
    """The authenticated identity, as the directories describe it.

    ``identity_valid`` sums up what was checked before the engine: token not expired, certificate
    not revoked, scope covers the action. For an assistant, ``mandator`` is the mandating
    practitioner as the directory describes them (their profession, organizations, care teams).
    A representative's mandate is read from the record, where the patient keeps it, not from the
    subject: a stale token cannot widen it.
    """

    kind: SubjectKind
    id: str
    profession: str | None = None
    specialty: str | None = None
    organization_ids: frozenset[str] = frozenset()
    care_team_ids: frozenset[str] = frozenset()
    licence_active: bool = True
    identity_valid: bool = True
    mandator: Subject | None = None
    # What the system the subject acts through is registered for (`Authority`); empty for a
    # professional's own card, a patient, an operator.
    authorities: frozenset[Authority] = frozenset()
    # What proves this request's care relationship with the patient, once checked: the
    # organization's registered admission system, or a presence code the patient gave.
    care_proof: CareProof | None = None
    # For an assistant: the document classes their mandate narrows them to (None: whatever
    # the mandator's profile allows).
    mandate_classes: frozenset[str] | None = None
    # For a declaration of emergency: the professional's declarations counted from the stored
    # facts in the declaring transaction (None: not counted, a request that declares nothing).
    emergency_quota: EmergencyQuota | None = None

    @property
    def mandator_id(self) -> str | None:
        return self.mandator.id if self.mandator is not None else None


@dataclass(frozen=True)
class Grant:
    """Access given by the patient (or a representative) to a practitioner, organization or team."""

    party: Party
    party_id: str
    level: GrantLevel
    start: datetime
    end: datetime | None = None
    granted_by: str = ""
    delegable: bool = False
    id: str = ""  # the stored grant's id (a Consent resource id); empty in pure tests
    source: str = "patient"  # patient | representative | care-event

    def active(self, now: datetime) -> bool:
        if self.party is not _Party.PRACTITIONER and self.end is None:
            return False  # a group grant without an end date is not valid
        return self.start <= now and (self.end is None or now < self.end)


@dataclass(frozen=True)
class Block:
    party: Party
    party_id: str
    id: str = ""


@dataclass(frozen=True)
class EmergencyQuota:
    """How many emergencies a professional declared over the quota's period (any record), and
    how many they may: break-the-glass is for the unforeseen, and a card or session used to
    open record after record that way is stopped at the limit, not only reviewed after."""

    declared: int
    limit: int

    @property
    def spent(self) -> bool:
        return self.declared >= self.limit


@dataclass(frozen=True)
class EmergencyWindow:
    practitioner_id: str
    until: datetime
    id: str = ""


@dataclass(frozen=True)
class Representative:
    person_id: str
    scope: MandateScope
    start: datetime
    end: datetime | None = None
    id: str = ""

    def active(self, now: datetime) -> bool:
        return self.start <= now and (self.end is None or now < self.end)


@dataclass(frozen=True)
class Delegation:
    """A practitioner passes (part of) their access on to another; the end date is mandatory."""

    delegator_id: str
    delegate_id: str
    level: GrantLevel
    start: datetime
    end: datetime
    id: str = ""

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class RecordFacts:
    patient_id: str
    state: RecordState = RecordState.ACTIVE
    model: RecordModel = RecordModel.OPT_OUT
    referring_physician_id: str | None = None
    grants: tuple[Grant, ...] = ()
    blocks: tuple[Block, ...] = ()
    emergency_setting: EmergencySetting = EmergencySetting.NORMAL
    emergency_windows: tuple[EmergencyWindow, ...] = ()
    representatives: tuple[Representative, ...] = ()
    delegation_allowed: bool = False
    delegations: tuple[Delegation, ...] = ()
    default_confidentiality: Confidentiality = Confidentiality.N  # for new documents


@dataclass(frozen=True)
class DocumentFacts:
    id: str
    author_id: str
    author_organization_id: str
    class_code: str
    type_code: str = ""
    confidentiality: Confidentiality = Confidentiality.N
    hidden: bool = False
    not_yet_visible_to_patient: bool = False
    # When a held document becomes visible to the patient by itself: the engine compares it
    # with the request's time, so the release is exact to the request (no chore's delay).
    held_until: datetime | None = None

    def held(self, now: datetime | None) -> bool:
        """Whether it is still held from the patient at ``now`` (None: as stored)."""
        if not self.not_yet_visible_to_patient:
            return False
        return now is None or self.held_until is None or now < self.held_until


# --- the profile matrix ----------------------------------------------------------------------

ORGANIZATION_SYSTEM_PROFILE = "organization-system"
_ANY_CLASS = "*"
_MATRIX_ACTIONS = ("read", "write")
_MAX_MATRIX_ANSWERS = 1_024


@dataclass(frozen=True)
class ProfileMatrix:
    """Which profession (or profession/specialty) may read or write which document classes.

    Keys are ``"profession"`` or ``"profession/specialty"``; a specialty adds to its profession.
    ``"*"`` stands for every class. A profession absent from the matrix may do nothing.
    """

    version: str
    profiles: Mapping[str, Mapping[str, frozenset[str]]]
    # What `classes` answered, per (profession, specialty, action): a memo of the read-only
    # ``profiles`` (built by `from_mapping` as read-only views), never part of the matrix's value.
    _answers: dict[tuple[str, str | None, str], frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ProfileMatrix:
        """Build from ``{"version": ..., "profiles": {key: {"read": [...], "write": [...]}}}``."""
        version = data.get("version")
        profiles = data.get("profiles")
        if not isinstance(version, str) or not version:
            raise ValueError("the profile matrix needs a version")
        if not isinstance(profiles, Mapping):
            raise ValueError("the profile matrix needs a 'profiles' mapping")
        built: dict[str, Mapping[str, frozenset[str]]] = {}
        for key, actions in profiles.items():
            if not isinstance(key, str) or not key or not isinstance(actions, Mapping):
                raise ValueError(f"profile {key!r}: expected a mapping of actions to classes")
            unknown = set(actions) - set(_MATRIX_ACTIONS)
            if unknown:
                raise ValueError(f"profile {key!r}: unknown actions {sorted(unknown)}")
            entry: dict[str, frozenset[str]] = {}
            for action in _MATRIX_ACTIONS:
                classes = actions.get(action, ())
                if isinstance(classes, str) or not isinstance(classes, Iterable):
                    raise ValueError(f"profile {key!r}: {action} must list class codes")
                codes = frozenset(classes)
                if not all(isinstance(code, str) and code for code in codes):
                    raise ValueError(f"profile {key!r}: {action} class codes must be text")
                entry[action] = codes
            built[key] = MappingProxyType(entry)
        return cls(version=version, profiles=MappingProxyType(built))

    def classes(self, profession: str | None, specialty: str | None, action: str) -> frozenset[str]:
        """The permitted classes (may hold ``"*"``): the specialty's added to the profession's."""
        if profession is None:
            return frozenset()
        key = (profession, specialty, action)
        found = self._answers.get(key)
        if found is None:
            found = self.profiles.get(profession, {}).get(action, frozenset())
            if specialty is not None:
                found |= self.profiles.get(f"{profession}/{specialty}", {}).get(action, frozenset())
            if len(self._answers) >= _MAX_MATRIX_ANSWERS:
                self._answers.clear()  # bounded: professions and specialties come from outside
            self._answers[key] = found
        return found

    def permits(
        self, profession: str | None, specialty: str | None, action: str, class_code: str
    ) -> bool:
        allowed = self.classes(profession, specialty, action)
        return _ANY_CLASS in allowed or class_code in allowed


# The built-in matrix ships as package data (``carevault/config/profile-matrix.json``), read by
# `carevault.adapters.package_config.builtin_profile_matrix` (importing the domain reads
# nothing); bootstrap loads it, or the deployment's ``CAREVAULT_PROFILE_MATRIX_FILE``, and
# passes it in.


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obligation:
    """Something the caller must do with a decision.

    ``kind`` is ``audit`` (with an HL7 purpose of use: TREAT, EMER, PATRQT, PWATRNY, HOPERAT and
    the person acted for, if any), ``notify-patient`` or ``alert-security-officer``.
    """

    kind: str
    purpose_of_use: str | None = None
    on_behalf_of: str | None = None


NOTIFY_PATIENT = Obligation("notify-patient")
ALERT_SECURITY_OFFICER = Obligation("alert-security-officer")


@dataclass(frozen=True)
class Decision:
    """Immutable and shared: equal decisions are one object (see `_Trace.decide`)."""

    permit: bool
    rule: str
    reasons: Mapping[str, str]
    obligations: frozenset[Obligation]
    path: tuple[str, ...]
    reason: str = ""  # the key of ``reasons``

    def explain(self) -> str:
        """The rule path and the precise reason: for the audit entry, the patient and the
        security officer."""
        verdict = "permit" if self.permit else "deny"
        return f"{' → '.join(self.path)}: {verdict} ({self.rule}) — {self.reasons['en']}"

    @property
    def told(self) -> Mapping[str, str]:
        """The reasons told to the caller this decision is about. A refusal on the state of a
        document (hidden, secret, restricted, of a category the caller's profession may not
        see) would tell them what the patient or the author keep from them: they read that they
        may not read the document, and the precise reason stays in `explain`."""
        return _REASON_MAPS["document-refused"] if self.reason in _UNTOLD else self.reasons


# Reasons, in words a patient understands; every message exists in both languages.
_REASONS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "identity": (
            "The identity could not be confirmed (expired session, revoked card, inactive "
            "licence or insufficient rights).",
            "L'identité n'a pas pu être confirmée (session expirée, carte révoquée, droit "
            "d'exercer inactif ou droits insuffisants).",
        ),
        "identity-assistant": (
            "The assistant has no valid mandate from a practising professional.",
            "L'assistant n'a pas de mandat valide d'un professionnel en exercice.",
        ),
        "operator": (
            "Platform operators never have access to medical content.",
            "Les opérateurs de la plateforme n'ont jamais accès au contenu médical.",
        ),
        "record-missing": (
            "There is no shared care record for this patient.",
            "Il n'existe pas de dossier de soins partagé pour ce patient.",
        ),
        "record-closed": (
            "The record is closed: only the patient, or a representative who manages it, can "
            "act on it.",
            "Le dossier est fermé : seul le patient, ou un représentant qui le gère, peut y agir.",
        ),
        "blacklist": (
            "The patient has blocked this professional or their organization; this applies even "
            "in an emergency.",
            "Le patient a bloqué ce professionnel ou son établissement ; cela vaut même en cas "
            "d'urgence.",
        ),
        "author": (
            "This professional wrote the document, and an author can always read it.",
            "Ce professionnel a rédigé le document, et un auteur peut toujours le lire.",
        ),
        "patient": (
            "This is the patient's own record.",
            "Il s'agit du propre dossier du patient.",
        ),
        "patient-other": (
            "A patient can only act on their own record.",
            "Un patient ne peut agir que sur son propre dossier.",
        ),
        "not-yet-visible": (
            "The author has not yet released this document to the patient; it becomes visible "
            "once it has been discussed with them.",
            "L'auteur n'a pas encore rendu ce document visible au patient ; il le sera une fois "
            "qu'il en aura parlé avec lui.",
        ),
        "hidden": (
            "The patient has hidden this document from every professional except its author and "
            "the referring physician.",
            "Le patient a masqué ce document à tous les professionnels sauf son auteur et le "
            "médecin référent.",
        ),
        "profile-read": (
            "Professionals of this kind may not see documents of this category.",
            "Les professionnels de cette catégorie ne peuvent pas voir ce type de document.",
        ),
        "profile-write": (
            "Professionals of this kind may not add documents of this category.",
            "Les professionnels de cette catégorie ne peuvent pas ajouter ce type de document.",
        ),
        "mandate-assistant-write": (
            "An assistant acts only within the mandating professional's rights and never adds or "
            "changes anything in the record.",
            "Un assistant agit seulement dans les droits du professionnel qui l'a mandaté et "
            "n'ajoute ni ne modifie rien dans le dossier.",
        ),
        "mandate-own": (
            "Only a practising professional, in person, mandates their own assistants or passes "
            "on their own access.",
            "Seul un professionnel en exercice, en personne, mandate ses propres assistants ou "
            "délègue son propre accès.",
        ),
        "mandate-given": (
            "The practitioner, in person, decides who acts in their name or shares their access.",
            "Le professionnel décide lui-même, en personne, qui agit en son nom ou partage son "
            "accès.",
        ),
        "mandate-none": (
            "This person is not, or no longer, a representative of the patient (outside the "
            "dates of the mandate).",
            "Cette personne n'est pas, ou plus, représentante du patient (en dehors des dates du "
            "mandat).",
        ),
        "mandate-read-only": (
            "The representative's mandate allows reading only, not changes.",
            "Le mandat du représentant permet seulement la consultation, pas les modifications.",
        ),
        "confidentiality-v": (
            "This document is secret (very restricted): only its author and the patient can "
            "read it.",
            "Ce document est secret (très restreint) : seuls son auteur et le patient peuvent le "
            "lire.",
        ),
        "confidentiality-r": (
            "This document is restricted: it needs an extended access, which this professional "
            "does not hold.",
            "Ce document est restreint : il faut un accès étendu, que ce professionnel n'a pas.",
        ),
        "grant": (
            "The patient gave this professional (or their organization or care team) an active "
            "access that covers this request.",
            "Le patient a donné à ce professionnel (ou à son établissement ou son équipe de "
            "soins) un accès actif qui couvre cette demande.",
        ),
        "emergency": (
            "Emergency access: the professional declared an emergency. The patient is notified "
            "and the security officer alerted.",
            "Accès d'urgence : le professionnel a déclaré une urgence. Le patient est prévenu et "
            "le responsable de la sécurité alerté.",
        ),
        "emergency-off": (
            "The patient has turned emergency access off for this record.",
            "Le patient a désactivé l'accès d'urgence à son dossier.",
        ),
        "emergency-quota": (
            "This professional has declared as many emergencies as the platform allows in 24 "
            "hours; the security officer is alerted. Ask the patient for an access, or the "
            "security officer to review the emergencies declared.",
            "Ce professionnel a déclaré autant d'urgences que la plateforme en permet en 24 "
            "heures ; le responsable de la sécurité est alerté. Demandez un accès au patient, ou "
            "au responsable de la sécurité d'examiner les urgences déclarées.",
        ),
        "emergency-not-professional": (
            "Only a professional, in person, can declare or use emergency access.",
            "Seul un professionnel, en personne, peut déclarer ou utiliser un accès d'urgence.",
        ),
        "representative": (
            "A representative acting for the patient within the mandate.",
            "Un représentant qui agit pour le patient dans les limites de son mandat.",
        ),
        "manage": (
            "Only the patient, or a representative who manages the record, decides who sees it.",
            "Seul le patient, ou un représentant qui gère le dossier, décide qui peut le voir.",
        ),
        "personal": (
            "Consents, notifications and the access history are the patient's own: only the "
            "patient and their representatives see them.",
            "Les consentements, les notifications et l'historique des accès appartiennent au "
            "patient : seuls le patient et ses représentants les voient.",
        ),
        "care-event": (
            "The professional recorded a care event with the patient, which gives them a "
            "time-limited access; the patient is notified and can revoke it.",
            "Le professionnel a enregistré une prise en charge du patient, qui lui donne un accès "
            "limité dans le temps ; le patient est prévenu et peut le retirer.",
        ),
        "care-event-unproven": (
            "A care event opens the record only when it comes from the organization's registered "
            "admission system or carries a presence code the patient gave; a professional's own "
            "declaration is not enough.",
            "Une prise en charge n'ouvre le dossier que si elle vient du système d'admission "
            "enregistré de l'établissement ou porte un code de présence donné par le patient ; "
            "la seule déclaration du professionnel ne suffit pas.",
        ),
        "care-event-not-professional": (
            "A care event is recorded by the professional who saw the patient.",
            "Une prise en charge est enregistrée par le professionnel qui a vu le patient.",
        ),
        "directory": (
            "The directories of professionals, organizations and patients' identities are open "
            "to authenticated professionals; they hold no medical content.",
            "Les annuaires des professionnels, des établissements et des identités des patients "
            "sont ouverts aux professionnels authentifiés ; ils ne contiennent aucune donnée "
            "médicale.",
        ),
        "directory-authority": (
            "Only the authorities the platform registers change the directories: the provider "
            "registry, patients' identity sources within their own assigning authority, and "
            "registrars; never a professional about themselves or a colleague.",
            "Seules les autorités enregistrées par la plateforme modifient les annuaires : le "
            "registre des professionnels, les sources d'identité des patients dans leur propre "
            "domaine d'identification, et les agents d'enregistrement ; jamais un professionnel "
            "pour lui-même ou un confrère.",
        ),
        "directory-authority-registered": (
            "A system the platform registered as an authority for this directory changed it.",
            "Un système que la plateforme a enregistré comme autorité de cet annuaire l'a modifié.",
        ),
        "directory-registrar": (
            "A registrar changed the directories by hand; a change that affects access is shown "
            "to the security officer.",
            "Un agent d'enregistrement a modifié les annuaires à la main ; un changement qui "
            "touche aux accès est signalé au responsable de la sécurité.",
        ),
        "directory-read-only": (
            "Patients and representatives may look professionals up, not change the directories.",
            "Les patients et les représentants peuvent consulter les annuaires, pas les modifier.",
        ),
        "audit-trail": (
            "A security officer reads the audit trail, which holds who accessed what, never the "
            "medical content.",
            "Un responsable de la sécurité consulte la trace des accès, qui dit qui a accédé à "
            "quoi, jamais le contenu médical.",
        ),
        "audit-trail-officer-only": (
            "Only a security officer reads the whole audit trail; a patient reads the accesses "
            "to their own record.",
            "Seul un responsable de la sécurité consulte toute la trace des accès ; un patient "
            "consulte les accès à son propre dossier.",
        ),
        "document-refused": (
            "You may not read this document.",
            "Vous ne pouvez pas lire ce document.",
        ),
        "prescribing": (
            "This professional may prescribe.",
            "Ce professionnel peut prescrire.",
        ),
        "prescribing-profession": (
            "Professionals of this kind may not write prescriptions.",
            "Les professionnels de cette catégorie ne peuvent pas rédiger d'ordonnance.",
        ),
        "prescribing-not-professional": (
            "Only a professional, with their own card, writes or changes a prescription.",
            "Seul un professionnel, avec sa propre carte, rédige ou modifie une ordonnance.",
        ),
        "prescribing-not-own": (
            "A prescriber lists their own prescriptions, not another prescriber's.",
            "Un prescripteur consulte ses propres ordonnances, pas celles d'un autre.",
        ),
        "dispensing-other-pharmacy": (
            "A pharmacist lists what the pharmacies they work for dispensed, not another's.",
            "Un pharmacien consulte ce qu'ont délivré les pharmacies où il exerce, pas une autre.",
        ),
        "dispensing": (
            "A pharmacist of a pharmacy may take a prescription whose code the patient gave.",
            "Un pharmacien d'une pharmacie peut prendre une ordonnance dont le patient a donné "
            "le code.",
        ),
        "dispensing-profession": (
            "Only a pharmacist dispenses prescriptions.",
            "Seul un pharmacien délivre les ordonnances.",
        ),
        "dispensing-no-pharmacy": (
            "A pharmacist dispenses for a pharmacy they work for; none is known for them.",
            "Un pharmacien délivre pour une pharmacie où il exerce ; aucune n'est connue pour lui.",
        ),
        "deny-by-default": (
            "No active access from the patient, care relationship or emergency access covers "
            "this request.",
            "Aucun accès actif donné par le patient, relation de soins ou accès d'urgence ne "
            "couvre cette demande.",
        ),
    }
)

_REASON_MAPS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {key: MappingProxyType({"en": en, "fr": fr}) for key, (en, fr) in _REASONS.items()}
)
# The refusals on a document's own state, never told to the refused caller (`Decision.told`).
_UNTOLD = frozenset({"hidden", "confidentiality-v", "confidentiality-r", "profile-read"})
# Decisions are values: the same rule path, reason and obligations give the same object, so a
# decision costs a dictionary lookup once its kind has been seen. The audit obligation is keyed by
# its purpose of use and the person acted for, and built only for a decision not yet seen.
_DecisionKey = tuple[
    bool, str, str | None, str, str | None, tuple[Obligation, ...], tuple[str, ...]
]
_DECISIONS: dict[_DecisionKey, Decision] = {}
_MAX_DECISIONS = 4_096

_LEVEL_SEES: Mapping[GrantLevel, frozenset[Confidentiality]] = MappingProxyType(
    {
        GrantLevel.NORMAL: frozenset({Confidentiality.N}),
        GrantLevel.EXTENDED: frozenset({Confidentiality.N, Confidentiality.R}),
    }
)
_NOTHING: frozenset[Confidentiality] = frozenset()
_PROFESSIONALS = frozenset(
    {SubjectKind.PRACTITIONER, SubjectKind.ASSISTANT, SubjectKind.ORGANIZATION_SYSTEM}
)
# Operators never reach a record, whatever their role.
_OPERATORS = frozenset({SubjectKind.OPERATOR, SubjectKind.SECURITY_OFFICER, SubjectKind.REGISTRAR})
_LICENSED = frozenset({SubjectKind.PRACTITIONER, SubjectKind.ASSISTANT})  # need a licence
_READING = frozenset({Action.READ, Action.SEARCH})
_PATIENT_SIDE = frozenset({Action.MANAGE, Action.PERSONAL})  # the patient's and representatives'


class _Trace:
    """The rules evaluated so far, and the audit obligation every decision carries: its purpose
    of use (HL7) and the person acted for, if any."""

    def __init__(self, subject: Subject, record: RecordFacts | None) -> None:
        self.path: list[str] = []
        self.purpose = _PURPOSES.get(subject.kind, "TREAT")
        self.on_behalf_of = _on_behalf_of(subject, record)

    def check(self, rule: str) -> None:
        self.path.append(rule)

    def decide(
        self,
        permit: bool,
        rule: str,
        message: str | None = None,
        extra: Iterable[Obligation] = (),
    ) -> Decision:
        if not self.path or self.path[-1] != rule:
            self.path.append(rule)
        path = tuple(self.path)
        extras = tuple(extra)
        key = (permit, rule, message, self.purpose, self.on_behalf_of, extras, path)
        found = _DECISIONS.get(key)
        if found is not None:
            return found
        audit = Obligation("audit", self.purpose, self.on_behalf_of)
        decision = Decision(
            permit=permit,
            rule=rule,
            reasons=_REASON_MAPS[message or rule],
            obligations=frozenset({audit, *extras}),
            path=path,
            reason=message or rule,
        )
        if len(_DECISIONS) >= _MAX_DECISIONS:
            _DECISIONS.clear()  # bounded: the audit obligation may name a patient
        _DECISIONS[key] = decision
        return decision


# The purpose of use audited for each kind of subject; professionals treat (TREAT), or declare
# an emergency (EMER, set by the emergency rule).
_PURPOSES: Mapping[SubjectKind, str] = MappingProxyType(
    {
        SubjectKind.PATIENT: "PATRQT",
        SubjectKind.REPRESENTATIVE: "PWATRNY",
        SubjectKind.OPERATOR: "HOPERAT",
        SubjectKind.SECURITY_OFFICER: "HOPERAT",
        SubjectKind.REGISTRAR: "HOPERAT",
    }
)


def _on_behalf_of(subject: Subject, record: RecordFacts | None) -> str | None:
    if subject.kind is _SubjectKind.ASSISTANT:
        return subject.mandator_id
    if subject.kind is _SubjectKind.REPRESENTATIVE and record is not None:
        return record.patient_id
    return None


# --- what a subject holds on a record ---------------------------------------------------------


def _refused_identity(trace: _Trace, subject: Subject, *, operators: bool) -> Decision | None:
    """Rule 1 of every decision: a caller whose identity, licence or mandate does not hold is
    refused; so is an operator where ``operators`` (no operator reaches clinical content).
    None when the caller passes on to the decision's own rules."""
    trace.check("identity")
    problem = _identity_problem(subject)
    if problem is not None:
        return trace.decide(False, "identity", problem)
    if operators and subject.kind in _OPERATORS:
        return trace.decide(False, "operator")
    return None


def _identity_problem(subject: Subject) -> str | None:
    if not subject.identity_valid:
        return "identity"
    if subject.kind in _LICENSED and not subject.licence_active:
        return "identity"
    if subject.kind is _SubjectKind.ASSISTANT:
        mandator = subject.mandator
        if (
            mandator is None
            or mandator.kind is not _SubjectKind.PRACTITIONER
            or not mandator.identity_valid
            or not mandator.licence_active
        ):
            return "identity-assistant"
    return None


def _acting(subject: Subject) -> Subject:
    """Whose rights are used: an assistant's are the mandating practitioner's."""
    if subject.kind is _SubjectKind.ASSISTANT and subject.mandator is not None:
        return subject.mandator
    return subject


def _blocked(subject: Subject, record: RecordFacts) -> bool:
    """Whether a block names the subject or their mandator: in person, or one of their
    organizations or care teams."""
    mandator = subject.mandator
    for block in record.blocks:
        if _block_names(block, subject) or (mandator is not None and _block_names(block, mandator)):
            return True
    return False


def _block_names(block: Block, subject: Subject) -> bool:
    if block.party is _Party.PRACTITIONER:
        return block.party_id == subject.id
    if block.party is _Party.ORGANIZATION:
        return block.party_id in subject.organization_ids
    return block.party_id in subject.care_team_ids


def _grant_reaches(grant: Grant, subject: Subject) -> bool:
    if grant.party is _Party.PRACTITIONER:
        return subject.kind is _SubjectKind.PRACTITIONER and grant.party_id == subject.id
    if grant.party is _Party.ORGANIZATION:
        return grant.party_id in subject.organization_ids
    return subject.kind is _SubjectKind.PRACTITIONER and grant.party_id in subject.care_team_ids


def _delegable_level(record: RecordFacts, delegator_id: str, now: datetime) -> set[GrantLevel]:
    """What a practitioner may pass on: their own delegable grants, never a delegation."""
    levels = {
        grant.level
        for grant in record.grants
        if grant.party is _Party.PRACTITIONER
        and grant.party_id == delegator_id
        and grant.delegable
        and grant.active(now)
    }
    if record.referring_physician_id == delegator_id:
        levels.add(_GrantLevel.EXTENDED)
    return levels


def _granted(subject: Subject, record: RecordFacts, now: datetime) -> frozenset[Confidentiality]:
    """The confidentiality levels the subject's grants, referral and delegations open."""
    levels: set[GrantLevel] = set()
    # Most grants name someone else: a grant's party id is compared first, its kind and its dates
    # (comparing aware datetimes costs more) only for the few that name the subject.
    for grant in record.grants:
        named = (
            grant.party_id == subject.id
            or grant.party_id in subject.organization_ids
            or grant.party_id in subject.care_team_ids
        )
        if named and _grant_reaches(grant, subject) and grant.active(now):
            levels.add(grant.level)
    if subject.kind is _SubjectKind.PRACTITIONER:
        if record.referring_physician_id == subject.id:
            levels.add(_GrantLevel.EXTENDED)
        if record.delegation_allowed:
            for delegation in record.delegations:
                if delegation.delegate_id != subject.id or not delegation.active(now):
                    continue
                held = _delegable_level(record, delegation.delegator_id, now)
                if _GrantLevel.EXTENDED in held:
                    levels.add(delegation.level)
                elif held:
                    # Never more than the delegator: a normal delegator passes on normal only.
                    levels.add(_GrantLevel.NORMAL)
    seen: frozenset[Confidentiality] = _NOTHING
    for level in levels:
        seen |= _LEVEL_SEES[level]
    return seen


def _emergency(subject: Subject, record: RecordFacts, now: datetime) -> frozenset[Confidentiality]:
    """The levels an open emergency window gives; only a practitioner in person may use one."""
    if subject.kind is not _SubjectKind.PRACTITIONER:
        return _NOTHING
    if record.emergency_setting is _EmergencySetting.OFF:
        return _NOTHING
    for window in record.emergency_windows:
        if window.practitioner_id == subject.id and now < window.until:
            if record.emergency_setting is _EmergencySetting.NORMAL_AND_RESTRICTED:
                return _LEVEL_SEES[_GrantLevel.EXTENDED]
            return _LEVEL_SEES[_GrantLevel.NORMAL]
    return _NOTHING


def _profile_classes(subject: Subject, matrix: ProfileMatrix, action: str) -> frozenset[str]:
    if subject.kind is _SubjectKind.ORGANIZATION_SYSTEM:
        return matrix.classes(ORGANIZATION_SYSTEM_PROFILE, None, action)
    acting = _acting(subject)
    allowed = matrix.classes(acting.profession, acting.specialty, action)
    narrowed = subject.mandate_classes
    if subject.kind is _SubjectKind.ASSISTANT and narrowed is not None:
        # The mandate narrows, never widens: what the mandator's profile allows, and named.
        return narrowed - {_ANY_CLASS} if _ANY_CLASS in allowed else allowed & narrowed
    return allowed


def _mandate(subject: Subject, record: RecordFacts, now: datetime) -> Representative | None:
    """The representative's widest mandate active now, if any."""
    active = [
        mandate
        for mandate in record.representatives
        if mandate.person_id == subject.id and mandate.active(now)
    ]
    for mandate in active:
        if mandate.scope is _MandateScope.MANAGE:
            return mandate
    return active[0] if active else None


# --- the engine ------------------------------------------------------------------------------


def decide(
    subject: Subject,
    action: Action,
    record: RecordFacts | None,
    document: DocumentFacts | None,
    now: datetime,
    matrix: ProfileMatrix,
) -> Decision:
    """Decide one request. ``document`` is None for a record-level request (a search before its
    filter, a write without a class yet); for ``Action.EMERGENCY`` (declaring break-the-glass)
    it is ignored."""
    trace = _Trace(subject, record)
    refused = _refused_identity(trace, subject, operators=True)
    if refused is not None:
        return refused
    trace.check("record")
    if record is None:
        return trace.decide(False, "record", "record-missing")
    if subject.kind in _PROFESSIONALS:
        return _decide_professional(trace, subject, action, record, document, now, matrix)
    if subject.kind is _SubjectKind.PATIENT:
        return _decide_patient(trace, subject, action, record, document, now)
    return _decide_representative(trace, subject, action, record, document, now)


def refused_identity(subject: Subject, *, operators: bool) -> Decision | None:
    """Rule 1 of every decision on its own (and the operator rule, if ``operators``): the
    decision `decide` makes when it refuses there, else None. It needs no fact of the request,
    so a gate asks it before loading any, and a refused caller learns nothing, not even whether
    an id exists; it is not a decision of its own (the request's is made once, after)."""
    return _refused_identity(_Trace(subject, None), subject, operators=operators)


def _decide_patient(
    trace: _Trace,
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
    now: datetime,
) -> Decision:
    # A closed record stays the patient's: they can still read it and reopen it. A patient may
    # also add documents of their own (as in the DMP and the EPD); they are never emergencies.
    if subject.id != record.patient_id:
        return trace.decide(False, "patient", "patient-other")
    if action is _Action.EMERGENCY:
        return trace.decide(False, "emergency", "emergency-not-professional")
    if action is _Action.CARE_EVENT:
        return trace.decide(False, "care-event", "care-event-not-professional")
    if action in _READING and document is not None:
        trace.check("not-yet-visible")
        if document.held(now):
            return trace.decide(False, "not-yet-visible")
    return trace.decide(True, "patient")


def _decide_representative(
    trace: _Trace,
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
    now: datetime,
) -> Decision:
    mandate = _mandate(subject, record, now)
    if record.state is _RecordState.CLOSED and (
        mandate is None or mandate.scope is not _MandateScope.MANAGE
    ):
        return trace.decide(False, "record", "record-closed")
    trace.check("mandate")
    if mandate is None:
        return trace.decide(False, "mandate", "mandate-none")
    if action is _Action.EMERGENCY:
        return trace.decide(False, "emergency", "emergency-not-professional")
    if action is _Action.CARE_EVENT:
        return trace.decide(False, "care-event", "care-event-not-professional")
    if action in (_Action.WRITE, _Action.MANAGE):
        if mandate.scope is not _MandateScope.MANAGE:
            return trace.decide(False, "mandate", "mandate-read-only")
        # A change made for the patient is always told to the patient.
        return trace.decide(True, "representative", extra=(NOTIFY_PATIENT,))
    if document is not None:
        trace.check("not-yet-visible")
        if document.held(now):
            return trace.decide(False, "not-yet-visible")
        trace.check("confidentiality")
        if document.confidentiality is _Confidentiality.V:
            return trace.decide(False, "confidentiality", "confidentiality-v")
    return trace.decide(True, "representative")


def _emergency_permit(trace: _Trace) -> Decision:
    trace.purpose = "EMER"
    return trace.decide(True, "emergency", extra=(NOTIFY_PATIENT, ALERT_SECURITY_OFFICER))


def _decide_professional(
    trace: _Trace,
    subject: Subject,
    action: Action,
    record: RecordFacts,
    document: DocumentFacts | None,
    now: datetime,
    matrix: ProfileMatrix,
) -> Decision:
    if record.state is not _RecordState.ACTIVE:
        return trace.decide(False, "record", "record-closed")
    if action in _PATIENT_SIDE:
        # Checked before the blacklist: the answer is the same for every professional.
        return trace.decide(False, action.value)
    trace.check("blacklist")
    if _blocked(subject, record):
        # A blocked professional trying to break the glass is an anomaly worth a look.
        extra = (ALERT_SECURITY_OFFICER,) if action is _Action.EMERGENCY else ()
        return trace.decide(False, "blacklist", extra=extra)

    if action is _Action.CARE_EVENT:
        trace.check("care-event")
        if subject.kind is _SubjectKind.ASSISTANT:
            return trace.decide(False, "mandate", "mandate-assistant-write")
        if subject.care_proof is None:
            # A self-declared care relationship: refused, and worth a look.
            return trace.decide(
                False, "care-event", "care-event-unproven", extra=(ALERT_SECURITY_OFFICER,)
            )
        return trace.decide(True, "care-event", extra=(NOTIFY_PATIENT,))

    if action is _Action.EMERGENCY:
        trace.check("emergency")
        if subject.kind is not _SubjectKind.PRACTITIONER:
            return trace.decide(False, "emergency", "emergency-not-professional")
        if record.emergency_setting is _EmergencySetting.OFF:
            return trace.decide(False, "emergency", "emergency-off")
        if subject.emergency_quota is not None and subject.emergency_quota.spent:
            # One more than the quota allows: refused, and worth a look at once.
            return trace.decide(
                False, "emergency", "emergency-quota", extra=(ALERT_SECURITY_OFFICER,)
            )
        return _emergency_permit(trace)

    reading = action in _READING
    practitioner = subject.kind is _SubjectKind.PRACTITIONER
    if document is not None:
        if reading:
            if practitioner:
                trace.check("author")
                if document.author_id == subject.id:
                    return trace.decide(True, "author")
            trace.check("hidden")
            referring = practitioner and record.referring_physician_id == subject.id
            if document.hidden and not referring:
                return trace.decide(False, "hidden")
        trace.check("profile")
        matrix_action = "read" if reading else "write"
        allowed = _profile_classes(subject, matrix, matrix_action)
        if _ANY_CLASS not in allowed and document.class_code not in allowed:
            return trace.decide(False, "profile", f"profile-{matrix_action}")

    if subject.kind is _SubjectKind.ASSISTANT:
        trace.check("mandate")
        if not reading:
            return trace.decide(False, "mandate", "mandate-assistant-write")

    granted = _granted(_acting(subject), record, now)
    emergency = _emergency(subject, record, now)
    if document is not None and reading:
        # The author chooses the level of what they write; levels only narrow reading.
        trace.check("confidentiality")
        level = document.confidentiality
        if level is _Confidentiality.V:
            return trace.decide(False, "confidentiality", "confidentiality-v")
        if (granted or emergency) and level not in granted and level not in emergency:
            return trace.decide(False, "confidentiality", "confidentiality-r")
        granted = granted if level in granted else _NOTHING
        emergency = emergency if level in emergency else _NOTHING

    trace.check("grant")
    if granted:
        return trace.decide(True, "grant")
    trace.check("emergency")
    if emergency:
        return _emergency_permit(trace)
    return trace.decide(False, "deny-by-default")


# --- the search filter -----------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentFilter:
    """Which documents of one record a subject may see: a pure description for the storage layer.

    A document matches when its author is ``author_id``, or when all of these hold: it is not
    hidden (unless ``include_hidden``), not awaiting release to the patient (unless
    ``include_not_yet_visible``), its class is in ``classes`` (``None``: any class) and its
    confidentiality is in ``confidentiality``. An empty ``confidentiality`` and no ``author_id``
    match nothing.
    """

    confidentiality: frozenset[Confidentiality] = _NOTHING
    classes: frozenset[str] | None = field(default_factory=frozenset)
    include_hidden: bool = False
    include_not_yet_visible: bool = False
    author_id: str | None = None
    # The request's time: a held document whose ``held_until`` has passed is released.
    released_by: datetime | None = None

    @property
    def matches_nothing(self) -> bool:
        return self.author_id is None and (not self.confidentiality or self.classes == frozenset())

    def matches(self, document: DocumentFacts) -> bool:
        if self.author_id is not None and document.author_id == self.author_id:
            return True
        return (
            (self.include_hidden or not document.hidden)
            and (self.include_not_yet_visible or not document.held(self.released_by))
            and (self.classes is None or document.class_code in self.classes)
            and document.confidentiality in self.confidentiality
        )


_NO_DOCUMENTS = DocumentFilter()


def visible_filter(
    subject: Subject,
    record: RecordFacts | None,
    now: datetime,
    matrix: ProfileMatrix,
) -> DocumentFilter:
    """The documents ``decide(subject, Action.READ, record, document, now, matrix)`` permits."""
    if _identity_problem(subject) is not None or subject.kind in _OPERATORS:
        return _NO_DOCUMENTS
    if record is None:
        return _NO_DOCUMENTS
    if subject.kind is _SubjectKind.PATIENT:
        if subject.id != record.patient_id:
            return _NO_DOCUMENTS
        return DocumentFilter(
            confidentiality=frozenset(Confidentiality),
            classes=None,
            include_hidden=True,
            released_by=now,
        )
    if subject.kind is _SubjectKind.REPRESENTATIVE:
        mandate = _mandate(subject, record, now)
        if mandate is None or (
            record.state is _RecordState.CLOSED and mandate.scope is not _MandateScope.MANAGE
        ):
            return _NO_DOCUMENTS
        return DocumentFilter(
            confidentiality=frozenset({_Confidentiality.N, _Confidentiality.R}),
            classes=None,
            include_hidden=True,
            released_by=now,
        )
    if subject.kind not in _PROFESSIONALS:
        return _NO_DOCUMENTS
    if record.state is not _RecordState.ACTIVE or _blocked(subject, record):
        return _NO_DOCUMENTS
    allowed = _profile_classes(subject, matrix, "read")
    levels = (_granted(_acting(subject), record, now) | _emergency(subject, record, now)) - {
        _Confidentiality.V
    }
    practitioner = subject.kind is _SubjectKind.PRACTITIONER
    return DocumentFilter(
        confidentiality=levels,
        classes=None if _ANY_CLASS in allowed else allowed,
        include_hidden=practitioner and record.referring_physician_id == subject.id,
        include_not_yet_visible=True,
        author_id=subject.id if practitioner else None,
    )


# --- outside the records ---------------------------------------------------------------------


def decide_directory(
    subject: Subject, action: Action, area: DirectoryArea = DirectoryArea.PROVIDERS
) -> Decision:
    """The directories (professionals, organizations, patients' identities) hold no medical
    content: authenticated professionals and registrars read them; patients and representatives
    may read them (to choose whom to grant). Writing them is for the registered authorities
    alone (PRODUCT.md, "Who may change the facts the engine trusts"): a system of an
    organization registered for that ``area``, or a registrar. A professional who tries is
    refused and the security officer alerted; a registrar's hand-made change that affects
    access is permitted and shown to the security officer. Other operators are kept out."""
    trace = _Trace(subject, None)
    refused = _refused_identity(trace, subject, operators=False)
    if refused is not None:
        return refused
    registrar = subject.kind is _SubjectKind.REGISTRAR
    if subject.kind in _OPERATORS and not registrar:
        return trace.decide(False, "operator")
    trace.check("directory")
    if action in _READING:
        return trace.decide(True, "directory")
    if subject.kind in (_SubjectKind.PATIENT, _SubjectKind.REPRESENTATIVE):
        return trace.decide(False, "directory", "directory-read-only")
    if subject.kind is _SubjectKind.ASSISTANT:
        return trace.decide(False, "mandate", "mandate-assistant-write")
    trace.check("directory-authority")
    if registrar:
        alert = (ALERT_SECURITY_OFFICER,) if area.affects_access else ()
        return trace.decide(True, "directory-authority", "directory-registrar", extra=alert)
    if area.authority in subject.authorities:
        return trace.decide(True, "directory-authority", "directory-authority-registered")
    return trace.decide(False, "directory-authority", extra=(ALERT_SECURITY_OFFICER,))


def decide_mandate(subject: Subject, practitioner_id: str) -> Decision:
    """Mandating an assistant, or ending a mandate, in ``practitioner_id``'s name (PRODUCT.md:
    "assistants' mandates: the professional who holds the access"): that practitioner alone, in
    person. An assistant never mandates (not even in their mandator's name), a system acting
    for the practitioner is not the practitioner (`Subject.authorities` or the gate's ``act``
    tell the caller this), an operator or a patient never does."""
    trace = _Trace(subject, None)
    refused = _refused_identity(trace, subject, operators=True)
    if refused is not None:
        return refused
    trace.check("mandate")
    if subject.kind is _SubjectKind.ASSISTANT:
        return trace.decide(False, "mandate", "mandate-assistant-write")
    if subject.kind is not _SubjectKind.PRACTITIONER or subject.id != practitioner_id:
        return trace.decide(False, "mandate", "mandate-own")
    return trace.decide(True, "mandate", "mandate-given")


def decide_audit_trail(subject: Subject) -> Decision:
    """The whole audit trail (every patient's accesses) is for the security officer alone; a
    patient's own history is a `Action.PERSONAL` request on their record."""
    trace = _Trace(subject, None)
    refused = _refused_identity(trace, subject, operators=False)
    if refused is not None:
        return refused
    trace.check("audit-trail")
    if subject.kind is _SubjectKind.SECURITY_OFFICER:
        return trace.decide(True, "audit-trail")
    return trace.decide(False, "audit-trail", "audit-trail-officer-only")


# --- prescriptions ------------------------------------------------------------------------------

PRESCRIPTION_CLASS = "prescription"  # the document class a prescriber's profile must write


def decide_prescribing(
    subject: Subject, matrix: ProfileMatrix, prescriber_id: str | None = None
) -> Decision:
    """Writing a prescription (creating, activating or cancelling it as its prescriber): a
    practitioner in person whose profile may write the ``prescription`` class. The record's own
    rules (blocks, grants) are decided when the prescription names its patient, by `decide`.
    With ``prescriber_id`` (listing a prescriber's prescriptions, across their patients): that
    prescriber only, about themselves."""
    trace = _Trace(subject, None)
    refused = _refused_identity(trace, subject, operators=True)
    if refused is not None:
        return refused
    trace.check("prescribing")
    if subject.kind is not _SubjectKind.PRACTITIONER:
        return trace.decide(False, "prescribing", "prescribing-not-professional")
    if not matrix.permits(subject.profession, subject.specialty, "write", PRESCRIPTION_CLASS):
        return trace.decide(False, "prescribing", "prescribing-profession")
    if prescriber_id is not None and prescriber_id != subject.id:
        return trace.decide(False, "prescribing", "prescribing-not-own")
    return trace.decide(True, "prescribing")


def decide_dispensing(
    subject: Subject, professions: frozenset[str], pharmacy_id: str | None = None
) -> Decision:
    """Taking, returning or completing a prescription: a practitioner of a dispensing
    profession (``professions``, configuration) who works for an organization. What opens the
    prescription to them is the access code the patient gave, checked by the service. With
    ``pharmacy_id`` (listing what a pharmacy dispensed, across patients): one they work for."""
    trace = _Trace(subject, None)
    refused = _refused_identity(trace, subject, operators=True)
    if refused is not None:
        return refused
    trace.check("dispensing")
    if subject.kind is not _SubjectKind.PRACTITIONER or subject.profession not in professions:
        return trace.decide(False, "dispensing", "dispensing-profession")
    if not subject.organization_ids:
        return trace.decide(False, "dispensing", "dispensing-no-pharmacy")
    if pharmacy_id is not None and pharmacy_id not in subject.organization_ids:
        return trace.decide(False, "dispensing", "dispensing-other-pharmacy")
    return trace.decide(True, "dispensing")
