"""An audit log in memory, for unit tests only: a stand-in for `AuditLog` implementing the
methods the services under test call (the patient's access history, the security officer's
detector and workspace), with the real hashes, chain links, proofs and signatures
(`carevault.domain`), so that what it serves is checked as a device or the officer's page would
check it. It keeps nothing durable.

Each stream (`STREAMS`: the clinical one and the operators') is its own log, as in the database:
its leaf indexes start at 0, its entries about a patient are linked into that patient's chain as
`AuditStore.append` links them, its tree heads are signed with its own Ed25519 key.
`tests/integration/test_store_contracts_alerts.py` runs the same checks on this log and on
`AuditLog` over SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carevault.adapters.storage.audit_store import StoredTreeHead
from carevault.domain import merkle
from carevault.domain.audit import STREAMS, AuditRecord
from carevault.domain.audit_chain import linked, next_link
from carevault.domain.tree_head import TreeHead, signed_bytes
from carevault.services.audit_log import ProofMaterial

SIGNED_FROM = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # the first head's time; then 1 ms a leaf


@dataclass
class _Stream:
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    # (entry as stored, patient, agent, recorded at): the ``audit_entry`` row's columns.
    rows: list[tuple[bytes, str | None, str | None, datetime]] = field(default_factory=list)
    heads: dict[int, TreeHead] = field(default_factory=dict)
    stamped: set[int] = field(default_factory=set)  # sizes an RFC 3161 authority stamped
    chains: dict[str, tuple[int, bytes]] = field(default_factory=dict)


def _after(column: datetime, prefix: str, start: datetime, end: datetime) -> bool:
    """`AuditStore.search_entries`' half-open ranges with FHIR's date prefixes."""
    return {
        "eq": start <= column < end,
        "ne": column < start or column >= end,
        "lt": column < start,
        "le": column < end,
        "gt": column >= end,
        "ge": column >= start,
    }[prefix]


class FakeAuditLog:
    def __init__(self) -> None:
        self.streams = {stream: _Stream() for stream in STREAMS}

    @property
    def rows(self) -> list[tuple[bytes, str | None, str | None, datetime]]:
        """The clinical stream's rows (a test may rewrite one, as an attacker would)."""
        return self.streams["clinical"].rows

    @property
    def heads(self) -> dict[int, TreeHead]:
        return self.streams["clinical"].heads

    # --- appending --------------------------------------------------------------------------

    def append(self, record: AuditRecord, at: datetime) -> int:
        """Append one record to its stream, recorded at ``at``; its leaf index."""
        stream = self.streams[record.stream]
        data = record.canonical()
        if record.patient is not None:
            link = next_link(stream.chains.get(record.patient))
            data = linked(data, link)
            stream.chains[record.patient] = (link.seq, merkle.leaf_hash(data))
        stream.rows.append((data, record.patient, record.agent.who, at))
        return len(stream.rows) - 1

    # --- tree heads -------------------------------------------------------------------------

    def _hashes(self, stream: str) -> list[bytes]:
        return [merkle.leaf_hash(data) for data, *_ in self.streams[stream].rows]

    def _nodes(self, stream: str, needed: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
        hashes = self._hashes(stream)
        return {(level, idx): merkle.root_of(hashes[idx << level:(idx + 1) << level])
                for level, idx in needed}

    def public_key_pem(self, stream: str) -> bytes:
        return self.streams[stream].key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign_tree_head(self, stream: str) -> TreeHead:
        """Sign the current tree, unless a head of its size is signed already."""
        held = self.streams[stream]
        size = len(held.rows)
        if size not in held.heads:
            root = merkle.root_of(self._hashes(stream))
            stamp = int(SIGNED_FROM.timestamp() * 1000) + size
            signature = held.key.sign(signed_bytes(size, root, stamp))
            held.heads[size] = TreeHead(size, root, stamp, signature)
        return held.heads[size]

    def recent_tree_head(self, stream: str, *, patient: str | None = None) -> TreeHead:
        """`AuditLog.recent_tree_head` as with an interval already past at every call: this log
        has no clock, and the services' tests want the head to cover what they appended."""
        return self.sign_tree_head(stream)

    def stamp_latest_tree_head(self, stream: str) -> int | None:
        """Have the latest signed head time-stamped (RFC 3161), unless it is; the size stamped."""
        held = self.streams[stream]
        if not held.heads or max(held.heads) in held.stamped:
            return None
        held.stamped.add(max(held.heads))
        return max(held.heads)

    def tree_head(self, stream: str, tree_size: int) -> TreeHead:
        if tree_size not in self.streams[stream].heads:
            raise LookupError(f"no signed tree head of size {tree_size}")
        return self.streams[stream].heads[tree_size]

    def tree_head_before(self, stream: str, tree_size: int) -> TreeHead | None:
        heads = self.streams[stream].heads
        sizes = [size for size in heads if size < tree_size]
        return heads[max(sizes)] if sizes else None

    def latest_tree_head(self, stream: str) -> TreeHead:
        heads = self.streams[stream].heads
        return heads[max(heads)] if heads else self.sign_tree_head(stream)

    def _stored(self, stream: str, head: TreeHead | None) -> StoredTreeHead | None:
        if head is None:
            return None
        token = b"token" if head.tree_size in self.streams[stream].stamped else None
        return StoredTreeHead(stream, head.tree_size, head.root_hash, head.timestamp_ms,
                              head.signature, token)

    def stored_heads(self, stream: str) -> tuple[StoredTreeHead | None, StoredTreeHead | None,
                                                 StoredTreeHead | None]:
        """The latest signed head, the one before it, the latest time-stamped one."""
        held = self.streams[stream]
        if not held.heads:
            return None, None, None
        latest = held.heads[max(held.heads)]
        previous = self.tree_head_before(stream, latest.tree_size)
        stamped = held.heads[max(held.stamped)] if held.stamped else None
        return (self._stored(stream, latest), self._stored(stream, previous),
                self._stored(stream, stamped))

    # --- proofs and entries -----------------------------------------------------------------

    def size(self, stream: str) -> int:
        return len(self.streams[stream].rows)

    def _proof(self, stream: str, ranges: list[merkle.Range], tree_size: int) -> list[bytes]:
        if tree_size > self.size(stream):
            raise merkle.ProofError(f"the log has fewer than {tree_size} entries")
        return merkle.proof_hashes(ranges, self._nodes(stream, merkle.nodes_needed(ranges)))

    def inclusion_proofs(self, stream: str, leaf_indices: Iterable[int],
                         tree_size: int) -> dict[int, list[bytes]]:
        ranges = {i: merkle.inclusion_ranges(i, tree_size) for i in set(leaf_indices)}
        return {i: self._proof(stream, r, tree_size) for i, r in ranges.items()}

    def patient_proof_material(self, patient_id: str, *, start: int, tree_size: int, limit: int,
                               consistency: bool) -> ProofMaterial:
        """`AuditLog.patient_proof_material`, from this log's own reads."""
        before = (self.patient_entries(patient_id, before=start, limit=1, newest_first=True)
                  if start > 0 else [])
        rows = self.patient_entries(patient_id, after=start - 1, before=tree_size, limit=limit)
        if tree_size > self.size("clinical"):
            raise merkle.ProofError(f"the log has fewer than {tree_size} entries")
        return ProofMaterial(
            before[0] if before else None, rows,
            self.inclusion_proofs("clinical", (i for i, _ in [*rows, *before]), tree_size),
            self.consistency_proof("clinical", start, tree_size) if consistency else [])

    def consistency_proof(self, stream: str, first: int, second: int) -> list[bytes]:
        return self._proof(stream, merkle.consistency_ranges(first, second), second)

    def entries(self, stream: str, start: int, end: int) -> list[tuple[int, bytes]]:
        """Entries with start <= leaf index < end, in order."""
        rows = self.streams[stream].rows
        return [(i, rows[i][0]) for i in range(max(0, start), min(end, len(rows)))]

    def patient_entries(self, patient_id: str, *, after: int = -1, before: int | None = None,
                        limit: int = 100, newest_first: bool = False,
                        recorded_from: datetime | None = None,
                        recorded_before: datetime | None = None,
                        by_others: bool = False) -> list[tuple[int, bytes]]:
        found = [
            (i, data) for i, (data, patient, agent, at) in enumerate(self.rows)
            if patient == patient_id and i > after and (before is None or i < before)
            and (recorded_from is None or at >= recorded_from)
            and (recorded_before is None or at < recorded_before)
            and (not by_others or agent is None
                 or (not agent.startswith("account:") and agent != f"Patient/{patient_id}"))
        ]
        if newest_first:
            found.reverse()
        return found[:limit]

    def search_entries(self, stream: str, *, patients: Sequence[tuple[str, ...]] = (),
                       agents: Sequence[tuple[str, ...]] = (),
                       recorded: Sequence[tuple[str, datetime, datetime]] = (),
                       offset: int = 0, count: int = 20) -> tuple[int, list[tuple[int, bytes]]]:
        """Entries matching every criterion (each a tuple of alternatives), newest first,
        with the total: `AuditStore.search_entries`. A NULL column matches no alternative."""
        found = [
            (i, data) for i, (data, patient, agent, at) in enumerate(self.streams[stream].rows)
            if all(patient is not None and patient in a for a in patients)
            and all(agent is not None and agent in a for a in agents)
            and all(_after(at, prefix, start, end) for prefix, start, end in recorded)
        ]
        found.reverse()
        return len(found), found[offset:offset + count]
