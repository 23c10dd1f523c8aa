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
