"""Behavioural anomaly detection on record accesses: the rules, and the features a model scores.

The classic abuses of a shared health record (Boxwala et al., JAMIA 2011; Fabbri & LeFevre,
VLDB 2011) each leave a trace the audit stream shows, once each access carries *why* it was
allowed (`access_basis`):

- ``vip``: a record flagged VIP reached through a broad basis (the whole organization, the care
  team, an emergency) rather than a relationship with the professional in person;
- ``colleague``: the record of someone who works in the professional's own organization, or of a
  patient who is a health professional themself, the same;
- ``relative``: a patient living at the professional's address, or sharing a rare family name,
  reached other than through the patient's own choice (grant, referring physician, delegation);
- ``bulk``: many patients new to the professional, weakly explained, within an hour;
- ``emergency``: break-the-glass used far more often than by peers of the same profession,
  specialty and organization, over a week;
- ``odd-hours``: an access at an hour that the professional's own pattern (smoothed with their
  organization's: night shifts, pharmacies on duty) makes rare, with no care activity for that
  patient in the organization around it;
- ``care-relationship``: a care event declared to reach a record: it follows a refusal on that
  record, or, after ``CARE_FOLLOW_UP``, nobody else touched the patient, nothing was written and
  the declarer read much;
- ``directory``: accesses through the organization or a team shortly after a registrar's
  hand-made change to the professional's roles (a provider registry's feed is the normal course).

`Detector.observe` takes events in log order and returns, for each, its `Assessment`: the
findings (kind, severity, a plain explanation) and the feature vector the unsupervised model
scores. Findings that need to wait (the follow-up of a care event) come out of `Detector.due`
(called by `observe` as stream time passes, and by the chore) and name the events they concern.
The detector is standard library only and keeps bounded state per professional, organization and
patient; it forgets what is older than its windows. The officer's verdicts (`feedback`) raise or
lower a kind's severity for that professional.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from carevault.domain import access_basis as basis

KINDS = (
    "vip",
    "colleague",
    "relative",
    "bulk",
    "emergency",
    "odd-hours",
    "care-relationship",
    "directory",
)

# Event kinds the detector reads.
ACCESS = "access"  # a read or search on a record
WRITE = "write"  # a document written to a record (care activity)
CARE_EVENT = "care-event"  # a care event recorded (opens a care relationship)
DIRECTORY_CHANGE = "directory-change"  # a change to a professional's roles, by ``by``

HOUR = 3600.0
DAY = 86400.0
BULK_WINDOW = HOUR
BULK_THRESHOLD = 20  # new, weakly explained patients in an hour
EMERGENCY_WINDOW = 7 * DAY
CARE_FOLLOW_UP = 4 * HOUR
CARE_DEEP_READS = 8
CARE_ACTIVITY = 12 * HOUR  # care activity this close makes a night access ordinary
DIRECTORY_WINDOW = 3 * DAY
ODD_HOUR_SHARE = 0.01  # below this smoothed share of one's accesses, an hour is odd
ODD_BURST = 30 * 60.0  # odd-hour accesses to several patients this close are browsing
ODD_CONFIRM = HOUR  # ... unless care with a patient present follows within this time
# ... or, in a small organization (a pharmacy on night duty: dispensing to whoever rings,
# looking up the records of patients who chose the pharmacy between two), within this time:
# measured on bench/anomaly.py, a one-hour wait made most odd-hour alerts night-duty pharmacists.
ODD_CONFIRM_SMALL = 3 * HOUR
ODD_HOUR_HISTORY = 15  # accesses seen before the hour pattern is trusted
AT_WORK = 3 * HOUR  # a proved access this recent means the professional is at work
BROAD_ORGANIZATION = 20  # professionals: a grant to an organization this large is broad
RARE_NAME_SHARE = 0.0005  # a family name borne by fewer than this share of patients
MAX_ALERT_EVENTS = 50  # evidence kept per finding
ALERT_SEVERITY = 0.5  # a finding at least this severe raises an alert; below, it only ranks
WEAK = frozenset({basis.ORGANIZATION, basis.TEAM, basis.EMERGENCY})
CHOSEN_BY_PATIENT = frozenset(
    {basis.GRANT, basis.REFERRING, basis.PATIENT, basis.REPRESENTATIVE, basis.DELEGATION}
)

FEATURES = (
    "weak_basis",
    "emergency",
    "new_patient",
    "new_patients_last_hour",
    "emergency_excess",
    "hour_rarity",
    "care_nearby",
    "same_household",
    "name_rarity",
    "vip",
    "colleague",
    "refused_before",
    "care_declared_recently",
    "directory_change_recently",
    "volume_vs_own",
    "volume_vs_peers",
)


@dataclass(frozen=True)
class StoredAlert:
    """An alert to the security officer as stored: what was found, about whom, and its handling."""

    id: str
    group_key: str
    kind: str
    severity: int
    status: str  # open | acknowledged | closed
    verdict: str | None
    professional: str
    organization: str | None
    patient_id: str | None
    explanation: str
    evidence: tuple[int, ...]  # leaf indexes of the clinical stream
    raised_at: datetime
    updated_at: datetime
    assignee: str | None
    acknowledged_by: str | None
    closed_by: str | None
    note: str | None
    patient_notified_at: datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class Event:
    """One audit entry as the detector reads it (no medical content: who, whom, when, why).

    ``at`` is POSIX seconds; ``basis`` is `access_basis`'s word for a permitted access (None if
    refused); ``peer_group`` is the profession and specialty (peers are those of the same group
    in the same organization); ``by`` says who made a directory change (``registrar`` for a
    hand-made one); ``entry`` is the audit log's leaf index, the evidence's link."""

    at: float
    kind: str
    professional: str
    organization: str
    peer_group: str
    patient: str = ""
    basis: str | None = None
    permit: bool = True
    by: str = ""
    entry: int = -1


@dataclass(frozen=True, slots=True)
class Person:
    """What the directory says of a person for the detector: family name and household (the
    folded postal address), nothing medical."""

    family: str = ""
    household: str = ""


class Directory:
    """The directory facts the rules need, given by the caller (the bench's generated population,
    the platform's directories through a service): all lookups, no I/O of its own."""

    def __init__(
        self,
        professionals: Mapping[str, Person],
        patients: Mapping[str, Person],
        vip: frozenset[str] | set[str],
        works_at: Mapping[str, frozenset[str]],
        name_share: Mapping[str, float],
        organization_size: Mapping[str, int] | None = None,
        professional_patients: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """``name_share``: each family name's share of the patients; a name it does not hold
        is taken as rare (a table of the common names suffices). ``professional_patients``:
        patients who are health professionals themselves (wherever they work)."""
        self.professionals = professionals
        self.professional_patients = professional_patients
        self.patients = patients
        self.vip = vip
        self.works_at = works_at
        self.name_share = name_share
        self.organization_size = organization_size or {}

    def broad(self, organization: str) -> bool:
        """Whether a grant to this organization opens the record to many people (a hospital),
        not a handful the patient knows (their pharmacy, a group practice)."""
        return self.organization_size.get(organization, BROAD_ORGANIZATION) >= BROAD_ORGANIZATION


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: float  # 0..1
    explanation: str
    events: tuple[int, ...]  # positions in the stream (the caller maps them to log entries)
    professional: str
    patient: str
    at: float  # stream time when it was found


@dataclass(frozen=True, slots=True)
class Assessment:
    findings: tuple[Finding, ...]
    features: tuple[float, ...]

    @property
    def severity(self) -> float:
        return max((finding.severity for finding in self.findings), default=0.0)


@dataclass(slots=True)
class _Professional:
    hours: list[float] = field(default_factory=lambda: [0.0] * 24)
    total: int = 0
    seen: set[str] = field(default_factory=set)
    recent_new: deque[tuple[float, str]] = field(default_factory=deque)
    # Accesses within EMERGENCY_WINDOW, counted by the hour (hour number, count): at most
    # 169 buckets, however busy the professional or system (one float per access would grow
    # with the week's traffic); the window is then whole hours, up to one hour longer.
    accesses: deque[list[int]] = field(default_factory=deque)
    accesses_in_window: int = 0
    emergencies: deque[float] = field(default_factory=deque)
    day: int = -1
    day_count: int = 0
    daily_mean: float = 0.0
    days: int = 0
    hand_change: float = -math.inf
    proved: float = -math.inf  # the last access a care relationship accounts for
    odd: deque[tuple[float, str, int]] = field(default_factory=deque)
    # Odd-hour browsing waiting for its confirmation: (deadline, stream positions, hour).
    odd_pending: tuple[float, tuple[int, ...], int] | None = None
    weight: dict[str, float] = field(default_factory=dict)  # feedback per kind


def _count_in_window(pro: _Professional, at: float, window_start: float) -> int:
    """Count this access in the professional's hourly buckets, drop the buckets wholly before
    the window, and return the accesses in it (this one included)."""
    buckets = pro.accesses
    hour = int(at // HOUR)
    if buckets and buckets[-1][0] >= hour:  # the same hour (or a late entry: counted in it)
        buckets[-1][1] += 1
    else:
        buckets.append([hour, 1])
    pro.accesses_in_window += 1
    first_hour = int(window_start // HOUR)
    while buckets and buckets[0][0] < first_hour:
        pro.accesses_in_window -= buckets.popleft()[1]
    return pro.accesses_in_window


@dataclass(slots=True)
class _Group:
    hours: list[float] = field(default_factory=lambda: [0.0] * 24)
    total: int = 0
    accesses: int = 0
    emergencies: int = 0
    daily_mean: float = 0.0
    members: set[str] = field(default_factory=set)
    proved: float = -math.inf  # the last access a care relationship accounts for, by anyone


@dataclass(slots=True)
class _CareCheck:
    """A care event waiting for its follow-up."""

    professional: str
    organization: str
    patient: str
    declared: float
    event: int
    refused_before: bool
    reads: list[int] = field(default_factory=list)
    written: bool = False
    others: bool = False


def _smoothed(hours: list[float], hour: int) -> float:
    """An hour's count with its neighbours' (a shift that ends at six also works at half past)."""
    return hours[hour] + 0.5 * (hours[(hour - 1) % 24] + hours[(hour + 1) % 24])


class Detector:
    """The streaming detector; one per process that reads the audit stream, in log order."""

    def __init__(self, directory: Directory, *, hour_offset: float = 0.0) -> None:
        self.directory = directory
        self.hour_offset = hour_offset  # local time offset from UTC, in seconds
        self.pros: dict[str, _Professional] = {}
        self.groups: dict[str, _Group] = {}
        self.orgs: dict[str, _Group] = {}
        # The last care activity (care event, write, proved access) per (organization, patient).
        self.care: dict[tuple[str, str], float] = {}
        self.refusals: dict[tuple[str, str], float] = {}
        # Care events waiting for their follow-up: patient -> declarer -> check.
        self.checks: dict[str, dict[str, _CareCheck]] = {}
        self.professions: dict[str, _Group] = {}
        self.deadlines: list[tuple[float, str, str]] = []
        self.odd_deadlines: list[tuple[float, str]] = []
        self.position = 0
        self.now = 0.0

    # --- the stream ------------------------------------------------------------------------

    def observe(self, event: Event) -> Assessment:
        """Assess one event, in log order. Findings delayed until now come out of `due`."""
        position = self.position
        self.position += 1
        self.now = event.at
        pro = self.pros.get(event.professional)
        if pro is None:
            pro = self.pros[event.professional] = _Professional()
        if event.kind == DIRECTORY_CHANGE:
            if event.by == "registrar":
                pro.hand_change = event.at
            return Assessment((), ())
        if event.kind == CARE_EVENT:
            return self._care_event(event, pro, position)
        if event.kind == WRITE:
            self._care_activity(event)
            return Assessment((), ())
        return self._access(event, pro, position)

    def due(self, now: float) -> list[Finding]:
        """The care events and the odd-hour browsing whose follow-up time has passed, judged
        (called as time passes)."""
        found: list[Finding] = []
        while self.odd_deadlines and self.odd_deadlines[0][0] <= now:
            deadline, who = heapq.heappop(self.odd_deadlines)
            pro = self.pros.get(who)
            if pro is None or pro.odd_pending is None or pro.odd_pending[0] != deadline:
                continue  # confirmed by later browsing, or cleared by care
            _, positions, hour = pro.odd_pending
            pro.odd_pending = None
            weight = pro.weight.get("odd-hours", 1.0)
            found.append(
                Finding(
                    "odd-hours",
                    min(1.0, 0.7 * weight),
                    f"{len(positions)} accesses within {int(ODD_BURST // 60)} minutes around "
                    f"{hour:02d}h, an hour at which this professional rarely works, through no "
                    "relationship of their own, with no care activity for these patients nearby "
                    "and no patient cared for by them in the hours around",
                    positions[-MAX_ALERT_EVENTS:],
                    who,
                    "",
                    now,
                )
            )
        while self.deadlines and self.deadlines[0][0] <= now:
            _, who, patient = heapq.heappop(self.deadlines)
            pending = self.checks.get(patient)
            check = pending.pop(who, None) if pending is not None else None
            if pending is not None and not pending:
                del self.checks[patient]
            if check is None:
                continue
            finding = self._judge_care(check, now)
            if finding is not None:
                found.append(finding)
        return found

    def feedback(self, professional: str, kind: str, true_positive: bool) -> None:
        """The officer's verdict on a finding: a false positive lowers that kind's severity for
        this professional (halved, down to a tenth), a true positive restores and raises it."""
        pro = self.pros.setdefault(professional, _Professional())
        current = pro.weight.get(kind, 1.0)
        pro.weight[kind] = min(1.5, current * 1.5) if true_positive else max(0.1, current * 0.5)

    # --- each kind of event ----------------------------------------------------------------

    def _care_activity(self, event: Event) -> None:
        self.care[(event.organization, event.patient)] = event.at
        for who, check in self.checks.get(event.patient, {}).items():
            if who == event.professional:
                check.written = True
            else:
                check.others = True

    def _care_event(self, event: Event, pro: _Professional, position: int) -> Assessment:
        refused = self.refusals.get((event.professional, event.patient), -math.inf)
        pending = self.checks.setdefault(event.patient, {})
        for who, check in pending.items():
            if who != event.professional:
                check.others = True
        pending[event.professional] = _CareCheck(
            event.professional,
            event.organization,
            event.patient,
            event.at,
            position,
            refused >= event.at - HOUR,
        )
        heapq.heappush(
            self.deadlines, (event.at + CARE_FOLLOW_UP, event.professional, event.patient)
        )
        self.care[(event.organization, event.patient)] = event.at
        del pro
        return Assessment((), ())

    def _access(self, event: Event, pro: _Professional, position: int) -> Assessment:
        at, patient, who = event.at, event.patient, event.professional
        if not event.permit:
            self.refusals[(who, patient)] = at
            return Assessment((), ())
        group_key = f"{event.peer_group}@{event.organization}"
        group = self.groups.get(group_key)
        if group is None:
            group = self.groups[group_key] = _Group()
        org = self.orgs.get(event.organization)
        if org is None:
            org = self.orgs[event.organization] = _Group()
        group.members.add(who)
        profession = self.professions.get(event.peer_group)
        if profession is None:
            profession = self.professions[event.peer_group] = _Group()
        the_basis = event.basis or ""
        weak = the_basis in WEAK and (
            the_basis != basis.ORGANIZATION or self.directory.broad(event.organization)
        )
        is_emergency = the_basis == basis.EMERGENCY
        findings: list[Finding] = []

        # Follow-up of pending care events: another professional touching the patient, or the
        # declarer reading on.
        check: _CareCheck | None = None
        pending = self.checks.get(patient)
        if pending is not None:
            for declarer, waiting in pending.items():
                if declarer == who:
                    check = waiting
                    waiting.reads.append(position)
                else:
                    waiting.others = True

        # Volume: accesses per day against one's own mean and the peer group's.
        day = int((at + self.hour_offset) // DAY)
        if day != pro.day:
            if pro.day >= 0:
                pro.days += 1
                pro.daily_mean += (pro.day_count - pro.daily_mean) / min(pro.days, 20)
                group.daily_mean += (pro.day_count - group.daily_mean) / 50
            pro.day, pro.day_count = day, 0
        pro.day_count += 1

        # New patients, weakly explained, in the last hour.
        new_patient = patient not in pro.seen
        care_at = self.care.get((event.organization, patient), -math.inf)
        care_nearby = at - care_at <= CARE_ACTIVITY
        recent = pro.recent_new
        while recent and recent[0][0] < at - BULK_WINDOW:
            recent.popleft()
        if new_patient and (weak or not care_nearby) and the_basis not in CHOSEN_BY_PATIENT:
            recent.append((at, patient))
        if len(recent) >= BULK_THRESHOLD and new_patient:
            findings.append(
                self._finding(
                    "bulk",
                    0.9,
                    f"{len(recent)} patients new to this professional, weakly explained, "
                    "within an hour",
                    (position,),
                    event,
                    pro,
                )
            )

        # Emergency rate against peers over a week.
        window_start = at - EMERGENCY_WINDOW
        in_window = _count_in_window(pro, at, window_start)
        emergencies = pro.emergencies
        while emergencies and emergencies[0] < window_start:
            emergencies.popleft()
        group.accesses += 1
        profession.accesses += 1
        emergency_excess = 0.0
        if is_emergency:
            emergencies.append(at)
            group.emergencies += 1
            profession.emergencies += 1
            # An organization with few peers is compared with the profession everywhere.
            peers = group if len(group.members) >= 5 else profession
            rate = (peers.emergencies + 1) / (peers.accesses + 20)
            expected = rate * in_window
            count = len(emergencies)
            emergency_excess = (count - expected) / math.sqrt(expected + 1.0)
            if count >= 3 and emergency_excess >= 3.0:
                findings.append(
                    self._finding(
                        "emergency",
                        0.8,
                        f"{count} emergency accesses in 7 days where peers of the same "
                        f"profession and organization would make {expected:.1f}",
                        (position,),
                        event,
                        pro,
                    )
                )

        # Hour of day against one's own pattern, smoothed with the organization's.
        hour = int(((at + self.hour_offset) % DAY) // HOUR)
        own = _smoothed(pro.hours, hour) / (2.0 * pro.total + 1.0)
        org_share = _smoothed(org.hours, hour) / (2.0 * org.total + 1.0)
        share = (pro.total * own + org_share) / (pro.total + 1.0)
        hour_rarity = -math.log(share + 1e-6)
        personal = the_basis in basis.PERSONAL
        # At work: proved care by them lately, or, in a small organization (a pharmacy on night
        # duty), by anyone of it; a hospital is always at work, its staff not always.
        at_work = at - pro.proved <= AT_WORK or (
            at - org.proved <= AT_WORK and not self.directory.broad(event.organization)
        )
        odd_hour = pro.total >= ODD_HOUR_HISTORY and share < ODD_HOUR_SHARE
        if odd_hour and not care_nearby and not personal and not is_emergency and not at_work:
            # One such look may be a late call; several patients within minutes is browsing.
            odd = pro.odd
            while odd and odd[0][0] < at - ODD_BURST:
                odd.popleft()
            odd.append((at, patient, position))
            distinct = len({item[1] for item in odd})
            if distinct < 2:
                findings.append(
                    self._finding(
                        "odd-hours",
                        0.3,
                        f"an access at {hour:02d}h, an hour at which this professional rarely "
                        "works, through no relationship of their own",
                        (position,),
                        event,
                        pro,
                    )
                )
            else:
                # Several patients within minutes is browsing, unless a patient in front of
                # them (a pharmacy on night duty) shows up within the hour: judged in `due`.
                wait = (
                    ODD_CONFIRM if self.directory.broad(event.organization) else ODD_CONFIRM_SMALL
                )
                pro.odd_pending = (at + wait, tuple(item[2] for item in odd), hour)
                heapq.heappush(self.odd_deadlines, (at + wait, who))

        # Who the patient is to the professional.
        directory = self.directory
        me = directory.professionals.get(who)
        them = directory.patients.get(patient)
        same_household = bool(me and them and me.household and me.household == them.household)
        name_share = (
            directory.name_share.get(them.family, 0.0)
            if me and them and them.family and me.family == them.family
            else 1.0
        )
        name_rarity = -math.log(name_share + 1e-6) if name_share < 1.0 else 0.0
        # A care team the patient granted is their choice too: a relative on it is a matter
        # for the organization's rules on treating one's family, not a pry.
        if (same_household or name_share < RARE_NAME_SHARE) and (
            the_basis not in CHOSEN_BY_PATIENT and the_basis != basis.TEAM
        ):
            why = (
                "lives at the professional's address"
                if same_household
                else ("shares the professional's rare family name")
            )
            findings.append(
                self._finding(
                    "relative",
                    0.85 if same_household else 0.6,
                    f"the patient {why}; the access was not through the patient's own choice",
                    (position,),
                    event,
                    pro,
                )
            )
        # A broad basis: the whole organization, or an emergency (a team is one the patient chose).
        broad = weak and the_basis != basis.TEAM
        vip = patient in directory.vip
        if vip and broad:
            findings.append(
                self._finding(
                    "vip",
                    0.8,
                    f"a record flagged VIP reached through '{the_basis}', not a relationship "
                    "with this professional in person",
                    (position,),
                    event,
                    pro,
                )
            )
        colleague = event.organization in directory.works_at.get(patient, frozenset())
        fellow = patient in directory.professional_patients
        if (colleague or fellow) and broad:
            who_they_are = (
                "works in the professional's own organization"
                if colleague
                else "is a health professional"
            )
            findings.append(
                self._finding(
                    "colleague",
                    0.75 if colleague else 0.6,
                    f"the patient {who_they_are}; the access was through '{the_basis}'",
                    (position,),
                    event,
                    pro,
                )
            )

        # A care event declared after a refusal, read at once.
        refused_before = self.refusals.get((who, patient), -math.inf) >= at - 2 * HOUR
        declared_recently = check is not None
        if check is not None and check.refused_before and the_basis == basis.CARE_EVENT:
            findings.append(
                self._finding(
                    "care-relationship",
                    0.8,
                    "a care event was declared right after this professional was refused "
                    "this record, and the record was read at once",
                    (check.event, position),
                    event,
                    pro,
                )
            )

        # Directory: reached through the organization or a team soon after a hand-made change.
        # (A change recorded after the access, read first from the other stream, is no cause.)
        directory_recent = 0 <= at - pro.hand_change <= DIRECTORY_WINDOW
        if directory_recent and the_basis in (basis.ORGANIZATION, basis.TEAM):
            findings.append(
                self._finding(
                    "directory",
                    0.7,
                    "reached through the organization or a team within 3 days of a "
                    "registrar's hand-made change to this professional's roles",
                    (position,),
                    event,
                    pro,
                )
            )

        features = (
            1.0 if weak else 0.0,
            1.0 if is_emergency else 0.0,
            1.0 if new_patient else 0.0,
            math.log1p(len(recent)),
            max(0.0, emergency_excess),
            hour_rarity,
            1.0 if care_nearby or at_work else 0.0,
            1.0 if same_household else 0.0,
            name_rarity,
            1.0 if vip else 0.0,
            1.0 if colleague else 0.0,
            1.0 if refused_before else 0.0,
            1.0 if declared_recently else 0.0,
            1.0 if directory_recent else 0.0,
            pro.day_count / (pro.daily_mean + 1.0),
            pro.day_count / (group.daily_mean + 1.0),
        )

        # Learn: the hour (unless it was odd: a habit of prying must not become a pattern), the
        # patient, care activity proved by a relationship.
        if not odd_hour or personal or care_nearby or at_work:
            pro.hours[hour] += 1.0
            pro.total += 1
            org.hours[hour] += 1.0
            org.total += 1
        pro.seen.add(patient)
        if personal or the_basis == basis.TEAM:
            pro.proved = org.proved = at
            pro.odd_pending = None
        if the_basis in (basis.CARE_EVENT, basis.TEAM, basis.REFERRING, basis.EMERGENCY):
            self.care[(event.organization, patient)] = at
        return Assessment(tuple(findings), features)

    # --- helpers ---------------------------------------------------------------------------

    def _finding(
        self,
        kind: str,
        severity: float,
        explanation: str,
        events: tuple[int, ...],
        event: Event,
        pro: _Professional,
    ) -> Finding:
        weight = pro.weight.get(kind, 1.0)
        return Finding(
            kind,
            min(1.0, severity * weight),
            explanation,
            events,
            event.professional,
            event.patient,
            event.at,
        )

    def _judge_care(self, check: _CareCheck, now: float) -> Finding | None:
        if check.written or check.others or len(check.reads) < CARE_DEEP_READS:
            return None
        pro = self.pros.get(check.professional) or _Professional()
        weight = pro.weight.get("care-relationship", 1.0)
        return Finding(
            "care-relationship",
            min(1.0, 0.75 * weight),
            f"a care event declared, then {len(check.reads)} reads by its declarer alone within "
            f"{int(CARE_FOLLOW_UP // HOUR)} h, nothing written and nobody else caring for the "
            "patient",
            (check.event, *check.reads[:MAX_ALERT_EVENTS]),
            check.professional,
            check.patient,
            now,
        )


class AnomalyModel(Protocol):
    """The unsupervised model behind the rules (an adapter: scikit-learn's isolation forest).

    It is fitted on a window of ordinary traffic (the features of `FEATURES`) and scores new
    rows between 0 (ordinary) and 1 (most isolated); it only orders what the rules leave equal,
    and never raises an alert on its own."""

    def fit(self, rows: Sequence[Sequence[float]]) -> None: ...

    def score(self, rows: Sequence[Sequence[float]]) -> list[float]: ...


def combined(assessment: Assessment, model_score: float) -> float:
    """The score an event is ranked by: the strongest finding, then the model's score, scaled
    below any finding's so that the rules decide and the model orders the rest."""
    return assessment.severity + 0.1 * model_score
