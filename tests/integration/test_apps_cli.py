"""``carevault apps …`` through typer's runner, on both databases: an operator registers a
patient app with its scopes and later narrows them (`set-scopes`); a refused change prints one
readable line and changes nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.cli import context
from carevault.cli.main import app
from carevault.settings import Settings


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def scopes_of(settings: Settings, client_id: str) -> str:
    with SqlUnitOfWork(context.engine_for(settings.database_url)) as uow:
        found = uow.apps.client(client_id)
        assert found is not None
        return found.scopes


def test_an_operator_narrows_an_apps_scopes(cli_env: None, settings: Settings) -> None:
    made = run("apps", "register", "--name", "Old diary", "--redirect-uri",
               "https://diary.example/cb", "--scope", "launch/patient patient/*.cruds", "--json")
    assert made.exit_code == 0, made.output
    client_id = json.loads(made.stdout)["client_id"]
    assert scopes_of(settings, client_id) == "launch/patient patient/*.cruds"

    narrowed = run("apps", "set-scopes", client_id, "--scope", "patient/Patient.rs",
                   "--scope", "launch/patient", "--json")
    assert narrowed.exit_code == 0, narrowed.output
    assert json.loads(narrowed.stdout) == {"client_id": client_id,
                                           "scopes": "launch/patient patient/Patient.rs"}
    assert scopes_of(settings, client_id) == "launch/patient patient/Patient.rs"


@pytest.mark.parametrize(("target", "scope", "said"), [
    ("app-0000000000000000", "patient/Patient.rs", "no app"),
    (None, "everything", "scope"),
    (None, "openid", "resource scope"),
])
def test_a_refused_change_says_why_and_changes_nothing(
        cli_env: None, settings: Settings, target: str | None, scope: str, said: str) -> None:
    made = run("apps", "register", "--name", "Diary", "--redirect-uri",
               "https://diary.example/cb", "--scope", "launch/patient patient/Patient.rs",
               "--json")
    client_id = json.loads(made.stdout)["client_id"]
    refused = run("apps", "set-scopes", target or client_id, "--scope", scope)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert said in line and "Traceback" not in refused.output
    assert scopes_of(settings, client_id) == "launch/patient patient/Patient.rs"
