"""``carevault conformance …`` through typer's runner, on both databases: registering a
vendor's system in the sandbox, the signed report and its offline check, and the grant of
production credentials that only a passing report for that system obtains. The run of a real
system over HTTP is in tests/e2e/test_conformance_sandbox.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage import schema as t
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.cli import context
from carevault.cli.main import app
from carevault.domain.conformance import Attempt, assess, verdict
from carevault.services import directory as svc
from carevault.services.conformance import sign_report
from carevault.services.directory import DirectoryContext
from carevault.settings import Settings
from support.builders import hospital

SANDBOX_URL = "https://sandbox.carevault.test"
DENY = "identity → access: deny (access) — no access"


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        Callable[[str], None]]:
    """The command line on the test's database and key file; the returned function switches
    the environment (dev, integration, prod)."""
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    monkeypatch.delenv("CAREVAULT_CONFORMANCE_KEY_FILE", raising=False)
    context.engine_for.cache_clear()

    def environment(name: str) -> None:
        monkeypatch.setenv("CAREVAULT_ENVIRONMENT", name)
        monkeypatch.setenv("CAREVAULT_PUBLIC_BASE_URL",
                           "http://127.0.0.1:8000" if name == "dev" else SANDBOX_URL)

    environment("dev")
    yield environment
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


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
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def operator_records(engine: Engine, prefix: str) -> list[dict[str, Any]]:
    entry = t.audit_entry
    with engine.connect() as connection:
        rows = connection.execute(select(entry.c.entry).where(entry.c.stream == "operator")
                                  .order_by(entry.c.leaf_index))
        found = [json.loads(bytes(row.entry)) for row in rows]
    return [r for r in found if r["interaction"].startswith(prefix)]


# --- the sandbox -----------------------------------------------------------------------------


def test_the_sandbox_is_the_integration_environments_only(
        cli_env: Callable[[str], None], tmp_path: Path) -> None:
    ok("pki", "init")
    for environment in ("dev", "prod"):
        cli_env(environment)
        assert "'integration' environment only" in refused(
            "conformance", "register", "Demo HIS 1.0", "--out", str(tmp_path / environment))
        assert not (tmp_path / environment).exists()


def test_registering_without_the_sandboxs_public_address_makes_nothing(
        cli_env: Callable[[str], None], engine: Engine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli_env("integration")
    ok("pki", "init")
    monkeypatch.delenv("CAREVAULT_PUBLIC_BASE_URL")
    assert "CAREVAULT_PUBLIC_BASE_URL" in refused(
        "conformance", "register", "Demo HIS 1.0", "--out", str(tmp_path / "demo"))
    assert not (tmp_path / "demo").exists()
    assert operator_records(engine, "conformance register") == []


def test_registering_gives_the_system_its_client_and_what_it_acts_for(
        cli_env: Callable[[str], None], engine: Engine, tmp_path: Path) -> None:
    cli_env("integration")
    ok("pki", "init")
    out = tmp_path / "demo"
    made = json.loads(ok("conformance", "register", "Demo HIS 1.0", "--out", str(out),
                         "--json").stdout)
    assert made["client_id"] == "system:SANDBOX-DEMO-HIS-1-0"
    assert made["act"] == "SANDBOX-DEMO-HIS-1-0-HP"
    assert made["token_endpoint"] == f"{SANDBOX_URL}/oauth/token"
    assert [s["step"] for s in made["scenario"]][:2] == ["authenticate", "feed-patient"]
    certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert "system:SANDBOX-DEMO-HIS-1-0" in certificate.subject.rfc4514_string()
    with SqlUnitOfWork(engine) as uow:
        organization_id = made["organization"].removeprefix("Organization/")
        kinds = {a.kind.value for a in uow.authorities.active_of(organization_id)}
    assert kinds == {"identity-source", "admission-system"}
    (registration,) = [r for r in operator_records(engine, "conformance register")
                       if r["detail"].get("step") == "certificate"]
    assert registration["detail"]["client-id"] == made["client_id"]
    assert int(registration["detail"]["run-start"]) >= 0
    # The same name again is refused, and so is a name that is not one.
    assert "already registered" in refused("conformance", "register", "Demo HIS 1.0",
                                           "--out", str(tmp_path / "again"))
    assert "system name" in refused("conformance", "register", "Demo;HIS", "--out",
                                    str(tmp_path / "bad"))
    refusals = [r for r in operator_records(engine, "conformance register")
                if r["outcome"] == "4"]
    assert len(refusals) == 2


def test_a_registration_refused_half_way_is_finished_by_running_it_again(
        cli_env: Callable[[str], None], engine: Engine, tmp_path: Path) -> None:
    """Before `pki init` the certificate cannot be issued: the organization, physician and
    authorities made before it stay (their own transactions), no file is left, and the same
    command, once the CA is there, finishes the registration with them instead of refusing
    the name as taken."""
    cli_env("integration")
    out = tmp_path / "demo"
    line = refused("conformance", "register", "Demo HIS 1.0", "--out", str(out))
    assert "pki init" in line or "certificate authority" in line, line
    assert not (out / "key.pem").exists()
    ok("pki", "init")
    made = json.loads(ok("conformance", "register", "Demo HIS 1.0", "--out", str(out),
                         "--json").stdout)
    assert made["client_id"] == "system:SANDBOX-DEMO-HIS-1-0"
    assert (out / "key.pem").exists()
    organization = t.organization
    with engine.connect() as connection:
        organizations = connection.execute(select(organization.c.id)).scalars().all()
    assert organizations == [made["organization"].removeprefix("Organization/")]
    records = operator_records(engine, "conformance register")
    assert [(r["outcome"], r["detail"]["step"]) for r in records] == [
        ("0", "organization"), ("0", "professional"), ("0", "identity-source"),
        ("0", "admission-system"), ("4", "certificate"), ("0", "certificate")]
    assert records[-1]["detail"]["resumed"] == (
        "organization professional identity-source admission-system")


def test_a_report_for_an_unknown_system_is_one_clear_error(
        cli_env: Callable[[str], None], tmp_path: Path) -> None:
    cli_env("integration")
    line = refused("conformance", "report", "Nobody HIS", "--out", str(tmp_path / "r.json"))
    assert "no system named 'Nobody HIS' is registered" in line
    assert not (tmp_path / "r.json").exists()


def test_a_report_without_requests_fails_every_step_and_its_signature_holds(
        cli_env: Callable[[str], None], engine: Engine, tmp_path: Path) -> None:
    cli_env("integration")
    ok("pki", "init")
    ok("conformance", "register", "Idle HIS 2", "--out", str(tmp_path / "idle"))
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    printed = json.loads(ok("conformance", "report", "Idle HIS 2", "--out", str(report),
                            "--html", str(page), "--json").stdout)
    assert printed["passed"] is False and "authenticate" in printed["failed"]
    document = json.loads(report.read_text())
    assert {s["status"] for s in document["report"]["steps"]} == {"not-attempted"}
    assert document["report"]["environment"] == "integration"
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and '<html lang="en">' in html
    assert "<caption>" in html and "Not attempted" in html and "<script" not in html
    verified = json.loads(ok("conformance", "verify", str(report), "--json").stdout)
    assert verified == {"valid": True, "system": "Idle HIS 2", "passed": False,
                        "failed": printed["failed"]}
    # The report is never overwritten.
    assert "never overwritten" in refused("conformance", "report", "Idle HIS 2", "--out",
                                          str(report))
    (recorded,) = operator_records(engine, "conformance report")
    assert recorded["detail"]["passed"] == "false"


# --- verifying and granting ------------------------------------------------------------------


def full_run() -> list[Attempt]:
    made = [("token", None, None, {}), ("conditional-update", "Patient", None, {}),
            ("create", "Encounter", None, {}), ("transaction", "Bundle", None, {}),
            ("transaction", "Bundle", None, {"replaces": "d"}),
            ("search-type", "DocumentReference", None, {}), ("read", "Binary", None, {}),
            ("read", "Binary", None, {"signs": "d"})]
    attempts = [Attempt(i, "t", a, e, 200, "0", r, d) for i, (a, e, r, d) in enumerate(made)]
    return [*attempts, Attempt(9, "t", "search-type", "DocumentReference", 403, "4", DENY, {})]


class Sandbox:
    """A sandbox's signing key of the test's own, and reports signed with it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.signer = Ed25519TreeHeadSigner.derive(os.urandom(32), "platform-signature")
        self.key = directory / "sandbox-key.pem"
        self.key.write_bytes(self.signer.public_key_pem())
        self.directory = directory

    def report(self, name: str, attempts: list[Attempt], **changes: Any) -> Path:
        results = assess(attempts)
        report = {"type": "carevault-conformance-report", "version": 1, "system": "Demo HIS",
                  "client_id": "system:SANDBOX-DEMO-HIS", "organization": "SANDBOX-DEMO-HIS",
                  "environment": "integration", "platform": SANDBOX_URL, "registered": "t",
                  "issued": "t", "passed": verdict(results),
                  "steps": [r.to_json() for r in results], **changes}
        path = self.directory / f"{name}.json"
        path.write_text(json.dumps(sign_report(self.signer, report)))
        return path


@pytest.fixture
def production(cli_env: Callable[[str], None], uow: Callable[[], SqlUnitOfWork],
               ctx: DirectoryContext) -> str:
    """A production platform with its CA and a hospital; the hospital's id."""
    cli_env("prod")
    ok("pki", "init")
    with uow() as unit:
        (org,) = svc.register_organizations(unit, ctx, [hospital(ctx.systems, "ORG-0001")])
    return org.id


def test_verify_refuses_a_tampered_report_and_another_key(
        cli_env: Callable[[str], None], tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    failing = sandbox.report("failing", full_run()[:3])
    key = str(sandbox.key)
    assert "NOT PASSED" in ok("conformance", "verify", str(failing), "--public-key", key).stdout
    document = json.loads(failing.read_text())
    document["report"]["passed"] = True
    for step in document["report"]["steps"]:
        step["status"] = "passed"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    assert "differs from the one that was signed" in refused(
        "conformance", "verify", str(tampered), "--public-key", key)
    header, payload, signature = json.loads(failing.read_text())["signature"].split(".")
    forged = dict(document, signature=f"{header}.{payload}.{signature[:-4]}AAAA")
    tampered.write_text(json.dumps(forged))
    assert "does not verify" in refused("conformance", "verify", str(tampered),
                                        "--public-key", key)
    # Without --public-key: this platform's own key, which did not sign it.
    assert "does not verify" in refused("conformance", "verify", str(failing))
    (tmp_path / "not-json.json").write_text("{")
    assert "not JSON" in refused("conformance", "verify", str(tmp_path / "not-json.json"))
    assert "cannot be read" in refused("conformance", "verify", str(tmp_path / "none.json"))


def test_production_credentials_need_a_passing_report_for_that_system(
        production: str, engine: Engine, tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    key = str(sandbox.key)
    out = str(tmp_path / "his")

    def grant(report: Path, system: str = "Demo HIS", *extra: str) -> list[str]:
        return ["conformance", "grant", system, production, "--report", str(report),
                "--out", out, "--public-key", key, *extra]

    # The plain way is closed in production.
    assert "conformance grant" in refused("pki", "issue-system", production, "--out", out)
    # Without a report at all, typer refuses the command line itself.
    assert run("conformance", "grant", "Demo HIS", production, "--out", out).exit_code == 2
    failing = sandbox.report("failing", full_run()[:-2])
    line = refused(*grant(failing))
    assert "does not pass" in line and "verify-signature, access-decision" in line
    passing = sandbox.report("passing", full_run())
    assert "not for 'Other HIS'" in refused(*grant(passing, "Other HIS"))
    made_in_dev = sandbox.report("dev", full_run(), environment="dev")
    assert "not in the conformance sandbox" in refused(*grant(made_in_dev))
    stranger = Sandbox(tmp_path / "stranger")  # a report signed by another key
    assert "does not verify" in refused(*grant(stranger.report("s", full_run())))
    document = json.loads(failing.read_text())
    document["report"] = json.loads(passing.read_text())["report"]
    spliced = tmp_path / "spliced.json"
    spliced.write_text(json.dumps(document))
    assert "differs" in refused(*grant(spliced))
    assert not Path(out).exists()

    granted = json.loads(ok(*grant(passing, "Demo HIS", "--json")).stdout)
    assert granted["client_id"] == "system:ORG-0001"
    assert (Path(out) / "cert.pem").exists()
    records = operator_records(engine, "conformance grant")
    assert [r["outcome"] for r in records] == ["4"] * 5 + ["0"]
    assert records[-1]["detail"]["serial"] == granted["serial"]
    assert records[-1]["detail"]["system"] == "Demo HIS"
    assert len(records[-1]["detail"]["signature-sha256"]) == 64
    with engine.connect() as connection:
        assert len(connection.execute(select(t.pki_certificate)).all()) == 1


def test_the_key_of_the_sandbox_may_be_configured(
        production: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = Sandbox(tmp_path)
    monkeypatch.setenv("CAREVAULT_CONFORMANCE_KEY_FILE", str(sandbox.key))
    passing = sandbox.report("passing", full_run())
    assert "PASSED" in ok("conformance", "verify", str(passing)).stdout
    ok("conformance", "grant", "Demo HIS", production, "--report", str(passing), "--out",
       str(tmp_path / "his"))
