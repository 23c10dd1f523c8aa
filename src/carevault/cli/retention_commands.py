"""``carevault retention …``: the explicit, audited job that purges closed records' documents
after the retention period (`carevault.services.retention`)."""

from __future__ import annotations

import typer

from carevault.bootstrap import retention
from carevault.cli.context import engine_for, log_for, operator, settings
from carevault.cli.errors import friendly

app = typer.Typer(help="The retention of closed records.", no_args_is_help=True)


@app.command("due")
@friendly
def due() -> None:
    """The patients whose closed record a run would purge now (nothing is changed)."""
    config = settings()
    job = retention(config, engine_for(config.database_url), log_for(config))
    patients = job.due()
    typer.echo(f"{len(patients)} closed record(s) past {config.retention_years} years")
    for patient_id in patients:
        typer.echo(f"Patient/{patient_id}")


@app.command("run")
@friendly
def run() -> None:
    """Purge the documents of every closed record past the retention period, each purge
    recorded in the patient's history and the operators' stream."""
    config = settings()
    job = retention(config, engine_for(config.database_url), log_for(config))
    report = job.purge_due(by=operator())
    typer.echo(
        f"purged {report.documents} document(s) of {report.patients} record(s) closed before "
        f"{report.cutoff.date().isoformat()}"
    )
