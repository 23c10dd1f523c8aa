"""The conformance sandbox: register a vendor's system, report on what it did, grant it.

- `register_system` (``integration`` only): the vendor's system gets what a hospital's system
  has in production, made for it alone: an organization (``SANDBOX-<NAME>``) with its own
  patient-identifier system, registered as identity source and admission system; a physician
  of that organization for the system to act for (``act``); and a system certificate of the
  platform CA, its SMART Backend Services client (``system:SANDBOX-<NAME>``). The registration
  is the operator entry of its last transaction, with the clinical stream's size then: the run
  is every entry after it. A registration stopped between its transactions is finished by the
  next attempt under the same name (``resumed`` in its entry names what was already made); a
  system that holds its certificate is registered once.
- `build_report`: the system's requests during the run, read from the audit log (its client's
  entries, `carevault.domain.conformance.assess`), not from anything the vendor says, signed
  by the platform's key (the one that signs dispense receipts: EdDSA, published at
  ``/.well-known/carevault-signing-key.pem``).
- `verify_report` and `passing_report`: the signature against a public key alone, and, for
  production credentials, a passing report of the sandbox for that very system.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from carevault.adapters.storage.pki_store import CertificateRecord
from carevault.domain.audit import AuditRecord, canonical_bytes, rfc3339_ms
from carevault.domain.authorization import Authority
from carevault.domain.conformance import (
    REPORT_TYPE,
    REPORT_VERSION,
    SANDBOX_ENVIRONMENT,
    Attempt,
    assess,
    check_system_name,
    failed_steps,
    is_attempt_of,
    is_unauthenticated_claim,
    report_errors,
    slug,
    verdict,
)
from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.fhirmodel.directory import new_organization, new_practitioner
from carevault.services import directory as svc
from carevault.services import pki
from carevault.services.audit_log import AuditLog
from carevault.services.authorities import register_authority
from carevault.services.prescriptions import ReceiptSigner, sign_compact
from carevault.services.unit_of_work import UnitOfWork
from carevault.verifier import UnreadableKey, VerificationError, verify_platform_signature

REGISTER = "conformance register"
SIGNATURE_TYPE = "carevault-conformance-report+jws"
PAGE = 1000
MAX_REPORT_BYTES = 1_000_000


class ReportRejected(BusinessRuleViolation):
    """A conformance report that is not signed by the expected key, not well formed, not the
    sandbox's, not for this system, or not passing."""


@dataclass(frozen=True)
class SandboxContext:
    directory: svc.DirectoryContext
    pki: pki.PkiContext
    environment: str


@dataclass(frozen=True)
class Registration:
    """A vendor's system in the sandbox, as its registration entry records it."""

    system: str
    client_id: str
    organization_id: str
    organization_identifier: str
    practitioner_id: str
    practitioner_identifier: str
    patient_id_system: str
    serial: str
    run_start: int  # the first leaf index of the clinical stream in the run
    registered: str = ""  # when, as the entry recorded it (RFC 3339)

    def detail(self) -> dict[str, str]:
        return {k.replace("_", "-"): str(v) for k, v in asdict(self).items() if k != "registered"}

    @classmethod
    def from_entry(cls, record: AuditRecord) -> Registration:
        d = record.detail
        return cls(
            system=d["system"],
            client_id=d["client-id"],
            organization_id=d["organization-id"],
            organization_identifier=d["organization-identifier"],
            practitioner_id=d["practitioner-id"],
            practitioner_identifier=d["practitioner-identifier"],
            patient_id_system=d["patient-id-system"],
            serial=d["serial"],
            run_start=int(d["run-start"]),
            registered=record.recorded,
        )


def register_system(
    units: Callable[[], UnitOfWork],
    ctx: SandboxContext,
    name: str,
    deliver: pki.Deliver,
    *,
    detail: dict[str, str],
    clinical_size: Callable[[], int],
) -> Registration:
    """Register ``name`` in the sandbox (see the module's docstring). ``units`` record
    ``detail`` at each commit, which this keeps up to date: the last one, the certificate's,
    holds the whole registration (`Registration.detail`), with ``step: certificate``."""
    if ctx.environment != SANDBOX_ENVIRONMENT:
        raise BusinessRuleViolation(
            f"the conformance sandbox runs in the {SANDBOX_ENVIRONMENT!r} environment only "
            f"(CAREVAULT_ENVIRONMENT is {ctx.environment!r})"
        )
    system = check_system_name(name)
    part = slug(system)
    if not part:
        raise InvalidInput(
            f"the system name {system!r} has no letter or digit", expression="SYSTEM"
        )
    identifier = sandbox_identifier(part)
    professional = f"{identifier}-HP"
    patient_ids = f"urn:carevault:conformance:{part.lower()}:patient-id"
    client_id = pki.SYSTEM_PREFIX + identifier
    detail.update(system=system, step="organization")
    # A registration stopped between its steps (each its own transaction) is finished by the
    # next attempt under the same name, from the step it stopped at; a system that holds its
    # certificate is registered, and a new version has a name of its own.
    with units() as uow:
        if uow.pki.certificates_of(client_id):
            raise Conflict(
                f"a system named {system!r} (organization {identifier}) is already registered "
                "in the sandbox; register the new version under its own name"
            )
        begun = _begun(uow, identifier, professional, patient_ids, system)
    resumed = [step for step, done in begun.items() if done]
    organization_id = begun.organization_id
    if organization_id is None:
        with units() as uow:
            organization_id = svc.create_organization(
                uow,
                ctx.directory,
                new_organization(
                    ctx.directory.systems,
                    identifier=identifier,
                    name=f"{system} (conformance sandbox)",
                    patient_id_system=patient_ids,
                ),
            ).id
    detail.update(organization=f"Organization/{organization_id}")
    practitioner_id = begun.practitioner_id
    if practitioner_id is None:
        detail.update(step="professional")
        with units() as uow:
            ((practitioner, _role),) = svc.register_professionals(
                uow,
                ctx.directory,
                [
                    svc.NewProfessional(
                        practitioner=new_practitioner(
                            ctx.directory.systems,
                            identifier=professional,
                            family="Sandbox",
                            given=[part.title()],
                        ),
                        profession="physician",
                        specialty="general-practice",
                        organization_id=organization_id,
                    )
                ],
            )
        practitioner_id = practitioner.id
    for kind in _SANDBOX:
        if kind in begun.authorities:
            continue
        detail.update(step=kind.value)
        with units() as uow:
            register_authority(
                uow, organization_id, kind, by="conformance-sandbox", now=ctx.pki.clock()
            )
    registered: list[Registration] = []
    # Read before the certificate's transaction (on a database connection of its own): the
    # system can make no request before it holds its certificate.
    run_start = clinical_size()

    def handed_over(credentials: pki.Credentials) -> None:
        # Before the certificate's commit: its operator entry is the registration.
        record = credentials.record
        registration = Registration(
            system=system,
            client_id=record.client_id,
            organization_id=organization_id,
            organization_identifier=identifier,
            practitioner_id=practitioner_id,
            practitioner_identifier=professional,
            patient_id_system=patient_ids,
            serial=record.serial,
            run_start=run_start,
        )
        registered.append(registration)
        detail.clear()
        detail.update({"step": "certificate", **registration.detail()})
        if resumed:
            detail["resumed"] = " ".join(resumed)  # the steps an earlier attempt had made
        deliver(credentials)

    # Said before it is tried: a refusal of the certificate is recorded as the certificate's,
    # not as the last authority's (`handed_over` then writes the whole registration).
    detail.update(step="certificate")
    with units() as uow:
        pki.issue_system_certificate(uow, ctx.pki, organization_id, handed_over)
    return registered[0]


IDENTIFIER_MAX = 48  # "system:" and the identifier fit the 64 characters of a certificate


def sandbox_identifier(part: str) -> str:
    """The organization identifier of a system whose name gives ``part`` (`slug`):
    ``SANDBOX-<PART>``; one longer than 48 characters keeps its first 31 and adds 8 hex digits
    of the SHA-256 of the whole part, so that two long names that begin alike stay two
    systems (cut at 48, they were one, and the second was refused as already registered)."""
    identifier = f"SANDBOX-{part}"
    if len(identifier) <= IDENTIFIER_MAX:
        return identifier
    digest = hashlib.sha256(part.encode("ascii")).hexdigest()[:8].upper()
    return f"{identifier[: IDENTIFIER_MAX - 9]}-{digest}"


@dataclass(frozen=True)
class _Begun:
    """What an earlier, unfinished registration of the same system made."""

    organization_id: str | None
    practitioner_id: str | None
    authorities: frozenset[Authority]

    def items(self) -> list[tuple[str, bool]]:
        return [
            ("organization", self.organization_id is not None),
            ("professional", self.practitioner_id is not None),
            *((kind.value, kind in self.authorities) for kind in _SANDBOX),
        ]


_SANDBOX = (Authority.IDENTITY_SOURCE, Authority.ADMISSION_SYSTEM)


def _begun(
    uow: UnitOfWork, identifier: str, professional: str, patient_ids: str, system: str
) -> _Begun:
    """The organization, physician and authorities a stopped registration made, checked to
    be the sandbox's own for this system (its patient-identifier system, the physician's role
    in it): an organization or physician that merely bears the identifier is not adopted."""
    organizations = uow.directory.organization_ids_by_identifier([identifier])
    if not organizations:
        return _Begun(None, None, frozenset())
    organization_id = organizations[identifier]
    if uow.directory.organization_patient_id_system(organization_id) != patient_ids:
        raise Conflict(
            f"organization identifier {identifier} already names Organization/"
            f"{organization_id}, which is not the sandbox's organization for {system!r}"
        )
    practitioners = uow.directory.practitioner_ids_by_identifier([professional])
    practitioner_id = practitioners.get(professional)
    if practitioner_id is not None and not any(
        role.organization_id == organization_id
        for role in uow.directory.active_roles(practitioner_id)
    ):
        raise Conflict(
            f"professional identifier {professional} already names Practitioner/"
            f"{practitioner_id}, who is not the sandbox's physician for {system!r}"
        )
    authorities = frozenset(
        a.kind for a in uow.authorities.active_of(organization_id) if a.kind in _SANDBOX
    )
    return _Begun(organization_id, practitioner_id, authorities)


def _entries(log: AuditLog, stream: str, start: int, end: int) -> Iterator[tuple[int, AuditRecord]]:
    for first in range(start, end, PAGE):
        for index, data in log.entries(stream, first, min(first + PAGE, end)):
            yield index, AuditRecord.from_canonical(data)


def find_registration(log: AuditLog, system: str) -> Registration:
    """The system's latest registration in the sandbox, from the operators' stream."""
    found: Registration | None = None
    for _index, record in _entries(log, "operator", 0, log.size("operator")):
        if (
            record.interaction == REGISTER
            and record.outcome == "0"
            and record.detail.get("step") == "certificate"
            and record.detail.get("system") == system
        ):
            found = Registration.from_entry(record)
    if found is None:
        raise NotFound(
            f"no system named {system!r} is registered in the conformance sandbox "
            "(carevault conformance register)"
        )
    return found


def attempts_of(log: AuditLog, registration: Registration) -> list[Attempt]:
    """The system's requests since its registration: one per request (its main entry)."""
    return _attempts(log, registration)[0]


def _attempts(log: AuditLog, registration: Registration) -> tuple[list[Attempt], int]:
    """The system's requests since its registration, and apart, how many token requests were
    refused before any client authenticated while claiming to be its client (anyone may claim
    any client: they are never failures of the system, `is_unauthenticated_claim`)."""
    seen: set[str] = set()
    attempts = []
    claims = 0
    for index, record in _entries(log, "clinical", registration.run_start, log.size("clinical")):
        if is_unauthenticated_claim(record, registration.client_id):
            claims += 1
            continue
        if not is_attempt_of(record, registration.client_id):
            continue
        if record.request_id is not None:
            if record.request_id in seen:
                continue  # a patient's own copy of the same request
            seen.add(record.request_id)
        attempts.append(Attempt.of(index, record))
    return attempts, claims


def build_report(
    log: AuditLog,
    registration: Registration,
    signer: ReceiptSigner,
    *,
    environment: str,
    platform: str,
    now: datetime,
) -> dict[str, Any]:
    """The signed report on the system's run so far: ``{"report": …, "signature": JWS}``,
    the JWS's payload being the report's canonical JSON."""
    attempts, claims = _attempts(log, registration)
    results = assess(attempts)
    report: dict[str, Any] = {
        "type": REPORT_TYPE,
        "version": REPORT_VERSION,
        "system": registration.system,
        "client_id": registration.client_id,
        "organization": registration.organization_identifier,
        "environment": environment,
        "platform": platform,
        "registered": registration.registered,
        "issued": rfc3339_ms(now),
        "evidence": {
            "stream": "clinical",
            "from-entry": registration.run_start,
            "to-entry": log.size("clinical"),
            "requests": len(attempts),
            # Token requests refused before authentication that claimed the system's client:
            # not its requests (anyone may claim a client id), not counted in any step.
            "unauthenticated-token-attempts": claims,
        },
        "passed": verdict(results),
        "steps": [r.to_json() for r in results],
    }
    return sign_report(signer, report)


def sign_report(signer: ReceiptSigner, report: dict[str, Any]) -> dict[str, Any]:
    """The report file: the report, and the platform's compact JWS (EdDSA) over its canonical
    JSON, which is what a verifier trusts."""
    return {
        "report": report,
        "signature": sign_compact(signer, canonical_bytes(report), SIGNATURE_TYPE),
    }


def parse_report_file(data: bytes) -> dict[str, Any]:
    """A report file's JSON, refused readably when it is not one."""
    if len(data) > MAX_REPORT_BYTES:
        raise ReportRejected("the report file is too large to be a conformance report")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ReportRejected("the report file is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("signature"), str):
        raise ReportRejected("the report file holds no 'signature' (a signed conformance report)")
    return document


def verify_report(document: Mapping[str, Any], public_key_pem: bytes) -> dict[str, Any]:
    """The report the signature covers, if it verifies under ``public_key_pem`` alone and the
    file's readable copy says the same; `ReportRejected` otherwise."""
    signature = document.get("signature")
    if not isinstance(signature, str):
        raise ReportRejected("the report file holds no signature")
    try:
        payload = verify_platform_signature(signature, public_key_pem)
    except UnreadableKey as error:  # the operator's key file, not the report, is wrong
        raise ReportRejected(f"the public key is not the platform's signing key: {error}") from None
    except VerificationError as error:
        raise ReportRejected(f"the report's signature does not verify: {error}") from None
    try:
        report = json.loads(payload)
    except (ValueError, RecursionError):
        raise ReportRejected("the signed payload is not JSON") from None
    if not isinstance(report, dict):
        raise ReportRejected("the signed payload is not a report")
    if document.get("report") != report:
        raise ReportRejected("the report in the file differs from the one that was signed")
    errors = report_errors(report)
    if errors:
        raise ReportRejected(f"the signed report is not a conformance report: {errors[0]}")
    return report


def passing_report(
    document: Mapping[str, Any], public_key_pem: bytes, system: str
) -> dict[str, Any]:
    """A report that allows production credentials for ``system``: validly signed by the
    sandbox's key, made in the sandbox, for this system, passing every step."""
    report = verify_report(document, public_key_pem)
    if report["environment"] != SANDBOX_ENVIRONMENT:
        raise ReportRejected(
            f"the report was made in the {report['environment']!r} environment, not in the "
            f"conformance sandbox ({SANDBOX_ENVIRONMENT!r})"
        )
    if report["system"] != system:
        raise ReportRejected(f"the report is for {report['system']!r}, not for {system!r}")
    if not report["passed"]:
        raise ReportRejected(
            f"the report of {system!r} does not pass: {', '.join(failed_steps(report))} "
            "not performed correctly"
        )
    return report


def report_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the signature (which covers the report): the grant's record names it."""
    return hashlib.sha256(str(document.get("signature", "")).encode()).hexdigest()


def grant_credentials(
    uow: UnitOfWork, ctx: pki.PkiContext, organization_id: str, deliver: pki.Deliver
) -> CertificateRecord:
    """Production credentials (a system certificate) for an organization running a system whose
    passing report was checked (`passing_report`)."""
    return pki.issue_system_certificate(uow, ctx, organization_id, deliver)


__all__ = [
    "REGISTER",
    "Registration",
    "ReportRejected",
    "SandboxContext",
    "attempts_of",
    "build_report",
    "find_registration",
    "grant_credentials",
    "parse_report_file",
    "passing_report",
    "register_system",
    "report_digest",
    "sign_report",
    "verify_report",
]
