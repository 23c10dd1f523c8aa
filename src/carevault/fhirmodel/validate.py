"""Parsing an inbound FHIR JSON body, with every limit explicit.

The order matters: size is bounded before parsing (by the HTTP layer), nesting is bounded
before validation (a deeply nested document must not reach a recursive validator), and the
resource type is checked before the full model validation so that the error says what was
expected rather than listing every field of the wrong model.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from carevault.domain.errors import InvalidInput, TooLarge

JsonObject = dict[str, Any]

MAX_REPORTED_ISSUES = 5
# No FHIR element needs a longer number: an integer64 has 19 digits, a decimal's precision is
# well under 40. Longer ones are refused before Python converts them (its int-string conversion
# limit, 4300 digits, would raise an unexpected ValueError).
MAX_INTEGER_DIGITS = 20
MAX_DECIMAL_DIGITS = 40


def parse_json(body: bytes, *, max_depth: int) -> JsonObject:
    """Decode a JSON object, refusing invalid UTF-8, non-objects, excessive nesting, numbers
    beyond ``MAX_INTEGER_DIGITS`` / ``MAX_DECIMAL_DIGITS`` or out of a float's range, and the
    non-JSON constants NaN and Infinity."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the request body is not valid UTF-8") from None
    _check_depth(text, max_depth)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        # No FHIR string holds one (FHIR strings are Unicode characters, and binary data is
        # base64), and PostgreSQL refuses text with one.
        raise InvalidInput("the request body holds a NUL character (\\u0000)")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_decimal, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput("the request body must be a JSON object (a FHIR resource)")
    return value


def _integer(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_INTEGER_DIGITS:
        raise InvalidInput(
            f"the request body holds an integer of {digits} digits; "
            f"at most {MAX_INTEGER_DIGITS} digits are accepted"
        )
    return int(literal)


def _decimal(literal: str) -> float:
    digits = sum(char.isdigit() for char in literal)
    if digits > MAX_DECIMAL_DIGITS:
        raise InvalidInput(
            f"the request body holds a decimal number of {digits} digits; "
            f"at most {MAX_DECIMAL_DIGITS} digits are accepted"
        )
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidInput(
            f"the request body holds a number out of range ({literal} would overflow)"
        )
    return value


def _constant(literal: str) -> Any:
    raise InvalidInput(f"the request body holds {literal}, which is not JSON (RFC 8259)")


# A JSON string (its escapes included, the closing quote optional so that an unterminated
# one is skipped too: the parser refuses it next) or one bracket. Strings are skipped whole by
# the regular expression engine, so a large base64 Binary costs no Python loop turn per byte.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


# The escape of a NUL character: \u0000 after an even number of backslashes (an escaped
# backslash followed by "u0000" is text, not a NUL).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _check_depth(text: str, max_depth: int) -> None:
    """Bound nesting with a scan of the raw text, before any recursive parser sees it."""
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise TooLarge(f"the JSON body is nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1


def date_time(
    value: object, where: str, *, zone_required: bool = True, name: str | None = None
) -> datetime:
    """A FHIR ``date`` or ``dateTime`` as an aware UTC instant; `InvalidInput` at ``where``
    (said as ``name`` in the message, ``where`` by default) for anything else.

    A date alone is its midnight UTC. A time needs its zone, as R4 says ("if hours and minutes
    are specified, a time zone SHALL be populated"); ``zone_required=False`` reads one without
    as UTC, for the documents' metadata that clients of older MHD versions send so. A moment an
    offset moves out of the years Python holds (``9999-12-31T23:59:59-01:00``, valid FHIR) is
    out of range, where converting it unchecked was an OverflowError, a 500.
    """
    said = name or where
    if not isinstance(value, str):
        raise InvalidInput(f"{said} must be a date or dateTime", expression=where)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{said} is not a valid date or dateTime", expression=where) from None
    if moment.tzinfo is None:
        if zone_required and "T" in value:
            raise InvalidInput(f"{said} needs a time zone", expression=where)
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{said} is out of range", expression=where) from None


def validate_resource(value: JsonObject, expected_type: str) -> JsonObject:
    """Validate against the R4 definition of ``expected_type``; return the normalized JSON."""
    actual = value.get("resourceType")
    if actual != expected_type:
        raise InvalidInput(
            f"expected a {expected_type} resource, got resourceType {actual!r}",
            expression="resourceType",
        )
    model = get_fhir_model_class(expected_type)
    try:
        parsed = model.model_validate(value)
    except ValidationError as error:
        raise InvalidInput(
            _describe(error, expected_type), expression=_first_location(error, expected_type)
        ) from None
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"invalid {expected_type}: {error}") from None
    result: JsonObject = parsed.model_dump(mode="json", exclude_none=True, by_alias=True)
    return result


def _location(loc: tuple[int | str, ...], resource_type: str) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _first_location(error: ValidationError, resource_type: str) -> str | None:
    errors = error.errors()
    return _location(errors[0]["loc"], resource_type) if errors else None


def _describe(error: ValidationError, resource_type: str) -> str:
    issues = []
    for item in error.errors()[:MAX_REPORTED_ISSUES]:
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not an element of this resource"
        issues.append(f"{_location(item['loc'], resource_type)}: {message}")
    more = error.error_count() - len(issues)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"invalid {resource_type}: " + "; ".join(issues) + suffix
