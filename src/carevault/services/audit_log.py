"""The audit log: durable appends with group commit, signed tree heads, and proofs.

Two ways in, one ordering:

* `AuditLog.append` is for accesses that change nothing (reads, searches, refusals). Callers
  block until their entry is committed; a single writer thread commits everything that queued
  up meanwhile in one transaction (group commit), so thousands of concurrent requests cost a
  handful of fsyncs. If the commit fails, every waiting caller gets `AuditUnavailable` and must
  not answer (fail closed).
* `AuditLog.append_with` writes entries inside a unit of work's transaction, for changes: the
  record of a write commits atomically with the write itself, so a crash leaves both or
  neither. `AuditLog.append_now` is the same in a transaction of its own (the commands).

Both lock the stream's state row, so indexes stay contiguous whichever path appends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from carevault.adapters.storage.audit_database import AuditDatabase, WriterConnection
from carevault.adapters.storage.audit_store import AuditStore, PendingEntry, StoredTreeHead
from carevault.adapters.timestamping import TimeStampAuthority, timestamp
from carevault.domain import merkle
from carevault.domain.audit import STREAMS, AuditRecord
from carevault.domain.errors import SEND_AGAIN, Conflict, Unavailable
from carevault.domain.tree_head import TreeHead, signed_bytes

log = logging.getLogger("carevault.audit")

# The audit store of a unit of work's transaction, which `AuditLog.append_with` appends in: the
# unit of work hands it to its ``before_commit`` hook, so that a change and its audit entry
# commit together. Named here so that the hooks (the API's audit trail, the commands) need not
# know the storage adapter.
AuditTransaction = AuditStore


class AuditUnavailable(Unavailable):
    """The audit log could not durably record an access; the access must not be served (503,
    wherever it is raised: it is one of the domain's errors)."""


class Signer(Protocol):
    """What the log needs of a key (an Ed25519 key, in a file or an HSM)."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


@dataclass(frozen=True)
class StreamForVerifier:
    """`AuditLog.for_verifier`: what the stand-alone verifier (`carevault.verifier.verify_log`)
    reads of one stream, from this log's storage: its size and signed heads as they were when
    asked, and readers of entries and subtree hashes, each in a connection of its own so that
    a long verification holds none open."""

    size: int
    heads: list[TreeHead]
    entries: Callable[[int, int], list[tuple[int, bytes]]]
    nodes: Callable[[int, int, int], list[tuple[int, bytes]]]


@dataclass(frozen=True)
class ProofMaterial:
    """`AuditLog.patient_proof_material`: entries as (leaf index, canonical bytes)."""

    anchor: tuple[int, bytes] | None  # the patient's last entry before the start
    rows: list[tuple[int, bytes]]  # their entries from the start, in the log's order
    inclusion: dict[int, list[bytes]]  # the inclusion proof of each of those, by leaf index
    consistency: list[bytes]  # from the start to the tree size (empty if not asked)


@dataclass
class _Request:
    stream: str
    entries: list[PendingEntry]
    done: Future[list[int]]


def _pending(record: AuditRecord, recorded_at: datetime) -> PendingEntry:
    return PendingEntry(record.canonical(), record.patient, recorded_at, record.agent.who)


# How long a signed tree head is served as the latest before a request that asks for one
# (`AuditLog.recent_tree_head`) has a new one signed: ``CAREVAULT_TREE_HEAD_INTERVAL_SECONDS``.
TREE_HEAD_INTERVAL = timedelta(seconds=10)


class AuditLog:
    def __init__(
        self,
        database: AuditDatabase,
        signers: dict[str, Signer],
        clock: Callable[[], datetime],
        *,
        max_batch: int = 2000,
        wait_seconds: float = 10.0,
        straggler_seconds: float = 0.002,
        tree_head_interval: timedelta = TREE_HEAD_INTERVAL,
    ) -> None:
        missing = set(STREAMS) - set(signers)
        if missing:
            raise ValueError(f"no signing key for audit streams {sorted(missing)}")
        self.database = database
        self.signers = signers
        self.clock = clock
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self.straggler_seconds = straggler_seconds
        self.tree_head_interval = tree_head_interval
        # One signer at a time of the heads `recent_tree_head` finds due, so that the requests
        # of a burst that all find the latest head too old sign one head between them.
        self._head_lock = threading.Lock()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        # Whether the last group commit held requests of several callers: only then does the
        # writer wait for stragglers (see `_next_batch`).
        self._concurrent = False
        # Whether the latest group commit failed: what ``/health/ready`` says of the audit log.
        self.last_commit_failed = False

    # --- appending ------------------------------------------------------------------------

    def append_with(self, store: AuditTransaction, records: Sequence[AuditRecord]) -> list[int]:
        """Append through a unit of work's audit store (``uow.audit``), inside its
        transaction: its commit makes them durable."""
        now = self.clock()
        indexes: list[int] = []
        for stream in STREAMS:
            batch = [_pending(r, now) for r in records if r.stream == stream]
            if batch:
                first, _size = store.append(stream, batch)
                indexes += range(first, first + len(batch))
        return indexes

    def append_now(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append in a transaction of its own, committed before returning: an operator's
        command records what it did without starting the group-commit writer."""
        with self.database.writing() as store:
            return self.append_with(store, records)

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append and wait until committed; raise `AuditUnavailable` if that cannot be done."""
        return self.submit(records)()

    def submit(self, records: Sequence[AuditRecord]) -> Callable[[], list[int]]:
        """Queue for the group commit and return at once a wait that blocks until the entries
        are committed (their indexes), or raises `AuditUnavailable`. For a page that reads
        while its own reading is being recorded, so that the commit's fsync overlaps the
        reads: it must call the wait, and answer only once it returned (fail closed)."""
        if not records:
            return list
        self._ensure_writer()
        now = self.clock()
        futures = []
        for stream in STREAMS:
            batch = [_pending(r, now) for r in records if r.stream == stream]
            if batch:
                done: Future[list[int]] = Future()
                self._queue.put(_Request(stream, batch, done))
                futures.append(done)

        def wait() -> list[int]:
            indexes: list[int] = []
            for done in futures:
                try:
                    indexes += done.result(timeout=self.wait_seconds)
                except Exception as error:
                    raise AuditUnavailable(
                        f"the audit log could not record this access, so nothing was served; "
                        f"{SEND_AGAIN}"
                    ) from error
            return indexes

        return wait

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="audit-group-commit", daemon=True
                )
                self._writer.start()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer.is_alive():
                self._queue.put(None)
                self._writer.join(timeout=self.wait_seconds)
            self._writer = None

    def _write_loop(self) -> None:
        connection = self.database.writer()  # one of its own, kept between batches
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._commit(connection, batch)
        finally:
            connection.close()

    def _next_batch(self) -> list[_Request] | None:
        """Everything queued, waiting up to ``straggler_seconds`` for late arrivals once the
        queue runs dry, so that a burst shares one commit instead of several. The wait is
        made only while callers are concurrent (the last commit held several requests): a
        lone caller would only lose it, and under load requests queue up during each commit
        anyway."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        count = len(first.entries)
        deadline = time.monotonic() + (self.straggler_seconds if self._concurrent else 0.0)
        while count < self.max_batch:
            try:
                wait = max(0.0, deadline - time.monotonic())
                item = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
            count += len(item.entries)
        self._concurrent = len(batch) > 1
        return batch

    def queue_depth(self) -> int:
        """Appends waiting for the group commit (a metric: it grows when the database slows)."""
        return self._queue.qsize()

    def export_backlog(self, stream: str, destination: str) -> int:
        """Entries of ``stream`` the ATNA repository at ``destination`` has not confirmed."""
        with self.database.reading() as store:
            return max(0, store.size(stream) - store.export_cursor(stream, destination))

    def _fail(self, batch: list[_Request], error: Exception) -> None:
        self.last_commit_failed = True
        log.error("audit group commit of %d requests failed: %s", len(batch), type(error).__name__)
        for request in batch:
            request.done.set_exception(error)

    def _commit(self, connection: WriterConnection, batch: list[_Request]) -> None:
        """One transaction, one append per stream, then each waiter gets its slice; if it
        fails, every waiter gets the error (the writer connection retries once itself when it
        finds the database gone before the commit was sent)."""
        entries = {
            stream: [e for r in batch if r.stream == stream for e in r.entries]
            for stream in STREAMS
        }
        try:
            firsts = connection.append(entries)
        except Exception as error:
            self._fail(batch, error)
            return
        self.last_commit_failed = False
        offsets = dict(firsts)
        for request in batch:
            start = offsets[request.stream]
            offsets[request.stream] += len(request.entries)
            request.done.set_result(list(range(start, start + len(request.entries))))

    # --- tree heads -----------------------------------------------------------------------

    def public_key_pem(self, stream: str) -> bytes:
        return self.signers[stream].public_key_pem()

    def for_verifier(self, stream: str) -> StreamForVerifier:
        """The stream as the verifier reads it (`carevault audit verify`, the restore drill)."""
        database = self.database
        with database.reading() as store:
            size = store.size(stream)
            heads = [
                TreeHead(h.tree_size, h.root_hash, h.timestamp_ms, h.signature)
                for h in store.tree_heads(stream)
            ]

        def entries(first: int, end: int) -> list[tuple[int, bytes]]:
            with database.reading() as store:
                return store.entries(stream, first, end)

        def nodes(level: int, first: int, end: int) -> list[tuple[int, bytes]]:
            with database.reading() as store:
                return store.level_nodes(stream, level, first, end)

        return StreamForVerifier(size, heads, entries, nodes)

    def sign_tree_head(self, stream: str) -> TreeHead:
        """Sign the current tree, unless the latest signed head already covers it.

        For whoever needs a head covering everything appended so far (a dispensing receipt
        proving its own entry, a backup's manifest, the chores' head every second, the
        operator's command). Not for what anyone may ask for at will: every request grows the
        log, so each would store a head and cost a signature; those ask `recent_tree_head`."""
        with self.database.reading() as store:
            latest = store.latest_tree_head(stream)
            size, root = self._current_root(store, stream)
        return self._sign(stream, latest, size, root)

    def recent_tree_head(self, stream: str, *, patient: str | None = None) -> TreeHead:
        """The latest signed tree head while it is younger than ``tree_head_interval`` (by
        ``clock``) and, given a ``patient``, covers every entry about them appended so far;
        otherwise (or if there is none) the current tree signed (`sign_tree_head`).

        For what callers may ask for as often as they like: the public ``/audit/tree-head``
        (anyone), a patient's access history and the portal's "verified complete" badge.
        Every other request grows the log, so signing whenever it grew would store a head and
        cost a signature per request; bounded, the public route gets a stream at most one head
        an interval however many ask. A patient's history needs more than a recent head: each
        of their visits is one of the lines of the next, and what a professional just did must
        be in it, proven, so it asks a head covering their entries; one is signed only when
        their own chain grew past the latest head (one entry about them at most, a recorded
        and throttled request of theirs or an access to their record), never for the rest of
        the log's growth.

        The head served is always the latest stored one when asked: proofs are made against
        its size, so they verify against it; a size a device saw before is never larger, so
        the consistency proof from it exists; timestamps stay monotonic (`sign_tree_head`).
        Without ``patient``, entries of the last interval at most are not in it yet (the chores
        sign a head every second while the log grows, so in service it is a second old)."""
        with self.database.reading() as store:
            latest = store.latest_tree_head(stream)
            if latest is not None and self._serves(store, stream, latest, patient):
                return _public(latest)
        with self._head_lock:
            # A request of the same burst may have signed one while this one waited.
            with self.database.reading() as store:
                latest = store.latest_tree_head(stream)
                if latest is not None and self._serves(store, stream, latest, patient):
                    return _public(latest)
                size, root = self._current_root(store, stream)
            return self._sign(stream, latest, size, root)

    def _serves(
        self, store: AuditStore, stream: str, latest: StoredTreeHead, patient: str | None
    ) -> bool:
        """Whether `recent_tree_head` serves ``latest`` as it is: not yet an interval old, and
        no entry about ``patient`` (if given) at or past its size."""
        if self._head_due(latest):
            return False
        return patient is None or not store.patient_entries(
            stream, patient, after=latest.tree_size - 1, limit=1
        )

    def _head_due(self, latest: StoredTreeHead) -> bool:
        """Whether ``latest`` has been served for ``tree_head_interval`` (a head timestamped
        ahead of the clock, after the clock stepped back, is not due until the clock caught
        up: timestamps never go back)."""
        now_ms = int(self.clock().timestamp() * 1000)
        return now_ms - latest.timestamp_ms >= self.tree_head_interval / timedelta(milliseconds=1)

    def _sign(self, stream: str, latest: StoredTreeHead | None, size: int, root: bytes) -> TreeHead:
        """Sign and store the tree of ``size`` entries and ``root``, read after ``latest``,
        unless ``latest`` already covers it (read and closed before: the write is in a
        connection of its own)."""
        if latest is not None and latest.tree_size == size:
            return _public(latest)
        timestamp_ms = int(self.clock().timestamp() * 1000)
        if latest is not None:
            timestamp_ms = max(timestamp_ms, latest.timestamp_ms)
        signature = self.signers[stream].sign(signed_bytes(size, root, timestamp_ms))
        head = StoredTreeHead(stream, size, root, timestamp_ms, signature)
        try:
            with self.database.writing() as store:
                store.save_tree_head(head)
        except Conflict:
            # Another signer published this size first; serve theirs.
            return self.tree_head(stream, size)
        return _public(head)

    def _current_root(self, store: AuditStore, stream: str) -> tuple[int, bytes]:
        frontier = store.frontier(stream)
        return frontier.size, frontier.root()

    def stamp_latest_tree_head(self, stream: str, authority: TimeStampAuthority) -> int | None:
        """Have a trusted time-stamping authority (RFC 3161) stamp the latest signed tree head,
        unless it already is; return the size stamped. The token proves to a third party that
        the log had this size and root no later than the TSA's time."""
        with self.database.reading() as store:
            latest = store.latest_tree_head(stream)
        if latest is None or latest.timestamp_token is not None:
            return None
        token = timestamp(
            signed_bytes(latest.tree_size, latest.root_hash, latest.timestamp_ms), authority
        )
        with self.database.writing() as store:
            store.set_timestamp_token(stream, latest.tree_size, token)
        return latest.tree_size

    def timestamp_token(self, stream: str, tree_size: int) -> bytes | None:
        with self.database.reading() as store:
            stored = store.tree_head(stream, tree_size)
        if stored is None:
            raise LookupError(f"no signed tree head of size {tree_size}")
        return stored.timestamp_token

    def tree_head(self, stream: str, tree_size: int) -> TreeHead:
        with self.database.reading() as store:
            stored = store.tree_head(stream, tree_size)
        if stored is None:
            raise LookupError(f"no signed tree head of size {tree_size}")
        return _public(stored)

    def tree_head_before(self, stream: str, tree_size: int) -> TreeHead | None:
        """The largest signed tree head smaller than ``tree_size``, if any."""
        with self.database.reading() as store:
            stored = store.head_before(stream, tree_size)
        return None if stored is None else _public(stored)

    def latest_tree_head(self, stream: str) -> TreeHead:
        with self.database.reading() as store:
            stored = store.latest_tree_head(stream)
        if stored is None:
            return self.sign_tree_head(stream)
        return _public(stored)

    def stored_heads(
        self, stream: str
    ) -> tuple[StoredTreeHead | None, StoredTreeHead | None, StoredTreeHead | None]:
        """The latest signed tree head, the one signed before it, and the latest one an RFC 3161
        authority stamped (for the security officer's integrity check)."""
        with self.database.reading() as store:
            latest = store.latest_tree_head(stream)
            previous = store.head_before(stream, latest.tree_size) if latest is not None else None
            stamped = store.latest_stamped_head(stream)
        return latest, previous, stamped

    # --- proofs and entries -----------------------------------------------------------------

    def size(self, stream: str) -> int:
        with self.database.reading() as store:
            return store.size(stream)

    def inclusion_proof(self, stream: str, leaf_index: int, tree_size: int) -> list[bytes]:
        return self._proof(stream, merkle.inclusion_ranges(leaf_index, tree_size), tree_size)

    def inclusion_proofs(
        self, stream: str, leaf_indices: Iterable[int], tree_size: int
    ) -> dict[int, list[bytes]]:
        """The inclusion proofs of several entries in one tree, read in one connection with
        the subtree hashes they share fetched once (a page of history proves fifty entries)."""
        ranges = {i: merkle.inclusion_ranges(i, tree_size) for i in set(leaf_indices)}
        if not ranges:
            return {}
        with self.database.reading() as store:
            if tree_size > store.size(stream):
                raise merkle.ProofError(f"the log has fewer than {tree_size} entries")
            wanted = {node for r in ranges.values() for node in merkle.nodes_needed(r)}
            nodes = store.nodes(stream, wanted)
        shared: dict[merkle.Range, bytes] = {}
        return {i: merkle.proof_hashes(r, nodes, shared) for i, r in ranges.items()}

    def patient_proof_material(
        self, patient_id: str, *, start: int, tree_size: int, limit: int, consistency: bool
    ) -> ProofMaterial:
        """What a completeness proof of the patient's clinical entries from ``start`` to
        ``tree_size`` is made of, read in one connection (each connection costs a pool
        check-out and a transaction): the patient's last entry before ``start``
        (if ``start``), their first ``limit`` entries from it, the inclusion proofs of all of
        them, and (``consistency``) the proof from ``start`` to ``tree_size``, the subtree
        hashes they share fetched once."""
        with self.database.reading() as store:
            before = (
                store.patient_entries(
                    "clinical", patient_id, before=start, limit=1, newest_first=True
                )
                if start > 0
                else []
            )
            rows = store.patient_entries(
                "clinical", patient_id, after=start - 1, before=tree_size, limit=limit
            )
            ranges = {i: merkle.inclusion_ranges(i, tree_size) for i, _ in [*rows, *before]}
            between = merkle.consistency_ranges(start, tree_size) if consistency else []
            if tree_size > store.size("clinical"):
                raise merkle.ProofError(f"the log has fewer than {tree_size} entries")
            wanted = {node for r in ranges.values() for node in merkle.nodes_needed(r)}
            nodes = store.nodes("clinical", wanted | merkle.nodes_needed(between))
        shared: dict[merkle.Range, bytes] = {}
        return ProofMaterial(
            before[0] if before else None,
            rows,
            {i: merkle.proof_hashes(r, nodes, shared) for i, r in ranges.items()},
            merkle.proof_hashes(between, nodes, shared),
        )

    def consistency_proof(self, stream: str, first: int, second: int) -> list[bytes]:
        return self._proof(stream, merkle.consistency_ranges(first, second), second)

    def _proof(self, stream: str, ranges: list[merkle.Range], tree_size: int) -> list[bytes]:
        with self.database.reading() as store:
            if tree_size > store.size(stream):
                raise merkle.ProofError(f"the log has fewer than {tree_size} entries")
            nodes = store.nodes(stream, merkle.nodes_needed(ranges))
        return merkle.proof_hashes(ranges, nodes)

    def entries(self, stream: str, start: int, end: int) -> list[tuple[int, bytes]]:
        with self.database.reading() as store:
            return store.entries(stream, start, end)

    def patient_entries(
        self,
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
        with self.database.reading() as store:
            return store.patient_entries(
                "clinical",
                patient_id,
                after=after,
                before=before,
                limit=limit,
                newest_first=newest_first,
                recorded_from=recorded_from,
                recorded_before=recorded_before,
                by_others=by_others,
            )

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
        """Entries of ``stream`` matching every criterion, newest first, with the total
        count (`AuditStore.search_entries`)."""
        with self.database.reading() as store:
            return store.search_entries(
                stream,
                patients=patients,
                agents=agents,
                recorded=recorded,
                offset=offset,
                count=count,
            )


def _public(stored: StoredTreeHead) -> TreeHead:
    return TreeHead(stored.tree_size, stored.root_hash, stored.timestamp_ms, stored.signature)
