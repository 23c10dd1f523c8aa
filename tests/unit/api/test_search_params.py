"""Tests for reading FHIR search parameters and writing searchset Bundles."""

from __future__ import annotations

from datetime import date
from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle

from carevault.adapters.storage.directory_store import SearchResult, Stored
from carevault.api.fhir import search as sp
from carevault.api.fhir.door import FhirRequest, Interaction
from carevault.domain.directory import Identifier
from carevault.domain.errors import InvalidInput
from carevault.domain.queries import DateRange, Page

BASE = "https://cv.example/fhir"


def req(*params: tuple[str, str], kind: str = "Patient", base_url: str = BASE) -> FhirRequest:
    return FhirRequest("GET", Interaction.SEARCH, kind, params=params, base_url=base_url)


# --- paging ----------------------------------------------------------------------------------


def test_page_defaults() -> None:
    assert sp.page(req(), 20, 100) == Page(offset=0, count=20)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("_count", "1"),), Page(0, 1)),
        ((("_count", "100"),), Page(0, 100)),
        ((("_count", "5"), ("_offset", "40")), Page(40, 5)),
        ((("_offset", "0"),), Page(0, 20)),
        ((("_offset", str(sp.MAX_OFFSET)),), Page(sp.MAX_OFFSET, 20)),
    ],
)
def test_page_reads_count_and_offset(params: tuple[tuple[str, str], ...], expected: Page) -> None:
    assert sp.page(req(*params), 20, 100) == expected


@pytest.mark.parametrize(
    "value", ["0", "101", "abc", "100000", "-1", "1.5", "+5", " 5", "1e2", "", "9" * 30]
)
def test_bad_count_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sp.page(req(("_count", value)), 20, 100)
    assert caught.value.expression == "_count"


@pytest.mark.parametrize("value", ["-1", "-100", "abc", "1.0", "", str(sp.MAX_OFFSET + 1)])
def test_bad_offset_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sp.page(req(("_offset", value)), 20, 100)
    assert caught.value.expression == "_offset"


def test_count_may_appear_only_once() -> None:
    with pytest.raises(InvalidInput, match="only once"):
        sp.page(req(("_count", "5"), ("_count", "6")), 20, 100)


@pytest.mark.parametrize("value", ["²", "1²"])
def test_superscript_digits_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput):
        sp.page(req(("_count", value)), 20, 100)


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1980", DateRange("eq", date(1980, 1, 1), date(1981, 1, 1))),
        ("1980-02", DateRange("eq", date(1980, 2, 1), date(1980, 3, 1))),
        ("2024-02", DateRange("eq", date(2024, 2, 1), date(2024, 3, 1))),
        ("1980-12", DateRange("eq", date(1980, 12, 1), date(1981, 1, 1))),
        ("1980-04-15", DateRange("eq", date(1980, 4, 15), date(1980, 4, 16))),
        ("2024-02-29", DateRange("eq", date(2024, 2, 29), date(2024, 3, 1))),
        ("1980-12-31", DateRange("eq", date(1980, 12, 31), date(1981, 1, 1))),
        ("eq1980", DateRange("eq", date(1980, 1, 1), date(1981, 1, 1))),
        ("ge1980-04-01", DateRange("ge", date(1980, 4, 1), date(1980, 4, 2))),
        ("lt1980", DateRange("lt", date(1980, 1, 1), date(1981, 1, 1))),
        ("ne1980-02", DateRange("ne", date(1980, 2, 1), date(1980, 3, 1))),
        ("le2000-01-01", DateRange("le", date(2000, 1, 1), date(2000, 1, 2))),
        ("gt2000", DateRange("gt", date(2000, 1, 1), date(2001, 1, 1))),
    ],
)
def test_dates(value: str, expected: DateRange) -> None:
    assert sp.dates(req(("birthdate", value)), "birthdate") == [expected]


def test_repeated_dates_combine() -> None:
    found = sp.dates(req(("birthdate", "ge1980"), ("birthdate", "lt1990")), "birthdate")
    assert [d.prefix for d in found] == ["ge", "lt"]


@pytest.mark.parametrize(
    "value",
    [
        "1980-02-30",
        "2023-02-29",
        "1980-13",
        "1980-00",
        "1980-04-31",
        "80",
        "1980/02/03",
        "1980-2-3",
        "xx1980",
        "ap1980",
        "1980-02-03T10:00",
        "0000",
    ],
)
def test_bad_dates_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sp.dates(req(("birthdate", value)), "birthdate")
    assert caught.value.expression == "birthdate"


# --- tokens, strings, booleans ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://sys.example|123", (Identifier("https://sys.example", "123"),)),
        ("|123", ()),  # FHIR: "no system"; every stored identifier has one, so nothing matches
        ("123", (Identifier("", "123"),)),
        (r"a\,b", (Identifier("", "a,b"),)),
        (r"s|a\,b", (Identifier("s", "a,b"),)),
        ("s|1,t|2", (Identifier("s", "1"), Identifier("t", "2"))),
        ("urn:oid:1.2.3|x|y", (Identifier("urn:oid:1.2.3", "x|y"),)),
    ],
)
def test_tokens(value: str, expected: tuple[Identifier, ...]) -> None:
    assert sp.tokens(req(("identifier", value)), "identifier") == [expected]


def test_repeated_tokens_are_separate_criteria() -> None:
    found = sp.tokens(req(("identifier", "s|1"), ("identifier", "t|2")), "identifier")
    assert found == [(Identifier("s", "1"),), (Identifier("t", "2"),)]


def test_token_without_code_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="needs a code after"):
        sp.tokens(req(("identifier", "https://sys.example|")), "identifier")


@pytest.mark.parametrize("value", [",", ",,"])
def test_token_with_only_commas_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput):
        sp.tokens(req(("identifier", value)), "identifier")


def test_codes_in_keeps_only_codes_of_the_system() -> None:
    found = sp.codes_in(req(("role", "S|nurse,other|x,midwife")), "role", "S")
    assert found == [("nurse", "midwife")]


def test_strings_are_folded_and_split() -> None:
    found = sp.strings(req(("family", "Müller,GONÇALVES"), ("family", " Weiß ")), "family")
    assert found == [("muller", "goncalves"), ("weiss",)]


def test_strings_keep_an_escaped_comma() -> None:
    assert sp.strings(req(("name", r"Smith\, Jr")), "name") == [("smith, jr",)]


@pytest.mark.parametrize("value", [" ", ",", " , "])
def test_strings_that_fold_to_nothing_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput, match="empty value"):
        sp.strings(req(("family", value)), "family")


def test_exact_keeps_case() -> None:
    assert sp.exact(req(("gender", "female,Male")), "gender") == [("female", "Male")]


def test_references_accept_ids_and_typed_references() -> None:
    params = (("practitioner", "Practitioner/1,2,https://x.example/fhir/Practitioner/3"),)
    found = sp.references(req(*params, kind="PractitionerRole"), "practitioner", "Practitioner")
    assert found == [("1", "2", "3")]


def test_references_refuse_another_type() -> None:
    with pytest.raises(InvalidInput, match="must reference a Practitioner"):
        sp.references(req(("practitioner", "Patient/1")), "practitioner", "Practitioner")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
def test_boolean(value: str, expected: bool) -> None:
    assert sp.boolean(req(("active", value)), "active") is expected


def test_boolean_absent_is_none() -> None:
    assert sp.boolean(req(("family", "x")), "active") is None


@pytest.mark.parametrize("value", ["yes", "True", "1", "false,true"])
def test_boolean_refuses_other_values(value: str) -> None:
    with pytest.raises(InvalidInput, match="'true' or 'false'"):
        sp.boolean(req(("active", value)), "active")


def test_boolean_may_appear_only_once() -> None:
    with pytest.raises(InvalidInput, match="only once"):
        sp.boolean(req(("active", "true"), ("active", "true")), "active")


# --- limits on every value -------------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        lambda r: sp.strings(r, "p"),
        lambda r: sp.tokens(r, "p"),
        lambda r: sp.exact(r, "p"),
        lambda r: sp.dates(r, "p"),
        lambda r: sp.boolean(r, "p"),
    ],
    ids=["strings", "tokens", "exact", "dates", "boolean"],
)
def test_value_longer_than_the_limit_is_invalid_input(read) -> None:
    with pytest.raises(InvalidInput, match="longer than 256") as caught:
        read(req(("p", "a" * (sp.MAX_VALUE_LENGTH + 1))))
    assert caught.value.expression == "p"


def test_value_at_the_limit_is_accepted() -> None:
    value = "a" * sp.MAX_VALUE_LENGTH
    assert sp.exact(req(("p", value)), "p") == [(value,)]


@pytest.mark.parametrize(
    "read",
    [
        lambda r: sp.strings(r, "p"),
        lambda r: sp.tokens(r, "p"),
        lambda r: sp.exact(r, "p"),
        lambda r: sp.dates(r, "p"),
        lambda r: sp.boolean(r, "p"),
    ],
    ids=["strings", "tokens", "exact", "dates", "boolean"],
)
def test_empty_value_is_invalid_input(read) -> None:
    with pytest.raises(InvalidInput, match="empty value"):
        read(req(("q", "x"), ("p", "")))


# --- searchset Bundles -----------------------------------------------------------------------


def _patient(n: int) -> Stored:
    return Stored(f"p{n}", 1, {"resourceType": "Patient", "id": f"p{n}"})


def _links(bundle: dict) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """relation → (URL without query, query pairs)."""
    found = {}
    for link in bundle["link"]:
        parts = urlsplit(link["url"])
        base = f"{parts.scheme}://{parts.netloc}{parts.path}"
        found[link["relation"]] = (base, parse_qsl(parts.query))
    return found


def _searchset(offset: int, count: int, total: int, *params: tuple[str, str]) -> dict:
    request = req(*params, ("_offset", str(offset)), base_url=BASE + "/")
    items = [_patient(n) for n in range(offset, min(offset + count, total))]
    return sp.searchset(request, SearchResult(total, items), Page(offset, count))


def test_searchset_first_page_has_self_and_next_only() -> None:
    bundle = _searchset(0, 10, 25, ("family", "muller"), ("_count", "10"))
    links = _links(bundle)
    assert set(links) == {"self", "next"}
    assert links["self"] == (
        f"{BASE}/Patient",
        [("family", "muller"), ("_count", "10"), ("_offset", "0")],
    )
    assert links["next"][1] == [("family", "muller"), ("_count", "10"), ("_offset", "10")]
    assert bundle["total"] == 25
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [f"p{n}" for n in range(10)]


def test_searchset_middle_page_has_self_next_and_previous() -> None:
    links = _links(_searchset(10, 10, 25, ("family", "muller"), ("_count", "10")))
    assert set(links) == {"self", "next", "previous"}
    assert dict(links["self"][1])["_offset"] == "10"
    assert dict(links["next"][1])["_offset"] == "20"
    assert dict(links["previous"][1])["_offset"] == "0"
    for _, query in links.values():
        assert dict(query)["family"] == "muller"
        assert dict(query)["_count"] == "10"
        assert [k for k, _ in query].count("_offset") == 1


def test_searchset_last_page_has_self_and_previous_only() -> None:
    bundle = _searchset(20, 10, 25, ("_count", "10"))
    links = _links(bundle)
    assert set(links) == {"self", "previous"}
    assert dict(links["previous"][1])["_offset"] == "10"
    assert len(bundle["entry"]) == 5


def test_searchset_page_ending_exactly_at_the_total_has_no_next() -> None:
    assert set(_links(_searchset(10, 10, 20, ("_count", "10")))) == {"self", "previous"}


def test_searchset_previous_of_an_unaligned_offset_does_not_go_below_zero() -> None:
    links = _links(_searchset(5, 10, 25, ("_count", "10")))
    assert dict(links["previous"][1])["_offset"] == "0"


def test_searchset_adds_the_count_in_force_when_the_client_gave_none() -> None:
    links = _links(_searchset(0, 20, 50, ("given", "anna")))
    assert links["next"][1] == [("given", "anna"), ("_count", "20"), ("_offset", "20")]


def test_searchset_of_nothing() -> None:
    bundle = _searchset(0, 20, 0)
    assert bundle["total"] == 0
    assert "entry" not in bundle  # FHIR JSON has no empty array (R4 json.html)
    assert set(_links(bundle)) == {"self"}


def test_searchset_entries_and_includes() -> None:
    organization = Stored("o1", 3, {"resourceType": "Organization", "id": "o1", "name": "CHL"})
    request = req(("_include", "Patient:organization"))
    bundle = sp.searchset(
        request, SearchResult(1, [_patient(1)]), Page(0, 20), included=[organization]
    )
    match, include = bundle["entry"]
    assert match["fullUrl"] == f"{BASE}/Patient/p1"
    assert match["search"] == {"mode": "match"}
    assert include["fullUrl"] == f"{BASE}/Organization/o1"
    assert include["search"] == {"mode": "include"}
    assert include["resource"]["name"] == "CHL"
    Bundle.model_validate(bundle)  # a valid R4 Bundle
