"""The bytes a signed tree head signs, shared by the log and by every verifier.

CareVault signs the RFC 6962 §3.5 ``TreeHeadSignature`` structure, TLS-encoded, with Ed25519:

    version            1 byte   0 (v1)
    signature_type     1 byte   1 (tree_hash)
    timestamp          8 bytes  milliseconds since the Unix epoch, big-endian
    tree_size          8 bytes  number of entries, big-endian
    sha256_root_hash  32 bytes  the RFC 9162 Merkle Tree Hash

That is 50 bytes. Each stream (clinical, operator) has its own key, so a head of one log can
never pass for a head of the other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from carevault.domain.merkle import HASH_SIZE


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    signature: bytes


def signed_bytes(tree_size: int, root_hash: bytes, timestamp_ms: int) -> bytes:
    if len(root_hash) != HASH_SIZE:
        raise ValueError("a root hash is 32 bytes")
    if tree_size < 0 or timestamp_ms < 0:
        raise ValueError("tree size and timestamp are unsigned")
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, tree_size) + root_hash
