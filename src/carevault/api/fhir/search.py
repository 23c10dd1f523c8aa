"""Reading FHIR search parameters into typed criteria, and writing searchset Bundles.

Paging is bounded here for every resource: ``_count`` defaults to the configured page size and
may not exceed the maximum (asking for more is an error, not a silent truncation, so a client
never mistakes a page for the whole answer). ``next``/``previous`` links repeat the query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode

from carevault.api.fhir.door import MAX_VALUE_LENGTH as MAX_VALUE_LENGTH  # re-exported
from carevault.api.fhir.door import FhirRequest
from carevault.domain.directory import Identifier
from carevault.domain.errors import InvalidInput
from carevault.domain.numbers import whole_number
from carevault.domain.queries import Alternatives, DateRange, Page, SearchResult, Stored
from carevault.domain.text import fold

JsonObject = dict[str, Any]

MAX_OFFSET = 1_000_000
# Each repetition of a parameter is one more condition (AND) and each comma one more
# alternative (OR) in the statement: unbounded, a single request could plan for minutes.
MAX_REPETITIONS = 5
MAX_ALTERNATIVES = 20
_DATE = re.compile(r"^(eq|ne|lt|le|gt|ge)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def values(request: FhirRequest, name: str) -> list[str]:
    """Every occurrence of a parameter, each checked for length."""
    found = [value for key, value in request.params if key == name]
    if len(found) > MAX_REPETITIONS:
        raise InvalidInput(
            f"search parameter {name!r} may appear at most {MAX_REPETITIONS} times",
            expression=name,
        )
    for value in found:
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(
                f"the value of {name!r} is longer than {MAX_VALUE_LENGTH} characters",
                expression=name,
            )
        if not value:
            raise InvalidInput(f"search parameter {name!r} has an empty value", expression=name)
    return found


def single(request: FhirRequest, name: str) -> str | None:
    found = values(request, name)
    if len(found) > 1:
        raise InvalidInput(f"search parameter {name!r} may appear only once", expression=name)
    return found[0] if found else None


def _split(value: str, name: str) -> list[str]:
    """Alternatives of one parameter (FHIR: a comma separates them, a backslash escapes one)."""
    parts = [p.replace("\\,", ",") for p in re.split(r"(?<!\\),", value) if p]
    if not parts:
        raise InvalidInput(f"search parameter {name!r} has an empty value", expression=name)
    if len(parts) > MAX_ALTERNATIVES:
        raise InvalidInput(
            f"search parameter {name!r} may list at most {MAX_ALTERNATIVES} alternatives",
            expression=name,
        )
    return parts


def strings(request: FhirRequest, name: str) -> list[Alternatives]:
    """String parameters, folded for case- and accent-insensitive prefix matching."""
    result = []
    for value in values(request, name):
        folded = tuple(f for f in (fold(v) for v in _split(value, name)) if f)
        if not folded:
            raise InvalidInput(f"search parameter {name!r} has an empty value", expression=name)
        result.append(folded)
    return result


def exact(request: FhirRequest, name: str) -> list[Alternatives]:
    return [tuple(_split(value, name)) for value in values(request, name)]


def tokens(request: FhirRequest, name: str) -> list[tuple[Identifier, ...]]:
    """Token parameters as (system, code).

    ``code`` alone matches any system (the returned system is empty); ``|code`` means "with no
    system" in FHIR, which nothing CareVault stores has, so that alternative is dropped and an
    empty tuple of alternatives matches nothing.
    """
    result = []
    for value in values(request, name):
        alternatives = []
        for part in _split(value, name):
            system, bar, code = part.partition("|")
            if bar and not code:
                raise InvalidInput(
                    f"search parameter {name!r} needs a code after '|'", expression=name
                )
            if not bar:
                alternatives.append(Identifier("", part))
            elif system:
                alternatives.append(Identifier(system, code))
        result.append(tuple(alternatives))
    return result


def codes_in(request: FhirRequest, name: str, system: str) -> list[Alternatives]:
    """Token values whose system is ``system`` (or unstated); other systems match nothing."""
    return [
        tuple(i.value for i in alternatives if i.system in ("", system))
        for alternatives in tokens(request, name)
    ]


def references(request: FhirRequest, name: str, resource_type: str) -> list[Alternatives]:
    result = []
    for alternatives in exact(request, name):
        ids = []
        for value in alternatives:
            kind, slash, ident = value.rpartition("/")
            if slash and kind.rsplit("/", 1)[-1] != resource_type:
                raise InvalidInput(f"{name!r} must reference a {resource_type}", expression=name)
            ids.append(ident if slash else value)
        result.append(tuple(ids))
    return result


def boolean(request: FhirRequest, name: str) -> bool | None:
    value = single(request, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise InvalidInput(f"search parameter {name!r} must be 'true' or 'false'", expression=name)
    return value == "true"


def dates(request: FhirRequest, name: str) -> list[DateRange]:
    result = []
    for value in values(request, name):
        match = _DATE.match(value)
        if match is None:
            raise InvalidInput(
                f"search parameter {name!r} must be a date such as 1980, 1980-04 or ge1980-04-01",
                expression=name,
            )
        prefix, year, month, day = match.groups()
        try:
            y = int(year)
            if month is None:
                start, end = date(y, 1, 1), date(y + 1, 1, 1)
            elif day is None:
                m = int(month)
                start = date(y, m, 1)
                end = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
            else:
                start = date(y, int(month), int(day))
                end = date.fromordinal(start.toordinal() + 1)
        except ValueError:
            raise InvalidInput(f"{value!r} is not a valid date", expression=name) from None
        result.append(DateRange(prefix or "eq", start, end))
    return result


def date_bounds(request: FhirRequest, name: str) -> list[tuple[str, datetime, datetime]]:
    """A date parameter as (prefix, start, end) instants at midnight UTC, for a SQL column."""
    return [
        (d.prefix, datetime.combine(d.start, time(), UTC), datetime.combine(d.end, time(), UTC))
        for d in dates(request, name)
    ]


def page(request: FhirRequest, default_size: int, max_size: int) -> Page:
    count = _integer(request, "_count", default_size)
    if not 1 <= count <= max_size:
        raise InvalidInput(f"_count must be between 1 and {max_size}", expression="_count")
    offset = _integer(request, "_offset", 0)
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"_offset must be between 0 and {MAX_OFFSET}", expression="_offset")
    return Page(offset, count)


def _integer(request: FhirRequest, name: str, default: int) -> int:
    value = single(request, name)
    if value is None:
        return default
    number = whole_number(value, 9)
    if number is None:
        raise InvalidInput(f"{name} must be a whole number", expression=name)
    return number


def searchset(
    request: FhirRequest, result: SearchResult, paging: Page, included: Iterable[Stored] = ()
) -> JsonObject:
    """A searchset Bundle with total, self/next/previous links and included resources."""
    base = request.base_url.rstrip("/")
    kind = request.resource_type
    kept = [(k, v) for k, v in request.params if k not in ("_offset",)]
    if "_count" not in {k for k, _ in kept}:
        kept.append(("_count", str(paging.count)))

    def link(relation: str, offset: int) -> JsonObject:
        query = urlencode([*kept, ("_offset", str(offset))])
        return {"relation": relation, "url": f"{base}/{kind}?{query}"}

    links = [link("self", paging.offset)]
    if paging.offset + paging.count < result.total:
        links.append(link("next", paging.offset + paging.count))
    if paging.offset > 0:
        links.append(link("previous", max(0, paging.offset - paging.count)))
    entries = [
        {
            "fullUrl": f"{base}/{kind}/{item.id}",
            "resource": item.resource,
            "search": {"mode": "match"},
        }
        for item in result.items
    ]
    for item in included:
        item_type = item.resource["resourceType"]
        entries.append(
            {
                "fullUrl": f"{base}/{item_type}/{item.id}",
                "resource": item.resource,
                "search": {"mode": "include"},
            }
        )
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": result.total,
        "link": links,
    }
    if entries:  # FHIR JSON has no empty array (R4 json.html): no match, no entry element
        bundle["entry"] = entries
    return bundle
