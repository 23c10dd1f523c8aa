"""``carevault conformance …``: the sandbox where a vendor's system earns its attestation.

In the ``integration`` environment, ``register`` gives a vendor's system its SMART Backend
Services client and what it acts for; ``report`` signs what the audit log says the system did.
``verify`` checks a report offline; ``grant`` issues production credentials to an organization
whose system holds a passing report (and ``pki issue-system`` refuses to, outside ``dev`` and
``integration``). See docs/conformance.md. Every command is recorded in the operators' stream.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from carevault.adapters.keys.log_signer import platform_signer_from_key_source
from carevault.adapters.pki.credential_files import CredentialFiles, check_free, write_credentials
from carevault.adapters.printing.conformance_page import report_page
from carevault.bootstrap import directory_context, utc_now
from carevault.cli import context
from carevault.cli.errors import friendly
from carevault.cli.pki_commands import pki_context
from carevault.domain.conformance import SCENARIO
from carevault.domain.errors import CareVaultError
from carevault.services import conformance as svc
from carevault.services import pki
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings

app = typer.Typer(
    help="The conformance sandbox: register a vendor's system, report, verify, grant.",
    no_args_is_help=True,
)

SystemArgument = Annotated[
    str, typer.Argument(help="The system's name and version, e.g. 'Demo HIS 4.2'.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The sandbox's signing key, PEM (the integration platform's "
        "/.well-known/carevault-signing-key.pem; default CAREVAULT_CONFORMANCE_KEY_FILE, else "
        "this platform's own key).",
    ),
]


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


@contextlib.contextmanager
def _audited(
    config: Settings, interaction: str, detail: dict[str, str]
) -> Iterator[Callable[[], UnitOfWork]]:
    """Units of work whose commit records ``interaction`` with ``detail`` as it is then; a
    refusal is recorded on its own (outcome 4, with the reason)."""
    try:
        yield context.audited_units(config, interaction, detail=detail)
    except CareVaultError as error:
        refused = {**detail, "result": str(error)[:500]}
        context.record_now(
            config, context.operator_record("C", interaction, detail=refused, outcome="4")
        )
        raise


def _record(config: Settings, action: str, interaction: str, detail: dict[str, str]) -> None:
    context.record_now(config, context.operator_record(action, interaction, detail=detail))


def _write_new(path: Path, text: str) -> None:
    try:
        with path.open("x", encoding="utf-8") as file:  # never overwritten
            file.write(text)
    except FileExistsError:
        raise CareVaultError(f"{path} exists; it is never overwritten") from None


@app.command("register")
@friendly
def register(
    system: SystemArgument,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory for the system's cert.pem, key.pem (0600) and chain.pem."
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Register a vendor's system in the sandbox (integration only): its organization, the
    physician it acts for, its authorities and its SMART Backend Services certificate."""
    config = context.settings()
    ctx = svc.SandboxContext(directory_context(config), pki_context(config), config.environment)
    log = context.log_for(config)
    base = config.public_url if config.environment == "integration" else ""  # set, or refused
    detail: dict[str, str] = {"system": system}
    written: list[CredentialFiles] = []

    def deliver(credentials: pki.Credentials) -> None:
        record = credentials.record
        written.append(
            write_credentials(
                out, record.certificate_pem, credentials.private_key_pem, credentials.chain_pem
            )
        )

    with _audited(config, svc.REGISTER, detail) as units:
        if config.environment == "integration":
            check_free(out)  # before anything is made
        try:
            registration = svc.register_system(
                units,
                ctx,
                system,
                deliver,
                detail=detail,
                clinical_size=lambda: log.size("clinical"),
            )
        except BaseException:
            for files in written:  # written, then not recorded: no key stays behind
                for path in (files.certificate, files.key, files.chain):
                    path.unlink(missing_ok=True)
            raise
    (files,) = written
    data = {
        "system": registration.system,
        "client_id": registration.client_id,
        "act": registration.practitioner_identifier,
        "organization": f"Organization/{registration.organization_id}",
        "practitioner": f"Practitioner/{registration.practitioner_id}",
        "patient_id_system": registration.patient_id_system,
        "token_endpoint": f"{base}/oauth/token",
        "fhir_base": f"{base}/fhir",
        "certificate": str(files.certificate),
        "key": str(files.key),
        "chain": str(files.chain),
        "scenario": [
            {"step": s.key, "title": s.title, "transaction": s.transaction} for s in SCENARIO
        ],
    }
    steps = "\n".join(f"  {i}. {s.title}: {s.transaction}" for i, s in enumerate(SCENARIO, 1))
    _print(
        data,
        json_output,
        f"registered {registration.system!r} in the conformance sandbox\n"
        f"SMART client_id {registration.client_id} (token endpoint {base}/oauth/token); name "
        f"the professional {registration.practitioner_identifier} in the assertion's 'act'\n"
        f"patients are fed under {registration.patient_id_system}\n"
        f"wrote {files.certificate}, {files.key} (0600) and {files.chain}\n"
        f"the scenario:\n{steps}",
    )


@app.command("report")
@friendly
def report(
    system: SystemArgument,
    out: Annotated[Path, typer.Option("--out", help="The signed report (JSON), a new file.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also a readable page (HTML), a new file.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Sign a report of what the system did in the sandbox, from the audit log's entries of
    its client since it was registered."""
    config = context.settings()
    log = context.log_for(config)
    registration = svc.find_registration(log, system)
    document = svc.build_report(
        log,
        registration,
        platform_signer_from_key_source(config.key_source),
        environment=config.environment,
        platform=config.public_url,
        now=utc_now(),
    )
    _write_new(out, json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    if html is not None:
        _write_new(html, report_page(document))
    signed = document["report"]
    failed = [s["step"] for s in signed["steps"] if s["status"] != "passed"]
    _record(
        config,
        "R",
        "conformance report",
        {
            "system": system,
            "client_id": registration.client_id,
            "passed": str(signed["passed"]).lower(),
            "signature-sha256": svc.report_digest(document),
        },
    )
    _print(
        {
            "passed": signed["passed"],
            "failed": failed,
            "report": str(out),
            "html": str(html) if html else None,
        },
        json_output,
        f"{system}: "
        + ("PASSED" if signed["passed"] else f"NOT PASSED ({', '.join(failed)})")
        + f"; signed report in {out}"
        + (f", page in {html}" if html else ""),
    )


def _public_key(config: Settings, given: Path | None) -> bytes:
    path = given or config.conformance_key_file
    if path is None:
        return platform_signer_from_key_source(config.key_source).public_key_pem()
    try:
        return path.read_bytes()
    except OSError as error:
        raise CareVaultError(f"the public key {path} cannot be read: {error.strerror}") from None


def _read_report(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CareVaultError(f"the report {path} cannot be read: {error.strerror}") from None
    return svc.parse_report_file(data)


@app.command("verify")
@friendly
def verify(
    report_file: Annotated[Path, typer.Argument(help="The signed report (JSON).")],
    public_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a report's signature offline, with the sandbox's public key alone."""
    config = context.settings()
    checked = svc.verify_report(_read_report(report_file), _public_key(config, public_key))
    failed = [s["step"] for s in checked["steps"] if s["status"] != "passed"]
    _print(
        {"valid": True, "system": checked["system"], "passed": checked["passed"], "failed": failed},
        json_output,
        f"the signature is valid: {checked['system']} "
        + ("PASSED" if checked["passed"] else f"NOT PASSED ({', '.join(failed)})")
        + f" in {checked['environment']} on {checked['issued']}",
    )


@app.command("grant")
@friendly
def grant(
    system: SystemArgument,
    organization_id: Annotated[
        str, typer.Argument(help="The Organization id of the production organization.")
    ],
    report_file: Annotated[
        Path, typer.Option("--report", help="The system's passing, signed sandbox report.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for cert.pem, key.pem (0600), chain.pem.")
    ],
    public_key: KeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Issue production credentials (a system certificate) to an organization whose system
    holds a passing report of the sandbox; refused otherwise."""
    config = context.settings()
    detail = {"system": system, "organization_id": organization_id, "report": str(report_file)}
    written: list[CredentialFiles] = []

    def deliver(credentials: pki.Credentials) -> None:
        record = credentials.record
        written.append(
            write_credentials(
                out, record.certificate_pem, credentials.private_key_pem, credentials.chain_pem
            )
        )
        detail.update(serial=record.serial, client_id=record.client_id)

    with _audited(config, "conformance grant", detail) as units:
        document = _read_report(report_file)
        svc.passing_report(document, _public_key(config, public_key), system)
        detail["signature-sha256"] = svc.report_digest(document)
        check_free(out)
        try:
            with units() as uow:
                record = svc.grant_credentials(uow, pki_context(config), organization_id, deliver)
        except BaseException:
            for files in written:
                for path in (files.certificate, files.key, files.chain):
                    path.unlink(missing_ok=True)
            raise
    (files,) = written
    _print(
        {
            "system": system,
            "client_id": record.client_id,
            "serial": record.serial,
            "certificate": str(files.certificate),
            "key": str(files.key),
            "chain": str(files.chain),
        },
        json_output,
        f"granted: certificate {record.serial} to {record.client_id}, which runs {system!r} "
        f"(passing conformance report)\nwrote {files.certificate}, {files.key} (0600) and "
        f"{files.chain}",
    )
