"""The patient's access history (`carevault.services.access_history`) over an audit log in
memory: its pages in the log's order with inclusion proofs that verify against the signed tree
head, the newest-first filtered reading, the accesses-per-month chart, and the completeness
proof, which verifies with the log's public key only while the log is whole.

The log is `FakeAuditLog`, a stand-in for `AuditLog` implementing only the methods the service
calls; its hashes, proofs, chain links and signatures are the real ones (`carevault.domain`),
so a proof it serves is checked as a device would check it. The log on a database is tested in
tests/integration/test_access_history.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carevault.api.fhir.terminology_handlers import load_affinity_domain
from carevault.domain import merkle
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.audit_chain import linked, next_link
from carevault.domain.errors import InvalidInput
from carevault.domain.tree_head import TreeHead, signed_bytes
from carevault.services.access_history import (
    MonthOfAccesses,
    access_history,
    accesses_per_month,
    completeness_proof,
    verified_completeness,
)
from support.fake_records import FakeRecordUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
AFFINITY = load_affinity_domain(None)


class FakeAuditLog:
    """An audit log in memory, for unit tests only: one stream, whose entries about a patient
    are linked into that patient's chain as `AuditStore.append` links them; tree heads signed
    with an Ed25519 key; proofs computed from the leaves by `carevault.domain.merkle`. It
    implements only what the access history calls, and keeps nothing durable."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.rows: list[tuple[bytes, str | None, str | None, datetime]] = []
        self.heads: dict[int, TreeHead] = {}
        self.chains: dict[str, tuple[int, bytes]] = {}

    def append(self, record: AuditRecord, at: datetime) -> int:
        data = record.canonical()
        if record.patient is not None:
            link = next_link(self.chains.get(record.patient))
            data = linked(data, link)
            self.chains[record.patient] = (link.seq, merkle.leaf_hash(data))
        self.rows.append((data, record.patient, record.agent.who, at))
        return len(self.rows) - 1

    def _hashes(self) -> list[bytes]:
        return [merkle.leaf_hash(data) for data, *_ in self.rows]

    def _nodes(self, needed: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
        hashes = self._hashes()
        return {(level, idx): merkle.root_of(hashes[idx << level:(idx + 1) << level])
                for level, idx in needed}

    def public_key_pem(self, stream: str) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign_tree_head(self, stream: str) -> TreeHead:
        size = len(self.rows)
        if size not in self.heads:
            root = merkle.root_of(self._hashes())
            stamp = int(NOW.timestamp() * 1000) + size
            signature = self.key.sign(signed_bytes(size, root, stamp))
            self.heads[size] = TreeHead(size, root, stamp, signature)
        return self.heads[size]

    def tree_head(self, stream: str, tree_size: int) -> TreeHead:
        if tree_size not in self.heads:
            raise LookupError(f"no signed tree head of size {tree_size}")
        return self.heads[tree_size]

    def tree_head_before(self, stream: str, tree_size: int) -> TreeHead | None:
        sizes = [size for size in self.heads if size < tree_size]
        return self.heads[max(sizes)] if sizes else None

    def inclusion_proofs(self, stream: str, leaf_indices: Iterable[int],
                         tree_size: int) -> dict[int, list[bytes]]:
        ranges = {i: merkle.inclusion_ranges(i, tree_size) for i in set(leaf_indices)}
        nodes = self._nodes({n for r in ranges.values() for n in merkle.nodes_needed(r)})
        return {i: merkle.proof_hashes(r, nodes) for i, r in ranges.items()}

    def consistency_proof(self, stream: str, first: int, second: int) -> list[bytes]:
        ranges = merkle.consistency_ranges(first, second)
        return merkle.proof_hashes(ranges, self._nodes(merkle.nodes_needed(ranges)))

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


def entry(who: str, at: datetime, *, patient: str = "pat-1", interaction: str = "read",
          kind: str = "access", organization: str | None = None,
          detail: dict[str, str] | None = None) -> AuditRecord:
    return AuditRecord(stream="clinical", recorded=rfc3339_ms(at), kind=kind, action="R",
                       interaction=interaction, outcome="0",
                       agent=Agent(who=who, organization=organization),
                       patient=patient, entity_type="Patient", entity_id=patient,
                       detail=detail or {})


@pytest.fixture
def uow() -> FakeRecordUnitOfWork:
    unit = FakeRecordUnitOfWork()
    unit.directory.add_practitioner("dr-1", "HP-1")
    return unit


@pytest.fixture
def log() -> FakeAuditLog:
    """Seven entries: five about pat-1 (three by professionals, two by the patient's
    account), one about pat-2 and one about no patient, a day apart."""
    fake = FakeAuditLog()
    whos = ["Practitioner/dr-1", "account:acc-pat", "Practitioner/dr-2", None,
            "account:acc-pat", "Practitioner/dr-1", None]
    for day, who in enumerate(whos):
        at = NOW - timedelta(days=6 - day)
        if day == 3:
            fake.append(entry("Practitioner/dr-1", at, patient="pat-2"), at)
        elif day == 6:
            fake.append(replace(entry("operator:op", at), patient=None), at)
        else:
            fake.append(entry(str(who), at), at)
    return fake


def test_a_page_lists_the_patients_entries_in_the_logs_order_with_proofs_that_verify(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    page = access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=3,
                          language="en", affinity=AFFINITY)
    assert page.tree_head.tree_size == 7 and page.consistency is None
    assert [e.leaf_index for e in page.entries] == [0, 1, 2]
    assert page.next_after == 2  # more follow
    for shown in page.entries:
        assert shown.record == AuditRecord.from_canonical(shown.leaf_input)
        merkle.verify_inclusion(merkle.leaf_hash(shown.leaf_input), shown.leaf_index, 7,
                                shown.audit_path, page.tree_head.root_hash)
        assert shown.text
    rest = access_history(log, lambda: uow, "pat-1", known_size=None, after=page.next_after,
                          limit=3, language="en", affinity=AFFINITY)
    assert [e.leaf_index for e in rest.entries] == [4, 5] and rest.next_after is None


def test_a_page_without_proofs_leaves_the_paths_empty(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    page = access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=10,
                          language="en", affinity=AFFINITY, with_proofs=False)
    assert len(page.entries) == 5 and all(e.audit_path == [] for e in page.entries)


def test_the_newest_first_reading_shows_the_latest_and_no_next_page(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    page = access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=2,
                          language="en", affinity=AFFINITY, newest_first=True)
    assert [e.leaf_index for e in page.entries] == [5, 4] and page.next_after is None


def test_the_history_names_the_organizations_the_directory_knows(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    uow.directory.organizations["org-1"] = (
        {"resourceType": "Organization", "id": "org-1", "name": "Hôpital Test"}, None)
    at = NOW + timedelta(minutes=1)
    log.append(entry("Practitioner/dr-9", at, organization="Organization/org-1"), at)
    log.append(entry("Practitioner/dr-9", at, organization="Organization/org-9"), at)
    page = access_history(log, lambda: uow, "pat-1", known_size=None, after=5, limit=10,
                          language="en", affinity=AFFINITY)
    named, unknown = (e.text for e in page.entries)
    assert "Practitioner/dr-9, Hôpital Test" in named
    # Someone the directory does not know is shown by reference, and nothing fails.
    assert "Practitioner/dr-9, Organization/org-9" in unknown


def test_a_device_that_saw_a_smaller_head_gets_a_consistency_proof(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    at = NOW + timedelta(minutes=1)
    older = log.sign_tree_head("clinical")
    log.append(entry("Practitioner/dr-1", at), at)
    page = access_history(log, lambda: uow, "pat-1", known_size=older.tree_size, after=-1,
                          limit=10, language="en", affinity=AFFINITY)
    assert page.tree_head.tree_size == 8 and page.consistency is not None
    merkle.verify_consistency(older.tree_size, 8, page.consistency, older.root_hash,
                              page.tree_head.root_hash)


def test_a_tree_head_larger_than_the_log_was_never_published(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(InvalidInput) as refused:
        access_history(log, lambda: uow, "pat-1", known_size=8, after=-1, limit=10,
                       language="en", affinity=AFFINITY)
    assert refused.value.expression == "since"


def test_a_filtered_history_is_read_newest_first(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    with pytest.raises(ValueError, match="newest first"):
        access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=10,
                       language="en", affinity=AFFINITY, keep=lambda r: True)


def test_a_filter_keeps_only_the_entries_it_accepts(
        log: FakeAuditLog, uow: FakeRecordUnitOfWork) -> None:
    page = access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=10,
                          language="en", affinity=AFFINITY, newest_first=True,
                          keep=lambda r: r.agent.who == "Practitioner/dr-1")
    assert [e.leaf_index for e in page.entries] == [5, 0] and not page.partial
    between = access_history(log, lambda: uow, "pat-1", known_size=None, after=-1, limit=10,
                             language="en", affinity=AFFINITY, newest_first=True,
                             keep=lambda r: r.agent.who == "Practitioner/dr-1",
                             recorded_between=(NOW - timedelta(days=6), NOW - timedelta(days=2)))
    assert [e.leaf_index for e in between.entries] == [0]


def test_the_chart_counts_accesses_by_professionals_per_month_not_the_patients_own(
        log: FakeAuditLog) -> None:
    declared = NOW - timedelta(hours=1)
    log.append(entry("Practitioner/dr-3", declared, interaction="emergency-access",
                     kind="policy", detail={"emergency": "w1"}), declared)
    last_month = datetime(2026, 11, 3, tzinfo=UTC)
    log.append(entry("Practitioner/dr-3", last_month), last_month)
    chart = accesses_per_month(log, "pat-1", now=NOW, months=2)
    assert not chart.capped
    november, december = chart.months
    assert (november.year, november.month, december.month) == (2026, 11, 12)
    # dr-3 on the 3rd, then dr-1, dr-2, dr-1 from the 25th; the patient's own two are left
    # out, and so are the entries about pat-2 and about no patient.
    assert november == MonthOfAccesses(2026, 11, 4, 0)
    assert december == MonthOfAccesses(2026, 12, 1, 1)


@pytest.mark.parametrize("months", [0, 121])
def test_a_chart_spans_one_to_a_hundred_and_twenty_months(log: FakeAuditLog,
                                                           months: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        accesses_per_month(log, "pat-1", now=NOW, months=months)
    assert refused.value.expression == "months"


def test_the_completeness_of_a_whole_log_verifies_with_its_public_key(
        log: FakeAuditLog) -> None:
    report = verified_completeness(log, "pat-1", oldest_shown=0)
    assert report is not None and (report.first, report.last, report.count) == (0, 5, 5)


def test_a_removed_entry_breaks_the_completeness_proof(log: FakeAuditLog) -> None:
    head = log.sign_tree_head("clinical")
    data, _patient, who, at = log.rows[2]
    log.rows[2] = (data, "pat-other", who, at)  # the log no longer lists it for pat-1
    assert verified_completeness(log, "pat-1", oldest_shown=0, head=head) is None


def test_a_completeness_proof_starts_at_a_head_that_was_signed(log: FakeAuditLog) -> None:
    log.sign_tree_head("clinical")
    with pytest.raises(InvalidInput):
        completeness_proof(log, "pat-1", since=8)
    with pytest.raises(InvalidInput, match="no tree head of size 3"):
        completeness_proof(log, "pat-1", since=3)
