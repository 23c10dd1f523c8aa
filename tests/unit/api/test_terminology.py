"""Tests for the ValueSet handler: read, search and $expand, driven with `FhirRequest` objects;
every ValueSet, Bundle and OperationOutcome produced is validated with fhir.resources (R4B)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.valueset import ValueSet

from carevault.api.fhir.capability import capability_statement
from carevault.api.fhir.door import (
    AccessNeed,
    Admission,
    FhirDoor,
    FhirRequest,
    FhirResponse,
    Interaction,
    NeedOf,
    Target,
)
from carevault.api.fhir.outcome import from_error
from carevault.api.fhir.terminology_handlers import (
    MAX_EXPANSION_COUNT,
    ValueSetHandler,
    load_affinity_domain,
)
from carevault.domain.affinity import VALUESET_NAMES, AffinityDomain
from carevault.domain.authorization import Action, Subject, SubjectKind, decide_directory
from carevault.domain.errors import CareVaultError, InvalidInput, NotFound

BASE = "https://cv.example/fhir"
NOW = datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
VS = "https://carevault.lu/fhir/ValueSet/"
LOINC = "http://loinc.org"
I = Interaction  # noqa: E741

Params = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def domain() -> AffinityDomain:
    return load_affinity_domain(None)


@pytest.fixture
def handler(domain: AffinityDomain) -> ValueSetHandler:
    return ValueSetHandler(domain, clock=lambda: NOW)


def read(resource_id: str) -> FhirRequest:
    return FhirRequest("GET", I.READ, "ValueSet", resource_id, base_url=BASE)


def search(*params: tuple[str, str]) -> FhirRequest:
    return FhirRequest("GET", I.SEARCH, "ValueSet", params=params, base_url=BASE)


def expand(*params: tuple[str, str], on: str | None = None) -> FhirRequest:
    return FhirRequest(
        "GET", I.OPERATION, "ValueSet", on, operation="expand", params=params, base_url=BASE
    )


def valid_value_set(response: FhirResponse) -> dict[str, Any]:
    assert response.status == 200
    assert response.body is not None
    ValueSet.model_validate(response.body)
    return response.body


def codes_of(body: dict[str, Any]) -> list[str]:
    return [c["code"] for c in body["expansion"].get("contains", [])]


def refused(error: CareVaultError, status: int, expression: str | None = None) -> str:
    """The error's OperationOutcome is valid FHIR with the right status; returns its text."""
    answer, outcome, _ = from_error(error)
    assert answer == status
    OperationOutcome.model_validate(outcome)
    if expression is not None:
        assert outcome["issue"][0]["expression"] == [expression]
    diagnostics: str = outcome["issue"][0]["diagnostics"]
    return diagnostics


# --- read ------------------------------------------------------------------------------------


@pytest.mark.parametrize("valueset_id", list(VALUESET_NAMES))
def test_read_serves_each_value_set_with_its_expansion(
    handler: ValueSetHandler, domain: AffinityDomain, valueset_id: str
) -> None:
    body = valid_value_set(handler.read(read(valueset_id)))
    codes = domain.valueset(valueset_id)
    assert body["id"] == valueset_id
    assert body["url"] == VS + valueset_id
    assert body["version"] == domain.version
    assert body["name"] == VALUESET_NAMES[valueset_id]
    assert body["status"] == "active"
    assert [i["system"] for i in body["compose"]["include"]] == list(codes.systems())
    assert sum(len(i["concept"]) for i in body["compose"]["include"]) == len(codes.concepts)
    expansion = body["expansion"]
    assert expansion["timestamp"] == "2026-11-05T09:30:00Z"
    assert expansion["total"] == len(codes.concepts) == len(expansion["contains"])
    assert "offset" not in expansion
    first, concept = expansion["contains"][0], codes.concepts[0]
    assert first["system"] == concept.system
    assert first["code"] == concept.code
    assert first["display"] == concept.display("en")
    assert first["designation"] == [{"language": "fr", "value": concept.display("fr")}]


def test_compose_carries_french_designations(handler: ValueSetHandler) -> None:
    body = valid_value_set(handler.read(read("xds-confidentialitycode")))
    [include] = body["compose"]["include"]
    assert include["system"] == "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    assert include["concept"][2] == {
        "code": "V",
        "display": "very restricted",
        "designation": [{"language": "fr", "value": "très restreint"}],
    }


def test_read_of_an_unknown_value_set_is_404(handler: ValueSetHandler) -> None:
    with pytest.raises(NotFound) as caught:
        handler.read(read("xds-eventcode"))
    assert "xds-classcode" in refused(caught.value, 404)  # names the known ones


# --- search ----------------------------------------------------------------------------------


def found(handler: ValueSetHandler, *params: tuple[str, str]) -> tuple[int, list[str]]:
    response = handler.search(search(*params))
    assert response.status == 200
    assert response.body is not None
    Bundle.model_validate(response.body)
    for entry in response.body.get("entry", []):
        ValueSet.model_validate(entry["resource"])
        assert entry["fullUrl"] == f"{BASE}/ValueSet/{entry['resource']['id']}"
    return response.body["total"], [e["resource"]["id"] for e in response.body.get("entry", [])]


def test_search_without_criteria_lists_every_value_set(handler: ValueSetHandler) -> None:
    assert found(handler) == (6, list(VALUESET_NAMES))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("_id", "xds-typecode"),), ["xds-typecode"]),
        ((("_id", "xds-typecode,xds-formatcode"),), ["xds-typecode", "xds-formatcode"]),
        ((("_id", "xds-typecode"), ("_id", "xds-formatcode")), []),
        ((("url", VS + "xds-formatcode"),), ["xds-formatcode"]),
        ((("url", VS + "xds-formatcode|2026-11-default"),), ["xds-formatcode"]),
        ((("url", VS + "xds-formatcode|1999"),), []),
        ((("url", "https://other.example/ValueSet/xds-formatcode"),), []),
        ((("name", "xdsclass"),), ["xds-classcode"]),
        ((("name", "XDSH"),), ["xds-healthcarefacilitytypecode"]),
        (
            (("name", "xds"), ("_id", "xds-classcode,xds-typecode")),
            ["xds-classcode", "xds-typecode"],
        ),
        ((("name", "classcode"),), []),  # a prefix of the name, not any substring
    ],
)
def test_search_criteria(handler: ValueSetHandler, params: Params, expected: list[str]) -> None:
    assert found(handler, *params) == (len(expected), expected)


def test_search_pages(handler: ValueSetHandler) -> None:
    response = handler.search(search(("_count", "2"), ("_offset", "2")))
    assert response.body is not None
    assert response.body["total"] == 6
    assert [e["resource"]["id"] for e in response.body["entry"]] == [
        "xds-formatcode",
        "xds-practicesettingcode",
    ]
    relations = {link["relation"] for link in response.body["link"]}
    assert relations == {"self", "next", "previous"}


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ((("_include", "ValueSet:anything"),), "_include"),
        ((("_count", "0"),), "_count"),
        ((("_count", "1000"),), "_count"),
        ((("name", ""),), "name"),
    ],
)
def test_bad_search_parameters_are_400(
    handler: ValueSetHandler, params: Params, expression: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        handler.search(search(*params))
    refused(caught.value, 400, expression)


# --- $expand ---------------------------------------------------------------------------------


def test_expand_by_url_at_type_level(handler: ValueSetHandler, domain: AffinityDomain) -> None:
    body = valid_value_set(handler.operation(expand(("url", VS + "xds-typecode"))))
    assert body["id"] == "xds-typecode"
    assert codes_of(body) == [c.code for c in domain.valueset("xds-typecode").concepts]


def test_expand_on_an_instance(handler: ValueSetHandler) -> None:
    body = valid_value_set(handler.operation(expand(on="xds-confidentialitycode")))
    assert codes_of(body) == ["N", "R", "V"]
    assert body["expansion"]["parameter"] == [{"name": "displayLanguage", "valueCode": "en"}]
    # the url may be repeated on an instance, if it is the instance's
    url = ("url", VS + "xds-confidentialitycode")
    assert codes_of(valid_value_set(handler.operation(expand(url, on=url[1][len(VS) :])))) == [
        "N",
        "R",
        "V",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("psychiatry", ["34788-0", "59259-2", "68599-0"]),
        ("PSYCHIATRY consult", ["34788-0"]),
        ("11502", ["11502-2"]),  # a code
        ("génétique", ["51969-4", "68653-5"]),  # a French display, accents or not
        ("genetique", ["51969-4", "68653-5"]),
        ("  hiv ", ["86664-0", "47245-6"]),
        ("nothing like this", []),
    ],
)
def test_expand_filters_on_code_and_display(
    handler: ValueSetHandler, text: str, expected: list[str]
) -> None:
    body = valid_value_set(handler.operation(expand(("filter", text), on="xds-typecode")))
    assert codes_of(body) == expected
    assert body["expansion"]["total"] == len(expected)
    assert {"name": "filter", "valueString": text.strip()} in body["expansion"]["parameter"]


def test_expand_pages_the_expansion(handler: ValueSetHandler, domain: AffinityDomain) -> None:
    everything = [c.code for c in domain.valueset("xds-typecode").concepts]
    body = valid_value_set(
        handler.operation(expand(("count", "5"), ("offset", "10"), on="xds-typecode"))
    )
    expansion = body["expansion"]
    assert codes_of(body) == everything[10:15]
    assert expansion["total"] == len(everything)
    assert expansion["offset"] == 10
    assert {"name": "count", "valueInteger": 5} in expansion["parameter"]
    assert {"name": "offset", "valueInteger": 10} in expansion["parameter"]


def test_expand_pages_after_filtering(handler: ValueSetHandler) -> None:
    params = (("filter", "psychiatry"), ("count", "1"), ("offset", "1"))
    body = valid_value_set(handler.operation(expand(*params, on="xds-typecode")))
    assert codes_of(body) == ["59259-2"]
    assert body["expansion"]["total"] == 3


@pytest.mark.parametrize(
    "params",
    [(("count", "0"),), (("offset", "999"),), (("count", "0"), ("filter", "zzz"))],
)
def test_an_empty_page_has_a_total_and_no_contains(
    handler: ValueSetHandler, params: Params
) -> None:
    body = valid_value_set(handler.operation(expand(*params, on="xds-classcode")))
    assert "contains" not in body["expansion"]
    assert isinstance(body["expansion"]["total"], int)


@pytest.mark.parametrize("language", ["fr", "FR", "fr-LU", "fr-FR"])
def test_expand_in_french(handler: ValueSetHandler, language: str) -> None:
    body = valid_value_set(
        handler.operation(expand(("displayLanguage", language), on="xds-typecode"))
    )
    first = body["expansion"]["contains"][0]
    assert first["display"] == "Compte rendu de consultation"
    assert first["designation"] == [{"language": "en", "value": "Consult note"}]
    assert body["title"] == "Types de documents"
    assert {"name": "displayLanguage", "valueCode": "fr"} in body["expansion"]["parameter"]


def test_expand_in_english_by_default_or_on_request(handler: ValueSetHandler) -> None:
    for params in ((), (("displayLanguage", "en-GB"),)):
        body = valid_value_set(handler.operation(expand(*params, on="xds-typecode")))
        assert body["expansion"]["contains"][0]["display"] == "Consult note"
        assert body["title"] == "Document types"


def test_expand_checks_the_version(handler: ValueSetHandler, domain: AffinityDomain) -> None:
    current = domain.version
    for params in (
        (("valueSetVersion", current),),
        (("url", f"{VS}xds-formatcode|{current}"),),
    ):
        body = valid_value_set(handler.operation(expand(*params, on="xds-formatcode")))
        assert body["version"] == current
    for params, expression in (
        ((("valueSetVersion", "1999"),), "valueSetVersion"),
        ((("url", f"{VS}xds-formatcode|1999"),), "url"),
    ):
        with pytest.raises(NotFound) as caught:
            handler.operation(expand(*params, on="xds-formatcode"))
        assert current in refused(caught.value, 404, expression)


@pytest.mark.parametrize(
    ("params", "on", "expression"),
    [
        ((), None, "url"),  # type level needs the url
        ((("url", VS + "xds-typecode"),), "xds-classcode", "url"),  # not this instance's url
        ((("count", "-1"),), "xds-typecode", "count"),
        ((("count", "ten"),), "xds-typecode", "count"),
        ((("count", str(MAX_EXPANSION_COUNT + 1)),), "xds-typecode", "count"),
        ((("offset", "1.5"),), "xds-typecode", "offset"),
        ((("offset", "9" * 12),), "xds-typecode", "offset"),
        ((("displayLanguage", "de"),), "xds-typecode", "displayLanguage"),
        ((("displayLanguage", "français"),), "xds-typecode", "displayLanguage"),
        ((("filter", ""),), "xds-typecode", "filter"),
        ((("filter", "   "),), "xds-typecode", "filter"),
        ((("filter", "x" * 300),), "xds-typecode", "filter"),
        ((("filter", "a"), ("filter", "b")), "xds-typecode", "filter"),
        ((("activeOnly", "true"),), "xds-typecode", "activeOnly"),
        ((("_count", "5"),), "xds-typecode", "_count"),
    ],
)
def test_bad_expand_parameters_are_400(
    handler: ValueSetHandler, params: Params, on: str | None, expression: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        handler.operation(expand(*params, on=on))
    refused(caught.value, 400, expression)


def test_expand_of_an_unknown_value_set_is_404(handler: ValueSetHandler) -> None:
    with pytest.raises(NotFound) as caught:
        handler.operation(expand(("url", VS + "xds-eventcode")))
    refused(caught.value, 404, "url")
    with pytest.raises(NotFound) as caught:
        handler.operation(expand(on="xds-eventcode"))
    refused(caught.value, 404)


# --- what the engine is asked ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "action"),
    [
        (read("xds-typecode"), Action.READ),
        (search(), Action.SEARCH),
        (expand(on="xds-typecode"), Action.READ),
        (expand(("url", VS + "xds-typecode")), Action.READ),
    ],
)
def test_value_sets_are_read_like_the_directories(
    handler: ValueSetHandler, request_: FhirRequest, action: Action
) -> None:
    assert handler.access_need(request_, None) == AccessNeed(  # type: ignore[arg-type]
        Target.DIRECTORY, action
    )


# --- through the door ------------------------------------------------------------------------


class _Gate:
    def __init__(self, subject: Subject) -> None:
        self.subject = subject

    def authenticate(self, request: FhirRequest) -> None:
        pass  # every caller is the test's subject

    def admit(self, request: FhirRequest, need_of: NeedOf) -> Admission:
        if request.interaction is I.CAPABILITIES:
            return Admission("test: public")
        need = need_of(request, None)  # type: ignore[arg-type]  # looks nothing up
        return Admission("test", decision=decide_directory(self.subject, need.action))


class _Scope:
    recorded = False

    def __enter__(self) -> _Scope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class _Recorder:
    def begin(self, request: FhirRequest, admission: Admission | None) -> _Scope:
        return _Scope()

    def record(self, *args: object) -> None:
        return None


class _NoLimit:
    def check(self, client: str) -> None:
        return None


def door(domain: AffinityDomain, subject: Subject) -> FhirDoor:
    return FhirDoor(
        [ValueSetHandler(domain, clock=lambda: NOW)],
        _Gate(subject),
        _Recorder(),
        _NoLimit(),
        lambda d: capability_statement(d, BASE, NOW),
    )


PRACTITIONER = Subject(SubjectKind.PRACTITIONER, "dr-test", "pharmacist")
PATIENT = Subject(SubjectKind.PATIENT, "p-1")


@pytest.mark.parametrize("subject", [PRACTITIONER, PATIENT], ids=["practitioner", "patient"])
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("ValueSet/xds-typecode", ()),
        ("ValueSet", (("name", "xds"),)),
        ("ValueSet/xds-typecode/$expand", (("filter", "hiv"),)),
        ("ValueSet/$expand", (("url", VS + "xds-formatcode"),)),
    ],
)
def test_the_door_serves_value_sets_to_any_authenticated_reader(
    domain: AffinityDomain, subject: Subject, path: str, params: Params
) -> None:
    response = door(domain, subject).handle("GET", path, params=params, base_url=BASE)
    assert response.status == 200, response.body


def test_the_door_refuses_what_is_not_offered(domain: AffinityDomain) -> None:
    rig = door(domain, PRACTITIONER)
    assert rig.handle("POST", "ValueSet/$expand", base_url=BASE).status == 405
    assert rig.handle("PUT", "ValueSet/xds-typecode", base_url=BASE).status == 405
    assert rig.handle("GET", "ValueSet/xds-typecode/$validate-code").status == 404
    bad = rig.handle("GET", "ValueSet", params=(("title", "x"),))
    assert bad.status == 400
    assert bad.body is not None
    OperationOutcome.model_validate(bad.body)


def test_the_capability_statement_lists_value_sets(domain: AffinityDomain) -> None:
    response = door(domain, PRACTITIONER).handle("GET", "metadata")
    assert response.body is not None
    CapabilityStatement.model_validate(response.body)
    [resource] = response.body["rest"][0]["resource"]
    assert resource["type"] == "ValueSet"
    assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
    assert {p["name"] for p in resource["searchParam"]} == {"_id", "url", "name"}
    assert {o["name"] for o in resource["operation"]} == {"expand"}


# --- loading the file ------------------------------------------------------------------------


def test_load_reads_a_deployment_file(tmp_path: Path, domain: AffinityDomain) -> None:
    built_in = Path(__file__).resolve().parents[3] / "src/carevault/config/affinity-domain.json"
    data = json.loads(built_in.read_text(encoding="utf-8"))
    data["version"] = "2027-01-lu"
    path = tmp_path / "domain.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_affinity_domain(path)
    assert loaded.version == "2027-01-lu"
    assert loaded.valuesets.keys() == domain.valuesets.keys()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be used"),
        ("{not json", "cannot be used"),
        ('{"version": "1"}', "engine_classes"),
    ],
)
def test_load_names_the_file_it_refuses(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "domain.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput, match=message) as caught:
        load_affinity_domain(path)
    assert str(path) in caught.value.message
