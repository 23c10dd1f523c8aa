"""Each kind of event that exists today reaches the audit log, in the right stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from carevault.bootstrap import Platform
from carevault.cli import context
from carevault.cli.main import app
from carevault.domain.audit import AuditRecord
from carevault.settings import Settings
from support.builders import patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def records(platform: Platform, stream: str) -> list[AuditRecord]:
    size = platform.audit.size(stream)
    return [AuditRecord.from_canonical(d) for _, d in platform.audit.entries(stream, 0, size)]


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    yield CliRunner()
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()


def test_read_search_write_and_refused_attempts(registrar: TestClient,
        client: TestClient, platform: Platform) -> None:
    created = registrar.post("/fhir/Patient", json=patient(platform.directory.systems, 1),
                          headers=FHIR_JSON).json()
    client.get(f"/fhir/Patient/{created['id']}")
    client.get("/fhir/Practitioner", params={"name": "x"})
    registrar.put(f"/fhir/Patient/{created['id']}", json=patient(platform.directory.systems, 1,
                                                                family="Schmit"),
                  headers=FHIR_JSON)
    with TestClient(platform.app, client=("203.0.113.50", 1)) as outsider:
        assert outsider.get(f"/fhir/Patient/{created['id']}").status_code == 401
    kinds = [(r.action, r.interaction, r.outcome, r.patient) for r in records(platform,
                                                                              "clinical")]
    assert kinds == [
        ("C", "create", "0", created["id"]),
        ("R", "read", "0", created["id"]),
        ("R", "search-type", "0", None),
        ("U", "update", "0", created["id"]),
        ("R", "read", "4", created["id"]),  # the refused attempt, in the patient's history
    ]
    refused = records(platform, "clinical")[-1]
    assert refused.status == 401 and refused.agent.network == "203.0.113.50"


def test_merge_is_recorded_for_both_patients(registrar: TestClient,
        client: TestClient, platform: Platform) -> None:
    systems = platform.directory.systems
    a = registrar.post("/fhir/Patient", json=patient(systems, 1), headers=FHIR_JSON).json()
    b = registrar.post("/fhir/Patient", json=patient(systems, 2), headers=FHIR_JSON).json()
    registrar.post("/fhir/Patient/$merge", headers=FHIR_JSON, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{a['id']}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{b['id']}"}}]})
    merge = [r for r in records(platform, "clinical") if r.interaction == "operation"]
    # A registrar's operation has its own entry in the operators' stream, and one in each
    # patient's history.
    assert [r.patient for r in merge] == [a["id"], b["id"]]
    assert all(r.action == "E" and r.query == "$merge" for r in merge)
    (own,) = [r for r in records(platform, "operator") if r.query == "$merge"]
    assert own.patient is None and own.agent.role == "registrar" and own.query == "$merge"
    assert own.detail["directory-change"] == "identity-links"


def test_operator_commands_go_to_the_operator_stream(cli: CliRunner,
                                                     platform: Platform) -> None:
    before = platform.audit.size("clinical")
    assert cli.invoke(app, ["directory", "add-organization", "--identifier", "ORG-9",
                            "--name", "Pharmacie du Parc"]).exit_code == 0
    assert cli.invoke(app, ["directory", "list", "organizations"]).exit_code == 0
    assert cli.invoke(app, ["audit", "entry", "0", "--stream", "operator"]).exit_code == 0
    assert cli.invoke(app, ["audit", "verify"]).exit_code == 0
    operator = records(platform, "operator")
    assert [r.interaction for r in operator] == [
        "directory add-organization", "directory list", "audit entry", "audit verify"]
    assert all(r.agent.role == "operator" and r.agent.who for r in operator)
    assert operator[0].detail["identifier"] == "ORG-9"
    assert platform.audit.size("clinical") == before  # one function, one trace
