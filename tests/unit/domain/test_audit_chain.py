"""The chain rules: an entry left out, reordered, replaced or forked breaks a patient's chain."""

from __future__ import annotations

from dataclasses import replace

import pytest

from carevault.domain.audit import Agent, AuditRecord, ChainLink
from carevault.domain.audit_chain import (
    ChainBroken,
    ChainedEntry,
    Chains,
    check_chain,
    linked,
    next_link,
)
from carevault.domain.merkle import leaf_hash

PATIENT = "p-1"


def record(n: int, patient: str | None = PATIENT, **extra: object) -> AuditRecord:
    return AuditRecord(
        stream="clinical",
        recorded=f"2026-12-05T10:00:{n % 60:02d}.000Z",
        kind="access",
        action="R",
        interaction="read",
        outcome="0",
        agent=Agent(who=f"Practitioner/{n}", network="127.0.0.1"),
        patient=patient,
        entity_type="DocumentReference",
        entity_id=str(n),
        **extra,  # type: ignore[arg-type]
    )


def chain(count: int, patient: str = PATIENT, start: int = 0) -> list[tuple[int, bytes]]:
    """``count`` entries about ``patient``, linked as the log links them, at leaf indexes
    start, start + 2, … (other patients' entries between them)."""
    head: tuple[int, bytes] | None = None
    leaves = []
    for n in range(count):
        data = linked(record(n, patient).canonical(), next_link(head))
        head = (n, leaf_hash(data))
        leaves.append((start + 2 * n, data))
    return leaves


def entries(leaves: list[tuple[int, bytes]]) -> list[ChainedEntry]:
    return [ChainedEntry.of(i, data) for i, data in leaves]


@pytest.mark.parametrize(
    "value",
    [
        record(1),
        record(2, detail={"reason": 'a "quoted" ,"detail": trap', "x": "\\"}),
        record(3, query='?name=,"detail":"x"'),
        replace(record(4), agent=Agent(who='x",\\"detail\\":', organization="Organization/é")),
    ],
)
def test_splicing_the_link_gives_exactly_the_canonical_bytes(value: AuditRecord) -> None:
    for link in (ChainLink(0, None), ChainLink(7, "ab" * 32)):
        assert linked(value.canonical(), link) == replace(value, chain=link).canonical()
        assert AuditRecord.from_canonical(linked(value.canonical(), link)).chain == link


def test_an_entry_without_a_link_keeps_its_bytes() -> None:
    assert b'"chain"' not in record(1).canonical()
    assert AuditRecord.from_canonical(record(1).canonical()) == record(1)


def test_a_linked_entry_cannot_be_linked_again() -> None:
    data = linked(record(1).canonical(), ChainLink(0, None))
    with pytest.raises(ValueError, match="unlinked"):
        linked(data, ChainLink(1, "00" * 32))


def test_a_whole_chain_from_its_genesis_holds() -> None:
    check_chain(PATIENT, None, entries(chain(5)))


def test_a_chain_after_an_anchor_holds() -> None:
    links = entries(chain(6))
    check_chain(PATIENT, links[2], links[3:])


def test_an_omitted_entry_is_reported_with_its_gap() -> None:
    links = entries(chain(6))
    with pytest.raises(ChainBroken) as broken:
        check_chain(PATIENT, None, links[:3] + links[4:])
    assert broken.value.missing == (3, 3)
    assert (broken.value.after, broken.value.before) == (4, 8)
    assert "between leaf 4 (seq 2) and leaf 8" in str(broken.value)


def test_several_omitted_entries_are_counted() -> None:
    links = entries(chain(8))
    with pytest.raises(ChainBroken, match="3 entries about the patient missing") as broken:
        check_chain(PATIENT, links[0], links[4:])
    assert broken.value.missing == (1, 3)


def test_a_missing_genesis_is_reported() -> None:
    links = entries(chain(4))
    with pytest.raises(ChainBroken, match="not the start of the patient's chain"):
        check_chain(PATIENT, None, links[1:])


def test_reordered_entries_are_reported() -> None:
    """Whichever way the list is shuffled, the first link it breaks is reported."""
    links = entries(chain(4))
    with pytest.raises(ChainBroken, match=r"missing between leaf 0 \(seq 0\) and leaf 4"):
        check_chain(PATIENT, None, [links[0], links[2], links[1], links[3]])
    with pytest.raises(ChainBroken, match=r"out of order between leaf 4 \(seq 2\) and leaf 2"):
        check_chain(PATIENT, links[1], [links[2], links[1], links[3]])
    with pytest.raises(ChainBroken, match="out of order"):
        check_chain(PATIENT, None, [links[0], links[1], links[1], links[2]])


def test_a_replaced_entry_breaks_the_next_link() -> None:
    leaves = chain(4)
    index, data = leaves[1]
    leaves[1] = (index, data.replace(b"Practitioner/1", b"Practitioner/9"))
    with pytest.raises(ChainBroken, match="does not link to the entry at leaf 2") as broken:
        check_chain(PATIENT, None, entries(leaves))
    assert (broken.value.after, broken.value.before) == (2, 4)


def test_a_forked_chain_is_reported() -> None:
    """Two entries written for the same sequence number, both after the same entry."""
    leaves = chain(3)
    head = (1, leaf_hash(leaves[1][1]))
    fork = (5, linked(record(99).canonical(), next_link(head)))
    with pytest.raises(ChainBroken, match="forked"):
        check_chain(PATIENT, None, entries([*leaves, fork]))
    whole = Chains()  # the whole-log checker sees it too
    for i, data in leaves:
        whole.follow(i, data)
    with pytest.raises(ChainBroken, match=r"claim seq 2 \(leaf 4 and leaf 5\): the chain forked"):
        whole.follow(*fork)
    # A fork replacing the tail is caught by its successor's link.
    tail = (6, linked(record(100).canonical(), next_link((2, leaf_hash(fork[1])))))
    with pytest.raises(ChainBroken, match="forked"):
        check_chain(PATIENT, None, entries([*leaves, tail]))


def test_another_patients_entry_is_refused() -> None:
    links = entries(chain(2))
    stranger = entries(chain(1, "p-2", start=1))
    with pytest.raises(ChainBroken, match="not about this patient"):
        check_chain(PATIENT, None, [links[0], stranger[0], links[1]])


def test_the_whole_log_checker_follows_every_patient() -> None:
    mixed = sorted(chain(4) + chain(3, "p-2", start=1))
    whole = Chains()
    for i, data in mixed:
        whole.follow(i, data)
    assert {p: s for p, (s, _, _) in whole.heads.items()} == {PATIENT: 3, "p-2": 2}
    again = Chains.from_json(whole.to_json())
    assert again == whole
    del mixed[4]  # the patient's seq 2, at leaf 4
    whole = Chains()
    for i, data in mixed[:5]:
        whole.follow(i, data)
    with pytest.raises(ChainBroken, match=r"missing between leaf 2 \(seq 1\) and leaf 6"):
        whole.follow(*mixed[5])


def test_entries_before_the_chain_started_carry_no_link_and_later_ones_must() -> None:
    whole = Chains()
    whole.follow(0, record(0).canonical())  # appended before migration 0018
    for i, data in chain(2, start=1):
        whole.follow(i, data)
    with pytest.raises(ChainBroken, match="carries no chain link"):
        whole.follow(9, record(9).canonical())
