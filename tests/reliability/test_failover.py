"""Two-site PostgreSQL under Patroni (three etcd members, two PostgreSQL 15 members,
synchronous strict mode, `support.patroni`), with CareVault connected through one multi-host
libpq URL (``target_session_attrs=read-write``).

- **Failover**: 32 clients submit ITI-65 documents and retrieve them; the primary's postmaster
  is killed (SIGKILL); Patroni promotes the synchronous standby. A client whose request fails
  or gets no answer sends *the same* submission again (idempotent by its uniqueId: a retry of
  a submission that was stored after all is refused as "already exists", which means stored).
  Every acknowledged document is found after the failover, every document opens and the audit
  log verifies, tree heads signed before the kill included. The switch-over (from the kill to
  the first submission acknowledged after it) is measured and printed, not asserted.
- **Standby loss**: the synchronous standby disappears. In strict mode a commit waits for a
  standby, so a submission does not complete; ``/health/ready`` answers 503 with
  ``replication: degraded``. When the standby is back the waiting submission completes (and is
  stored) and the service is ready again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import Platform, build
from carevault.services import backup
from carevault.settings import Settings
from support.documents import Pro, created_id, provide_bundle, publish
from support.patroni import PatroniCluster
from support.records import patient_and_author
from support.tokens import professional_token

pytestmark = pytest.mark.e2e
CLIENTS = 32
WAIT_SECONDS = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PatroniCluster]:
    cluster = PatroniCluster.create()
    try:
        cluster.start()
        leader = cluster.leader()
        assert leader is not None
        with psycopg.connect(host="127.0.0.1", port=leader.port, user="postgres",
                             dbname="postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE carevault")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def site(cluster: PatroniCluster, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Platform, TestClient, str, Pro]]:
    url = cluster.url("carevault")
    engine = connect(url, pool_size=40)
    upgrade(engine)
    key_file = tmp_path_factory.mktemp("failover") / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=url, key_source=f"file:{key_file}", environment="dev",
                        request_threads=CLIENTS, rate_limit_per_minute=100_000,
                        _env_file=None)  # type: ignore[call-arg]
    platform = build(settings, engine)
    with TestClient(platform.app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000),
                    headers={"Authorization": f"Bearer {professional_token(platform)}"}
                    ) as client:
        patient_id, gp = patient_and_author(platform, client, number=11, author="HP-FAILOVER")
        yield platform, client, patient_id, gp
    engine.dispose()


@dataclass
class Outcomes:
    acknowledged: dict[str, str] = field(default_factory=dict)  # uniqueId -> document id
    stored_by_retry: set[str] = field(default_factory=set)  # "already exists" on a retry
    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, what)
    successes: list[tuple[float, float]] = field(default_factory=list)  # (sent, acknowledged)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_until_known(client: TestClient, gp: Pro, bundle: dict[str, Any], outcomes: Outcomes,
                       stop: threading.Event) -> None:
    """Send one submission until its outcome is known; a failure is an unknown outcome."""
    unique_id = bundle["entry"][1]["resource"]["masterIdentifier"]["value"]
    retried = False
    while not stop.is_set():
        sent = time.monotonic()
        try:
            answer = publish(client, gp, bundle)
        except (httpx.HTTPError, OSError) as error:
            answer, failure = None, type(error).__name__
        else:
            failure = f"{answer.status_code}"
        now = time.monotonic()
        if answer is not None and answer.status_code == 200:
            with outcomes.lock:
                outcomes.acknowledged[unique_id] = created_id(answer)
                outcomes.successes.append((sent, now))
            return
        # A retry of a submission stored by an attempt whose answer was lost: its document's
        # or its SubmissionSet's uniqueId is taken (idempotent by unique identifiers).
        if (answer is not None and answer.status_code == 409 and retried
                and ("already exists" in answer.text or "already received" in answer.text)):
            with outcomes.lock:
                outcomes.stored_by_retry.add(unique_id)
            return
        assert answer is None or answer.status_code >= 500, answer.text  # never a refusal
        with outcomes.lock:
            outcomes.errors.append((now, failure))
        retried = True
        time.sleep(0.2)


def worker(client: TestClient, gp: Pro, patient_id: str, outcomes: Outcomes,
           stop: threading.Event) -> None:
    while not stop.is_set():
        content = b"%PDF-1.4\n% failover " + uuid.uuid4().hex.encode() + b"\n%%EOF\n"
        submit_until_known(client, gp, provide_bundle(patient_id, gp, content), outcomes, stop)
        with outcomes.lock:
            some = next(iter(outcomes.acknowledged.values()), None)
        if some is not None:
            try:
                read = client.get(f"/fhir/Binary/{some}", headers=gp.headers)
                if read.status_code == 200:
                    with outcomes.lock:
                        outcomes.reads += 1
            except (httpx.HTTPError, OSError):
                pass


def stored_unique_ids(engine: Engine, wanted: set[str]) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT master_identifier FROM document_metadata"))
        return {row[0] for row in rows} & wanted


def test_sigkill_of_the_primary_under_load_loses_no_acknowledged_write(
        cluster: PatroniCluster, site: tuple[Platform, TestClient, str, Pro]) -> None:
    platform, client, patient_id, gp = site
    outcomes, stop = Outcomes(), threading.Event()
    threads = [threading.Thread(target=worker, args=(client, gp, patient_id, outcomes, stop),
                                daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    cluster.wait_for(lambda: len(outcomes.acknowledged) >= 60, WAIT_SECONDS)
    head_before = platform.audit.sign_tree_head("clinical")
    old = cluster.leader()
    assert old is not None
    acknowledged_before = len(outcomes.acknowledged)
    assert outcomes.errors == []  # no error before the kill
    killed_at = time.monotonic()
    cluster.kill_postmaster(old)
    # The write gap: from the kill to the first acknowledgement of a submission sent after it
    # (one sent before may still be acknowledged just after: its commit was already done).
    cluster.wait_for(lambda: any(sent > killed_at for sent, _ in outcomes.successes),
                     WAIT_SECONDS)
    switched = min(done for sent, done in outcomes.successes if sent > killed_at) - killed_at
    cluster.wait_for(lambda: len(outcomes.acknowledged) >= acknowledged_before + 60,
                     WAIT_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    new = cluster.leader()
    errors_after = [t - killed_at for t, _ in outcomes.errors]
    kinds = Counter(what for _, what in outcomes.errors)
    print(f"\nfailover: primary {old.name} killed; {new.name if new else '?'} leads; "
          f"writes back {switched:.2f} s after the kill (first submission sent after it "
          f"acknowledged); "
          f"{len(outcomes.errors)} failed attempts {dict(kinds)} (retried), the last "
          f"{max(errors_after, default=0.0):.2f} s after the kill; "
          f"{len(outcomes.acknowledged)} acknowledged, {len(outcomes.stored_by_retry)} stored "
          f"by an attempt whose answer was lost; {outcomes.reads} reads")

    # Every acknowledged submission is there, and so is every one found stored by a retry.
    wanted = set(outcomes.acknowledged) | outcomes.stored_by_retry
    assert stored_unique_ids(platform.engine, wanted) == wanted
    # All clients retried until known: the same submissions again now succeed at once.
    cluster.wait_for(cluster.healthy, WAIT_SECONDS)
    content = b"%PDF-1.4\n% after the failover\n%%EOF\n"
    assert publish(client, gp, provide_bundle(patient_id, gp, content)).status_code == 200
    # Every document opens; the audit log verifies, the tree heads signed before the kill too.
    report = backup.drill(platform.unit_of_work, platform.audit, platform.vault)
    assert report.documents >= 2 * len(wanted)
    again = platform.audit.tree_head("clinical", head_before.tree_size)
    assert again.root_hash == head_before.root_hash


def test_the_loss_of_the_standby_stops_commits_and_ready_says_so(
        cluster: PatroniCluster, site: tuple[Platform, TestClient, str, Pro]) -> None:
    platform, client, patient_id, gp = site
    cluster.wait_for(cluster.healthy, WAIT_SECONDS)
    assert client.get("/health/ready").status_code == 200
    standby = cluster.sync_standby()
    assert standby is not None
    cluster.kill_member(standby)

    def degraded() -> bool:
        ready = client.get("/health/ready")
        return (ready.status_code == 503
                and ready.json()["checks"].get("replication", {}).get("state") == "degraded")

    cluster.wait_for(degraded, WAIT_SECONDS)
    bundle = provide_bundle(patient_id, gp, b"%PDF-1.4\n% while alone\n%%EOF\n")
    answers: list[int] = []
    waiting = threading.Thread(
        target=lambda: answers.append(publish(client, gp, bundle).status_code), daemon=True)
    waiting.start()
    waiting.join(3.0)
    assert answers == []  # the commit waits for a synchronous standby: nothing acknowledged

    cluster.start_member(standby)
    cluster.wait_for(cluster.healthy, WAIT_SECONDS)
    waiting.join(WAIT_SECONDS)
    assert answers == [200]
    unique_id = bundle["entry"][1]["resource"]["masterIdentifier"]["value"]
    assert stored_unique_ids(platform.engine, {unique_id}) == {unique_id}
    cluster.wait_for(lambda: client.get("/health/ready").status_code == 200, WAIT_SECONDS)
