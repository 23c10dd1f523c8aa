"""The security officer's alerts (`carevault.services.anomaly_detection`) on a unit of work in
memory and an audit log in memory: the chore that reads the clinical stream and the operators'
stream in time order and raises alerts with the entries they rest on, moving its places in both
streams in the same transaction; the restart that rebuilds what the detector knew; and the
officer's review (acknowledge, assign, close, notify the patient), one transaction each,
refused on a closed alert, and optimistic.

The stores are `support.fake_uow`'s (`FakeAlertStore`, `support.fake_directory`) and the log is
`support.fake_audit_log.FakeAuditLog`; tests/integration/test_store_contracts*.py checks them
against the real ones, and tests/integration/test_access_alerts.py runs the service wired on
real databases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carevault.domain import access_basis as basis
from carevault.domain.anomaly import FEATURES
from carevault.domain.audit import Agent, AuditRecord, rfc3339_ms
from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from carevault.services.anomaly_detection import (
    MODEL_MIN_ROWS,
    AnomalyDetection,
    RecentLeaves,
    ScanReport,
    StoredAlert,
)
from support.builders import hospital, patient
from support.fake_audit_log import FakeAuditLog
from support.fake_directory import directory_context
from support.fake_uow import FakeAlertStore, FakeUnitOfWork

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday, 10h in Luxembourg
CTX = directory_context(lambda: NOW)
CELEBRITY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}
OFFICER = "account:officer"


@dataclass
class World:
    """A hospital, a patient flagged VIP (``star``), an ordinary one (``plain``), and two
    physicians of the hospital (``nosy`` and ``other``); the log, and the service's clock."""

    uow: FakeUnitOfWork
    log: FakeAuditLog
    org: str
    star: str
    plain: str
    nosy: str
    other: str
    now: datetime = NOW + timedelta(days=1)

    def service(self, model: Any = None) -> AnomalyDetection:
        """The service as a process builds it at its start (a new one: a restart)."""
        return AnomalyDetection(lambda: self.uow, self.log, lambda: self.now, model=model)

    def access(self, who: str, patient: str, at: datetime, why: str | None, *,
               outcome: str = "0", entity: str = "Encounter", action: str = "R",
               query: str | None = None) -> int:
        detail = {"basis": why} if why is not None else {}
        return self.log.append(AuditRecord(
            stream="clinical", recorded=rfc3339_ms(at), kind="access", action=action,
            interaction="read" if action == "R" else "create", outcome=outcome,
            agent=Agent(who=f"Practitioner/{who}", role="practitioner",
                        organization=f"Organization/{self.org}"),
            patient=patient, entity_type=entity, query=query, detail=detail), at)

    def hand_change(self, professionals: Sequence[str], at: datetime, *,
                    outcome: str = "0") -> int:
        """A registrar's PractitionerRole written by hand, in the operators' stream."""
        return self.log.append(AuditRecord(
            stream="operator", recorded=rfc3339_ms(at), kind="operator", action="C",
            interaction="create", outcome=outcome,
            agent=Agent(who="account:registrar", role="registrar"),
            entity_type="PractitionerRole",
            detail={"directory-change": "providers", "professionals": ",".join(professionals)}),
            at)

    def alerts(self, kind: str) -> list[StoredAlert]:
        with self.uow:
            return self.uow.alerts.search(kind=(kind,))[1]

    def cursor(self, stream: str) -> int:
        with self.uow:
            return self.uow.alerts.cursor(stream)


@pytest.fixture
def world() -> World:
    uow = FakeUnitOfWork()
    with uow:
        [org] = svc.register_organizations(uow, CTX, [hospital(CTX.systems)])
    star = patient(CTX.systems, 1, family="Star")
    star["meta"] = {"security": [CELEBRITY]}
    with uow:
        star_stored, plain = svc.register_patients(uow, CTX, [star, patient(CTX.systems, 2)])
    with uow:
        ((nosy, _), (other, _)) = svc.register_professionals(uow, CTX, [
            svc.NewProfessional(new_practitioner(CTX.systems, identifier=f"HP-{n}", family=n,
                                                 given=["Jo"]), "physician", "cardiology", org.id)
            for n in ("Curieux", "Autre")])
    uow.commits = 0
    return World(uow, FakeAuditLog(), org.id, star_stored.id, plain.id, nosy.id, other.id)


# --- the chore: what it reads and raises --------------------------------------------------------


def test_a_vip_record_reached_through_the_organization_raises_an_alert_with_the_access_as_evidence(
        world: World) -> None:
    leaf = world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    report = world.service().scan()
    assert report == ScanReport(read=1, alerts=1, position=1)
    [vip] = world.alerts("vip")
    assert (vip.professional, vip.patient_id, vip.evidence) == (world.nosy, world.star, (leaf,))
    assert (vip.status, vip.severity, vip.version) == ("open", 80, 1)
    assert "organization" in vip.explanation and vip.raised_at == world.now
    # The alerts and the detector's new place in the log, in one transaction.
    assert world.uow.commits == 1 and world.cursor("clinical") == 1


def test_nothing_is_raised_twice_once_the_cursor_has_moved(world: World) -> None:
    world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    service = world.service()
    service.scan()
    [before] = world.alerts("vip")
    assert service.scan() == ScanReport(read=0, alerts=0, position=1)
    assert world.alerts("vip") == [before]  # not even extended
    assert world.uow.commits == 1  # a scan that read nothing writes nothing
    # A restart reads on from the stored place, not from the log's start.
    assert world.service().scan() == ScanReport(read=0, alerts=0, position=1)
    assert world.alerts("vip") == [before]


def test_further_looks_at_the_same_record_that_day_add_to_one_alert(world: World) -> None:
    first = world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    service = world.service()
    service.scan()
    second = world.access(world.nosy, world.star, NOW + timedelta(minutes=5),
                          basis.ORGANIZATION)
    assert service.scan().alerts == 1
    [vip] = world.alerts("vip")
    assert vip.evidence == (first, second) and vip.version == 2


def test_an_access_the_patient_chose_raises_nothing_and_the_cursor_moves_on(
        world: World) -> None:
    world.access(world.nosy, world.star, NOW, basis.GRANT)
    world.access(world.other, world.plain, NOW, basis.CARE_EVENT)
    assert world.service().scan() == ScanReport(read=2, alerts=0, position=2)
    with world.uow:
        assert world.uow.alerts.search() == (0, [])
    assert world.cursor("clinical") == 2 and world.uow.commits == 1


def test_every_emergency_access_is_an_alert_to_review_one_per_professional_patient_and_day(
        world: World) -> None:
    first = world.access(world.nosy, world.plain, NOW, basis.EMERGENCY)
    again = world.access(world.nosy, world.plain, NOW + timedelta(hours=1), basis.EMERGENCY)
    next_day = world.access(world.nosy, world.plain, NOW + timedelta(days=1), basis.EMERGENCY)
    refused = world.access(world.other, world.plain, NOW, basis.EMERGENCY, outcome="4")
    world.now = NOW + timedelta(days=2)
    assert world.service().scan().position == 4
    reviews = sorted(world.alerts("emergency-access"), key=lambda a: a.evidence)
    assert [a.evidence for a in reviews] == [(first, again), (next_day,)]
    assert refused not in {leaf for a in reviews for leaf in a.evidence}
    assert all((a.professional, a.patient_id, a.organization, a.severity)
               == (world.nosy, world.plain, world.org, 40) for a in reviews)


def test_an_emergency_review_rests_on_the_accesses_not_on_the_care_written_meanwhile(
        world: World) -> None:
    read = world.access(world.nosy, world.plain, NOW, basis.EMERGENCY)
    world.access(world.nosy, world.plain, NOW + timedelta(minutes=10), basis.EMERGENCY,
                 entity="DocumentReference", action="C")
    world.service().scan()
    assert [a.evidence for a in world.alerts("emergency-access")] == [(read,)]


def test_a_hand_made_role_change_then_an_access_through_the_organization_raises_a_directory_alert(
        world: World) -> None:
    world.hand_change([world.nosy], NOW)
    leaf = world.access(world.nosy, world.plain, NOW + timedelta(hours=1), basis.ORGANIZATION)
    world.access(world.other, world.plain, NOW + timedelta(hours=1), basis.ORGANIZATION)
    assert world.service().scan().alerts == 1
    [found] = world.alerts("directory")
    assert found.professional == world.nosy and found.evidence == (leaf,)
    assert "hand-made change" in found.explanation
    assert world.cursor("operator") == 1 and world.cursor("clinical") == 2


def test_a_hand_made_change_recorded_after_an_access_is_no_cause_of_it(world: World) -> None:
    world.access(world.nosy, world.plain, NOW, basis.ORGANIZATION)
    world.hand_change([world.nosy], NOW + timedelta(hours=1))
    later = world.access(world.nosy, world.plain, NOW + timedelta(hours=2), basis.ORGANIZATION)
    world.service().scan()  # both streams read in one scan, merged in time order
    [found] = world.alerts("directory")
    assert found.evidence == (later,)  # the access before the change is not in it


def test_a_change_recorded_after_the_last_clinical_entry_read_waits_for_the_next_scan(
        world: World) -> None:
    world.access(world.nosy, world.plain, NOW, basis.ORGANIZATION)
    world.hand_change([world.nosy], NOW + timedelta(hours=1))
    later = world.access(world.nosy, world.plain, NOW + timedelta(hours=2), basis.ORGANIZATION)
    service = world.service()
    assert service.scan(limit=1) == ScanReport(read=1, alerts=0, position=1)
    assert world.cursor("operator") == 0  # judged among the clinical entries of its time
    assert service.scan(limit=1) == ScanReport(read=1, alerts=1, position=2)
    assert world.cursor("operator") == 1
    assert [a.evidence for a in world.alerts("directory")] == [(later,)]


def test_a_refused_hand_made_change_changed_nothing_and_raises_nothing(world: World) -> None:
    world.hand_change([world.nosy], NOW, outcome="4")
    world.access(world.nosy, world.plain, NOW + timedelta(hours=1), basis.ORGANIZATION)
    world.service().scan()
    assert world.alerts("directory") == []
    assert world.cursor("operator") == 1  # read, and passed


def test_a_change_alone_moves_the_operators_place_and_raises_nothing(world: World) -> None:
    world.hand_change([world.nosy], NOW)
    assert world.service().scan() == ScanReport(read=0, alerts=0, position=0)
    assert world.cursor("operator") == 1 and world.uow.commits == 1


def test_the_chore_reads_batch_after_batch_to_the_logs_end_within_its_rounds(
        world: World) -> None:
    for minute in range(5):
        world.access(world.other, world.plain, NOW + timedelta(minutes=minute), basis.CARE_EVENT)
    world.access(world.nosy, world.star, NOW + timedelta(minutes=9), basis.ORGANIZATION)
    assert world.service().catch_up(limit=2, rounds=2) == ScanReport(4, 0, 4)
    assert world.service().catch_up(limit=2) == ScanReport(2, 1, 6)
    assert world.service().catch_up(limit=2) == ScanReport(0, 0, 6)


def test_a_label_given_after_the_detector_read_the_patient_counts_once_the_log_says_so(
        world: World) -> None:
    service = world.service()
    world.access(world.nosy, world.plain, NOW, basis.ORGANIZATION)
    service.scan()  # the detector reads the patient: not a VIP
    with world.uow:
        current = svc.read_patient(world.uow, world.plain).resource
        svc.update_patient(world.uow, CTX, world.plain,
                           {**current, "meta": {"security": [CELEBRITY]}})
    at = NOW + timedelta(minutes=30)
    world.log.append(AuditRecord(
        stream="clinical", recorded=rfc3339_ms(at), kind="access", action="U",
        interaction="update", outcome="0", agent=Agent(who="account:registrar", role="registrar"),
        patient=world.plain, entity_type="Patient", entity_id=world.plain), at)
    leaf = world.access(world.nosy, world.plain, NOW + timedelta(hours=1), basis.ORGANIZATION)
    service.scan()
    [vip] = world.alerts("vip")
    assert vip.patient_id == world.plain and vip.evidence == (leaf,)


def test_no_medical_content_reaches_an_alert(world: World) -> None:
    world.access(world.nosy, world.star, NOW, basis.EMERGENCY, entity="Observation",
                 query="code=http://loinc.org|4548-4&value-quantity=gt7")
    world.service().scan()
    with world.uow:
        total, found = world.uow.alerts.search()
    assert total == 2 and {a.kind for a in found} == {"vip", "emergency-access"}
    for alert in found:
        shown = repr(alert)
        assert "Observation" not in shown and "4548" not in shown and "code=" not in shown
        assert alert.professional == world.nosy and alert.patient_id == world.star


# --- a restart, and the officer's verdicts --------------------------------------------------


def test_a_restart_rebuilds_from_both_streams_what_the_detector_knew_and_raises_nothing(
        world: World) -> None:
    world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    world.hand_change([world.nosy], NOW + timedelta(minutes=1))
    world.service().scan()
    [vip] = world.alerts("vip")
    commits = world.uow.commits
    restarted = world.service()
    assert restarted.warm() == 1  # the clinical entries it read again
    assert world.uow.commits == commits and world.alerts("vip") == [vip]
    assert world.cursor("clinical") == 1 and world.cursor("operator") == 1
    # It knows of the change it read before the restart: an access now is judged with it.
    leaf = world.access(world.nosy, world.plain, NOW + timedelta(hours=1), basis.ORGANIZATION)
    restarted.scan()
    assert [a.evidence for a in world.alerts("directory")] == [(leaf,)]


def test_a_false_positive_lowers_that_kind_for_that_professional_now_and_after_a_restart(
        world: World) -> None:
    service = world.service()
    world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    service.scan()
    [vip] = world.alerts("vip")
    service.close(vip.id, OFFICER, "false-positive")
    day = timedelta(days=1)
    world.access(world.nosy, world.star, NOW + day, basis.ORGANIZATION)
    world.access(world.other, world.star, NOW + day, basis.ORGANIZATION)
    service.scan()
    assert sorted(a.professional for a in world.alerts("vip")) == sorted([world.nosy, world.other])
    assert [a.id for a in world.alerts("vip") if a.professional == world.nosy] == [vip.id]
    # A new process replays the verdicts into its detector.
    world.access(world.nosy, world.star, NOW + 2 * day, basis.ORGANIZATION)
    world.service().scan()
    assert [a.id for a in world.alerts("vip") if a.professional == world.nosy] == [vip.id]


def test_a_true_positive_makes_that_kind_more_severe_for_that_professional(
        world: World) -> None:
    service = world.service()
    world.access(world.nosy, world.star, NOW, basis.ORGANIZATION)
    service.scan()
    [vip] = world.alerts("vip")
    service.close(vip.id, OFFICER, "true-positive")
    world.access(world.nosy, world.star, NOW + timedelta(days=1), basis.ORGANIZATION)
    service.scan()
    assert sorted(a.severity for a in world.alerts("vip")) == [80, 100]


class _Model:
    """An isolation forest's stand-in: it records what it was fitted on and scores alike."""

    def __init__(self, score: float) -> None:
        self.fitted: list[int] = []
        self.value = score

    def fit(self, rows: Sequence[Sequence[float]]) -> None:
        assert all(len(row) == len(FEATURES) for row in rows)
        self.fitted.append(len(rows))

    def score(self, rows: Sequence[Sequence[float]]) -> list[float]:
        return [self.value for _ in rows]


def test_the_model_orders_the_findings_once_fitted_and_never_raises_an_alert_on_its_own(
        world: World) -> None:
    model = _Model(0.9)
    service = world.service(model)
    for n in range(MODEL_MIN_ROWS - 2):
        world.access(world.other, world.plain, NOW + timedelta(seconds=n), basis.CARE_EVENT)
    world.access(world.nosy, world.star, NOW + timedelta(hours=1), basis.ORGANIZATION)
    service.scan(limit=1_000)
    assert model.fitted == [] and not service.model_fitted  # one row short
    [unscored] = world.alerts("vip")
    assert unscored.severity == 80 and "isolation-forest" not in unscored.explanation
    model.value = 1.0  # the most isolated: alone it raises nothing
    world.access(world.other, world.plain, NOW + timedelta(hours=2), basis.CARE_EVENT)
    world.access(world.nosy, world.star, NOW + timedelta(days=1), basis.ORGANIZATION)
    assert service.scan().alerts == 1
    assert model.fitted == [MODEL_MIN_ROWS + 1]
    scored = next(a for a in world.alerts("vip") if a.id != unscored.id)
    assert scored.severity == 90  # the rules' 0.8 and a tenth of the model's score
    assert "isolation-forest score 1.00" in scored.explanation


# --- the officer's review -------------------------------------------------------------------


def planted(world: World, kind: str = "vip", patient: str | None = "star") -> StoredAlert:
    """An alert as the chore stores it."""
    alert = StoredAlert(
        id=f"alert-{kind}", group_key=f"{kind}|{world.nosy}|{patient or ''}|1", kind=kind,
        severity=80, status="open", verdict=None, professional=world.nosy, organization=None,
        patient_id=world.star if patient == "star" else patient, explanation="why",
        evidence=(0,), raised_at=NOW, updated_at=NOW, assignee=None, acknowledged_by=None,
        closed_by=None, note=None, patient_notified_at=None, version=1)
    with world.uow:
        world.uow.alerts.raise_or_extend(alert)
        world.uow.commit()
    world.uow.commits = 0
    return alert


def stored(world: World, alert_id: str) -> StoredAlert:
    with world.uow:
        found = world.uow.alerts.get(alert_id)
    assert found is not None
    return found


def test_acknowledging_an_alert_records_who_and_when_in_a_new_version(world: World) -> None:
    alert = planted(world)
    done = world.service().acknowledge(alert.id, OFFICER)
    assert (done.status, done.acknowledged_by, done.version) == ("acknowledged", OFFICER, 2)
    assert done.updated_at == world.now and stored(world, alert.id) == done
    assert world.uow.commits == 1


def test_assigning_an_alert_names_the_assignee_and_acknowledges_it(world: World) -> None:
    alert = planted(world)
    done = world.service().assign(alert.id, OFFICER, "  Lead investigator ")
    assert (done.assignee, done.status, done.acknowledged_by) == (
        "Lead investigator", "acknowledged", OFFICER)


@pytest.mark.parametrize("assignee", ["", "   ", "x" * 256, "Lead\ninvestigator"])
def test_an_alert_is_assigned_to_someone_named_in_one_printable_line(
        world: World, assignee: str) -> None:
    alert = planted(world)
    with pytest.raises(InvalidInput) as refused:
        world.service().assign(alert.id, OFFICER, assignee)
    assert refused.value.expression == "assignee"
    assert stored(world, alert.id) == alert and world.uow.commits == 0


def test_closing_an_alert_keeps_the_verdict_the_note_and_who_closed_it(world: World) -> None:
    alert = planted(world)
    done = world.service().close(alert.id, OFFICER, "true-positive", "confirmed with the ward")
    assert (done.status, done.verdict, done.closed_by, done.note) == (
        "closed", "true-positive", OFFICER, "confirmed with the ward")
    with world.uow:
        assert world.uow.alerts.closed_verdicts() == [(world.nosy, "vip", "true-positive")]
    other = planted(world, "bulk", None)
    assert world.service().close(other.id, OFFICER, "false-positive").note is None


@pytest.mark.parametrize(("verdict", "note", "expression"), [
    ("maybe", "", "verdict"), ("false-positive", "n" * 1_001, "note")])
def test_a_close_needs_a_known_verdict_and_a_short_note(
        world: World, verdict: str, note: str, expression: str) -> None:
    alert = planted(world)
    with pytest.raises(InvalidInput) as refused:
        world.service().close(alert.id, OFFICER, verdict, note)
    assert refused.value.expression == expression
    assert stored(world, alert.id) == alert


def test_a_closed_alert_refuses_every_further_review_action(world: World) -> None:
    alert = planted(world)
    service = world.service()
    closed = service.close(alert.id, OFFICER, "true-positive")
    world.uow.commits = 0
    for act in (lambda: service.acknowledge(alert.id, OFFICER),
                lambda: service.assign(alert.id, OFFICER, "Someone"),
                lambda: service.close(alert.id, OFFICER, "false-positive"),
                lambda: service.notify_patient(alert.id, OFFICER)):
        with pytest.raises(BusinessRuleViolation):
            act()
    assert stored(world, alert.id) == closed
    assert world.uow.commits == 0 and world.uow.records.notifications == []


def test_a_closed_alert_has_no_review_left_to_tell_the_patient_of(world: World) -> None:
    """The notice says the officer *is* reviewing an access: once the alert is closed it would
    be untrue (the workspace offers no notice then; the API's $notify-patient reached it)."""
    alert = planted(world)
    service = world.service()
    service.close(alert.id, OFFICER, "false-positive")
    with pytest.raises(BusinessRuleViolation, match="closed"):
        service.notify_patient(alert.id, OFFICER)
    assert world.uow.records.notifications == []
    assert stored(world, alert.id).patient_notified_at is None


def test_an_unknown_alert_is_not_found(world: World) -> None:
    service = world.service()
    for act in (lambda: service.alert("nope"), lambda: service.acknowledge("nope", OFFICER),
                lambda: service.notify_patient("nope", OFFICER)):
        with pytest.raises(NotFound):
            act()


class _Rival(FakeAlertStore):
    """The alerts' store while another officer changes the same alert between this officer's
    reading it and changing it (once)."""

    rival: dict[str, Any] | None = None

    def change(self, alert_id: str, version: int, now: datetime,
               **values: str | datetime | None) -> bool:
        if self.rival is not None:
            theirs, self.rival = self.rival, None
            assert super().change(alert_id, version, now, **theirs)
        return super().change(alert_id, version, now, **values)


def racing(world: World, **theirs: Any) -> None:
    store = _Rival()
    store.rows, store.cursors = world.uow.alerts.rows, world.uow.alerts.cursors
    store.rival = theirs
    world.uow.alerts = store
    world.uow.commit()
    world.uow.commits = 0


@pytest.mark.parametrize("action", ["acknowledge", "assign", "close"])
def test_an_officer_changing_an_alert_another_just_changed_is_told_to_reload(
        world: World, action: str) -> None:
    alert = planted(world)
    racing(world, assignee="Someone else")
    service = world.service()
    with pytest.raises(Conflict):
        {"acknowledge": lambda: service.acknowledge(alert.id, OFFICER),
         "assign": lambda: service.assign(alert.id, OFFICER, "Me"),
         "close": lambda: service.close(alert.id, OFFICER, "false-positive")}[action]()
    assert world.uow.commits == 0 and stored(world, alert.id).status == "open"


def test_a_conflicting_notification_of_the_patient_leaves_no_notification(world: World) -> None:
    alert = planted(world)
    racing(world, status="acknowledged")
    with pytest.raises(Conflict):
        world.service().notify_patient(alert.id, OFFICER)
    assert world.uow.records.notifications == [] and world.uow.commits == 0
    assert stored(world, alert.id).patient_notified_at is None


def test_the_patient_is_told_of_the_review_once_and_nothing_of_the_finding(world: World) -> None:
    alert = planted(world)
    service = world.service()
    done = service.notify_patient(alert.id, OFFICER)
    assert done.patient_notified_at == world.now and done.status == "open"
    [notice] = world.uow.records.notifications
    assert (notice.patient_id, notice.kind, notice.created_at) == (
        world.star, "security-review", world.now)
    told = str(notice.payload)
    assert world.nosy not in told and "vip" not in told.lower() and "why" not in told
    assert {"en", "fr"} <= set(notice.payload)
    with pytest.raises(BusinessRuleViolation, match="already notified"):
        service.notify_patient(alert.id, OFFICER)
    assert len(world.uow.records.notifications) == 1


def test_an_alert_about_no_single_patient_has_nobody_to_notify(world: World) -> None:
    alert = planted(world, "bulk", None)
    with pytest.raises(BusinessRuleViolation, match="no single patient"):
        world.service().notify_patient(alert.id, OFFICER)
    assert world.uow.records.notifications == []


def test_the_queue_is_searched_by_known_states_and_kinds(world: World) -> None:
    vip = planted(world)
    bulk = planted(world, "bulk", None)
    service = world.service()
    service.acknowledge(bulk.id, OFFICER)
    assert service.search(status=("open",)) == (1, [vip])
    total, both = service.search(kind=("bulk", "vip"))
    assert total == 2 and {a.id for a in both} == {vip.id, bulk.id}
    assert service.search(kind=("odd-hours",)) == (0, [])
    with pytest.raises(InvalidInput) as refused:
        service.search(status=("pending",))
    assert refused.value.expression == "status"
    assert service.alert(vip.id) == vip


def test_the_recent_leaves_keep_the_last_positions_in_fixed_memory() -> None:
    leaves = RecentLeaves(4)
    for position in range(10):
        leaves.add(position, 1000 + position)
    assert [leaves.get(p) for p in range(10)] == [None] * 6 + [1006, 1007, 1008, 1009]
    leaves.add(12, 5)  # positions skipped (operator-stream events) leave their slots stale
    assert (leaves.get(12), leaves.get(8)) == (5, None)
    assert leaves.get(9) == 1009 and leaves.get(13) is None
