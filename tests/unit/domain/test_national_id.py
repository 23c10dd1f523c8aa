"""Tests for the Luxembourg matricule: published examples, each refusal, and error detection."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carevault.domain.errors import BusinessRuleViolation
from carevault.domain.national_id import (
    InvalidNationalId,
    LuxembourgNationalId,
    _luhn_check_digit,
    _verhoeff_check_digit,
    make_luxembourg_national_id,
    parse_luxembourg_national_id,
)

# The Luxembourg example of the EU "TIN Algorithms - Public - Functional Specification"
# (DG TAXUD, section 3.18 Luxembourg), as reproduced by implementations of that specification
# (loophp/tin LuxembourgSpec VALID_NUMBER, tin_valid README, lux-utils README).
EU_SPEC_EXAMPLE = "1893120105732"


# --- the check-digit helpers against independent published values -------------------------


def test_luhn_matches_published_examples() -> None:
    # Wikipedia "Luhn algorithm": payload 7992739871 has check digit 3.
    assert _luhn_check_digit("7992739871") == 3
    # silviaamam.github.io "Convert Luxembourg social security numbers from 11 to 13 digits"
    # (2019): the 11-digit matricule 1976 06 12 123 gets C1 = 8.
    assert _luhn_check_digit("19760612123") == 8


def test_verhoeff_matches_published_examples() -> None:
    # Wikipedia "Verhoeff algorithm": 236 -> 2363, 12345 -> 123451, 142857 -> 1428570.
    assert _verhoeff_check_digit("236") == 3
    assert _verhoeff_check_digit("12345") == 1
    assert _verhoeff_check_digit("142857") == 0


# --- valid numbers ------------------------------------------------------------------------


def test_eu_spec_example_parses() -> None:
    parsed = parse_luxembourg_national_id(EU_SPEC_EXAMPLE)
    assert parsed == LuxembourgNationalId(
        value=EU_SPEC_EXAMPLE, birth_date=date(1893, 12, 1), sequence=57
    )


def test_verhoeff_digit_is_computed_over_the_first_eleven_digits_only() -> None:
    # The spec example is the evidence: its 13th digit is the Verhoeff digit of the 11-digit
    # payload, not of the payload followed by the Luhn digit.
    payload = EU_SPEC_EXAMPLE[:11]
    assert int(EU_SPEC_EXAMPLE[11]) == _luhn_check_digit(payload)
    assert int(EU_SPEC_EXAMPLE[12]) == _verhoeff_check_digit(payload)
    assert int(EU_SPEC_EXAMPLE[12]) != _verhoeff_check_digit(EU_SPEC_EXAMPLE[:12])


def test_make_reproduces_the_eu_spec_example() -> None:
    assert make_luxembourg_national_id(date(1893, 12, 1), 57) == EU_SPEC_EXAMPLE


@pytest.mark.parametrize(
    "typed",
    [
        "  1893120105732\n",
        "1893 1201 057 32",
        "1893 12 01 057 3 2",
        "\t18931201 05732 ",
    ],
)
def test_spaces_and_surrounding_whitespace_are_accepted(typed: str) -> None:
    assert parse_luxembourg_national_id(typed).value == EU_SPEC_EXAMPLE


@pytest.mark.parametrize(
    ("birth", "month", "day"),
    [
        ("19800000", 0, 0),  # month and day unknown
        ("19800700", 7, 0),  # day unknown
        ("19800015", 0, 15),  # month unknown, day known
    ],
)
def test_unknown_month_or_day_is_accepted_without_a_birth_date(
    birth: str, month: int, day: int
) -> None:
    # Règlement grand-ducal du 28 novembre 2013, Art. 1er: an unknown month or day is "00".
    payload = f"{birth}042"
    number = f"{payload}{_luhn_check_digit(payload)}{_verhoeff_check_digit(payload)}"
    parsed = parse_luxembourg_national_id(number)
    assert parsed.birth_date is None
    assert parsed.sequence == 42
    assert (int(parsed.value[4:6]), int(parsed.value[6:8])) == (month, day)


def test_round_trip_over_many_dates_and_sequences() -> None:
    start = date(1900, 1, 1)
    for offset in range(0, 365 * 126, 37):  # every 37th day up to 2025, crossing leap years
        born = start + timedelta(days=offset)
        for sequence in (0, 1, 57, 500, 998, 999, offset % 1000):
            number = make_luxembourg_national_id(born, sequence)
            assert len(number) == 13
            assert parse_luxembourg_national_id(number) == LuxembourgNationalId(
                value=number, birth_date=born, sequence=sequence
            )


def test_round_trip_on_the_29th_of_february() -> None:
    number = make_luxembourg_national_id(date(2000, 2, 29), 3)
    assert parse_luxembourg_national_id(number).birth_date == date(2000, 2, 29)


@pytest.mark.parametrize("sequence", [-1, 1000, 12345])
def test_make_rejects_sequence_out_of_range(sequence: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 999"):
        make_luxembourg_national_id(date(1990, 1, 1), sequence)


# --- each kind of refusal -----------------------------------------------------------------


def _refusal(value: str) -> InvalidNationalId:
    with pytest.raises(InvalidNationalId) as caught:
        parse_luxembourg_national_id(value)
    return caught.value


def test_refusal_is_a_business_rule_violation_on_patient_identifier() -> None:
    error = _refusal("1893120105733")
    assert isinstance(error, BusinessRuleViolation)
    assert error.expression == "Patient.identifier"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("189312010573", "must be 13 digits, not 12"),
        ("18931201057321", "must be 13 digits, not 14"),
        ("", "only digits and spaces are allowed"),
        ("   ", "only digits and spaces are allowed"),
        ("1893-1201-057-32", "only digits and spaces are allowed"),
        ("1893.1201.057.32", "only digits and spaces are allowed"),
        ("189312010573X", "only digits and spaces are allowed"),
        ("1893\t120105732", "only digits and spaces are allowed"),
        ("1893\u00a0120105732", "only digits and spaces are allowed"),  # no-break space
        ("١٨٩٣١٢٠١٠٥٧٣٢", "only digits and spaces are allowed"),  # Arabic-Indic digits
    ],
)
def test_not_thirteen_digits(value: str, fragment: str) -> None:
    error = _refusal(value)
    assert fragment in str(error)
    assert "13 digits" in str(error)


@pytest.mark.parametrize(
    "birth",
    [
        "19931301",  # month 13
        "19930230",  # 30 February
        "19930229",  # 29 February in a common year
        "19930431",  # 31 April
        "19930132",  # day 32
        "00000101",  # year 0
    ],
)
def test_not_a_valid_birth_date(birth: str) -> None:
    # Check digits are made valid so that only the date can be at fault.
    payload = f"{birth}123"
    number = f"{payload}{_luhn_check_digit(payload)}{_verhoeff_check_digit(payload)}"
    error = _refusal(number)
    assert "valid birth date (YYYYMMDD" in str(error)


def test_wrong_luhn_check_digit() -> None:
    wrong = EU_SPEC_EXAMPLE[:11] + "4" + EU_SPEC_EXAMPLE[12]
    assert str(_refusal(wrong)).startswith("Wrong Luhn check digit (12th digit)")


def test_wrong_verhoeff_check_digit() -> None:
    wrong = EU_SPEC_EXAMPLE[:12] + "3"
    assert str(_refusal(wrong)).startswith("Wrong Verhoeff check digit (13th digit)")


def test_message_does_not_echo_the_number() -> None:
    # The message reaches logs and API clients; the identifier is personal data.
    for wrong in ("1893120105733", "1893120105742", "18931201057"):
        assert wrong[:8] not in str(_refusal(wrong))


# --- property: every single-digit error is caught -----------------------------------------

# No example database: these tests must not write into the working tree.
_no_database = settings(database=None)
_birth_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31))
_sequences = st.integers(min_value=0, max_value=999)


@_no_database
@given(
    born=_birth_dates,
    sequence=_sequences,
    position=st.integers(min_value=0, max_value=12),
    shift=st.integers(min_value=1, max_value=9),
)
def test_any_single_digit_change_is_rejected(
    born: date, sequence: int, position: int, shift: int
) -> None:
    valid = make_luxembourg_national_id(born, sequence)
    changed_digit = str((int(valid[position]) + shift) % 10)
    mistyped = valid[:position] + changed_digit + valid[position + 1 :]
    assert mistyped != valid
    with pytest.raises(InvalidNationalId):
        parse_luxembourg_national_id(mistyped)


@_no_database
@given(born=_birth_dates, sequence=_sequences, position=st.integers(min_value=0, max_value=11))
def test_adjacent_transpositions_in_the_payload_are_rejected(
    born: date, sequence: int, position: int
) -> None:
    # Luhn misses some swaps (09 <-> 90); Verhoeff is there to catch every one of them.
    valid = make_luxembourg_national_id(born, sequence)
    first, second = valid[position], valid[position + 1]
    if first == second:
        return
    swapped = valid[:position] + second + first + valid[position + 2 :]
    with pytest.raises(InvalidNationalId):
        parse_luxembourg_national_id(swapped)
