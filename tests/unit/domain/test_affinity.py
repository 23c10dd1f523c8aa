"""Tests for the affinity domain's code lists: the built-in file, its checks, the engine classes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.domain.affinity import (
    CLASS_CODES,
    CONFIDENTIALITY_CODES,
    FACILITY_TYPE_CODES,
    FORMAT_CODES,
    LANGUAGES,
    PRACTICE_SETTING_CODES,
    TYPE_CODES,
    VALUESET_NAMES,
    AffinityDomain,
)
from carevault.domain.authorization import Confidentiality
from carevault.domain.errors import NotFound

BUILTIN_MATRIX = builtin_profile_matrix()
BUILT_IN = (
    Path(__file__).resolve().parents[3] / "src" / "carevault" / "config" / "affinity-domain.json"
)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
IHE_FORMAT = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
DICOM_UID = "http://dicom.nema.org/resources/ontology/DCMUID"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

# The authorization engine's class vocabulary: what the profile matrix names, plus the classes
# only physicians see (through "*"), which the matrix therefore never spells out.
ENGINE_CLASSES = {
    "medication",
    "prescription",
    "allergy",
    "vaccination",
    "patient-summary",
    "laboratory",
    "imaging",
    "consultation-report",
    "discharge-summary",
    "nursing",
    "maternity",
    "dental",
    "physiotherapy",
    "psychotherapy",
    "psychiatric",
    "genetic",
    "hiv",
}


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BUILT_IN.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def domain() -> AffinityDomain:
    return AffinityDomain.from_mapping(_raw())


# --- the built-in file -----------------------------------------------------------------------


def test_built_in_file_loads_every_value_set(domain: AffinityDomain) -> None:
    assert domain.version
    assert list(domain.valuesets) == list(VALUESET_NAMES)
    for valueset_id, codes in domain.valuesets.items():
        assert codes.id == valueset_id
        assert codes.name == VALUESET_NAMES[valueset_id]
        assert codes.concepts, valueset_id
        assert set(codes.titles) == set(LANGUAGES)
        for concept in codes.concepts:
            for language in LANGUAGES:
                assert concept.display(language).strip(), (valueset_id, concept.code, language)


def test_engine_classes_are_the_matrix_vocabulary(domain: AffinityDomain) -> None:
    named_by_matrix = {
        name
        for actions in BUILTIN_MATRIX.profiles.values()
        for classes in actions.values()
        for name in classes
    } - {"*"}
    assert named_by_matrix <= ENGINE_CLASSES
    assert domain.engine_classes == ENGINE_CLASSES


@pytest.mark.parametrize("engine_class", sorted(ENGINE_CLASSES))
def test_every_engine_class_is_reachable_from_a_type_code(
    domain: AffinityDomain, engine_class: str
) -> None:
    types = [c for c in domain.valueset(TYPE_CODES).concepts if c.engine_class == engine_class]
    assert types, f"no typeCode maps to {engine_class}"
    for concept in types:  # and the mapping is what a document of that type gets
        assert domain.engine_class(None, (concept.system, concept.code)) == engine_class


def test_every_class_code_names_an_engine_class(domain: AffinityDomain) -> None:
    for concept in domain.valueset(CLASS_CODES).concepts:
        assert concept.engine_class in ENGINE_CLASSES, concept.code


def test_only_class_and_type_codes_carry_engine_classes(domain: AffinityDomain) -> None:
    for valueset_id in (FORMAT_CODES, PRACTICE_SETTING_CODES, FACILITY_TYPE_CODES):
        assert all(c.engine_class is None for c in domain.valueset(valueset_id).concepts)


@pytest.mark.parametrize(
    ("code", "engine_class"),
    [
        ("18842-5", "discharge-summary"),
        ("11502-2", "laboratory"),
        ("18748-4", "imaging"),
        ("57833-6", "prescription"),
        ("11488-4", "consultation-report"),
        ("60591-5", "patient-summary"),
        ("82593-5", "vaccination"),
        ("56445-0", "medication"),
        ("48765-2", "allergy"),
        ("34788-0", "psychiatric"),
        ("59259-2", "psychiatric"),
        ("51969-4", "genetic"),
        ("86664-0", "hiv"),
        ("11510-5", "psychotherapy"),
        ("57055-6", "maternity"),
        ("28618-7", "dental"),
        ("28579-1", "physiotherapy"),
        ("34746-8", "nursing"),
    ],
)
def test_the_default_type_codes_map_as_documented(
    domain: AffinityDomain, code: str, engine_class: str
) -> None:
    assert domain.engine_class(None, (LOINC, code)) == engine_class


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
# Row i is the base permutation applied i times (period 8).
_VERHOEFF_P = [list(range(10))]
for _ in range(7):
    _VERHOEFF_P.append([[1, 5, 7, 6, 2, 8, 3, 0, 9, 4][d] for d in _VERHOEFF_P[-1]])


def _verhoeff_valid(digits: str) -> bool:
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return check == 0


def test_loinc_and_snomed_codes_have_valid_check_digits(domain: AffinityDomain) -> None:
    """A typo in a code almost always breaks its check digit: LOINC's mod 10, SNOMED CT's
    Verhoeff (and its partition: a concept id, international or extension)."""
    checked = 0
    for codes in domain.valuesets.values():
        for concept in codes.concepts:
            if concept.system == LOINC:
                number, dash, check = concept.code.partition("-")
                assert dash and number.isdigit() and check.isdigit(), concept.code
                assert _luhn_valid(number + check), f"LOINC {concept.code}"
                checked += 1
            elif concept.system == SNOMED:
                assert concept.code.isdigit() and 6 <= len(concept.code) <= 18, concept.code
                assert concept.code[-3:-1] in ("00", "10"), f"SNOMED {concept.code} partition"
                assert _verhoeff_valid(concept.code), f"SNOMED {concept.code}"
                checked += 1
    assert checked > 100


def test_confidentiality_codes_are_the_engine_levels(domain: AffinityDomain) -> None:
    codes = domain.valueset(CONFIDENTIALITY_CODES)
    assert codes.systems() == (CONFIDENTIALITY,)
    assert {c.code for c in codes.concepts} == {level.value for level in Confidentiality}


def test_format_codes_include_the_ihe_defaults(domain: AffinityDomain) -> None:
    for system, code in [
        (IHE_FORMAT, "urn:ihe:iti:xds:2017:mimeTypeSufficient"),
        (IHE_FORMAT, "urn:ihe:pcc:xds-ms:2007"),
        (IHE_FORMAT, "urn:ihe:iti:xds-sd:pdf:2008"),
        (IHE_FORMAT, "urn:ihe:lab:xd-lab:2008"),
        (DICOM_UID, "1.2.840.10008.5.1.4.1.1.88.59"),
    ]:
        assert domain.contains(FORMAT_CODES, system, code), code


def test_practice_settings_and_facility_types_are_snomed(domain: AffinityDomain) -> None:
    assert domain.valueset(PRACTICE_SETTING_CODES).systems() == (SNOMED,)
    assert domain.valueset(FACILITY_TYPE_CODES).systems() == (SNOMED,)
    assert domain.contains(FACILITY_TYPE_CODES, SNOMED, "22232009")  # hospital
    assert domain.contains(PRACTICE_SETTING_CODES, SNOMED, "394587001")  # psychiatry


# --- questions -------------------------------------------------------------------------------


def test_contains_is_exact_on_system_and_code(domain: AffinityDomain) -> None:
    assert domain.contains(TYPE_CODES, LOINC, "18842-5")
    assert not domain.contains(TYPE_CODES, "http://loinc.org/", "18842-5")
    assert not domain.contains(TYPE_CODES, LOINC, "18842")
    assert not domain.contains(CONFIDENTIALITY_CODES, CONFIDENTIALITY, "n")
    assert not domain.contains(CLASS_CODES, LOINC, "34788-0")  # a type, not a class


def test_an_unknown_value_set_is_not_found(domain: AffinityDomain) -> None:
    with pytest.raises(NotFound, match="xds-eventcode"):
        domain.valueset("xds-eventcode")
    with pytest.raises(NotFound):
        domain.contains("xds-eventcode", LOINC, "18842-5")


def test_display_in_both_languages(domain: AffinityDomain) -> None:
    assert domain.display(TYPE_CODES, LOINC, "18842-5") == "Discharge summary"
    assert domain.display(TYPE_CODES, LOINC, "18842-5", "fr") == "Compte rendu de sortie"
    assert domain.display(CONFIDENTIALITY_CODES, CONFIDENTIALITY, "R", "fr") == "restreint"
    assert domain.display(TYPE_CODES, LOINC, "00000-0") is None
    with pytest.raises(ValueError, match="'de'"):
        domain.display(TYPE_CODES, LOINC, "18842-5", "de")


def test_the_type_decides_when_it_names_an_engine_class(domain: AffinityDomain) -> None:
    consult, lab = (LOINC, "11488-4"), (LOINC, "26436-6")
    assert domain.engine_class(consult, (LOINC, "34788-0")) == "psychiatric"
    assert domain.engine_class(lab, (LOINC, "51969-4")) == "genetic"
    assert domain.engine_class(lab, (LOINC, "86664-0")) == "hiv"
    assert domain.engine_class(consult, (LOINC, "11488-4")) == "consultation-report"


def test_a_generic_or_unknown_type_leaves_it_to_the_class(domain: AffinityDomain) -> None:
    lab = (LOINC, "26436-6")
    assert domain.engine_class(lab, (LOINC, "34109-9")) == "laboratory"  # "Note"
    assert domain.engine_class((LOINC, "15508-5"), (LOINC, "11506-3")) == "maternity"
    assert domain.engine_class(lab, (LOINC, "99999-9")) == "laboratory"
    assert domain.engine_class(lab, None) == "laboratory"


def test_no_engine_class_without_a_known_code(domain: AffinityDomain) -> None:
    assert domain.engine_class(None, None) is None
    assert domain.engine_class((LOINC, "99999-9"), (LOINC, "99999-9")) is None
    assert domain.engine_class(None, (LOINC, "34109-9")) is None  # generic type, no class
    assert domain.engine_class(("urn:other", "11488-4"), ("urn:other", "34788-0")) is None


def test_matching_ignores_case_and_accents_and_covers_codes(domain: AffinityDomain) -> None:
    types = domain.valueset(TYPE_CODES)
    assert {c.code for c in types.matching("PSYCHIATRY")} == {"34788-0", "59259-2", "68599-0"}
    assert {c.code for c in types.matching("genetique")} >= {"51969-4", "68653-5"}
    assert [c.code for c in types.matching("11502")] == ["11502-2"]
    assert types.matching(None) == types.concepts
    assert types.matching("no such words") == ()


# --- refusals --------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _type(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = data["valuesets"][TYPE_CODES]["codes"][index]
    return entry


def _class(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = data["valuesets"][CLASS_CODES]["codes"][index]
    return entry


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _duplicate_type(data: dict[str, Any]) -> None:
    data["valuesets"][TYPE_CODES]["codes"].append(dict(_type(data, 0)))


TYPES = ["valuesets", TYPE_CODES, "codes"]
CLASSES = ["valuesets", CLASS_CODES, "codes"]
FORMATS = ["valuesets", FORMAT_CODES, "codes"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_delete(["version"]), "needs a version"),
        (_set(["version"], "  "), "needs a version"),
        (_set(["colour"], "blue"), "unknown fields colour"),
        (_delete(["engine_classes"]), "engine_classes"),
        (_set(["engine_classes"], ["laboratory", "laboratory"]), "laboratory listed twice"),
        (_set(["engine_classes"], ["*"]), "'*' is not a class name"),
        (_delete(["valuesets", FACILITY_TYPE_CODES]), "missing xds-healthcarefacilitytypecode"),
        (_set(["valuesets", "xds-eventcode"], {}), "unknown xds-eventcode"),
        (_set(["valuesets", FORMAT_CODES, "codes"], []), "xds-formatcode: needs 'codes'"),
        (_delete(["valuesets", FORMAT_CODES, "title", "fr"]), "xds-formatcode.title"),
        (_delete(["valuesets", FORMAT_CODES, "description"]), "xds-formatcode: needs a descr"),
        (_set([*TYPES, 3, "code"], ""), r"xds-typecode\[3\]: needs a code"),
        (_set([*TYPES, 3, "code"], " 18842-5"), r"xds-typecode\[3\]: needs a code"),
        (_set([*TYPES, 3, "system"], "loinc"), r"xds-typecode\[3\] \(11504-8\): the system"),
        (_delete([*TYPES, 3, "display", "fr"]), r"xds-typecode\[3\] .*11504-8\)\.display.*fr"),
        (_set([*TYPES, 3, "display", "fr"], " "), r"11504-8\)\.display: needs a non-empty"),
        (_set([*TYPES, 3, "display", "de"], "Notiz"), r"11504-8\)\.display: unknown lang"),
        (_set([*TYPES, 3, "comment"], "x"), r"xds-typecode\[3\] .*: unknown fields comment"),
        (_delete([*TYPES, 3, "engine_class"]), r"xds-typecode\[3\] .*needs engine_class"),
        (_set([*TYPES, 3, "engine_class"], "psychiatry"), r"\[3\] .*'psychiatry' is not one of"),
        (_set([*CLASSES, 0, "engine_class"], None), r"xds-classcode\[0\] .*needs engine_class"),
        (_delete([*CLASSES, 0, "engine_class"]), r"xds-classcode\[0\] .*needs engine_class"),
        (_set([*FORMATS, 0, "engine_class"], "imaging"), r"xds-formatcode\[0\] .*belongs on"),
        (_duplicate_type, r"xds-typecode\[44\] \(http://loinc.org\|11488-4\): listed twice"),
        (_set([*TYPES, 3], "11504-8"), r"xds-typecode\[3\]: expected an object"),
    ],
)
def test_a_faulty_file_is_refused_naming_the_entry(mutate: Mutation, message: str) -> None:
    data = copy.deepcopy(_raw())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        AffinityDomain.from_mapping(data)


def test_a_file_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        AffinityDomain.from_mapping([])  # type: ignore[arg-type]


def test_a_smaller_domain_may_leave_engine_classes_unreached() -> None:
    """Reaching every engine class is a property of the built-in lists, not a rule: a
    deployment may publish fewer types."""
    data = copy.deepcopy(_raw())
    data["valuesets"][TYPE_CODES]["codes"] = [_type(data, 0)]
    domain = AffinityDomain.from_mapping(data)
    assert len(domain.valueset(TYPE_CODES).concepts) == 1
