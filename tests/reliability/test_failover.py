"""Two-site PostgreSQL under Patroni (three etcd members, two PostgreSQL 15 members,
synchronous strict mode, `support.patroni`), with CareVault connected through one multi-host
libpq URL (``target_session_attrs=read-write``).

- **Failover**: 32 clients submit ITI-65 documents and retrieve them; the primary's postmaster
  is killed (SIGKILL); Patroni promotes the synchronous standby. A client whose request fails
  sends *the same* submission again (idempotent by its uniqueId: a retry of a submission that
  was stored after all is refused as "already exists", which means stored). Every error a
  client sees is ``503`` with ``Retry-After`` and an OperationOutcome saying to send the same
  request again: never a 500, never an exception out of the server (the test client runs the
  application in process, so a server error would be raised here); the errors are counted by
  kind and printed. Every acknowledged document is found after the failover, every document
  opens and the audit log verifies, tree heads signed before the kill included. The write gap
  (from the kill to the first submission sent after it that is acknowledged) is measured and
  printed, not asserted.
- **Site loss**: the same load, and the primary's whole site is lost at once: its Patroni,
  its postmaster and its etcd member (SIGKILL; the two other etcd members keep the quorum).
  Nobody releases the leader key: Patroni on the other site promotes the synchronous standby
  once the key expires (``ttl``). In strict mode with two members, the new primary then has no
  synchronous standby and commits wait, so the test brings the lost site back as soon as the
  promotion is seen (its Patroni rewinds the old primary into a standby), and writes resume.
  Same checks; the time to the promotion, the time the site took to rejoin and the write gap
  are printed.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
from support.patroni import Member, PatroniCluster
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


SEND_AGAIN = "send the same request again"


@dataclass
class Outcomes:
    acknowledged: dict[str, str] = field(default_factory=dict)  # uniqueId -> document id
    stored_by_retry: set[str] = field(default_factory=set)  # "already exists" on a retry
    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, kind)
    wrong: list[str] = field(default_factory=list)  # anything but a 503 to send again
    successes: list[tuple[float, float]] = field(default_factory=list)  # (sent, acknowledged)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, kind: str, wrong: str | None = None) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), kind))
            if wrong is not None:
                self.wrong.append(wrong)


def attempt(outcomes: Outcomes, send: Callable[[], Any]) -> Any | None:
    """One request: its answer, or None after an error, which is counted by kind and must
    be a 503 with Retry-After and an OperationOutcome saying to send the same request again."""
    try:
        answer = send()
    except Exception as error:  # the server raised it: a 500 to a real client
        outcomes.failed(f"exception {type(error).__name__}", f"{type(error).__name__}: {error}")
        return None
    if answer.status_code < 500:
        return answer
    kind = f"{answer.status_code}"
    try:
        issue = answer.json()["issue"][0]
        said = str(issue["diagnostics"])
        kind += f" {issue['code']}: " + said.split(";")[0].split(",")[0]
    except (ValueError, KeyError, IndexError, TypeError):
        said = ""
    if (answer.status_code == 503 and answer.headers.get("Retry-After", "").isdigit()
            and SEND_AGAIN in said):
        outcomes.failed(kind)
    else:
        outcomes.failed(kind, f"{kind} Retry-After={answer.headers.get('Retry-After')}: "
                              f"{answer.text[:300]}")
    return None


def submit_until_known(client: TestClient, gp: Pro, bundle: dict[str, Any], outcomes: Outcomes,
                       stop: threading.Event) -> None:
    """Send one submission until its outcome is known; a failure is an unknown outcome."""
    unique_id = bundle["entry"][1]["resource"]["masterIdentifier"]["value"]
    retried = False
    while not stop.is_set():
        sent = time.monotonic()
        answer = attempt(outcomes, lambda: publish(client, gp, bundle))
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
        assert answer is None, answer.text  # never a refusal
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
            url = f"/fhir/Binary/{some}"
            read = attempt(outcomes, lambda: client.get(url, headers=gp.headers))  # noqa: B023
            if read is not None and read.status_code == 200:
                with outcomes.lock:
                    outcomes.reads += 1


def stored_unique_ids(engine: Engine, wanted: set[str]) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT master_identifier FROM document_metadata"))
        return {row[0] for row in rows} & wanted


@dataclass
class Switchover:
    old: Member
    killed_at: float
    outcomes: Outcomes
    write_gap: float = 0.0


def under_load(cluster: PatroniCluster, site: tuple[Platform, TestClient, str, Pro],
               fault: Callable[[Member], None]) -> Switchover:
    """32 clients submitting and reading; ``fault`` applied to the leader once 60 submissions
    are acknowledged; the load goes on until 60 more are. Checks that nothing acknowledged
    was lost, that every error was a 503 to send again, and that the audit log verifies."""
    platform, client, patient_id, gp = site
    cluster.wait_for(cluster.healthy, WAIT_SECONDS)
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
    assert outcomes.errors == []  # no error before the fault
    switch = Switchover(old, time.monotonic(), outcomes)
    fault(old)
    # The write gap: from the fault to the first acknowledgement of a submission sent after
    # it (one sent before may still be acknowledged just after: its commit was already done).
    cluster.wait_for(lambda: any(sent > switch.killed_at for sent, _ in outcomes.successes),
                     WAIT_SECONDS)
    switch.write_gap = min(done for sent, done in outcomes.successes
                           if sent > switch.killed_at) - switch.killed_at
    cluster.wait_for(lambda: len(outcomes.acknowledged) >= acknowledged_before + 60,
                     WAIT_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    new = cluster.leader()
    errors_after = [t - switch.killed_at for t, _ in outcomes.errors]
    kinds = Counter(kind for _, kind in outcomes.errors)
    print(f"\n{old.name} lost; {new.name if new else '?'} leads; writes back "
          f"{switch.write_gap:.2f} s after the fault (first submission sent after it "
          f"acknowledged); {len(outcomes.errors)} failed attempts (retried), the last "
          f"{max(errors_after, default=0.0):.2f} s after the fault, by kind:")
    for kind, count in kinds.most_common():
        print(f"  {count:5d}  {kind}")
    print(f"{len(outcomes.acknowledged)} acknowledged, {len(outcomes.stored_by_retry)} stored "
          f"by an attempt whose answer was lost; {outcomes.reads} reads")

    # Every error a client saw was a 503 with Retry-After, to send the same request again.
    assert outcomes.wrong == []
    # Every acknowledged submission is there, and so is every one found stored by a retry.
    wanted = set(outcomes.acknowledged) | outcomes.stored_by_retry
    assert stored_unique_ids(platform.engine, wanted) == wanted
    # All clients retried until known: a new submission now succeeds at once.
    cluster.wait_for(cluster.healthy, WAIT_SECONDS)
    content = b"%PDF-1.4\n% after the failover " + uuid.uuid4().hex.encode() + b"\n%%EOF\n"
    assert publish(client, gp, provide_bundle(patient_id, gp, content)).status_code == 200
    # Every document opens; the audit log verifies, the tree heads signed before the fault too.
    report = backup.drill(platform.unit_of_work, platform.audit, platform.vault)
    assert report.documents >= 2 * len(wanted)
    again = platform.audit.tree_head("clinical", head_before.tree_size)
    assert again.root_hash == head_before.root_hash
    return switch


def test_sigkill_of_the_primary_under_load_loses_no_acknowledged_write(
        cluster: PatroniCluster, site: tuple[Platform, TestClient, str, Pro]) -> None:
    switch = under_load(cluster, site, cluster.kill_postmaster)
    print(f"failover (postmaster SIGKILL): write gap {switch.write_gap:.2f} s")


def test_the_loss_of_the_primary_site_loses_no_acknowledged_write(
        cluster: PatroniCluster, site: tuple[Platform, TestClient, str, Pro]) -> None:
    timeline: dict[str, float] = {}

    def lose_the_site(old: Member) -> None:
        killed = time.monotonic()
        cluster.kill_site(old)
        # Patroni on the other site promotes its synchronous standby once the leader key
        # expires; then, alone in strict mode, it waits for a standby: the site comes back.
        cluster.wait_for(lambda: (cluster.leader() or old) is not old, WAIT_SECONDS)
        timeline["promoted"] = time.monotonic() - killed
        returned = time.monotonic()
        cluster.restart_site(old)
        cluster.wait_for(cluster.healthy, WAIT_SECONDS)
        timeline["rejoined"] = time.monotonic() - returned

    switch = under_load(cluster, site, lose_the_site)
    print(f"site loss (Patroni, postmaster and etcd member SIGKILL): standby promoted "
          f"{timeline['promoted']:.2f} s after the loss; the lost site back as the synchronous "
          f"standby {timeline['rejoined']:.2f} s after its restart; write gap "
          f"{switch.write_gap:.2f} s")


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
