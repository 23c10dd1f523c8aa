"""An audit entry told in plain words, for the patient it concerns (English, French, German).

"Dr X, Hospital Y read your document “Laboratory report”, on 12 March 2026 at 10:42 UTC,
emergency access: reason …". Names of people and organizations are looked up by the caller
and passed in ``names``; what may be said of a document (the display of its type, from the
affinity domain) in ``documents``. An entry whose actor is not identified says so rather than
guessing, and an account is never shown by its identifier: the patient's own account is "You",
a representative's "Your representative".

Entries are told one by one, in the order of the log: the caller lists them by leaf index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from carevault.domain.audit import ACTION_CREATE, ACTION_DELETE, ACTION_UPDATE, AuditRecord

LANGUAGES = ("en", "fr", "de")

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
    "de": [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ],
}


@dataclass(frozen=True)
class DocumentLabel:
    """What the history may say of one document: the display of its type in the reader's
    language, and whether it is its author's signature of another document (which carries the
    signed document's codes). The caller gives a label only for a document the patient may see
    (not one held until its author releases it): the words go to the patient alone."""

    kind: str
    signature: bool = False


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
    # German puts the participle last: each verb is a template around what was done.
    "de": {
        "read": "hat {what} gelesen",
        "vread": "hat eine frühere Fassung von {what} gelesen",
        "history-instance": "hat den Verlauf von {what} gelesen",
        "search-type": "hat {what} gefunden",
        "create": "hat {what} angelegt",
        "update": "hat {what} geändert",
        "conditional-update": "hat {what} geändert",
        "operation": "hat {what} bearbeitet",
        "capabilities": "hat {what} abgefragt",
        "transaction": "hat {what} hinzugefügt",
    },
}

# What a refusal says, by the kind of thing asked for: to see, to add, to change. The French
# forms take a direct object (no "à le" to contract).
_REFUSED = {
    "en": {
        "read": "was refused access to",
        "add": "was refused permission to add",
        "change": "was refused permission to change",
    },
    "fr": {
        "read": "s'est vu refuser de consulter",
        "add": "s'est vu refuser d'ajouter",
        "change": "s'est vu refuser de modifier",
    },
    "de": {
        "read": "hat keinen Zugriff auf {what} erhalten",
        "add": "hat keine Erlaubnis erhalten, {what} hinzuzufügen",
        "change": "hat keine Erlaubnis erhalten, {what} zu ändern",
    },
}

_WHAT = {
    "en": {
        "Patient": "your identity record",
        "DocumentReference": "a document of your record",
        "Binary": "the content of a document of your record",
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
        "Binary": "le contenu d'un document de votre dossier",
        "AuditEvent": "votre historique d'accès",
        "Consent": "vos réglages d'accès",
        "Bundle": "des documents à votre dossier",
        "Encounter": "une prise en charge",
        "Communication": "vos notifications",
        "List": "une liste de documents de votre dossier",
    },
    # In the accusative, as every German phrase above takes it.
    "de": {
        "Patient": "Ihre Stammdaten",
        "DocumentReference": "ein Dokument Ihrer Akte",
        "Binary": "den Inhalt eines Dokuments Ihrer Akte",
        "AuditEvent": "Ihr Zugriffsprotokoll",
        "Consent": "Ihre Zugriffseinstellungen",
        "Bundle": "Dokumente zu Ihrer Akte",
        "Encounter": "eine Behandlung",
        "Communication": "Ihre Benachrichtigungen",
        "List": "eine Dokumentliste Ihrer Akte",
    },
}

# A document the history may name.
_DOCUMENT = {
    "en": {
        "DocumentReference": "your document “{kind}”",
        "Binary": "the content of your document “{kind}”",
        "signature": "the author's signature of your document “{kind}”",
    },
    "fr": {
        "DocumentReference": "votre document « {kind} »",
        "Binary": "le contenu de votre document « {kind} »",
        "signature": "la signature par son auteur de votre document « {kind} »",
    },
    "de": {
        "DocumentReference": "Ihr Dokument „{kind}“",
        "Binary": "den Inhalt Ihres Dokuments „{kind}“",
        "signature": "die Signatur des Verfassers Ihres Dokuments „{kind}“",
    },
}

# FHIR operations on a patient: what was done, and what was refused.
_OPERATIONS = {
    "en": {
        "$access-history": (
            "viewed your access history",
            "was refused access to your access history",
        ),
        "$emergency-access": (
            "declared an emergency to open your record",
            "was refused an emergency access to your record",
        ),
        "$explain": (
            "asked why a professional may or may not see your record",
            "was refused an explanation of who may see your record",
        ),
        "$ihe-pix": ("looked up your identifiers", "was refused a look-up of your identifiers"),
        "$merge": (
            "merged your identity record with another one",
            "was refused the merge of your identity record",
        ),
        "$unmerge": (
            "undid a merge of your identity record",
            "was refused undoing a merge of your identity record",
        ),
    },
    "fr": {
        "$access-history": (
            "a consulté votre historique d'accès",
            "s'est vu refuser de consulter votre historique d'accès",
        ),
        "$emergency-access": (
            "a déclaré une urgence pour ouvrir votre dossier",
            "s'est vu refuser un accès d'urgence à votre dossier",
        ),
        "$explain": (
            "a demandé pourquoi un professionnel peut ou non voir votre dossier",
            "s'est vu refuser l'explication des accès à votre dossier",
        ),
        "$ihe-pix": (
            "a recherché vos identifiants",
            "s'est vu refuser la recherche de vos identifiants",
        ),
        "$merge": (
            "a fusionné votre fiche d'identité avec une autre",
            "s'est vu refuser la fusion de votre fiche d'identité",
        ),
        "$unmerge": (
            "a annulé une fusion de votre fiche d'identité",
            "s'est vu refuser l'annulation d'une fusion de votre fiche d'identité",
        ),
    },
    "de": {
        "$access-history": (
            "hat Ihr Zugriffsprotokoll gelesen",
            "hat keinen Zugriff auf Ihr Zugriffsprotokoll erhalten",
        ),
        "$emergency-access": (
            "hat einen Notfall erklärt, um Ihre Akte zu öffnen",
            "hat keinen Notfallzugriff auf Ihre Akte erhalten",
        ),
        "$explain": (
            "hat gefragt, warum eine Fachperson Ihre Akte sehen darf oder nicht",
            "hat keine Erklärung erhalten, wer Ihre Akte sehen darf",
        ),
        "$ihe-pix": (
            "hat Ihre Kennungen nachgeschlagen",
            "hat Ihre Kennungen nicht nachschlagen dürfen",
        ),
        "$merge": (
            "hat Ihre Stammdaten mit anderen zusammengeführt",
            "hat Ihre Stammdaten nicht zusammenführen dürfen",
        ),
        "$unmerge": (
            "hat eine Zusammenführung Ihrer Stammdaten rückgängig gemacht",
            "hat eine Zusammenführung Ihrer Stammdaten nicht rückgängig machen dürfen",
        ),
    },
}

_UNKNOWN_ACTOR = {
    "en": "An unidentified system",
    "fr": "Un système non identifié",
    "de": "Ein nicht identifiziertes System",
}
_FROM = {"en": "from", "fr": "depuis", "de": "von"}
_EMERGENCY = {"en": "emergency access", "fr": "accès d'urgence", "de": "Notfallzugriff"}
_REASON = {"en": "reason", "fr": "motif", "de": "Grund"}
_ON_BEHALF = {"en": "on behalf of", "fr": "pour le compte de", "de": "im Auftrag von"}
_UNTIL = {"en": "until", "fr": "jusqu'au", "de": "bis zum"}
_NO_END = {"en": "with no end date", "fr": "sans date de fin", "de": "ohne Enddatum"}


_AT = {"en": "at", "fr": "à", "de": "um"}
_ON = {"en": "on", "fr": "le", "de": "am"}
# How each language quotes the reason a professional gave.
_QUOTES = {"en": ("“", "”"), "fr": ("« ", " »"), "de": ("„", "“")}


def moment(recorded: str, language: str) -> str:
    """A date and time as a patient reads it: "12 March 2026 at 10:42 UTC"."""
    at = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    month = _MONTHS[language][at.month - 1]
    day = f"{at.day}." if language == "de" else str(at.day)
    return f"{day} {month} {at.year} {_AT[language]} {at:%H:%M} UTC"


def when(recorded: str, language: str) -> str:
    return f"{_ON[language]} {moment(recorded, language)}"


# People who act through an account: the patient themself, or their representative.
_ACCOUNT_ACTORS = {
    "en": {
        "patient": "You",
        "representative": "Your representative",
        # Operators whose work reaches a patient's history: named by their office.
        "registrar": "A registrar of the patient and professional directories",
    },
    "fr": {
        "patient": "Vous",
        "representative": "Votre mandataire",
        "registrar": "Un agent d'enregistrement des annuaires",
    },
    "de": {
        "patient": "Sie",
        "representative": "Ihre Vertretung",
        "registrar": "Ein Registerführer der Patienten- und Fachpersonenverzeichnisse",
    },
}
_SOME_ACCOUNT = {
    "en": "Someone signed in",
    "fr": "Une personne connectée",
    "de": "Eine angemeldete Person",
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
        "logout-everywhere": "signed out everywhere (every session ended)",
    },
    "fr": {
        "login": "connexion",
        "enrol": "création du compte",
        "enrol-confirm": "confirmation du second facteur du compte",
        "password-change": "changement du mot de passe du compte",
        "recovery-code-use": "utilisation d'un code de secours",
        "lockout": "verrouillage du compte après des échecs de connexion répétés",
        "act-for": "début d'une action en votre nom",
        "logout-everywhere": "déconnexion partout (toutes les sessions fermées)",
    },
    "de": {
        "login": "Anmeldung",
        "enrol": "Anlage des Kontos",
        "enrol-confirm": "Bestätigung des zweiten Faktors des Kontos",
        "password-change": "Änderung des Passworts des Kontos",
        "recovery-code-use": "Verwendung eines Wiederherstellungscodes",
        "lockout": "Sperrung des Kontos nach wiederholten Fehlanmeldungen",
        "act-for": "Beginn eines Handelns in Ihrem Namen",
        "logout-everywhere": "Abmeldung überall (alle Sitzungen beendet)",
    },
}
_FAILED = {"en": "failed", "fr": "échec", "de": "fehlgeschlagen"}

# The patient (or their representative) reading the access history in the portal.
_OWN_HISTORY = {
    "en": "viewed your access history",
    "fr": "a consulté votre historique d'accès",
    "de": "hat Ihr Zugriffsprotokoll gelesen",
}


def _account_actor(record: AuditRecord, language: str) -> str:
    role = "patient" if _is_the_patient(record) else record.agent.role or ""
    actor = _ACCOUNT_ACTORS[language].get(role, _SOME_ACCOUNT[language])
    if record.agent.network:
        actor += f" ({_FROM[language]} {record.agent.network})"
    return actor


def _describe_account_event(record: AuditRecord, language: str) -> str:
    actor = _account_actor(record, language)
    event = _ACCOUNT_VERBS[language].get(record.interaction, record.interaction)
    failed = record.outcome != "0" and record.interaction != "lockout"
    if language == "fr":
        sentence = f"{actor} : {event}" + (f" ({_FAILED[language]})" if failed else "")
    elif language == "de":
        sentence = f"{actor}: {event}" + (f" ({_FAILED[language]})" if failed else "")
    elif failed:
        attempt = "sign in" if record.interaction == "login" else event
        sentence = f"{actor} tried to {attempt} and failed"
    else:
        sentence = f"{actor} {event}"
    return f"{sentence}, {when(record.recorded, language)}."


# Changes to who sees what, and emergencies: the words a patient reads for each. ``{document}``
# is the document concerned, named when the caller could.
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
        "record-open": "opened your record",
        "mandate-limit": "changed a representative's mandate",
        "document-hide": "hid {document}",
        "document-unhide": "made {document} visible again",
        "document-confidentiality": "changed the confidentiality of {document}",
        "care-event": "recorded a care event with you, which gives them access to your record",
        "presence-code": "made a presence code, which lets the professional who receives it "
        "record a care event with you",
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
        "record-open": "a ouvert votre dossier",
        "mandate-limit": "a modifié le mandat d'un représentant",
        "document-hide": "a masqué {document}",
        "document-unhide": "a rendu visible {document}",
        "document-confidentiality": "a modifié la confidentialité de {document}",
        "care-event": "a enregistré une prise en charge, qui lui donne accès à votre dossier",
        "presence-code": "a créé un code de présence, qui permet au professionnel qui le "
        "reçoit d'enregistrer une prise en charge",
        "emergency-access": "a déclaré une urgence pour ouvrir votre dossier",
        "mandate-create": "vous a désigné un représentant",
        "mandate-end": "a mis fin au mandat d'un représentant",
    },
    "de": {
        "grant-create": "hat einen Zugriff auf Ihre Akte gewährt",
        "grant-revoke": "hat einen Zugriff auf Ihre Akte entzogen",
        "grant-change": "hat einen Zugriff auf Ihre Akte geändert",
        "block-create": "hat jemanden für Ihre Akte gesperrt",
        "block-revoke": "hat eine Sperre Ihrer Akte aufgehoben",
        "emergency-setting": "hat die Einstellung des Notfallzugriffs auf Ihre Akte geändert",
        "referring-physician": "hat Ihre Hausärztin oder Ihren Hausarzt geändert",
        "delegation-setting": "hat geändert, ob Fachpersonen ihren Zugriff weitergeben dürfen",
        "delegation-create": "hat den Zugriff auf Ihre Akte an eine Kollegin oder einen "
        "Kollegen weitergegeben",
        "default-confidentiality": "hat die Standardvertraulichkeit neuer Dokumente geändert",
        "record-close": "hat Ihre Akte geschlossen",
        "record-reopen": "hat Ihre Akte wieder geöffnet",
        "record-open": "hat Ihre Akte eröffnet",
        "mandate-limit": "hat die Vollmacht einer Vertretung geändert",
        "document-hide": "hat {document} ausgeblendet",
        "document-unhide": "hat {document} wieder sichtbar gemacht",
        "document-confidentiality": "hat die Vertraulichkeit von {document} geändert",
        "care-event": "hat eine Behandlung mit Ihnen erfasst, die Zugriff auf Ihre Akte gibt",
        "presence-code": "hat einen Anwesenheitscode erstellt, mit dem die Fachperson, die ihn "
        "erhält, eine Behandlung mit Ihnen erfassen kann",
        "emergency-access": "hat einen Notfall erklärt, um Ihre Akte zu öffnen",
        "mandate-create": "hat für Sie eine Vertretung benannt",
        "mandate-end": "hat die Vollmacht einer Vertretung beendet",
    },
}
# A care event always ends; an entry recorded without its end says so vaguely rather than not.
_FOR_A_TIME = {"en": "for a limited time", "fr": "pour un temps limité", "de": "für begrenzte Zeit"}
_ALERTED = {
    "en": "the security officer was alerted",
    "fr": "le responsable de la sécurité a été alerté",
    "de": "der Sicherheitsbeauftragte wurde benachrichtigt",
}


def describe(
    record: AuditRecord,
    language: str = "en",
    names: Mapping[str, str] | None = None,
    documents: Mapping[str, DocumentLabel] | None = None,
) -> str:
    """One sentence saying who did what to which part of the record, when, and why."""
    if language not in LANGUAGES:
        raise ValueError(f"no wording for language {language!r}")
    agent = record.agent
    if record.kind == "authentication" and agent.role in ("patient", "representative"):
        return _describe_account_event(record, language)
    names = names or {}
    actor = _actor(record, language, names)
    what = _what(record, language, documents or {})
    operation = (record.query or "").split("?", 1)[0]
    operations = _OPERATIONS[language].get(operation) if record.interaction == "operation" else None
    refused = record.outcome != "0"
    if record.kind == "alert":
        if record.detail.get("decision") == "deny":
            action = operations[1] if operations else _refusal(record, what, language)
        else:
            action = _POLICY_EVENTS[language]["emergency-access"]
        sentence = f"{actor} {action}, {when(record.recorded, language)}, {_ALERTED[language]}"
        return sentence + "."
    policy = _POLICY_EVENTS[language].get(record.interaction)
    if record.kind == "policy" and policy is not None:
        action = _policy_action(record, policy, what, language)
    elif record.kind == "patient-action" and record.interaction == "access-history":
        action = _OWN_HISTORY[language]
    elif operations is not None:
        action = operations[1] if refused else operations[0]
    elif refused:
        action = _refusal(record, what, language)
    else:
        verb = _VERBS[language].get(record.interaction, record.interaction)
        action = verb.format(what=what) if "{what}" in verb else f"{verb} {what}"
    if _is_the_patient(record):
        action = _to_you(action, language)
    sentence = f"{actor} {action}, {when(record.recorded, language)}"
    if record.purpose_of_use == "EMER":
        sentence += f", {_EMERGENCY[language]}"
        reason = record.detail.get("reason")
        if reason:
            opening, closing = _QUOTES[language]
            sentence += f": {_REASON[language]} {opening}{reason}{closing}"
    return sentence + "."


def _actor(record: AuditRecord, language: str, names: Mapping[str, str]) -> str:
    agent = record.agent
    if _is_the_patient(record) or (agent.who and agent.who.startswith("account:")):
        # An account's identifier means nothing to a person and is not shown.
        return _account_actor(record, language)
    if agent.who:
        actor = names.get(agent.who, agent.who)
        if agent.organization:
            actor += f", {names.get(agent.organization, agent.organization)}"
    else:
        actor = _UNKNOWN_ACTOR[language]
        if agent.network:
            actor += f" ({_FROM[language]} {agent.network})"
    if agent.on_behalf_of and agent.on_behalf_of != f"Patient/{record.patient}":
        actor += f", {_ON_BEHALF[language]} {names.get(agent.on_behalf_of, agent.on_behalf_of)}"
    return actor


def _is_the_patient(record: AuditRecord) -> bool:
    """Whether the patient acted themself: through their own account (portal or app), or
    named by their own entry in the patient index."""
    who = record.agent.who or ""
    if who.startswith("account:"):
        return record.agent.role == "patient"
    return record.patient is not None and who == f"Patient/{record.patient}"


def _to_you(action: str, language: str) -> str:
    """The phrases are written for a third person; the patient is addressed as "you"."""
    if language == "fr":
        for third, second in (("a ", "avez "), ("s'est vu ", "vous êtes vu ")):
            if action.startswith(third):
                return second + action.removeprefix(third)
        return action
    if language == "de":
        return "haben " + action.removeprefix("hat ") if action.startswith("hat ") else action
    return "were " + action.removeprefix("was ") if action.startswith("was ") else action


def _what(record: AuditRecord, language: str, documents: Mapping[str, DocumentLabel]) -> str:
    kind = record.entity_type or ""
    label = (
        documents.get(record.entity_id or "") if kind in ("DocumentReference", "Binary") else None
    )
    if label is not None:
        template = _DOCUMENT[language]["signature" if label.signature else kind]
        return template.format(kind=label.kind)
    return _WHAT[language].get(kind, kind or "?")


def _refusal(record: AuditRecord, what: str, language: str) -> str:
    if record.action == ACTION_CREATE:
        verb = "add"
    elif record.action in (ACTION_UPDATE, ACTION_DELETE):
        verb = "change"
    else:
        verb = "read"
    refused = _REFUSED[language][verb]
    return refused.format(what=what) if "{what}" in refused else f"{refused} {what}"


def _policy_action(record: AuditRecord, policy: str, what: str, language: str) -> str:
    action = policy.format(document=what) if "{document}" in policy else policy
    end = record.detail.get("end") or record.detail.get("until")
    if end == "none":
        return f"{action}, {_NO_END[language]}"
    if end:
        return f"{action} {_UNTIL[language]} {moment(end, language)}"
    if record.interaction == "care-event":
        return f"{action} {_FOR_A_TIME[language]}"
    return action


# --- what a person asks to see ----------------------------------------------------------------


class Shown(StrEnum):
    """The entries a person asks to see on their history page."""

    ALL = "all"
    EMERGENCIES = "emergencies"  # break-the-glass accesses, and what was read under them
    OTHERS = "others"  # what professionals, systems and registrars did: not you
    REFUSED = "refused"  # attempts the platform refused
    YOURS = "yours"  # what you (or your representative) did, sign-ins included


def is_emergency(record: AuditRecord) -> bool:
    """An emergency access declared, refused, or a read made under one."""
    operation = (record.query or "").split("?", 1)[0]
    return (
        record.purpose_of_use == "EMER"
        or record.interaction == "emergency-access"
        or operation == "$emergency-access"
    )


def is_emergency_declaration(record: AuditRecord) -> bool:
    """The one entry that says the glass was broken and the record opened (the request and
    the officer's alert that go with it are entries of their own)."""
    return record.kind == "policy" and record.interaction == "emergency-access"


def _glass_part(record: AuditRecord) -> str | None:
    """Which part of a break-the-glass that opened the record an entry tells, if any: its
    declaration (the opening, with its reason and end), the request the professional made,
    or the security officer's alert."""
    if is_emergency_declaration(record) and record.outcome == "0":
        return "declaration"
    operation = (record.query or "").split("?", 1)[0]
    if record.kind == "access" and operation == "$emergency-access" and record.outcome == "0":
        return "request"
    if (
        record.kind == "alert"
        and record.detail.get("rule") == "emergency"
        and record.detail.get("decision") == "permit"
    ):
        return "alert"
    return None


def break_the_glass_parts(entries: Iterable[tuple[int, AuditRecord]]) -> dict[int, int]:
    """The entries a break-the-glass's declaration already tells, by leaf index, each to the
    declaration's leaf index: one break-the-glass is recorded as three entries (the request,
    the opening, the officer's alert), which a person reads as one event. They are the
    request and the alert recorded next to the declaration among ``entries`` (consecutive in
    the log's order, by the same professional, one of each); anything between them, or a
    second declaration, keeps them apart. A refused request opened nothing and is left
    alone. The entries themselves are all kept: the audit log and its proofs are unchanged,
    only the telling is folded."""
    parts: dict[int, int] = {}
    run: list[tuple[int, str, str | None]] = []  # (leaf index, part, professional)

    def close() -> None:
        declared = [index for index, part, _ in run if part == "declaration"]
        if len(declared) == 1:
            parts.update({index: declared[0] for index, part, _ in run if index != declared[0]})

    for index, record in sorted(entries, key=lambda entry: entry[0]):
        part = _glass_part(record)
        if part is None or (
            run and (record.agent.who != run[0][2] or any(part == p for _, p, _ in run))
        ):
            close()
            run = []
        if part is not None:
            run.append((index, part, record.agent.who))
    close()
    return parts


def is_yours(record: AuditRecord) -> bool:
    """Done by the patient themself or by their representative."""
    return _is_the_patient(record) or (
        (record.agent.who or "").startswith("account:") and record.agent.role == "representative"
    )


def by_professional_or_system(record: AuditRecord) -> bool:
    """Done by a professional or a system: not through any account (the patient's, a
    representative's, an operator's) nor by the patient's own entry."""
    who = record.agent.who or ""
    return not who.startswith("account:") and not _is_the_patient(record)


def shows(record: AuditRecord, shown: Shown) -> bool:
    """Whether the entry belongs on a page that shows ``shown``."""
    if shown is Shown.EMERGENCIES:
        return is_emergency(record)
    if shown is Shown.OTHERS:
        return not is_yours(record)
    if shown is Shown.REFUSED:
        return record.outcome != "0"
    if shown is Shown.YOURS:
        return is_yours(record)
    return True
