"""Whole numbers a caller writes: ASCII digits only, bounded before they are converted."""

from __future__ import annotations

import pytest

from carevault.domain.numbers import exceeds, is_digits, whole_number


@pytest.mark.parametrize("text", ["0", "7", "0123", "9" * 40])
def test_ascii_digits_are_digits(text: str) -> None:
    assert is_digits(text)


@pytest.mark.parametrize("text", ["", "²", "١٢", "-1", "+1", "1 ", "1e3", "0x10", "1_000"])
def test_anything_else_is_not(text: str) -> None:
    assert not is_digits(text)


def test_a_whole_number_is_read_within_its_digits() -> None:
    assert whole_number("42", 2) == 42
    assert whole_number("007", 3) == 7
    assert whole_number("100", 2) is None  # three digits where two are allowed
    assert whole_number("9" * 20, 15) is None  # beyond 64-bit integers, never converted
    assert whole_number("²", 5) is None  # isdigit() alone says yes; int() refuses it
    assert whole_number("", 5) is None


@pytest.mark.parametrize(("digits", "limit", "over"), [
    ("10", 10, False), ("11", 10, True), ("0000000010", 10, False), ("0", 10, False),
    ("000", 10, False), ("9" * 5000, 10**9, True), ("1" + "0" * 9, 10**9, False),
    ("1" + "0" * 8 + "1", 10**9, True),
])
def test_a_declared_size_is_compared_with_its_limit(digits: str, limit: int, over: bool) -> None:
    assert exceeds(digits, limit) is over
