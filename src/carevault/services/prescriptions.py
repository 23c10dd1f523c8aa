"""E-prescriptions: gematik's E-Rezept ``Task`` workflow on CareVault, one use case each.

The engine decides who may take each step (`decide_prescribing`, `decide_dispensing`, and
`decide` on the patient's record when the prescription names them); this service checks what
only the prescription knows (its prescriber, its codes, its status) and makes each change in
one transaction. Every change of status is a conditional UPDATE (`PrescriptionStore`), so two
pharmacies racing for one task cannot both win, whatever the timing.

The prescription is the prescriber's compact JWS over the Bundle, with their certificate chain
in ``x5c``: checked exactly as a document's signature (`services.signatures`), against the
platform CA and its revocations. Completing it gives the pharmacy a receipt the platform signs,
which carries the inclusion proof of its audit entry: anyone with the platform's published keys
checks it offline (`carevault.verifier.verify_receipt`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from carevault.adapters.printing.prescription_pdf import Printout
from carevault.adapters.security.sealed_codes import CodeUnavailable
from carevault.adapters.storage.audit_store import AuditStore
from carevault.domain.audit import ACTION_UPDATE, AuditRecord, rfc3339_ms
from carevault.domain.errors import (
    BusinessRuleViolation,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    RateLimited,
)
from carevault.domain.prescriptions import (
    PRESCRIPTION_ID_SYSTEM,
    AttemptLimit,
    MedicationCatalogue,
    Step,
    StoredTask,
    TaskConflict,
    TaskStatus,
    allowed_from,
    code_hash,
    code_matches,
    expired,
    new_code,
    next_status,
    not_yet_valid,
    prescription_number,
    validity_end,
    well_formed_code,
)
from carevault.domain.tree_head import TreeHead
from carevault.fhirmodel.prescription import Prescription, dosage_text, read_prescription
from carevault.fhirmodel.validate import parse_json
from carevault.services.record_policy import Actor
from carevault.services.signatures import InvalidSignature, verify_detached
from carevault.services.unit_of_work import UnitOfWork

MAX_PRESCRIPTION_BYTES = 256 * 1024
# How far back the medication list goes (MedicationRequest and MedicationDispense searches):
# what the issue asks for, enough to see a duplicate therapy.
MEDICATION_LIST_PERIOD = timedelta(days=365)
MAX_JSON_DEPTH = 32
RECEIPT_TYPE = "carevault-dispense-receipt+jws"
PRINTOUT_TYPE = "carevault-printout+jws"


class ReceiptSigner(Protocol):
    """The platform's Ed25519 key that signs receipts and printouts (`adapters.keys`)."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


class CodeBox(Protocol):
    """Seals a task's access code for its patient (`adapters.security.sealed_codes`); `open`
    raises `CodeUnavailable` when it does not open (another key, another task's row)."""

    def seal(self, code: str, task_id: str) -> bytes: ...

    def open(self, sealed: bytes, task_id: str) -> str: ...


class Printer(Protocol):
    """Lays out a printed prescription (`adapters.printing`): the facts in, PDF bytes out."""

    def __call__(self, printout: Printout) -> bytes: ...


class AuditPort(Protocol):
    def append_with(self, store: AuditStore, records: Sequence[AuditRecord]) -> list[int]: ...

    def sign_tree_head(self, stream: str) -> TreeHead: ...

    def inclusion_proof(self, stream: str, leaf_index: int, tree_size: int) -> list[bytes]: ...

    def entries(self, stream: str, start: int, end: int) -> list[tuple[int, bytes]]: ...


class WrongCode(NotPermitted):
    """A wrong access code or secret, or a number nobody has: counted for the rate limit."""


@dataclass(frozen=True)
class Created:
    task: StoredTask
    access_code: str


@dataclass(frozen=True)
class PatientPrescription:
    """One prescription as its patient sees it (the portal): what the prescriber signed, in
    words, its state, and, while it waits for a pharmacy, its number and access code."""

    task_id: str
    number: str
    status: str  # the task's, or "expired" for a ready one past its validity
    medication: str
    dosage: str
    quantity: str
    prescriber: str
    organization: str
    created_at: datetime
    valid_from: datetime | None
    valid_until: datetime | None
    dispensed_at: datetime | None = None
    dispensed: str = ""  # what the pharmacy handed over, in words, when it says
    access_code: str | None = None  # only while ready, and only if it was kept sealed


@dataclass(frozen=True)
class Accepted:
    task: StoredTask
    secret: str
    signed_prescription: str


@dataclass(frozen=True)
class Closed:
    task: StoredTask
    receipt: str  # compact JWS (EdDSA) of the platform over the receipt's JSON


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_compact(signer: ReceiptSigner, payload: bytes, kind: str) -> str:
    """A compact JWS (RFC 7515, EdDSA / RFC 8037) by the platform's key."""
    header = b64url(json.dumps({"alg": "EdDSA", "typ": kind}, separators=(",", ":")).encode())
    body = b64url(payload)
    signature = signer.sign(f"{header}.{body}".encode("ascii"))
    return f"{header}.{body}.{b64url(signature)}"


def split_prescription(jws: str) -> tuple[str, bytes]:
    """The detached form (``header..signature``) and the payload of an attached compact JWS."""
    if len(jws) > MAX_PRESCRIPTION_BYTES * 2:
        raise InvalidSignature("the signed prescription is too large")
    parts = jws.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        raise InvalidSignature(
            "the prescription is a compact JWS with its payload (header.payload.signature)"
        )
    try:
        payload = unb64url(parts[1])
    except (binascii.Error, ValueError):
        raise InvalidSignature("the prescription's payload is not base64url") from None
    return f"{parts[0]}..{parts[2]}", payload


def prescription_bundle(jws: str) -> dict[str, Any]:
    """The Bundle a signed prescription carries (not yet verified)."""
    _detached, payload = split_prescription(jws)
    if len(payload) > MAX_PRESCRIPTION_BYTES:
        raise InvalidInput(f"the prescription is larger than {MAX_PRESCRIPTION_BYTES} bytes")
    return parse_json(payload, max_depth=MAX_JSON_DEPTH)


def signed_from_parameters(parameters: dict[str, Any]) -> str:
    """The compact JWS of ``$activate``'s ``ePrescription`` parameter (a Binary,
    application/jose), as in the E-Rezept API."""
    if parameters.get("resourceType") != "Parameters":
        raise InvalidInput("$activate takes a Parameters resource", expression="resourceType")
    entries = parameters.get("parameter") or []
    if not isinstance(entries, list) or not all(isinstance(p, dict) for p in entries):
        raise InvalidInput(
            "Parameters.parameter is a list of parameters", expression="Parameters.parameter"
        )
    found = [p for p in entries if p.get("name") == "ePrescription"]
    if len(found) != 1:
        raise InvalidInput(
            "$activate takes one 'ePrescription' parameter", expression="Parameters.parameter"
        )
    binary = found[0].get("resource") or {}
    if (
        not isinstance(binary, dict)
        or binary.get("resourceType") != "Binary"
        or binary.get("contentType") != "application/jose"
    ):
        raise InvalidInput(
            "the ePrescription is a Binary of contentType application/jose",
            expression="Parameters.parameter.resource",
        )
    try:
        return base64.b64decode(str(binary.get("data", "")), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "the ePrescription's data is not the base64 of a compact JWS",
            expression="Binary.data",
        ) from None


class PrescriptionService:
    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        audit: AuditPort,
        signer: ReceiptSigner,
        *,
        clock: Callable[[], datetime],
        catalogue: MedicationCatalogue,
        patient_system: str,
        practitioner_system: str,
        attempts: AttemptLimit | None = None,
        default_validity: timedelta = timedelta(days=28),
        counting_units: Callable[[], UnitOfWork] | None = None,
        printer: Printer | None = None,
        codes: CodeBox | None = None,
    ) -> None:
        self.printer = printer
        # Without a box (the unit tests), only the access code's hash is kept.
        self.codes = codes
        self.units = units
        # Wrong codes are counted in a transaction of their own, which is no change the
        # request makes: a unit of work that does not record the request on commit.
        self.counting_units = counting_units or units
        self.audit = audit
        self.signer = signer
        self.clock = clock
        self.catalogue = catalogue
        self.patient_system = patient_system
        self.practitioner_system = practitioner_system
        self.attempts = attempts or AttemptLimit()
        self.default_validity = default_validity

    # --- reading ----------------------------------------------------------------------------

    def task(self, uow: UnitOfWork, task_id: str) -> StoredTask:
        found = uow.prescriptions.get(task_id)
        if found is None:
            raise NotFound(f"Task/{task_id} is not known")
        return found

    def get(self, task_id: str) -> StoredTask:
        with self.units() as uow:
            return self.task(uow, task_id)

    def read(self, prescription: str) -> Prescription:
        return read_prescription(
            prescription_bundle(prescription),
            self.catalogue,
            patient_system=self.patient_system,
            practitioner_system=self.practitioner_system,
        )

    def patient_named(self, uow: UnitOfWork, jws: str) -> str:
        """The CareVault patient a signed prescription names (by their national identifier)."""
        system, value = self.read(jws).patient_identifier
        found = uow.directory.patients_by_identifier(system, value)
        if len(found) != 1:
            raise NotFound("the prescription's patient is not in the patient index")
        return found[0]

    def of_patient(
        self, patient_id: str, offset: int, count: int, since: datetime | None = None
    ) -> tuple[int, list[StoredTask]]:
        with self.units() as uow:
            return uow.prescriptions.of_patient(patient_id, since, offset, count)

    def medication_list(
        self,
        *,
        patient_id: str | None = None,
        prescriber_id: str | None = None,
        pharmacy_id: str | None = None,
        dispensed: bool = False,
        offset: int = 0,
        count: int = 20,
    ) -> tuple[int, list[StoredTask]]:
        """The prescriptions (or, with ``dispensed``, the dispenses) of the last
        `MEDICATION_LIST_PERIOD` of a patient, a prescriber or a pharmacy, newest first. Who
        may see which was decided by the engine before (and, on a record, after: the caller
        filters each with `decide`)."""
        since = self.clock() - MEDICATION_LIST_PERIOD
        with self.units() as uow:
            return uow.prescriptions.find(
                patient_id=patient_id,
                prescriber_id=prescriber_id,
                pharmacy_id=pharmacy_id,
                dispensed=dispensed,
                since=since,
                offset=offset,
                count=count,
            )

    @staticmethod
    def signed_bundle(task: StoredTask) -> dict[str, Any]:
        """The prescription Bundle a stored task holds (checked when it was activated)."""
        if task.signed_prescription is None:
            raise NotFound(f"Task/{task.id} holds no prescription yet")
        return prescription_bundle(task.signed_prescription)

    def access_code(self, task: StoredTask) -> str | None:
        """The access code of a ``ready`` task, unsealed for its patient; None once it is not
        ready (a pharmacy holds it, or it is over), or if it was not kept sealed. Whom it may
        be shown to is decided before (the engine: the patient and their representatives)."""
        if self.codes is None or task.access_code_sealed is None:
            return None
        if task.status != TaskStatus.READY or expired(task.expires_at, self.clock()):
            return None
        try:
            code = self.codes.open(task.access_code_sealed, task.id)
        except CodeUnavailable:
            return None
        # What opens must still be the code the hash checks: a row's sealed code is never
        # shown for a code a pharmacy would be refused with.
        return code if code_matches(code, task.access_code_hash) else None

    def patient_prescriptions(
        self, patient_id: str, lang: str = "en", count: int = 50
    ) -> list[PatientPrescription]:
        """The patient's prescriptions, newest first, as the portal shows them to the patient
        (or their representative, once the engine has said so), the dosage in ``lang``."""
        now = self.clock()
        with self.units() as uow:
            _total, tasks = uow.prescriptions.of_patient(patient_id, None, 0, count)
        shown = []
        for task in tasks:
            if task.signed_prescription is None:
                continue
            content = self.read(task.signed_prescription)
            status = str(task.status)
            if status == TaskStatus.READY and expired(task.expires_at, now):
                status = "expired"
            completed = task.status == TaskStatus.COMPLETED
            shown.append(
                PatientPrescription(
                    task_id=task.id,
                    number=task.number,
                    status=status,
                    medication=content.medication,
                    dosage=dosage_text(prescription_bundle(task.signed_prescription), lang),
                    quantity=content.quantity,
                    prescriber=content.prescriber,
                    organization=content.organization,
                    created_at=task.created_at,
                    valid_from=task.valid_from,
                    valid_until=task.expires_at,
                    dispensed_at=task.updated_at if completed else None,
                    dispensed=_dispensed(task.dispense) if completed else "",
                    access_code=self.access_code(task),
                )
            )
        return shown

    # --- the prescriber -----------------------------------------------------------------------

    def create(self, actor: Actor, repeat_of: str | None = None) -> Created:
        """A new ``draft`` task with its number and access code: kept hashed to check it, and
        sealed for the patient, who may be shown it again (`patient_prescriptions`)."""
        now = self.clock()
        code = new_code()
        task_id = uuid.uuid4().hex
        with self.units() as uow:
            if repeat_of is not None:
                first = self.task(uow, repeat_of)
                if first.prescriber_id != actor.subject.id:
                    raise NotPermitted(
                        "a repeat prescription follows one of the prescriber's own",
                        issue_code="forbidden",
                    )
            task = StoredTask(
                id=task_id,
                number=prescription_number(),
                patient_id=None,
                prescriber_id=actor.subject.id,
                status=TaskStatus.DRAFT,
                version=1,
                access_code_hash=code_hash(code),
                secret_hash=None,
                created_at=now,
                updated_at=now,
                repeat_of=repeat_of,
                access_code_sealed=None if self.codes is None else self.codes.seal(code, task_id),
            )
            uow.prescriptions.add(task)
            uow.commit()
        return Created(task, code)

    def activate(self, actor: Actor, task_id: str, jws: str) -> StoredTask:
        """Check the prescriber's signature over the Bundle and what it says, then ``ready``."""
        now = self.clock()
        detached, payload = split_prescription(jws)
        content = self.read(jws)
        with self.units() as uow:
            task = self.task(uow, task_id)
            self._own(actor, task)
            next_status(Step.ACTIVATE, task.status)
            signer = verify_detached(uow, detached.encode("ascii"), payload, now)
            if signer.kind != "practitioner" or signer.practitioner_id != actor.subject.id:
                raise InvalidSignature(
                    "the prescription is signed with the prescriber's own card: this signature "
                    "is not theirs"
                )
            _bound_to(task, content)
            _system, value = content.practitioner_identifier
            named = uow.directory.practitioner_ids_by_identifier([value]).get(value)
            if named != actor.subject.id:
                raise InvalidInput(
                    "the prescription's Practitioner is not the prescriber who signs it",
                    expression="Practitioner.identifier",
                )
            patients = uow.directory.patients_by_identifier(*content.patient_identifier)
            if len(patients) != 1:
                raise NotFound("the prescription's patient is not in the patient index")
            if task.repeat_of is not None:
                self._check_repeat(uow, task.repeat_of, patients[0])
            until = validity_end(
                content.validity_start, content.validity_end, now, default=self.default_validity
            )
            start = content.validity_start
            if not uow.prescriptions.activate(
                task_id, patients[0], jws.strip(), until, now, valid_from=start
            ):
                raise TaskConflict(Step.ACTIVATE, self.task(uow, task_id).status)
            self._notify(
                uow,
                patients[0],
                "prescription-activated",
                (
                    f"A prescription of {content.medication} is ready for you "
                    f"(number {task.number}), valid until {until.date().isoformat()}.",
                    f"Une ordonnance de {content.medication} est prête pour vous "
                    f"(numéro {task.number}), valable jusqu'au {until.date().isoformat()}.",
                ),
                actor,
                now,
            )
            uow.commit()
        return self.task_after(task_id)

    def _check_repeat(self, uow: UnitOfWork, first_id: str, patient_id: str) -> None:
        """A repeat prescription is for the patient of the one it repeats, once that one is
        activated; its validity window is its own (its Bundle's ``validityPeriod``)."""
        first = self.task(uow, first_id)
        if first.patient_id is None:
            raise BusinessRuleViolation(
                "a repeat prescription follows an activated one: activate the first before",
                expression="Task.basedOn",
            )
        if first.patient_id != patient_id:
            raise BusinessRuleViolation(
                "a repeat prescription is for the patient of the prescription it repeats",
                expression="Patient.identifier",
            )

    def abort(self, actor: Actor, task_id: str, access_code: str | None) -> StoredTask:
        """Cancel a prescription no pharmacy holds: its prescriber (with the access code) or
        its patient (whose own record it is, decided by the engine at the door)."""
        now = self.clock()
        with self.units() as uow:
            task = self.task(uow, task_id)
            if access_code is not None and not code_matches(access_code, task.access_code_hash):
                raise WrongCode("the access code is not this prescription's")
            if task.status == TaskStatus.IN_PROGRESS:
                raise TaskConflict(Step.ABORT, task.status)
            next_status(Step.ABORT, task.status)
            if not uow.prescriptions.cancel(task_id, allowed_from(Step.ABORT), now):
                raise TaskConflict(Step.ABORT, self.task(uow, task_id).status)
            if task.patient_id is not None:
                self._notify(
                    uow,
                    task.patient_id,
                    "prescription-cancelled",
                    (
                        f"Prescription {task.number} was cancelled.",
                        f"L'ordonnance {task.number} a été annulée.",
                    ),
                    actor,
                    now,
                )
            uow.commit()
        return self.task_after(task_id)

    def printout(self, actor: Actor, task_id: str, access_code: str) -> bytes:
        """The printed prescription (PDF) of a ready task, for its prescriber, who gives the
        access code again (it is sealed for the patient alone). Its 2D code holds the task
        reference and code (gematik's ``{"urls": [...]}``); the platform signs what the page
        says."""
        if self.printer is None:
            raise NotFound("printing is not configured")
        task = self.get(task_id)
        self._own(actor, task)
        if not code_matches(access_code, task.access_code_hash):
            raise WrongCode("the access code is not this prescription's")
        return self._print(task, access_code)

    def patient_printout(self, patient_id: str, task_id: str) -> bytes:
        """The printed prescription of a ready task, for its patient (the portal, once the
        engine has let the person see what is the patient's own): the access code is the
        sealed one. Another patient's task is not known here."""
        if self.printer is None:
            raise NotFound("printing is not configured")
        with self.units() as uow:
            task = uow.prescriptions.get(task_id)
        if task is None or task.patient_id is None or task.patient_id != patient_id:
            raise NotFound("no prescription of this record has this id")
        if task.status != TaskStatus.READY:
            raise TaskConflict(Step.ACCEPT, task.status)
        code = self.access_code(task)
        if code is None:
            raise NotFound(
                "this prescription's access code was not kept: its prescriber prints it again"
            )
        return self._print(task, code)

    def _print(self, task: StoredTask, access_code: str) -> bytes:
        assert self.printer is not None
        if task.status != TaskStatus.READY or task.signed_prescription is None:
            raise TaskConflict(Step.ACCEPT, task.status)
        content = self.read(task.signed_prescription)
        assert task.expires_at is not None
        access = json.dumps(
            {"urls": [f"Task/{task.id}/$accept?ac={access_code}"]}, separators=(",", ":")
        )
        facts = {
            "prescription": task.number,
            "task": task.id,
            "patient": content.patient,
            "medication": content.medication,
            "dosage": content.dosage,
            "quantity": content.quantity,
            "valid-until": task.expires_at.date().isoformat(),
            "prescriber": content.prescriber,
            "code-sha256": _sha256(access.encode()),
        }
        payload = json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()
        return self.printer(
            Printout(
                number=task.number,
                medication=content.medication,
                dosage=content.dosage,
                quantity=content.quantity,
                valid_until=facts["valid-until"],
                prescriber=content.prescriber,
                organization=content.organization,
                patient=content.patient,
                access_payload=access,
                signature=sign_compact(self.signer, payload, PRINTOUT_TYPE),
            )
        )

    # --- the pharmacy -------------------------------------------------------------------------

    def _check_attempts(self, who: str, now: datetime) -> None:
        with self.counting_units() as uow:
            recent = uow.prescriptions.failures_since(who, now - self.attempts.window)
        if self.attempts.blocked(recent):
            raise RateLimited(
                "too many wrong codes or unknown prescriptions: try again later",
                retry_after=int(self.attempts.window.total_seconds()),
            )

    def _failed(self, actor: Actor, task_id: str, now: datetime, why: str) -> None:
        """Count a wrong code (or an unknown number), in its own transaction, and alert the
        security officer when the count reaches the limit."""
        with self.counting_units() as uow:
            uow.prescriptions.note_failure(actor.who, now)
            recent = uow.prescriptions.failures_since(actor.who, now - self.attempts.window)
            if self.attempts.alerts(recent):
                self.audit.append_with(
                    uow.audit,
                    [
                        AuditRecord(
                            stream="clinical",
                            recorded=rfc3339_ms(now),
                            kind="alert",
                            action=ACTION_UPDATE,
                            interaction="prescription-attempts",
                            outcome="4",
                            agent=actor.agent(),
                            entity_type="Task",
                            entity_id=task_id,
                            rule="prescription attempts",
                            detail={
                                "failures": str(recent),
                                "window-minutes": str(
                                    int(self.attempts.window.total_seconds() // 60)
                                ),
                                "last": why,
                            },
                        )
                    ],
                )
            uow.commit()

    def accept(self, actor: Actor, task_id: str, access_code: str) -> Accepted:
        """Take a ``ready`` prescription: at most one pharmacy ever does (the database's
        conditional UPDATE); the others get `TaskConflict` with the status."""
        now = self.clock()
        self._check_attempts(actor.who, now)
        with self.units() as uow:
            task = uow.prescriptions.get(task_id)
        if task is None:
            self._failed(actor, task_id, now, "unknown prescription")
            raise WrongCode("no prescription has this id and access code")
        if not code_matches(access_code, task.access_code_hash):
            self._failed(actor, task_id, now, "wrong access code")
            raise WrongCode("no prescription has this id and access code")
        if task.status == TaskStatus.READY and expired(task.expires_at, now):
            raise TaskConflict(Step.ACCEPT, TaskStatus.CANCELLED) from None
        if task.status == TaskStatus.READY and not_yet_valid(task.valid_from, now):
            assert task.valid_from is not None
            raise Conflict(
                "the prescription cannot be accepted yet: it may be dispensed from "
                f"{task.valid_from.date().isoformat()} (ready)"
            )
        next_status(Step.ACCEPT, task.status)
        secret = new_code()
        pharmacy = sorted(actor.subject.organization_ids)
        organization = (actor.organization or "").removeprefix("Organization/") or (
            pharmacy[0] if pharmacy else None
        )
        with self.units() as uow:
            if not uow.prescriptions.accept(
                task_id, code_hash(secret), actor.subject.id, organization, now
            ):
                current = self.task(uow, task_id)
                if current.status == TaskStatus.READY:  # ready, so it expired meanwhile
                    raise TaskConflict(Step.ACCEPT, TaskStatus.CANCELLED)
                raise TaskConflict(Step.ACCEPT, current.status)
            uow.prescriptions.touch(task.patient_id)
            uow.commit()
        accepted = self.task_after(task_id)
        assert accepted.signed_prescription is not None
        return Accepted(accepted, secret, accepted.signed_prescription)

    def _holding(self, actor: Actor, task: StoredTask, secret: str, step: Step) -> None:
        if task.status != TaskStatus.IN_PROGRESS:
            raise TaskConflict(step, task.status)
        if task.pharmacist_id != actor.subject.id or not code_matches(secret, task.secret_hash):
            raise WrongCode("the secret is not the one this prescription was accepted with")

    def _held(
        self, actor: Actor, task_id: str, secret: str, step: Step, now: datetime
    ) -> StoredTask:
        """The task this pharmacist holds with this secret; a wrong one is counted (outside
        any other transaction: SQLite has one writer at a time)."""
        task = self.get(task_id)
        try:
            self._holding(actor, task, secret, step)
        except WrongCode:
            self._failed(actor, task_id, now, "wrong secret")
            raise
        return task

    def reject(self, actor: Actor, task_id: str, secret: str) -> StoredTask:
        """Give the prescription back (``ready``): another pharmacy may take it."""
        now = self.clock()
        self._check_attempts(actor.who, now)
        task = self._held(actor, task_id, secret, Step.REJECT, now)
        with self.units() as uow:
            if not uow.prescriptions.reject(task_id, code_hash(secret), now):
                raise TaskConflict(Step.REJECT, self.task(uow, task_id).status)
            uow.prescriptions.touch(task.patient_id)
            uow.commit()
        return self.task_after(task_id)

    def abort_dispensing(self, actor: Actor, task_id: str, secret: str) -> StoredTask:
        """The pharmacy that holds the prescription cancels it."""
        now = self.clock()
        self._check_attempts(actor.who, now)
        task = self._held(actor, task_id, secret, Step.ABORT_DISPENSING, now)
        with self.units() as uow:
            if not uow.prescriptions.cancel(
                task_id, allowed_from(Step.ABORT_DISPENSING), now, secret_hash=code_hash(secret)
            ):
                raise TaskConflict(Step.ABORT_DISPENSING, self.task(uow, task_id).status)
            assert task.patient_id is not None
            self._notify(
                uow,
                task.patient_id,
                "prescription-cancelled",
                (
                    f"Prescription {task.number} was cancelled by the pharmacy.",
                    f"L'ordonnance {task.number} a été annulée par la pharmacie.",
                ),
                actor,
                now,
            )
            uow.commit()
        return self.task_after(task_id)

    def close(
        self, actor: Actor, task_id: str, secret: str, dispense: dict[str, Any], dispense_text: str
    ) -> Closed:
        """Complete the prescription with the ``MedicationDispense``; the receipt the platform
        signs carries the inclusion proof of this change's audit entry."""
        now = self.clock()
        self._check_attempts(actor.who, now)
        task = self._held(actor, task_id, secret, Step.CLOSE, now)
        with self.units() as uow:
            assert task.patient_id is not None
            assert task.signed_prescription is not None
            dispense_bytes = json.dumps(dispense, sort_keys=True, separators=(",", ":")).encode()
            # The audit entry of the dispense, whose inclusion proof the receipt carries.
            record = AuditRecord(
                stream="clinical",
                recorded=rfc3339_ms(now),
                kind="prescription",
                action=ACTION_UPDATE,
                interaction="dispense",
                outcome="0",
                agent=actor.agent(),
                patient=task.patient_id,
                entity_type="Task",
                entity_id=task_id,
                rule="dispensing",
                detail={
                    "prescription": task.number,
                    "prescription-sha256": _sha256(task.signed_prescription.encode("ascii")),
                    "dispense-sha256": _sha256(dispense_bytes),
                },
            )
            (leaf_index,) = self.audit.append_with(uow.audit, [record])
            if not uow.prescriptions.close(task_id, code_hash(secret), dispense_text, "", now):
                raise TaskConflict(Step.CLOSE, self.task(uow, task_id).status)
            self._notify(
                uow,
                task.patient_id,
                "prescription-dispensed",
                (
                    f"Prescription {task.number} was dispensed.",
                    f"L'ordonnance {task.number} a été délivrée.",
                ),
                actor,
                now,
            )
            uow.commit()
        receipt = self._receipt(task, record, leaf_index, now)
        with self.counting_units() as uow:
            uow.prescriptions.set_receipt(task_id, receipt)
            uow.commit()
        return Closed(self.task_after(task_id), receipt)

    def _receipt(
        self, task: StoredTask, record: AuditRecord, leaf_index: int, now: datetime
    ) -> str:
        head = self.audit.sign_tree_head("clinical")
        proof = self.audit.inclusion_proof("clinical", leaf_index, head.tree_size)
        ((_index, leaf),) = self.audit.entries("clinical", leaf_index, leaf_index + 1)
        claims = {
            "task": task.id,
            "prescription": task.number,
            "completed": rfc3339_ms(now),
            "prescription-sha256": record.detail["prescription-sha256"],
            "dispense-sha256": record.detail["dispense-sha256"],
            "audit": {
                "stream": "clinical",
                "leaf-index": leaf_index,
                "leaf": base64.b64encode(leaf).decode(),
                "tree-size": head.tree_size,
                "root-hash": base64.b64encode(head.root_hash).decode(),
                "timestamp-ms": head.timestamp_ms,
                "tree-head-signature": base64.b64encode(head.signature).decode(),
                "inclusion-proof": [base64.b64encode(h).decode() for h in proof],
            },
        }
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
        return sign_compact(self.signer, payload, RECEIPT_TYPE)

    # --- helpers ------------------------------------------------------------------------------

    def task_after(self, task_id: str) -> StoredTask:
        with self.units() as uow:
            return self.task(uow, task_id)

    @staticmethod
    def _own(actor: Actor, task: StoredTask) -> None:
        if task.prescriber_id != actor.subject.id:
            raise NotPermitted(
                "only the prescriber who created this prescription may change it",
                issue_code="forbidden",
            )

    @staticmethod
    def _notify(
        uow: UnitOfWork,
        patient_id: str,
        kind: str,
        words: tuple[str, str],
        actor: Actor,
        now: datetime,
    ) -> None:
        payload = {"en": words[0], "fr": words[1], "sender": actor.who}
        uow.records.notify(patient_id, kind, payload, now)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bound_to(task: StoredTask, content: Prescription) -> None:
    """A signed prescription is activated on the task it was signed for: its Bundle's
    identifier (PrescriptionID) is the task's number, as in the E-Rezept workflow, so that a
    validly signed prescription cannot be replayed onto another task."""
    if content.number is None:
        raise InvalidInput(
            "the prescription Bundle's identifier must be this task's prescription number "
            f"(system {PRESCRIPTION_ID_SYSTEM}): the prescriber signs it for one task",
            expression="Bundle.identifier",
        )
    if content.number != task.number:
        raise InvalidInput(
            f"the prescription was signed for prescription number {content.number}, not for "
            f"this task's ({task.number}): a signed prescription is activated on its own task",
            expression="Bundle.identifier",
        )


def _dispensed(dispense: str | None) -> str:
    """What a pharmacy's ``MedicationDispense`` says it handed over, in words (its quantity
    and medication text), or nothing."""
    if not dispense:
        return ""
    try:
        resource = json.loads(dispense)
    except ValueError:
        return ""
    quantity = resource.get("quantity") or {}
    medication = (resource.get("medicationCodeableConcept") or {}).get("text") or ""
    amount = ""
    if "value" in quantity:
        amount = f"{quantity['value']} {quantity.get('unit') or quantity.get('code') or ''}"
    return " ".join(part for part in (amount.strip(), str(medication)) if part)


__all__ = [
    "Accepted",
    "Closed",
    "CodeBox",
    "Created",
    "PatientPrescription",
    "PrescriptionService",
    "WrongCode",
    "signed_from_parameters",
    "well_formed_code",
]
