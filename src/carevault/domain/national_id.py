"""The Luxembourg national identification number (matricule) of a natural person.

The matricule is how Luxembourg administrations, the CNS and hospitals recognise the same person,
so a mistyped one silently splits or merges health records. We therefore refuse a number unless
both of its check digits hold, and we say which part is wrong so the person typing it can fix it.

Rule (13 digits, ``YYYYMMDD SSS L V``):

* digits 1-8: birth date ``YYYYMMDD``. When the month or the day of birth is unknown it is
  written ``00`` (and an unknown year is replaced by the year of registration, which looks like
  an ordinary year), so ``00`` is accepted there and ``birth_date`` is then ``None``;
* digits 9-11: a sequence number, unique among the people born on that date;
* digit 12: Luhn (mod 10) check digit computed over digits 1-11;
* digit 13: Verhoeff check digit computed over digits 1-11 as well. The Luhn digit is *not* part
  of the Verhoeff input; reading it the other way (Verhoeff over digits 1-12) rejects the
  published example 1893120105732, whose 13th digit is 2 only under the rule above.

Sources:

* European Commission, Directorate-General Taxation and Customs Union, "TIN Algorithms - Public -
  Functional Specification" (reference FS-TIN Algorithms-Public; v5.03 of 24/02/2017 and
  v5.06.01 of 27/03/2019), chapter 3 "MS Specific Algorithms", section 3.18 "Luxembourg". Its
  Luxembourg example 1893120105732 (as reproduced by implementations of that specification,
  e.g. loophp/tin ``LuxembourgSpec``, whose Verhoeff loop skips the 12th digit) is what settles
  the Verhoeff input.
* OECD, "Luxembourg - Information on Tax Identification Numbers", Section I (TIN structure):
  12th digit "de Luhn 10" over the first 11 digits, 13th digit "de Verhoeff" again over the
  first 11 digits.
* Règlement grand-ducal du 28 novembre 2013 fixant les modalités d'application de la loi du
  19 juin 2013 relative à l'identification des personnes physiques, Art. 1er: the 13-digit
  structure, and "lorsque le mois de naissance est inconnu, la composante b) indique deux zéros
  et lorsque le jour de naissance est inconnu, la composante c) indique deux zéros". This legal
  text is why ``00`` month/day is accepted even though validators derived from the EU
  specification check for a full calendar date: refusing it would lock out exactly the patients
  (e.g. refugees) whose birth date is not known.

Standard library only: this module is part of the pure domain.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date

from carevault.domain.errors import BusinessRuleViolation

__all__ = [
    "InvalidNationalId",
    "LuxembourgNationalId",
    "make_luxembourg_national_id",
    "parse_luxembourg_national_id",
]

_EXPRESSION = "Patient.identifier"
_LENGTH = 13
_ASCII_DIGITS = frozenset("0123456789")


class InvalidNationalId(BusinessRuleViolation):
    """A submitted Luxembourg matricule fails its format, date or check-digit rule.

    A business-rule violation rather than a syntax error: the request itself is well formed, it is
    the identifier's own rule that refuses it (HTTP 422).
    """


@dataclass(frozen=True)
class LuxembourgNationalId:
    """A matricule that passed every check, with the parts callers need kept apart.

    ``value`` is the canonical form (13 digits, no spaces) so equal numbers compare equal however
    they were typed. ``birth_date`` is ``None`` when the number records an unknown month or day.
    """

    value: str
    birth_date: date | None
    sequence: int


def parse_luxembourg_national_id(value: str) -> LuxembourgNationalId:
    """Validate a matricule as a person would type it and split it into its parts.

    Spaces are tolerated because the number is printed and read out in groups
    ("1893 1201 057 32"); anything else (dashes, dots, letters) is refused rather than guessed at.
    """
    compact = value.strip().replace(" ", "")
    if not compact or not set(compact) <= _ASCII_DIGITS:
        raise InvalidNationalId(
            "A Luxembourg national identification number must be 13 digits; only digits and "
            "spaces are allowed.",
            expression=_EXPRESSION,
        )
    if len(compact) != _LENGTH:
        raise InvalidNationalId(
            f"A Luxembourg national identification number must be 13 digits, not {len(compact)}.",
            expression=_EXPRESSION,
        )

    year, month, day = int(compact[0:4]), int(compact[4:6]), int(compact[6:8])
    if not _is_valid_birth_date(year, month, day):
        raise InvalidNationalId(
            "The first 8 digits of a Luxembourg national identification number must be a valid "
            "birth date (YYYYMMDD; 00 is allowed for an unknown month or day).",
            expression=_EXPRESSION,
        )

    payload = compact[:11]
    if int(compact[11]) != _luhn_check_digit(payload):
        raise InvalidNationalId(
            "Wrong Luhn check digit (12th digit) in the Luxembourg national identification "
            "number; the number was probably mistyped.",
            expression=_EXPRESSION,
        )
    if int(compact[12]) != _verhoeff_check_digit(payload):
        raise InvalidNationalId(
            "Wrong Verhoeff check digit (13th digit) in the Luxembourg national identification "
            "number; the number was probably mistyped.",
            expression=_EXPRESSION,
        )

    birth_date = date(year, month, day) if month and day else None
    return LuxembourgNationalId(value=compact, birth_date=birth_date, sequence=int(compact[8:11]))


def make_luxembourg_national_id(birth_date: date, sequence: int) -> str:
    """Build the matricule for a birth date and sequence number, check digits included.

    Used to generate synthetic people; it never invents a real allocation, it only makes the
    number internally consistent so the rest of the system treats it like a real one.
    """
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence must be between 0 and 999, got {sequence}")
    payload = f"{birth_date.year:04d}{birth_date.month:02d}{birth_date.day:02d}{sequence:03d}"
    return f"{payload}{_luhn_check_digit(payload)}{_verhoeff_check_digit(payload)}"


def _is_valid_birth_date(year: int, month: int, day: int) -> bool:
    """Accept a calendar date, or one whose month and/or day is ``00`` (unknown)."""
    if year == 0 or month > 12 or day > 31:
        return False
    if month == 0 or day == 0:
        return True
    return day <= calendar.monthrange(year, month)[1]


def _luhn_check_digit(payload: str) -> int:
    """The digit that makes ``payload + digit`` pass the Luhn (mod 10) test.

    Counting from the right of the payload, every first, third, ... digit is doubled (the check
    digit will sit to its right), and a doubled value above 9 contributes its digit sum.
    """
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


# Verhoeff's scheme works in the dihedral group D5 (symmetries of a pentagon): 0-4 are the
# rotations, 5-9 the reflections. Unlike Luhn it catches every adjacent transposition.
# _D[j][k] is the group product j*k.
_D: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
# The permutation applied to a digit depends on its distance from the right end; Verhoeff's
# base permutation applied i times gives row i, and it repeats with period 8.
_P_BASE = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)


def _permutation_powers() -> tuple[tuple[int, ...], ...]:
    rows: list[tuple[int, ...]] = [tuple(range(10))]
    for _ in range(7):
        rows.append(tuple(_P_BASE[digit] for digit in rows[-1]))
    return tuple(rows)


_P = _permutation_powers()
# Group inverse of each element: rotations invert to the opposite rotation, reflections to
# themselves.
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff_check_digit(payload: str) -> int:
    """The digit that makes ``payload + digit`` pass the Verhoeff test.

    The check digit will occupy position 0 from the right, so payload digits start at
    position 1; the answer is the inverse of the running product.
    """
    check = 0
    for position, char in enumerate(reversed(payload), start=1):
        check = _D[check][_P[position % 8][int(char)]]
    return _INV[check]
