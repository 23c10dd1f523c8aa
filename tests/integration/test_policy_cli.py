"""``carevault policy explain`` and ``carevault policy matrix``, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carevault.bootstrap import Platform
from carevault.cli import context
from carevault.cli.main import app
from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import GrantLevel, Party, Subject, SubjectKind
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.record_policy import Actor
from carevault.settings import Settings
from support.builders import patient


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    yield CliRunner()
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()


def people(platform: Platform) -> tuple[str, str]:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, 1)])[0].id
        svc.register_professionals(uow, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier="HP-EXPLAIN", family="Pharma",
                             given=["Paula"]), "pharmacist")])
        uow.commit()
    with platform.unit_of_work() as uow:
        practitioner_id = uow.directory.practitioner_ids_by_identifier(["HP-EXPLAIN"])[
            "HP-EXPLAIN"]
    return patient_id, practitioner_id


def test_explain_shows_the_rule_path_and_is_audited(cli: CliRunner,
                                                    platform: Platform) -> None:
    patient_id, practitioner_id = people(platform)
    denied = cli.invoke(app, ["policy", "explain", "--practitioner", practitioner_id,
                              "--patient", patient_id])
    assert denied.exit_code == 0, denied.output
    assert "identity → record → blacklist → grant → emergency → deny-by-default" in denied.output
    assert "fr: Aucun accès actif" in denied.output
    me = Actor(Subject(SubjectKind.PATIENT, patient_id), f"Patient/{patient_id}")
    platform.policy.grant(me, patient_id, Party.PRACTITIONER, practitioner_id,
                          GrantLevel.NORMAL)
    permitted = cli.invoke(app, ["policy", "explain", "--practitioner",
                                 f"Practitioner/{practitioner_id}", "--patient",
                                 f"Patient/{patient_id}", "--json"])
    answer = json.loads(permitted.output)
    assert (answer["decision"], answer["rule"]) == ("permit", "grant")
    assert "audit:TREAT" in answer["obligations"]
    size = platform.audit.size("operator")
    last = AuditRecord.from_canonical(platform.audit.entries("operator", size - 1, size)[0][1])
    assert last.interaction == "policy explain" and last.detail["decision"] == "permit"
    unknown = cli.invoke(app, ["policy", "explain", "--practitioner", "nobody",
                               "--patient", patient_id])
    assert unknown.exit_code == 1 and "Practitioner/nobody is not in the directory" in (
        unknown.output)


def test_the_matrix_in_force_and_a_deployment_file(cli: CliRunner, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shown = cli.invoke(app, ["policy", "matrix"])
    assert shown.exit_code == 0
    assert shown.output.startswith("version 2026-11-default sha256 ")
    assert "pharmacist: reads allergy, medication, prescription, vaccination;" in shown.output
    own = tmp_path / "matrix.json"
    own.write_text(json.dumps({"version": "site-2", "profiles": {
        "physician": {"read": ["*"], "write": ["*"]}}}))
    monkeypatch.setenv("CAREVAULT_PROFILE_MATRIX_FILE", str(own))
    site = cli.invoke(app, ["policy", "matrix"])
    assert site.output.startswith("version site-2 ") and "pharmacist" not in site.output
    own.write_text(json.dumps({"version": "site-3", "profiles": {
        "physician": {"read": ["*"], "erase": ["*"]}}}))
    broken = cli.invoke(app, ["policy", "matrix"])
    assert broken.exit_code == 1
    assert "cannot be used" in broken.output and "unknown actions ['erase']" in broken.output
