"""Inclusion proofs built together share the hashes of their common ranges
(`merkle.proof_hashes` with ``shared``): each proof must be the one built alone, and verify."""

from __future__ import annotations

import hashlib

from carevault.domain import merkle


def _tree(size: int) -> tuple[list[bytes], dict[merkle.Node, bytes], bytes]:
    """A tree of ``size`` leaves, every perfect node stored, and its root."""
    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(size)]
    frontier = merkle.Frontier(0, [])
    nodes: dict[merkle.Node, bytes] = {}
    for leaf in leaves:
        for (level, idx), value in frontier.append(leaf):
            nodes[(level, idx)] = value
    root = merkle.range_hash(0, size, nodes.__getitem__)
    return leaves, nodes, root


def test_proofs_built_together_are_the_proofs_built_alone() -> None:
    for size in (1, 2, 7, 64, 100, 1000):
        leaves, nodes, root = _tree(size)
        shared: dict[merkle.Range, bytes] = {}
        for index in range(0, size, max(1, size // 60)):
            ranges = merkle.inclusion_ranges(index, size)
            together = merkle.proof_hashes(ranges, nodes, shared)
            assert together == merkle.proof_hashes(ranges, nodes)
            merkle.verify_inclusion(leaves[index], index, size, together, root)
        assert size == 1 or shared  # the ranges were kept and reused
