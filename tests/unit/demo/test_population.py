"""Tests for the synthetic population: reproducible, unique where it must be, and consistent with
the national-id rules and the profession catalogue."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

import carevault
from carevault.demo import population
from carevault.demo.population import (
    OrganizationSeed,
    PatientSeed,
    PractitionerSeed,
    organizations,
    patients,
    practitioners,
)
from carevault.domain.national_id import parse_luxembourg_national_id

PROFESSIONS_JSON = Path(carevault.__file__).parent / "config" / "professions.json"
FHIR_GENDERS = {"male", "female", "other", "unknown"}
ORGANIZATION_KINDS = {"hospital", "laboratory", "pharmacy", "practice"}


@cache
def _catalogue() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PROFESSIONS_JSON.read_text(encoding="utf-8"))
    return data


def _profession_codes() -> set[str]:
    return {entry["code"] for entry in _catalogue()["professions"]}


def _specialty_profession() -> dict[str, str]:
    return {entry["code"]: entry["profession"] for entry in _catalogue()["specialties"]}


@cache
def _patients_20k() -> tuple[PatientSeed, ...]:
    return tuple(patients(20_000, seed=7))


@cache
def _practitioners_20k() -> tuple[PractitionerSeed, ...]:
    return tuple(practitioners(20_000, seed=7))


# --- organisations ------------------------------------------------------------------------


def test_organizations_are_fixed_and_well_formed() -> None:
    orgs = organizations()
    assert orgs == organizations()
    assert 12 <= len(orgs) <= 20
    assert len({org.key for org in orgs}) == len(orgs)
    assert len({org.identifier for org in orgs}) == len(orgs)
    for org in orgs:
        assert isinstance(org, OrganizationSeed)
        assert org.kind in ORGANIZATION_KINDS
        assert re.fullmatch(r"ORG-\d{4}", org.identifier)
        assert re.fullmatch(r"L-\d{4}", org.postal_code)
        assert org.name
        assert org.city
    kinds = Counter(org.kind for org in orgs)
    assert kinds["hospital"] >= 4
    assert kinds["laboratory"] >= 3
    assert kinds["pharmacy"] >= 2
    assert kinds["practice"] >= 2
    names = {org.name for org in orgs}
    assert "Centre Hospitalier de Luxembourg" in names
    assert {"chl", "chem", "hrs", "chdn"} <= {org.key for org in orgs}


def test_organizations_returns_a_fresh_list() -> None:
    orgs = organizations()
    orgs.clear()
    assert organizations()


# --- reproducibility ----------------------------------------------------------------------


def test_same_seed_gives_identical_patients() -> None:
    assert list(patients(500, seed=42)) == list(patients(500, seed=42))


def test_same_seed_gives_identical_practitioners() -> None:
    assert list(practitioners(500, seed=42)) == list(practitioners(500, seed=42))


def test_different_seeds_give_different_output() -> None:
    assert list(patients(200, seed=1)) != list(patients(200, seed=2))
    assert list(practitioners(200, seed=1)) != list(practitioners(200, seed=2))


def test_a_prefix_of_a_run_is_the_shorter_run() -> None:
    # Laziness must not change what is generated: the first k of n are the run of k.
    assert list(islice(patients(1_000, seed=3), 100)) == list(patients(100, seed=3))


def test_patients_are_generated_lazily() -> None:
    generator = patients(10_000_000, seed=1)
    first = next(generator)
    assert isinstance(first, PatientSeed)


def test_zero_and_negative_counts() -> None:
    assert list(patients(0, seed=1)) == []
    assert list(practitioners(0, seed=1)) == []
    with pytest.raises(ValueError, match="n must be"):
        patients(-1, seed=1)
    with pytest.raises(ValueError, match="m must be"):
        practitioners(-1, seed=1)


# --- patients -----------------------------------------------------------------------------


def test_national_ids_are_unique_and_parse_to_the_birth_date() -> None:
    seeds = _patients_20k()
    assert len({p.national_id for p in seeds}) == len(seeds)
    for patient in seeds:
        parsed = parse_luxembourg_national_id(patient.national_id)
        assert parsed.birth_date == patient.birth_date


def test_patient_fields_are_plausible() -> None:
    hospital_keys = {org.key for org in organizations() if org.kind == "hospital"}
    for patient in _patients_20k():
        assert patient.gender in FHIR_GENDERS
        assert date(1930, 1, 1) <= patient.birth_date <= date(2025, 12, 31)
        assert patient.family.strip() == patient.family != ""
        assert 1 <= len(patient.given) <= 3
        assert len(set(patient.given)) == len(patient.given)
        assert all(name.strip() == name != "" for name in patient.given)
        assert re.fullmatch(r"\d{1,3}, \S.*", patient.street)
        assert re.fullmatch(r"L-\d{4}", patient.postal_code)
        assert patient.city
        assert re.fullmatch(r"\+352 6\d\d \d{3} \d{3}", patient.phone)
        assert len(patient.local_ids) <= 2
        keys = [key for key, _ in patient.local_ids]
        assert len(set(keys)) == len(keys)
        assert set(keys) <= hospital_keys
        assert all(re.fullmatch(r"\d{8}", number) for _, number in patient.local_ids)


def test_local_patient_numbers_are_unique_per_hospital() -> None:
    pairs = [pair for patient in _patients_20k() for pair in patient.local_ids]
    assert len(set(pairs)) == len(pairs)


def test_patient_mix_looks_like_luxembourg() -> None:
    seeds = _patients_20k()
    genders = Counter(p.gender for p in seeds)
    assert genders["male"] > 0.4 * len(seeds)
    assert genders["female"] > 0.4 * len(seeds)
    assert 0 < genders["other"] + genders["unknown"] < 0.05 * len(seeds)

    families = {p.family for p in seeds}
    assert len(families) > 300
    # The accented names that break naive matching and sorting do occur.
    for name in ("Müller", "Gonçalves", "Hoffmann", "Lefèvre", "Weiß"):
        assert any(name in family for family in families), name

    cities = Counter(p.city for p in seeds)
    assert cities.most_common(1)[0][0] == "Luxembourg"
    assert len(cities) > 20

    with_local = Counter(len(p.local_ids) for p in seeds)
    assert set(with_local) == {0, 1, 2}


# --- practitioners ------------------------------------------------------------------------


def test_every_hard_coded_code_exists_in_professions_json() -> None:
    professions = _profession_codes()
    specialty_profession = _specialty_profession()
    used_professions = {code for code, _ in population._PROFESSION_WEIGHTS}
    assert used_professions <= professions
    assert set(population._WORKPLACE_WEIGHTS) <= professions
    assert set(population._FEMALE_SHARE) <= professions
    assert set(population._SPECIALTY_WEIGHTS) <= professions
    for profession, weighted in population._SPECIALTY_WEIGHTS.items():
        for specialty, _ in weighted:
            if specialty is not None:
                assert specialty_profession[specialty] == profession, specialty
    assert specialty_profession[population._HOSPITAL_PHARMACY] == "pharmacist"


def test_every_profession_in_the_catalogue_is_generated() -> None:
    generated = {p.profession for p in _practitioners_20k()}
    assert generated == _profession_codes()


def test_practitioner_identifiers_are_unique_and_well_formed() -> None:
    seeds = _practitioners_20k()
    assert len({p.identifier for p in seeds}) == len(seeds)
    assert all(re.fullmatch(r"HP-\d{6}", p.identifier) for p in seeds)


def test_practitioner_codes_and_specialties_are_consistent() -> None:
    professions = _profession_codes()
    specialty_profession = _specialty_profession()
    org_kind = {org.key: org.kind for org in organizations()}
    for practitioner in _practitioners_20k():
        assert practitioner.gender in FHIR_GENDERS
        assert practitioner.profession in professions
        if practitioner.specialty is not None:
            assert specialty_profession[practitioner.specialty] == practitioner.profession
        if practitioner.organization_key is not None:
            assert practitioner.organization_key in org_kind
        if practitioner.profession == "pharmacist":
            at_hospital = org_kind.get(practitioner.organization_key or "") == "hospital"
            assert (practitioner.specialty == "hospital-pharmacy") == at_hospital
        assert practitioner.family
        assert 1 <= len(practitioner.given) <= 3


def test_professions_without_specialties_never_get_one() -> None:
    with_specialties = set(_specialty_profession().values())
    for practitioner in _practitioners_20k():
        if practitioner.profession not in with_specialties:
            assert practitioner.specialty is None


def test_profession_mix_is_weighted_realistically() -> None:
    counts = Counter(p.profession for p in _practitioners_20k())
    assert counts["nurse"] > counts["physician"] > counts["pharmacist"]
    for fewer in ("pharmacist", "midwife", "dentist", "laboratory-biologist"):
        assert counts[fewer] < counts["physician"], fewer
    assert counts["midwife"] < counts["pharmacist"]
    assert counts["laboratory-biologist"] < counts["dentist"]
    assert 0 < counts["medical-assistant"] < 0.02 * sum(counts.values())
    physicians = [p for p in _practitioners_20k() if p.profession == "physician"]
    assert sum(p.specialty is not None for p in physicians) > 0.9 * len(physicians)
