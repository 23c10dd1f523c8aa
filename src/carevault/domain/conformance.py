"""The conformance sandbox's scenario and its verdict, read from what the platform recorded.

A vendor's system registered in the ``integration`` environment runs a scripted list of
transactions (`SCENARIO`). What it did is not what it claims: it is the audit log's entries of
its client during the run, one per request (`Attempt`). `assess` sorts them into the steps
of the scenario and says of each whether the system performed it correctly at least once
(``passed``), only failed it (``failed``, with what it was told) or never tried
(``not-attempted``). A report passes when every step passed.

What the server cannot see is said so: a system that retrieved an author's signature is
expected to verify it itself (the platform verified it on submission); an access decision is
read from a refusal of the engine (HTTP 403 with an OperationOutcome), the only decision a
system is told.

The report is a plain mapping (JSON), signed by the platform elsewhere; `report_errors` checks
the shape a signed report must have before anyone trusts its verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carevault.domain.audit import AuditRecord
from carevault.domain.errors import InvalidInput

REPORT_TYPE = "carevault-conformance-report"
REPORT_VERSION = 1
# The environment whose reports the operator trusts for production credentials.
SANDBOX_ENVIRONMENT = "integration"
# At most this many failed attempts are named per step (the count is always given).
NAMED_FAILURES = 5
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()+-]*")

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not-attempted"


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    transaction: str  # the IHE / SMART name an integrator looks up
    observed: str  # what the platform sees of it


SCENARIO: tuple[Step, ...] = (
    Step(
        "authenticate",
        "Authenticate with SMART Backend Services",
        "SMART Backend Services (client_credentials, private_key_jwt)",
        "a token request of the client's certificate answered with an access token",
    ),
    Step(
        "feed-patient",
        "Feed a patient",
        "IHE PMIR/ITI-104 (PUT Patient?identifier=system|value)",
        "the patient created or updated under the system's assigning authority",
    ),
    Step(
        "care-event",
        "Record a care event",
        "FHIR create Encounter",
        "the visit recorded; it opens the record to the system's professional",
    ),
    Step(
        "publish",
        "Publish a signed document",
        "IHE MHD ITI-65 Provide Document Bundle",
        "the Bundle accepted, the author's signature verified by the platform",
    ),
    Step(
        "replace",
        "Replace a document",
        "IHE MHD ITI-65 with relatesTo 'replaces'",
        "the new version accepted and the old one superseded",
    ),
    Step(
        "find",
        "Find documents",
        "IHE MHD ITI-67 Find Document References",
        "a DocumentReference search answered",
    ),
    Step(
        "retrieve",
        "Retrieve a document",
        "IHE MHD ITI-68 Retrieve Document",
        "a document's bytes served",
    ),
    Step(
        "verify-signature",
        "Retrieve an author's signature to verify it",
        "IHE DSG detached signature, retrieved with ITI-68",
        "a signature's JWS served; the check against the platform CA is the system's own",
    ),
    Step(
        "access-decision",
        "Read an access decision",
        "HTTP 403 with an OperationOutcome (the engine's refusal)",
        "a request the authorization engine refused, with its reason told",
    ),
)
STEP_KEYS = tuple(s.key for s in SCENARIO)


def check_system_name(name: str) -> str:
    """A system's name as the operator registers it (product and version): letters, digits,
    spaces and ``. _ ( ) + -``, at most 64 characters."""
    if not 1 <= len(name) <= MAX_NAME or _NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"a system name is 1 to {MAX_NAME} letters, digits, spaces or . _ ( ) + - and "
            f"starts with a letter or digit: {name[:80]!r}",
            expression="SYSTEM",
        )
    return name


def slug(name: str) -> str:
    """The upper-case identifier part a name gives (``Demo HIS 1.0`` → ``DEMO-HIS-1-0``)."""
    return "-".join(re.findall(r"[A-Z0-9]+", name.upper()))


@dataclass(frozen=True)
class Attempt:
    """One request of the system, as its audit entry records it."""

    index: int  # the entry's leaf index in the clinical stream
    recorded: str
    interaction: str
    entity_type: str | None
    status: int | None
    outcome: str
    rule: str | None
    detail: Mapping[str, str]

    @classmethod
    def of(cls, index: int, record: AuditRecord) -> Attempt:
        return cls(
            index,
            record.recorded,
            record.interaction,
            record.entity_type,
            record.status,
            record.outcome,
            record.rule,
            dict(record.detail),
        )

    @property
    def succeeded(self) -> bool:
        return self.outcome == "0"

    @property
    def engine_refusal(self) -> bool:
        """Refused by the authorization engine on the record's facts (not for the token or
        its scopes, which are the identity rule)."""
        rule = self.rule or ""
        return self.status == 403 and ": deny (" in rule and ": deny (identity)" not in rule

    def error(self) -> str:
        """What the system was told, as precisely as the entry says it."""
        said = self.detail.get("error") or self.detail.get("reason")
        if said is None and self.rule and ": deny (" in self.rule:
            said = self.rule.split(" — ", 1)[-1]
        status = f"HTTP {self.status}" if self.status is not None else f"outcome {self.outcome}"
        return f"{status}: {said}" if said else status


def is_attempt_of(record: AuditRecord, client_id: str) -> bool:
    """Whether ``record`` is the main entry of a request of ``client_id``: its FHIR requests
    (the token's client) and its token requests once the client authenticated (granted, or
    refused for its scope or the professional it named: ``client_id``). A token request
    refused before that names only the client it claimed (``claimed-client``), which anyone can
    claim: it is counted against nobody (`is_unauthenticated_claim`), so that a third party
    cannot add failures to another system's report."""
    if record.stream != "clinical" or record.kind not in ("access", "authentication"):
        return False
    if record.interaction == "token":
        return record.detail.get("client_id") == client_id
    return record.kind == "access" and record.detail.get("client_id") == client_id


def is_unauthenticated_claim(record: AuditRecord, client_id: str) -> bool:
    """A token request refused before any client authenticated, claiming ``client_id``: shown
    apart in the report (the vendor may find a misconfigured key there), never a failure."""
    return (
        record.stream == "clinical"
        and record.interaction == "token"
        and "client_id" not in record.detail
        and record.detail.get("claimed-client") == client_id
    )


def steps_of(attempt: Attempt) -> tuple[str, ...]:
    """The scenario steps one request counts for (none: a request outside the scenario)."""
    found: list[str] = []
    kind, interaction = attempt.entity_type, attempt.interaction
    if interaction == "token":
        found.append("authenticate")
    elif kind == "Patient" and interaction == "conditional-update":
        found.append("feed-patient")
    elif kind == "Encounter" and interaction == "create":
        found.append("care-event")
    elif interaction == "transaction":
        found.append("replace" if attempt.detail.get("replaces") else "publish")
    elif kind == "DocumentReference" and interaction == "search-type":
        found.append("find")
    elif kind == "Binary" and interaction in ("read", "vread"):
        found.append("verify-signature" if attempt.detail.get("signs") else "retrieve")
    if attempt.engine_refusal:
        found.append("access-decision")
    return tuple(found)


@dataclass(frozen=True)
class StepResult:
    step: Step
    status: str
    attempts: int
    failures: tuple[Attempt, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.key,
            "title": self.step.title,
            "transaction": self.step.transaction,
            "observed": self.step.observed,
            "status": self.status,
            "attempts": self.attempts,
            "failed-attempts": len(self.failures),
            "errors": [
                {"entry": f.index, "recorded": f.recorded, "error": f.error()[:500]}
                for f in self.failures[:NAMED_FAILURES]
            ],
        }


def assess(attempts: Iterable[Attempt]) -> tuple[StepResult, ...]:
    """Each step of the scenario: passed when one attempt at least succeeded. An engine
    refusal is the access-decision step done right; for the transaction it was made in, it
    is a failed attempt like any other."""
    by_step: dict[str, list[Attempt]] = {key: [] for key in STEP_KEYS}
    for attempt in attempts:
        for key in steps_of(attempt):
            by_step[key].append(attempt)
    results = []
    for step in SCENARIO:
        made = by_step[step.key]
        if step.key == "access-decision":
            failures: tuple[Attempt, ...] = ()
            passed = bool(made)
        else:
            failures = tuple(a for a in made if not a.succeeded)
            passed = any(a.succeeded for a in made)
        status = PASSED if passed else FAILED if made else NOT_ATTEMPTED
        results.append(StepResult(step, status, len(made), failures))
    return tuple(results)


def verdict(results: Sequence[StepResult]) -> bool:
    """Passed only when every step of the whole scenario passed (an empty list fails)."""
    return len(results) == len(SCENARIO) and all(r.status == PASSED for r in results)


def report_errors(report: Mapping[str, Any]) -> list[str]:
    """What makes a (signed) mapping unusable as a conformance report; empty if none."""
    errors = []
    if report.get("type") != REPORT_TYPE:
        errors.append(f"type is not {REPORT_TYPE!r}")
    if report.get("version") != REPORT_VERSION:
        errors.append(f"version is not {REPORT_VERSION}")
    for name in ("system", "client_id", "environment", "issued"):
        if not isinstance(report.get(name), str):
            errors.append(f"{name} is missing")
    if not isinstance(report.get("passed"), bool):
        errors.append("passed is not a boolean")
    steps = report.get("steps")
    if not isinstance(steps, list) or [
        s.get("step") if isinstance(s, dict) else None for s in steps
    ] != list(STEP_KEYS):
        errors.append("steps are not the scenario's")
    elif report.get("passed") is True and any(s.get("status") != PASSED for s in steps):
        errors.append("passed is true while a step did not pass")
    return errors


def failed_steps(report: Mapping[str, Any]) -> list[str]:
    """The keys of the steps a well-formed report says did not pass."""
    steps = report.get("steps")
    if not isinstance(steps, list):
        return []
    return [str(s.get("step")) for s in steps if isinstance(s, dict) and s.get("status") != PASSED]


__all__ = [
    "FAILED",
    "NOT_ATTEMPTED",
    "PASSED",
    "REPORT_TYPE",
    "REPORT_VERSION",
    "SANDBOX_ENVIRONMENT",
    "SCENARIO",
    "STEP_KEYS",
    "Attempt",
    "Step",
    "StepResult",
    "assess",
    "check_system_name",
    "failed_steps",
    "is_attempt_of",
    "report_errors",
    "slug",
    "steps_of",
    "verdict",
]
