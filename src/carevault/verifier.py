"""A stand-alone verifier of CareVault audit logs, for outside auditors.

It needs nothing from the server or its storage: only the log's public key, tree heads, proofs
and entries, however obtained (the HTTP API, a database dump, a backup). It depends on
`carevault.domain.merkle` and `carevault.domain.tree_head` (pure Python) and on `cryptography`
for Ed25519, and can be vendored on its own.

* `verify_tree_head`, `verify_inclusion`, `verify_consistency`: check one answer of the API.
* `verify_log`: stream a whole log, recompute every leaf and subtree hash, compare them with
  the stored ones and with every signed tree head, and report the first bad index. It keeps
  O(log n) state in a `Checkpoint`, which can be saved and resumed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from carevault.domain import merkle
from carevault.domain.tree_head import TreeHead, signed_bytes

__all__ = [
    "Checkpoint",
    "VerificationError",
    "VerifyReport",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_tree_head",
]


class VerificationError(Exception):
    """The log, a proof or a tree head is not what it claims; ``first_bad_index`` says where."""

    def __init__(self, message: str, first_bad_index: int | None = None) -> None:
        super().__init__(message)
        self.first_bad_index = first_bad_index


def _public_key(pem: bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("the log's public key is not an Ed25519 key")
    return key


def verify_tree_head(public_key_pem: bytes, head: TreeHead) -> None:
    try:
        _public_key(public_key_pem).verify(
            head.signature, signed_bytes(head.tree_size, head.root_hash, head.timestamp_ms)
        )
    except (InvalidSignature, ValueError) as error:
        raise VerificationError(
            f"the tree head of size {head.tree_size} is not signed by this log's key"
        ) from error


def verify_inclusion(
    public_key_pem: bytes,
    head: TreeHead,
    leaf_input: bytes,
    leaf_index: int,
    audit_path: Sequence[bytes],
) -> None:
    """The entry ``leaf_input`` is at ``leaf_index`` in the log the signed ``head`` describes."""
    verify_tree_head(public_key_pem, head)
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(leaf_input), leaf_index, head.tree_size, audit_path, head.root_hash
        )
    except merkle.ProofError as error:
        raise VerificationError(str(error), leaf_index) from error


def verify_consistency(
    public_key_pem: bytes, old: TreeHead, new: TreeHead, proof: Sequence[bytes]
) -> None:
    """The log of ``new`` contains the log of ``old`` unchanged: it was only appended to."""
    verify_tree_head(public_key_pem, old)
    verify_tree_head(public_key_pem, new)
    try:
        merkle.verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash)
    except merkle.ProofError as error:
        raise VerificationError(str(error)) from error


@dataclass
class Checkpoint:
    """How far a whole-log verification got: the size verified and the tree's right edge."""

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)

    def save(self, path: Path) -> None:
        data = {
            "size": self.size,
            "frontier": [base64.b64encode(h).decode("ascii") for h in self.frontier],
        }
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(int(data["size"]), [base64.b64decode(h) for h in data["frontier"]])


@dataclass(frozen=True)
class VerifyReport:
    verified_size: int
    tree_heads_checked: int
    root_hash: bytes


EntryReader = Callable[[int, int], Iterable[tuple[int, bytes]]]
NodeReader = Callable[[int, int, int], Iterable[tuple[int, bytes]]]


def verify_log(
    public_key_pem: bytes,
    size: int,
    read_entries: EntryReader,
    read_nodes: NodeReader,
    tree_heads: Iterable[TreeHead],
    *,
    checkpoint: Checkpoint | None = None,
    chunk: int = 1000,
    progress: Callable[[int], None] = lambda _n: None,
    on_checkpoint: Callable[[Checkpoint], None] = lambda _c: None,
) -> VerifyReport:
    """Verify a whole log of ``size`` entries.

    ``read_entries(start, end)`` yields (leaf_index, leaf_input) for start <= index < end;
    ``read_nodes(level, start, end)`` yields the stored (idx, hash) of one level of the tree.
    Every recomputed hash is compared with the stored one, every tree head's root and signature
    with the recomputed tree. Raises `VerificationError` naming the first bad leaf index.
    """
    state = checkpoint or Checkpoint()
    frontier = merkle.Frontier(state.size, state.frontier)
    heads = sorted(tree_heads, key=lambda h: h.tree_size)
    for head in heads:
        verify_tree_head(public_key_pem, head)
    if heads and heads[-1].tree_size > size:
        raise VerificationError(
            f"a signed tree head covers {heads[-1].tree_size} entries but "
            f"only {size} are stored: entries were deleted",
            size,
        )
    pending = [h for h in heads if h.tree_size >= frontier.size]
    last_good = _check_heads({frontier.size: frontier.root()}, pending, frontier.size)
    while frontier.size < size:
        start = frontier.size
        end = min(size, start + chunk)
        computed: dict[merkle.Node, bytes] = {}
        roots: dict[int, bytes] = {}  # the roots at the sizes of pending tree heads
        wanted = {h.tree_size for h in pending}
        expected = start
        for index, data in read_entries(start, end):
            if index != expected:
                raise VerificationError(f"entry {expected} is missing or out of order", expected)
            for node, value in frontier.append(merkle.leaf_hash(data)):
                computed[node] = value
            expected += 1
            if frontier.size in wanted:
                roots[frontier.size] = frontier.root()
        if expected != end:
            raise VerificationError(f"entry {expected} is missing", expected)
        # Stored hashes first: they locate a change to the exact entry or subtree.
        _compare_nodes(computed, read_nodes)
        last_good = _check_heads(roots, pending, last_good)
        on_checkpoint(Checkpoint(frontier.size, list(frontier.hashes)))
        progress(end - start)
    checked = len(heads) - len(pending)
    return VerifyReport(frontier.size, checked, frontier.root())


def _check_heads(roots: dict[int, bytes], pending: list[TreeHead], last_good: int) -> int:
    """Check and drop the pending heads whose size ``roots`` covers; return the last good size.

    A head that disagrees while every stored hash agreed means entries *and* hashes were
    rewritten together; the alteration lies after the last head that still matched.
    """
    while pending and pending[0].tree_size in roots:
        head = pending.pop(0)
        if head.root_hash != roots[head.tree_size]:
            raise VerificationError(
                f"the signed tree head of size {head.tree_size} does not match the entries: "
                f"entries between index {last_good} and {head.tree_size - 1} were rewritten",
                last_good,
            )
        last_good = head.tree_size
    return last_good


def _compare_nodes(computed: dict[merkle.Node, bytes], read_nodes: NodeReader) -> None:
    """Compare recomputed subtree hashes with the stored ones, level by level from the leaves.

    A changed entry also changes every ancestor of its leaf, so the lowest level with a
    mismatch locates the change: the first bad index is the first leaf under the leftmost
    mismatching node of that level.
    """
    by_level: dict[int, list[int]] = {}
    for level, idx in computed:
        by_level.setdefault(level, []).append(idx)
    for level in sorted(by_level):
        indexes = by_level[level]
        stored = dict(read_nodes(level, min(indexes), max(indexes) + 1))
        bad = [idx for idx in sorted(indexes) if stored.get(idx) != computed[(level, idx)]]
        if bad:
            first = bad[0] << level
            raise VerificationError(
                f"the stored hashes disagree with the entries from index {first}", first
            )
