"""The access matrix (issue #12, "Attack ourselves", item 1): every caller the platform knows ×
every route the registry and the application declare, over HTTP, each cell checked against the
pure authorization engine on the same facts (`support.access_matrix`), on SQLite and on
PostgreSQL.

- A route or operation the registry (or the application) declares without an expectation row
  fails the suite, and so does a row for a route that is gone.
- The matrix must agree with the engine on every cell; a few landmark cells pin the engine's
  answers to the documented policy, so that the oracle cannot drift with the code it checks.
- The machinery must catch a planted bug: a test-only variant of the platform whose handler
  asks for a read where it writes, and one whose gate forgets the patient's blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.api.access import TokenGate
from carevault.api.fhir.directory_handlers import PractitionerRoleHandler
from carevault.api.fhir.door import AccessNeed, FhirRequest, Operation, SearchParam
from carevault.bootstrap import Platform, build, read_units
from carevault.domain.authorization import Action, RecordFacts
from carevault.services.record_policy import RecordPolicy
from support.access_matrix import (
    SUMMARIES,
    Outcome,
    catalogue,
    declared,
    run_matrix,
    summary_table,
    uncovered,
)
from support.matrix_world import World

pytestmark = pytest.mark.security


@pytest.fixture(scope="module")
def outcome(world: World) -> Outcome:
    platform = world.platform
    rows = catalogue(world, platform.door, platform.app.routes)
    found = run_matrix(world, platform.app, rows)
    SUMMARIES.append(f"[{platform.engine.dialect.name}] {found.summary()}")
    print(f"\n{found.summary()}\n{summary_table(found)}")
    return found


def test_every_declared_route_has_an_expectation_row(world: World) -> None:
    platform = world.platform
    missing, stale = uncovered(platform.door, platform.app.routes)
    assert not missing, f"routes without an expectation row in the access matrix: {missing}"
    assert not stale, f"expectation rows for routes that no longer exist: {stale}"


def test_a_new_route_without_a_row_is_reported(world: World, variant: Platform) -> None:
    """What the first test guards against, shown: an operation, a search parameter and an
    HTTP route added without their rows."""
    encounters: Any = variant.door.handlers["Encounter"]
    encounters.operations = (*encounters.operations, Operation(
        "discharge", "urn:example:discharge", True, frozenset({"POST"}), "a new operation"))
    encounters.search_params = (*encounters.search_params,
                                SearchParam("date", "date", "a new search parameter"))
    variant.app.add_api_route("/debug/facts", lambda: {}, methods=["GET"])
    missing, stale = uncovered(variant.door, variant.app.routes)
    assert missing == {("Encounter", "$discharge@instance:POST"), ("Encounter", "search:date"),
                       ("/debug/facts", "GET")}
    assert not stale


def test_the_capability_statement_declares_what_the_registry_does(world: World) -> None:
    """The matrix walks the registry; the CapabilityStatement must not promise more or less."""
    statement = world.http.get("/fhir/metadata").json()
    (rest,) = statement["rest"]
    announced = {("Bundle", i["code"]) for i in rest.get("interaction", [])}
    for entry in rest["resource"]:
        kind = entry["type"]
        announced |= {(kind, i["code"]) for i in entry["interaction"]}
        if entry.get("conditionalUpdate"):
            announced.add((kind, "conditional-update"))
        announced |= {(kind, f"search:{p['name']}") for p in entry.get("searchParam", [])}
        announced |= {(kind, f"_include:{spec}") for spec in entry.get("searchInclude", [])}
        announced |= {(kind, f"${o['name']}") for o in entry.get("operation", [])}
    registry = {(kind, what.split("@")[0]) for kind, what in declared(world.platform.door)
                if kind != "metadata"}
    assert announced == registry


def test_the_access_matrix_agrees_with_the_engine(outcome: Outcome) -> None:
    problems = "\n".join(str(c) for c in outcome.disagreements)
    assert not outcome.disagreements, f"{len(outcome.disagreements)} disagreements:\n{problems}"
    assert len({c.caller for c in outcome.cells}) >= 27
    assert len(outcome.cells) >= 5000


# The documented policy (README "Your record, your rules", docs/authorization.md) for a few
# cells, written out: the engine's answer in the matrix must be this one.
LANDMARKS = [
    ("DocumentReference read [N]", {
        "patient": True, "patient-app-read-only": True, "representative-read": True,
        "normal-grant": True, "extended-grant": True, "delegated": True, "author": True,
        "referring": True, "emergency": True, "organization-system": True,
        "organization-grant": True, "expired-grant": False, "blocked": False,
        "stranger": False, "assistant": False, "other-patient": False,
        "representative-expired": False, "operator": False, "registrar": False,
        "security-officer": False, "anonymous": False, "bad-signature": False,
        "identity-source": False}),
    ("DocumentReference read [R]", {
        "normal-grant": False, "extended-grant": True, "delegated": False, "emergency": False,
        "referring": True, "author": True, "patient": True}),
    ("Binary read [V]", {
        "author": True, "patient": True, "representative-read": False, "extended-grant": False,
        "referring": False}),
    ("DocumentReference read [hidden]", {
        "author": True, "referring": True, "normal-grant": False, "extended-grant": False,
        "patient": True}),
    ("Binary read [signature of hidden]", {"normal-grant": False, "referring": True}),
    ("DocumentReference read [held]", {
        "patient": False, "representative-read": False, "normal-grant": True}),
    ("DocumentReference read [psychiatric]", {"pharmacist": False, "normal-grant": True}),
    ("DocumentReference read [medication]", {"pharmacist": True}),
    ("Patient read", {"stranger": True, "patient": True, "other-patient": False,
                      "representative-expired": False, "operator": False}),
    ("Patient $ihe-pix", {"patient": True, "other-patient": False, "stranger": True}),
    ("Encounter search patient (another patient's record)", {
        "patient": False, "representative-read": False, "normal-grant": False}),
    ("AuditEvent read", {"security-officer": True, "patient": False, "registrar": False}),
    ("AuditEvent search patient (the patient's record)", {
        "patient": True, "security-officer": True, "normal-grant": False}),
    ("GET /audit/entries", {"security-officer": True, "registrar": False, "patient": False}),
    ("Consent create (a grant)", {
        "patient": True, "representative-manage": True, "representative-read": False,
        "patient-app-read-only": False, "normal-grant": False, "other-patient": False}),
    ("Practitioner create", {
        "provider-registry": True, "registrar": True, "identity-source": False,
        "normal-grant": False, "patient": False, "operator": False}),
    ("Patient create", {"identity-source": True, "registrar": True, "provider-registry": False,
                        "admission-system": False, "normal-grant": False}),
    ("Patient update (another authority's patient)", {
        "identity-source": False, "registrar": True}),
    ("Patient $merge", {"identity-source": True, "registrar": True, "normal-grant": False}),
    ("Encounter create (a care event, unproved)", {
        "admission-system": True, "normal-grant": False, "organization-system": False}),
    ("Encounter create (a care event with the patient's presence code)", {
        "stranger": True, "blocked": False, "assistant": False, "patient": False}),
    ("Patient/[id] $emergency-access", {
        "stranger": True, "blocked": False, "assistant": False, "organization-system": True,
        "patient": False}),
    ("DocumentReference/[id] $release", {"author": True, "normal-grant": False,
                                         "patient": False}),
    ("ITI-65 Provide Document Bundle (POST [base])", {
        "normal-grant": True, "pharmacist": False, "patient": True,
        "representative-read": False, "representative-manage": True, "stranger": False}),
    ("POST /act-for (a representative chooses the record)", {
        "representative-read": True, "representative-expired": False, "patient": False}),
]


@pytest.mark.parametrize(("row", "answers"), LANDMARKS, ids=[r for r, _ in LANDMARKS])
def test_the_engine_answers_as_the_documented_policy_says(
        outcome: Outcome, row: str, answers: dict[str, bool]) -> None:
    cells = {c.caller: c for c in outcome.cells if c.row == row}
    assert cells, f"no row {row!r} in the matrix"
    for caller, permitted in answers.items():
        cell = cells[caller]
        assert cell.expected.permit is permitted, f"{row} × {caller}: {cell.expected.why}"
        assert not cell.disagrees, str(cell)


def test_searches_find_what_each_caller_may_see_and_no_more(outcome: Outcome) -> None:
    """Not a vacuous agreement: the record's documents, as each caller finds them."""
    found = {c.caller: c.total for c in outcome.cells
             if c.row == "DocumentReference search patient (the patient's record)"}
    # The patient sees all but what is held from them; a normal grant N documents (hidden
    # excepted); a pharmacist the medication only (with its signature).
    patient, normal, pharmacist = found["patient"], found["normal-grant"], found["pharmacist"]
    assert patient is not None and normal is not None and pharmacist is not None
    assert patient > normal > pharmacist == 2
    assert found["blocked"] is None and found["other-patient"] is None


# --- planted bugs: the machinery must see them ---------------------------------------------------


class ReadForWriteRoles(PractitionerRoleHandler):
    """A planted bug: adding a professional's role (where they work, as what) needs only what
    reading the directory needs. (Planted on Consent instead, the record policy's own check
    of the change refuses it: defence in depth hides it from HTTP.)"""

    def access_need(self, request: FhirRequest, uow: SqlUnitOfWork) -> AccessNeed:
        need = super().access_need(request, uow)
        return replace(need, action=Action.READ) if need.action is Action.WRITE else need


class BlacklistBlindPolicy(RecordPolicy):
    def facts(self, uow: SqlUnitOfWork, patient_id: str, now: datetime, *,
              opening: bool = False) -> RecordFacts | None:
        found = super().facts(uow, patient_id, now, opening=opening)
        return None if found is None else replace(found, blocks=())


class BlacklistBlindGate(TokenGate):
    """A planted bug: the gate decides as if the patient had blocked no one."""

    def __init__(self, platform: Platform) -> None:
        policy = platform.policy
        super().__init__(platform.settings, read_units(platform.settings, platform.engine),
                         platform.tokens, BlacklistBlindPolicy(
                             policy.units, policy.audit, clock=policy.clock,
                             matrix=policy.matrix))


@pytest.fixture
def variant(world: World) -> Iterator[Platform]:
    """A test-only platform on the same database and keys, to plant a bug in."""
    platform = build(world.platform.settings, world.platform.engine)
    with TestClient(platform.app, base_url="http://127.0.0.1:8000"):
        yield platform


def _planted(world: World, variant: Platform, resources: set[str],
             callers: list[str] | None = None) -> Outcome:
    rows = catalogue(world, variant.door, variant.app.routes, resources, app=False)
    chosen = None if callers is None else [world.caller(name) for name in callers]
    return run_matrix(world, variant.app, rows, chosen)


def test_a_handler_that_asks_for_a_read_where_it_writes_is_caught(
        world: World, variant: Platform) -> None:
    roles: Any = variant.door.handlers["PractitionerRole"]
    variant.door.handlers["PractitionerRole"] = ReadForWriteRoles(roles.api)
    found = _planted(world, variant, {"PractitionerRole"})
    caught = {(c.row, c.caller) for c in found.disagreements}
    # A patient's app (whose patient/*.cruds scope covers the directory) now writes it.
    assert ("PractitionerRole create", "patient") in caught
    assert ("PractitionerRole create", "representative-expired") in caught
    assert {row for row, _ in caught} == {"PractitionerRole create"}
    assert all(c.expected.permit is False and 200 <= c.status < 300
               for c in found.disagreements)


def test_a_gate_that_forgets_the_blacklist_is_caught(world: World, variant: Platform) -> None:
    variant.door.gate = BlacklistBlindGate(variant)
    found = _planted(world, variant, {"Encounter", "DocumentReference", "Binary", "List"},
                     ["blocked", "normal-grant", "stranger", "patient", "representative-read"])
    caught = {(c.row, c.caller) for c in found.disagreements}
    assert {c.caller for c in found.disagreements} == {"blocked"}
    assert ("Binary read [N]", "blocked") in caught  # the bytes of a document, to a blocked one
    assert ("DocumentReference search patient (the patient's record)", "blocked") in caught
    assert ("Encounter read", "blocked") in caught
