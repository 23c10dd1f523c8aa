"""``carevault authorities …``: register who may change the facts the engine trusts.

An organization's systems write the directories, or record the care events that open a record,
only once an operator has registered the organization here as that kind of authority. Each
registration and its end is recorded in the operators' audit stream, in its own transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.cli.context import audited_units, engine_for, operator, settings
from carevault.cli.errors import friendly
from carevault.domain.authorization import Authority
from carevault.domain.errors import CareVaultError
from carevault.services import authorities as svc

app = typer.Typer(
    help="Register the authorities that write the directories or record care events.",
    no_args_is_help=True,
)

_KINDS = ", ".join(a.value for a in Authority)


@app.command("add")
@friendly
def add(
    organization: Annotated[str, typer.Argument(help="The organization's id (Organization/<id>).")],
    kind: Annotated[str, typer.Option(help=f"One of: {_KINDS}.")],
    assigning_authority: Annotated[
        str | None,
        typer.Option(
            help="An identity source's patient-identifier system (default: the organization's own)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register an organization's systems as an authority of one kind."""
    try:
        authority_kind = Authority(kind)
    except ValueError:
        raise CareVaultError(f"--kind {kind!r} is not one of: {_KINDS}") from None
    organization_id = organization.removeprefix("Organization/")
    config = settings()
    units = audited_units(
        config,
        "authorities add",
        detail={"organization": f"Organization/{organization_id}", "kind": kind},
    )
    with units() as uow:
        registered = svc.register_authority(
            uow,
            organization_id,
            authority_kind,
            by=operator(),
            now=datetime.now(UTC),
            assigning_authority=assigning_authority,
        )
    data = {
        "id": registered.id,
        "organization": f"Organization/{organization_id}",
        "kind": registered.kind.value,
        "assigning_authority": registered.assigning_authority,
    }
    typer.echo(
        json.dumps(data)
        if json_output
        else f"authority {registered.id}: Organization/{organization_id} is a {kind}"
        + (f" for {registered.assigning_authority}" if registered.assigning_authority else "")
    )


@app.command("end")
@friendly
def end(authority_id: Annotated[str, typer.Argument(help="The registration's id.")]) -> None:
    """End a registration at once: the organization's systems lose it on their next request."""
    config = settings()
    units = audited_units(config, "authorities end", action="U", detail={"authority": authority_id})
    with units() as uow:
        svc.end_authority(uow, authority_id, by=operator(), now=datetime.now(UTC))
    typer.echo(f"authority {authority_id}: ended")


@app.command("list")
@friendly
def listing(
    include_ended: Annotated[bool, typer.Option("--all", help="Ended ones too.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The registered authorities."""
    config = settings()
    with SqlUnitOfWork(engine_for(config.database_url)) as uow:
        found = svc.list_authorities(uow, include_ended=include_ended)
    rows = [
        {
            "id": a.id,
            "organization": f"Organization/{a.organization_id}",
            "kind": a.kind.value,
            "assigning_authority": a.assigning_authority,
            "created_at": a.created_at.isoformat(),
            "created_by": a.created_by,
            "ended_at": a.ended_at.isoformat() if a.ended_at else None,
        }
        for a in found
    ]
    if json_output:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        ended = f"  ended {row['ended_at']}" if row["ended_at"] else ""
        domain = f"  ({row['assigning_authority']})" if row["assigning_authority"] else ""
        typer.echo(f"{row['id']}  {row['organization']}  {row['kind']}{domain}{ended}")
    typer.echo(f"({len(rows)})")
