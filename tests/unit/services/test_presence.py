"""Presence codes, on a unit of work in memory (no database): one patient, ten minutes, once;
kept only as a hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.services.presence import (
    PRESENCE_CODE_LIFETIME,
    code_hash,
    issue_presence_code,
    new_code,
    normalize,
)
from support.fake_uow import FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_a_code_is_read_whatever_its_case_spaces_and_dashes() -> None:
    assert normalize("abcde-fghjk") == "ABCDEFGHJK"
    assert normalize(" ab cde fghjk ") == "ABCDEFGHJK"
    assert normalize("O1L0I-22222") == "01101" + "22222"  # read aloud: O is 0, I and L are 1
    assert normalize("ABCDE-FGHJ") is None  # too short
    assert normalize("ABCDE-FGHJU") is None  # U is not in the alphabet
    assert normalize("A" * 40) is None


def test_only_the_hash_is_kept_and_it_is_good_for_its_patient_only() -> None:
    uow = FakeUnitOfWork()
    with uow:
        code = issue_presence_code(uow, "pat-1", "account:a", NOW)
    assert uow.commits == 1
    plain = normalize(code.code)
    assert plain is not None
    assert code.expires == NOW + PRESENCE_CODE_LIFETIME
    assert set(uow.presence_codes.codes) == {code_hash("pat-1", plain)}
    assert plain not in repr(uow.presence_codes.codes)
    assert uow.presence_codes.usable(code_hash("pat-1", plain), "pat-1", NOW)
    assert not uow.presence_codes.usable(code_hash("pat-2", plain), "pat-2", NOW)


def test_a_code_opens_once_and_not_after_ten_minutes() -> None:
    uow = FakeUnitOfWork()
    with uow:
        first = normalize(issue_presence_code(uow, "pat-1", "account:a", NOW).code)
        second = normalize(issue_presence_code(uow, "pat-1", "account:a", NOW).code)
    assert first and second and first != second
    late = NOW + PRESENCE_CODE_LIFETIME
    assert not uow.presence_codes.use(code_hash("pat-1", second), "pat-1", "dr", late)
    soon = NOW + timedelta(minutes=9)
    assert uow.presence_codes.use(code_hash("pat-1", first), "pat-1", "dr", soon)
    assert not uow.presence_codes.use(code_hash("pat-1", first), "pat-1", "dr", soon)


def test_new_code_leaves_the_commit_to_its_caller() -> None:
    uow = FakeUnitOfWork()
    with uow:
        new_code(uow, "pat-1", "account:a", NOW)
        assert len(uow.presence_codes.codes) == 1
    assert uow.commits == 0
    assert uow.presence_codes.codes == {}


@pytest.mark.parametrize("patient", ["pat-1", "pat-2"])
def test_the_hash_names_the_patient(patient: str) -> None:
    assert code_hash(patient, "ABCDEFGHJK") != code_hash("pat-3", "ABCDEFGHJK")
