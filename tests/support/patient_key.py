"""Which patient-scoped tables a SQL statement reaches without its patient key, and which store
method sent it: the statement half of the shard-readiness test (tests/integration/
test_shard_readiness.py).

The check reads the SQL that SQLAlchemy compiled for PostgreSQL, which is regular: a table is
named alone (``FROM t``, ``JOIN t AS alias``, ``UPDATE t``, ``INSERT INTO t (columns)``) and
every column in a WHERE or ON clause is qualified (``t.patient_id``), so a table's name that is
not followed by a dot is a use of the table. A reference to a patient-scoped table is *keyed*
when the statement

- inserts into it with the key among the columns (the row is placed by its key), or
- compares its key with a bound parameter: ``t.patient_id = %(p)s``, ``t.patient_id IN (…)``,
  ``t.patient_id = ANY (…)``, or
- joins its key to the key of another reference that is keyed (``r.patient_id =
  t.patient_id``): a co-located join, which a sharded database runs on the one shard.

This is syntax, not proof: a key compared inside an ``OR`` counts as a filter. The tests of
this module show what it flags and what it accepts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Mapping

_NAME = r"[a-z_][a-z0-9_]*"
_INSERT = re.compile(rf"\bINSERT\s+INTO\s+({_NAME})\s*\(([^)]*)\)")
_PARAMETER = r"(?:%\(\w+\)s(?:::\w+(?: \w+)*)?|\?|\$\d+|:\w+)"
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def references(statement: str, tables: Collection[str]) -> list[tuple[str, str]]:
    """(table, name used in the statement) for each use of one of ``tables`` as a table (not
    as a column's qualifier: ``t.c``, nor inside a string literal), in order: ``t``,
    ``t AS alias``, ``INSERT INTO t``, ``UPDATE t``, ``DELETE FROM t``."""
    text = _LITERAL.sub("''", statement)
    found = []
    for match in re.finditer(rf"(?<![\w.])({_NAME})(?:\s+AS\s+({_NAME}))?(?![\w.(])", text):
        if match.group(1) in tables and not re.search(r"\bAS\s+$", text[: match.start()]):
            found.append((match.group(1), match.group(2) or match.group(1)))
    return found


def _keyed_by_parameter(statement: str, name: str, key: str) -> bool:
    column = re.escape(f"{name}.{key}")
    return bool(
        re.search(rf"\b{column}\s*(?:=\s*{_PARAMETER}|IN\s*\(|=\s*ANY\s*\()", statement)
        or re.search(rf"{_PARAMETER}\s*=\s*{column}\b", statement)
    )


def _joined(statement: str, left: str, right: str) -> bool:
    a, b = re.escape(left), re.escape(right)
    return bool(re.search(rf"\b{a}\s*=\s*{b}\b|\b{b}\s*=\s*{a}\b", statement))


def unkeyed(statement: str, keys: Mapping[str, str]) -> list[str]:
    """The references (``table`` or ``table AS alias``) to patient-scoped tables (``keys``:
    table → key column) that the statement neither places nor filters by their key."""
    inserted = {
        m.group(1)
        for m in _INSERT.finditer(statement)
        if m.group(1) in keys and keys[m.group(1)] in [c.strip() for c in m.group(2).split(",")]
    }
    scoped = references(statement, keys)
    keyed = {
        name
        for table, name in scoped
        if (table in inserted and name == table)
        or _keyed_by_parameter(statement, name, keys[table])
    }
    grown = True
    while grown:  # co-located joins: a key equal to a keyed reference's key
        grown = False
        for table, name in scoped:
            if name in keyed:
                continue
            if any(
                _joined(statement, f"{name}.{keys[table]}", f"{other}.{keys[other_table]}")
                for other_table, other in scoped
                if other in keyed
            ):
                keyed.add(name)
                grown = True
    return sorted(
        {table if name == table else f"{table} AS {name}" for table, name in scoped
         if name not in keyed}
    )


def storage_method() -> str:
    """``module:Class.method`` of the innermost caller in ``carevault/adapters/storage`` (or,
    failing that, in ``carevault``): who sent the statement being executed."""
    frame = sys._getframe(1)
    fallback = "?"
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/carevault/" in path and "/site-packages/" not in path:
            where = f"{path.rsplit('/', 1)[1][:-3]}:{frame.f_code.co_qualname}"
            if "/carevault/adapters/storage/" in path:
                return where
            if fallback == "?":
                fallback = where
        frame = frame.f_back  # type: ignore[assignment]
    return fallback
