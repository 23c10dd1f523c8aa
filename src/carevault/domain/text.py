"""Text folding for directory search.

FHIR string search matches "case- and accent-insensitively, from the start"; people type
"muller" for "Müller" and "goncalves" for "Gonçalves". We store a folded copy of every searchable
name and fold the query the same way, so that matching is a plain prefix comparison that any SQL
database can index.
"""

from __future__ import annotations

import unicodedata

# Letters that Unicode does not decompose into base letter + accent.
_SPECIAL = str.maketrans({"ß": "ss", "ø": "o", "đ": "d", "ł": "l", "æ": "ae", "œ": "oe", "þ": "th"})


def fold(text: str) -> str:
    """Lower-case, accent-free, single-spaced form of ``text``; ``fold(fold(x)) == fold(x)``.

    Decompose first, so that compatibility characters (ℌ, ㎒) and accented special letters
    (Ǿ, Ǣ) reach the table and the accent stripping in their base form; lower-case at the end
    again, because decomposition can produce capitals (``casefold`` then ``lower``: a few
    scripts, Cherokee among them, case-fold to upper case).
    """
    decomposed = unicodedata.normalize("NFKD", text).casefold().translate(_SPECIAL)
    decomposed = unicodedata.normalize("NFKD", decomposed)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().lower().split())
