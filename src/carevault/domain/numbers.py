"""Whole numbers written by a caller: a page number, a version, a log index, a body's length.

Two traps make each of these a question of its own rather than ``int(text)``: ``str.isdigit``
accepts characters that ``int`` refuses or reads otherwise ("²", Arabic-Indic digits), and a
number of thousands of digits costs time to convert and passes the 64-bit integers the
databases hold (an OverflowError on SQLite, an error on PostgreSQL: a 500 where the caller
gave a bad value). So a number is ASCII digits, bounded by its count of digits before it is
converted.
"""

from __future__ import annotations


def is_digits(text: str) -> bool:
    """One or more ASCII digits, nothing else."""
    return text.isascii() and text.isdigit()


def whole_number(text: str, max_digits: int) -> int | None:
    """``text`` as a number when it is 1 to ``max_digits`` ASCII digits; ``None`` otherwise."""
    if len(text) > max_digits or not is_digits(text):
        return None
    return int(text)


def exceeds(digits: str, limit: int) -> bool:
    """Whether ASCII ``digits`` (leading zeros allowed, as in a Content-Length) name a number
    above ``limit``; compared by length first, so thousands of digits are never converted."""
    significant = digits.lstrip("0")
    return len(significant) > len(str(limit)) or int(significant or "0") > limit


__all__ = ["exceeds", "is_digits", "whole_number"]
