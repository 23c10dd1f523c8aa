"""``carevault accounts …``: operator-assisted enrolment of patients.

A patient comes to a registration desk with an identity document; the operator creates the
account, the patient types a password (read from standard input, never from the command line
where it would land in the shell history) and scans the QR code, then reads back a first code
to confirm. The recovery codes are printed once.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

import typer

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import account_service
from carevault.cli.context import (
    engine_for,
    log_for,
    operator,
    operator_record,
    record_now,
    settings,
)
from carevault.cli.errors import friendly
from carevault.domain.errors import CareVaultError
from carevault.services.accounts import AccountService, Enrolment
from carevault.services.invitations import invite
from carevault.services.patient_apps import DEFAULT_APP_SCOPES, register_app, set_app_scopes
from carevault.settings import Settings

app = typer.Typer(help="Patient and representative accounts.", no_args_is_help=True)


def _service(config: Settings) -> AccountService:
    return account_service(config, engine_for(config.database_url), log_for(config))


def _record(config: Settings, interaction: str, account_id: str) -> None:
    """The operator's side of the enrolment, in the operators' stream."""
    record_now(
        config, operator_record("C", interaction, entity_type="Account", entity_id=account_id)
    )


@app.command("enrol-patient")
@friendly
def enrol_patient(
    patient_id: Annotated[str, typer.Argument(help="The patient's FHIR id in the index.")],
    login: Annotated[str, typer.Option(help="The login the patient chose (an e-mail).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a patient's portal account; prints the TOTP enrolment URI and recovery codes."""
    config = settings()
    service = _service(config)
    enrolment = service.enrol_patient(login, _password(password_stdin), patient_id=patient_id)
    _record(config, "accounts enrol-patient", enrolment.account_id)
    _print_enrolment(enrolment, json_output)


@app.command("invite")
@friendly
def invite_patient(
    patient_id: Annotated[str, typer.Argument(help="The patient's FHIR id in the index.")],
    days: Annotated[int, typer.Option(min=1, max=90, help="Days the code stays valid.")] = 14,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Give a patient (whose identity you checked) a one-time code to enrol in the portal."""
    config = settings()
    with SqlUnitOfWork(engine_for(config.database_url)) as uow:
        code = invite(uow, patient_id, datetime.now(UTC), timedelta(days=days))
    _record(config, "accounts invite", patient_id)
    if json_output:
        typer.echo(json.dumps({"activation_code": code, "valid_days": days}))
    else:
        typer.echo(f"activation code (give it to the patient, valid {days} days): {code}")
        typer.echo("the patient enrols at /enrol with it and their national number")


@app.command("confirm")
@friendly
def confirm(
    account_id: Annotated[str, typer.Argument(help="As enrol-patient printed it.")],
    code: Annotated[str, typer.Option(help="The first code the authenticator app shows.")],
) -> None:
    """Complete an enrolment with the first code of the patient's authenticator app."""
    config = settings()
    service = _service(config)
    if not code.strip():
        raise CareVaultError("--code is empty")
    service.confirm_totp(account_id, code.strip())
    _record(config, "accounts confirm", account_id)
    typer.echo("the account is ready: the patient can sign in at /login")


apps_app = typer.Typer(help="Patient apps (public OAuth clients with PKCE).", no_args_is_help=True)


@apps_app.command("register")
@friendly
def register(
    name: Annotated[str, typer.Option(help="The app's name, as patients will see it.")],
    redirect_uri: Annotated[list[str], typer.Option(help="An exact redirect URI (repeat).")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="A scope the app may ever be granted (repeat, or several in one); default: "
            f"{DEFAULT_APP_SCOPES}."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register a patient app (or an operator's console) with the scopes it may be granted;
    prints its client_id. A token never holds more than these, whatever the app asks."""
    config = settings()
    engine = engine_for(config.database_url)
    scopes = " ".join(scope) if scope else DEFAULT_APP_SCOPES
    with SqlUnitOfWork(engine) as uow:
        client_id = register_app(uow, name, redirect_uri, datetime.now(UTC), scopes=scopes)
    _record(config, "apps register", client_id)
    if json_output:
        typer.echo(json.dumps({"client_id": client_id}))
    else:
        typer.echo(f"app registered: client_id {client_id}")


@apps_app.command("set-scopes")
@friendly
def set_scopes(
    client_id: Annotated[str, typer.Argument(help="The app's client_id.")],
    scope: Annotated[
        list[str],
        typer.Option(help="A scope the app may ever be granted (repeat, or several in one)."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replace the scopes an app may be granted (narrow an app registered before scopes were
    recorded, which kept every one). New tokens hold no more; issued ones expire within
    minutes."""
    config = settings()
    with SqlUnitOfWork(engine_for(config.database_url)) as uow:
        stored = set_app_scopes(uow, client_id, " ".join(scope))
    _record(config, "apps set-scopes", client_id)
    if json_output:
        typer.echo(json.dumps({"client_id": client_id, "scopes": stored}))
    else:
        typer.echo(f"app {client_id} may now be granted: {stored}")


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _print_enrolment(enrolment: Enrolment, json_output: bool) -> None:
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "account_id": enrolment.account_id,
                    "totp_uri": enrolment.totp_provisioning_uri,
                    "recovery_codes": list(enrolment.recovery_codes),
                }
            )
        )
        return
    typer.echo(f"account {enrolment.account_id} created; scan this in an authenticator app:")
    typer.echo(enrolment.totp_provisioning_uri)
    typer.echo("recovery codes (shown once):")
    for code in enrolment.recovery_codes:
        typer.echo(f"  {code}")
    typer.echo("then run: carevault accounts confirm ACCOUNT_ID --code <first code>")


@app.command("add-operator")
@friendly
def add_operator(
    login: Annotated[str, typer.Option(help="The operator's login.")],
    security_officer: Annotated[
        bool, typer.Option(help="May read the audit trail (never clinical content).")
    ] = False,
    registrar: Annotated[
        bool,
        typer.Option(help="May change the directories through the API (never clinical content)."),
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an operator, security officer or registrar account (TOTP mandatory)."""
    config = settings()
    service = _service(config)
    enrolment = service.register_operator(
        login,
        _password(password_stdin),
        security_officer=security_officer,
        registrar=registrar,
        by=operator(),
    )
    _record(config, "accounts add-operator", enrolment.account_id)
    _print_enrolment(enrolment, json_output)


@app.command("change-password")
@friendly
def change_password(
    login: Annotated[str, typer.Option(help="The account's login.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the current password, then the new one, a line each, from standard input.",
        ),
    ] = False,
) -> None:
    """Change an account's password, proving the current one (throttled like a sign-in, and
    recorded): how operators change theirs, who have no portal page for it. Patients and
    representatives use /me/password."""
    config = settings()
    service = _service(config)
    if password_stdin:
        current = sys.stdin.readline().rstrip("\n")
        new = sys.stdin.readline().rstrip("\n")
    else:
        current = str(typer.prompt("Current password", hide_input=True))
        new = str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))
    account_id = service.account_id_of(login)
    service.change_password(account_id, current, new)
    _record(config, "accounts change-password", account_id)
    typer.echo(f"the password of {login} is changed")


@app.command("add-representative")
@friendly
def add_representative(
    login: Annotated[str, typer.Option(help="The representative's login.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a representative's account (a person who may act for patients by mandate)."""
    config = settings()
    service = _service(config)
    enrolment = service.add_representative(login, _password(password_stdin))
    _record(config, "accounts add-representative", enrolment.account_id)
    _print_enrolment(enrolment, json_output)


@app.command("mandate")
@friendly
def mandate(
    representative: Annotated[str, typer.Argument(help="The representative's account id.")],
    patient_id: Annotated[str, typer.Argument(help="The patient's FHIR id.")],
    scope: Annotated[str, typer.Option(help="read or manage.")] = "read",
    until: Annotated[
        str | None, typer.Option(help="Last day, YYYY-MM-DD (excluded after).")
    ] = None,
) -> None:
    """Record a mandate (e.g. a guardianship the desk has seen) from a patient to a
    representative, with its scope and end."""
    config = settings()
    service = _service(config)
    now = datetime.now(UTC)
    ends = None
    if until is not None:
        try:
            ends = datetime.combine(date.fromisoformat(until) + timedelta(days=1), time(), UTC)
        except (ValueError, OverflowError):  # not a date, or 9999-12-31 (no day after it)
            raise CareVaultError(f"--until {until!r} is not a date YYYY-MM-DD") from None
    made = service.create_mandate(representative, patient_id, scope, now, ends, by=operator())
    _record(config, "accounts mandate", representative)
    typer.echo(
        f"mandate {made.id}: {representative} may {scope} Patient/{patient_id}"
        + (f" until {until}" if until else "")
    )
