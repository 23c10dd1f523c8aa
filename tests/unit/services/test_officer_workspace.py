"""What the security officer's workspace reads (`carevault.services.officer_workspace`), over an
audit log in memory (`support.fake_audit_log.FakeAuditLog`, checked against `AuditLog` in
tests/integration/test_store_contracts_alerts.py): an alert's accesses and what they have in
common, the audit search, and each stream's integrity (signature, consistency with the head
before and with the time-stamped one). An access is who, whom, when, why and the outcome,
never what was read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carevault.domain.anomaly import StoredAlert
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import InvalidInput
from carevault.domain.tree_head import TreeHead
from carevault.services.officer_workspace import (
    MAX_EVIDENCE_SHOWN,
    PAGE,
    Access,
    AuditQuery,
    Features,
    alert_accesses,
    features,
    integrity,
    search,
)
from support.fake_audit_log import FakeAuditLog

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 10h in Luxembourg
CHECKED = NOW + timedelta(days=1)


def access(log: FakeAuditLog, at: datetime, *, who: str = "Practitioner/dr-1",
           patient: str | None = "pat-1", organization: str | None = "Organization/org-1",
           outcome: str = "0", why: str | None = "care-event", on_behalf_of: str | None = None,
           entity: str = "Encounter", query: str | None = None,
           stream: str = "clinical") -> int:
    detail = {"basis": why} if why is not None else {}
    return log.append(AuditRecord(
        stream=stream, recorded=rfc3339_ms(at), kind="access", action="R",
        interaction="search-type" if query else "read", outcome=outcome,
        agent=Agent(who=who, role="practitioner", organization=organization,
                    on_behalf_of=on_behalf_of),
        patient=patient, entity_type=entity, query=query, purpose_of_use="TREAT",
        detail=detail), at)


def alert(evidence: tuple[int, ...]) -> StoredAlert:
    return StoredAlert(
        id="a1", group_key="vip|dr-1|pat-1|1", kind="vip", severity=80, status="open",
        verdict=None, professional="dr-1", organization=None, patient_id="pat-1",
        explanation="why", evidence=evidence, raised_at=NOW, updated_at=NOW, assignee=None,
        acknowledged_by=None, closed_by=None, note=None, patient_notified_at=None, version=1)


# --- an alert's accesses --------------------------------------------------------------------


def test_an_alerts_accesses_are_the_clinical_entries_its_evidence_names() -> None:
    log = FakeAuditLog()
    access(log, NOW, who="operator:op", stream="operator")  # leaf 0 of the other stream
    access(log, NOW)
    access(log, NOW + timedelta(minutes=1), patient="pat-2")
    access(log, NOW + timedelta(minutes=2), who="Practitioner/assistant-1",
           on_behalf_of="Practitioner/dr-1", outcome="4", why=None)
    shown = alert_accesses(log, alert((0, 2)))
    assert shown == [
        Access(0, "clinical", NOW, "Practitioner/dr-1", "Organization/org-1", "practitioner",
               "pat-1", "read", "0", "care-event", "TREAT"),
        # An assistant's access is shown as the professional's they acted for.
        Access(2, "clinical", NOW + timedelta(minutes=2), "Practitioner/dr-1",
               "Organization/org-1", "practitioner", "pat-1", "read", "4", None, "TREAT"),
    ]


def test_only_the_latest_accesses_of_a_long_alert_are_shown() -> None:
    log = FakeAuditLog()
    for n in range(MAX_EVIDENCE_SHOWN + 10):
        access(log, NOW + timedelta(seconds=n))
    shown = alert_accesses(log, alert(tuple(range(MAX_EVIDENCE_SHOWN + 10))))
    assert [a.leaf for a in shown] == list(range(10, MAX_EVIDENCE_SHOWN + 10))


def test_what_an_alerts_accesses_have_in_common() -> None:
    log = FakeAuditLog()
    access(log, NOW, why="organization")  # 10h local
    access(log, NOW + timedelta(minutes=5), patient="pat-2", why="organization")
    access(log, NOW + timedelta(hours=13), patient="pat-3", why="emergency")  # 23h local
    access(log, NOW + timedelta(hours=14), outcome="4", why=None)  # 0h local, refused
    common = features(alert_accesses(log, alert((0, 1, 2, 3))))
    assert common == Features(
        accesses=4, patients=3, refused=1,
        bases=(("organization", 2), ("emergency", 1), ("refused", 1)),
        hours=((0, 1), (10, 2), (23, 1)),
        first=NOW, last=NOW + timedelta(hours=14))
    assert features([]) == Features(0, 0, 0, (), (), None, None)


def test_no_access_shows_what_was_read() -> None:
    log = FakeAuditLog()
    access(log, NOW, entity="Observation", query="code=http://loinc.org|4548-4")
    [shown] = alert_accesses(log, alert((0,)))
    [found] = search(log, AuditQuery(patient="pat-1"))[1]
    for seen in (shown, found):
        text = repr(seen)
        assert "Observation" not in text and "4548" not in text and "code=" not in text
        assert seen.interaction == "search-type" and seen.patient == "pat-1"


# --- the audit search -------------------------------------------------------------------------


@pytest.fixture
def log() -> FakeAuditLog:
    """A week: each day dr-1 reads pat-1 at org-1, and dr-2 is refused pat-2 at org-2."""
    fake = FakeAuditLog()
    for day in range(7):
        at = NOW + timedelta(days=day)
        access(fake, at)
        access(fake, at + timedelta(hours=1), who="Practitioner/dr-2", patient="pat-2",
               organization="Organization/org-2", outcome="4", why=None)
    return fake


def leaves(found: tuple[int, list[Access]]) -> tuple[int, list[int]]:
    return found[0], [a.leaf for a in found[1]]


def test_the_audit_search_finds_a_patients_or_a_professionals_entries_newest_first(
        log: FakeAuditLog) -> None:
    assert leaves(search(log, AuditQuery(patient="Patient/pat-1"))) == (7, [12, 10, 8, 6, 4, 2, 0])
    assert leaves(search(log, AuditQuery(patient=" pat-2 "))) == (7, [13, 11, 9, 7, 5, 3, 1])
    assert leaves(search(log, AuditQuery(professional="dr-2", patient="pat-1"))) == (0, [])
    assert leaves(search(log, AuditQuery(professional="Practitioner/dr-1")))[1][:2] == [12, 10]
    assert search(log, AuditQuery(stream="operator")) == (0, [])


def test_the_audit_search_takes_whole_days_from_the_start_to_the_end(log: FakeAuditLog) -> None:
    day = NOW.replace(hour=0)
    query = AuditQuery(patient="pat-1", start=day + timedelta(days=2), end=day + timedelta(days=3))
    assert leaves(search(log, query)) == (2, [6, 4])


def test_the_audit_search_filters_by_organization_and_outcome_among_the_latest_entries(
        log: FakeAuditLog) -> None:
    assert leaves(search(log, AuditQuery(organization="Organization/org-2"))) == (
        7, [13, 11, 9, 7, 5, 3, 1])
    assert leaves(search(log, AuditQuery(outcome="4", professional="dr-1"))) == (0, [])
    assert leaves(search(log, AuditQuery(outcome="0", organization="org-1")))[0] == 7


def test_the_audit_search_pages_through_its_results(log: FakeAuditLog) -> None:
    for n in range(PAGE + 5):
        access(log, NOW + timedelta(days=8, minutes=n), patient="pat-3")
    first = search(log, AuditQuery(patient="pat-3"))
    second = search(log, AuditQuery(patient="pat-3", page=1))
    assert first[0] == second[0] == PAGE + 5
    assert len(first[1]) == PAGE and len(second[1]) == 5
    assert first[1][0].leaf > first[1][-1].leaf > second[1][0].leaf
    # The same pages with a filter applied in memory.
    filtered = search(log, AuditQuery(patient="pat-3", outcome="0", page=1))
    assert filtered[0] == PAGE + 5 and [a.leaf for a in filtered[1]] == [
        a.leaf for a in second[1]]


@pytest.mark.parametrize("query", [
    AuditQuery(stream="billing"),
    AuditQuery(outcome="1"),
    AuditQuery(page=-1),
    AuditQuery(page=10_001),
    AuditQuery(patient="pat 1"),
    AuditQuery(professional="dr-1' OR 1=1"),
    AuditQuery(organization="o" * 65),
    AuditQuery(start=NOW, end=NOW - timedelta(days=1)),
])
def test_the_audit_search_refuses_what_it_cannot_mean(log: FakeAuditLog,
                                                      query: AuditQuery) -> None:
    with pytest.raises(InvalidInput):
        search(log, query)


# --- the log's integrity ----------------------------------------------------------------------


def test_a_log_with_no_head_yet_gets_one_signed_and_it_verifies() -> None:
    log = FakeAuditLog()
    access(log, NOW)
    clinical, operator = integrity(log, lambda: CHECKED)
    assert (clinical.stream, clinical.tree_size, clinical.signature_valid) == ("clinical", 1, True)
    assert (operator.stream, operator.tree_size, operator.signature_valid) == ("operator", 0, True)
    assert clinical.root_hash == log.tree_head("clinical", 1).root_hash.hex()
    for state in (clinical, operator):
        assert state.previous_size is state.consistent is None
        assert state.stamped_size is state.stamped_consistent is None
        assert state.checked_at == CHECKED


def test_a_log_only_appended_to_is_consistent_with_its_earlier_and_time_stamped_heads() -> None:
    log = FakeAuditLog()
    access(log, NOW)
    log.sign_tree_head("clinical")
    log.stamp_latest_tree_head("clinical")
    access(log, NOW + timedelta(minutes=1))
    access(log, NOW + timedelta(minutes=2))
    log.sign_tree_head("clinical")
    access(log, NOW + timedelta(minutes=3))
    log.sign_tree_head("clinical")
    clinical = integrity(log, lambda: CHECKED)[0]
    assert (clinical.tree_size, clinical.previous_size, clinical.stamped_size) == (4, 3, 1)
    assert clinical.signature_valid and clinical.consistent and clinical.stamped_consistent


def test_a_rewritten_entry_breaks_the_consistency_with_the_earlier_heads() -> None:
    log = FakeAuditLog()
    for minute in range(3):
        access(log, NOW + timedelta(minutes=minute))
    log.sign_tree_head("clinical")
    log.stamp_latest_tree_head("clinical")
    access(log, NOW + timedelta(minutes=3))
    log.sign_tree_head("clinical")
    data, patient, who, at = log.rows[1]
    log.rows[1] = (data.replace(b"pat-1", b"pat-9"), patient, who, at)
    clinical = integrity(log, lambda: CHECKED)[0]
    assert clinical.signature_valid  # the heads themselves are as signed
    assert clinical.consistent is False and clinical.stamped_consistent is False


def test_a_head_whose_signature_does_not_verify_is_shown_as_such() -> None:
    log = FakeAuditLog()
    access(log, NOW)
    head = log.sign_tree_head("clinical")
    log.heads[1] = TreeHead(head.tree_size, head.root_hash, head.timestamp_ms, bytes(64))
    clinical, operator = integrity(log, lambda: CHECKED)
    assert not clinical.signature_valid and operator.signature_valid
