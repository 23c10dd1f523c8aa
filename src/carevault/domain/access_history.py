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
    },
    "fr": {
        "Patient": "votre fiche d'identité",
        "DocumentReference": "un document de votre dossier",
        "Binary": "un document de votre dossier",
        "AuditEvent": "votre historique d'accès",
        "Consent": "vos réglages d'accès",
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
    if agent.who:
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
    if refused:
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
