"""``carevault pki …`` through typer's runner, on both databases: what operators see, what the
files hold, and what the operators' audit stream records."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.cli.main import app
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.directory import DirectoryContext
from support.builders import hospital


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["pki", *args])


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def refused(*args: str) -> str:
    """The single error line a refused command prints (stdout stays empty)."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def operator_records(engine: Engine) -> list[dict[str, Any]]:
    entry = t.audit_entry
    with engine.connect() as connection:
        rows = connection.execute(select(entry.c.entry).where(entry.c.stream == "operator")
                                  .order_by(entry.c.leaf_index))
        return [json.loads(bytes(row.entry)) for row in rows]


def pki_records(engine: Engine) -> list[dict[str, Any]]:
    return [r for r in operator_records(engine) if r["interaction"].startswith("pki ")]


@pytest.fixture
def directory(uow: Callable[[], SqlUnitOfWork], ctx: DirectoryContext) -> dict[str, str]:
    with uow() as unit:
        (org,) = svc.register_organizations(unit, ctx, [hospital(ctx.systems, "ORG-0001")])
    with uow() as unit:
        (anne, _), (paul, _) = svc.register_professionals(unit, ctx, [
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-123456",
                                                 family="Müller", given=["Anne"]),
                                "physician", organization_id=org.id),
            svc.NewProfessional(new_practitioner(ctx.systems, identifier="HP-654321",
                                                 family="Weber", given=["Paul"],
                                                 licence_status="suspended"), "nurse"),
        ])
    return {"organization": org.id, "active": anne.id, "suspended": paul.id}


def test_init_is_idempotent_and_recorded(cli_env: None, engine: Engine) -> None:
    first = ok("init")
    assert first.stdout.startswith("PKI initialized")
    second = ok("init")
    assert second.stdout.startswith("PKI already initialized")
    as_json = json.loads(ok("init", "--json").stdout)
    assert as_json["created"] is False
    assert as_json["root_sha256"] in first.stdout
    records = pki_records(engine)
    assert [r["interaction"] for r in records] == ["pki init"] * 3
    assert all(r["agent"]["role"] == "operator" for r in records)


def test_issue_print_json_with_client_id_and_serial(cli_env: None, engine: Engine,
                                                    directory: dict[str, str],
                                                    tmp_path: Path) -> None:
    ok("init")
    out = tmp_path / "anne"
    printed = json.loads(ok("issue-practitioner", directory["active"], "--out", str(out),
                            "--json").stdout)
    assert printed["client_id"] == "HP-123456"
    assert printed["kind"] == "practitioner"
    assert printed["practitioner_id"] == directory["active"]
    certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert printed["serial"] == format(certificate.serial_number, "x")
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    assert key.public_key() == certificate.public_key()
    assert printed["key"] == str(out / "key.pem")

    system = json.loads(ok("issue-system", directory["organization"], "--out",
                           str(tmp_path / "his"), "--json").stdout)
    assert system["client_id"] == "system:ORG-0001"
    assert system["kind"] == "system"
    text = ok("issue-system", directory["organization"], "--out", str(tmp_path / "his2")).stdout
    assert "system:ORG-0001" in text
    assert "key.pem (0600)" in text

    records = pki_records(engine)
    issued = [r for r in records if r["interaction"] == "pki issue-practitioner"]
    assert len(issued) == 1
    assert issued[0]["entity_type"] == "Certificate"
    assert issued[0]["entity_id"] == printed["serial"]
    assert issued[0]["detail"]["client_id"] == "HP-123456"
    assert issued[0]["outcome"] == "0"
    with engine.connect() as connection:
        serials = set(connection.execute(select(t.pki_certificate.c.serial)).scalars())
    assert len(serials) == 3
    assert {printed["serial"], system["serial"]} <= serials


def test_refusals_are_one_error_line_and_recorded(cli_env: None, engine: Engine,
                                                  directory: dict[str, str],
                                                  tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert "pki init" in refused("issue-practitioner", directory["active"], "--out", out)
    ok("init")
    assert "suspended" in refused("issue-practitioner", directory["suspended"], "--out", out)
    assert "not known" in refused("issue-practitioner", "nobody", "--out", out)
    assert "not known" in refused("issue-system", "nowhere", "--out", out)
    assert not Path(out).exists()
    ok("issue-practitioner", directory["active"], "--out", out)
    before = (Path(out) / "key.pem").read_bytes()
    assert "refusing to overwrite" in refused("issue-practitioner", directory["active"],
                                              "--out", out)
    assert (Path(out) / "key.pem").read_bytes() == before
    assert "unknown revocation reason" in refused("revoke", "abc", "--reason", "because")
    assert "no certificate with serial abc" in refused("revoke", "abc", "--reason",
                                                       "superseded")
    assert "not a hexadecimal" in refused("revoke", "zz", "--reason", "superseded")
    failures = [r for r in pki_records(engine) if r["outcome"] != "0"]
    assert len(failures) == 8
    assert any("suspended" in r["detail"]["result"] for r in failures)
    with engine.connect() as connection:
        assert len(connection.execute(select(t.pki_certificate)).all()) == 1


def test_revoke_prints_json_and_is_recorded(cli_env: None, engine: Engine,
                                            directory: dict[str, str], tmp_path: Path) -> None:
    ok("init")
    serial = json.loads(ok("issue-practitioner", directory["active"], "--out",
                           str(tmp_path / "anne"), "--json").stdout)["serial"]
    revoked = json.loads(ok("revoke", serial.upper(), "--reason", "keyCompromise",
                            "--json").stdout)
    assert revoked["serial"] == serial
    assert revoked["client_id"] == "HP-123456"
    assert revoked["reason"] == "keyCompromise"
    assert "already revoked" in refused("revoke", serial, "--reason", "keyCompromise")
    record = next(r for r in pki_records(engine) if r["interaction"] == "pki revoke")
    assert record["entity_id"] == serial
    assert record["action"] == "U"
    assert record["detail"]["reason"] == "keyCompromise"


def test_help_lists_the_commands(cli_env: None) -> None:
    result = ok("--help")
    for command in ("init", "issue-practitioner", "issue-system", "revoke"):
        assert command in result.stdout
