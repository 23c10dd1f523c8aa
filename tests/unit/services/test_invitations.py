"""Enrolment invitations, on a unit of work in memory: a code is stored hashed, opens the
enrolment of its own patient only with that patient's national number, expires, and works once;
every refusal says the same thing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.errors import Conflict, NotFound
from carevault.services.invitations import (
    DEFAULT_VALIDITY,
    InvitationRefused,
    invite,
    mark_used,
    open_account,
    redeemable,
)
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NATIONAL = "urn:oid:1.2.250.1.61"
REFUSAL = "the activation code and the national number do not match an invitation in force"


@pytest.fixture
def uow() -> FakeUnitOfWork:
    fake = FakeUnitOfWork()
    fake.directory.add_patient("pat-1", [{"system": NATIONAL, "value": "1985010112345"}])
    fake.directory.add_patient("pat-2", [{"system": NATIONAL, "value": "1990020254321"}])
    return fake


def test_a_code_is_shown_once_and_stored_only_hashed(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)
    assert uow.commits == 1
    [stored] = uow.invitations.rows.values()
    assert code.replace("-", "") not in stored.code_hash and len(code) == 24
    assert (stored.patient_id, stored.expires_at) == ("pat-1", NOW + DEFAULT_VALIDITY)


def test_no_invitation_for_someone_not_in_the_index(uow: FakeUnitOfWork) -> None:
    with pytest.raises(NotFound):
        invite(uow, "pat-nobody", NOW)
    assert uow.invitations.rows == {} and uow.commits == 0


def test_the_code_with_the_patients_own_number_opens_the_enrolment(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)
    # Typed as people type: lower case, spaces instead of dashes, spaces in the number.
    typed = code.lower().replace("-", " ")
    assert redeemable(uow, typed, "1985 0101 12345", NATIONAL, NOW) == "pat-1"


@pytest.mark.parametrize(
    "case", ["someone else's number", "no number", "wrong code", "expired", "used"]
)
def test_every_refusal_says_the_same(uow: FakeUnitOfWork, case: str) -> None:
    code = invite(uow, "pat-1", NOW)
    number, when = "1985010112345", NOW
    if case == "someone else's number":
        number = "1990020254321"
    elif case == "no number":
        number = ""
    elif case == "wrong code":
        code = code[:-1] + ("A" if code[-1] != "A" else "B")
    elif case == "expired":
        when = NOW + DEFAULT_VALIDITY
    else:
        mark_used(uow, code, NOW + timedelta(minutes=5))
    with pytest.raises(InvitationRefused) as refused:
        redeemable(uow, code, number, NATIONAL, when)
    assert refused.value.message == REFUSAL


def test_a_number_under_another_system_does_not_count(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)
    with pytest.raises(InvitationRefused):
        redeemable(uow, code, "1985010112345", "urn:oid:9.9.9", NOW)


def test_a_code_works_once(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)
    mark_used(uow, code, NOW + timedelta(minutes=1))
    assert uow.commits == 2
    [stored] = uow.invitations.rows.values()
    assert stored.used_at == NOW + timedelta(minutes=1)
    mark_used(uow, code, NOW + timedelta(minutes=2))  # a second use changes nothing
    assert next(iter(uow.invitations.rows.values())).used_at == NOW + timedelta(minutes=1)


def test_opening_an_account_enrols_the_codes_patient_then_spends_the_code(
    uow: FakeUnitOfWork,
) -> None:
    code = invite(uow, "pat-1", NOW)
    enrolled: list[str] = []
    result = open_account(lambda: uow, code, "1985010112345", NATIONAL, NOW,
                          lambda patient_id: enrolled.append(patient_id) or "account-1")
    assert (result, enrolled) == ("account-1", ["pat-1"])
    [stored] = uow.invitations.rows.values()
    assert stored.used_at == NOW
    with pytest.raises(InvitationRefused):  # spent: it opens nothing a second time
        open_account(lambda: uow, code, "1985010112345", NATIONAL, NOW, lambda _: "again")


def test_a_refused_code_enrols_no_one(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)
    enrolled: list[str] = []
    with pytest.raises(InvitationRefused, match=REFUSAL):
        open_account(lambda: uow, code, "1990020254321", NATIONAL, NOW, enrolled.append)
    assert enrolled == []


def test_a_refused_enrolment_leaves_the_code_usable(uow: FakeUnitOfWork) -> None:
    code = invite(uow, "pat-1", NOW)

    def login_taken(patient_id: str) -> str:
        raise Conflict("this login is taken")

    with pytest.raises(Conflict):
        open_account(lambda: uow, code, "1985010112345", NATIONAL, NOW, login_taken)
    [stored] = uow.invitations.rows.values()
    assert stored.used_at is None
    assert redeemable(uow, code, "1985010112345", NATIONAL, NOW) == "pat-1"
