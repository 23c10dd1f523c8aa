"""Tests for parsing and validating inbound FHIR JSON, limits first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carevault.domain.errors import InvalidInput, TooLarge
from carevault.fhirmodel.validate import (
    MAX_DECIMAL_DIGITS,
    MAX_INTEGER_DIGITS,
    date_time,
    parse_json,
    validate_resource,
)

# --- parse_json ------------------------------------------------------------------------------


def test_parse_json_returns_the_object() -> None:
    body = '{"resourceType": "Patient", "name": [{"family": "Müller"}]}'.encode()
    assert parse_json(body, max_depth=32) == {
        "resourceType": "Patient",
        "name": [{"family": "Müller"}],
    }


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"a": "\xc3"}', b'{"a": "\xed\xa0\x80"}'])
def test_parse_json_refuses_invalid_utf8(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        parse_json(body, max_depth=32)


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"Patient"', b"42", b"null", b"true"])
def test_parse_json_refuses_non_objects(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_json(body, max_depth=32)


def test_parse_json_bounds_numbers_at_their_limits() -> None:
    widest = "9" * MAX_INTEGER_DIGITS
    assert parse_json(f'{{"n": -{widest}}}'.encode(), max_depth=32) == {"n": -int(widest)}
    with pytest.raises(InvalidInput, match=f"{MAX_INTEGER_DIGITS + 1} digits"):
        parse_json(f'{{"n": {widest}9}}'.encode(), max_depth=32)
    decimal = "0." + "1" * (MAX_DECIMAL_DIGITS - 1)
    assert parse_json(f'{{"n": {decimal}}}'.encode(), max_depth=32)["n"] == float(decimal)
    with pytest.raises(InvalidInput, match="digits"):
        parse_json(f'{{"n": {decimal}1}}'.encode(), max_depth=32)
    assert parse_json(b'{"n": 1.5e308, "m": 1e-999}', max_depth=32) == {"n": 1.5e308, "m": 0.0}
    with pytest.raises(InvalidInput, match="overflow"):
        parse_json(b'{"n": 1e309}', max_depth=32)


def test_parse_json_reports_line_and_column_of_a_syntax_error() -> None:
    body = b'{\n  "resourceType": "Patient",\n  "active": tru\n}'
    with pytest.raises(InvalidInput) as caught:
        parse_json(body, max_depth=32)
    assert caught.value.message.startswith("the request body is not valid JSON: ")
    assert "line 3 column 13" in caught.value.message


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1,}', b"{'a': 1}", b'{"a": 1} x'])
def test_parse_json_refuses_malformed_json(body: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"not valid JSON: .* at line \d+ column \d+"):
        parse_json(body, max_depth=32)


def _nested(depth: int) -> bytes:
    return ('{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)).encode()


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_json(_nested(4), max_depth=4) == {"a": {"a": {"a": {}}}}
    assert parse_json(b'{"a": [[1]]}', max_depth=3) == {"a": [[1]]}


@pytest.mark.parametrize(
    "body",
    [_nested(5), b'{"a": [[[1]]]}', b'{"a": [{"b": [2]}]}'],
    ids=["objects", "lists", "mixed"],
)
def test_nesting_beyond_the_limit_is_too_large(body: bytes) -> None:
    with pytest.raises(TooLarge, match="nested deeper than 3 levels"):
        parse_json(body, max_depth=3)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"a": "[[[[{{{{", "b": 'quote \\" [[[[ {{{{'}).encode()
    assert parse_json(body, max_depth=1) == {"a": "[[[[{{{{", "b": 'quote \\" [[[[ {{{{'}


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**MAX_INTEGER_DIGITS - 1), 10**MAX_INTEGER_DIGITS - 1)
    | st.text(alphabet='[]{}"\\ ab\n\u00e9'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ ab', max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


_NO_NUL = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


@given(
    # Keys without NUL: a body holding one is refused before its depth matters (tested below).
    value=st.dictionaries(st.text(_NO_NUL, max_size=3), _json_values, max_size=3),
    limit=st.integers(1, 8),
)
def test_the_depth_check_agrees_with_the_parsed_nesting(
    value: dict[str, object], limit: int
) -> None:
    """Strings full of brackets, quotes and escapes never fool the scan, either way."""
    body = json.dumps(value, ensure_ascii=False).encode()
    if _depth(value) <= limit:
        assert parse_json(body, max_depth=limit) == value
    else:
        with pytest.raises(TooLarge):
            parse_json(body, max_depth=limit)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a": [' + b"[" * 100_000,
    ],
    ids=["open-lists", "closed-lists", "objects", "inside-object"],
)
def test_very_deep_nesting_is_too_large_not_a_recursion_error(body: bytes) -> None:
    with pytest.raises(TooLarge):
        parse_json(body, max_depth=32)


# --- validate_resource -----------------------------------------------------------------------

GOOD_PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://carevault.lu/fhir/sid/matricule", "value": "1980041212345"}],
    "active": True,
    "name": [{"family": "Müller", "given": ["Anne", "Marie"]}],
    "gender": "female",
    "birthDate": "1980-04-12",
    "address": [{"postalCode": "L-1210", "city": "Luxembourg"}],
}


def test_a_good_patient_is_returned_as_normalized_json() -> None:
    result = validate_resource(dict(GOOD_PATIENT), "Patient")
    assert result == GOOD_PATIENT
    json.dumps(result)  # plain JSON types only


def test_normalization_drops_nulls_and_keeps_aliases() -> None:
    value = {
        "resourceType": "Patient",
        "gender": None,
        "name": [{"family": "X"}],
        "_birthDate": {"extension": [{"url": "http://e.example", "valueString": "s"}]},
    }
    result = validate_resource(value, "Patient")
    assert "gender" not in result
    assert result["_birthDate"]["extension"][0]["valueString"] == "s"


@pytest.mark.parametrize("actual", ["Practitioner", "patient", None, 42])
def test_wrong_resource_type_is_refused(actual: object) -> None:
    value = {**GOOD_PATIENT, "resourceType": actual}
    with pytest.raises(InvalidInput) as caught:
        validate_resource(value, "Patient")
    assert caught.value.message == (f"expected a Patient resource, got resourceType {actual!r}")
    assert caught.value.expression == "resourceType"


def test_missing_resource_type_is_refused() -> None:
    value = {k: v for k, v in GOOD_PATIENT.items() if k != "resourceType"}
    with pytest.raises(InvalidInput, match="got resourceType None"):
        validate_resource(value, "Patient")


def test_unknown_element_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_resource({**GOOD_PATIENT, "favouriteColour": "blue"}, "Patient")
    assert "Patient.favouriteColour: is not an element of this resource" in caught.value.message
    assert caught.value.expression == "Patient.favouriteColour"


def test_unknown_nested_element_is_located() -> None:
    value = {**GOOD_PATIENT, "name": [{"family": "X"}, {"family": "Y", "nickname": "Z"}]}
    with pytest.raises(InvalidInput, match=r"Patient\.name\[1\]\.nickname: is not an element"):
        validate_resource(value, "Patient")


@pytest.mark.parametrize("birth_date", ["1980-13-45", "1980-02-30", "12/04/1980", "yesterday"])
def test_bad_date_is_refused(birth_date: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_resource({**GOOD_PATIENT, "birthDate": birth_date}, "Patient")
    assert caught.value.message.startswith("invalid Patient: Patient.birthDate: ")
    assert caught.value.expression == "Patient.birthDate"


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"Patient\.name: "):
        validate_resource({**GOOD_PATIENT, "name": {"family": "X"}}, "Patient")


def test_many_problems_are_summarized() -> None:
    value = {**GOOD_PATIENT, **{f"extra{i}": i for i in range(8)}}
    with pytest.raises(InvalidInput) as caught:
        validate_resource(value, "Patient")
    assert caught.value.message.count("is not an element") == 5
    assert caught.value.message.endswith("(and 3 more)")


@pytest.mark.parametrize("body", [b'{"a": "x\\u0000"}', b'{"\\u0000": 1}',
                                  b'{"a": ["ok", {"b": "\\\\\\u0000"}]}'])
def test_a_nul_character_anywhere_in_a_body_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="NUL character"):
        parse_json(body, max_depth=10)


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul() -> None:
    assert parse_json(b'{"a": "C:\\\\u0000"}', max_depth=10) == {"a": "C:\\u0000"}


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),  # a date: its midnight UTC
    ("2026-12-07T10:30:00Z", datetime(2026, 12, 7, 10, 30, tzinfo=UTC)),
    ("2026-12-07T10:30:00+01:00", datetime(2026, 12, 7, 9, 30, tzinfo=UTC)),
    ("9999-12-31T23:59:59+01:00", datetime(9999, 12, 31, 22, 59, 59, tzinfo=UTC)),
])
def test_a_date_or_date_time_is_an_instant_in_utc(text: str, expected: datetime) -> None:
    moment = date_time(text, "Consent.provision.period.end")
    assert moment == expected and moment.utcoffset() is not None


@pytest.mark.parametrize(("value", "said"), [
    (20261207, "must be a date or dateTime"),
    (None, "must be a date or dateTime"),
    ("7 December 2026", "is not a valid date or dateTime"),
    ("2026-02-30", "is not a valid date or dateTime"),
    ("2026-12-07T10:30:00", "needs a time zone"),  # R4: a time SHALL have its zone
    ("9999-12-31T23:59:59-01:00", "is out of range"),  # valid FHIR, past Python's years
    ("0001-01-01T00:00:00+01:00", "is out of range"),
])
def test_anything_else_is_refused_where_it_was_given(value: object, said: str) -> None:
    with pytest.raises(InvalidInput, match=said) as refused:
        date_time(value, "Parameters.end", name="'end'")
    assert refused.value.expression == "Parameters.end"
    assert str(refused.value).startswith("'end' ")


def test_a_time_without_zone_is_utc_where_older_clients_send_so() -> None:
    assert date_time("2026-12-07T10:30:00", "creation", zone_required=False) == datetime(
        2026, 12, 7, 10, 30, tzinfo=UTC)
