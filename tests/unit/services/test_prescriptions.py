"""The e-prescription service on a unit of work in memory (no database, no PKI): who may take
each step of a task, the codes kept as hashes, one pharmacy at a time, the wrong codes counted
and alerted once, the patient told, the receipt over the audit entry of the dispense.

What needs the platform CA (the prescriber's signature at ``$activate``) is tested wired up, in
tests/integration/test_prescriptions.py; here ``$activate`` is refused before the signature is
looked at, and ready tasks are planted as the real store holds them."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carevault.domain.audit import AuditRecord
from carevault.domain.authorization import Subject, SubjectKind
from carevault.domain.errors import InvalidInput, NotFound, NotPermitted, RateLimited
from carevault.domain.prescriptions import (
    AttemptLimit,
    MedicationCatalogue,
    TaskConflict,
    code_hash,
    valid_number,
)
from carevault.domain.tree_head import TreeHead
from carevault.services.prescriptions import PrescriptionService, WrongCode, signed_from_parameters
from carevault.services.record_policy import Actor
from support.fake_uow import FakeAuditStore, FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PATIENTS = "https://carevault.lu/fhir/sid/matricule"
HPD = "https://carevault.lu/fhir/sid/hpd"
PRODUCTS = "https://carevault.lu/fhir/sid/medicinal-product"
CATALOGUE = MedicationCatalogue.from_mapping({
    "version": "test", "product_system": PRODUCTS,
    "products": [{"code": "1000003", "atc": "C09AA05", "display": "Ramipril 5 mg"}]})


def actor(kind: SubjectKind, id: str, profession: str | None = None,
          organization: str | None = None) -> Actor:
    subject = Subject(kind, id, profession=profession,
                      organization_ids=frozenset({organization} if organization else set()))
    prefix = "Practitioner" if kind is SubjectKind.PRACTITIONER else "Patient"
    return Actor(subject, f"{prefix}/{id}",
                 organization=f"Organization/{organization}" if organization else None)


DR = actor(SubjectKind.PRACTITIONER, "dr-1", "physician")
DR2 = actor(SubjectKind.PRACTITIONER, "dr-2", "physician")
PH = actor(SubjectKind.PRACTITIONER, "ph-1", "pharmacist", "pharmacy-1")
PH2 = actor(SubjectKind.PRACTITIONER, "ph-2", "pharmacist", "pharmacy-2")


class Signer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def public_key_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)


class Audit:
    """The audit log's port: appends to the unit of work's store (committed with it)."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow

    def append_with(self, store: FakeAuditStore, records: Sequence[AuditRecord]) -> list[int]:
        first = len(store.records)
        store.records.extend(records)
        return list(range(first, first + len(records)))

    def sign_tree_head(self, stream: str) -> TreeHead:
        return TreeHead(len(self.uow.audit.records), b"\0" * 32, 1, b"signature")

    def inclusion_proof(self, stream: str, leaf_index: int, tree_size: int) -> list[bytes]:
        return [b"\1" * 32]

    def entries(self, stream: str, start: int, end: int) -> list[tuple[int, bytes]]:
        return [(i, f"leaf {i}".encode()) for i in range(start, end)]


@pytest.fixture
def uow() -> FakeUnitOfWork:
    unit = FakeUnitOfWork()
    unit.directory.add_patient("pat-1", [{"system": PATIENTS, "value": "1970010110101"}])
    unit.directory.add_practitioner("dr-1", "HP-1")
    return unit


def service(uow: FakeUnitOfWork, clock: list[datetime] | None = None) -> PrescriptionService:
    moments = clock or [NOW]
    return PrescriptionService(lambda: uow, Audit(uow), Signer(), clock=lambda: moments[0],
                               catalogue=CATALOGUE, patient_system=PATIENTS,
                               practitioner_system=HPD, attempts=AttemptLimit(3))


def ready(uow: FakeUnitOfWork, service: PrescriptionService, *,
          until: datetime = NOW + timedelta(days=28)) -> tuple[str, str]:
    """A task created through the service, then activated as the real store does it."""
    created = service.create(DR)
    with uow:
        assert uow.prescriptions.activate(created.task.id, "pat-1", "h.p.s", until, NOW)
        uow.commit()
    return created.task.id, created.access_code


def test_a_new_task_is_a_draft_whose_code_is_kept_only_as_its_hash(uow: FakeUnitOfWork) -> None:
    created = service(uow).create(DR)
    stored = uow.prescriptions.get(created.task.id)
    assert stored is not None and uow.commits == 1
    assert (stored.status, stored.patient_id, stored.prescriber_id) == ("draft", None, "dr-1")
    assert valid_number(stored.number)
    assert stored.access_code_hash == code_hash(created.access_code)
    assert created.access_code not in repr(uow.prescriptions.tasks)
    assert len(created.access_code) == 64  # 256 bits


def test_a_repeat_follows_a_prescription_of_the_same_prescriber(uow: FakeUnitOfWork) -> None:
    svc = service(uow)
    first = svc.create(DR)
    repeat = svc.create(DR, repeat_of=first.task.id)
    assert uow.prescriptions.get(repeat.task.id).repeat_of == first.task.id  # type: ignore[union-attr]
    with pytest.raises(NotPermitted):
        svc.create(DR2, repeat_of=first.task.id)
    with pytest.raises(NotFound):
        svc.create(DR, repeat_of="nobody")
    assert len(uow.prescriptions.tasks) == 2


def test_only_its_prescriber_activates_a_draft_and_only_once(uow: FakeUnitOfWork) -> None:
    svc = service(uow)
    task_id, _code = ready(uow, svc)
    bundle = {"resourceType": "Bundle", "type": "document", "entry": []}
    jws = "e30." + base64.urlsafe_b64encode(json.dumps(bundle).encode()).decode().rstrip("=")
    with pytest.raises(Exception, match="exactly one MedicationRequest"):
        svc.activate(DR, task_id, jws + ".c2ln")  # what it says is read first
    draft = svc.create(DR)
    good = _bundle()
    with pytest.raises(NotPermitted, match="only the prescriber"):
        svc.activate(DR2, draft.task.id, good)
    with pytest.raises(TaskConflict, match="waiting for a pharmacy"):
        svc.activate(DR, task_id, good)
    assert uow.prescriptions.get(draft.task.id).status == "draft"  # type: ignore[union-attr]


def test_one_pharmacy_takes_it_the_others_learn_its_status(uow: FakeUnitOfWork) -> None:
    svc = service(uow)
    task_id, code = ready(uow, svc)
    accepted = svc.accept(PH, task_id, code)
    assert accepted.task.status == "in-progress"
    assert (accepted.task.pharmacist_id, accepted.task.pharmacy_id) == ("ph-1", "pharmacy-1")
    assert accepted.task.secret_hash == code_hash(accepted.secret)
    with pytest.raises(TaskConflict, match="a pharmacy has taken it") as refused:
        svc.accept(PH2, task_id, code)
    assert refused.value.status == "in-progress"
    # Another pharmacist cannot use the secret; the holder gives it back, another takes it.
    with pytest.raises(WrongCode):
        svc.reject(PH2, task_id, accepted.secret)
    svc.reject(PH, task_id, accepted.secret)
    again = svc.accept(PH2, task_id, code)
    with pytest.raises(WrongCode):
        svc.reject(PH2, task_id, accepted.secret)  # the first secret is void
    assert again.task.pharmacy_id == "pharmacy-2"


def test_an_expired_prescription_is_never_accepted(uow: FakeUnitOfWork) -> None:
    clock = [NOW]
    svc = service(uow, clock)
    task_id, code = ready(uow, svc, until=NOW + timedelta(hours=1))
    clock[0] = NOW + timedelta(hours=1)
    with pytest.raises(TaskConflict, match="cancelled"):
        svc.accept(PH, task_id, code)
    assert uow.prescriptions.get(task_id).status == "ready"  # type: ignore[union-attr]


def test_wrong_codes_are_counted_limited_and_alerted_once(uow: FakeUnitOfWork) -> None:
    svc = service(uow)
    task_id, code = ready(uow, svc)
    for wrong in ("0" * 64, "not a code", "1" * 64):
        with pytest.raises(WrongCode, match="no prescription has this id and access code"):
            svc.accept(PH, task_id, wrong)
    with pytest.raises(RateLimited) as limited:
        svc.accept(PH, task_id, code)  # even the right code, until the window has passed
    assert limited.value.retry_after == 15 * 60
    alerts = [r for r in uow.audit.records if r.kind == "alert"]
    assert len(alerts) == 1
    assert (alerts[0].interaction, alerts[0].agent.who, alerts[0].detail["failures"]) == (
        "prescription-attempts", "Practitioner/ph-1", "3")
    # An unknown task answers in the same words, and is counted for the other pharmacist.
    with pytest.raises(WrongCode, match="no prescription has this id and access code"):
        svc.accept(PH2, "nobody", code)
    assert uow.prescriptions.failures_since("Practitioner/ph-2", NOW - timedelta(1)) == 1
    assert svc.accept(PH2, task_id, code).task.status == "in-progress"


def test_closing_gives_a_receipt_over_the_dispense_and_tells_the_patient(
    uow: FakeUnitOfWork,
) -> None:
    svc = service(uow)
    task_id, code = ready(uow, svc)
    accepted = svc.accept(PH, task_id, code)
    dispense = {"resourceType": "MedicationDispense", "status": "completed"}
    with pytest.raises(WrongCode):
        svc.close(PH, task_id, "2" * 64, dispense, json.dumps(dispense))
    closed = svc.close(PH, task_id, accepted.secret, dispense, json.dumps(dispense))
    assert closed.task.status == "completed"
    header, payload, signature = closed.receipt.split(".")
    signer = svc.signer
    assert isinstance(signer, Signer)
    signer.key.public_key().verify(_unb64(signature), f"{header}.{payload}".encode())
    claims = json.loads(_unb64(payload))
    [entry] = [r for r in uow.audit.records if r.kind == "prescription"]
    assert entry.patient == "pat-1" and entry.interaction == "dispense"
    assert claims["dispense-sha256"] == entry.detail["dispense-sha256"]
    assert claims["audit"]["leaf"] == base64.b64encode(b"leaf 0").decode()
    assert uow.prescriptions.get(task_id).receipt == closed.receipt  # type: ignore[union-attr]
    assert [n.kind for n in uow.records.notifications] == ["prescription-dispensed"]
    with pytest.raises(TaskConflict, match="dispensed"):
        svc.accept(PH2, task_id, code)
    with pytest.raises(TaskConflict):
        svc.abort(DR, task_id, code)


def test_cancelling_needs_the_code_and_a_task_no_pharmacy_holds(uow: FakeUnitOfWork) -> None:
    svc = service(uow)
    task_id, code = ready(uow, svc)
    with pytest.raises(WrongCode):
        svc.abort(DR, task_id, "3" * 64)
    accepted = svc.accept(PH, task_id, code)
    with pytest.raises(TaskConflict, match="a pharmacy has taken it"):
        svc.abort(DR, task_id, code)
    with pytest.raises(WrongCode):
        svc.abort_dispensing(PH2, task_id, accepted.secret)
    svc.abort_dispensing(PH, task_id, accepted.secret)
    assert uow.prescriptions.get(task_id).status == "cancelled"  # type: ignore[union-attr]
    assert [n.kind for n in uow.records.notifications] == ["prescription-cancelled"]
    with pytest.raises(TaskConflict, match="cancelled"):
        svc.accept(PH2, task_id, code)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bundle() -> str:
    """A well-formed prescription whose signature is never reached (refused before)."""
    urls = {k: f"urn:uuid:0000000{i}-0000-4000-8000-000000000000" for i, k in enumerate(
        ("MedicationRequest", "Medication", "Patient", "Practitioner", "Organization"))}
    resources: list[dict[str, Any]] = [
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationReference": {"reference": urls["Medication"]},
         "subject": {"reference": urls["Patient"]},
         "requester": {"reference": urls["Practitioner"]},
         "dosageInstruction": [{
             "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
             "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}],
         "dispenseRequest": {"quantity": {"value": 30, "unit": "tablet"}}},
        {"resourceType": "Medication", "code": {"coding": [
            {"system": PRODUCTS, "code": "1000003"},
            {"system": "http://www.whocc.no/atc", "code": "C09AA05"}]}},
        {"resourceType": "Patient", "identifier": [{"system": PATIENTS,
                                                     "value": "1970010110101"}]},
        {"resourceType": "Practitioner", "identifier": [{"system": HPD, "value": "HP-1"}]},
        {"resourceType": "Organization", "name": "Practice"},
    ]
    bundle = {"resourceType": "Bundle", "type": "document",
              "entry": [{"fullUrl": urls[r["resourceType"]], "resource": r} for r in resources]}
    payload = base64.urlsafe_b64encode(json.dumps(bundle).encode()).decode().rstrip("=")
    return f"e30.{payload}.c2ln"




class Box:
    """A code box that seals by reversing and binding the task id (the real one is AES-GCM,
    `tests/unit/adapters/test_sealed_codes.py`); what matters here is when it is opened."""

    def seal(self, code: str, task_id: str) -> bytes:
        return f"{task_id}:{code[::-1]}".encode()

    def open(self, sealed: bytes, task_id: str) -> str:
        from carevault.adapters.security.sealed_codes import CodeUnavailable
        bound, _, body = sealed.decode().partition(":")
        if bound != task_id:
            raise CodeUnavailable("another task's")
        return body[::-1]


def test_the_sealed_code_is_given_back_only_while_ready_and_only_as_the_hash_checks(
        uow: FakeUnitOfWork) -> None:
    from dataclasses import replace
    moments = [NOW]
    svc = PrescriptionService(lambda: uow, Audit(uow), Signer(), clock=lambda: moments[0],
                              catalogue=CATALOGUE, patient_system=PATIENTS,
                              practitioner_system=HPD, codes=Box())
    draft = svc.create(DR)
    assert svc.access_code(svc.get(draft.task.id)) is None  # a draft is no patient's yet
    task_id, code = ready(uow, svc)
    task = svc.get(task_id)
    assert task.access_code_sealed is not None and svc.access_code(task) == code
    # Another task's sealed code, or one that is not what the hash checks: nothing shown.
    assert svc.access_code(replace(task, access_code_sealed=Box().seal(code, "other"))) is None
    assert svc.access_code(replace(task, access_code_sealed=Box().seal("f" * 64, task_id))) is None
    assert svc.access_code(replace(task, access_code_sealed=None)) is None
    # Held by a pharmacy, over, or past its validity: nothing either.
    for status in ("in-progress", "completed", "cancelled"):
        assert svc.access_code(replace(task, status=status)) is None, status
    moments[0] = NOW + timedelta(days=29)
    assert svc.access_code(task) is None
    # Without a box (only the hash kept), never.
    assert service(uow).access_code(task) is None


@pytest.mark.parametrize("parameters", [
    {"resourceType": "Parameters", "parameter": "abc"},
    {"resourceType": "Parameters", "parameter": [7]},
    {"resourceType": "Parameters", "parameter": [{"name": "ePrescription", "resource": "x"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "ePrescription",
                                                  "resource": ["Binary"]}]},
])
def test_an_activation_whose_parameters_are_not_shaped_as_fhir_says_is_refused(
        parameters: dict[str, object]) -> None:
    """``$activate``'s body is read before the handler (the gate needs the prescription's
    patient): a list that is not one, a resource that is a string, were AttributeErrors (500)."""
    with pytest.raises(InvalidInput):
        signed_from_parameters(parameters)
