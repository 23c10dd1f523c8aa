"""Merkle-tree maths for the audit log, as RFC 9162 (Certificate Transparency 2.0) defines it.

Pure functions over hashes and integers; no storage, no I/O. The log server uses the *plans*
(which subtree hashes a proof needs) and fetches those hashes from its storage; a verifier uses
only the *verify* functions, a tree head and a proof.

Hashing (RFC 9162 §2.1.1): ``leaf = SHA-256(0x00 || entry)``, ``node = SHA-256(0x01 || l || r)``.
The Merkle Tree Hash of n leaves splits at k, the largest power of two smaller than n.

Vocabulary: a *range* ``(start, end)`` is the half-open run of leaves D[start:end]; a *perfect
node* ``(level, index)`` is the hash of the 2**level leaves starting at index * 2**level, the only
hashes the log stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
Range = tuple[int, int]
Node = tuple[int, int]  # (level, index)


class ProofError(ValueError):
    """A proof is malformed or does not match the claimed tree head."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a list of leaf hashes, by the RFC's definition (for checks)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = _split(len(leaf_hashes))
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect nodes, left to right, whose hashes compose the range's Merkle Tree Hash.

    Valid for the ranges RFC 9162 trees contain: ``start`` is a multiple of the largest power of
    two not exceeding ``end - start``, so every piece of the binary decomposition is aligned.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range {start}..{end}")
    nodes = []
    position = start
    remaining = end - start
    for level in range(remaining.bit_length() - 1, -1, -1):
        width = 1 << level
        if remaining & width:
            if position % width:
                raise ValueError(f"range {start}..{end} is not aligned")
            nodes.append((level, position >> level))
            position += width
    return nodes


def range_hash(start: int, end: int, node: Callable[[Node], bytes]) -> bytes:
    """The Merkle Tree Hash of D[start:end] from the stored perfect nodes."""
    pieces = [node(n) for n in perfect_nodes(start, end)]
    result = pieces[-1]
    for piece in reversed(pieces[:-1]):
        result = node_hash(piece, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form the inclusion proof of leaf ``index`` (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()  # the proof lists the leaf's sibling first
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose hashes form the consistency proof from ``first`` to ``second`` leaves
    (RFC 9162 §2.1.4.1)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    ranges: list[Range] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def nodes_needed(ranges: Iterable[Range]) -> set[Node]:
    """Every perfect node a list of ranges needs, so that storage can fetch them at once."""
    return {n for start, end in ranges for n in perfect_nodes(start, end)}


def proof_hashes(
    ranges: Sequence[Range], nodes: Mapping[Node, bytes], shared: dict[Range, bytes] | None = None
) -> list[bytes]:
    """The hashes of ``ranges`` from the stored perfect nodes. ``shared`` keeps the hash of
    each range computed, for proofs built together: the inclusion proofs of a page of a
    patient's entries have most of their ranges in common (a right edge's range costs one
    node hash per piece, every time)."""
    if shared is None:
        return [range_hash(start, end, nodes.__getitem__) for start, end in ranges]
    hashes = []
    for start, end in ranges:
        value = shared.get((start, end))
        if value is None:
            value = shared[(start, end)] = range_hash(start, end, nodes.__getitem__)
        hashes.append(value)
    return hashes


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2); raises if it is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "the leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        _check_hash(p, "a proof hash")
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Raise `ProofError` unless ``leaf`` is at ``index`` in the tree of ``size`` with ``root``."""
    if root_from_inclusion(leaf, index, size, path) != root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with this root")


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """Raise `ProofError` unless the tree (second, second_root) extends (first, first_root)
    (RFC 9162 §2.1.4.2)."""
    if not 0 <= first <= second:
        raise ProofError(f"size {second} cannot extend size {first}")
    if first == second:
        if proof or first_root != second_root:
            raise ProofError("equal sizes need equal roots and an empty proof")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    for p in path:
        _check_hash(p, "a proof hash")
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a stored subtree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ProofError(f"the tree of size {second} does not extend the tree of size {first}")


class Frontier:
    """The right edge of a growing tree: one perfect node per set bit of the size.

    Appending a leaf completes zero or more perfect nodes (returned so the log can store them);
    the root of the current size folds the frontier. A verifier streams a whole log through one
    of these in O(log n) memory.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError("a frontier needs one hash per set bit of its size")
        self.size = size
        self.hashes = list(hashes)  # highest level first

    def append(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        """Add a leaf; return the perfect nodes it completes (level 0, the leaf, included)."""
        index = self.size
        completed = [((0, index), leaf)]
        current, level = leaf, 0
        while (index >> level) & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            completed.append(((level, index >> level), current))
        self.hashes.append(current)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for piece in reversed(self.hashes[:-1]):
            result = node_hash(piece, result)
        return result
