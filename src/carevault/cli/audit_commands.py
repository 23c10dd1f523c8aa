"""``carevault audit …``: read entries, publish a tree head, verify the whole log."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carevault.cli.context import log_for, operator_record, settings
from carevault.cli.errors import friendly
from carevault.domain.audit import STREAMS
from carevault.domain.errors import CareVaultError
from carevault.services.access_history import completeness_proof
from carevault.services.audit_log import AuditLog
from carevault.verifier import Checkpoint, VerificationError, verify_completeness, verify_log

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

StreamOption = Annotated[str, typer.Option(help="clinical or operator.")]


def _stream(stream: str) -> str:
    if stream not in STREAMS:
        raise CareVaultError(f"--stream must be one of {', '.join(STREAMS)}")
    return stream


@app.command("entry")
@friendly
def entry(
    index: Annotated[int, typer.Argument(min=0, help="Leaf index.")],
    stream: StreamOption = "clinical",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print one entry: its leaf index and its canonical bytes (base64 with --json)."""
    config = settings()
    log = log_for(config)
    rows = log.entries(_stream(stream), index, index + 1)
    log.append_now(
        [
            operator_record(
                "R",
                "audit entry",
                entity_type="AuditLog",
                entity_id=stream,
                detail={"leaf_index": str(index)},
                outcome="0" if rows else "4",
            )
        ],
    )
    if not rows:
        raise CareVaultError(f"the {stream} log has no entry {index}")
    leaf_index, data = rows[0]
    if json_output:
        typer.echo(
            json.dumps(
                {"leaf_index": leaf_index, "leaf_input": base64.b64encode(data).decode("ascii")}
            )
        )
    else:
        typer.echo(json.dumps(json.loads(data), indent=2, ensure_ascii=False))


@app.command("tree-head")
@friendly
def tree_head(stream: StreamOption = "clinical") -> None:
    """Sign and print the current tree head (JSON, base64 hashes)."""
    head = log_for(settings()).sign_tree_head(_stream(stream))
    typer.echo(
        json.dumps(
            {
                "tree_size": head.tree_size,
                "timestamp": head.timestamp_ms,
                "root_hash": base64.b64encode(head.root_hash).decode("ascii"),
                "signature": base64.b64encode(head.signature).decode("ascii"),
            }
        )
    )


@app.command("verify")
@friendly
def verify(
    stream: StreamOption = "clinical",
    checkpoint: Annotated[
        Path | None, typer.Option(help="Save progress here, and resume from it if it exists.")
    ] = None,
    patient: Annotated[
        str | None,
        typer.Option(help="Check only this patient's history: complete, by the proofs alone."),
    ] = None,
    since: Annotated[
        int | None, typer.Option(min=0, help="With --patient: from this signed tree size.")
    ] = None,
) -> None:
    """Recompute the whole log and check every stored hash, every signed tree head and every
    patient's hash chain; or, with --patient, check that patient's history is complete with
    nothing but the public key and the proofs, as their device would."""
    config = settings()
    stream = _stream(stream)
    log = log_for(config)
    if patient is not None:
        _verify_patient(patient, since)
        return
    read = log.for_verifier(stream)
    size = read.size
    start = Checkpoint.load(checkpoint) if checkpoint and checkpoint.exists() else None

    columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    outcome, message = "0", ""
    with Progress(*columns, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("verify", total=size, completed=start.size if start else 0)
        try:
            report = verify_log(
                log.public_key_pem(stream),
                size,
                read.entries,
                read.nodes,
                read.heads,
                checkpoint=start,
                progress=lambda n: bar.advance(task, n),
                on_checkpoint=(lambda c: c.save(checkpoint)) if checkpoint else lambda _c: None,
            )
            message = (
                f"verified {report.verified_size} entries of the {stream} log and "
                f"{report.tree_heads_checked} signed tree heads"
            )
        except VerificationError as error:
            outcome = "8"
            message = f"{error} (first bad index: {error.first_bad_index})"
    _verified(log, "AuditLog", stream, outcome, message)


def _verified(log: AuditLog, entity_type: str, entity_id: str, outcome: str, message: str) -> None:
    """Record the verification and its result in the operators' stream, then say it (a
    failed one as an error: the command's exit status says it too)."""
    log.append_now(
        [
            operator_record(
                "E",
                "audit verify",
                entity_type=entity_type,
                entity_id=entity_id,
                outcome=outcome,
                detail={"result": message[:500]},
            )
        ]
    )
    if outcome != "0":
        raise CareVaultError(message)
    typer.echo(message)


def _verify_patient(patient: str, since: int | None) -> None:
    config = settings()
    log = log_for(config)
    outcome = "0"
    try:
        proof = completeness_proof(log, patient, since=since)
        report = verify_completeness(log.public_key_pem("clinical"), proof)
        message = (
            f"the history of Patient/{patient} is complete from leaf {report.first} to leaf "
            f"{report.last} ({report.count} entries), verified against the tree head of size "
            f"{proof.head.tree_size}"
        )
    except VerificationError as error:
        outcome = "8"
        message = f"{error} (first bad index: {error.first_bad_index})"
    _verified(log, "Patient", patient, outcome, message)
