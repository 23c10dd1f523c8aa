"""Operator-assisted enrolment from the command line, on both databases."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from typer.testing import CliRunner

from carevault.bootstrap import Platform
from carevault.cli import context
from carevault.cli.main import app
from carevault.domain.accounts import normalize_password
from carevault.domain.audit import AuditRecord
from carevault.services import directory as svc
from carevault.settings import Settings
from support.builders import patient

PASSWORD = "a long and private passphrase 7"


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("CAREVAULT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREVAULT_KEY_SOURCE", settings.key_source)
    context.engine_for.cache_clear()
    yield CliRunner()
    context.engine_for(settings.database_url).dispose()
    context.engine_for.cache_clear()


def test_enrol_confirm_then_sign_in(cli: CliRunner, platform: Platform) -> None:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, 1)])[0].id
    created = cli.invoke(app, ["accounts", "enrol-patient", patient_id, "--login",
                               "marie@example.lu", "--password-stdin", "--json"],
                         input=PASSWORD + "\n")
    assert created.exit_code == 0, created.output
    answer = json.loads(created.output)
    assert len(answer["recovery_codes"]) >= 8
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(answer["totp_uri"]).query)["secret"][0]
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    wrong = cli.invoke(app, ["accounts", "confirm", answer["account_id"], "--code", "000000"])
    assert wrong.exit_code == 1 and wrong.output.startswith("error: ")
    # The first code may be the previous step's: confirm with it, sign in with the current.
    platform.accounts.confirm_totp(answer["account_id"], pyotp.TOTP(secret).at(earlier),
                                   now=earlier)
    principal = platform.accounts.login("marie@example.lu", PASSWORD,
                                        pyotp.TOTP(secret).now(), "127.0.0.1")
    assert principal.patient_id == patient_id
    size = platform.audit.size("operator")
    operator = [AuditRecord.from_canonical(d) for _, d in platform.audit.entries(
        "operator", 0, size)]
    assert "accounts enrol-patient" in [r.interaction for r in operator]
    assert all(PASSWORD not in d.decode() for _, d in platform.audit.entries("operator", 0, size))


def test_a_weak_password_is_refused_readably(cli: CliRunner, platform: Platform) -> None:
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        patient_id = svc.register_patients(uow, ctx, [patient(ctx.systems, 2)])[0].id
    refused = cli.invoke(app, ["accounts", "enrol-patient", patient_id, "--login", "x@y.lu",
                               "--password-stdin"], input="password\n")
    assert refused.exit_code == 1
    assert refused.output.startswith("error: ")
    assert "Traceback" not in refused.output


def test_operators_representatives_and_mandates(cli: CliRunner, platform: Platform) -> None:
    officer = cli.invoke(app, ["accounts", "add-operator", "--login", "so@carevault.test",
                               "--security-officer", "--password-stdin", "--json"],
                         input=PASSWORD + "\n")
    assert officer.exit_code == 0, officer.output
    assert json.loads(officer.output)["totp_uri"].startswith("otpauth://totp/")
    parent = cli.invoke(app, ["accounts", "add-representative", "--login", "dad@example.lu",
                              "--password-stdin", "--json"], input=PASSWORD + "\n")
    assert parent.exit_code == 0, parent.output
    representative = json.loads(parent.output)["account_id"]
    ctx = platform.directory
    with platform.unit_of_work() as uow:
        child = svc.register_patients(uow, ctx, [patient(ctx.systems, 3)])[0].id
    made = cli.invoke(app, ["accounts", "mandate", representative, child, "--scope", "read",
                            "--until", "2099-12-31"])
    assert made.exit_code == 0, made.output
    (mandate,) = platform.accounts.mandates_of(representative)
    assert (mandate.patient_id, mandate.scope) == (child, "read")
    assert mandate.ends_at is not None and mandate.ends_at.year == 2100
    for until in ("soon", "9999-12-31"):  # the last day Python holds: a traceback before
        bad = cli.invoke(app, ["accounts", "mandate", representative, child, "--until", until])
        assert bad.exit_code == 1 and bad.output.startswith("error: "), bad.output
    size = platform.audit.size("operator")
    interactions = [AuditRecord.from_canonical(d).interaction
                    for _, d in platform.audit.entries("operator", 0, size)]
    for expected in ("accounts add-operator", "accounts add-representative", "accounts mandate"):
        assert expected in interactions


def test_an_operator_changes_their_password_proving_the_current_one(
        cli: CliRunner, platform: Platform) -> None:
    """Operators have no portal page for it: the command line, the current password first
    (refused and counted when wrong), the new one under the same policy; recorded, and the
    passwords in no record."""
    added = cli.invoke(app, ["accounts", "add-operator", "--login", "ops@carevault.test",
                             "--password-stdin", "--json"], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    account_id = json.loads(added.output)["account_id"]
    new = "another long private passphrase 8"
    wrong = cli.invoke(app, ["accounts", "change-password", "--login", "ops@carevault.test",
                             "--password-stdin"], input=f"not my password\n{new}\n")
    assert wrong.exit_code == 1 and wrong.output.startswith("error: "), wrong.output
    weak = cli.invoke(app, ["accounts", "change-password", "--login", "ops@carevault.test",
                            "--password-stdin"], input=f"{PASSWORD}\npassword\n")
    assert weak.exit_code == 1 and weak.output.startswith("error: "), weak.output
    nobody = cli.invoke(app, ["accounts", "change-password", "--login", "nobody@carevault.test",
                              "--password-stdin"], input=f"{PASSWORD}\n{new}\n")
    assert nobody.exit_code == 1 and "no account" in nobody.output
    with platform.unit_of_work() as uow:
        before = uow.accounts.by_id(account_id)
    assert before is not None
    changed = cli.invoke(app, ["accounts", "change-password", "--login", "OPS@carevault.test",
                               "--password-stdin"], input=f"{PASSWORD}\n{new}\n")
    assert changed.exit_code == 0, changed.output
    with platform.unit_of_work() as uow:
        after = uow.accounts.by_id(account_id)
    assert after is not None and after.password_hash != before.password_hash
    hasher = platform.accounts.hasher
    assert hasher.verify(after.password_hash, normalize_password(new))
    assert not hasher.verify(after.password_hash, normalize_password(PASSWORD))
    size = platform.audit.size("operator")
    entries = [d.decode() for _, d in platform.audit.entries("operator", 0, size)]
    assert any("accounts change-password" in e for e in entries)
    assert not any(PASSWORD in e or new in e for e in entries)
