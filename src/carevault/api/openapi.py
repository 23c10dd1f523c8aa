"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``.

Nothing here is written by hand per FHIR endpoint: the FHIR paths are generated from the door's
handler registry (`FhirDoor.handlers`), like the CapabilityStatement, so the document lists
exactly what the door serves: per resource type its read, vread, history, search (with its
declared search parameters, and ``POST [type]/_search``), create, update and conditional
update, each ``$operation`` at the type or instance level with its methods and parameters, and
the transaction endpoint. The other routes (OAuth, audit log, PKI, portal) are FastAPI's own
schema, each route declaring its parameters, request body, status codes and media types with
the helpers below (`answer`, `html`, `redirect`, `query`, `form`).

The schemas are "good enough to validate" an exchange, not the FHIR specification: a resource
is a JSON object with its ``resourceType``, a searchset a Bundle, an error an OperationOutcome.
``tests/security`` holds the document against the registry and runs schemathesis on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from carevault import __version__
from carevault.api.fhir.door import (
    FhirDoor,
    Interaction,
    Operation,
    ResourceHandler,
    SearchParam,
)
from carevault.api.fhir.search import MAX_OFFSET, MAX_VALUE_LENGTH
from carevault.domain.documents import DEFAULT_CONTENT_TYPES

JsonObject = dict[str, Any]

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"
BEARER = "bearerAuth"
_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
_DATE_PATTERN = r"^(eq|ne|lt|le|gt|ge)?[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"

# --- helpers for the routes' own declarations ------------------------------------------------


def answer(
    description: str,
    media_type: str | None = "application/json",
    schema: JsonObject | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonObject:
    """One documented response: its body's media type and schema (None: no body), and the
    headers it carries (name: description)."""
    declared: JsonObject = {"description": description}
    if media_type is not None:
        declared["content"] = {media_type: {"schema": schema if schema is not None else {}}}
    if headers:
        declared["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return declared


def html(description: str) -> JsonObject:
    """A page a person reads."""
    return answer(description, HTML, {"type": "string"})


def redirect(description: str) -> JsonObject:
    """A ``303 See Other``: no body, a ``Location``."""
    return answer(description, None, headers={"Location": "where to go next"})


def query(*parameters: tuple[str, JsonObject, bool] | str) -> JsonObject:
    """``openapi_extra`` for the query parameters a route reads itself: names (optional
    strings) or (name, schema, required)."""
    declared = []
    for parameter in parameters:
        name, schema, required = (
            (parameter, {"type": "string"}, False) if isinstance(parameter, str) else parameter
        )
        declared.append({"name": name, "in": "query", "required": required, "schema": schema})
    return {"parameters": declared}


def form(fields: Iterable[str], required: Iterable[str] = ()) -> JsonObject:
    """``openapi_extra`` for a form body (``application/x-www-form-urlencoded``) of strings."""
    schema = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in fields},
        "required": sorted(required),
    }
    return {"requestBody": {"required": True, "content": {FORM: {"schema": schema}}}}


def multipart(fields: dict[str, JsonObject], files: Iterable[str]) -> JsonObject:
    """``openapi_extra`` for an upload form (``multipart/form-data``): its string ``fields``
    with their schemas, and its ``files``; every one of them required."""
    properties = {**fields, **{name: {"type": "string", "format": "binary"} for name in files}}
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}


def bearer() -> JsonObject:
    """``openapi_extra`` of a route that reads a bearer token."""
    return {"security": [{BEARER: []}]}


def merged(*extras: JsonObject) -> JsonObject:
    result: JsonObject = {}
    for extra in extras:
        result.update(extra)
    return result


OAUTH_ERROR: JsonObject = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
PLAIN_ERROR: JsonObject = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
JSON_OBJECT: JsonObject = {"type": "object"}
# Starlette's and FastAPI's own answer for a path that is not there.
NOT_FOUND: JsonObject = {"type": "object", "required": ["detail"]}

# --- FHIR ------------------------------------------------------------------------------------

OUTCOME_REF = {"$ref": "#/components/schemas/OperationOutcome"}


def _resource(kind: str | None) -> JsonObject:
    if kind is None:
        return {"$ref": "#/components/schemas/Resource"}
    return {
        "allOf": [
            {"$ref": "#/components/schemas/Resource"},
            {"properties": {"resourceType": {"const": kind}}},
        ]
    }


def _bundle(kind: str) -> JsonObject:
    return {
        "allOf": [
            {"$ref": "#/components/schemas/Bundle"},
            {"properties": {"type": {"const": kind}}, "required": ["type"]},
        ]
    }


COMPONENT_SCHEMAS: JsonObject = {
    "Resource": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
            "id": {"type": "string", "pattern": _ID_PATTERN},
        },
    },
    "OperationOutcome": {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Bundle": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "link": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["relation", "url"],
                    "properties": {"relation": {"type": "string"}, "url": {"type": "string"}},
                },
            },
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"resource": {"$ref": "#/components/schemas/Resource"}},
                },
            },
        },
    },
}

# Every FHIR request may be refused so, whatever it is (the door's order: rate limit, route,
# body size, format, gate, handler; the audit log down is 503).
_ALWAYS = {
    "400": "malformed request, unknown or bad parameter",
    "401": "no valid access token",
    "403": "refused by the scopes or the authorization engine",
    "404": "no such resource (or not one the caller may know of)",
    "406": "a _format other than JSON",
    "413": "the body is larger than the limit",
    "429": "above the rate limit (Retry-After)",
    "503": "the access could not be recorded; nothing was served",
}
# And so, for a request that carries a resource.
_WRITING = {
    "409": "contradicts stored state (a duplicate identifier, an already replaced document)",
    "415": "the body is not application/fhir+json",
    "422": "well-formed, but refused by a rule (a wrong check digit, an unknown code)",
}


def _problems(*extra: Mapping[str, str]) -> JsonObject:
    statuses = dict(_ALWAYS)
    for more in extra:
        statuses.update(more)
    return {
        status: {
            "description": text,
            "content": {FHIR_JSON: {"schema": OUTCOME_REF}},
            **(
                {"headers": {"Retry-After": {"schema": {"type": "string"}}}}
                if status == "429"
                else {}
            ),
        }
        for status, text in sorted(statuses.items())
    }


def _fhir(schema: JsonObject, description: str, headers: Iterable[str] = ()) -> JsonObject:
    declared: JsonObject = {
        "description": description,
        "content": {FHIR_JSON: {"schema": schema}},
    }
    if headers:
        declared["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return declared


def _param_schema(param: SearchParam, max_page_size: int) -> JsonObject:
    if param.name == "_count":
        return {"type": "integer", "minimum": 1, "maximum": max_page_size}
    if param.type == "number":
        return {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}
    if param.type == "date":
        return {"type": "string", "pattern": _DATE_PATTERN}
    return {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_LENGTH}


def _query(param: SearchParam, max_page_size: int) -> JsonObject:
    return {
        "name": param.name,
        "in": "query",
        "required": param.required,
        "description": param.documentation,
        "schema": _param_schema(param, max_page_size),
    }


FORMAT = {
    "name": "_format",
    "in": "query",
    "required": False,
    "description": "only JSON is served",
    "schema": {"enum": ["json", FHIR_JSON, "application/json"]},
}
ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": _ID_PATTERN},
}
VID = {
    "name": "vid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
}


def _search_params(handler: ResourceHandler, max_page_size: int) -> list[SearchParam]:
    """The handler's search parameters and the common ones it accepts."""
    common = [
        SearchParam("_count", "number", f"Results per page (at most {max_page_size})"),
        SearchParam("_offset", "number", "Results to skip"),
    ]
    if handler.includes:
        common.append(SearchParam("_include", "token", " or ".join(handler.includes)))
    return [*handler.search_params, *common]


def _include_schema(handler: ResourceHandler) -> JsonObject:
    return {"enum": list(handler.includes)}


def fhir_paths(door: FhirDoor, max_page_size: int) -> JsonObject:
    """The OpenAPI paths of everything the door's registry declares, under ``/fhir``."""
    paths: dict[str, JsonObject] = {}
    secured: list[JsonObject] = [{BEARER: []}]

    def operation(path: str, method: str, spec: JsonObject) -> None:
        item = paths.setdefault(path, {})
        assert method not in item, f"{method.upper()} {path} declared twice"
        item[method] = {"security": secured, **spec}

    paths["/fhir/metadata"] = {
        "get": {
            "operationId": "fhir-capabilities",
            "summary": "The CapabilityStatement (no token needed)",
            "tags": ["FHIR"],
            "parameters": [FORMAT],
            "responses": {
                "200": _fhir(_resource("CapabilityStatement"), "what this server serves"),
                **_problems(),
            },
        }
    }
    for kind in sorted(door.handlers):
        handler = door.handlers[kind]
        interactions = handler.interactions
        tags = ["FHIR", kind]
        base, instance = f"/fhir/{kind}", f"/fhir/{kind}/{{id}}"
        if Interaction.TRANSACTION in interactions:
            operation(
                "/fhir",
                "post",
                {
                    "operationId": "fhir-transaction",
                    "summary": "An ITI-65 Provide Document Bundle (transaction)",
                    "tags": ["FHIR", "Bundle"],
                    "requestBody": _body(_bundle("transaction")),
                    "responses": {
                        "200": _fhir(_bundle("transaction-response"), "stored, all or nothing"),
                        **_problems(_WRITING),
                    },
                },
            )
        if Interaction.SEARCH in interactions:
            params = _search_params(handler, max_page_size)
            query_params = [_query(p, max_page_size) for p in params]
            for declared in query_params:
                if declared["name"] == "_include":
                    declared["schema"] = _include_schema(handler)
            found = {"200": _fhir(_bundle("searchset"), "one page of matches"), **_problems()}
            operation(
                base,
                "get",
                {
                    "operationId": f"fhir-{kind}-search",
                    "summary": f"Search {kind}",
                    "tags": tags,
                    "parameters": [*query_params, FORMAT],
                    "responses": found,
                },
            )
            form_schema: JsonObject = {
                "type": "object",
                "properties": {d["name"]: d["schema"] for d in query_params},
            }
            operation(
                f"{base}/_search",
                "post",
                {
                    "operationId": f"fhir-{kind}-search-post",
                    "summary": f"Search {kind}, the parameters in a form body",
                    "tags": tags,
                    "parameters": [FORMAT],
                    "requestBody": {"required": True, "content": {FORM: {"schema": form_schema}}},
                    "responses": found,
                },
            )
        if Interaction.CREATE in interactions:
            operation(
                base,
                "post",
                {
                    "operationId": f"fhir-{kind}-create",
                    "summary": f"Create a {kind}",
                    "tags": tags,
                    "parameters": [FORMAT],
                    "requestBody": _body(_resource(kind)),
                    "responses": {
                        "201": _fhir(_resource(kind), "created", ["Location", "ETag"]),
                        **_problems(_WRITING),
                    },
                },
            )
        if Interaction.CONDITIONAL_UPDATE in interactions:
            operation(
                base,
                "put",
                {
                    "operationId": f"fhir-{kind}-conditional-update",
                    "summary": f"Create or update the {kind} an identifier names",
                    "tags": tags,
                    "parameters": [
                        {
                            "name": "identifier",
                            "in": "query",
                            "required": True,
                            "description": "system|value",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                        }
                    ],
                    "requestBody": _body(_resource(kind)),
                    "responses": {
                        "200": _fhir(_resource(kind), "updated", ["ETag"]),
                        "201": _fhir(_resource(kind), "created", ["Location", "ETag"]),
                        **_problems(_WRITING),
                    },
                },
            )
        if Interaction.READ in interactions:
            operation(instance, "get", _read(handler, kind))
        if Interaction.UPDATE in interactions:
            operation(
                instance,
                "put",
                {
                    "operationId": f"fhir-{kind}-update",
                    "summary": f"Update a {kind}",
                    "tags": tags,
                    "parameters": [
                        ID,
                        {
                            "name": "If-Match",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": _body(_resource(kind)),
                    "responses": {
                        "200": _fhir(_resource(kind), "updated", ["ETag"]),
                        **_problems(_WRITING, {"412": "If-Match names an older version"}),
                    },
                },
            )
        if Interaction.HISTORY in interactions:
            operation(
                f"{instance}/_history",
                "get",
                {
                    "operationId": f"fhir-{kind}-history",
                    "summary": f"Every version of a {kind}",
                    "tags": tags,
                    "parameters": [ID, FORMAT],
                    "responses": {
                        "200": _fhir(_bundle("history"), "the versions"),
                        **_problems(),
                    },
                },
            )
        if Interaction.VREAD in interactions:
            spec = _read(handler, kind)
            spec["operationId"] = f"fhir-{kind}-vread"
            spec["summary"] = f"One version of a {kind}"
            spec["parameters"] = [ID, VID, *spec["parameters"][1:]]
            operation(f"{instance}/_history/{{vid}}", "get", spec)
        for declared_operation in handler.operations:
            at = instance if declared_operation.instance else base
            for method in sorted(declared_operation.methods):
                path = f"{at}/${declared_operation.name}"
                operation(
                    path,
                    method.lower(),
                    _operation(kind, declared_operation, method, max_page_size),
                )
    return paths


def _body(schema: JsonObject) -> JsonObject:
    return {"required": True, "content": {FHIR_JSON: {"schema": schema}}}


def _read(handler: ResourceHandler, kind: str) -> JsonObject:
    spec: JsonObject = {
        "operationId": f"fhir-{kind}-read",
        "summary": f"Read a {kind}",
        "tags": ["FHIR", kind],
        "parameters": [ID, FORMAT],
        "responses": {"200": _fhir(_resource(kind), "the resource", ["ETag"]), **_problems()},
    }
    if kind == "Binary":
        # ITI-68: the exact bytes in the document's own media type (a Binary resource for a
        # client that accepts only FHIR JSON); ranges and conditional requests are honoured.
        raw = {"type": "string", "format": "binary"}
        content = {media: {"schema": raw} for media in sorted(DEFAULT_CONTENT_TYPES)}
        content[FHIR_JSON] = {"schema": _resource(None)}
        spec["parameters"] = [
            ID,
            {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
            FORMAT,
        ]
        spec["responses"] = {
            "200": {"description": "the document's bytes", "content": content},
            "206": {
                "description": "the range asked for",
                "content": {media: {"schema": raw} for media in sorted(DEFAULT_CONTENT_TYPES)},
            },
            "304": {"description": "If-None-Match names the content"},
            **_problems(
                {
                    "416": "the range is outside the document",
                    "500": "the stored document failed its integrity check; nothing is served",
                }
            ),
        }
    return spec


def _operation(kind: str, declared: Operation, method: str, max_page_size: int) -> JsonObject:
    level = "instance" if declared.instance else "type"
    spec: JsonObject = {
        "operationId": f"fhir-{kind}-{level}-{declared.name}-{method.lower()}",
        "summary": f"${declared.name}",
        "description": declared.documentation,
        "tags": ["FHIR", kind],
        "parameters": [
            *([ID] if declared.instance else []),
            *(_query(p, max_page_size) for p in declared.parameters),
            FORMAT,
        ],
        "responses": {
            "200": _fhir(_resource(declared.gives), "the operation's answer"),
            **_problems(_WRITING if method == "POST" else {}),
        },
    }
    if declared.permission == "c":
        # An operation that creates (Task/$create) answers 201 with what it created.
        spec["responses"]["201"] = _fhir(_resource(declared.gives), "created")
    if declared.takes is not None:
        spec["requestBody"] = _body(_resource(declared.takes))
    return spec


def _mounts(app: FastAPI) -> JsonObject:
    """The static files' folder (a mount, which FastAPI does not describe)."""
    paths: JsonObject = {}
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            paths[f"{route.path}/{{path}}"] = {
                "get": {
                    "operationId": f"static-{route.name}",
                    "summary": "The portal's style sheet and icon",
                    "parameters": [
                        {
                            "name": "path",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {
                                "text/css": {"schema": {"type": "string"}},
                                "image/svg+xml": {"schema": {"type": "string"}},
                            },
                        },
                        "404": answer("no such file", schema=NOT_FOUND),
                    },
                }
            }
    return paths


def openapi_document(app: FastAPI, door: FhirDoor, max_page_size: int) -> JsonObject:
    """FastAPI's schema of the app's own routes, with the FHIR paths of the door merged in."""
    document = get_openapi(
        title="CareVault",
        version=__version__,
        openapi_version="3.1.0",
        description=(
            "A patient-controlled shared care record: FHIR R4 / IHE under /fhir (every request "
            "with a SMART access token, except /fhir/metadata), OAuth 2 / SMART, the audit "
            "log's proofs, the platform PKI, and the patient portal."
        ),
        routes=app.routes,
    )
    paths = fhir_paths(door, max_page_size)
    paths.update(_mounts(app))
    clash = set(paths) & set(document.get("paths", {}))
    assert not clash, f"declared twice: {sorted(clash)}"
    document["paths"] = {**paths, **document.get("paths", {})}
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(COMPONENT_SCHEMAS)
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A SMART access token from /oauth/token (ES256, 5 minutes)",
    }
    return document


__all__ = [
    "answer",
    "bearer",
    "fhir_paths",
    "form",
    "html",
    "openapi_document",
    "query",
    "redirect",
]
