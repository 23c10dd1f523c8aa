"""The access anomaly detector's rules, each on a small hand-made stream, and its baselines."""

from __future__ import annotations

from carevault.domain import access_basis as basis
from carevault.domain.anomaly import (
    ACCESS,
    ALERT_SEVERITY,
    CARE_EVENT,
    DAY,
    DIRECTORY_CHANGE,
    FEATURES,
    HOUR,
    WRITE,
    Assessment,
    Detector,
    Directory,
    Event,
    Finding,
    Person,
    combined,
)

MINUTE = 60.0
HOSPITAL_STAFF = {f"dr-{i}": Person(f"name{i}", f"home{i}") for i in range(30)}


def directory(**extra: object) -> Directory:
    patients = {f"p{i}": Person(f"family{i}", f"house{i}") for i in range(500)}
    patients["p-vip"] = Person("Famous", "castle")
    patients["p-mate"] = Person("Mate", "flat")
    patients["p-spouse"] = Person("Other", "home0")
    return Directory(
        HOSPITAL_STAFF,
        patients,
        frozenset({"p-vip"}),
        {"p-mate": frozenset({"H1"})},
        {"family1": 0.01, "Famous": 0.0001, "Mate": 0.0001, "Other": 0.02},
        {"H1": 300, "F1": 4},
    )


def access(at: float, who: str, patient: str, why: str | None, org: str = "H1") -> Event:
    return Event(at, ACCESS, who, org, "physician/internal", patient, why, why is not None)


def run(detector: Detector, events: list[Event]) -> list[Finding]:
    found: list[Finding] = []
    for event in events:
        found.extend(detector.due(event.at))
        found.extend(detector.observe(event).findings)
    return [f for f in found if f.severity >= ALERT_SEVERITY]


def kinds(findings: list[Finding]) -> set[str]:
    return {finding.kind for finding in findings}


def day_routine(who: str, days: int, per_day: int = 10, org: str = "H1") -> list[Event]:
    """Ordinary day work: patients with a proved care event, between 9 and 17 h."""
    events = []
    for day in range(days):
        for k in range(per_day):
            at = day * DAY + 9 * HOUR + k * 45 * MINUTE
            events.append(access(at, who, f"p{(day * per_day + k) % 400}", basis.CARE_EVENT, org))
    return events


def test_ordinary_care_raises_nothing_and_every_access_has_its_features() -> None:
    detector = Detector(directory())
    findings: list[Finding] = []
    for event in day_routine("dr-1", 10):
        assessment = detector.observe(event)
        assert len(assessment.features) == len(FEATURES)
        findings.extend(assessment.findings)
    assert findings == []


def test_vip_and_colleague_through_the_organization_not_through_a_care_event() -> None:
    detector = Detector(directory())
    found = run(
        detector,
        [
            access(1000.0, "dr-1", "p-vip", basis.CARE_EVENT),
            access(2000.0, "dr-2", "p-vip", basis.ORGANIZATION),
            access(3000.0, "dr-3", "p-mate", basis.ORGANIZATION),
            access(4000.0, "dr-4", "p-mate", basis.GRANT),
        ],
    )
    assert {(f.kind, f.professional) for f in found} == {("vip", "dr-2"), ("colleague", "dr-3")}


def test_a_patient_who_is_a_professional_elsewhere_is_a_colleague_less_severely() -> None:
    plain = directory()
    fellows = Directory(plain.professionals, plain.patients, plain.vip, plain.works_at,
                        plain.name_share, plain.organization_size,
                        professional_patients=frozenset({"p7", "p-mate"}))
    found = run(
        Detector(fellows),
        [
            access(1000.0, "dr-2", "p7", basis.EMERGENCY),  # a professional elsewhere
            access(2000.0, "dr-3", "p-mate", basis.ORGANIZATION),  # and in the same house
            access(3000.0, "dr-4", "p7", basis.CARE_EVENT),  # their own doctor
        ],
    )
    colleague = sorted((f.professional, f.severity) for f in found if f.kind == "colleague")
    assert colleague == [("dr-2", 0.6), ("dr-3", 0.75)]
    assert "is a health professional" in next(f.explanation for f in found
                                              if f.professional == "dr-2")
    assert "colleague" not in kinds(run(Detector(directory()),
                                        [access(1000.0, "dr-2", "p7", basis.EMERGENCY)]))


def test_a_small_organization_is_not_a_broad_basis() -> None:
    detector = Detector(directory())
    found = run(detector, [access(1000.0, "dr-2", "p-vip", basis.ORGANIZATION, org="F1")])
    assert "vip" not in kinds(found)


def test_relative_at_the_same_address_or_with_a_rare_name() -> None:
    staff = dict(HOSPITAL_STAFF)
    staff["dr-famous"] = Person("Famous", "elsewhere")
    found_directory = directory()
    found_directory.professionals = staff
    detector = Detector(found_directory)
    found = run(
        detector,
        [
            access(1000.0, "dr-0", "p-spouse", basis.EMERGENCY),  # lives at dr-0's address
            access(2000.0, "dr-famous", "p-vip", basis.REFERRING),  # the patient's own choice
            access(2500.0, "dr-famous", "p-vip", basis.TEAM),  # a team the patient chose
            access(3000.0, "dr-famous", "p-vip", basis.ORGANIZATION),  # a rare name, broad
        ],
    )
    relatives = [(f.professional, f.severity) for f in found if f.kind == "relative"]
    assert [who for who, _ in relatives] == ["dr-0", "dr-famous"]
    assert relatives[0][1] > relatives[1][1]


def test_bulk_is_many_new_weakly_explained_patients_within_an_hour() -> None:
    detector = Detector(directory())
    events = [
        access(10 * HOUR + k * 2 * MINUTE, "dr-5", f"p{k}", basis.ORGANIZATION) for k in range(25)
    ]
    found = [f for f in run(detector, events) if f.kind == "bulk"]
    assert found and found[0].severity >= ALERT_SEVERITY
    calm = Detector(directory())
    spread = [access(k * 3 * HOUR, "dr-5", f"p{k}", basis.ORGANIZATION) for k in range(25)]
    assert "bulk" not in kinds(run(calm, spread))


def test_emergency_as_a_routine_against_peers() -> None:
    detector = Detector(directory())
    events: list[Event] = []
    for i in range(6):
        events.extend(day_routine(f"dr-{i}", 3))
    for k in range(6):
        events.append(access(3 * DAY + k * HOUR, "dr-7", f"p{300 + k}", basis.EMERGENCY))
    found = [f for f in run(detector, sorted(events, key=lambda e: e.at)) if f.kind == "emergency"]
    assert found and all(f.professional == "dr-7" for f in found)
    one = Detector(directory())
    single = sorted(
        [*day_routine("dr-1", 3), access(2 * DAY, "dr-1", "p9", basis.EMERGENCY)],
        key=lambda e: e.at,
    )
    assert "emergency" not in kinds(run(one, single))


def test_odd_hours_against_one_s_own_pattern_and_browsing_only() -> None:
    later = access(6 * DAY, "dr-9", "p1", basis.GRANT)  # time passes
    history = day_routine("dr-1", 5)
    night = 5 * DAY + 2 * HOUR
    browsing = [
        access(night + k * 3 * MINUTE, "dr-1", f"p{450 + k}", basis.ORGANIZATION) for k in range(3)
    ]
    found = [
        f for f in run(Detector(directory()), [*history, *browsing, later]) if f.kind == "odd-hours"
    ]
    assert [(f.professional, len(f.events)) for f in found] == [("dr-1", 3)]
    # A single late look is only ranked, not alerted.
    lone = [*history, access(night, "dr-1", "p451", basis.ORGANIZATION), later]
    assert "odd-hours" not in kinds(run(Detector(directory()), lone))
    # A patient cared for within the hour (a pharmacy on night duty) clears it.
    duty = [
        *history,
        *browsing,
        access(night + 40 * MINUTE, "dr-1", "p460", basis.CARE_EVENT),
        later,
    ]
    assert "odd-hours" not in kinds(run(Detector(directory()), duty))
    # A night worker's night is ordinary.
    night_work = [
        access(day * DAY + 1 * HOUR + k * 20 * MINUTE, "dr-2", f"p{k}", basis.TEAM)
        for day in range(5)
        for k in range(6)
    ]
    nightly = [
        access(night + k * 3 * MINUTE, "dr-2", f"p{460 + k}", basis.ORGANIZATION) for k in range(3)
    ]
    assert "odd-hours" not in kinds(run(Detector(directory()), [*night_work, *nightly, later]))


def test_a_care_event_declared_after_a_refusal_or_without_follow_up() -> None:
    detector = Detector(directory())
    refused = [
        access(1000.0, "dr-1", "p7", None),
        Event(1300.0, CARE_EVENT, "dr-1", "H1", "physician/internal", "p7", by="admission-system"),
        access(1400.0, "dr-1", "p7", basis.CARE_EVENT),
    ]
    assert "care-relationship" in kinds(run(detector, refused))

    lonely = Detector(directory())
    reads = [access(2000.0 + k * MINUTE, "dr-1", "p8", basis.CARE_EVENT) for k in range(1, 9)]
    declared = Event(2000.0, CARE_EVENT, "dr-1", "H1", "physician/internal", "p8")
    found = run(lonely, [declared, *reads, access(6 * HOUR, "dr-9", "p1", basis.GRANT)])
    assert [f.kind for f in found] == ["care-relationship"]
    assert len(found[0].events) == 9  # the care event and its eight reads

    followed = Detector(directory())
    written = Event(3000.0, WRITE, "dr-1", "H1", "physician/internal", "p8")
    found = run(followed, [declared, *reads, written, access(6 * HOUR, "dr-9", "p1", basis.GRANT)])
    assert found == []


def test_directory_change_by_hand_then_organization_accesses() -> None:
    detector = Detector(directory())
    change = Event(1000.0, DIRECTORY_CHANGE, "dr-3", "H1", "physician/internal", by="registrar")
    feed = Event(
        1000.0, DIRECTORY_CHANGE, "dr-4", "H1", "physician/internal", by="provider-registry"
    )
    found = run(
        detector,
        [
            change,
            feed,
            access(5000.0, "dr-3", "p1", basis.ORGANIZATION),
            access(5000.0, "dr-4", "p2", basis.ORGANIZATION),
            access(5 * DAY, "dr-3", "p3", basis.ORGANIZATION),
        ],
    )
    assert [(f.kind, f.patient) for f in found] == [("directory", "p1")]


def test_feedback_lowers_and_restores_a_kind_for_a_professional() -> None:
    detector = Detector(directory())
    detector.feedback("dr-2", "vip", true_positive=False)
    (finding,) = run(detector, [access(1000.0, "dr-2", "p-vip", basis.ORGANIZATION)]) or [None]
    assert finding is None  # halved below the alert threshold
    detector.feedback("dr-2", "vip", true_positive=True)
    assert kinds(run(detector, [access(2000.0, "dr-2", "p-vip", basis.ORGANIZATION)])) == {"vip"}


def test_combined_score_puts_any_finding_above_the_model() -> None:
    finding = Finding("vip", 0.5, "x", (0,), "dr", "p", 0.0)
    assert combined(Assessment((finding,), ()), 0.0) > combined(Assessment((), ()), 1.0)


def test_a_hand_made_change_recorded_after_an_access_is_no_cause_of_it() -> None:
    """The two streams are read side by side: a change the detector reads before an access
    that came earlier explains nothing of that access, and still counts for the later ones."""
    detector = Detector(directory())
    change = Event(9000.0, DIRECTORY_CHANGE, "dr-3", "H1", "physician/internal", by="registrar")
    found = run(
        detector,
        [
            change,
            access(5000.0, "dr-3", "p1", basis.ORGANIZATION),
            access(9500.0, "dr-3", "p2", basis.ORGANIZATION),
        ],
    )
    assert [(f.kind, f.patient) for f in found] == [("directory", "p2")]


def test_a_busy_systems_week_of_accesses_is_counted_in_bounded_memory() -> None:
    """A hospital system reading all day keeps at most one bucket per hour of the week (it
    kept one number per access), and the week's count is still right: everything within the
    last seven days, plus at most the first hour's accesses at its edge."""
    detector = Detector(directory())
    events = [access(k * 90.0, "dr-3", f"p{k % 400}", basis.ORGANIZATION)
              for k in range(int(10 * DAY / 90.0))]  # one access every 90 s for ten days
    run(detector, events)
    pro = detector.pros["dr-3"]
    assert len(pro.accesses) <= 7 * 24 + 1
    last = events[-1].at
    exact = sum(1 for e in events if e.at >= last - 7 * DAY)
    assert exact <= pro.accesses_in_window <= exact + HOUR / 90.0
    assert pro.accesses_in_window == sum(count for _, count in pro.accesses)
