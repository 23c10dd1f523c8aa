"""``carevault``: the operators' command line.

Every command reads the same `Settings` as the server (``CAREVAULT_*``). Errors print one line
saying what is wrong and exit with status 1; they never print a stack trace.
"""

from __future__ import annotations

import enum
import json
import logging.config
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carevault.adapters.keys.local_file import create_key_file, key_file_path
from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.storage.database import connect, upgrade
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import account_service, directory_context
from carevault.cli import context
from carevault.cli.account_commands import app as accounts_app
from carevault.cli.account_commands import apps_app
from carevault.cli.audit_commands import app as audit_app
from carevault.cli.authority_commands import app as authorities_app
from carevault.cli.backup_commands import app as backup_app
from carevault.cli.backup_commands import restore_command
from carevault.cli.card_commands import app as card_app
from carevault.cli.conformance_commands import app as conformance_app
from carevault.cli.errors import friendly
from carevault.cli.keys_commands import app as keys_app
from carevault.cli.messaging_commands import client_app as message_app
from carevault.cli.messaging_commands import operator_app as messaging_app
from carevault.cli.pki_commands import app as pki_app
from carevault.cli.policy_commands import app as policy_app
from carevault.cli.policy_commands import matrix_digest
from carevault.cli.retention_commands import app as retention_app
from carevault.domain.errors import CareVaultError
from carevault.domain.queries import SearchResult
from carevault.fhirmodel.directory import new_organization, new_patient, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import DEV_HOST, DEV_PORT, ConfigurationError, Settings

app = typer.Typer(
    help="Operate a CareVault platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
directory_app = typer.Typer(
    help="Register and list people and organizations.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(directory_app, name="directory")
app.add_typer(audit_app, name="audit")
app.add_typer(accounts_app, name="accounts")
app.add_typer(apps_app, name="apps")
app.add_typer(pki_app, name="pki")
app.add_typer(policy_app, name="policy")
app.add_typer(authorities_app, name="authorities")
app.add_typer(keys_app, name="keys")
app.add_typer(messaging_app, name="messaging")
app.add_typer(message_app, name="message")
app.add_typer(backup_app, name="backup")
app.add_typer(retention_app, name="retention")
app.add_typer(card_app, name="card")
app.add_typer(conformance_app, name="conformance")
app.command("restore")(restore_command)


def _settings() -> Settings:
    return context.settings()


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


@app.command()
@friendly
def init() -> None:
    """Create the key file (mode 0600) and bring the database schema up to date."""
    settings = _settings()
    path = key_file_path(settings.key_source)
    created = create_key_file(path)
    typer.echo(f"key file {path}: {'created' if created else 'already present, kept'}")
    upgrade(connect(settings.database_url))
    _record(settings, "init", {"key_file": "created" if created else "kept"})
    typer.echo("database schema: up to date")


def _record(settings: Settings, interaction: str, detail: dict[str, str]) -> None:
    """Record an operator action that is not a directory change."""
    context.record_now(settings, context.operator_record("E", interaction, detail=detail))


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply database migrations (safe to run again)."""
    settings = _settings()
    upgrade(connect(settings.database_url))
    _record(settings, "db upgrade", {})
    typer.echo("database schema: up to date")


# Where `serve` listens; in dev without CAREVAULT_PUBLIC_BASE_URL, also what clients are told.
HostOption = Annotated[
    str,
    typer.Option(
        help="Address to listen on (in dev without CAREVAULT_PUBLIC_BASE_URL, the public "
        "address follows it)."
    ),
]
PortOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=65535,
        help="Port to listen on (in dev without CAREVAULT_PUBLIC_BASE_URL, the public "
        "address follows it).",
    ),
]


class ClientCertMode(enum.StrEnum):
    optional = "optional"
    required = "required"


@app.command()
@friendly
def serve(
    host: HostOption = DEV_HOST,
    port: PortOption = DEV_PORT,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Server processes (default CAREVAULT_WORKERS, 1)."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="Serve HTTPS (TLS 1.2+) with this certificate chain, PEM, leaf first "
            "(default CAREVAULT_TLS_CERT_FILE).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", help="Its private key, PEM (default CAREVAULT_TLS_KEY_FILE)."),
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            "--client-ca",
            help="Ask clients for a certificate verified against this CA file: the platform "
            "CA chain, `carevault pki ca` (default CAREVAULT_TLS_CLIENT_CA_FILE).",
        ),
    ] = None,
    client_cert: Annotated[
        ClientCertMode | None,
        typer.Option(
            "--client-cert",
            help="With --client-ca: optional (a client without a certificate is served) or "
            "required (default CAREVAULT_TLS_CLIENT_CERT, optional).",
        ),
    ] = None,
) -> None:
    """Serve the FHIR API under /fhir and the portal at /."""
    from carevault.bootstrap import build, log_config, serve, server_tls

    flags = {
        "tls_cert_file": tls_cert,
        "tls_key_file": tls_key,
        "tls_client_ca_file": client_ca,
        "tls_client_cert": client_cert.value if client_cert else None,
    }
    config = _settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
    config = config.served_at(host, port, tls=config.tls_cert_file is not None)
    config.check_deployable()  # the development defaults first, then how it is reached
    config.check_transport()
    tls = server_tls(config)  # an unusable certificate, key or CA file is refused here
    json_logs = config.log_format == "json"
    if json_logs:
        logging.config.dictConfig(log_config())
    platform = build(config)
    loaded = platform.policy.matrix
    # Every start records the profile matrix in force: a change of who sees what is in the
    # operators' trail, with the version and digest before and after.
    _record(
        config,
        "policy matrix load",
        {"version": loaded.version, "sha256": matrix_digest(loaded)},
    )
    processes = workers or config.workers
    typer.echo(
        f"CareVault: the FHIR API at {config.public_url}/fhir, the portal at {config.public_url}/"
    )
    if not serve(platform, host, port, processes, tls, json_logs=json_logs):
        raise typer.Exit(3)  # uvicorn said why (a port in use…); as uvicorn.run does


@app.command()
@friendly
def demo(
    patients: Annotated[int, typer.Option(min=0, help="How many patients.")] = 1000,
    professionals: Annotated[int, typer.Option(min=0, help="How many professionals.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same people.")] = 2026,
    if_empty: Annotated[bool, typer.Option(help="Do nothing if demo data is loaded.")] = False,
    accounts: Annotated[Path, typer.Option(help="Where to describe the demo people.")] = Path(
        "var/demo-accounts.json"
    ),
    host: HostOption = DEV_HOST,
    port: PortOption = DEV_PORT,
) -> None:
    """Load synthetic, reproducible Luxembourg-like directories (in dev only).

    The links written into the accounts file use the public address: give --host and --port
    as to `carevault serve`. When the data is already loaded, the links of an existing
    accounts file are pointed at that address again."""
    from carevault.demo import loader

    settings = _settings().served_at(host, port)
    if settings.environment != "dev":
        # Demo people come with known secrets (a portal password and TOTP seed, a physician's
        # private key, in the accounts file) and demo hospitals registered as identity sources
        # and admission systems: nothing a deployed platform may hold.
        raise ConfigurationError(
            f"carevault demo loads synthetic people with published credentials; it runs in "
            f"dev only (CAREVAULT_ENVIRONMENT is {settings.environment!r})"
        )
    public_url = settings.public_url
    unit_of_work = context.audited_units(
        settings,
        "demo load",
        detail={"patients": str(patients), "professionals": str(professionals), "seed": str(seed)},
    )
    if loader.demo_loaded(unit_of_work):
        typer.echo("demo data is already loaded")
        if loader.relink_accounts(accounts, public_url):
            typer.echo(f"the links in {accounts} use {public_url}")
        if if_empty:
            return
        raise typer.Exit(1)
    ctx = directory_context(settings)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not sys.stderr.isatty()) as bar:
        tasks = {
            "organizations": bar.add_task("organizations", total=None),
            "professionals": bar.add_task("professionals", total=professionals),
            "patients": bar.add_task("patients", total=patients),
        }
        summary = loader.load(
            unit_of_work,
            ctx,
            patients=patients,
            professionals=professionals,
            seed=seed,
            progress=lambda task, n: bar.advance(tasks[task], n),
        )
    if summary.accounts["patients"]:
        engine = context.engine_for(settings.database_url)
        service = account_service(settings, engine, context.log_for(settings))
        loader.enrol_demo_patient(service, summary.accounts["patients"][0])
    physicians = [p for p in summary.accounts["professionals"] if p["profession"] == "physician"]
    if physicians:
        pki_ctx = pki.PkiContext(
            systems=ctx.systems,
            ca_password=ca_key_password(settings.key_source),
            clock=lambda: datetime.now(UTC),
        )
        card = accounts.parent / "demo-card"
        if (
            loader.issue_demo_card(unit_of_work, pki_ctx, physicians[0], card)
            and (summary.accounts["patients"])
        ):
            published = _publish_demo_documents(
                settings, physicians[0], summary.accounts["patients"][0], card
            )
            typer.echo(f"published {published} signed documents to the demo patient's record")
    loader.write_accounts(accounts, summary, public_url)
    typer.echo(
        f"loaded {summary.organizations} organizations, {summary.practitioners} "
        f"professionals, {summary.patients} patients; demo people in {accounts}"
    )


def _publish_demo_documents(
    settings: Settings, physician: dict[str, Any], patient: dict[str, Any], card: Path
) -> int:
    from carevault.bootstrap import care_access, policy_and_documents, units
    from carevault.demo.documents import publish_demo_documents

    engine = context.engine_for(settings.database_url)
    policy, documents = policy_and_documents(settings, engine, context.log_for(settings))
    return publish_demo_documents(
        units(settings, engine),
        care_access(settings, policy),
        documents,
        physician["practitioner_id"],
        patient["patient_id"],
        card,
    )


@directory_app.command("add-patient")
@friendly
def add_patient(
    national_id: Annotated[str, typer.Option(help="13-digit national identification number.")],
    family: Annotated[str, typer.Option(help="Family name.")],
    given: Annotated[str, typer.Option(help="Given name(s), space-separated.")],
    birthdate: Annotated[str, typer.Option(help="Birth date, YYYY-MM-DD.")],
    gender: Annotated[str, typer.Option(help="male, female, other or unknown.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register a patient in the master patient index."""
    settings = _settings()
    ctx = directory_context(settings)
    try:
        born = date.fromisoformat(birthdate)
    except ValueError:
        raise CareVaultError(f"--birthdate {birthdate!r} is not a date YYYY-MM-DD") from None
    resource = new_patient(
        ctx.systems,
        national_id=national_id,
        family=family,
        given=given.split(),
        birth_date=born,
        gender=gender,
    )
    with context.audited_units(settings, "directory add-patient")() as uow:
        stored = svc.create_patient(uow, ctx, resource)
    _print(
        {"id": stored.id, "resourceType": "Patient", "resource": stored.resource},
        json_output,
        f"Patient/{stored.id} registered",
    )


@directory_app.command("add-organization")
@friendly
def add_organization(
    identifier: Annotated[str, typer.Option(help="Organization identifier.")],
    name: Annotated[str, typer.Option(help="Organization name.")],
    patient_id_system: Annotated[
        str | None, typer.Option(help="URI of the local patient numbers it assigns (hospitals).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register an organization (hospital, laboratory, pharmacy, practice)."""
    settings = _settings()
    ctx = directory_context(settings)
    resource = new_organization(
        ctx.systems, identifier=identifier, name=name, patient_id_system=patient_id_system
    )
    units = context.audited_units(
        settings, "directory add-organization", detail={"identifier": identifier}
    )
    with units() as uow:
        stored = svc.create_organization(uow, ctx, resource)
    _print(
        {"id": stored.id, "resourceType": "Organization", "resource": stored.resource},
        json_output,
        f"Organization/{stored.id} registered",
    )


@directory_app.command("add-practitioner")
@friendly
def add_practitioner(
    identifier: Annotated[str, typer.Option(help="Professional identifier.")],
    family: Annotated[str, typer.Option(help="Family name.")],
    given: Annotated[str, typer.Option(help="Given name(s), space-separated.")],
    profession: Annotated[str, typer.Option(help="Profession code (physician, pharmacist, …).")],
    specialty: Annotated[str | None, typer.Option(help="Specialty code.")] = None,
    organization: Annotated[
        str | None, typer.Option(help="Organization id (as 'add-organization' printed it).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register a health professional with their profession (and organization)."""
    settings = _settings()
    ctx = directory_context(settings)
    item = svc.NewProfessional(
        practitioner=new_practitioner(
            ctx.systems, identifier=identifier, family=family, given=given.split()
        ),
        profession=profession,
        specialty=specialty,
        organization_id=organization,
    )
    units = context.audited_units(
        settings,
        "directory add-practitioner",
        detail={"identifier": identifier, "profession": profession},
        affects_access=True,
    )
    with units() as uow:
        ((practitioner, role),) = svc.register_professionals(uow, ctx, [item])
    _print(
        {
            "id": practitioner.id,
            "resourceType": "Practitioner",
            "role_id": role.id,
            "resource": practitioner.resource,
        },
        json_output,
        f"Practitioner/{practitioner.id} registered (PractitionerRole/{role.id})",
    )


@directory_app.command("list")
@friendly
def list_directory(
    kind: Annotated[str, typer.Argument(help="patients, practitioners or organizations.")] = (
        "practitioners"
    ),
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many to show.")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List directory entries (the first LIMIT)."""
    from carevault.domain.queries import OrganizationQuery, Page, PatientQuery, PractitionerQuery

    searches: dict[str, Callable[[UnitOfWork], SearchResult]] = {
        "patients": lambda uow: svc.search_patients(uow, PatientQuery(), Page(0, limit)),
        "practitioners": lambda uow: svc.search_practitioners(
            uow, PractitionerQuery(), Page(0, limit)
        ),
        "organizations": lambda uow: svc.search_organizations(
            uow, OrganizationQuery(), Page(0, limit)
        ),
    }
    if kind not in searches:
        raise CareVaultError(f"unknown kind {kind!r}: use patients, practitioners or organizations")
    config = _settings()
    # Listing the directories is an access to identities: it is recorded too.
    entry = context.operator_record(
        "R", "directory list", entity_type=kind, detail={"limit": str(limit)}
    )
    context.record_now(config, entry)
    with SqlUnitOfWork(context.engine_for(config.database_url)) as uow:
        result = searches[kind](uow)
    rows = [
        {
            "id": s.id,
            "identifier": [i.get("value") for i in s.resource.get("identifier", [])],
            "name": _display_name(s.resource),
        }
        for s in result.items
    ]
    if json_output:
        typer.echo(json.dumps({"total": result.total, "entries": rows}, ensure_ascii=False))
        return
    for row in rows:
        typer.echo(f"{row['id']}  {', '.join(map(str, row['identifier']))}  {row['name']}")
    typer.echo(f"({len(rows)} of {result.total})")


def _display_name(resource: dict[str, Any]) -> str:
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    names = resource.get("name") or [{}]
    return " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip()
