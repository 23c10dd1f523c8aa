"""Each patient's hash chain through the audit log: the proof that their history is complete.

The Merkle tree proves that an entry *is* in the log; it cannot show that an entry about a
patient was *left out* of what they are shown, short of reading the whole log. So every entry
about a patient carries a `ChainLink`: its sequence number among the entries about that patient
(in its stream) and the leaf hash of the previous one. The link is inside the entry's canonical
bytes, hence inside its leaf hash, hence committed by every signed tree head that covers it.

Given an *anchor* (the patient's last entry before some point, or none when the list must start
at the chain's genesis) and the patient's entries after it, `check_chain` holds only if they
follow each other link by link, sequence number by sequence number, in the log's order. An entry
omitted from the list leaves a gap in the sequence numbers and a link to a hash that is not
there; an entry replaced, reordered or written twice for one sequence number (a fork) breaks a
link too. Nothing here trusts the server: the links are read from the leaf inputs themselves.

Pure Python; `carevault.verifier` and the log's append both rely on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from carevault.domain.audit import ChainLink
from carevault.domain.merkle import leaf_hash

# Keys of an entry's canonical JSON sort as RFC 8785 sorts them: "chain" goes between "agent"
# and "detail", and every AuditRecord has a "detail" (see `linked`).
_BEFORE_DETAIL = b',"detail":'


class ChainBroken(ValueError):
    """A patient's entries do not follow each other: ``after`` and ``before`` are the leaf
    indexes around the gap (``None`` at an end), ``missing`` the sequence numbers absent."""

    def __init__(
        self,
        message: str,
        *,
        after: int | None = None,
        before: int | None = None,
        missing: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.after = after
        self.before = before
        self.missing = missing


def link_json(link: ChainLink) -> bytes:
    """The link's canonical JSON: ``{"previous":…,"seq":…}``."""
    return json.dumps(
        {"previous": link.previous, "seq": link.seq}, sort_keys=True, separators=(",", ":")
    ).encode("ascii")


def linked(unlinked: bytes, link: ChainLink) -> bytes:
    """The canonical bytes of an entry with its link, from its canonical bytes without one.

    Equal to ``replace(record, chain=link).canonical()`` (a test holds it to that), without
    serializing the record again while the stream's lock is held. The first ``,"detail":`` is
    the top-level key: inside a JSON string every ``"`` is escaped, so that sequence cannot
    occur in the values before it."""
    at = unlinked.find(_BEFORE_DETAIL)
    if at < 0 or b'"chain":' in unlinked[:at]:
        raise ValueError("not the canonical bytes of an unlinked audit record")
    return b"".join((unlinked[:at], b',"chain":', link_json(link), unlinked[at:]))


@dataclass(frozen=True)
class ChainedEntry:
    """What the chain rules need of one leaf: where it is, its hash, whom it is about, its
    link (``None`` for an entry without one) and when it was recorded."""

    leaf_index: int
    leaf_hash: bytes
    patient: str | None
    link: ChainLink | None
    recorded: str

    @classmethod
    def of(cls, leaf_index: int, leaf_input: bytes) -> ChainedEntry:
        try:
            value: Any = json.loads(leaf_input)
            patient = value.get("patient")
            recorded = str(value.get("recorded", ""))
            chain = value.get("chain")
            link = (
                None
                if chain is None
                else ChainLink(int(chain["seq"]), _previous(chain.get("previous")))
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ChainBroken(
                f"the entry at leaf {leaf_index} is not an audit entry", after=leaf_index
            ) from error
        return cls(leaf_index, leaf_hash(leaf_input), patient, link, recorded)


def _previous(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError("a link's previous hash is 32 bytes in hex")
    bytes.fromhex(value)
    return value


def next_link(head: tuple[int, bytes] | None) -> ChainLink:
    """The link of the entry that follows ``head`` (its seq and leaf hash), or the genesis."""
    if head is None:
        return ChainLink(0, None)
    return ChainLink(head[0] + 1, head[1].hex())


def check_chain(patient: str, anchor: ChainedEntry | None, entries: Sequence[ChainedEntry]) -> None:
    """The ``entries`` (in the log's order) follow ``anchor`` link by link, with no entry left
    out, none reordered, replaced or forked; with no anchor they start at the chain's genesis.
    Raises `ChainBroken` naming the leaf indexes around the first break."""
    previous = anchor
    if anchor is not None:
        _about(patient, anchor)
    for entry in entries:
        _about(patient, entry)
        link = entry.link
        assert link is not None  # _about refused it
        if previous is None:
            if link.seq != 0 or link.previous is not None:
                raise ChainBroken(
                    f"the first entry shown (leaf {entry.leaf_index}, seq {link.seq}) is not "
                    f"the start of the patient's chain: entries 0 to {link.seq - 1} are missing",
                    before=entry.leaf_index,
                    missing=(0, link.seq - 1),
                )
        else:
            _follows(previous, entry)
        previous = entry


def _about(patient: str, entry: ChainedEntry) -> None:
    if entry.patient != patient:
        raise ChainBroken(
            f"the entry at leaf {entry.leaf_index} is not about this patient",
            after=entry.leaf_index,
        )
    if entry.link is None:
        raise ChainBroken(
            f"the entry at leaf {entry.leaf_index} carries no chain link", after=entry.leaf_index
        )


def _follows(before: ChainedEntry, entry: ChainedEntry) -> None:
    assert before.link is not None
    assert entry.link is not None
    here, then = entry.link, before.link
    where = f"between leaf {before.leaf_index} (seq {then.seq}) and leaf {entry.leaf_index}"
    if here.seq == then.seq and entry.leaf_index > before.leaf_index:
        raise ChainBroken(
            f"two entries about the patient claim seq {here.seq} (leaf {before.leaf_index} and "
            f"leaf {entry.leaf_index}): the chain forked",
            after=before.leaf_index,
            before=entry.leaf_index,
        )
    if entry.leaf_index <= before.leaf_index or here.seq < then.seq:
        raise ChainBroken(
            f"entries out of order {where} (seq {here.seq})",
            after=before.leaf_index,
            before=entry.leaf_index,
        )
    if here.seq > then.seq + 1:
        missing = (then.seq + 1, here.seq - 1)
        count = here.seq - then.seq - 1
        raise ChainBroken(
            f"{count} entr{'y' if count == 1 else 'ies'} about the patient missing {where} "
            f"(seq {here.seq}): seq {missing[0]}"
            + (f" to {missing[1]}" if missing[1] != missing[0] else ""),
            after=before.leaf_index,
            before=entry.leaf_index,
            missing=missing,
        )
    if here.previous != before.leaf_hash.hex():
        raise ChainBroken(
            f"the entry at leaf {entry.leaf_index} (seq {here.seq}) does not link to the entry "
            f"at leaf {before.leaf_index} (seq {then.seq}): replaced, or the chain forked",
            after=before.leaf_index,
            before=entry.leaf_index,
        )


@dataclass
class Chains:
    """Every patient's chain head while a whole log is read in order (`verify_log`): each
    entry about a patient must extend their chain, and once the log holds links (from
    migration 0019 on) every entry about a patient must carry one."""

    heads: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)  # seq, index, hash
    linking: bool = False

    def follow(self, leaf_index: int, leaf_input: bytes) -> None:
        entry = ChainedEntry.of(leaf_index, leaf_input)
        if entry.patient is None:
            return
        if entry.link is None:
            if self.linking:
                raise ChainBroken(
                    f"the entry at leaf {leaf_index} is about a patient but carries no chain "
                    "link, after the log started linking",
                    after=leaf_index,
                )
            return
        self.linking = True
        head = self.heads.get(entry.patient)
        if head is None:
            check_chain(entry.patient, None, [entry])
        else:
            seq, index, hashed = head
            before = ChainedEntry(index, hashed, entry.patient, ChainLink(seq, None), "")
            _follows(before, entry)
        assert entry.link is not None
        self.heads[entry.patient] = (entry.link.seq, leaf_index, entry.leaf_hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "linking": self.linking,
            "heads": {p: [s, i, h.hex()] for p, (s, i, h) in sorted(self.heads.items())},
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Chains:
        heads: Iterable[tuple[str, list[Any]]] = value.get("heads", {}).items()
        return cls(
            {p: (int(s), int(i), bytes.fromhex(h)) for p, (s, i, h) in heads},
            bool(value.get("linking", False)),
        )
