"""Schemathesis, run from the tests: every operation of an OpenAPI document, with real tokens,
against an ASGI app in this process; what it finds is returned, not printed.

Checks: no 5xx (``not_a_server_error``), and every answer conforms to the document: its status
code, its media type and its body's schema. No deadline and no wall clock: the bound is the
number of examples per operation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.strategies as st
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_KIND = re.compile(r"^/fhir/([A-Za-z]+)/\{id\}")


@dataclass
class Known:
    """Ids of stored resources, so that part of the cases reach real data: by resource type,
    and query values (``patient=Patient/…``) by parameter name."""

    ids: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Finding:
    operation: str
    mode: str
    error: str


def load(app: Any) -> Any:
    """The app's own /openapi.json, as schemathesis loads it."""
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _strategies(operation: Any, mode: GenerationMode, known: Known) -> Any:
    """Cases of one operation: fully generated, and (positive mode) with a stored resource's
    id or a known patient fixed where the operation takes one."""
    options = [operation.as_strategy(generation_mode=mode)]
    if mode is GenerationMode.POSITIVE:
        match = _KIND.match(operation.path)
        if match and match.group(1) in known.ids:
            fixed = {"id": known.ids[match.group(1)]}
            if "{vid}" in operation.path:
                fixed["vid"] = "1"
            options.append(operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        names = {p.name for p in operation.query}
        query = {k: v for k, v in known.query.items() if k in names}
        if query:
            options.append(operation.as_strategy(generation_mode=mode, query=query))
    return st.one_of(*options)


def _run(operation: Any, mode: GenerationMode, known: Known,
         headers: Callable[[], Mapping[str, str]], statuses: Counter[tuple[str, int]],
         max_examples: int, seed: int) -> Callable[[], None]:
    """One operation's property: every generated case's answer passes `CHECKS`."""

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,  # no wall clock: the bound is the number of examples
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.seed(seed)
    @hypothesis.given(case=_strategies(operation, mode, known))
    def run(case: Any) -> None:
        response = case.call(headers=dict(headers()))
        statuses[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, headers=dict(headers()))

    return run  # type: ignore[no-any-return]


def attack(
    schema: Any,
    headers: Callable[[], Mapping[str, str]],
    *,
    max_examples: int,
    known: Known | None = None,
    modes: Iterable[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    only: Callable[[Any], bool] = lambda _operation: True,
    seed: int = 12,
) -> tuple[list[Finding], Counter[tuple[str, int]]]:
    """Run every operation of ``schema`` (or those ``only`` keeps) in each generation mode;
    returns the findings (one per operation and mode: the shrunk failing case) and the count
    of answers by (operation, status). ``headers()`` is asked before each request (tokens
    expire)."""
    known = known or Known()
    findings: list[Finding] = []
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        if not only(operation):
            continue
        for mode in modes:
            run = _run(operation, mode, known, headers, statuses, max_examples, seed)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to generate: no parameter to break in negative mode
            except (Failure, FailureGroup) as error:  # a check failed: a finding
                findings.append(Finding(operation.label, mode.value, _describe(error)))
            # Anything else (the harness itself) propagates: it is no finding, and no pass.
    return findings, statuses


def _describe(error: BaseException) -> str:
    parts = [str(error)]
    for inner in getattr(error, "exceptions", ()):
        parts.append(f"{type(inner).__name__}: {inner}")
    return "\n".join(parts)[:4000]


def report(findings: list[Finding]) -> str:
    return "\n\n".join(f"{f.operation} [{f.mode}]\n{f.error}" for f in findings)
