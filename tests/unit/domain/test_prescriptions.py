"""The pure rules of e-prescriptions: the number's check digits, the status machine, the
codes and the validity window (issue #18)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.authorization import (
    ProfileMatrix,
    Subject,
    SubjectKind,
    decide_dispensing,
    decide_prescribing,
)
from carevault.domain.errors import BusinessRuleViolation
from carevault.domain.prescriptions import (
    AttemptLimit,
    MedicationCatalogue,
    Step,
    TaskConflict,
    TaskStatus,
    code_hash,
    code_matches,
    new_code,
    next_status,
    prescription_number,
    spoken,
    valid_number,
    validity_end,
)

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_a_number_is_read_aloud_and_carries_its_check() -> None:
    number = prescription_number("123456789012")
    assert number == "160.123.456.789.012." + number[-2:]
    assert valid_number(number)
    assert spoken(number).startswith("160 123 456 789 012, check ")
    digits = number.replace(".", "")
    # Every single wrong digit and every swap of two neighbours is caught.
    for i in range(len(digits)):
        for d in "0123456789":
            if d != digits[i]:
                wrong = digits[:i] + d + digits[i + 1:]
                assert not valid_number(".".join(
                    [wrong[j:j + 3] for j in range(0, 15, 3)] + [wrong[15:]]))
    for i in range(len(digits) - 1):
        if digits[i] != digits[i + 1]:
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
            assert not valid_number(".".join(
                [swapped[j:j + 3] for j in range(0, 15, 3)] + [swapped[15:]]))
    assert not valid_number("160.123")


def test_numbers_are_random() -> None:
    assert len({prescription_number() for _ in range(200)}) == 200


@pytest.mark.parametrize(("step", "start", "end"), [
    (Step.ACTIVATE, "draft", "ready"),
    (Step.ACCEPT, "ready", "in-progress"),
    (Step.REJECT, "in-progress", "ready"),
    (Step.CLOSE, "in-progress", "completed"),
    (Step.ABORT, "ready", "cancelled"),
    (Step.ABORT, "draft", "cancelled"),
    (Step.ABORT_DISPENSING, "in-progress", "cancelled"),
])
def test_the_steps_allowed(step: Step, start: str, end: str) -> None:
    assert next_status(step, start) is TaskStatus(end)


@pytest.mark.parametrize("status", ["completed", "cancelled", "in-progress", "draft"])
def test_only_a_ready_prescription_is_accepted(status: str) -> None:
    with pytest.raises(TaskConflict) as refused:
        next_status(Step.ACCEPT, status)
    assert refused.value.status is TaskStatus(status)
    assert f"({status})" in refused.value.message


def test_codes_are_256_bits_and_compared_by_hash() -> None:
    code = new_code()
    assert len(code) == 64 and int(code, 16) >= 0
    assert code_matches(code, code_hash(code))
    assert not code_matches(new_code(), code_hash(code))
    assert not code_matches("not hex", code_hash(code))
    assert not code_matches(code, None)


def test_validity() -> None:
    assert validity_end(None, None, NOW) == NOW + timedelta(days=28)
    assert validity_end(NOW, NOW + timedelta(days=90), NOW) == NOW + timedelta(days=90)
    with pytest.raises(BusinessRuleViolation):
        validity_end(None, NOW - timedelta(days=1), NOW)
    with pytest.raises(BusinessRuleViolation):
        validity_end(None, NOW + timedelta(days=400), NOW)
    with pytest.raises(BusinessRuleViolation):
        validity_end(NOW + timedelta(days=5), NOW + timedelta(days=2), NOW)


def test_attempts() -> None:
    limit = AttemptLimit(failures=3)
    assert not limit.blocked(2) and limit.blocked(3)
    assert limit.alerts(3) and not limit.alerts(4)


def test_the_catalogue_checks_the_atc_code() -> None:
    catalogue = MedicationCatalogue.from_mapping({
        "version": "t", "product_system": "urn:p",
        "products": [{"code": "1", "atc": "N02BE01", "display": "Paracetamol"}]})
    assert catalogue.product("1", "N02BE01").display == "Paracetamol"
    with pytest.raises(BusinessRuleViolation):
        catalogue.product("1", "J01CA04")
    with pytest.raises(BusinessRuleViolation):
        catalogue.product("2", "N02BE01")


MATRIX = ProfileMatrix.from_mapping({"version": "t", "profiles": {
    "physician": {"write": ["*"]}, "midwife": {"write": ["prescription"]},
    "pharmacist": {"write": ["medication"]}}})


@pytest.mark.parametrize(("kind", "profession", "permit", "reason"), [
    (SubjectKind.PRACTITIONER, "physician", True, "prescribing"),
    (SubjectKind.PRACTITIONER, "midwife", True, "prescribing"),
    (SubjectKind.PRACTITIONER, "pharmacist", False, "prescribing-profession"),
    (SubjectKind.PATIENT, None, False, "prescribing-not-professional"),
    (SubjectKind.OPERATOR, None, False, "operator"),
])
def test_who_prescribes(kind: SubjectKind, profession: str | None, permit: bool,
                        reason: str) -> None:
    decision = decide_prescribing(Subject(kind, "x", profession), MATRIX)
    assert decision.permit is permit and decision.reason == reason


def test_who_dispenses() -> None:
    pharmacists = frozenset({"pharmacist"})
    at_pharmacy = Subject(SubjectKind.PRACTITIONER, "p", "pharmacist",
                          organization_ids=frozenset({"o"}))
    assert decide_dispensing(at_pharmacy, pharmacists).permit
    alone = Subject(SubjectKind.PRACTITIONER, "p", "pharmacist")
    assert decide_dispensing(alone, pharmacists).reason == "dispensing-no-pharmacy"
    physician = Subject(SubjectKind.PRACTITIONER, "d", "physician",
                        organization_ids=frozenset({"o"}))
    assert decide_dispensing(physician, pharmacists).reason == "dispensing-profession"
    suspended = Subject(SubjectKind.PRACTITIONER, "p", "pharmacist",
                        organization_ids=frozenset({"o"}), licence_active=False)
    assert decide_dispensing(suspended, pharmacists).rule == "identity"
