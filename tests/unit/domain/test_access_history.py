"""The patient's access history in plain words, in English, French and German (the languages
of the portal; the affinity domain's displays of document kinds are in English and French)."""

from __future__ import annotations

import pytest

from carevault.domain.access_history import DocumentLabel, break_the_glass_parts, describe
from carevault.domain.audit import Agent, AuditRecord


def record(**fields: object) -> AuditRecord:
    base: dict[str, object] = {
        "stream": "clinical", "recorded": "2026-03-12T10:42:00.000Z", "kind": "access",
        "action": "R", "interaction": "read", "outcome": "0",
        "agent": Agent(who="Practitioner/1", organization="Organization/2"),
        "patient": "p1", "entity_type": "DocumentReference"}
    base.update(fields)
    return AuditRecord(**base)  # type: ignore[arg-type]


NAMES = {"Practitioner/1": "Dr Anne Weber", "Organization/2": "CHL"}


def test_a_read_names_the_professional_the_organization_and_the_time() -> None:
    assert describe(record(), "en", NAMES) == (
        "Dr Anne Weber, CHL read a document of your record, on 12 March 2026 at 10:42 UTC.")
    assert describe(record(), "fr", NAMES) == (
        "Dr Anne Weber, CHL a consulté un document de votre dossier, "
        "le 12 mars 2026 à 10:42 UTC.")


def test_emergency_access_gives_its_reason() -> None:
    emergency = record(purpose_of_use="EMER", detail={"reason": "unconscious at A&E"})
    assert describe(emergency, "en", NAMES).endswith(
        "emergency access: reason “unconscious at A&E”.")
    assert "accès d'urgence: motif « unconscious at A&E »" in describe(emergency, "fr", NAMES)


def test_a_refused_attempt_says_what_was_refused() -> None:
    refused = record(outcome="4", agent=Agent(network="203.0.113.9"), entity_type="Patient")
    assert describe(refused) == (
        "An unidentified system (from 203.0.113.9) was refused access to your identity record, "
        "on 12 March 2026 at 10:42 UTC.")
    assert describe(refused, "fr") == (
        "Un système non identifié (depuis 203.0.113.9) s'est vu refuser de consulter votre "
        "fiche d'identité, le 12 mars 2026 à 10:42 UTC.")


@pytest.mark.parametrize(("fields", "english", "french"), [
    ({"entity_type": "DocumentReference", "interaction": "search-type"},
     "Dr Anne Weber, CHL was refused access to a document of your record,",
     "Dr Anne Weber, CHL s'est vu refuser de consulter un document de votre dossier,"),
    ({"entity_type": "Consent", "interaction": "search-type"},
     "was refused access to your access settings,",
     "s'est vu refuser de consulter vos réglages d'accès,"),
    ({"entity_type": "Bundle", "interaction": "transaction", "action": "C"},
     "was refused permission to add documents to your record,",
     "s'est vu refuser d'ajouter des documents à votre dossier,"),
    ({"entity_type": "Patient", "interaction": "update", "action": "U"},
     "was refused permission to change your identity record,",
     "s'est vu refuser de modifier votre fiche d'identité,"),
    # An operation is named for what it is, not for the resource it hangs on.
    ({"entity_type": "Patient", "interaction": "operation", "action": "E",
      "query": "$access-history"},
     "Dr Anne Weber, CHL was refused access to your access history,",
     "Dr Anne Weber, CHL s'est vu refuser de consulter votre historique d'accès,"),
    ({"entity_type": "Patient", "interaction": "operation", "action": "E",
      "query": "$explain?practitioner"},
     "was refused an explanation of who may see your record,",
     "s'est vu refuser l'explication des accès à votre dossier,"),
])
def test_a_refusal_names_what_was_refused_in_plain_words(
        fields: dict[str, object], english: str, french: str) -> None:
    refused = record(outcome="4", **fields)
    assert english in describe(refused, "en", NAMES)
    assert french in describe(refused, "fr", NAMES)
    for text in (describe(refused, "en", NAMES), describe(refused, "fr", NAMES)):
        assert "tried to open" not in text
        assert "$" not in text


def test_a_permitted_operation_is_named_too() -> None:
    done = record(entity_type="Patient", interaction="operation", action="E",
                  query="$access-history")
    assert describe(done, "en", NAMES).startswith(
        "Dr Anne Weber, CHL viewed your access history, on 12 March")
    assert describe(done, "fr", NAMES).startswith(
        "Dr Anne Weber, CHL a consulté votre historique d'accès, le 12 mars")


# --- (a) the patient reading their own history ---------------------------------------------


def own_view(role: str = "patient") -> AuditRecord:
    """What the portal records when a signed-in patient opens their history."""
    return record(kind="patient-action", interaction="access-history",
                  agent=Agent(who="account:8c2f36b0", role=role, network="10.0.0.1"),
                  entity_type="AuditEvent")


def test_the_patient_viewing_their_own_history_reads_as_such() -> None:
    assert describe(own_view(), "en") == (
        "You (from 10.0.0.1) viewed your access history, on 12 March 2026 at 10:42 UTC.")
    assert describe(own_view(), "fr") == (
        "Vous (depuis 10.0.0.1) avez consulté votre historique d'accès, "
        "le 12 mars 2026 à 10:42 UTC.")
    assert describe(own_view("representative"), "en").startswith(
        "Your representative (from 10.0.0.1) viewed your access history, on 12 March")
    assert describe(own_view("representative"), "fr").startswith(
        "Votre mandataire (depuis 10.0.0.1) a consulté votre historique d'accès, le 12 mars")


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("fields", [
    {},  # a read through the patient's own app
    {"outcome": "4"},
    {"kind": "policy", "interaction": "grant-create", "action": "C",
     "detail": {"end": "2026-06-01T00:00:00.000Z"}},
    {"interaction": "operation", "entity_type": "Patient", "query": "$access-history"},
    {"kind": "patient-action", "interaction": "something-new"},
])
def test_an_account_is_never_shown_by_its_identifier(
        language: str, fields: dict[str, object]) -> None:
    for role in ("patient", "representative", None):
        done = record(agent=Agent(who="account:8c2f36b0", role=role), **fields)
        assert "account" not in describe(done, language)
        assert "8c2f36b0" not in describe(done, language)


@pytest.mark.parametrize(("fields", "english", "french"), [
    ({}, "You read a document of your record,", "Vous avez consulté un document de votre dossier,"),
    ({"outcome": "4"}, "You were refused access to a document of your record,",
     "Vous vous êtes vu refuser de consulter un document de votre dossier,"),
    ({"kind": "policy", "interaction": "grant-create", "action": "C"},
     "You gave an access to your record,", "Vous avez donné un accès à votre dossier,"),
])
def test_the_patient_is_addressed_as_you(fields: dict[str, object], english: str,
                                         french: str) -> None:
    done = record(agent=Agent(who="account:a1", role="patient"), **fields)
    assert describe(done, "en").startswith(english)
    assert describe(done, "fr").startswith(french)


def test_the_patient_named_by_their_own_entry_is_you_too() -> None:
    done = record(kind="policy", interaction="grant-create", action="C",
                  agent=Agent(who="Patient/p1", role="patient"))
    assert describe(done, "en").startswith("You gave an access to your record, on 12 March")
    assert describe(done, "fr").startswith("Vous avez donné un accès à votre dossier, le 12")
    other = record(agent=Agent(who="Patient/p2", role="patient"))
    assert describe(other, "en").startswith("Patient/p2 read")  # not this record's patient


def test_a_representative_acting_for_the_patient_is_not_said_to_act_for_a_raw_id() -> None:
    done = record(agent=Agent(who="account:r1", role="representative",
                              on_behalf_of="Patient/p1"))
    assert describe(done, "en").startswith(
        "Your representative read a document of your record, on 12 March")
    assert "Patient/p1" not in describe(done, "fr")


# --- (d) which document ----------------------------------------------------------------------


LAB = {"d1": DocumentLabel("Laboratory report"), "s1": DocumentLabel("Laboratory report", True)}
LABO = {"d1": DocumentLabel("Compte rendu d'examens biologiques"),
        "s1": DocumentLabel("Compte rendu d'examens biologiques", True)}


@pytest.mark.parametrize(("fields", "english", "french"), [
    ({"entity_id": "d1"},
     "Dr Anne Weber, CHL read your document “Laboratory report”, on 12 March",
     "Dr Anne Weber, CHL a consulté votre document « Compte rendu d'examens biologiques », "
     "le 12 mars"),
    ({"entity_id": "d1", "entity_type": "Binary"},
     "Dr Anne Weber, CHL read the content of your document “Laboratory report”, on",
     "Dr Anne Weber, CHL a consulté le contenu de votre document « Compte rendu d'examens "
     "biologiques », le"),
    ({"entity_id": "s1", "entity_type": "Binary"},
     "read the author's signature of your document “Laboratory report”, on",
     "a consulté la signature par son auteur de votre document « Compte rendu d'examens "
     "biologiques », le"),
    ({"entity_id": "d1", "outcome": "4"},
     "was refused access to your document “Laboratory report”, on",
     "s'est vu refuser de consulter votre document « Compte rendu d'examens biologiques », le"),
    ({"entity_id": "d1", "kind": "policy", "interaction": "document-hide", "action": "U"},
     "Dr Anne Weber, CHL hid your document “Laboratory report”, on",
     "a masqué votre document « Compte rendu d'examens biologiques », le"),
])
def test_an_entry_about_a_document_names_its_kind(fields: dict[str, object], english: str,
                                                  french: str) -> None:
    entry = record(**fields)
    assert english in describe(entry, "en", NAMES, LAB)
    assert french in describe(entry, "fr", NAMES, LABO)


def test_a_document_without_a_label_stays_unnamed() -> None:
    """The caller gives no label for a document the patient may not see yet (or unknown)."""
    for entity_id in ("held", None):
        entry = record(entity_id=entity_id)
        assert describe(entry, "en", NAMES, LAB) == describe(record(), "en", NAMES)
        assert "a document of your record" in describe(entry, "en", NAMES, LAB)
    hidden = record(entity_id="held", kind="policy", interaction="document-hide", action="U")
    assert "hid a document of your record" in describe(hidden, "en", NAMES, LAB)
    assert "a masqué un document de votre dossier" in describe(hidden, "fr", NAMES, LABO)


@pytest.mark.parametrize(("interaction", "outcome", "role", "english", "french"), [
    ("login", "0", "patient", "You (from 10.0.0.1) signed in",
     "Vous (depuis 10.0.0.1) : connexion"),
    ("login", "4", "patient", "You (from 10.0.0.1) tried to sign in and failed",
     "connexion (échec)"),
    ("lockout", "8", "patient", "had the account locked", "verrouillage du compte"),
    ("act-for", "0", "representative", "Your representative (from 10.0.0.1) started acting",
     "Votre mandataire"),
])
def test_sign_in_events(interaction: str, outcome: str, role: str, english: str,
                        french: str) -> None:
    event = record(kind="authentication", action="E", interaction=interaction, outcome=outcome,
                   agent=Agent(who="account:a1", role=role, network="10.0.0.1"),
                   entity_type=None)
    assert english in describe(event, "en")
    assert french in describe(event, "fr")
    assert "account:a1" not in describe(event, "en")


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="language"):
        describe(record(), "it")


# --- German: the participle goes last, the patient is "Sie" ------------------------------------


def test_a_read_in_german() -> None:
    assert describe(record(), "de", NAMES) == (
        "Dr Anne Weber, CHL hat ein Dokument Ihrer Akte gelesen, am 12. März 2026 um 10:42 UTC.")


def test_an_emergency_in_german_gives_its_reason_in_german_quotes() -> None:
    emergency = record(purpose_of_use="EMER", detail={"reason": "bewusstlos eingeliefert"})
    assert describe(emergency, "de", NAMES).endswith(
        "Notfallzugriff: Grund „bewusstlos eingeliefert“.")


@pytest.mark.parametrize(("fields", "german"), [
    ({"outcome": "4", "entity_type": "Patient"},
     "Dr Anne Weber, CHL hat keinen Zugriff auf Ihre Stammdaten erhalten, am 12. März"),
    ({"outcome": "4", "entity_type": "Bundle", "interaction": "transaction", "action": "C"},
     "hat keine Erlaubnis erhalten, Dokumente zu Ihrer Akte hinzuzufügen, am"),
    ({"interaction": "operation", "entity_type": "Patient", "query": "$emergency-access"},
     "hat einen Notfall erklärt, um Ihre Akte zu öffnen, am"),
    ({"kind": "policy", "interaction": "grant-create", "action": "C",
      "detail": {"end": "2027-01-01T00:00:00.000Z"}},
     "hat einen Zugriff auf Ihre Akte gewährt bis zum 1. Januar 2027 um 00:00 UTC, am 12. März"),
])
def test_what_was_done_and_refused_in_german(fields: dict[str, object], german: str) -> None:
    assert german in describe(record(**fields), "de", NAMES)


def test_the_patient_is_addressed_as_sie() -> None:
    done = record(agent=Agent(who="account:a1", role="patient"))
    assert describe(done, "de").startswith("Sie haben ein Dokument Ihrer Akte gelesen, am 12.")
    signed_in = record(kind="authentication", action="E", interaction="login", outcome="4",
                       agent=Agent(who="account:a1", role="patient", network="10.0.0.1"),
                       entity_type=None)
    assert describe(signed_in, "de").startswith("Sie (von 10.0.0.1): Anmeldung (fehlgeschlagen)")


def test_a_named_document_in_german() -> None:
    read = record(entity_id="d1")
    assert "hat Ihr Dokument „Laborbefund“ gelesen" in describe(
        read, "de", NAMES, {"d1": DocumentLabel("Laborbefund")})


@pytest.mark.parametrize(("interaction", "english", "french"), [
    ("grant-create", "Dr Anne Weber, CHL gave an access to your record, on 12 March",
     "Dr Anne Weber, CHL a donné un accès à votre dossier, le 12 mars"),
    ("care-event", "recorded a care event with you, which gives them access to your record "
     "for a limited time, on", "a enregistré une prise en charge, qui lui donne accès à votre "
     "dossier pour un temps limité, le"),
    ("record-close", "closed your record", "a fermé votre dossier"),
])
def test_changes_to_who_sees_what(interaction: str, english: str, french: str) -> None:
    change = record(kind="policy", interaction=interaction, action="C", entity_type="Consent")
    assert english in describe(change, "en", NAMES)
    assert french in describe(change, "fr", NAMES)


# --- (e) for how long ------------------------------------------------------------------------


@pytest.mark.parametrize(("interaction", "detail", "english", "french"), [
    ("care-event", {"start": "2026-03-12T10:42:00.000Z", "end": "2026-06-10T10:42:00.000Z"},
     "Dr Anne Weber, CHL recorded a care event with you, which gives them access to your "
     "record until 10 June 2026 at 10:42 UTC, on 12 March 2026 at 10:42 UTC.",
     "Dr Anne Weber, CHL a enregistré une prise en charge, qui lui donne accès à votre "
     "dossier jusqu'au 10 juin 2026 à 10:42 UTC, le 12 mars 2026 à 10:42 UTC."),
    ("grant-create", {"end": "2027-01-01T00:00:00.000Z"},
     "gave an access to your record until 1 January 2027 at 00:00 UTC, on 12 March",
     "a donné un accès à votre dossier jusqu'au 1 janvier 2027 à 00:00 UTC, le 12 mars"),
    ("grant-change", {"end": "none"},
     "changed an access to your record, with no end date, on 12 March",
     "a modifié un accès à votre dossier, sans date de fin, le 12 mars"),
    ("delegation-create", {"end": "2026-03-19T10:42:00.000Z"},
     "passed their access to your record on to a colleague until 19 March 2026 at 10:42 UTC",
     "a délégué son accès à votre dossier à un confrère jusqu'au 19 mars 2026 à 10:42 UTC"),
    ("emergency-access", {"until": "2026-03-13T10:42:00.000Z"},
     "declared an emergency to open your record until 13 March 2026 at 10:42 UTC",
     "a déclaré une urgence pour ouvrir votre dossier jusqu'au 13 mars 2026 à 10:42 UTC"),
])
def test_an_access_given_says_until_when(interaction: str, detail: dict[str, str],
                                         english: str, french: str) -> None:
    change = record(kind="policy", interaction=interaction, action="C", entity_type="Consent",
                    detail=detail)
    assert english in describe(change, "en", NAMES)
    assert french in describe(change, "fr", NAMES)
    assert "for a while" not in describe(change, "en", NAMES)


def test_an_alert_says_the_security_officer_was_told() -> None:
    permitted = record(kind="alert", interaction="operation", purpose_of_use="EMER",
                       detail={"decision": "permit"}, entity_type="Patient")
    assert describe(permitted, "en", NAMES) == (
        "Dr Anne Weber, CHL declared an emergency to open your record, on 12 March 2026 at "
        "10:42 UTC, the security officer was alerted.")
    refused = record(kind="alert", outcome="4", detail={"decision": "deny"},
                     entity_type="Patient")
    assert "was refused access to your identity record" in describe(refused, "en", NAMES)
    emergency_refused = record(kind="alert", outcome="4", detail={"decision": "deny"},
                               entity_type="Patient", interaction="operation",
                               query="$emergency-access")
    assert describe(emergency_refused, "en", NAMES).startswith(
        "Dr Anne Weber, CHL was refused an emergency access to your record, on 12 March")
    assert describe(emergency_refused, "fr", NAMES).startswith(
        "Dr Anne Weber, CHL s'est vu refuser un accès d'urgence à votre dossier, le 12 mars")
    assert "le responsable de la sécurité a été alerté" in describe(refused, "fr", NAMES)


# --- which entries a page shows -----------------------------------------------------------------


def test_the_filters_sort_entries_by_who_and_why() -> None:
    from carevault.domain.access_history import (
        Shown,
        by_professional_or_system,
        is_emergency,
        is_emergency_declaration,
        shows,
    )

    read = record()
    under_emergency = record(purpose_of_use="EMER")
    declared = record(kind="policy", interaction="emergency-access", action="E")
    asked = record(kind="alert", interaction="operation", query="$emergency-access")
    refused = record(outcome="4")
    yours = record(agent=Agent(who="account:a1", role="patient"))
    representative = record(agent=Agent(who="account:r1", role="representative"))
    registrar = record(agent=Agent(who="account:g1", role="registrar"))
    assert [is_emergency(r) for r in (read, under_emergency, declared, asked)] == [
        False, True, True, True]
    assert [is_emergency_declaration(r) for r in (under_emergency, declared, asked)] == [
        False, True, False]
    assert [shows(r, Shown.YOURS) for r in (read, yours, representative, registrar)] == [
        False, True, True, False]
    assert [shows(r, Shown.OTHERS) for r in (read, yours, representative, registrar)] == [
        True, False, False, True]
    assert [shows(r, Shown.REFUSED) for r in (read, refused)] == [False, True]
    assert all(shows(r, Shown.ALL) for r in (read, refused, yours))
    # The chart counts professionals and systems: no account, not even a registrar's.
    assert [by_professional_or_system(r) for r in (read, yours, registrar)] == [
        True, False, False]


ER = "Practitioner/er-1"


def declaration(who: str = ER) -> AuditRecord:
    return record(kind="policy", interaction="emergency-access", purpose_of_use="EMER",
                  agent=Agent(who=who), detail={"reason": "unconscious", "emergency": "e-1"})


def request(who: str = ER, outcome: str = "0") -> AuditRecord:
    return record(kind="access", interaction="operation", query="$emergency-access",
                  purpose_of_use="EMER", agent=Agent(who=who), outcome=outcome)


def alert(who: str = ER, decision: str = "permit") -> AuditRecord:
    return record(kind="alert", interaction="operation", purpose_of_use="EMER",
                  agent=Agent(who=who), detail={"rule": "emergency", "decision": decision})


def read_under_it(who: str = ER) -> AuditRecord:
    return record(purpose_of_use="EMER", agent=Agent(who=who))


def test_one_break_the_glass_is_told_by_its_declaration() -> None:
    """Its three entries (the opening, the request, the officer's alert) read as one: the
    request and the alert fold into the declaration, whatever order they were recorded in
    and in whichever order they are given; what was read under it stays a line of its own."""
    assert break_the_glass_parts([(2, declaration()), (3, request()), (4, alert()),
                                  (6, read_under_it())]) == {3: 2, 4: 2}
    assert break_the_glass_parts([(9, alert()), (8, declaration()), (7, request())]) == {
        7: 8, 9: 8}
    # One of each: a second request is another event, told on its own line.
    assert break_the_glass_parts([(1, declaration()), (2, request()), (3, request())]) == {2: 1}


@pytest.mark.parametrize("entries", [
    # A refused request opened nothing: no declaration, nothing folded.
    [(1, request(outcome="4")), (2, alert(decision="deny"))],
    # Another professional's request or alert is not this break-the-glass.
    [(1, declaration()), (2, request(who="Practitioner/other")),
     (3, alert(who="Practitioner/other"))],
    # Something recorded between them keeps them apart.
    [(1, declaration()), (2, read_under_it()), (3, request())],
])
def test_only_the_parts_of_one_opening_are_folded(entries: list[tuple[int, AuditRecord]]) -> None:
    assert break_the_glass_parts(entries) == {}
