"""Why an access was allowed: the basis recorded in its audit entry, from the engine's facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.domain.access_basis import (
    BASES,
    EXPLAINED,
    basis_detail,
    basis_of,
    explained,
)
from carevault.domain.authorization import (
    Action,
    Delegation,
    EmergencyWindow,
    Grant,
    GrantLevel,
    Party,
    RecordFacts,
    Subject,
    SubjectKind,
    decide,
)

MATRIX = builtin_profile_matrix()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DOCTOR = Subject(
    SubjectKind.PRACTITIONER,
    "dr-a",
    "physician",
    "cardiology",
    organization_ids=frozenset({"hospital-1"}),
    care_team_ids=frozenset({"team-heart"}),
)


def grant(party: Party, party_id: str, source: str = "patient", gid: str = "g1") -> Grant:
    return Grant(party, party_id, GrantLevel.NORMAL, NOW - DAY, NOW + DAY, id=gid, source=source)


def basis(record: RecordFacts, subject: Subject = DOCTOR) -> tuple[str, str] | None:
    decision = decide(subject, Action.READ, record, None, NOW, MATRIX)
    return basis_of(decision, subject, record, NOW)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (RecordFacts("p1", grants=(grant(Party.PRACTITIONER, "dr-a"),)), ("grant", "g1")),
        (
            RecordFacts("p1", grants=(grant(Party.PRACTITIONER, "dr-a", "care-event"),)),
            ("care-event", "g1"),
        ),
        (RecordFacts("p1", referring_physician_id="dr-a"), ("referring-physician", "")),
        (RecordFacts("p1", grants=(grant(Party.CARE_TEAM, "team-heart"),)), ("team", "g1")),
        (
            RecordFacts("p1", grants=(grant(Party.ORGANIZATION, "hospital-1"),)),
            ("organization", "g1"),
        ),
        (
            RecordFacts(
                "p1",
                referring_physician_id="dr-b",
                delegation_allowed=True,
                delegations=(
                    Delegation("dr-b", "dr-a", GrantLevel.NORMAL, NOW - DAY, NOW + DAY, "d1"),
                ),
            ),
            ("delegation", "d1"),
        ),
        (
            RecordFacts("p1", emergency_windows=(EmergencyWindow("dr-a", NOW + DAY),)),
            ("emergency", ""),
        ),
    ],
)
def test_each_relationship_is_named(record: RecordFacts, expected: tuple[str, str]) -> None:
    assert basis(record) == expected


def test_the_most_personal_basis_is_named() -> None:
    record = RecordFacts(
        "p1",
        grants=(
            grant(Party.ORGANIZATION, "hospital-1", gid="org"),
            grant(Party.CARE_TEAM, "team-heart", gid="team"),
            grant(Party.PRACTITIONER, "dr-a", "care-event", gid="ce"),
        ),
    )
    assert basis(record) == ("care-event", "ce")


def test_an_expired_grant_is_not_a_basis() -> None:
    old = Grant(Party.PRACTITIONER, "dr-a", GrantLevel.NORMAL, NOW - 3 * DAY, NOW - DAY, id="g")
    record = RecordFacts("p1", grants=(old,), referring_physician_id="dr-a")
    assert basis(record) == ("referring-physician", "")


def test_the_patient_and_a_refusal() -> None:
    patient = Subject(SubjectKind.PATIENT, "p1")
    assert basis(RecordFacts("p1"), patient) == ("patient", "")
    refused = decide(DOCTOR, Action.READ, RecordFacts("p1"), None, NOW, MATRIX)
    assert not refused.permit
    assert basis_of(refused, DOCTOR, RecordFacts("p1"), NOW) is None
    assert basis_detail(refused, DOCTOR, RecordFacts("p1"), NOW) == {}


def test_an_assistant_acts_on_the_mandator_s_basis() -> None:
    assistant = Subject(SubjectKind.ASSISTANT, "as-1", "assistant", mandator=DOCTOR)
    record = RecordFacts("p1", referring_physician_id="dr-a")
    assert basis(record, assistant) == ("referring-physician", "")


def test_detail_and_explained() -> None:
    record = RecordFacts("p1", grants=(grant(Party.PRACTITIONER, "dr-a"),))
    decision = decide(DOCTOR, Action.READ, record, None, NOW, MATRIX)
    assert basis_detail(decision, DOCTOR, record, NOW) == {"basis": "grant", "basis-ref": "g1"}
    assert set(BASES) - EXPLAINED == {"emergency"}
    assert explained("team") and not explained("emergency") and not explained(None)
