"""Tests for the professions/specialties code system and its checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from carevault.domain.errors import BusinessRuleViolation
from carevault.domain.professions import Professions

BUILT_IN = Path(__file__).resolve().parents[3] / "src" / "carevault" / "config" / "professions.json"
SEED_PROFESSIONS = (
    "physician",
    "dentist",
    "pharmacist",
    "nurse",
    "physiotherapist",
    "midwife",
    "laboratory-biologist",
)


@pytest.fixture(scope="module")
def professions() -> Professions:
    return Professions.from_json(BUILT_IN.read_text(encoding="utf-8"))


def _code(code: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "display": {"en": code.title(), "fr": code.title()}, **extra}


def _file(professions: list[dict[str, Any]], specialties: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "version": 3,
            "profession_system": "https://example.org/profession",
            "specialty_system": "https://example.org/specialty",
            "professions": professions,
            "specialties": specialties,
        }
    )


def test_built_in_file_loads(professions: Professions) -> None:
    assert professions.profession_system == "https://carevault.lu/fhir/CodeSystem/profession"
    assert professions.specialty_system == "https://carevault.lu/fhir/CodeSystem/specialty"
    assert professions.version
    assert professions.specialties["cardiology"].profession == "physician"
    assert professions.professions["physician"].display_fr == "Médecin"
    assert professions.professions["physician"].profession is None


@pytest.mark.parametrize("code", SEED_PROFESSIONS)
def test_seed_professions_are_present(professions: Professions, code: str) -> None:
    assert code in professions.professions
    assert professions.professions[code].display_en
    assert professions.professions[code].display_fr


def test_every_specialty_belongs_to_a_known_profession(professions: Professions) -> None:
    assert professions.specialties
    for specialty in professions.specialties.values():
        assert specialty.profession in professions.professions


@pytest.mark.parametrize(
    ("profession", "specialty"),
    [
        ("physician", "cardiology"),
        ("physician", None),
        ("dentist", "orthodontics"),
        ("pharmacist", "hospital-pharmacy"),
        ("nurse", None),
    ],
)
def test_check_accepts_a_profession_with_one_of_its_specialties(
    professions: Professions, profession: str, specialty: str | None
) -> None:
    professions.check(profession, specialty)


def test_check_refuses_a_specialty_of_another_profession(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation) as caught:
        professions.check("pharmacist", "cardiology")
    message = caught.value.message
    assert "'cardiology' is not a specialty of 'pharmacist'" in message
    assert message.endswith("allowed: hospital-pharmacy")
    assert caught.value.expression == "PractitionerRole.specialty"


def test_check_lists_every_allowed_specialty(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation) as caught:
        professions.check("physician", "orthodontics")
    allowed = caught.value.message.split("allowed: ", 1)[1].split(", ")
    assert allowed == sorted(
        c for c, s in professions.specialties.items() if s.profession == "physician"
    )
    assert "cardiology" in allowed
    assert "orthodontics" not in allowed


def test_check_says_none_when_a_profession_has_no_specialty(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation, match=r"allowed: none$"):
        professions.check("nurse", "cardiology")


def test_check_refuses_an_unknown_specialty(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation, match="'astrology' is not a specialty"):
        professions.check("physician", "astrology")


def test_check_refuses_an_unknown_profession_listing_known_ones(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation) as caught:
        professions.check("wizard", None)
    message = caught.value.message
    assert message.startswith("unknown profession 'wizard'; known: ")
    for code in SEED_PROFESSIONS:
        assert code in message
    assert caught.value.expression == "PractitionerRole.code"


def test_unknown_profession_is_refused_before_its_specialty(professions: Professions) -> None:
    with pytest.raises(BusinessRuleViolation, match="unknown profession"):
        professions.check("wizard", "cardiology")


def test_file_whose_specialty_names_an_unknown_profession_is_refused() -> None:
    text = _file([_code("nurse")], [_code("cardiology", profession="physician")])
    with pytest.raises(ValueError, match="'cardiology' names unknown profession 'physician'"):
        Professions.from_json(text)


def test_minimal_file_loads() -> None:
    loaded = Professions.from_json(
        _file([_code("nurse")], [_code("wound-care", profession="nurse")])
    )
    assert loaded.version == "3"
    assert set(loaded.professions) == {"nurse"}
    loaded.check("nurse", "wound-care")
