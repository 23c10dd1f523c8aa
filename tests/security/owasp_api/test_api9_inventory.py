"""OWASP API9:2023 Improper Inventory Management: what is served is what is documented, and
nothing else answers. The FHIR API's inventory is its CapabilityStatement (generated from the
door's registry); every other route is listed in `docs/security/owasp-api-top10.md`
("Inventory"); what exists for development only (the demo people, the developer's loopback
read of the audit log) is absent anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.bootstrap import Platform, build
from carevault.settings import ConfigurationError, Settings
from support.owasp import Findings, Target, attempt, data_fingerprint

pytestmark = pytest.mark.security

INVENTORY = Path(__file__).parents[3] / "docs" / "security" / "owasp-api-top10.md"
_ALL = {"read": ("GET", "{type}/x1"), "vread": ("GET", "{type}/x1/_history/1"),
        "history-instance": ("GET", "{type}/x1/_history"), "search-type": ("GET", "{type}"),
        "create": ("POST", "{type}"), "update": ("PUT", "{type}/x1")}
# FHIR R4 resource types a client might hope for on a health record, none of them served.
UNSERVED = ("Observation", "Condition", "MedicationRequest", "AllergyIntolerance",
            "DiagnosticReport", "Immunization", "Account", "Group", "Person", "RelatedPerson",
            "Device", "Task", "Subscription", "OperationDefinition", "StructureDefinition",
            "CodeSystem", "Provenance", "CareTeam", "Location", "Endpoint")
# Operations other FHIR servers offer, which would read or change a lot at once.
# What the door says of a route it does not serve (as opposed to an object it does not know).
UNROUTED = ("is not served here", "no FHIR endpoint", "is not supported on",
            "is not allowed on", "is not defined on")
UNSERVED_OPERATIONS = ("$everything", "$export", "$validate", "$meta", "$meta-add",
                       "$graphql", "$process-message", "$lastn", "$match", "$diff", "$expunge")


def attack_probing_beyond_the_capability_statement(target: Target) -> list[str]:
    """Patient A's app (whose scopes cover every resource) tries each interaction each
    listed resource does not list, resources that are not listed, operations that are not
    listed, and old or other versions of the API: 405 or 404, recorded; what is listed
    answers (a refusal or data, never 'not found')."""
    f, w, http = Findings(), target.world, target.http
    app = w.app_a
    statement = http.get("/fhir/metadata").json()
    listed = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for kind, resource in sorted(listed.items()):
        served = {i["code"] for i in resource["interaction"]}
        for code, (method, path) in _ALL.items():
            url = "/fhir/" + path.format(type=kind)
            body = {"resourceType": kind}
            if code in served:
                answer = http.request(method, url, headers=app, json=body)
                if answer.status_code == 405 or any(p in answer.text for p in UNROUTED):
                    f.add(f"{kind} lists {code}, but {method} {url} is not served: "
                          f"{answer.text[:150]}")
            else:
                attempt(f, target, f"{code} on {kind}, not listed", lambda method=method,
                        url=url, body=body: http.request(method, url, headers=app, json=body),
                        405)
        for operation in UNSERVED_OPERATIONS:
            attempt(f, target, f"{operation} on {kind}", lambda kind=kind, operation=operation:
                    http.get(f"/fhir/{kind}/{operation}", headers=app), 404)
    for kind in UNSERVED:
        if kind in listed:
            continue
        attempt(f, target, f"a search of {kind}", lambda kind=kind: http.get(
            f"/fhir/{kind}", params={"patient": f"Patient/{w.patient_a}"}, headers=app), 404)
    for what, path in [("the system-level $export", "/fhir/$export"),
                       ("the system-level history", "/fhir/_history"),
                       ("an R4 prefix", f"/fhir/R4/Patient/{w.patient_a}"),
                       ("a version prefix", "/fhir/v2/Patient")]:
        attempt(f, target, what, lambda path=path: http.get(path, headers=app), (400, 404, 405))
    for path in ("/api/v1/patients", "/v2/fhir/Patient", "/fhir-old/Patient", "/graphql",
                 "/fhir2/metadata", "/r4/metadata"):
        if http.get(path, headers=app).status_code != 404:
            f.add(f"{path} answers")
    return f.items


ATTACKS = [attack_probing_beyond_the_capability_statement]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.removeprefix("attack_"))
def test_nothing_answers_beyond_what_is_listed(attack: Any, target: Target) -> None:
    assert attack(target) == []


def served_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(methods, path) of every route of the application, routers included (FastAPI keeps an
    included router's routes behind an `_IncludedRouter` in recent versions)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from served_routes(inner.routes, prefix + route.include_context.prefix)
            continue
        methods = getattr(route, "methods", None)
        named = " ".join(sorted(set(methods) - {"HEAD"})) if methods else "any"
        yield named, prefix + route.path


def documented_routes() -> set[tuple[str, str]]:
    """The rows of the inventory table: | `METHODS` | `path` | …"""
    rows = re.findall(r"^\| `([A-Z ]+|any)` \| `([^`]+)` \|", INVENTORY.read_text("utf-8"),
                      re.MULTILINE)
    return set(rows)


def test_every_route_is_in_the_inventory_and_nothing_else(platform: Platform) -> None:
    served = set(served_routes(platform.app.routes))
    documented = documented_routes()
    assert len(documented) > 20  # the table was found
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_the_inventory_routes_answer(target: Target) -> None:
    """Each documented path answers (the FHIR API through the door, the rest directly)."""
    for methods, path in documented_routes():
        if methods == "any" or "{" in path:
            continue
        for method in methods.split():
            answer = target.http.request(method, path)
            assert answer.status_code != 404, (method, path, answer.text[:200])


def test_in_dev_only(settings: Settings, platform: Platform, target: Target,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What development allows (the developer's own loopback reading the audit entries, the
    demo people with their published credentials) is refused in every other environment,
    and so is running there with development defaults."""
    loopback = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 5000),
                "raise_server_exceptions": False}
    with TestClient(platform.app, **loopback) as developer:
        assert developer.get("/audit/entries", params={"start": "0", "end": "1"}
                             ).status_code == 200  # the control: dev, on this machine
    outside = settings.model_copy(update={"environment": "integration",
                                          "public_base_url": "https://carevault.example"})
    deployed = build(outside, platform.engine)
    with TestClient(deployed.app, **loopback) as developer:
        assert developer.get("/audit/entries", params={"start": "0", "end": "1"}
                             ).status_code == 401
        assert developer.get("/fhir/Patient").status_code == 401
    for unsafe in ({"public_base_url": None}, {"public_base_url": "http://carevault.example"},
                   {"key_source": "file:var/carevault.key"},
                   {"database_url": "sqlite:///var/carevault.db"}):
        with pytest.raises(ConfigurationError):
            build(outside.model_copy(update=unsafe), platform.engine)
    from carevault.cli import context
    from carevault.cli.main import app

    before = data_fingerprint(platform)
    for name, value in {"CAREVAULT_ENVIRONMENT": "integration",
                        "CAREVAULT_PUBLIC_BASE_URL": "https://carevault.example",
                        "CAREVAULT_DATABASE_URL": settings.database_url,
                        "CAREVAULT_KEY_SOURCE": settings.key_source}.items():
        monkeypatch.setenv(name, value)
    context.engine_for.cache_clear()
    try:
        demo = CliRunner().invoke(app, ["demo", "--patients", "3", "--professionals", "2",
                                        "--accounts", str(Path(outside.key_source[5:]).parent
                                                          / "demo.json")])
    finally:
        context.engine_for(settings.database_url).dispose()
        context.engine_for.cache_clear()
    assert demo.exit_code == 1, demo.output
    assert "dev only" in demo.output
    assert data_fingerprint(platform) == before
    assert not (Path(outside.key_source[5:]).parent / "demo.json").exists()
