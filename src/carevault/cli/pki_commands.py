"""``carevault pki …``: the platform's certificate authorities and client certificates.

Every action is recorded in the operators' audit stream: a change inside the transaction that
makes it, a refusal (suspended professional, unknown serial…) in a record of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from carevault.adapters.keys.pki_keys import ca_key_password
from carevault.adapters.pki.credential_files import CredentialFiles, check_free, write_credentials
from carevault.adapters.pki.x509_authority import REASONS
from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import directory_context, utc_now
from carevault.cli import context
from carevault.cli.errors import friendly
from carevault.domain.audit import AuditRecord, Written
from carevault.domain.errors import CareVaultError
from carevault.services import pki
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings

app = typer.Typer(
    help="The platform PKI: certificate authorities and client certificates.",
    no_args_is_help=True,
)

# Where an organization's system is trusted only with a passing conformance report
# (`carevault conformance grant`); dev and the integration sandbox issue them directly.
GRANTED_ENVIRONMENTS = ("preprod", "prod")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OutOption = Annotated[
    Path,
    typer.Option(
        "--out", help="Directory for cert.pem, key.pem (0600) and chain.pem; never overwritten."
    ),
]


def pki_context(config: Settings) -> pki.PkiContext:
    return pki.PkiContext(
        systems=directory_context(config).systems,
        ca_password=ca_key_password(config.key_source),
        clock=utc_now,
        environment=config.environment,
    )


def _operator_record(
    action: str, interaction: str, detail: dict[str, str], outcome: str = "0"
) -> AuditRecord:
    serial = detail.get("serial")
    return context.operator_record(
        action,
        interaction,
        entity_type="Certificate" if serial else "CertificateAuthority",
        entity_id=serial,
        detail=dict(detail),
        outcome=outcome,
    )


@contextlib.contextmanager
def _audited(
    config: Settings, interaction: str, action: str, detail: dict[str, str]
) -> Iterator[Callable[[], UnitOfWork]]:
    """Units of work whose commit records ``interaction`` with ``detail`` as it is then (the
    use case may add the serial number meanwhile); a refusal is recorded on its own."""
    engine = context.engine_for(config.database_url)
    log = context.log_for(config)

    def record(store: AuditStore, _written: Written) -> None:
        log.append_with(store, [_operator_record(action, interaction, detail)])

    try:
        yield lambda: SqlUnitOfWork(engine, before_commit=record)
    except CareVaultError as error:
        refused = {**detail, "result": str(error)[:500]}
        log.append_now([_operator_record(action, interaction, refused, "4")])
        raise


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


@app.command("init")
@friendly
def init(json_output: JsonOption = False) -> None:
    """Create the root CA and the issuing CA (ECDSA P-256); safe to run again."""
    config = context.settings()
    ctx = pki_context(config)
    with _audited(config, "pki init", "C", {}) as units:
        with units() as uow:
            created = pki.init_pki(uow, ctx)
        with units() as uow:
            chain = pki.ca_chain_pem(uow)
    if not created:
        context.log_for(config).append_now(
            [_operator_record("E", "pki init", {"result": "already initialized, kept"})],
        )
    root = x509.load_pem_x509_certificates(chain.encode("ascii"))[-1]
    root_fingerprint = root.fingerprint(hashes.SHA256()).hex(":").upper()
    _print(
        {"created": created, "root_sha256": root_fingerprint},
        json_output,
        ("PKI initialized" if created else "PKI already initialized")
        + f"; root CA SHA-256 fingerprint {root_fingerprint}",
    )


@app.command("ca")
@friendly
def ca(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the chain to this new file instead of printing it."),
    ] = None,
) -> None:
    """Print the CA chain (issuing CA, then root; PEM), as GET /pki/ca serves it: the file to
    give `carevault serve --client-ca` and a proxy's ssl_client_certificate."""
    config = context.settings()
    with SqlUnitOfWork(context.engine_for(config.database_url)) as uow:
        chain = pki.ca_chain_pem(uow)
    if out is None:
        typer.echo(chain, nl=False)
    else:
        try:
            with out.open("x", encoding="ascii") as file:  # never overwritten
                file.write(chain)
        except FileExistsError:
            raise CareVaultError(f"{out} exists; it is never overwritten") from None
        typer.echo(f"wrote the CA chain to {out}")
    context.log_for(config).append_now(
        [_operator_record("R", "pki ca", {"out": str(out) if out else "-"})]
    )


def _issue(
    kind: str,
    resource_id: str,
    out: Path,
    json_output: bool,
    issue: Callable[[UnitOfWork, pki.PkiContext, str, pki.Deliver], CertificateRecord],
) -> None:
    config = context.settings()
    ctx = pki_context(config)
    detail = {f"{'practitioner' if kind == 'practitioner' else 'organization'}_id": resource_id}
    written: list[CredentialFiles] = []

    def deliver(credentials: pki.Credentials) -> None:
        record = credentials.record
        written.append(
            write_credentials(
                out, record.certificate_pem, credentials.private_key_pem, credentials.chain_pem
            )
        )
        detail.update(serial=record.serial, client_id=record.client_id)

    with _audited(config, f"pki issue-{kind}", "C", detail) as units:
        if kind == "system" and config.environment in GRANTED_ENVIRONMENTS:
            raise CareVaultError(
                f"in {config.environment} a system's credentials are granted with its passing "
                "conformance report: carevault conformance grant SYSTEM ORGANIZATION_ID "
                "--report REPORT --out DIR (docs/conformance.md)"
            )
        check_free(out)  # before any key is made
        try:
            with units() as uow:
                record = issue(uow, ctx, resource_id, deliver)
        except BaseException:
            # Written, then not recorded (the commit failed): the files must not stay behind.
            for files in written:
                for path in (files.certificate, files.key, files.chain):
                    path.unlink(missing_ok=True)
            raise
    (files,) = written
    _print(
        {
            "client_id": record.client_id,
            "serial": record.serial,
            "kind": record.kind,
            "practitioner_id": record.practitioner_id,
            "organization_id": record.organization_id,
            "subject": record.subject,
            "not_before": record.not_before.isoformat(),
            "not_after": record.not_after.isoformat(),
            "certificate": str(files.certificate),
            "key": str(files.key),
            "chain": str(files.chain),
        },
        json_output,
        f"issued certificate {record.serial} to {record.client_id} ({record.subject}), "
        f"valid until {record.not_after.isoformat()}\n"
        f"wrote {files.certificate}, {files.key} (0600) and {files.chain}",
    )


@app.command("issue-practitioner")
@friendly
def issue_practitioner(
    practitioner_id: Annotated[
        str, typer.Argument(help="The Practitioner id 'directory add-practitioner' printed.")
    ],
    out: OutOption,
    json_output: JsonOption = False,
) -> None:
    """Issue a client certificate to a professional with an active licence."""
    _issue("practitioner", practitioner_id, out, json_output, pki.issue_practitioner_certificate)


@app.command("issue-system")
@friendly
def issue_system(
    organization_id: Annotated[str, typer.Argument(help="The Organization id.")],
    out: OutOption,
    json_output: JsonOption = False,
) -> None:
    """Issue a client certificate to an active organization's information system."""
    _issue("system", organization_id, out, json_output, pki.issue_system_certificate)


@app.command("revoke")
@friendly
def revoke(
    serial: Annotated[str, typer.Argument(help="The certificate's serial number (hex).")],
    reason: Annotated[
        str, typer.Option("--reason", help=f"RFC 5280 reason: {', '.join(REASONS)}.")
    ],
    json_output: JsonOption = False,
) -> None:
    """Revoke a certificate: refused at once for new tokens, and listed on GET /pki/crl."""
    config = context.settings()
    detail = {"serial": serial, "reason": reason}
    with _audited(config, "pki revoke", "U", detail) as units:
        detail["serial"] = pki.parse_serial(serial)
        with units() as uow:
            record = pki.revoke(uow, serial, reason, utc_now())
    assert record.revoked_at is not None
    _print(
        {
            "serial": record.serial,
            "client_id": record.client_id,
            "revoked_at": record.revoked_at.isoformat(),
            "reason": record.revocation_reason,
        },
        json_output,
        f"revoked certificate {record.serial} of {record.client_id} ({reason})",
    )
