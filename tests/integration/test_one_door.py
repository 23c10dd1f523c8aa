"""One door: every registered FHIR route is decided by the authorization engine, and the
decision (its rule path) is what the audit log records. Walks the registry itself, so a new
handler or operation is covered the day it is added.

Every other route (OAuth, the audit API, the PKI, the portal, and whatever comes next) passes
the route door (`carevault.api.route_door`): walked here over the whole application, so that a
route added without an access rule is found - and refused, as a planted one shows."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from carevault.api.app import create_app
from carevault.api.fhir.door import Interaction, ResourceHandler
from carevault.api.route_door import (
    FHIR_DOOR,
    PUBLIC,
    SECURITY_OFFICER,
    SECURITY_OFFICER_PAGE,
    AccessRule,
    Audited,
    access,
    admitted,
    declared,
    walk,
)
from carevault.bootstrap import Platform
from carevault.domain.audit import AuditRecord
from support.operators import operator, operator_token

_METHOD = {
    Interaction.READ: ("GET", "{type}/x1"),
    Interaction.VREAD: ("GET", "{type}/x1/_history/1"),
    Interaction.HISTORY: ("GET", "{type}/x1/_history"),
    Interaction.SEARCH: ("GET", "{type}"),
    Interaction.CREATE: ("POST", "{type}"),
    Interaction.UPDATE: ("PUT", "{type}/x1"),
    Interaction.CONDITIONAL_UPDATE: ("PUT", "{type}?identifier=urn:x|1"),
    Interaction.TRANSACTION: ("POST", ""),  # POST [base]
}


def routes(handlers: dict[str, ResourceHandler]) -> Iterator[tuple[str, str]]:
    for kind, handler in sorted(handlers.items()):
        for interaction in sorted(handler.interactions, key=lambda i: i.value):
            method, path = _METHOD[interaction]
            yield method, path.format(type=kind)
        for operation in handler.operations:
            for method in sorted(operation.methods):
                base = f"{kind}/x1" if operation.instance else kind
                yield method, f"{base}/${operation.name}"


def test_every_handler_declares_what_it_needs_of_the_engine(platform: Platform) -> None:
    for handler in platform.door.handlers.values():
        assert type(handler).access_need is not ResourceHandler.access_need, handler


def test_every_route_is_decided_by_the_engine_and_recorded_with_its_rule(
        client: TestClient, platform: Platform) -> None:
    """An operator holding every scope is refused on every route, by the engine's operator
    rule, before any handler runs; each refusal is in the log with the rule path."""
    totp = operator(platform, "walker@carevault.test", security_officer=False)
    token = operator_token(client, platform, "walker@carevault.test", totp, "system/*.cruds")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    walked = list(routes(platform.door.handlers))
    assert len(walked) >= 30  # the registry, not a hand-written list
    for method, path in walked:
        before = platform.audit.size("clinical")
        url, _, query = path.partition("?")
        body = b'{"resourceType": "Parameters"}' if method in ("POST", "PUT") else None
        response = client.request(method, f"/fhir/{url}", headers=headers, content=body,
                                  params=dict([query.split("=", 1)]) if query else None)
        assert response.status_code == 403, (method, path, response.text)
        rows = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
        records = [AuditRecord.from_canonical(data) for _, data in rows]
        assert records, (method, path)
        main = records[0]
        assert main.outcome != "0" and main.status == 403
        assert main.agent.who is not None and main.agent.who.startswith("account:")
        assert main.rule is not None and main.rule.startswith("identity → "), main.rule
        assert "deny" in main.rule


def test_a_permitted_request_records_the_engine_path(
        client: TestClient, platform: Platform) -> None:
    before = platform.audit.size("clinical")
    assert client.get("/fhir/Practitioner").status_code == 200
    rows = platform.audit.entries("clinical", before, platform.audit.size("clinical"))
    main = AuditRecord.from_canonical(rows[0][1])
    assert main.rule is not None
    assert main.rule.startswith("identity → directory: permit (directory)")
    assert main.purpose_of_use == "TREAT"


# --- every other route: the route door --------------------------------------------------------


def app_routes(routes: list[BaseRoute]) -> Iterator[tuple[str, BaseRoute]]:
    for route in walk(routes):
        if isinstance(route, (Route, Mount)):
            yield route.path, route


def test_every_route_of_the_application_declares_its_access_rule(platform: Platform) -> None:
    """All routers, not only FHIR's: a route without a rule would be refused to everyone."""
    walked = dict(app_routes(platform.app.router.routes))
    assert {"/oauth/token", "/audit/entries", "/pki/crl", "/login", "/me", "/fhir"} <= set(walked)
    rules: dict[str, AccessRule] = {}
    for path, route in walked.items():
        found = declared(route)
        assert found is not None, f"{path} declares no access rule"
        rules[path] = found[0]
    assert rules["/fhir/{path:path}"] is FHIR_DOOR
    assert rules["/audit/entries"] is SECURITY_OFFICER
    assert rules["/audit/tree-head"] is PUBLIC
    assert rules["/officer"] is SECURITY_OFFICER_PAGE
    assert rules["/officer/pki"] is SECURITY_OFFICER_PAGE
    assert rules["/static"] is PUBLIC
    # Only the documents that say nothing about anyone are public.
    public = {path for path, rule in rules.items() if rule is PUBLIC}
    assert not public & {"/oauth/token", "/oauth/introspect", "/me", "/oauth/authorize"}


def test_the_doors_refusal_of_a_page_is_a_page_and_of_an_api_is_json(
    platform: Platform,
) -> None:
    """The officer's pages and the audit API share an authenticator; each refusal comes in the
    shape its reader expects (a browser: HTML; a client of the API: JSON), both recorded."""
    before = platform.audit.size("operator")
    with TestClient(platform.app, base_url="http://127.0.0.1:8000") as client:
        page = client.get("/officer/pki")
        api = client.get("/audit/entries")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert "this is for the security officer" in page.text and "<main>" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert api.status_code == 401 and api.json() == {"error": "this is for the security officer"}
    refused = [r for r in _operator_records(platform, before) if r.outcome == "4"]
    assert {r.interaction for r in refused} >= {"officer-pki-status", "audit-entries"}


def _operator_records(platform: Platform, before: int) -> list[AuditRecord]:
    rows = platform.audit.entries("operator", before, platform.audit.size("operator"))
    return [AuditRecord.from_canonical(data) for _, data in rows]


def test_a_route_that_declares_no_rule_is_refused_and_recorded(platform: Platform) -> None:
    planted = APIRouter()

    @planted.get("/planted/undeclared")
    def undeclared() -> JSONResponse:  # no @access: the door must refuse it
        raise AssertionError("an undeclared route ran")

    @planted.get("/planted/officer")
    @access(SECURITY_OFFICER, Audited("operator", "security", "R", "planted"))
    def officer_only() -> JSONResponse:
        return JSONResponse({"served": True})

    app = create_app(platform.settings, platform.door, platform.audit, routers=[planted])
    outside = TestClient(app, base_url="http://127.0.0.1:8000", client=("192.0.2.7", 50000))
    before = platform.audit.size("operator")
    refused = outside.get("/planted/undeclared")
    assert refused.status_code == 403
    assert "declares no access rule" in refused.json()["error"]
    records = _operator_records(platform, before)
    assert [(r.interaction, r.status, r.outcome) for r in records] == [
        ("undeclared-route", 403, "8")
    ]
    assert records[0].detail == {"method": "GET", "route": "/planted/undeclared"}
    assert records[0].agent.network == "192.0.2.7"

    # Declared for the security officer: nobody else gets in, and the refusal is recorded.
    before = platform.audit.size("operator")
    assert outside.get("/planted/officer").status_code == 401
    (refusal,) = _operator_records(platform, before)
    assert (refusal.interaction, refusal.outcome) == ("planted", "4")


def test_a_route_added_after_the_application_was_built_is_refused_too(
        platform: Platform) -> None:
    app = create_app(platform.settings, platform.door, platform.audit)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/health").status_code == 200

    @app.get("/planted/later")
    def later() -> JSONResponse:
        raise AssertionError("an undeclared route ran")

    assert client.get("/planted/later").status_code == 403


def test_the_door_records_what_the_handler_noted_once(platform: Platform) -> None:
    planted = APIRouter()
    audited = Audited("operator", "security", "R", "planted", entity_type="AuditLog", query=True)

    @planted.get("/planted/noted")
    @access(SECURITY_OFFICER, audited)
    def noted(request: Request) -> JSONResponse:
        admitted(request).note("0", {"result": "seen"})
        return JSONResponse({"served": True})

    app = create_app(platform.settings, platform.door, platform.audit, routers=[planted])
    # dev: the developer's loopback is let in as the security officer.
    loopback = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))
    before = platform.audit.size("operator")
    assert loopback.get("/planted/noted", params={"a": "1"}).json() == {"served": True}
    (record,) = _operator_records(platform, before)
    assert (record.interaction, record.outcome, record.query) == ("planted", "0", "a=1")
    assert record.agent.role == "security-officer" and record.entity_type == "AuditLog"
