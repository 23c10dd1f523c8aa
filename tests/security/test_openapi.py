"""The OpenAPI document at /openapi.json: served without a token, valid OpenAPI 3.1, and exactly
what runs — every interaction and operation of the door's registry and every other route,
nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from openapi_spec_validator import validate
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from carevault.api.fhir.door import Interaction

pytestmark = pytest.mark.security

# How each interaction is reached over HTTP (FHIR R4 RESTful API), written out here rather
# than taken from the generator, so that the test holds the generator to the registry.
ROUTES = {
    Interaction.READ: [("get", "/fhir/{type}/{id}")],
    Interaction.VREAD: [("get", "/fhir/{type}/{id}/_history/{vid}")],
    Interaction.HISTORY: [("get", "/fhir/{type}/{id}/_history")],
    Interaction.SEARCH: [("get", "/fhir/{type}"), ("post", "/fhir/{type}/_search")],
    Interaction.CREATE: [("post", "/fhir/{type}")],
    Interaction.UPDATE: [("put", "/fhir/{type}/{id}")],
    Interaction.CONDITIONAL_UPDATE: [("put", "/fhir/{type}")],
    Interaction.TRANSACTION: [("post", "/fhir")],
}


@pytest.fixture(scope="module")
def document(attacked: Any) -> dict[str, Any]:
    with TestClient(attacked.platform.app) as client:
        answer = client.get("/openapi.json")  # no token
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return dict(answer.json())


def operations(document: dict[str, Any], prefix: str) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items()
            if path == prefix or path.startswith(prefix + "/") for method in item}


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_registered_interaction_and_operation_appears_and_nothing_else(
        attacked: Any, document: dict[str, Any]) -> None:
    expected = {("get", "/fhir/metadata")}
    for kind, handler in attacked.platform.door.handlers.items():
        for interaction in handler.interactions:
            expected |= {(m, p.replace("{type}", kind)) for m, p in ROUTES[interaction]}
        for operation in handler.operations:
            at = f"/fhir/{kind}/{{id}}" if operation.instance else f"/fhir/{kind}"
            expected |= {(m.lower(), f"{at}/${operation.name}") for m in operation.methods}
    assert operations(document, "/fhir") == expected


def test_searches_declare_exactly_their_parameters(attacked: Any, document: dict[str, Any]) -> None:
    for kind, handler in attacked.platform.door.handlers.items():
        if Interaction.SEARCH not in handler.interactions:
            continue
        declared = {p["name"] for p in document["paths"][f"/fhir/{kind}"]["get"]["parameters"]}
        common = {"_count", "_offset", "_format"} | ({"_include"} if handler.includes else set())
        assert declared == {p.name for p in handler.search_params} | common, kind
        form = document["paths"][f"/fhir/{kind}/_search"]["post"]["requestBody"]["content"]
        fields = set(form["application/x-www-form-urlencoded"]["schema"]["properties"])
        assert fields == declared - {"_format"}, kind


def test_operations_declare_their_parameters_body_and_answer(
        attacked: Any, document: dict[str, Any]) -> None:
    for kind, handler in attacked.platform.door.handlers.items():
        for operation in handler.operations:
            at = f"/fhir/{kind}/{{id}}" if operation.instance else f"/fhir/{kind}"
            for method in operation.methods:
                spec = document["paths"][f"{at}/${operation.name}"][method.lower()]
                names = {p["name"] for p in spec["parameters"] if p["in"] == "query"}
                assert names == {p.name for p in operation.parameters} | {"_format"}
                required = {p["name"] for p in spec["parameters"]
                            if p["in"] == "query" and p["required"]}
                assert required == {p.name for p in operation.parameters if p.required}
                assert ("requestBody" in spec) == (operation.takes is not None)
                answer = spec["responses"]["200"]["content"]["application/fhir+json"]["schema"]
                assert {"properties": {"resourceType": {"const": operation.gives}}} in answer[
                    "allOf"]


def test_fhir_errors_are_operation_outcomes_and_tokens_are_bearer_jwts(
        document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path in operations(document, "/fhir"):
        spec = document["paths"][path][method]
        assert (spec.get("security") == [{"bearerAuth": []}]) == (path != "/fhir/metadata")
        for status, answer in spec["responses"].items():
            if status.startswith(("4", "5")):
                assert answer["content"] == {"application/fhir+json": {
                    "schema": {"$ref": "#/components/schemas/OperationOutcome"}}}, (path, status)


def test_every_other_route_appears_with_its_methods(
        attacked: Any, document: dict[str, Any]) -> None:
    expected: set[tuple[str, str]] = set()
    # Included routers are kept as such by FastAPI: their routes are walked with its iterator.
    for context in iter_route_contexts(attacked.platform.app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            expected.add(("get", f"{route.path}/{{path}}"))
        elif isinstance(route, Route) and not str(context.path).startswith("/fhir"):
            expected |= {(m.lower(), str(context.path)) for m in context.methods or ()
                         if m != "HEAD"}
    documented = {(m, p) for path, item in document["paths"].items() for m in item
                  for p in [path] if not p.startswith("/fhir")}
    assert documented == expected
    assert ("post", "/oauth/token") in documented and ("get", "/me") in documented
    for _method, path in documented:  # each route says what it answers, not FastAPI's default
        for answer in document["paths"][path][_method]["responses"].values():
            assert answer.get("description") != "Successful Response", path
