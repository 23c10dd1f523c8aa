"""A stand-alone verifier of CareVault audit logs, for outside auditors.

It needs nothing from the server or its storage: only the log's public key, tree heads, proofs
and entries, however obtained (the HTTP API, a database dump, a backup). It depends on
`carevault.domain.merkle` and `carevault.domain.tree_head` (pure Python) and on `cryptography`
for Ed25519, and can be vendored on its own.

* `verify_tree_head`, `verify_inclusion`, `verify_consistency`: check one answer of the API.
* `verify_platform_signature`, `verify_receipt`: a dispense receipt (or a printed
  prescription's signature) by the platform's published key, and the receipt's audit entry
  in the log by its inclusion proof.
* `verify_completeness`: a patient's history is complete between two signed tree heads:
  every entry is in the newer head, the newer head extends the older one, and the entries
  follow each other along the patient's hash chain from the last one before the older head
  (`carevault.domain.audit_chain`), so none was left out.
* `verify_log`: stream a whole log, recompute every leaf and subtree hash, compare them with
  the stored ones and with every signed tree head, follow every patient's hash chain, and
  report the first bad index. It keeps O(log n) state plus each patient's chain head in a
  `Checkpoint`, which can be saved and resumed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from carevault.domain import merkle
from carevault.domain.audit_chain import ChainBroken, ChainedEntry, Chains, check_chain
from carevault.domain.tree_head import TreeHead, signed_bytes

__all__ = [
    "Checkpoint",
    "CompletenessProof",
    "CompletenessReport",
    "ProvenEntry",
    "UnreadableKey",
    "VerificationError",
    "VerifyReport",
    "verify_completeness",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_platform_signature",
    "verify_receipt",
    "verify_tree_head",
]


class VerificationError(Exception):
    """The log, a proof or a tree head is not what it claims; ``first_bad_index`` says where."""

    def __init__(self, message: str, first_bad_index: int | None = None) -> None:
        super().__init__(message)
        self.first_bad_index = first_bad_index


class UnreadableKey(VerificationError):
    """The public key given is no PEM public key, or not an Ed25519 one: nothing was checked
    (said apart, so that a wrong key file is not taken for a forged signature)."""


def _public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise UnreadableKey(f"the public key cannot be read (a PEM public key): {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UnreadableKey("the public key is not an Ed25519 key")
    return key


def verify_tree_head(public_key_pem: bytes, head: TreeHead) -> None:
    key = _public_key(public_key_pem)
    try:
        key.verify(head.signature, signed_bytes(head.tree_size, head.root_hash, head.timestamp_ms))
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


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_platform_signature(jws: str, platform_key_pem: bytes) -> bytes:
    """The payload of a compact JWS (EdDSA) the platform signed, if its signature holds under
    the key it publishes (``/.well-known/carevault-signing-key.pem``)."""
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise VerificationError("not a compact JWS")
    try:
        header = json.loads(_unb64url(parts[0]))
        signature = _unb64url(parts[2])
        payload = _unb64url(parts[1])
    except (ValueError, TypeError) as error:
        raise VerificationError("the JWS is malformed") from error
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise VerificationError("the platform signs with EdDSA (Ed25519)")
    key = _public_key(platform_key_pem)
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except (InvalidSignature, ValueError) as error:
        raise VerificationError("the platform's signature does not verify") from error
    return payload


def verify_receipt(receipt: str, platform_key_pem: bytes, log_key_pem: bytes) -> dict[str, object]:
    """A dispense receipt: signed by the platform, and its audit entry (which names the task,
    the prescription's and the dispense's hashes) is in the audit log whose signed tree head
    the receipt carries. Returns the receipt's claims."""
    try:
        claims = json.loads(verify_platform_signature(receipt, platform_key_pem))
        audit = claims["audit"]
        head = TreeHead(
            int(audit["tree-size"]),
            base64.b64decode(audit["root-hash"]),
            int(audit["timestamp-ms"]),
            base64.b64decode(audit["tree-head-signature"]),
        )
        leaf = base64.b64decode(audit["leaf"])
        proof = [base64.b64decode(h) for h in audit["inclusion-proof"]]
        index = int(audit["leaf-index"])
    except (KeyError, TypeError, ValueError) as error:
        raise VerificationError("the receipt's claims are malformed") from error
    verify_inclusion(log_key_pem, head, leaf, index, proof)
    entry = json.loads(leaf)
    detail = entry.get("detail") or {}
    if (
        entry.get("entity_id") != claims.get("task")
        or detail.get("prescription-sha256") != claims.get("prescription-sha256")
        or detail.get("dispense-sha256") != claims.get("dispense-sha256")
    ):
        raise VerificationError("the audit entry is not this receipt's", index)
    result: dict[str, object] = claims
    return result


@dataclass(frozen=True)
class ProvenEntry:
    """One entry with its inclusion proof in the proof's newer tree head."""

    leaf_index: int
    leaf_input: bytes
    audit_path: Sequence[bytes]


@dataclass(frozen=True)
class CompletenessProof:
    """What a patient's device needs to check that their history is complete from ``since``
    (the older signed head, ``None`` for the start of the log) to the last entry shown: the
    newer head, the consistency proof between the two, the ``anchor`` (the patient's last
    linked entry before ``since``, ``None`` when their chain starts after it) and every entry
    about the patient from ``since`` on, in the log's order, each with its inclusion proof."""

    patient: str
    head: TreeHead
    entries: Sequence[ProvenEntry]
    since: TreeHead | None = None
    consistency: Sequence[bytes] = ()
    anchor: ProvenEntry | None = None


@dataclass(frozen=True)
class CompletenessReport:
    """What a verified proof shows: every entry about the patient with ``first <= leaf index
    <= last`` is among the ``count`` shown; ``start`` and ``end`` in milliseconds since 1970
    (the older head's time, or the chain's genesis; the last entry's time)."""

    first: int
    last: int
    count: int
    start_ms: int
    end_ms: int


def _ms(recorded: str) -> int:
    moment = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def verify_completeness(public_key_pem: bytes, proof: CompletenessProof) -> CompletenessReport:
    """Check ``proof`` with nothing but the log's public key; raise `VerificationError`
    naming the gap (``first_bad_index``: the leaf after which an entry is missing)."""
    head, since = proof.head, proof.since
    verify_tree_head(public_key_pem, head)
    start = 0
    if since is not None:
        verify_consistency(public_key_pem, since, head, proof.consistency)
        start = since.tree_size
    proven = [proof.anchor] if proof.anchor is not None else []
    for entry in [*proven, *proof.entries]:
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(entry.leaf_input),
                entry.leaf_index,
                head.tree_size,
                entry.audit_path,
                head.root_hash,
            )
        except merkle.ProofError as error:
            raise VerificationError(
                f"the entry at leaf {entry.leaf_index} is not in the signed tree head of size "
                f"{head.tree_size}: {error}",
                entry.leaf_index,
            ) from error
    if proof.anchor is not None and proof.anchor.leaf_index >= start:
        raise VerificationError("the anchor is not before the older tree head", start)
    if any(e.leaf_index < start for e in proof.entries):
        raise VerificationError("an entry shown is before the older tree head", start)
    try:
        anchor = (
            ChainedEntry.of(proof.anchor.leaf_index, proof.anchor.leaf_input)
            if (proof.anchor is not None)
            else None
        )
        chained = [ChainedEntry.of(e.leaf_index, e.leaf_input) for e in proof.entries]
        check_chain(proof.patient, anchor, chained)
    except ChainBroken as error:
        raise VerificationError(
            f"the history of Patient/{proof.patient} is not complete: {error}",
            error.after if error.after is not None else error.before,
        ) from error
    if not chained:
        raise VerificationError("the proof shows no entry: nothing to vouch for", start)
    first = start if anchor is not None else chained[0].leaf_index
    start_ms = (
        since.timestamp_ms
        if (since is not None and anchor is not None)
        else _ms(chained[0].recorded)
    )
    return CompletenessReport(
        first, chained[-1].leaf_index, len(chained), start_ms, _ms(chained[-1].recorded)
    )


@dataclass
class Checkpoint:
    """How far a whole-log verification got: the size verified, the tree's right edge and
    every patient's chain head."""

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)
    chains: Chains = field(default_factory=Chains)

    def save(self, path: Path) -> None:
        data = {
            "size": self.size,
            "frontier": [base64.b64encode(h).decode("ascii") for h in self.frontier],
            "chains": self.chains.to_json(),
        }
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            int(data["size"]),
            [base64.b64decode(h) for h in data["frontier"]],
            Chains.from_json(data.get("chains", {})),
        )


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
    chains = Chains.from_json(state.chains.to_json())
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
        read: list[tuple[int, bytes]] = []
        for index, data in read_entries(start, end):
            if index != expected:
                raise VerificationError(f"entry {expected} is missing or out of order", expected)
            read.append((index, data))
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
        # The chains last: a changed entry is located by its hashes above, not by the link of
        # the patient's next entry, which no longer matches it.
        for index, data in read:
            try:
                chains.follow(index, data)
            except ChainBroken as error:
                raise VerificationError(str(error), index) from error
        on_checkpoint(Checkpoint(frontier.size, list(frontier.hashes), chains))
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
