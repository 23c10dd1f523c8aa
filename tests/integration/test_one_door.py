"""One door: every registered FHIR route is decided by the authorization engine, and the
decision (its rule path) is what the audit log records. Walks the registry itself, so a new
handler or operation is covered the day it is added."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.testclient import TestClient

from carevault.api.fhir.door import Interaction, ResourceHandler
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
