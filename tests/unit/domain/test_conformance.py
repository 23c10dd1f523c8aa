"""The sandbox's scenario, read from audit entries: which request counts for which step, and
when a step (and the report) passes."""

from __future__ import annotations

from typing import Any

import pytest

from carevault.domain.audit import Agent, AuditRecord
from carevault.domain.conformance import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    STEP_KEYS,
    Attempt,
    assess,
    check_system_name,
    is_attempt_of,
    is_unauthenticated_claim,
    report_errors,
    slug,
    steps_of,
    verdict,
)
from carevault.domain.errors import InvalidInput

CLIENT = "system:SANDBOX-DEMO"
DENY = "identity → record → access: deny (access) — You have no access to this record."


def attempt(interaction: str, entity: str | None = None, status: int = 200,
            rule: str | None = None, index: int = 0, **detail: str) -> Attempt:
    return Attempt(index, "2026-11-20T10:00:00.000Z", interaction, entity, status,
                   "0" if status < 400 else "4", rule, detail)


def record(**changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "stream": "clinical", "recorded": "2026-11-20T10:00:00.000Z", "kind": "access",
        "action": "R", "interaction": "read", "outcome": "0", "agent": Agent(),
        "detail": {"client_id": CLIENT}}
    return AuditRecord(**{**fields, **changes})


@pytest.mark.parametrize(("made", "steps"), [
    (attempt("token"), ("authenticate",)),
    (attempt("conditional-update", "Patient"), ("feed-patient",)),
    (attempt("create", "Encounter", 201), ("care-event",)),
    (attempt("transaction", "Bundle"), ("publish",)),
    (attempt("transaction", "Bundle", replaces="doc-1"), ("replace",)),
    (attempt("search-type", "DocumentReference"), ("find",)),
    (attempt("read", "Binary"), ("retrieve",)),
    (attempt("read", "Binary", signs="doc-1"), ("verify-signature",)),
    (attempt("search-type", "DocumentReference", 403, DENY), ("find", "access-decision")),
    # Refused for its token's scopes: the identity rule, not an access decision on a record.
    (attempt("read", "Binary", 403, "identity: deny (identity) — no"), ("retrieve",)),
    (attempt("read", "Patient"), ()),
    (attempt("search-type", "Patient"), ()),
])
def test_each_request_counts_for_its_step(made: Attempt, steps: tuple[str, ...]) -> None:
    assert steps_of(made) == steps


def test_a_step_passes_once_one_attempt_succeeded_and_names_the_failed_ones() -> None:
    results = {r.step.key: r for r in assess([
        attempt("transaction", "Bundle", 422, index=3,
                error="processing: the author's signature is required"),
        attempt("transaction", "Bundle", 200, index=4),
        attempt("search-type", "DocumentReference", 404, index=5,
                error="not-found: Patient/nope is not known"),
    ])}
    assert results["publish"].status == PASSED and results["publish"].attempts == 2
    assert [f.index for f in results["publish"].failures] == [3]
    assert results["find"].status == FAILED
    assert results["find"].to_json()["errors"] == [{
        "entry": 5, "recorded": "2026-11-20T10:00:00.000Z",
        "error": "HTTP 404: not-found: Patient/nope is not known"}]
    assert results["retrieve"].status == NOT_ATTEMPTED and results["retrieve"].attempts == 0
    assert results["access-decision"].status == NOT_ATTEMPTED


def test_the_error_of_a_refusal_is_the_engines_reason_or_the_tokens() -> None:
    assert attempt("read", "Binary", 403, DENY).error() == (
        "HTTP 403: You have no access to this record.")
    refused_token = Attempt(1, "t", "token", None, 401, "4", None,
                            {"reason": "the client assertion has expired"})
    assert refused_token.error() == "HTTP 401: the client assertion has expired"


def test_only_a_full_scenario_passes() -> None:
    everything = [attempt("token"), attempt("conditional-update", "Patient"),
                  attempt("create", "Encounter", 201), attempt("transaction", "Bundle"),
                  attempt("transaction", "Bundle", replaces="d"),
                  attempt("search-type", "DocumentReference"), attempt("read", "Binary"),
                  attempt("read", "Binary", signs="d"),
                  attempt("search-type", "DocumentReference", 403, DENY)]
    assert verdict(assess(everything))
    for left_out in range(len(everything)):
        assert not verdict(assess(everything[:left_out] + everything[left_out + 1:])), left_out
    assert not verdict(())


def test_the_attempts_of_a_client_are_its_own_requests_and_token_requests() -> None:
    assert is_attempt_of(record(), CLIENT)
    assert not is_attempt_of(record(detail={"client_id": "system:OTHER"}), CLIENT)
    assert not is_attempt_of(record(kind="alert"), CLIENT)  # the officer's copy
    assert not is_attempt_of(record(stream="operator"), CLIENT)
    granted = record(kind="authentication", interaction="token",
                     detail={"scope": "system/*.rs", "client_id": CLIENT})
    refused = record(kind="authentication", interaction="token", outcome="4",
                     detail={"reason": "expired", "claimed-client": CLIENT})
    scope = record(kind="authentication", interaction="token", outcome="4",
                   detail={"reason": "no scope", "client_id": CLIENT})
    assert is_attempt_of(granted, CLIENT) and is_attempt_of(scope, CLIENT)
    # Refused before the client authenticated: the claim is anyone's, never the system's.
    assert not is_attempt_of(refused, CLIENT) and is_unauthenticated_claim(refused, CLIENT)
    assert not is_unauthenticated_claim(refused, "system:OTHER")
    assert not is_unauthenticated_claim(scope, CLIENT)
    assert not is_attempt_of(record(kind="authentication", interaction="token",
                                    detail={"scope": "x"}), CLIENT)


@pytest.mark.parametrize("name", ["", " leading", "a" * 65, "Demo;HIS", "Démo", "x\n"])
def test_a_system_name_is_refused_when_it_is_not_a_plain_name(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_system_name(name)


def test_a_system_name_gives_its_identifier() -> None:
    assert check_system_name("Demo HIS 4.2 (beta)") == "Demo HIS 4.2 (beta)"
    assert slug("Demo HIS 4.2 (beta)") == "DEMO-HIS-4-2-BETA"


def _report(**changes: Any) -> dict[str, Any]:
    results = assess([attempt("token")])
    report = {"type": "carevault-conformance-report", "version": 1, "system": "Demo",
              "client_id": CLIENT, "environment": "integration", "issued": "t",
              "passed": verdict(results), "steps": [r.to_json() for r in results]}
    return {**report, **changes}


def test_a_report_must_have_the_scenarios_shape() -> None:
    assert report_errors(_report()) == []
    assert report_errors(_report(type="other"))
    assert report_errors(_report(passed="yes"))
    assert report_errors(_report(steps=_report()["steps"][:-1]))
    assert report_errors(_report(system=None))
    # A verdict that contradicts its steps is no report.
    assert report_errors(_report(passed=True)) == ["passed is true while a step did not pass"]
    assert [s["step"] for s in _report()["steps"]] == list(STEP_KEYS)
