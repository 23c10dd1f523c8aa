"""A prescription is dispensed at most once (issue #18): 100 pharmacists of 100 pharmacies
accept the same task at the same instant, each in its own thread through the FHIR door (what
the HTTP route runs in its thread pool); exactly one wins, the 99 others get 409 with the
task's status. On SQLite and on PostgreSQL: the database's conditional UPDATE decides."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.testclient import TestClient

from carevault.bootstrap import Platform
from carevault.fhirmodel.directory import new_practitioner
from carevault.services import directory as svc
from support.erezept import Scene, pharmacy
from support.tokens import professional_credentials

RACERS = 100


@pytest.fixture
def scene(platform: Platform, client: TestClient, registrar: TestClient) -> Scene:
    return Scene(platform, client, registrar, seq=41)


def pharmacists(platform: Platform, count: int) -> list[str]:
    """``count`` pharmacists, each of their own pharmacy: their bearer tokens."""
    ctx = platform.directory
    pharmacies = [pharmacy(platform, f"ORG-RACE-{n:03d}") for n in range(count)]
    with platform.unit_of_work() as uow:
        svc.register_professionals(uow, ctx, [svc.NewProfessional(
            new_practitioner(ctx.systems, identifier=f"HP-RACE-{n:03d}", family="Racer",
                             given=["Pia"]), "pharmacist", None, pharmacies[n])
            for n in range(count)])
    return [professional_credentials(platform, identifier=f"HP-RACE-{n:03d}",
                                     profession="pharmacist", specialty=None)[0]
            for n in range(count)]


def test_one_hundred_pharmacies_accept_at_once_and_one_wins(scene: Scene,
                                                            platform: Platform) -> None:
    tokens = pharmacists(platform, RACERS)
    task_id, code = scene.ready()
    start = threading.Barrier(RACERS)

    def race(n: int) -> tuple[int, str]:
        start.wait()
        answer = platform.door.handle(
            "POST", f"Task/{task_id}/$accept", params=(("ac", code),),
            headers={"authorization": f"Bearer {tokens[n]}"}, client=f"198.51.100.{n + 1}")
        body = answer.body or {}
        diagnostics = body.get("issue", [{}])[0].get("diagnostics", "") if body else ""
        return answer.status, str(diagnostics)

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(race, range(RACERS)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (RACERS - 1), statuses
    assert all("(in-progress)" in why for status, why in results if status == 409)
    task = scene.client.get(f"/fhir/Task/{task_id}", headers=scene.patient_headers).json()
    assert task["status"] == "in-progress"
