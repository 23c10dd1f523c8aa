"""The memo keeps at most its limit, dropping the oldest first."""

from __future__ import annotations

from carevault.services.bounded_memo import BoundedMemo


def test_the_oldest_goes_first_once_the_limit_is_reached() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    memo.add("a", 1)
    memo.add("b", 2)
    memo.add("a", 10)  # replacing a kept key drops nothing
    assert (memo.get("a"), memo.get("b")) == (10, 2)
    memo.add("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (None, 2, 3)
