"""The patient's access history in plain words, English and French."""

from __future__ import annotations

import pytest

from carevault.domain.access_history import describe
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


def test_a_refused_attempt_says_so() -> None:
    refused = record(outcome="4", agent=Agent(network="203.0.113.9"), entity_type="Patient")
    assert describe(refused) == (
        "An unidentified system (from 203.0.113.9) tried to open your identity record and "
        "was refused, on 12 March 2026 at 10:42 UTC.")


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
        describe(record(), "de")


@pytest.mark.parametrize(("interaction", "english", "french"), [
    ("grant-create", "Dr Anne Weber, CHL gave an access to your record, on 12 March",
     "Dr Anne Weber, CHL a donné un accès à votre dossier, le 12 mars"),
    ("care-event", "recorded a care event with you", "a enregistré une prise en charge"),
    ("record-close", "closed your record", "a fermé votre dossier"),
])
def test_changes_to_who_sees_what(interaction: str, english: str, french: str) -> None:
    change = record(kind="policy", interaction=interaction, action="C", entity_type="Consent")
    assert english in describe(change, "en", NAMES)
    assert french in describe(change, "fr", NAMES)


def test_an_alert_says_the_security_officer_was_told() -> None:
    permitted = record(kind="alert", interaction="operation", purpose_of_use="EMER",
                       detail={"decision": "permit"}, entity_type="Patient")
    assert describe(permitted, "en", NAMES) == (
        "Dr Anne Weber, CHL declared an emergency to open your record, on 12 March 2026 at "
        "10:42 UTC, the security officer was alerted.")
    refused = record(kind="alert", outcome="4", detail={"decision": "deny"},
                     entity_type="Patient")
    assert "tried to open your identity record and was refused" in describe(refused, "en",
                                                                           NAMES)
    assert "le responsable de la sécurité a été alerté" in describe(refused, "fr", NAMES)
