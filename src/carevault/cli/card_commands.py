"""``carevault card …``: the professional's card on their own machine (no database needed).

``card enrol`` proves possession of the card's key to the platform and prints the one-time
code that enrols a passkey for the professional workspace (`carevault.client.card`);
``card sign`` writes the author's detached signature of a document (IHE DSG), which the
workspace's publication form takes beside the document.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Annotated

import typer

from carevault.cli.errors import friendly
from carevault.client import card as client

app = typer.Typer(
    help="The professional's card: enrol a passkey for the workspace, sign a document.",
    no_args_is_help=True,
)


@app.command("enrol")
@friendly
def enrol(
    card: Annotated[
        Path, typer.Option("--card", help="The card folder: cert.pem, key.pem, chain.pem.")
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="The platform's public address (default CAREVAULT_PUBLIC_BASE_URL)."
        ),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="The CA file that vouches for the server's TLS.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sign the platform's challenge with the card's key; print the passkey enrolment code."""
    address = base or os.environ.get("CAREVAULT_PUBLIC_BASE_URL") or "http://127.0.0.1:8000"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    enrolment = client.enrol(address, card, verify)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "code": enrolment.code,
                    "expires_at": enrolment.expires_at,
                    "enrol_url": enrolment.enrol_url,
                }
            )
        )
        return
    typer.echo(f"Enrolment code: {enrolment.code} (once, until {enrolment.expires_at})")
    typer.echo(f"Type it at {enrolment.enrol_url} to create your passkey.")


@app.command("sign")
@friendly
def sign(
    document: Annotated[Path, typer.Argument(help="The document to sign.")],
    card: Annotated[
        Path, typer.Option("--card", help="The card folder: cert.pem, key.pem, chain.pem.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write it (default DOCUMENT.jws).")
    ] = None,
) -> None:
    """Sign DOCUMENT with the card's key: a detached JWS, written to DOCUMENT.jws."""
    try:
        content = document.read_bytes()
    except OSError as error:
        raise client.CardUnreadable(f"cannot read {document}: {error.strerror}") from None
    target = out or document.with_name(document.name + ".jws")
    target.write_bytes(client.sign(card, content))
    typer.echo(f"signed: {target}")
