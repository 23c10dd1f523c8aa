"""The patient's access history (`carevault.services.access_history`) over an audit log in
memory: its pages in the log's order with inclusion proofs that verify against the signed tree
head, the newest-first filtered reading, the accesses-per-month chart, and the completeness
proof, which verifies with the log's public key only while the log is whole.

The log is `support.fake_audit_log.FakeAuditLog`, a stand-in for `AuditLog` implementing only
the methods the services call; its hashes, proofs, chain links and signatures are the real ones
(`carevault.domain`), so a proof it serves is checked as a device would check it. The log on a
database is tested in tests/integration/test_access_history.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from carevault.api.fhir.terminology_handlers import load_affinity_domain
from carevault.domain import merkle
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import InvalidInput
from carevault.services.access_history import (
    MonthOfAccesses,
    access_history,
    accesses_per_month,
    completeness_proof,
    verified_completeness,
)
from support.fake_audit_log import FakeAuditLog
from support.fake_records import FakeRecordUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
AFFINITY = load_affinity_domain(None)


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


def test_the_chart_counts_a_break_the_glass_once_as_the_page_tells_it(log: FakeAuditLog) -> None:
    """Its declaration, its request and the officer's alert are three entries and one access
    (one emergency); a read under it is an access of its own."""
    at = NOW - timedelta(hours=1)
    before = accesses_per_month(log, "pat-1", now=NOW, months=1).months[0]
    log.append(entry("Practitioner/dr-3", at, interaction="emergency-access", kind="policy",
                     detail={"emergency": "w1"}), at)
    request = entry("Practitioner/dr-3", at, interaction="operation")
    log.append(replace(request, query="$emergency-access"), at)
    log.append(entry("Practitioner/dr-3", at, interaction="operation", kind="alert",
                     detail={"rule": "emergency", "decision": "permit"}), at)
    log.append(entry("Practitioner/dr-3", at), at)
    after = accesses_per_month(log, "pat-1", now=NOW, months=1).months[0]
    assert (after.accesses - before.accesses, after.emergencies - before.emergencies) == (2, 1)


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
