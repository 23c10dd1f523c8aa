"""An audit entry told in plain words, for the patient it concerns (English and French).

"Dr X, Hospital Y, read your lab report, 12 March 10:42, emergency access: reason …". Names of
people and organizations are looked up by the caller and passed in ``names``; an entry whose
actor is not identified says so rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from carevault.domain.audit import AuditRecord

_MONTHS = {
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
}

_VERBS = {
    "en": {
        "read": "read",
        "vread": "read an earlier version of",
        "history-instance": "read the history of",
        "search-type": "found",
        "create": "created",
        "update": "updated",
        "conditional-update": "updated",
        "operation": "processed",
        "capabilities": "consulted",
        "transaction": "added",
    },
    "fr": {
        "read": "a consulté",
        "vread": "a consulté une version antérieure de",
        "history-instance": "a consulté l'historique de",
        "search-type": "a trouvé",
        "create": "a créé",
        "update": "a modifié",
        "conditional-update": "a modifié",
        "operation": "a traité",
        "capabilities": "a consulté",
        "transaction": "a ajouté",
    },
}

_TRIED = {"en": "tried to open", "fr": "a tenté d'ouvrir"}
_REFUSED = {"en": "and was refused", "fr": "et en a été empêché"}

_WHAT = {
    "en": {
        "Patient": "your identity record",
        "DocumentReference": "a document of your record",
        "Binary": "a document of your record",
        "AuditEvent": "your access history",
        "Consent": "your access settings",
        "Bundle": "documents to your record",
        "Encounter": "a care event",
        "Communication": "your notifications",
        "List": "a list of documents of your record",
    },
    "fr": {
        "Patient": "votre fiche d'identité",
        "DocumentReference": "un document de votre dossier",
        "Binary": "un document de votre dossier",
        "AuditEvent": "votre historique d'accès",
        "Consent": "vos réglages d'accès",
        "Bundle": "des documents à votre dossier",
        "Encounter": "une prise en charge",
        "Communication": "vos notifications",
        "List": "une liste de documents de votre dossier",
    },
}

_UNKNOWN_ACTOR = {"en": "An unidentified system", "fr": "Un système non identifié"}
_FROM = {"en": "from", "fr": "depuis"}
_EMERGENCY = {"en": "emergency access", "fr": "accès d'urgence"}
_REASON = {"en": "reason", "fr": "motif"}
_ON_BEHALF = {"en": "on behalf of", "fr": "pour le compte de"}


def when(recorded: str, language: str) -> str:
    moment = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    month = _MONTHS[language][moment.month - 1]
    if language == "fr":
        return f"le {moment.day} {month} {moment.year} à {moment:%H:%M} UTC"
    return f"on {moment.day} {month} {moment.year} at {moment:%H:%M} UTC"


# Sign-in events of the patient's own account or of their representatives.
_ACCOUNT_ACTORS = {
    "en": {"patient": "You", "representative": "Your representative"},
    "fr": {"patient": "Vous", "representative": "Votre mandataire"},
}
_ACCOUNT_VERBS = {
    "en": {
        "login": "signed in",
        "enrol": "created an account",
        "enrol-confirm": "confirmed the account's second factor",
        "password-change": "changed the account's password",
        "recovery-code-use": "used a recovery code",
        "lockout": "had the account locked after repeated failed sign-ins",
        "act-for": "started acting on your behalf",
    },
    "fr": {
        "login": "connexion",
        "enrol": "création du compte",
        "enrol-confirm": "confirmation du second facteur du compte",
        "password-change": "changement du mot de passe du compte",
        "recovery-code-use": "utilisation d'un code de secours",
        "lockout": "verrouillage du compte après des échecs de connexion répétés",
        "act-for": "début d'une action en votre nom",
    },
}
_FAILED = {"en": "failed", "fr": "échec"}


def _describe_account_event(record: AuditRecord, language: str) -> str:
    actor = _ACCOUNT_ACTORS[language].get(record.agent.role or "", _UNKNOWN_ACTOR[language])
    event = _ACCOUNT_VERBS[language].get(record.interaction, record.interaction)
    failed = record.outcome != "0" and record.interaction != "lockout"
    where = f" ({_FROM[language]} {record.agent.network})" if record.agent.network else ""
    if language == "fr":
        sentence = f"{actor}{where} : {event}" + (f" ({_FAILED[language]})" if failed else "")
    elif failed:
        attempt = "sign in" if record.interaction == "login" else event
        sentence = f"{actor}{where} tried to {attempt} and failed"
    else:
        sentence = f"{actor}{where} {event}"
    return f"{sentence}, {when(record.recorded, language)}."


# Changes to who sees what, and emergencies: the words a patient reads for each.
_POLICY_EVENTS = {
    "en": {
        "grant-create": "gave an access to your record",
        "grant-revoke": "withdrew an access to your record",
        "grant-change": "changed an access to your record",
        "block-create": "blocked someone from your record",
        "block-revoke": "lifted a block on your record",
        "emergency-setting": "changed the emergency access setting of your record",
        "referring-physician": "changed your referring physician",
        "delegation-setting": "changed whether professionals may pass on their access",
        "delegation-create": "passed their access to your record on to a colleague",
        "default-confidentiality": "changed the default confidentiality of new documents",
        "record-close": "closed your record",
        "record-reopen": "reopened your record",
        "document-hide": "hid a document of your record",
        "document-unhide": "made a hidden document visible again",
        "document-confidentiality": "changed the confidentiality of a document",
        "care-event": "recorded a care event with you, which gives them access for a while",
        "emergency-access": "declared an emergency to open your record",
        "mandate-create": "named a representative for you",
        "mandate-end": "ended a representative's mandate",
    },
    "fr": {
        "grant-create": "a donné un accès à votre dossier",
        "grant-revoke": "a retiré un accès à votre dossier",
        "grant-change": "a modifié un accès à votre dossier",
        "block-create": "a bloqué l'accès de quelqu'un à votre dossier",
        "block-revoke": "a levé un blocage sur votre dossier",
        "emergency-setting": "a modifié le réglage de l'accès d'urgence à votre dossier",
        "referring-physician": "a changé votre médecin référent",
        "delegation-setting": "a modifié la possibilité de déléguer les accès",
        "delegation-create": "a délégué son accès à votre dossier à un confrère",
        "default-confidentiality": "a modifié la confidentialité par défaut des documents",
        "record-close": "a fermé votre dossier",
        "record-reopen": "a rouvert votre dossier",
        "document-hide": "a masqué un document de votre dossier",
        "document-unhide": "a rendu visible un document masqué",
        "document-confidentiality": "a modifié la confidentialité d'un document",
        "care-event": "a enregistré une prise en charge, qui lui donne accès pour un temps",
        "emergency-access": "a déclaré une urgence pour ouvrir votre dossier",
        "mandate-create": "vous a désigné un représentant",
        "mandate-end": "a mis fin au mandat d'un représentant",
    },
}
# Operators whose work reaches a patient's history: named by their office, not their account.
_OPERATOR_ACTORS = {
    "en": {"registrar": "A registrar of the patient and professional directories"},
    "fr": {"registrar": "Un agent d'enregistrement des annuaires"},
}
_ALERTED = {
    "en": "the security officer was alerted",
    "fr": "le responsable de la sécurité a été alerté",
}


def describe(
    record: AuditRecord, language: str = "en", names: Mapping[str, str] | None = None
) -> str:
    """One sentence saying who did what to which part of the record, when, and why."""
    if language not in _MONTHS:
        raise ValueError(f"no wording for language {language!r}")
    if record.kind == "authentication" and record.agent.role in ("patient", "representative"):
        return _describe_account_event(record, language)
    names = names or {}
    agent = record.agent
    if agent.role in _OPERATOR_ACTORS[language]:
        actor = _OPERATOR_ACTORS[language][agent.role or ""]
    elif agent.who:
        actor = names.get(agent.who, agent.who)
        if agent.organization:
            actor += f", {names.get(agent.organization, agent.organization)}"
    else:
        actor = _UNKNOWN_ACTOR[language]
        if agent.network:
            actor += f" ({_FROM[language]} {agent.network})"
    if agent.on_behalf_of:
        actor += f", {_ON_BEHALF[language]} {names.get(agent.on_behalf_of, agent.on_behalf_of)}"
    what = _WHAT[language].get(record.entity_type or "", record.entity_type or "?")
    refused = record.outcome != "0"
    policy = _POLICY_EVENTS[language].get(record.interaction)
    if record.kind == "alert":
        action = (
            f"{_TRIED[language]} {what} {_REFUSED[language]}"
            if (record.detail.get("decision") == "deny")
            else _POLICY_EVENTS[language]["emergency-access"]
        )
        sentence = f"{actor} {action}, {when(record.recorded, language)}, {_ALERTED[language]}"
        return sentence + "."
    if record.kind == "policy" and policy is not None:
        action = policy
    elif refused:
        action = f"{_TRIED[language]} {what} {_REFUSED[language]}"
    else:
        action = f"{_VERBS[language].get(record.interaction, record.interaction)} {what}"
    sentence = f"{actor} {action}, {when(record.recorded, language)}"
    if record.purpose_of_use == "EMER":
        sentence += f", {_EMERGENCY[language]}"
        reason = record.detail.get("reason")
        if reason:
            sentence += (
                f": {_REASON[language]} « {reason} »"
                if language == "fr"
                else f": {_REASON[language]} “{reason}”"
            )
    return sentence + "."
