"""The security officer's alerts: the detector reading the audit log, and the officer's review.

`AnomalyDetection.scan` is a chore (every few seconds in the process that holds the chores
lease): it reads the clinical stream from where it stopped, turns each entry into the
detector's `Event` (who, whom, when, and the ``basis`` the gate recorded), merges in time order
the hand-made changes to professionals' roles that the operators' stream records (a registrar's
request, an operator's command: accesses through an organization soon after one are worth a
look), and stores each finding severe enough as an alert, with the leaf indexes it rests on, in
one transaction with the detector's new places in both streams. Every emergency access also
becomes an alert of kind ``emergency-access`` (one per professional, patient and day): each
must be reviewed. The detector's baselines live in memory; when the process starts they are
rebuilt from the log's recent past (`warm`) without raising anything, and the officer's
verdicts on closed alerts are replayed into it.

The officer's review (acknowledge, assign, close as a true or false positive, notify the
patient) is one transaction per action, refused on a closed alert, and optimistic: two officers
changing one alert at once, one of them is told to reload. Nothing here ever reads or shows
medical content: an alert names a professional, a patient, times and reasons.
"""

from __future__ import annotations

import heapq
import math
import threading
import uuid
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from carevault.domain import access_basis as basis
from carevault.domain.anomaly import (
    ACCESS,
    ALERT_SEVERITY,
    CARE_EVENT,
    DIRECTORY_CHANGE,
    RARE_NAME_SHARE,
    WRITE,
    AnomalyModel,
    Assessment,
    Detector,
    Directory,
    Event,
    Finding,
    Person,
    StoredAlert,
    combined,
)
from carevault.domain.audit import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_UPDATE,
    AuditRecord,
    changed_professionals,
)
from carevault.domain.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound
from carevault.domain.text import fold
from carevault.services.audit_log import AuditLog
from carevault.services.record_policy import practitioner_subject
from carevault.services.unit_of_work import UnitOfWork

STREAM = "clinical"
OPERATORS = "operator"  # the registrars' and operators' stream: hand-made directory changes
BY_HAND = "registrar"  # the detector's word for a change made by hand (`Event.by`)
BATCH = 2_000
MAX_ROUNDS = 500  # batches per chore round: a million entries, a backlog of minutes
WARM_ENTRIES = 200_000  # how much of the log's recent past rebuilds the baselines
EMERGENCY_REVIEW = "emergency-access"
VERDICTS = ("true-positive", "false-positive")
STATUSES = ("open", "acknowledged", "closed")
MAX_NOTE = 1_000
MAX_REFERENCE = 255
PROFESSIONAL_ROLES = frozenset({"practitioner", "system", "assistant"})
# A patient whose identity carries this security label is a public figure (HL7 v3 ActCode
# CEL, "celebrity"). Who works where (the colleague rule): a Practitioner whose identifiers
# include the national identifier a patient bears is that patient, working in the
# organizations of their roles (`DirectoryStore.professionals_as_patients`).
CELEBRITY = "CEL"
MAX_CACHED = 50_000
# The unsupervised model (`AnomalyModel`): fitted on the ordinary traffic the detector has seen
# (the warm-up's, then refitted as the log grows), it scores every access the scan reads; a
# finding's severity is the rules' plus a tenth of the model's score (`combined`), so that the
# model orders the queue and never raises an alert on its own.
MODEL_MIN_ROWS = 256  # rows seen before the model is first fitted
MODEL_WINDOW = 50_000  # the latest rows kept to fit on
MODEL_REFIT = 20_000  # new rows after which the model is fitted again


@dataclass(frozen=True)
class ScanReport:
    read: int
    alerts: int
    position: int


class _Lookup(Mapping[str, Person]):
    """A directory lookup the detector reads like a mapping: persons (family name, household)
    of patients or practitioners, read through ``load`` once and kept (bounded)."""

    def __init__(self, load: Callable[[str], Person | None]) -> None:
        self.load = load
        self.cache: OrderedDict[str, Person | None] = OrderedDict()

    def get_or_none(self, key: str) -> Person | None:
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        value = self.load(key)
        self.cache[key] = value
        if len(self.cache) > MAX_CACHED:
            self.cache.popitem(last=False)
        return value

    def __getitem__(self, key: str) -> Person:
        value = self.get_or_none(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, v in self.cache.items() if v is not None])

    def __len__(self) -> int:
        return sum(1 for v in self.cache.values() if v is not None)


def _person(resource: Mapping[str, object]) -> Person:
    names = resource.get("name")
    family = ""
    if isinstance(names, list) and names and isinstance(names[0], dict):
        family = fold(str(names[0].get("family") or ""))
    household = ""
    addresses = resource.get("address")
    if isinstance(addresses, list) and addresses and isinstance(addresses[0], dict):
        first = addresses[0]
        lines = first.get("line") if isinstance(first.get("line"), list) else []
        parts = [*(str(x) for x in lines or []), str(first.get("postalCode") or "")]
        household = fold(" ".join(p for p in parts if p))
    return Person(family, household)


def _labels(resource: Mapping[str, object]) -> set[str]:
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    if not isinstance(security, list):
        return set()
    return {str(c.get("code")) for c in security if isinstance(c, dict)}


def _when(item: tuple[int | None, Event]) -> float:
    return item[1].at


def _recorded(data: bytes) -> str:
    return AuditRecord.from_canonical(data).recorded


def _seconds(recorded: str) -> float:
    return datetime.fromisoformat(recorded.replace("Z", "+00:00")).timestamp()


class RecentLeaves:
    """The audit leaf index of each of the last ``size`` stream positions the detector read,
    for the evidence of its findings (a finding names the positions of its events, recent
    ones). Two fixed arrays of 8-byte integers, a slot per position modulo ``size``: a
    constant 16 bytes an entry, where a dict of Python ints took about 100 and grew until
    it held ``size`` of them."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._positions = array("q", [-1]) * size
        self._leaves = array("q", [0]) * size

    def add(self, position: int, leaf: int) -> None:
        slot = position % self._size
        self._positions[slot] = position
        self._leaves[slot] = leaf

    def get(self, position: int) -> int | None:
        """The leaf of this position, or None once a later position has taken its slot."""
        slot = position % self._size
        return self._leaves[slot] if self._positions[slot] == position else None


class AnomalyDetection:
    """The detector over the audit log, and the alerts' workflow (see the module's docstring)."""

    def __init__(
        self,
        units: Callable[[], UnitOfWork],
        log: AuditLog,
        clock: Callable[[], datetime],
        *,
        hour_offset: float = 3600.0,  # Luxembourg's winter time; a shift pattern is local
        national_system: str = "",
        model: AnomalyModel | None = None,
    ) -> None:
        self.units = units
        self.log = log
        self.clock = clock
        self.hour_offset = hour_offset
        self._lock = threading.Lock()
        self._detector: Detector | None = None
        self._leaves = RecentLeaves(WARM_ENTRIES)  # stream position -> leaf index
        self._groups: dict[str, str] = {}
        self._celebrities: set[str] = set()
        self._patients = _Lookup(self._load_patient)
        self._works_at: dict[str, frozenset[str]] = {}
        self.national_system = national_system
        self.model = model
        self.model_fitted = False
        # Each row an array of doubles (176 bytes for the 12 features; a tuple of floats took
        # 424): the window is the detector's largest memory, reached after MODEL_WINDOW
        # accesses and constant from then on.
        self._rows: deque[array[float]] = deque(maxlen=MODEL_WINDOW)
        self._unfitted = 0  # rows seen since the model was last fitted

    # --- the detector ----------------------------------------------------------------------

    def _load_patient(self, patient_id: str) -> Person | None:
        with self.units() as uow:
            stored = uow.directory.read("Patient", patient_id)
        if stored is None:
            return None
        labels = _labels(stored.resource)
        if CELEBRITY in labels:
            self._celebrities.add(patient_id)
        return _person(stored.resource)

    def _load_practitioner(self, practitioner_id: str) -> Person | None:
        with self.units() as uow:
            stored = uow.directory.practitioner(practitioner_id)
        return _person(stored.resource) if stored is not None else None

    def _forget_changed_patient(self, record: AuditRecord) -> None:
        """A patient's entry changed (a registrar labelled them VIP, moved them, …): what the
        detector read of them is read again at their next access. The log itself says when."""
        if (
            record.entity_type == "Patient"
            and record.entity_id
            and record.outcome == "0"
            and record.action in (ACTION_CREATE, ACTION_UPDATE, ACTION_DELETE)
        ):
            self._patients.cache.pop(record.entity_id, None)
            self._celebrities.discard(record.entity_id)

    def _new_detector(self) -> Detector:
        patients = self._patients = _Lookup(self._load_patient)
        practitioners = _Lookup(self._load_practitioner)
        # The directory facts read once per detector (each start, `warm`): the family names
        # common in this directory (the relative rule weighs a shared rare name only: a
        # namesake among thousands of Schmits is no relative), and the patients who are
        # professionals.
        with self.units() as uow:
            shares = uow.directory.family_name_shares(RARE_NAME_SHARE)
            professionals = (
                uow.directory.professionals_as_patients(self.national_system)
                if self.national_system
                else {}
            )
        self._works_at.clear()
        self._works_at.update({p: orgs for p, orgs in professionals.items() if orgs})
        directory = Directory(
            practitioners,
            patients,
            self._celebrities,
            self._works_at,
            shares,
            professional_patients=frozenset(professionals),
        )
        detector = Detector(directory, hour_offset=self.hour_offset)
        with self.units() as uow:
            for professional, kind, verdict in uow.alerts.closed_verdicts():
                detector.feedback(professional, kind, verdict == VERDICTS[0])
        return detector

    def _peer_group(self, who: str) -> str:
        group = self._groups.get(who)
        if group is None:
            with self.units() as uow:
                subject = practitioner_subject(uow, who)
            group = f"{subject.profession or ''}/{subject.specialty or ''}"
            if len(self._groups) > MAX_CACHED:
                self._groups.clear()
            self._groups[who] = group
        return group

    def event_of(self, leaf: int, record: AuditRecord) -> Event | None:
        """The detector's view of one audit entry; None for what it does not read (patients'
        own requests, operators, entries about no patient)."""
        agent = record.agent
        if record.kind != "access" or agent.role not in PROFESSIONAL_ROLES:
            return None
        who = (agent.on_behalf_of or agent.who or "").removeprefix("Practitioner/")
        if not who or "/" in who:
            return None
        organization = (agent.organization or "").removeprefix("Organization/")
        detail = record.detail
        if "directory-change" in detail:
            return None  # a system's feed: the registrar's changes are in the operators' stream
        if not record.patient:
            return None
        at = _seconds(record.recorded)
        permitted = record.outcome == "0"
        kind = ACCESS
        if permitted and record.entity_type == "Encounter" and record.action == "C":
            kind = CARE_EVENT
        elif permitted and record.action in ("C", "U"):
            kind = WRITE
        return Event(
            at,
            kind,
            who,
            organization,
            self._peer_group(who),
            record.patient,
            detail.get("basis") if permitted else None,
            permitted,
            by=str(detail.get("care-proof", "")),
            entry=leaf,
        )

    def warm(self) -> int:
        """Rebuild the baselines from the log's recent past, raising nothing."""
        with self._lock:
            self._detector = detector = self._new_detector()
            with self.units() as uow:
                position = uow.alerts.cursor(STREAM)
                changes_at = uow.alerts.cursor(OPERATORS)
            start = max(0, position - WARM_ENTRIES)
            changes, _ = self._hand_changes(
                self._entries(OPERATORS, max(0, changes_at - WARM_ENTRIES), changes_at), math.inf
            )
            clinical = self._clinical_events(self._entries(STREAM, start, position))
            seen = 0
            for leaf, event in heapq.merge(clinical, changes, key=_when):
                detector.due(event.at)
                self._learn(detector.observe(event).features)
                seen += leaf is not None
            self._fit_if_due()
            return seen

    def _clinical_events(
        self, rows: Iterable[tuple[int, bytes]]
    ) -> Iterator[tuple[int | None, Event]]:
        """The clinical stream's entries as the detector's events, with their leaf indexes."""
        for leaf, data in rows:
            record = AuditRecord.from_canonical(data)
            self._forget_changed_patient(record)
            event = self.event_of(leaf, record)
            if event is not None:
                yield leaf, event

    def _hand_changes(
        self, rows: Iterable[tuple[int, bytes]], until: float
    ) -> tuple[list[tuple[int | None, Event]], int | None]:
        """The hand-made changes to professionals' roles among the operators' stream's
        ``rows`` (a registrar's request, an operator's command: the provider registry's feed
        is in the clinical stream), as the detector's events, up to the first entry recorded
        after ``until``; and the position after the last entry read (None: none read).

        The two streams are two logs: a change is judged among the clinical entries of its
        time, so one recorded after the last clinical entry at hand waits for the next scan."""
        changes: list[tuple[int | None, Event]] = []
        end = None
        for leaf, data in rows:
            record = AuditRecord.from_canonical(data)
            at = _seconds(record.recorded)
            if at > until:
                break
            end = leaf + 1
            if record.kind == "alert" or record.outcome != "0":
                continue
            if "directory-change" not in record.detail:
                continue
            changes += [
                (None, Event(at, DIRECTORY_CHANGE, who, "", "", by=BY_HAND))
                for who in changed_professionals(record)
            ]
        return changes, end

    def _learn(self, features: tuple[float, ...]) -> None:
        """Keep an access's features for the model's next fitting (ordinary traffic: rare
        abuses hardly move an isolation forest fitted on tens of thousands of rows)."""
        if features and self.model is not None:
            self._rows.append(array("d", features))
            self._unfitted += 1

    def _fit_if_due(self) -> None:
        if self.model is None or len(self._rows) < MODEL_MIN_ROWS:
            return
        if self.model_fitted and self._unfitted < MODEL_REFIT:
            return
        self.model.fit(list(self._rows))
        self.model_fitted = True
        self._unfitted = 0

    def _entries(self, stream: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        while start < end:
            rows = self.log.entries(stream, start, min(end, start + BATCH))
            if not rows:
                return
            yield from rows
            start = rows[-1][0] + 1

    def catch_up(self, limit: int = BATCH, rounds: int = MAX_ROUNDS) -> ScanReport:
        """The chore: scan batch after batch until the log is read to its end (at most
        ``rounds`` batches, so that one round of the chores stays bounded), so that an access
        is judged at the chore's next round whatever the log's rate (the detector reads
        far faster than the log is appended to: bench/results/anomaly.json)."""
        read = raised = 0
        report = ScanReport(0, 0, 0)
        for _ in range(rounds):
            report = self.scan(limit)
            read += report.read
            raised += report.alerts
            if report.read < limit:
                break
        return ScanReport(read, raised, report.position)

    def scan(self, limit: int = BATCH) -> ScanReport:
        """Read the entries recorded since the last scan and store the alerts they raise."""
        with self._lock:
            if self._detector is None:
                self._detector = self._new_detector()
            detector = self._detector
            with self.units() as uow:
                position = uow.alerts.cursor(STREAM)
                changes_at = uow.alerts.cursor(OPERATORS)
            rows = self.log.entries(STREAM, position, position + limit)
            # The clinical stream read to its end, every change recorded so far is judged;
            # otherwise those up to the last clinical entry read.
            until = math.inf if len(rows) < limit else _seconds(_recorded(rows[-1][1]))
            changes, changes_end = self._hand_changes(
                self.log.entries(OPERATORS, changes_at, changes_at + limit), until
            )
            findings: list[Finding] = []
            # Each finding with the features of the access that raised it (none for delayed
            # findings: their severity is the rules' alone).
            scored: list[tuple[Finding, tuple[float, ...]]] = []
            reviews: list[tuple[Event, int]] = []
            clinical = self._clinical_events(rows)
            for leaf, event in heapq.merge(clinical, changes, key=_when):
                findings.extend(detector.due(event.at))
                if leaf is not None:
                    self._leaves.add(detector.position, leaf)
                assessment = detector.observe(event)
                self._learn(assessment.features)
                scored.extend((finding, assessment.features) for finding in assessment.findings)
                if leaf is not None and event.kind == ACCESS and event.basis == basis.EMERGENCY:
                    reviews.append((event, leaf))
            findings.extend(detector.due(self.clock().timestamp()))
            self._fit_if_due()
            ranked = [(f, None) for f in findings] + self._scored(scored)
            raised = 0
            now = self.clock()
            with self.units() as uow:
                for finding, score in ranked:
                    if finding.severity < ALERT_SEVERITY:
                        continue
                    uow.alerts.raise_or_extend(self._alert(finding, now, score))
                    raised += 1
                for event, leaf in reviews:
                    uow.alerts.raise_or_extend(self._review(event, leaf, now))
                    raised += 1
                end = rows[-1][0] + 1 if rows else position
                if changes_end is not None:
                    uow.alerts.move_cursor(OPERATORS, changes_end)
                if end != position or raised or changes_end is not None:
                    uow.alerts.move_cursor(STREAM, end)
                    uow.commit()
            return ScanReport(len(rows), raised, end)

    def _scored(
        self, scored: list[tuple[Finding, tuple[float, ...]]]
    ) -> list[tuple[Finding, float | None]]:
        """The findings with the model's score of the access that raised each (None before
        the model is fitted)."""
        if not scored or self.model is None or not self.model_fitted:
            return [(finding, None) for finding, _ in scored]
        scores = self.model.score([features for _, features in scored])
        return [(finding, score) for (finding, _), score in zip(scored, scores, strict=True)]

    def _alert(self, finding: Finding, now: datetime, score: float | None = None) -> StoredAlert:
        leaves = tuple(
            leaf for leaf in (self._leaves.get(p) for p in finding.events) if leaf is not None
        )
        day = int(finding.at // 86_400)
        about_one = finding.kind in ("vip", "colleague", "relative", "care-relationship")
        patient = finding.patient if about_one else None
        key = f"{finding.kind}|{finding.professional}|{patient or ''}|{day}"
        severity, explanation = finding.severity, finding.explanation
        if score is not None:
            severity = min(1.0, combined(Assessment((finding,), ()), score))
            explanation += f" (isolation-forest score {score:.2f}: 0.5 ordinary, 1 isolated)"
        return _new_alert(
            key,
            finding.kind,
            severity,
            finding.professional,
            patient,
            explanation,
            leaves,
            now,
        )

    def _review(self, event: Event, leaf: int, now: datetime) -> StoredAlert:
        # One review per break-the-glass: the professional's emergency accesses to one patient
        # on one day are one alert whose evidence grows, not one alert per request.
        day = int(event.at // 86_400)
        return _new_alert(
            f"{EMERGENCY_REVIEW}|{event.professional}|{event.patient}|{day}",
            EMERGENCY_REVIEW,
            0.4,
            event.professional,
            event.patient,
            "an emergency access (break-the-glass): every one is reviewed",
            (leaf,),
            now,
            organization=event.organization,
        )

    def feedback(self, alert: StoredAlert, verdict: str) -> None:
        with self._lock:
            if self._detector is not None and alert.kind != EMERGENCY_REVIEW:
                self._detector.feedback(alert.professional, alert.kind, verdict == VERDICTS[0])

    # --- the officer's review --------------------------------------------------------------

    def alert(self, alert_id: str) -> StoredAlert:
        with self.units() as uow:
            found = uow.alerts.get(alert_id)
        if found is None:
            raise NotFound(f"DetectedIssue/{alert_id} is not known")
        return found

    def search(
        self,
        *,
        status: tuple[str, ...] = (),
        kind: tuple[str, ...] = (),
        offset: int = 0,
        count: int = 50,
    ) -> tuple[int, list[StoredAlert]]:
        for value in status:
            if value not in STATUSES:
                raise InvalidInput(f"status is one of {', '.join(STATUSES)}", expression="status")
        with self.units() as uow:
            return uow.alerts.search(status=status, kind=kind, offset=offset, count=count)

    def _change(self, alert_id: str, officer: str, **values: str | datetime | None) -> StoredAlert:
        now = self.clock()
        with self.units() as uow:
            found = _under_review(uow, alert_id)
            return _saved(uow, found, now, **values)

    def acknowledge(self, alert_id: str, officer: str) -> StoredAlert:
        return self._change(alert_id, officer, status="acknowledged", acknowledged_by=officer)

    def assign(self, alert_id: str, officer: str, assignee: str) -> StoredAlert:
        assignee = assignee.strip()
        if not assignee or len(assignee) > MAX_REFERENCE or not assignee.isprintable():
            raise InvalidInput("name who the alert is assigned to", expression="assignee")
        return self._change(
            alert_id, officer, assignee=assignee, acknowledged_by=officer, status="acknowledged"
        )

    def close(self, alert_id: str, officer: str, verdict: str, note: str = "") -> StoredAlert:
        if verdict not in VERDICTS:
            raise InvalidInput(f"verdict is one of {', '.join(VERDICTS)}", expression="verdict")
        if len(note) > MAX_NOTE:
            raise InvalidInput(f"a note holds at most {MAX_NOTE} characters", expression="note")
        closed = self._change(
            alert_id,
            officer,
            status="closed",
            verdict=verdict,
            closed_by=officer,
            note=note or None,
        )
        self.feedback(closed, verdict)
        return closed

    def notify_patient(self, alert_id: str, officer: str) -> StoredAlert:
        """Tell the patient the alert concerns that their record was reached in a way the
        security officer is looking into (in their notifications; no detail of the finding)."""
        now = self.clock()
        with self.units() as uow:
            found = _under_review(uow, alert_id)
            if found.patient_id is None:
                raise BusinessRuleViolation("this alert concerns no single patient")
            if found.patient_notified_at is not None:
                raise BusinessRuleViolation("the patient was already notified of this alert")
            uow.records.notify(
                found.patient_id,
                "security-review",
                {
                    "en": "The security officer is reviewing an access to your record; you "
                    "will find every access in your access history.",
                    "fr": "Le responsable de la sécurité examine un accès à votre dossier ; "
                    "vous trouverez chaque accès dans votre historique des accès.",
                    "sender": "security-officer",
                },
                now,
            )
            return _saved(uow, found, now, patient_notified_at=now)


def _under_review(uow: UnitOfWork, alert_id: str) -> StoredAlert:
    """The alert, still open to review: NotFound, or refused once it is closed."""
    found = uow.alerts.get(alert_id)
    if found is None:
        raise NotFound(f"DetectedIssue/{alert_id} is not known")
    if found.status == "closed":
        raise BusinessRuleViolation("this alert is closed: nothing more is done with it")
    return found


def _saved(
    uow: UnitOfWork, found: StoredAlert, now: datetime, **values: str | datetime | None
) -> StoredAlert:
    """Change the alert if nobody changed it since ``found`` was read, and commit (optimistic:
    Conflict otherwise, nothing written)."""
    if not uow.alerts.change(found.id, found.version, now, **values):
        raise Conflict("someone changed this alert meanwhile: reload it and try again")
    changed = uow.alerts.get(found.id)
    assert changed is not None
    uow.commit()
    return changed


def _new_alert(
    key: str,
    kind: str,
    severity: float,
    professional: str,
    patient: str | None,
    explanation: str,
    evidence: tuple[int, ...],
    now: datetime,
    *,
    organization: str | None = None,
) -> StoredAlert:
    return StoredAlert(
        id=uuid.uuid4().hex,
        group_key=key[:255],
        kind=kind,
        severity=round(severity * 100),
        status="open",
        verdict=None,
        professional=professional,
        organization=organization,
        patient_id=patient,
        explanation=explanation,
        evidence=evidence,
        raised_at=now,
        updated_at=now,
        assignee=None,
        acknowledged_by=None,
        closed_by=None,
        note=None,
        patient_notified_at=None,
        version=1,
    )


__all__ = ["AnomalyDetection", "ScanReport", "StoredAlert"]
