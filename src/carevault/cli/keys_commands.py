"""``carevault keys …``: the documents' key-encryption keys — status, rotation, retirement."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import document_vault
from carevault.cli.context import engine_for, operator_record, record_now, settings
from carevault.cli.errors import friendly
from carevault.services import key_rotation

app = typer.Typer(help="The documents' key-encryption keys.", no_args_is_help=True)


def _record(interaction: str, detail: dict[str, str]) -> None:
    record_now(settings(), operator_record("E", interaction, entity_type="KeyRing", detail=detail))


@app.command("status")
@friendly
def status() -> None:
    """The KEKs, which one is current, and how many data keys each still wraps."""
    config = settings()
    vault = document_vault(config)
    engine = engine_for(config.database_url)
    used = key_rotation.usage(lambda: SqlUnitOfWork(engine))
    for kek_id in vault.kek_ids():
        mark = " (current)" if kek_id == vault.current_kek else ""
        typer.echo(f"{kek_id}{mark}: {used.get(kek_id, 0)} data key(s)")


@app.command("rotate")
@friendly
def rotate(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 500,
    resume: Annotated[
        bool, typer.Option(help="Finish an interrupted rotation instead of starting one.")
    ] = False,
) -> None:
    """Make a new KEK current and re-wrap every data key under it, without decrypting any
    document. Safe to interrupt: '--resume' carries on."""
    config = settings()
    vault = document_vault(config)
    engine = engine_for(config.database_url)

    def units() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine)

    _record("keys rotate start", {"from": vault.current_kek, "resume": str(resume).lower()})
    with Progress(
        TextColumn("re-wrapping data keys"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("rewrap", total=key_rotation.remaining(units, "") or None)

        def progress(done: int, left: int) -> None:
            bar.update(task, completed=done, total=done + left)

        run = key_rotation.rewrap_all if resume else key_rotation.rotate
        report = run(units, vault, batch=batch, progress=progress)
    _record(
        "keys rotate done",
        {"kek": report.kek_id, "rewrapped": str(report.rewrapped), "passes": str(report.passes)},
    )
    typer.echo(f"current key: {report.kek_id}; {report.rewrapped} data key(s) re-wrapped")


@app.command("retire")
@friendly
def retire(
    kek_id: Annotated[str, typer.Argument(help="The KEK to destroy, e.g. kek-0001.")],
) -> None:
    """Destroy a KEK that no document uses any more (refused otherwise)."""
    config = settings()
    engine = engine_for(config.database_url)
    key_rotation.retire(lambda: SqlUnitOfWork(engine), document_vault(config), kek_id)
    _record("keys retire", {"kek": kek_id})
    typer.echo(f"{kek_id} destroyed")
