"""SQL storage of the audit log: entries, perfect subtree hashes, tree heads, export cursors.

Appending locks the stream's state row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serializes writers), extends the frontier kept there, and inserts the
entries and the subtree hashes they complete, all in the caller's transaction. So indexes are
contiguous across processes, and the entries, the hashes and the size commit together or not
at all.

Under that same lock it links every entry about a patient to that patient's previous one
(`domain/audit_chain.py`): it reads the chain heads of the batch's patients, writes each entry's
link into its canonical bytes, and moves the heads on. The stream's lock is what keeps a
patient's chain from forking: two transactions appending about the same patient take it one
after the other, and the second reads the head the first committed (READ COMMITTED reads each
statement afresh on PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql as pgsql
from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.database import WROTE
from carevault.domain.audit_chain import linked, next_link
from carevault.domain.merkle import HASH_SIZE, Frontier, Node, leaf_hash

_ENTRY_COLUMNS = (
    "stream",
    "leaf_index",
    "patient_id",
    "agent",
    "by_others",
    "recorded_at",
    "entry",
)
_NODE_COLUMNS = ("stream", "level", "idx", "hash")
_HEAD_COLUMNS = ("stream", "patient_id", "seq", "leaf_index", "leaf_hash")
# Chain heads read per statement (an IN list).
_HEADS_PER_READ = 500
_STATE_COLUMNS = ("new_size", "new_frontier", "state_stream")
# Up to this many entries, one statement; beyond, COPY (see `AuditStore.append`).
_ONE_STATEMENT_ROWS = 32

_LOCKED_STATE = (
    select(t.audit_log_state.c.tree_size, t.audit_log_state.c.frontier)
    .where(t.audit_log_state.c.stream == bindparam("stream"))
    .with_for_update()  # SQLite has no FOR UPDATE: its BEGIN IMMEDIATE serializes writers
)
_STATE = select(t.audit_log_state.c.tree_size, t.audit_log_state.c.frontier).where(
    t.audit_log_state.c.stream == bindparam("stream")
)
_SET_STATE = (
    update(t.audit_log_state)
    .where(t.audit_log_state.c.stream == bindparam("state_stream"))
    .values(tree_size=bindparam("new_size"), frontier=bindparam("new_frontier"))
)


# PostgreSQL, a few entries (one request's, a group commit's): the entries, the tree's new
# hashes, the chain heads and the new state in one statement, each table's rows as arrays.
# Its text is the same for every batch, so psycopg converts it once and, after a few uses,
# PostgreSQL runs it prepared; rows spelt out as VALUES made a statement per batch shape, each
# parsed and planned anew, and above fifty parameters psycopg rescanned its text every time.
# Numbers, times and bytes go in binary (``%b``): psycopg's text form of a bytea array escapes
# every byte in Python. Text columns stay ``%s`` (a list of only NULLs has no binary type).
_ONE_STATEMENT = """\
WITH e AS (
  INSERT INTO audit_entry (stream, leaf_index, patient_id, agent, by_others, recorded_at, entry)
  SELECT %(stream)s, * FROM unnest(%(leaf_index)b::bigint[], %(patient_id)s::text[],
    %(agent)s::text[], %(by_others)b::boolean[], %(recorded_at)b::timestamptz[],
    %(entry)b::bytea[])
), n AS (
  INSERT INTO audit_node (stream, level, idx, hash)
  SELECT %(stream)s, * FROM unnest(%(level)b::smallint[], %(idx)b::bigint[], %(hash)b::bytea[])
), h AS (
  INSERT INTO audit_chain_head (stream, patient_id, seq, leaf_index, leaf_hash)
  SELECT %(stream)s, * FROM unnest(%(head_patient)s::text[], %(head_seq)b::bigint[],
    %(head_leaf_index)b::bigint[], %(head_leaf_hash)b::bytea[])
  ON CONFLICT (stream, patient_id) DO UPDATE SET seq = EXCLUDED.seq,
    leaf_index = EXCLUDED.leaf_index, leaf_hash = EXCLUDED.leaf_hash
)
UPDATE audit_log_state SET tree_size = %(tree_size)s, frontier = %(frontier)s
WHERE stream = %(stream)s"""
# The chain heads of a batch's patients, on PostgreSQL: one array parameter, one statement
# text whatever the number of patients (an IN list is a new statement for every count).
_CHAIN_HEADS_ANY = (
    "SELECT patient_id, seq, leaf_hash FROM audit_chain_head "
    "WHERE stream = %(stream)s AND patient_id = ANY(%(patients)s::text[])"
)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of ``width`` values as ``width`` lists, one per column (empty lists for no rows)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def by_others(patient_id: str | None, agent: str | None) -> bool:
    """Whether an entry was made by a professional or a system (or by nobody named), not by an
    account or the patient themselves: what a patient's chart of accesses counts."""
    if agent is None:
        return True
    return not agent.startswith("account:") and agent != f"Patient/{patient_id or ''}"


def _named(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


class AuditStorageError(Exception):
    """The audit storage is missing its state or holds something impossible."""


@dataclass(frozen=True)
class PendingEntry:
    """An entry to append: its canonical bytes and the patient it concerns (for their view)."""

    data: bytes
    patient_id: str | None
    recorded_at: datetime
    agent: str | None = None


@dataclass(frozen=True)
class StoredTreeHead:
    stream: str
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    signature: bytes
    timestamp_token: bytes | None = None


# Read for every batch the writer commits: built once (building it per call cost more CPU
# than running it).
_CHAIN_HEADS = select(
    t.audit_chain_head.c.patient_id, t.audit_chain_head.c.seq, t.audit_chain_head.c.leaf_hash
).where(
    t.audit_chain_head.c.stream == bindparam("stream"),
    t.audit_chain_head.c.patient_id.in_(bindparam("patients", expanding=True)),
)


class AuditStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # --- appending ------------------------------------------------------------------------

    def _locked_frontier(self, stream: str) -> Frontier:
        return self._frontier(_LOCKED_STATE, stream)

    def _frontier(self, statement: Select[Any], stream: str) -> Frontier:
        row = self.connection.execute(statement, {"stream": stream}).first()
        if row is None:
            raise AuditStorageError(
                f"audit stream {stream!r} is not initialized: run 'carevault db upgrade'"
            )
        blob = bytes(row.frontier)
        hashes = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
        return Frontier(int(row.tree_size), hashes)

    def append(self, stream: str, entries: Sequence[PendingEntry]) -> tuple[int, int]:
        """Append entries in order, each about a patient linked into that patient's chain;
        return (first leaf index, new tree size)."""
        frontier = self._locked_frontier(stream)
        first = frontier.size
        chains = self._chain_heads(stream, {e.patient_id for e in entries if e.patient_id})
        moved: dict[str, tuple[int, int, bytes]] = {}
        nodes: list[tuple[str, int, int, bytes]] = []
        rows: list[tuple[str, int, str | None, str | None, bool, datetime, bytes]] = []
        for entry in entries:
            data = entry.data
            if entry.patient_id is not None:
                link = next_link(chains.get(entry.patient_id))
                data = linked(data, link)
            rows.append(
                (
                    stream,
                    frontier.size,
                    entry.patient_id,
                    entry.agent,
                    by_others(entry.patient_id, entry.agent),
                    entry.recorded_at,
                    data,
                )
            )
            hashed = leaf_hash(data)
            if entry.patient_id is not None:
                chains[entry.patient_id] = (link.seq, hashed)
                moved[entry.patient_id] = (link.seq, frontier.size, hashed)
            for (level, idx), value in frontier.append(hashed):
                nodes.append((stream, level, idx, value))
        heads = [(stream, patient, *head) for patient, head in moved.items()]
        if rows:
            state = (frontier.size, b"".join(frontier.hashes), stream)
            if self.connection.dialect.name != "postgresql":
                self.connection.execute(insert(t.audit_entry), _named(_ENTRY_COLUMNS, rows))
                self.connection.execute(insert(t.audit_node), _named(_NODE_COLUMNS, nodes))
                self._move_heads(heads)
                self.connection.execute(_SET_STATE, dict(zip(_STATE_COLUMNS, state, strict=True)))
            elif len(rows) <= _ONE_STATEMENT_ROWS:
                self._append_in_one_statement(rows, nodes, heads, state)
            else:
                self._append_by_copy(rows, nodes, heads, state)
        return first, frontier.size

    def _chain_heads(self, stream: str, patients: set[str]) -> dict[str, tuple[int, bytes]]:
        """The (seq, leaf hash) each of these patients' chains ends with, under the lock."""
        found: dict[str, tuple[int, bytes]] = {}
        wanted = sorted(patients)
        if not wanted:
            return found
        if self.connection.dialect.name == "postgresql":
            with self._driver().cursor() as cursor:
                cursor.execute(_CHAIN_HEADS_ANY, {"stream": stream, "patients": wanted})
                return {row[0]: (int(row[1]), bytes(row[2])) for row in cursor.fetchall()}
        for start in range(0, len(wanted), _HEADS_PER_READ):
            rows = self.connection.execute(
                _CHAIN_HEADS,
                {"stream": stream, "patients": wanted[start : start + _HEADS_PER_READ]},
            )
            found.update({row.patient_id: (int(row.seq), bytes(row.leaf_hash)) for row in rows})
        return found

    def _move_heads(self, heads: list[tuple[Any, ...]]) -> None:
        if not heads:
            return
        upsert = (
            pg_insert(t.audit_chain_head)
            if self.connection.dialect.name == "postgresql"
            else sqlite_insert(t.audit_chain_head)
        )
        excluded = upsert.excluded
        self.connection.execute(
            upsert.on_conflict_do_update(
                index_elements=["stream", "patient_id"],
                set_={
                    "seq": excluded.seq,
                    "leaf_index": excluded.leaf_index,
                    "leaf_hash": excluded.leaf_hash,
                },
            ),
            _named(_HEAD_COLUMNS, heads),
        )

    def _append_in_one_statement(
        self,
        rows: list[tuple[Any, ...]],
        nodes: list[tuple[Any, ...]],
        heads: list[tuple[Any, ...]],
        state: tuple[Any, ...],
    ) -> None:
        """PostgreSQL, a few entries: `_ONE_STATEMENT`, one round trip (besides reading the
        heads) while the stream's lock is held. Every row of one append has the same stream."""
        _, leaf_index, patient_id, agent, others, recorded_at, entry = _columns(rows, 7)
        _, level, idx, hashes = _columns(nodes, 4)
        _, head_patient, head_seq, head_leaf_index, head_leaf_hash = _columns(heads, 5)
        tree_size, frontier, stream = state
        parameters = {
            "stream": stream,
            "leaf_index": leaf_index,
            "patient_id": patient_id,
            "agent": agent,
            "by_others": others,
            "recorded_at": recorded_at,
            "entry": entry,
            "level": level,
            "idx": idx,
            "hash": hashes,
            "head_patient": head_patient,
            "head_seq": head_seq,
            "head_leaf_index": head_leaf_index,
            "head_leaf_hash": head_leaf_hash,
            "tree_size": tree_size,
            "frontier": frontier,
        }
        with self._driver().cursor() as cursor:
            cursor.execute(_ONE_STATEMENT, parameters)

    def _append_by_copy(
        self,
        rows: list[tuple[Any, ...]],
        nodes: list[tuple[Any, ...]],
        heads: list[tuple[Any, ...]],
        state: tuple[Any, ...],
    ) -> None:
        """PostgreSQL, many entries (an import, a batch): COPY, several times cheaper per row
        than INSERT."""
        with self._driver().cursor() as cursor:
            for table, columns, values in (
                ("audit_entry", _ENTRY_COLUMNS, rows),
                ("audit_node", _NODE_COLUMNS, nodes),
            ):
                statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
                    pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
                )
                with cursor.copy(statement) as copy:
                    for value in values:
                        copy.write_row(value)
        self._move_heads(heads)
        self.connection.execute(_SET_STATE, dict(zip(_STATE_COLUMNS, state, strict=True)))

    def _driver(self) -> Any:
        """psycopg's connection, for what SQLAlchemy cannot say as cheaply; whatever it is
        used for, the transaction counts as one that wrote (`database.ends_as_read`)."""
        self.connection.info[WROTE] = True
        driver = self.connection.connection.driver_connection
        assert driver is not None
        return driver

    # --- reading --------------------------------------------------------------------------

    def size(self, stream: str) -> int:
        value = self.connection.execute(
            select(t.audit_log_state.c.tree_size).where(t.audit_log_state.c.stream == stream)
        ).scalar_one_or_none()
        if value is None:
            raise AuditStorageError(f"audit stream {stream!r} is not initialized")
        return int(value)

    def frontier(self, stream: str) -> Frontier:
        """The tree's size and right edge as the last append left them (no lock): the root of
        the current tree, folded from one row instead of read node by node."""
        return self._frontier(_STATE, stream)

    def nodes(self, stream: str, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """Fetch perfect subtree hashes, 500 per query, each query asking every level for its
        indexes at once (``level = L AND idx IN (…)``): a page of history proves fifty
        entries with a few hundred nodes on some twenty levels, and one condition per node
        cost more to build, compile and plan than the read itself."""
        wanted = sorted(set(wanted))
        found: dict[Node, bytes] = {}
        node = t.audit_node
        for start in range(0, len(wanted), 500):
            levels: dict[int, list[int]] = {}
            for level, idx in wanted[start : start + 500]:
                levels.setdefault(level, []).append(idx)
            rows = self.connection.execute(
                select(node.c.level, node.c.idx, node.c.hash).where(
                    node.c.stream == stream,
                    or_(
                        *(
                            and_(node.c.level == level, node.c.idx.in_(indexes))
                            for level, indexes in levels.items()
                        )
                    ),
                )
            )
            found.update({(row.level, row.idx): bytes(row.hash) for row in rows})
        missing = set(wanted) - set(found)
        if missing:
            raise AuditStorageError(
                f"audit stream {stream!r} lacks subtree hashes {sorted(missing)[:3]}"
            )
        return found

    def entries(self, stream: str, start: int, end: int) -> list[tuple[int, bytes]]:
        """Entries with start <= leaf_index < end, in order."""
        entry = t.audit_entry
        rows = self.connection.execute(
            select(entry.c.leaf_index, entry.c.entry)
            .where(entry.c.stream == stream, entry.c.leaf_index >= start, entry.c.leaf_index < end)
            .order_by(entry.c.leaf_index)
        )
        return [(int(row.leaf_index), bytes(row.entry)) for row in rows]

    def search_entries(
        self,
        stream: str,
        *,
        patients: Sequence[tuple[str, ...]] = (),
        agents: Sequence[tuple[str, ...]] = (),
        recorded: Sequence[tuple[str, datetime, datetime]] = (),
        offset: int = 0,
        count: int = 20,
    ) -> tuple[int, list[tuple[int, bytes]]]:
        """Entries matching every criterion, newest first, with the total count.

        Each criterion is a tuple of alternatives; ``recorded`` holds (prefix, start, end)
        half-open UTC ranges with FHIR's date prefixes.
        """
        entry = t.audit_entry
        where: list[ColumnElement[bool]] = [entry.c.stream == stream]
        where += [entry.c.patient_id.in_(alternatives) for alternatives in patients]
        where += [entry.c.agent.in_(alternatives) for alternatives in agents]
        for prefix, start, end in recorded:
            column = entry.c.recorded_at
            where.append(
                {
                    "eq": and_(column >= start, column < end),
                    "ne": or_(column < start, column >= end),
                    "lt": column < start,
                    "le": column < end,
                    "gt": column >= end,
                    "ge": column >= start,
                }[prefix]
            )
        condition = and_(*where)
        total = self.connection.execute(
            select(func.count()).select_from(entry).where(condition)
        ).scalar_one()
        rows = self.connection.execute(
            select(entry.c.leaf_index, entry.c.entry)
            .where(condition)
            .order_by(entry.c.leaf_index.desc())
            .offset(offset)
            .limit(count)
        )
        return int(total), [(int(row.leaf_index), bytes(row.entry)) for row in rows]

    def patient_entries(
        self,
        stream: str,
        patient_id: str,
        *,
        after: int = -1,
        before: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        recorded_from: datetime | None = None,
        recorded_before: datetime | None = None,
        by_others: bool = False,
    ) -> list[tuple[int, bytes]]:
        """A patient's entries with ``after < leaf_index < before`` (and recorded in
        ``[recorded_from, recorded_before)`` if given; and, ``by_others``, made by neither an
        account nor the patient's own entry: professionals and systems): the first ``limit`` in
        the log's order, or with ``newest_first`` the last ``limit``, newest first."""
        entry = t.audit_entry
        conditions = [
            entry.c.stream == stream,
            entry.c.patient_id == patient_id,
            entry.c.leaf_index > after,
        ]
        if before is not None:
            conditions.append(entry.c.leaf_index < before)
        if recorded_from is not None:
            conditions.append(entry.c.recorded_at >= recorded_from)
        if recorded_before is not None:
            conditions.append(entry.c.recorded_at < recorded_before)
        if by_others:
            conditions.append(entry.c.by_others == true())  # "IS TRUE" would not use the index
        order = entry.c.leaf_index.desc() if newest_first else entry.c.leaf_index
        rows = self.connection.execute(
            select(entry.c.leaf_index, entry.c.entry)
            .where(*conditions)
            .order_by(order)
            .limit(limit)
        )
        return [(int(row.leaf_index), bytes(row.entry)) for row in rows]

    def level_nodes(self, stream: str, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        """Stored hashes of one level with start <= idx < end (for whole-log verification)."""
        node = t.audit_node
        rows = self.connection.execute(
            select(node.c.idx, node.c.hash)
            .where(
                node.c.stream == stream,
                node.c.level == level,
                node.c.idx >= start,
                node.c.idx < end,
            )
            .order_by(node.c.idx)
        )
        return [(int(row.idx), bytes(row.hash)) for row in rows]

    # --- tree heads -----------------------------------------------------------------------

    def save_tree_head(self, head: StoredTreeHead) -> None:
        self.connection.execute(
            insert(t.audit_tree_head).values(
                stream=head.stream,
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                timestamp_ms=head.timestamp_ms,
                signature=head.signature,
                timestamp_token=head.timestamp_token,
            )
        )

    def set_timestamp_token(self, stream: str, tree_size: int, token: bytes) -> None:
        head = t.audit_tree_head
        self.connection.execute(
            update(head)
            .where(head.c.stream == stream, head.c.tree_size == tree_size)
            .values(timestamp_token=token)
        )

    def latest_tree_head(self, stream: str) -> StoredTreeHead | None:
        head = t.audit_tree_head
        row = self.connection.execute(
            select(head).where(head.c.stream == stream).order_by(head.c.tree_size.desc()).limit(1)
        ).first()
        return None if row is None else _tree_head(row)

    def tree_heads(self, stream: str) -> list[StoredTreeHead]:
        head = t.audit_tree_head
        rows = self.connection.execute(
            select(head).where(head.c.stream == stream).order_by(head.c.tree_size)
        )
        return [_tree_head(row) for row in rows]

    def head_before(self, stream: str, tree_size: int) -> StoredTreeHead | None:
        """The largest signed tree head smaller than ``tree_size``."""
        head = t.audit_tree_head
        row = self.connection.execute(
            select(head)
            .where(head.c.stream == stream, head.c.tree_size < tree_size)
            .order_by(head.c.tree_size.desc())
            .limit(1)
        ).first()
        return None if row is None else _tree_head(row)

    def latest_stamped_head(self, stream: str) -> StoredTreeHead | None:
        """The largest signed tree head that carries an RFC 3161 time-stamp token."""
        head = t.audit_tree_head
        row = self.connection.execute(
            select(head)
            .where(head.c.stream == stream, head.c.timestamp_token.is_not(None))
            .order_by(head.c.tree_size.desc())
            .limit(1)
        ).first()
        return None if row is None else _tree_head(row)

    def tree_head(self, stream: str, tree_size: int) -> StoredTreeHead | None:
        head = t.audit_tree_head
        row = self.connection.execute(
            select(head).where(head.c.stream == stream, head.c.tree_size == tree_size)
        ).first()
        return None if row is None else _tree_head(row)

    # --- export cursors -------------------------------------------------------------------

    def export_cursor(self, stream: str, destination: str) -> int:
        cursor = t.audit_export_cursor
        value = self.connection.execute(
            select(cursor.c.next_index).where(
                cursor.c.stream == stream, cursor.c.destination == destination
            )
        ).scalar_one_or_none()
        return 0 if value is None else int(value)

    def advance_export_cursor(self, stream: str, destination: str, next_index: int) -> None:
        cursor = t.audit_export_cursor
        changed = self.connection.execute(
            update(cursor)
            .where(
                cursor.c.stream == stream,
                cursor.c.destination == destination,
                cursor.c.next_index < next_index,
            )
            .values(next_index=next_index)
        ).rowcount
        if not changed and self.export_cursor(stream, destination) == 0 and next_index > 0:
            self.connection.execute(
                insert(cursor).values(stream=stream, destination=destination, next_index=next_index)
            )


def _tree_head(row: Row[Any]) -> StoredTreeHead:
    token = row.timestamp_token
    return StoredTreeHead(
        stream=row.stream,
        tree_size=int(row.tree_size),
        root_hash=bytes(row.root_hash),
        timestamp_ms=int(row.timestamp_ms),
        signature=bytes(row.signature),
        timestamp_token=bytes(token) if token is not None else None,
    )
