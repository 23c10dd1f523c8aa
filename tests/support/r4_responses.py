"""Every FHIR response the tests receive is valid FHIR R4, and valid against the IHE profiles
that apply to it (issue #17: "every response is valid R4").

How it works: `install` wraps Starlette's TestClient transport once per test process, so every
request any test (or fixture) makes through a ``TestClient`` is seen, whichever client fixture
built it. A response to ``/fhir`` or ``/fhir/...`` with a FHIR media type has its body checked
(each distinct body once per process: the findings are cached by path kind and body hash); what
is wrong is collected per test, and the test fails after its own body has passed, naming each
response (method, path, status) and each problem (the element's path and the rule broken). A
test may opt out with ``@pytest.mark.r4_unchecked("why")`` when it drives a deliberately broken
server.

What is checked, and against what:

1. **The R4 structure**, with the R4B models of ``fhir.resources`` (the library and models the
   server validates its input with). R4B is R4 for the resources CareVault serves: the R4B
   release changed only the medication-definition, evidence and subscription modules and added
   two datatypes (hl7.org/fhir/R4B/r4b-explanation.html, history.html). So the layer also
   refuses what exists only in R4B: those resource types and the ``CodeableReference`` and
   ``RatioRange`` datatypes. The models check element names (no unknown element), datatypes and
   their regular expressions, required elements (1..1, 1..*), choice types (one ``value[x]``)
   and the nested resources of a Bundle, Parameters or ``contained``.
2. **What the models do not check**, as explicit rules of the R4 specification:
   JSON representation (json.html): no ``null`` outside a primitive-extension array, no empty
   array, object or string; the XML representation (xml.html): the FHIR namespace, and ele-1
   (every element has a value or children); ele-1 and ext-1 in JSON (an extension has a value
   or extensions, not both); required bindings: the codes ``fhir.resources`` lists for a code
   element (``enum_values``; a list it cuts short with "+" is not used), plus
   ``OperationOutcome.issue.code`` (IssueType) and
   ``AuditEvent.action``, which it does not list; the Bundle invariants bdl-1 (total only in a
   searchset or history), bdl-2 (entry.search only in a searchset), bdl-3 / bdl-4
   (entry.request / entry.response only, and always, where the type wants them), bdl-7
   (fullUrl unique) and bdl-8 (fullUrl not version specific); the DomainResource invariants
   dom-2 (a contained resource holds no contained), dom-3 (a contained resource is referenced
   from the container), dom-4 (no versionId or lastUpdated) and dom-5 (no security label).
3. **The IHE profiles that apply**, in `support.r4_profiles`.

What it does not check: the FHIRPath invariants other than those named, terminology beyond the
required bindings listed (no code system is looked up), references resolving to a resource,
``Narrative`` XHTML rules, and bodies in other media types (a document's own bytes from ITI-68
Binary, a printed prescription's PDF).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from pydantic import BaseModel, ValidationError
from starlette import testclient

from support import r4_profiles

JsonObject = dict[str, Any]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "text/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "text/xml"})
# Resource types and datatypes that exist in R4B and not in R4 (R4B history.html, 4.3.0).
R4B_ONLY_RESOURCES = frozenset({
    "AdministrableProductDefinition", "Citation", "ClinicalUseDefinition", "EvidenceReport",
    "Ingredient", "ManufacturedItemDefinition", "MedicinalProductDefinition",
    "NutritionProduct", "PackagedProductDefinition", "RegulatedAuthorization",
    "SubscriptionStatus", "SubscriptionTopic", "SubstanceDefinition",
})
R4B_ONLY_TYPES = frozenset({"CodeableReference", "RatioRange"})
# R4 required bindings that fhir.resources does not list (its ``enum_values``).
ISSUE_TYPES = frozenset({  # http://hl7.org/fhir/R4/valueset-issue-type.html
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
})
AUDIT_ACTIONS = frozenset({"C", "R", "U", "D", "E"})  # R4 valueset-audit-event-action
# Where a /fhir answer is not a FHIR resource by design: the document's own bytes (ITI-68, sent
# as an attachment) and a printed prescription (Task/$print, a PDF).
MAX_FINDINGS_SHOWN = 20


# --- the checks --------------------------------------------------------------------------------


def check_body(path: str, content_type: str, body: bytes) -> list[str]:
    """What is wrong with one FHIR response body (an empty list when nothing is)."""
    media = content_type.split(";")[0].strip().lower()
    if media in JSON_TYPES:
        try:
            value = json.loads(body)
        except ValueError as error:
            return [f"the body is not JSON: {error}"]
        if not isinstance(value, dict):
            return ["the body is not a JSON object (a resource)"]
        problems = list(_json_representation(value, value.get("resourceType", "?")))
        return problems + check_resource(path, value)
    if media in XML_TYPES:
        return _check_xml(path, body)
    return [f"the body's media type {media or '(none)'} is not a FHIR format"]


def check_resource(path: str, resource: JsonObject) -> list[str]:
    """The R4 structure, the rules the models leave out, and the IHE profiles, of one resource
    in its JSON form."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not kind:
        return ["resourceType: missing: the body is not a FHIR resource"]
    if kind in R4B_ONLY_RESOURCES:
        return [f"resourceType: {kind} exists in R4B, not in R4"]
    try:
        model = get_fhir_model_class(kind)
    except (KeyError, ValueError):
        return [f"resourceType: {kind!r} is not a FHIR resource type"]
    try:
        parsed = model.model_validate(resource)
    except ValidationError as error:
        return [f"{_where(kind, e['loc'])}: {e['msg']}" for e in error.errors()]
    except (ValueError, TypeError) as error:
        return [f"{kind}: {error}"]
    problems = list(_model_rules(parsed, kind))
    problems += _invariants(resource, kind)
    problems += r4_profiles.check(path, resource)
    return problems


def _where(kind: str, loc: tuple[int | str, ...]) -> str:
    where = kind
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def _json_representation(value: Any, where: str) -> Iterator[str]:
    """FHIR R4 json.html: no null (except to align a primitive array's extensions), no empty
    object, array or string."""
    if isinstance(value, dict):
        if not value:
            yield f"{where}: an empty object (ele-1: an element has a value or children)"
        for key, item in value.items():
            inner = f"{where}.{key}"
            if key.startswith("_") and isinstance(item, list):
                if not item:
                    yield f"{inner}: an empty array"
                for index, part in enumerate(item):
                    if part is not None:
                        yield from _json_representation(part, f"{inner}[{index}]")
                continue
            yield from _json_representation(item, inner)
        if "extension" in value or "modifierExtension" in value:
            for key in ("extension", "modifierExtension"):
                for index, extension in enumerate(value.get(key) or []):
                    if isinstance(extension, dict):
                        yield from _ext_1(extension, f"{where}.{key}[{index}]")
    elif isinstance(value, list):
        if not value:
            yield f"{where}: an empty array (FHIR JSON leaves out an element with no value)"
        for index, item in enumerate(value):
            yield from _json_representation(item, f"{where}[{index}]")
    elif value is None:
        yield f"{where}: null (FHIR JSON leaves out an element with no value)"
    elif isinstance(value, str) and value == "":
        yield f"{where}: an empty string (FHIR JSON leaves out an element with no value)"


def _ext_1(extension: JsonObject, where: str) -> Iterator[str]:
    values = [key for key in extension if key.startswith("value")]
    nested = bool(extension.get("extension"))
    if len(values) + nested != 1:
        yield f"{where}: ext-1: an extension has either extensions or one value[x], not both"


def _model_rules(model: BaseModel, where: str) -> Iterator[str]:
    """Walk the validated model: required bindings and R4B-only datatypes."""
    kind = type(model).__name__
    if kind in R4B_ONLY_TYPES:
        yield f"{where}: the datatype {kind} exists in R4B, not in R4"
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        inner = f"{where}.{field.alias or name}"
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        listed = extra.get("enum_values")
        allowed = [str(code) for code in listed] if isinstance(listed, list) else []
        if "+" in allowed:  # fhir.resources cuts a long list short with "+": not the value set
            allowed = []
        if allowed and isinstance(value, str) and value not in allowed:
            yield f"{inner}: {value!r} is not in the required value set {sorted(allowed)}"
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, BaseModel):
                yield from _model_rules(item, f"{inner}[{index}]" if value is items else inner)
    if kind == "OperationOutcomeIssue":
        code = getattr(model, "code", None)
        if code not in ISSUE_TYPES:
            yield f"{where}.code: {code!r} is not an IssueType code (required binding)"
    if kind == "AuditEvent":
        action = getattr(model, "action", None)
        if action is not None and action not in AUDIT_ACTIONS:
            yield f"{where}.action: {action!r} is not in AuditEventAction (required binding)"


def _invariants(resource: JsonObject, where: str) -> list[str]:
    problems: list[str] = []
    for inner, nested in _resources(resource, where):
        problems += _dom(nested, inner)
        if nested.get("resourceType") == "Bundle":
            problems += _bdl(nested, inner)
    return problems


def _resources(resource: JsonObject, where: str) -> Iterator[tuple[str, JsonObject]]:
    """This resource and every resource inside it (Bundle entries, Parameters, contained)."""
    yield where, resource
    for index, entry in enumerate(resource.get("entry") or []):
        if resource.get("resourceType") == "Bundle" and isinstance(entry.get("resource"), dict):
            yield from _resources(entry["resource"], f"{where}.entry[{index}].resource")
    if resource.get("resourceType") == "Parameters":
        for index, parameter in enumerate(resource.get("parameter") or []):
            if isinstance(parameter.get("resource"), dict):
                yield from _resources(parameter["resource"], f"{where}.parameter[{index}].resource")


def _dom(resource: JsonObject, where: str) -> list[str]:
    problems: list[str] = []
    contained = resource.get("contained") or []
    if not contained:
        return problems
    outside = json.dumps({k: v for k, v in resource.items() if k != "contained"})
    inside = json.dumps(contained)
    for index, item in enumerate(contained):
        at = f"{where}.contained[{index}]"
        if item.get("contained"):
            problems.append(f"{at}: dom-2: a contained resource holds no contained resource")
        meta = item.get("meta") or {}
        if "versionId" in meta or "lastUpdated" in meta:
            problems.append(f"{at}: dom-4: a contained resource has no versionId or lastUpdated")
        if meta.get("security"):
            problems.append(f"{at}: dom-5: a contained resource has no security label")
        reference = f'"#{item.get("id")}"'
        if reference not in outside and reference not in inside:
            problems.append(f"{at}: dom-3: a contained resource is referenced from its container")
    return problems


def _bdl(bundle: JsonObject, where: str) -> list[str]:
    problems: list[str] = []
    kind = bundle.get("type")
    if "total" in bundle and kind not in ("searchset", "history"):
        problems.append(f"{where}.total: bdl-1: total only in a searchset or history")
    full_urls: set[tuple[str, str | None]] = set()
    for index, entry in enumerate(bundle.get("entry") or []):
        at = f"{where}.entry[{index}]"
        if "search" in entry and kind != "searchset":
            problems.append(f"{at}.search: bdl-2: entry.search only in a searchset")
        wants_request = kind in ("batch", "transaction", "history")
        if ("request" in entry) != wants_request:
            must = "mandatory" if wants_request else "prohibited"
            problems.append(f"{at}.request: bdl-3: entry.request is {must} in a {kind} Bundle")
        wants_response = kind in ("batch-response", "transaction-response", "history")
        if ("response" in entry) != wants_response:
            must = "mandatory" if wants_response else "prohibited"
            problems.append(f"{at}.response: bdl-4: entry.response is {must} in a {kind} Bundle")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            if "/_history/" in full_url:
                problems.append(f"{at}.fullUrl: bdl-8: fullUrl is not a version-specific reference")
            version = ((entry.get("resource") or {}).get("meta") or {}).get("versionId")
            if (full_url, version) in full_urls:
                problems.append(f"{at}.fullUrl: bdl-7: {full_url} appears twice")
            full_urls.add((full_url, version))
    return problems


def _check_xml(path: str, body: bytes) -> list[str]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as error:
        return [f"the body is not XML: {error}"]
    problems: list[str] = []
    name = etree.QName(root)
    if name.namespace != FHIR_NS:
        problems.append(f"{name.localname}: the root element is not in the FHIR namespace")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # a comment or processing instruction
        qname = etree.QName(element)
        if qname.namespace == XHTML_NS:
            continue
        if qname.namespace != FHIR_NS:
            problems.append(f"{qname.localname}: an element outside the FHIR namespace")
        elif len(element) == 0 and element.get("value") is None and element.get("url") is None:
            where = root.getroottree().getpath(element)
            problems.append(f"{where}: ele-1: an element has a value or children")
    if problems:
        return problems
    try:
        model = get_fhir_model_class(name.localname)
    except (KeyError, ValueError):
        return [f"{name.localname}: not a FHIR resource type"]
    try:
        parsed = model.model_validate_xml(body, xmlparser=parser)
    except ValidationError as error:
        return [f"{_where(name.localname, e['loc'])}: {e['msg']}" for e in error.errors()]
    except (ValueError, TypeError) as error:
        return [f"{name.localname}: {error}"]
    resource = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return check_resource(path, resource)


# --- the hook into the tests' HTTP clients ------------------------------------------------------


class Collector:
    """The findings of the test that runs now, and every body's findings already computed."""

    def __init__(self) -> None:
        self.findings: list[str] | None = None
        self.cache: dict[tuple[str, str], tuple[str, ...]] = {}
        self.checked = 0

    def observe(self, request: httpx.Request, response: httpx.Response) -> None:
        if self.findings is None:
            return
        path = request.url.path
        if not (path == "/fhir" or path.startswith("/fhir/")):
            return
        if path.startswith("/fhir/.well-known"):  # SMART configuration: JSON, not a resource
            return
        body = response.read()
        if not body:
            return
        content_type = response.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        if media not in JSON_TYPES | XML_TYPES and _raw_by_design(path, response):
            return
        kind = r4_profiles.path_kind(path)
        key = (f"{kind}|{media}", hashlib.sha256(body).hexdigest())
        found = self.cache.get(key)
        if found is None:
            found = tuple(check_body(path, content_type, body))
            self.cache[key] = found
            self.checked += 1
        shown = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
        for problem in found:
            self.findings.append(f"{request.method} {shown} → {response.status_code}: {problem}")


def _raw_by_design(path: str, response: httpx.Response) -> bool:
    document = path.startswith("/fhir/Binary/") and "attachment" in response.headers.get(
        "content-disposition", "")
    printed = path.startswith("/fhir/Task/") and path.endswith("/$print")
    return document or printed


COLLECTOR = Collector()
_INSTALLED: list[Callable[..., httpx.Response]] = []


def install() -> None:
    """Wrap the TestClient transport (once): every response passes `COLLECTOR`."""
    if _INSTALLED:
        return
    original = testclient._TestClientTransport.handle_request
    _INSTALLED.append(original)

    def handle_request(self: testclient._TestClientTransport,
                       request: httpx.Request) -> httpx.Response:
        response: httpx.Response = original(self, request)
        COLLECTOR.observe(request, response)
        return response

    testclient._TestClientTransport.handle_request = handle_request  # type: ignore[method-assign]


# --- the pytest hooks (imported by tests/conftest.py) -------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "r4_unchecked(reason): this test's FHIR responses are not held to R4 "
        "(support.r4_responses), e.g. a deliberately broken server")
    install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    unchecked = item.get_closest_marker("r4_unchecked") is not None
    COLLECTOR.findings = None if unchecked else []
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield  # a test that fails on its own is reported for its own reason
    findings, COLLECTOR.findings = COLLECTOR.findings or [], None
    if findings:
        unique = list(dict.fromkeys(findings))
        shown = "\n".join(f"  {line}" for line in unique[:MAX_FINDINGS_SHOWN])
        more = len(unique) - MAX_FINDINGS_SHOWN
        tail = f"\n  … and {more} more" if more > 0 else ""
        pytest.fail(
            f"{len(unique)} FHIR response problem(s) (support.r4_responses; not FHIR R4 or not "
            f"the IHE profile that applies):\n{shown}{tail}",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    COLLECTOR.findings = None
    return (yield)
