"""``carevault policy …``: explain one decision of the engine, show the profile matrix."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import typer

from carevault.bootstrap import load_profile_matrix, record_policy
from carevault.cli.context import engine_for, log_for, operator_record, settings
from carevault.cli.errors import friendly
from carevault.domain.authorization import ProfileMatrix

app = typer.Typer(help="The authorization engine's rules.", no_args_is_help=True)


def matrix_digest(matrix: ProfileMatrix) -> str:
    """SHA-256 of the matrix's canonical JSON: what the audit names when a matrix is loaded."""
    canonical = {
        "version": matrix.version,
        "profiles": {
            key: {action: sorted(codes) for action, codes in sorted(actions.items())}
            for key, actions in sorted(matrix.profiles.items())
        },
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@app.command("explain")
@friendly
def explain(
    practitioner: Annotated[str, typer.Option(help="The practitioner's id (Practitioner/<id>).")],
    patient: Annotated[str, typer.Option(help="The patient's id (Patient/<id>).")],
    document: Annotated[str | None, typer.Option(help="One document of the record.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The rule path of the engine's decision for a practitioner reading a record, now."""
    config = settings()
    engine = engine_for(config.database_url)
    log = log_for(config)
    practitioner_id = practitioner.removeprefix("Practitioner/")
    patient_id = patient.removeprefix("Patient/")
    decision = record_policy(config, engine, log).explain(practitioner_id, patient_id, document)
    log.append_now(
        [
            operator_record(
                "E",
                "policy explain",
                entity_type="Patient",
                entity_id=patient_id,
                detail={
                    "practitioner": f"Practitioner/{practitioner_id}",
                    **({"document": document} if document else {}),
                    "decision": "permit" if decision.permit else "deny",
                },
            )
        ],
    )
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "decision": "permit" if decision.permit else "deny",
                    "rule": decision.rule,
                    "path": list(decision.path),
                    "reasons": dict(decision.reasons),
                    "obligations": sorted(
                        o.kind + (f":{o.purpose_of_use}" if o.purpose_of_use else "")
                        for o in decision.obligations
                    ),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    typer.echo(decision.explain())
    typer.echo(f"fr: {decision.reasons['fr']}")


@app.command("matrix")
@friendly
def matrix() -> None:
    """Print the profile matrix in force (version, digest, and what each profession may do)."""
    loaded = load_profile_matrix(settings())
    typer.echo(f"version {loaded.version} sha256 {matrix_digest(loaded)}")
    for key, actions in sorted(loaded.profiles.items()):
        reads = ", ".join(sorted(actions["read"])) or "nothing"
        writes = ", ".join(sorted(actions["write"])) or "nothing"
        typer.echo(f"  {key}: reads {reads}; writes {writes}")
