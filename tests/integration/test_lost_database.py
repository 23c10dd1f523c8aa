"""A database that goes away in the middle of a request (a failover, a restart) is answered
503 with ``Retry-After`` and "send the same request again", never 500: on a FHIR read, a FHIR
write (ITI-65) and a portal page, whichever statement of the request meets the loss.

PostgreSQL only: an embedded SQLite database has no connection to lose. The platform reaches
PostgreSQL through a TCP forwarder (`support.cut_proxy`) that the test cuts just before the
n-th statement of a request, for every n the request makes: every connection through it is
closed at once, so that statement meets the server's end of file. Then either new connections
are refused until the request has been answered (``down``: the primary is gone, the audit log
cannot record the answer either), or let through at once (``blip``: one connection lost, the
audit log there: the audit log's writer, whose idle connection was lost too, tries its batch
once more on a new one, so a request that meets the loss only there is served). After each,
the same request again succeeds. No chores run (the client is
not started), so every statement counted is the request's or its audit entry's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage.database import connect
from carevault.bootstrap import Platform, build
from carevault.settings import Settings
from conftest import _truncate
from support.accounts import enrol_patient
from support.cut_proxy import CutProxy
from support.documents import Pro, created_id, provide_bundle, publish
from support.portal import signed_in
from support.records import patient_and_author
from support.tokens import professional_token

MOST_STATEMENTS = 100  # no request of these makes that many: a loop that never ends fails
SEND_AGAIN = "send the same request again"


@dataclass
class World:
    proxy: CutProxy
    engine: Engine
    platform: Platform
    client: TestClient
    browser: TestClient
    patient_id: str
    gp: Pro
    document_id: str
    cut_at: int = 0  # cut before this statement of the request (0: never)
    statements: int = 0
    blip: bool = False

    def before_statement(self, *_: Any) -> None:
        if self.cut_at:
            self.statements += 1
            if self.statements == self.cut_at:
                self.proxy.cut()
                if self.blip:
                    self.proxy.restore()


@pytest.fixture(scope="module")
def world(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    direct = connect(postgres_url)
    _truncate(direct)
    direct.dispose()
    url = make_url(postgres_url)
    proxy = CutProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = connect(proxied)
    key_file = tmp_path_factory.mktemp("lost") / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=proxied, key_source=f"file:{key_file}", environment="dev",
                        _env_file=None)  # type: ignore[call-arg]
    platform = build(settings, engine)
    client = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50000),
                        headers={"Authorization": f"Bearer {professional_token(platform)}"})
    patient_id, gp = patient_and_author(platform, client, number=5, author="HP-LOST-DB")
    published = publish(client, gp, provide_bundle(patient_id, gp, pdf("first")))
    assert published.status_code == 200, published.text
    browser = signed_in(platform, enrol_patient(platform, 6, login="lost.db@example.lu"),
                        port=50030)
    found = World(proxy, engine, platform, client, browser, patient_id, gp,
                  created_id(published))
    event.listen(engine, "before_cursor_execute", found.before_statement)
    yield found
    event.remove(engine, "before_cursor_execute", found.before_statement)
    platform.audit.close()
    engine.dispose()
    proxy.close()


def pdf(words: str) -> bytes:
    return b"%PDF-1.4\n% " + words.encode() + b"\n%%EOF\n"


def fhir_read(world: World, _n: int) -> Callable[[], Any]:
    return lambda: world.client.get(f"/fhir/DocumentReference/{world.document_id}",
                                    headers=world.gp.headers)


def fhir_write(world: World, n: int) -> Callable[[], Any]:
    bundle = provide_bundle(world.patient_id, world.gp, pdf(f"lost at statement {n}"))
    return lambda: publish(world.client, world.gp, bundle)  # the same submission each time


def portal_page(world: World, _n: int) -> Callable[[], Any]:
    return lambda: world.browser.get("/me")


def stored_again(answer: Any) -> bool:
    """The same submission again after an unknown outcome: stored now, or already stored."""
    return answer.status_code == 200 or (
        answer.status_code == 409 and "already" in answer.text)


REQUESTS = {"FHIR read": fhir_read, "FHIR write (ITI-65)": fhir_write, "portal page": portal_page}


@pytest.mark.parametrize("blip", [False, True], ids=["down", "blip"])
@pytest.mark.parametrize("kind", list(REQUESTS))
def test_a_database_lost_at_any_statement_of_a_request_is_a_503_to_send_again(
        world: World, kind: str, blip: bool) -> None:
    answered: list[int] = []  # the statements whose loss was answered 503
    survived: list[int] = []  # (blip) the audit writer's statement: tried again, served
    for n in range(1, MOST_STATEMENTS + 1):
        request = REQUESTS[kind](world, n)
        cuts = world.proxy.cuts
        world.cut_at, world.statements, world.blip = n, 0, blip
        try:
            answer = request()
        finally:
            world.cut_at = 0
            world.proxy.restore()
        if world.proxy.cuts == cuts:  # the request made fewer than n statements
            assert answer.status_code == 200, answer.text
            break
        if blip and answer.status_code == 200:
            survived.append(n)
            continue
        assert answer.status_code == 503, f"cut at statement {n}: {answer.text[:500]}"
        assert answer.headers["Retry-After"] == "5"
        if kind == "portal page":
            assert "text/html" in answer.headers["content-type"]
            assert re.search(r"Try again|send the same request again", answer.text)
        else:
            outcome = answer.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"
            assert SEND_AGAIN in outcome["issue"][0]["diagnostics"]
        answered.append(n)
        again = request()
        if kind == "FHIR write (ITI-65)":
            assert stored_again(again), again.text
        else:
            assert again.status_code == 200, again.text
    else:
        pytest.fail(f"a {kind} made more than {MOST_STATEMENTS} statements")
    assert len(answered) >= 3  # the cut met the request at several points, the audit included
    print(f"\n{kind} ({'blip' if blip else 'down'}): the database lost at each of its "
          f"{len(answered) + len(survived)} statements: {len(answered)} answered 503, "
          f"{len(survived)} served (the audit writer tried again), then served")
