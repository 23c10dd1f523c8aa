"""Schemathesis against /openapi.json, in process, with real tokens: a professional's (a
physician who sees the seeded record), a patient app's and a registrar's.

Checks (`support.attacks.CHECKS`): no 5xx, and every answer's status code, media type and body
conform to the document. Each operation gets ``MAX_EXAMPLES`` generated cases in positive mode
and as many in negative mode, part of them on the seeded patient and document, for each caller.

Budget: on SQLite, three callers × ~90 operations × 2 modes × ``MAX_EXAMPLES`` (15), about
8,000 requests, four to five minutes on this 2-core machine. PostgreSQL: the professional only,
with ``PG_MAX_EXAMPLES`` (8; the statements differ by dialect, and the other callers' requests
reach the same SQL), under a minute. A zero-finding run is the pass; the planted bugs below
show the same machinery reports a 500 and an undocumented status.
"""

from __future__ import annotations

from typing import Any

import pytest

from carevault.api.app import create_app
from carevault.api.fhir.door import FhirDoor, FhirRequest, FhirResponse
from carevault.api.fhir.terminology_handlers import ValueSetHandler
from carevault.bootstrap import build
from support.attacked import AttackedWorld, seed, seeded_settings
from support.attacks import attack, load, report

pytestmark = pytest.mark.security

MAX_EXAMPLES = 15
PG_MAX_EXAMPLES = 8


# What each caller reads successfully among the generated cases (the seeded record's data):
# a token that failed everywhere would make every answer a conforming 401.
REACHED = {
    "professional": {"GET /fhir/Patient/{id}", "GET /fhir/ValueSet",
                     "GET /fhir/DocumentReference/{id}", "GET /fhir/Binary/{id}"},
    "patient": {"GET /fhir/Patient/{id}", "GET /fhir/DocumentReference/{id}"},
    "registrar": {"GET /fhir/Patient/{id}", "GET /fhir/Practitioner/{id}"},
}


def _reached(statuses: Any, caller: str) -> None:
    ok = {label for (label, status), _ in statuses.items() if 200 <= status < 300}
    assert REACHED[caller] <= ok, (caller, REACHED[caller] - ok)


@pytest.mark.parametrize("caller", ["professional", "patient", "registrar"])
def test_no_finding_for_any_caller(attacked: AttackedWorld, caller: str) -> None:
    findings, statuses = attack(load(attacked.platform.app), getattr(attacked, caller),
                                max_examples=MAX_EXAMPLES, known=attacked.known)
    assert not findings, report(findings)
    _reached(statuses, caller)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_no_finding_on_postgresql(database_url: str, engine: Any, tmp_path: Any) -> None:
    pg_world = seed(build(seeded_settings(database_url, tmp_path), engine))
    findings, statuses = attack(load(pg_world.platform.app), pg_world.professional,
                                max_examples=PG_MAX_EXAMPLES, known=pg_world.known)
    assert not findings, report(findings)
    _reached(statuses, "professional")


# --- planted bugs: the machinery reports them ------------------------------------------------


class KeyErrorOnName(ValueSetHandler):
    """A test-only handler with a planted bug: a search by name looks up a missing key."""

    def search(self, request: FhirRequest) -> FhirResponse:
        if "name" in request.param_names():
            return {}["name"]  # type: ignore[no-any-return]  # KeyError: the planted bug
        return super().search(request)


class TeapotOnId(ValueSetHandler):
    """A test-only handler with a planted bug: a status the document does not declare."""

    def search(self, request: FhirRequest) -> FhirResponse:
        if "_id" in request.param_names():
            return FhirResponse(418, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "processing"}]})
        return super().search(request)


def variant(attacked: AttackedWorld, broken: type[ValueSetHandler]) -> Any:
    """The same platform, its ValueSet handler replaced by ``broken``."""
    platform = attacked.platform
    door = platform.door
    handlers = [broken(h.domain, default_page_size=h.default_page_size,
                       max_page_size=h.max_page_size) if isinstance(h, ValueSetHandler) else h
                for h in door.handlers.values()]
    planted = FhirDoor(handlers, door.gate, door.recorder, door.limiter, door._capabilities)
    return create_app(platform.settings, planted, platform.audit)


def value_set_search(operation: Any) -> bool:
    return operation.label == "GET /fhir/ValueSet"


def test_a_planted_500_is_found(attacked: AttackedWorld) -> None:
    findings, _ = attack(load(variant(attacked, KeyErrorOnName)), attacked.professional,
                         max_examples=MAX_EXAMPLES, only=value_set_search)
    assert findings, "schemathesis did not find the planted KeyError"
    assert any("Server error" in f.error for f in findings), report(findings)


def test_a_planted_undocumented_status_is_found(attacked: AttackedWorld) -> None:
    findings, _ = attack(load(variant(attacked, TeapotOnId)), attacked.professional,
                         max_examples=MAX_EXAMPLES, only=value_set_search)
    assert any("Undocumented status code" in f.error and "418" in f.error
               for f in findings), report(findings)
