"""Authorization engine throughput and latency, against pycasbin with the equivalent model.

One run, single-threaded, on this machine:

1. **CareVault's engine** (`carevault.domain.authorization.decide`): N single-document READ
   decisions drawn from a generated national population (1,000,000 patients, 20,000
   practitioners plus their assistants and 1,000 organization systems, 10 grants and 50 documents
   per patient). The population is a *definition*, not a table: patient ``i``'s facts (grants,
   blocks, referring physician, emergency setting and windows, representatives, delegations) and
   its document ``k`` are generated on demand from a seed derived from ``i`` and ``k``, exactly as
   a loader would hand the engine the facts of one patient. Generating 50 million documents up
   front would not fit in memory; the engine only ever sees one patient's facts and one document,
   so sampling is what it would see in production. Requests (facts as new objects, a document,
   a subject) are generated in chunks, outside every timed region, and each is decided exactly
   once: in each chunk, the even-numbered requests in one loop timed with ``perf_counter_ns``
   (throughput), the odd-numbered ones one call at a time (latency percentiles, which include
   the timer's own cost, measured and reported). The timed region holds nothing but
   ``decide(subject, Action.READ, record, document, now, matrix)``, what production runs per
   decision once it has loaded a patient's facts.
2. **pycasbin** (``FastEnforcer``, the in-memory adapter, policies indexed by patient): the same
   policy as an ABAC+RBAC model (grants, blocks as deny rules, hidden, V/R levels, the profile
   matrix as a role hierarchy, referral, emergency windows, patients, representatives), loaded
   for a sub-population of patients. Requests drawn by the same sampler from that sub-population
   go through both engines, which must agree on every one. The two runs are interleaved, one
   Casbin batch after each engine chunk, so that a slower or faster spell of a shared machine
   weighs on both sides of the ratio. Delegations cannot be expressed (a
   delegation's level depends on another row, the delegator's own delegable grant, and a Casbin
   matcher sees one policy row at a time), so patients with delegations are left out of the
   Casbin sub-population.

Run: ``.venv/bin/python bench/authz.py`` (about a minute); ``--help`` for sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import json
import math
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carevault.adapters.package_config import builtin_profile_matrix
from carevault.domain.authorization import (
    ORGANIZATION_SYSTEM_PROFILE,
    Action,
    Block,
    Confidentiality,
    Delegation,
    DocumentFacts,
    EmergencySetting,
    EmergencyWindow,
    Grant,
    GrantLevel,
    MandateScope,
    Party,
    RecordFacts,
    RecordState,
    Representative,
    Subject,
    SubjectKind,
    decide,
)

PYCASBIN_REQUIREMENT = "pycasbin>=1.17"
RESULTS = Path(__file__).resolve().parent / "results" / "authz.json"
BUILTIN_MATRIX = builtin_profile_matrix()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

PATIENTS = 1_000_000
PRACTITIONERS = 20_000
ORGANIZATIONS = 1_000  # practitioner j works at org-(j // 20); each has an information system
TEAM_SIZE = 5  # practitioner j is in team-(j // 5) when j is even
ASSISTANT_EVERY = 4  # practitioner j has an assistant asst-j when j % 4 == 0
GRANTS_PER_PATIENT = 10  # 6 practitioners, 3 organizations, 1 care team
DOCUMENTS_PER_PATIENT = 50
GOAL_RATIO = 100
GOAL_P99_US = 50

PROFESSIONS = (
    ("physician", 40),
    ("nurse", 22),
    ("pharmacist", 10),
    ("physiotherapist", 8),
    ("dentist", 6),
    ("midwife", 5),
    ("laboratory-biologist", 4),
    ("psychotherapist", 5),
)
SPECIALTIES = (
    "general-practice",
    "general-practice",
    "cardiology",
    "psychiatry",
    "emergency-medicine",
    "pediatrics",
    "oncology",
)
CLASSES = (
    ("laboratory", 20),
    ("consultation-report", 15),
    ("prescription", 10),
    ("medication", 8),
    ("imaging", 8),
    ("patient-summary", 5),
    ("discharge-summary", 6),
    ("nursing", 5),
    ("vaccination", 4),
    ("allergy", 3),
    ("dental", 3),
    ("physiotherapy", 3),
    ("maternity", 2),
    ("psychotherapy", 2),
    ("psychiatric", 3),
    ("genetic", 2),
    ("hiv", 1),
)


def say(message: str) -> None:
    print(message, flush=True)


# --- the population ------------------------------------------------------------------------------


def weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([name for name, _ in table], [weight for _, weight in table])[0]


@dataclass(frozen=True)
class Directory:
    """The professionals' directory: small enough (20k) to build up front."""

    practitioners: tuple[Subject, ...]
    assistants: dict[int, Subject]
    systems: tuple[Subject, ...]
    physicians: tuple[int, ...]


def build_directory(seed: int) -> Directory:
    rng = random.Random(seed)
    practitioners = []
    for j in range(PRACTITIONERS):
        profession = weighted(rng, PROFESSIONS)
        specialty = rng.choice(SPECIALTIES) if profession == "physician" else None
        practitioners.append(
            Subject(
                SubjectKind.PRACTITIONER,
                f"pro-{j}",
                profession,
                specialty,
                organization_ids=frozenset({f"org-{j // 20}"}),
                care_team_ids=frozenset({f"team-{j // TEAM_SIZE}"}) if j % 2 == 0 else frozenset(),
            )
        )
    assistants = {
        j: Subject(SubjectKind.ASSISTANT, f"asst-{j}", "medical-assistant", mandator=pro)
        for j, pro in enumerate(practitioners)
        if j % ASSISTANT_EVERY == 0
    }
    systems = tuple(
        Subject(
            SubjectKind.ORGANIZATION_SYSTEM, f"sys-{k}", organization_ids=frozenset({f"org-{k}"})
        )
        for k in range(ORGANIZATIONS)
    )
    physicians = tuple(j for j, p in enumerate(practitioners) if p.profession == "physician")
    return Directory(tuple(practitioners), assistants, systems, physicians)


def index(subject_id: str) -> int:
    return int(subject_id.rsplit("-", 1)[1])


def patient_record(directory: Directory, seed: int, i: int) -> RecordFacts | None:
    """Patient i's facts, the same every time for a seed. None: no record (opt-in, never opened)."""
    rng = random.Random((seed << 32) | i)
    if rng.random() < 0.01:
        return None
    days = rng.randint
    grants: list[Grant] = []
    for n in range(GRANTS_PER_PATIENT):
        start = NOW - days(1, 2000) * DAY
        if rng.random() < 0.03:
            start = NOW + days(1, 30) * DAY
        roll = rng.random()
        end: datetime | None = NOW + days(1, 700) * DAY
        if roll < 0.1:
            end = NOW - days(1, 300) * DAY  # expired
        if n < 6:
            party, party_id = Party.PRACTITIONER, f"pro-{rng.randrange(PRACTITIONERS)}"
            if roll > 0.55:
                end = None  # open-ended personal grant
        elif n < 9:
            party, party_id = Party.ORGANIZATION, f"org-{rng.randrange(ORGANIZATIONS)}"
            if roll > 0.92:
                end = None  # ignored: a group grant needs an end date
        else:
            team = rng.randrange(PRACTITIONERS // TEAM_SIZE)
            party, party_id = Party.CARE_TEAM, f"team-{team}"
        level = GrantLevel.EXTENDED if rng.random() < 0.3 else GrantLevel.NORMAL
        grants.append(
            Grant(party, party_id, level, start, end, f"pat-{i}", delegable=rng.random() < 0.2)
        )
    referring = (
        f"pro-{rng.choice(directory.physicians)}" if rng.random() < 0.9 else None
    )
    blocks: tuple[Block, ...] = ()
    if rng.random() < 0.08:
        if rng.random() < 0.7:
            target = grants[rng.randrange(6)].party_id if rng.random() < 0.3 else None
            blocks = (Block(Party.PRACTITIONER, target or f"pro-{rng.randrange(PRACTITIONERS)}"),)
        else:
            blocks = (Block(Party.ORGANIZATION, f"org-{rng.randrange(ORGANIZATIONS)}"),)
    setting = rng.choices(list(EmergencySetting), [10, 70, 20])[0]
    windows: tuple[EmergencyWindow, ...] = ()
    if rng.random() < 0.05:
        until = NOW + timedelta(hours=rng.randint(-48, 24))
        windows = (EmergencyWindow(f"pro-{rng.randrange(PRACTITIONERS)}", until),)
    representatives: tuple[Representative, ...] = ()
    if rng.random() < 0.15:
        roll = rng.random()
        rep_end = None if roll < 0.6 else NOW + (1 if roll < 0.9 else -1) * days(1, 300) * DAY
        scope = MandateScope.MANAGE if rng.random() < 0.5 else MandateScope.READ
        representatives = (Representative(f"rep-{i}", scope, NOW - days(1, 900) * DAY, rep_end),)
    delegation_allowed = rng.random() < 0.03
    delegations: tuple[Delegation, ...] = ()
    if delegation_allowed:
        level = GrantLevel.EXTENDED if rng.random() < 0.5 else GrantLevel.NORMAL
        delegations = (
            Delegation(
                grants[0].party_id,
                f"pro-{rng.randrange(PRACTITIONERS)}",
                level,
                NOW - 5 * DAY,
                NOW + 5 * DAY,
            ),
        )
    return RecordFacts(
        patient_id=f"pat-{i}",
        state=RecordState.CLOSED if rng.random() < 0.01 else RecordState.ACTIVE,
        referring_physician_id=referring,
        grants=tuple(grants),
        blocks=blocks,
        emergency_setting=setting,
        emergency_windows=windows,
        representatives=representatives,
        delegation_allowed=delegation_allowed,
        delegations=delegations,
    )


def patient_document(
    directory: Directory, seed: int, i: int, k: int, record: RecordFacts | None
) -> DocumentFacts:
    """Document k (0..49) of patient i: half written by practitioners the patient granted."""
    rng = random.Random((seed << 48) ^ (i * 64 + k) ^ 0x5EED)
    if record is not None and rng.random() < 0.5:
        author = directory.practitioners[index(record.grants[rng.randrange(6)].party_id)]
    else:
        author = directory.practitioners[rng.randrange(PRACTITIONERS)]
    return DocumentFacts(
        id=f"doc-{i}-{k}",
        author_id=author.id,
        author_organization_id=next(iter(author.organization_ids)),
        class_code=weighted(rng, CLASSES),
        confidentiality=rng.choices(list(Confidentiality), [85, 12, 3])[0],
        hidden=rng.random() < 0.03,
        not_yet_visible_to_patient=rng.random() < 0.03,
    )


Triple = tuple[Subject, RecordFacts | None, DocumentFacts, int]


def draw(directory: Directory, seed: int, rng: random.Random, patients: Sequence[int]) -> Triple:
    """One request: a patient, one of its documents and who asks (a realistic mix)."""
    i = patients[rng.randrange(len(patients))]
    record = patient_record(directory, seed, i)
    document = patient_document(directory, seed, i, rng.randrange(DOCUMENTS_PER_PATIENT), record)
    pros = directory.practitioners

    def granted_practitioner() -> Subject:
        if record is None:
            return pros[rng.randrange(PRACTITIONERS)]
        return pros[index(record.grants[rng.randrange(6)].party_id)]

    roll = rng.random()
    subject: Subject
    if roll < 0.40:
        subject = granted_practitioner()
    elif roll < 0.50:  # a colleague of a granted organization or care team
        grant = record.grants[rng.randrange(6, GRANTS_PER_PATIENT)] if record else None
        if grant is not None and grant.party is Party.ORGANIZATION:
            subject = pros[index(grant.party_id) * 20 + rng.randrange(20)]
        elif grant is not None:
            subject = pros[index(grant.party_id) * TEAM_SIZE + rng.randrange(0, TEAM_SIZE, 2)]
        else:
            subject = pros[rng.randrange(PRACTITIONERS)]
    elif roll < 0.58:
        ref = record.referring_physician_id if record else None
        subject = pros[index(ref)] if ref else granted_practitioner()
    elif roll < 0.65:
        subject = pros[index(document.author_id)]
    elif roll < 0.70:
        windows = record.emergency_windows if record else ()
        subject = pros[index(windows[0].practitioner_id)] if windows else granted_practitioner()
    elif roll < 0.80:
        subject = pros[rng.randrange(PRACTITIONERS)]  # a stranger
    elif roll < 0.85:
        mandator = index(granted_practitioner().id)
        mandator -= mandator % ASSISTANT_EVERY
        subject = directory.assistants[mandator]
    elif roll < 0.90:
        grant = record.grants[rng.randrange(6, 9)] if record else None
        org = index(grant.party_id) if grant else rng.randrange(ORGANIZATIONS)
        subject = directory.systems[org if rng.random() < 0.8 else rng.randrange(ORGANIZATIONS)]
    elif roll < 0.95:
        own = rng.random() < 0.95
        subject = Subject(SubjectKind.PATIENT, f"pat-{i if own else rng.randrange(PATIENTS)}")
    elif roll < 0.99:
        subject = Subject(SubjectKind.REPRESENTATIVE, f"rep-{i if rng.random() < 0.9 else i + 1}")
    else:
        subject = Subject(SubjectKind.OPERATOR, f"op-{rng.randrange(10)}")
    if subject.kind is SubjectKind.PRACTITIONER and rng.random() < 0.005:
        subject = replace(subject, licence_active=False)
    return subject, record, document, i


def chunks(
    directory: Directory, seed: int, total: int, size: int, patients: Sequence[int], salt: int
) -> Iterator[list[Triple]]:
    rng = random.Random(seed * 7919 + salt)
    done = 0
    while done < total:
        n = min(size, total - done)
        yield [draw(directory, seed, rng, patients) for _ in range(n)]
        done += n


class Span(Sequence[int]):
    """range(n) without materializing: the million patients."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        return i


# --- the engine ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def timer_overhead(samples: int = 200_000) -> dict[str, float]:
    """What ``t0 = clock(); t1 = clock()`` reports around nothing: included in every latency."""
    clock = time.perf_counter_ns
    gaps = []
    for _ in range(samples):
        t0 = clock()
        gaps.append(clock() - t0)
    gaps.sort()
    return {
        "samples": samples,
        "p50_ns": percentile(gaps, 0.50),
        "p99_ns": percentile(gaps, 0.99),
        "mean_ns": round(statistics.fmean(gaps), 1),
    }


def loop_overhead_ns(batch: Sequence[Triple]) -> float:
    """The batch loop's own cost per iteration (unpacking a triple), included in throughput."""
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(5):
        start = clock()
        for _subject, _record, _document, _ in batch:
            pass
        best = min(best, clock() - start)
    return best / len(batch)


def warm_up(directory: Directory, seed: int, decisions: int) -> None:
    """Untimed decisions on requests of their own: the interpreter specializes, the memos fill."""
    for batch in chunks(directory, seed, decisions, max(1, decisions), Span(PATIENTS), salt=0):
        for subject, record, document, _ in batch:
            decide(subject, Action.READ, record, document, NOW, BUILTIN_MATRIX)


class EngineRun:
    """Throughput and latency on the 1M-patient sample, each request decided exactly once.

    In each chunk of requests (generated outside every timed region) the even-numbered ones are
    decided in one loop timed as a whole (throughput: decisions / loop time, the loop's own cost
    included); the odd-numbered ones are timed one call at a time (latency, the timer's own cost
    included: see ``timer_overhead``).
    """

    def __init__(self) -> None:
        self.batch_ns = 0
        self.batched = 0
        self.batch_rates: list[float] = []
        self.loop_ns: list[float] = []
        self.latencies: list[int] = []
        self.rules: Counter[str] = Counter()
        self.permits = 0

    def run(self, batch: list[Triple]) -> None:
        read, matrix, clock = Action.READ, BUILTIN_MATRIX, time.perf_counter_ns
        timed_as_batch, timed_one_by_one = batch[0::2], batch[1::2]
        start = clock()
        for subject, record, document, _ in timed_as_batch:
            decide(subject, read, record, document, NOW, matrix)
        elapsed = clock() - start
        self.batch_ns += elapsed
        self.batched += len(timed_as_batch)
        self.batch_rates.append(len(timed_as_batch) / (elapsed / 1e9))
        for subject, record, document, _ in timed_one_by_one:
            t0 = clock()
            decision = decide(subject, read, record, document, NOW, matrix)
            self.latencies.append(clock() - t0)
            self.rules[decision.rule] += 1
            self.permits += decision.permit
        self.loop_ns.append(loop_overhead_ns(timed_as_batch))

    def result(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        return {
            "decisions": self.batched + len(latencies),
            "throughput_decisions": self.batched,
            "latency_decisions": len(latencies),
            "decisions_per_s": round(self.batched / (self.batch_ns / 1e9)),
            "mean_us_in_batches": round(self.batch_ns / self.batched / 1000, 2),
            "batches": len(self.batch_rates),
            "batch_decisions_per_s": {
                "min": round(min(self.batch_rates)),
                "median": round(statistics.median(self.batch_rates)),
                "max": round(max(self.batch_rates)),
            },
            "loop_overhead_ns_per_decision": round(statistics.fmean(self.loop_ns), 1),
            "p50_us": round(percentile(latencies, 0.50) / 1000, 2),
            "p99_us": round(percentile(latencies, 0.99) / 1000, 2),
            "p999_us": round(percentile(latencies, 0.999) / 1000, 2),
            "max_us": round(latencies[-1] / 1000, 2),
            "mean_us": round(statistics.fmean(latencies) / 1000, 2),
            "permits": self.permits,
            "rules": dict(self.rules.most_common()),
        }


def profile_engine(directory: Directory, seed: int, decisions: int) -> tuple[str, float, float]:
    """cProfile's view of ``decisions`` decisions, with the same batch timed without it: the
    profiler instruments every Python call, and a decision makes a dozen."""
    batch = next(chunks(directory, seed, decisions, decisions, Span(PATIENTS), salt=3))
    clock = time.perf_counter_ns
    start = clock()
    for subject, record, document, _ in batch:
        decide(subject, Action.READ, record, document, NOW, BUILTIN_MATRIX)
    plain_s = (clock() - start) / 1e9
    profiler = cProfile.Profile()
    start = clock()
    profiler.enable()
    for subject, record, document, _ in batch:
        decide(subject, Action.READ, record, document, NOW, BUILTIN_MATRIX)
    profiler.disable()
    profiled_s = (clock() - start) / 1e9
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue(), plain_s, profiled_s


# --- pycasbin ------------------------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = pat, rec, sub, acting, kind, pro, valid, prof, pspec, cls, conf, hidden, nyv, author, now

[policy_definition]
p = pat, rec, typ, sub, a, b, c, d, eft

[role_definition]
g = _, _
g2 = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.valid == "1" && p.pat == r.pat && ( \
(p.typ == "patient" && r.kind == "patient" && r.sub == p.sub && r.nyv == "0") || \
(p.typ == "rep" && r.kind == "representative" && r.sub == p.sub && p.b <= r.now \
 && r.now < p.c && (p.d == "active" || p.a == "manage") && r.nyv == "0" && r.conf != "V") || \
(p.typ == "guard" && r.pro == "1" && (p.a == "closed" || \
 (!(r.kind == "practitioner" && r.author == r.sub) && ( \
  (r.hidden == "1" && !(r.kind == "practitioner" && r.sub == p.sub)) || r.conf == "V" || \
  !(g2(r.cls, r.prof) || g2("*", r.prof) || g2(r.cls, r.pspec) || g2("*", r.pspec)))))) || \
(p.typ == "block" && r.pro == "1" && (g(r.sub, p.sub) || g(r.acting, p.sub))) || \
(p.typ == "author" && r.kind == "practitioner" && r.author == r.sub) || \
(p.typ == "grant" && r.pro == "1" && g(r.acting, p.sub) && p.b <= r.now && r.now < p.c \
 && (r.conf == "N" || p.a == "R")) || \
(p.typ == "referring" && r.pro == "1" && r.acting == p.sub) || \
(p.typ == "emergency" && r.kind == "practitioner" && r.sub == p.sub && r.now < p.c \
 && (r.conf == "N" || p.a == "R")))
"""
OPEN_END = "9999999999"
NO_END = "0000000000"  # a group grant without an end date: never active


def epoch(moment: datetime) -> str:
    """Ten digits, so that Casbin's string comparison orders instants."""
    return f"{int(moment.timestamp()):010d}"


# FastEnforcer indexes policies by request positions that equal policy positions; its index
# needs two levels, hence the patient twice (``pat`` and ``rec``) in requests and policies.
CACHE_KEY_ORDER = [0, 1]


def MemoryAdapter(  # noqa: N802 - builds a class deriving from casbin's, imported at run time
    casbin: Any, rows: list[list[str]], members: list[list[str]], profiles: list[list[str]]
) -> Any:
    """The in-memory adapter: rows appended straight into the model (``add_policies`` checks
    each new row against the whole FastPolicy, quadratic in the number of rows)."""

    class Adapter(casbin.persist.Adapter):  # type: ignore[misc]
        def load_policy(self, model: Any) -> None:
            for sec, key, lines in (("p", "p", rows), ("g", "g", members), ("g", "g2", profiles)):
                policy = model.model[sec][key].policy
                for line in lines:
                    policy.append(line)

    return Adapter()


def casbin_policies(record: RecordFacts) -> set[tuple[str, ...]]:
    pat = record.patient_id
    rows = {
        (pat, "patient", pat, "-", "-", "-", "-", "allow"),
        (pat, "author", "-", "-", "-", "-", "-", "allow"),
        (pat, "guard", record.referring_physician_id or "-", record.state.value, "-", "-", "-",
         "deny"),
    }
    if record.referring_physician_id:
        rows.add((pat, "referring", record.referring_physician_id, "R", "-", "-", "-", "allow"))
    for grant in record.grants:
        if grant.end is not None:
            end = epoch(grant.end)
        else:
            end = OPEN_END if grant.party is Party.PRACTITIONER else NO_END
        level = "R" if grant.level is GrantLevel.EXTENDED else "N"
        rows.add((pat, "grant", grant.party_id, level, epoch(grant.start), end, "-", "allow"))
    for block in record.blocks:
        rows.add((pat, "block", block.party_id, "-", "-", "-", "-", "deny"))
    if record.emergency_setting is not EmergencySetting.OFF:
        level = "R" if record.emergency_setting is EmergencySetting.NORMAL_AND_RESTRICTED else "N"
        for window in record.emergency_windows:
            rows.add((pat, "emergency", window.practitioner_id, level, "-", epoch(window.until),
                      "-", "allow"))
    for rep in record.representatives:
        end = epoch(rep.end) if rep.end is not None else OPEN_END
        rows.add((pat, "rep", rep.person_id, rep.scope.value, epoch(rep.start), end,
                  record.state.value, "allow"))
    return rows


def casbin_links(directory: Directory) -> tuple[list[list[str]], list[list[str]]]:
    members = []
    for pro in directory.practitioners:
        members += [[pro.id, group] for group in (*pro.organization_ids, *pro.care_team_ids)]
    members += [[system.id, org] for system in directory.systems for org in system.organization_ids]
    profiles = []
    for key, actions in BUILTIN_MATRIX.profiles.items():
        profiles += [[code, f"read:{key}"] for code in sorted(actions["read"])]
    return members, profiles


def casbin_request(subject: Subject, record: RecordFacts | None, document: DocumentFacts,
                   i: int) -> tuple[str, ...]:
    acting = subject.mandator if subject.mandator is not None else subject
    valid = subject.identity_valid and (
        subject.kind not in (SubjectKind.PRACTITIONER, SubjectKind.ASSISTANT)
        or subject.licence_active
    )
    if subject.kind is SubjectKind.ASSISTANT:
        valid = valid and acting.kind is SubjectKind.PRACTITIONER and acting.identity_valid \
            and acting.licence_active
    pro = subject.kind in (
        SubjectKind.PRACTITIONER, SubjectKind.ASSISTANT, SubjectKind.ORGANIZATION_SYSTEM
    )
    if subject.kind is SubjectKind.ORGANIZATION_SYSTEM:
        prof, pspec = f"read:{ORGANIZATION_SYSTEM_PROFILE}", "-"
    elif pro and acting.profession:
        prof = f"read:{acting.profession}"
        pspec = f"read:{acting.profession}/{acting.specialty}" if acting.specialty else "-"
    else:
        prof = pspec = "-"
    return (
        record.patient_id if record is not None else f"pat-{i}",
        record.patient_id if record is not None else f"pat-{i}",
        subject.id,
        acting.id,
        subject.kind.value,
        "1" if pro else "0",
        "1" if valid else "0",
        prof,
        pspec,
        document.class_code,
        document.confidentiality.value,
        "1" if document.hidden else "0",
        "1" if document.not_yet_visible_to_patient else "0",
        document.author_id,
        epoch(NOW),
    )


def load_casbin(install: bool) -> Any:
    try:
        return importlib.import_module("casbin")
    except ImportError:
        pass
    say(f"pycasbin is not installed; it is a benchmark-only dependency ({PYCASBIN_REQUIREMENT}).")
    command = [sys.executable, "-m", "pip", "install", PYCASBIN_REQUIREMENT]
    if not install:
        sys.exit(f"install it with: {' '.join(command)}")
    say(f"installing: {' '.join(command)}")
    if subprocess.run(command, check=False).returncode != 0:
        sys.exit(f"could not install pycasbin; run: {' '.join(command)}")
    return importlib.import_module("casbin")


@dataclass
class CasbinSetup:
    enforcer: Any
    population: list[int]
    info: dict[str, Any]


def setup_casbin(casbin: Any, directory: Directory, seed: int, patients: int) -> CasbinSetup:
    started = time.perf_counter()
    population: list[int] = []
    rows: list[list[str]] = []
    skipped = 0
    for i in range(PATIENTS):
        if len(population) == patients:
            break
        record = patient_record(directory, seed, i)
        if record is not None and record.delegations:
            skipped += 1  # delegations cannot be expressed in a one-row matcher
            continue
        population.append(i)
        if record is not None:
            rows += [[row[0], *row] for row in sorted(casbin_policies(record))]
    members, profiles = casbin_links(directory)
    model = importlib.import_module("casbin.model").FastModel(CACHE_KEY_ORDER)
    model.load_model_from_text(CASBIN_MODEL)
    # pycasbin's FastModel.add_def returns None, so loading stops after "g": add "g2" by hand.
    if "g2" not in model.model["g"]:
        model.add_def("g", "g2", "_, _")
    adapter = MemoryAdapter(casbin, rows, members, profiles)
    enforcer = casbin.FastEnforcer(model, adapter, cache_key_order=CACHE_KEY_ORDER)
    load_s = time.perf_counter() - started
    say(f"      loaded {len(rows):,} policy rows for {len(population):,} patients, "
        f"{len(members):,} + {len(profiles)} role links in {load_s:.1f} s")
    return CasbinSetup(enforcer, population, {
        "enforcer": f"casbin.FastEnforcer {casbin_version()} (in-memory, indexed by patient)",
        "patients": len(population),
        "patients_skipped_for_delegations": skipped,
        "policy_rows": len(rows),
        "role_links": len(members) + len(profiles),
        "load_s": round(load_s, 1),
    })


class CasbinRun:
    """The same requests through pycasbin and the engine, each batch timed as a whole (requests
    built beforehand), the answers compared on every request."""

    def __init__(self, setup: CasbinSetup) -> None:
        self.setup = setup
        self.agree = self.total = 0
        self.casbin_ns = self.engine_ns = 0
        self.disagreements: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    def run(self, batch: list[Triple]) -> None:
        enforcer, clock = self.setup.enforcer, time.perf_counter_ns
        requests = [casbin_request(*triple) for triple in batch]
        start = clock()
        allowed = [enforcer.enforce(*request) for request in requests]
        self.casbin_ns += clock() - start
        start = clock()
        ours = [decide(s, Action.READ, r, d, NOW, BUILTIN_MATRIX) for s, r, d, _ in batch]
        self.engine_ns += clock() - start
        for decision, permit, triple in zip(ours, allowed, batch, strict=True):
            self.total += 1
            if decision.permit == bool(permit):
                self.agree += 1
                continue
            self.disagreements[decision.rule] += 1
            if len(self.examples) < 5:
                self.examples.append({"engine": decision.explain(), "casbin": bool(permit),
                                      "subject": triple[0].id, "document": triple[2].id})

    def result(self) -> dict[str, Any]:
        return {
            **self.setup.info,
            "decisions": self.total,
            "decisions_per_s": round(self.total / (self.casbin_ns / 1e9)),
            "engine_decisions_per_s_same_requests": round(self.total / (self.engine_ns / 1e9)),
            "agree": self.agree,
            "disagreements_by_engine_rule": dict(self.disagreements),
            "disagreement_examples": self.examples,
        }


def casbin_version() -> str:
    from importlib.metadata import version

    with contextlib.suppress(Exception):
        return version("pycasbin")
    return "?"


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pycasbin": casbin_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=200_000,
                        help="engine requests sampled from the 1M-patient population, each "
                        "decided once: half in timed batches, half timed one by one")
    parser.add_argument("--chunk", type=int, default=10_000,
                        help="requests generated per chunk (half timed as a batch, half per call)")
    parser.add_argument("--warmup", type=int, default=2_000,
                        help="untimed decisions first, on requests of their own")
    parser.add_argument("--casbin-patients", type=int, default=5_000,
                        help="patients whose policies are loaded into pycasbin")
    parser.add_argument("--casbin-decisions", type=int, default=20_000)
    parser.add_argument("--casbin-seconds", type=float, default=30.0,
                        help="stop sending requests to pycasbin once it has spent this long")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--profile", type=int, default=20_000,
                        help="decisions to run under cProfile (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-install", action="store_true",
                        help="do not pip-install pycasbin if it is missing")
    args = parser.parse_args(argv)

    casbin = load_casbin(install=not args.no_install)
    say(f"population: {PATIENTS:,} patients, {PRACTITIONERS:,} practitioners "
        f"(+{PRACTITIONERS // ASSISTANT_EVERY:,} assistants, {ORGANIZATIONS:,} organization "
        f"systems), {GRANTS_PER_PATIENT} grants and {DOCUMENTS_PER_PATIENT} documents per patient")
    say("  generated lazily: each sampled patient's facts and document come from its seed; "
        "the engine sees one patient's facts per decision, as loaded in production")
    directory = build_directory(args.seed)

    overhead = timer_overhead()
    say(f"timer: perf_counter_ns pair p50 {overhead['p50_ns']} ns, p99 {overhead['p99_ns']} ns "
        "(included in every latency below)")
    say(f"[1/3] pycasbin: loading {args.casbin_patients:,} patients' policies …")
    setup = setup_casbin(casbin, directory, args.seed, args.casbin_patients)
    rounds = math.ceil(args.decisions / args.chunk)
    casbin_batch = max(1, math.ceil(args.casbin_decisions / rounds))
    say(f"[2/3] warm-up: {args.warmup:,} untimed decisions")
    warm_up(directory, args.seed, args.warmup)
    say(f"[3/3] {rounds} rounds, one thread: {args.chunk:,} engine requests from the 1M-patient "
        f"sample, then {casbin_batch:,} requests from the Casbin sub-population through both "
        "(interleaved, so that a slower or faster spell of the machine weighs on both) …")
    engine_run, casbin_run = EngineRun(), CasbinRun(setup)
    casbin_batches = chunks(directory, args.seed, args.casbin_decisions, casbin_batch,
                            setup.population, salt=2)
    for batch in chunks(directory, args.seed, args.decisions, args.chunk, Span(PATIENTS), salt=1):
        engine_run.run(batch)
        same = next(casbin_batches, None)
        if same is not None and casbin_run.casbin_ns / 1e9 < args.casbin_seconds:
            casbin_run.run(same)
    engine = engine_run.result() | {"warmup_decisions": args.warmup}
    cas = casbin_run.result()

    ratio = round(engine["decisions_per_s"] / cas["decisions_per_s"], 1)
    goals = {"ratio": ratio >= GOAL_RATIO, "p99": engine["p99_us"] <= GOAL_P99_US}
    width = 46
    say("")
    say(f"{'':{width}} {'decisions/s':>12} {'p50 µs':>8} {'p99 µs':>8}")
    say(f"{'CareVault engine (1M-patient sample)':{width}} {engine['decisions_per_s']:>12,} "
        f"{engine['p50_us']:>8} {engine['p99_us']:>8}")
    say(f"{'CareVault engine (Casbin sub-population)':{width}} "
        f"{cas['engine_decisions_per_s_same_requests']:>12,}")
    say(f"{'pycasbin FastEnforcer':{width}} {cas['decisions_per_s']:>12,}")
    say(f"ratio vs pycasbin: {ratio}× (goal ≥ {GOAL_RATIO}×: "
        f"{'met' if goals['ratio'] else 'MISSED'})"
        f"; p99 {engine['p99_us']} µs (goal ≤ {GOAL_P99_US} µs: "
        f"{'met' if goals['p99'] else 'MISSED'})")
    say(f"agreement: {cas['agree']:,}/{cas['decisions']:,}"
        + (f" — disagreements by rule: {cas['disagreements_by_engine_rule']}"
           if cas["agree"] != cas["decisions"] else ""))
    for example in cas["disagreement_examples"]:
        say(f"  {example}")
    say(f"engine permits {engine['permits']:,}/{engine['latency_decisions']:,} (latency half); "
        f"deciding rules: {engine['rules']}")

    profile: dict[str, Any] = {}
    if args.profile:
        text, plain_s, profiled_s = profile_engine(directory, args.seed, args.profile)
        profile = {"decisions": args.profile, "plain_s": round(plain_s, 3),
                   "under_cprofile_s": round(profiled_s, 3)}
        say(f"\ncProfile of {args.profile:,} decisions: {profiled_s:.2f} s under the profiler, "
            f"{plain_s:.2f} s without it (tottime):")
        say("\n".join(text.splitlines()[:30]))

    result = {
        "decisions_per_s": engine["decisions_per_s"],
        "p50_us": engine["p50_us"],
        "p99_us": engine["p99_us"],
        "pycasbin_decisions_per_s": cas["decisions_per_s"],
        "ratio_vs_pycasbin": ratio,
        "ratio_vs_pycasbin_same_requests": round(
            cas["engine_decisions_per_s_same_requests"] / cas["decisions_per_s"], 1
        ),
        "agreement": f"{cas['agree']}/{cas['decisions']}",
        "population": {
            "patients": PATIENTS,
            "professionals": PRACTITIONERS,
            "assistants": PRACTITIONERS // ASSISTANT_EVERY,
            "organization_systems": ORGANIZATIONS,
            "grants_per_patient": GRANTS_PER_PATIENT,
            "documents_per_patient": DOCUMENTS_PER_PATIENT,
            "generation": "lazy, seeded per patient and per document; facts sampled per decision",
        },
        "sampling": (
            f"each request draws a patient uniformly from the {PATIENTS:,} (seeded), generates "
            f"that patient's facts and one of its {DOCUMENTS_PER_PATIENT} documents as new "
            "objects, and a subject from the 20k-professional directory by a realistic mix; "
            f"requests are generated in chunks of {args.chunk:,} outside every timed region; in "
            "each chunk the even-numbered requests are decided in one loop timed with "
            "perf_counter_ns (throughput), the odd-numbered ones one call at a time (latency); "
            "every request is decided exactly once, after an untimed warm-up on requests of "
            "its own"
        ),
        "measured_region": "decide(subject, Action.READ, record, document, now, matrix) on facts "
        "already built, nothing else (throughput also includes the loop's own iteration, "
        "latency the timer's own cost)",
        "timer_overhead_ns": overhead,
        "comparison": f"interleaved: after each engine chunk, {casbin_batch:,} requests from the "
        "Casbin sub-population go through pycasbin (timed as a batch, requests built "
        "beforehand), then through the engine (timed as a batch), answers compared on every one",
        "sampled_decisions": engine["decisions"],
        "pycasbin_scale": {
            key: cas[key]
            for key in ("enforcer", "patients", "patients_skipped_for_delegations",
                        "policy_rows", "role_links", "load_s", "decisions")
        },
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "goal_ratio": GOAL_RATIO,
        "goal_p99_us": GOAL_P99_US,
        "goals_met": goals["ratio"] and goals["p99"],
        "details": {
            "action": "read, one document",
            "seed": args.seed,
            "engine": engine,
            "pycasbin": cas,
            "cprofile": profile,
            "not_compared": "delegations (patients holding one are left out of Casbin's "
            "sub-population); reasons, obligations and paths (Casbin only says allow/deny)",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    say(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
