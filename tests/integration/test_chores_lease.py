"""The chores lease (``adapters.storage.lease``) on real databases: one holder at a time.

The generic tests run on SQLite and on PostgreSQL (the ``engine`` / ``database_url`` fixtures).
A second engine on the same database stands for another server process: on PostgreSQL it has
its own sessions, and on SQLite its own open file description of the lock file, which
``flock`` treats exactly as it treats another process's. Where it matters (a holder that dies),
the holder really is another process, killed with SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from carevault.adapters.storage.database import connect
from carevault.adapters.storage.lease import CHORES_LOCK_KEY, Lease, try_chores_lease

DEADLINE_SECONDS = 20.0

# How PostgreSQL shows a one-bigint advisory lock in pg_locks: the key's high 32 bits in
# classid, its low 32 bits in objid, and objsubid 1.
LOCK_HOLDERS = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = :high AND objid = :low AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
KEY_PARTS = {"high": CHORES_LOCK_KEY >> 32, "low": CHORES_LOCK_KEY & 0xFFFF_FFFF}

# Another process: takes the lease on argv[1], says so, and keeps it until it is killed.
HOLDER_SCRIPT = """
import sys, time
from carevault.adapters.storage.database import connect
from carevault.adapters.storage.lease import try_chores_lease
lease = try_chores_lease(connect(sys.argv[1]))
print("held" if lease is not None else "refused", flush=True)
while True:
    time.sleep(60)
"""


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS:.0f} s: {what}")
        time.sleep(0.1)


@pytest.fixture
def other_engine(database_url: str) -> Iterator[Engine]:
    """A second engine on the test database, as another server process has."""
    engine = connect(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def leases() -> Iterator[list[Lease]]:
    """Leases a test takes; released at the end whatever happens, so no lock outlives it."""
    taken: list[Lease] = []
    yield taken
    for lease in taken:
        lease.release()


def take(engine: Engine, leases: list[Lease]) -> Lease | None:
    lease = try_chores_lease(engine)
    if lease is not None:
        leases.append(lease)
    return lease


def advisory_holders(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(LOCK_HOLDERS, KEY_PARTS).scalars())


# --- both databases ---------------------------------------------------------------------------


def test_a_first_lease_is_granted_and_stays_alive(engine: Engine, leases: list[Lease]) -> None:
    lease = take(engine, leases)

    assert lease is not None
    for _ in range(3):
        assert lease.alive()


def test_a_second_engine_is_refused_while_the_lease_is_held(
    engine: Engine, other_engine: Engine, leases: list[Lease]
) -> None:
    first = take(engine, leases)
    assert first is not None

    assert take(other_engine, leases) is None
    assert take(other_engine, leases) is None  # asking again changes nothing
    assert take(engine, leases) is None  # nor does asking on the holder's own engine
    assert first.alive()


def test_after_release_the_lease_can_be_taken_again(
    engine: Engine, other_engine: Engine, leases: list[Lease]
) -> None:
    first = take(engine, leases)
    assert first is not None
    assert take(other_engine, leases) is None

    first.release()
    second = take(other_engine, leases)

    assert second is not None
    assert second.alive()
    assert take(engine, leases) is None  # the new holder excludes the first engine in turn
    second.release()
    assert take(engine, leases) is not None


def test_releasing_twice_is_harmless(engine: Engine, other_engine: Engine) -> None:
    lease = try_chores_lease(engine)
    assert lease is not None

    lease.release()
    lease.release()

    again = try_chores_lease(other_engine)
    assert again is not None
    again.release()


def test_a_killed_holder_process_hands_the_lease_on(
    database_url: str, engine: Engine, leases: list[Lease]
) -> None:
    """The holder is another process; SIGKILL gives it no chance to release anything, yet the
    database (PostgreSQL: the session ends) or the kernel (SQLite: the flock goes with the last
    descriptor) frees the lease for the next process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        said = holder.stdout.readline().strip()
        if said != "held":
            holder.kill()
            _, errors = holder.communicate(timeout=DEADLINE_SECONDS)
            pytest.fail(f"the holder process said {said!r}\n{errors}")
        assert take(engine, leases) is None

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=DEADLINE_SECONDS)

        eventually(lambda: take(engine, leases) is not None,
                   "the lease passes on once its holder process is killed")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=DEADLINE_SECONDS)
        holder.communicate()


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = connect(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_other_engine(postgres_url: str) -> Iterator[Engine]:
    engine = connect(postgres_url)
    yield engine
    engine.dispose()


def test_postgresql_holds_one_session_level_advisory_lock(
    pg_engine: Engine, pg_other_engine: Engine, leases: list[Lease]
) -> None:
    assert advisory_holders(pg_other_engine) == []

    lease = take(pg_engine, leases)
    assert lease is not None
    holders = advisory_holders(pg_other_engine)
    assert len(holders) == 1
    # A session-level lock, not a transaction's: it survives the transactions that follow.
    with pg_engine.begin() as connection:
        connection.execute(text("SELECT 1"))
    assert lease.alive()
    assert advisory_holders(pg_other_engine) == holders

    lease.release()
    assert advisory_holders(pg_other_engine) == []


def test_postgresql_a_terminated_session_loses_the_lease(
    pg_engine: Engine, pg_other_engine: Engine, leases: list[Lease]
) -> None:
    lease = take(pg_engine, leases)
    assert lease is not None
    assert lease.alive()
    [holder_pid] = advisory_holders(pg_other_engine)
    assert take(pg_other_engine, leases) is None

    with pg_other_engine.connect() as connection:
        terminated = connection.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": holder_pid}
        ).scalar_one()
    assert terminated is True

    eventually(lambda: not lease.alive(), "alive() turns False once the session is terminated")
    assert not lease.alive()  # and stays False: it does not quietly reconnect
    lease.release()  # the session is gone already: releasing must not raise
    replacement = take(pg_other_engine, leases)
    assert replacement is not None
    assert replacement.alive()
    assert advisory_holders(pg_other_engine) != [holder_pid]


def test_postgresql_an_unreachable_database_refuses_the_lease_instead_of_raising() -> None:
    """A process that cannot reach the database does not hold the lease; it asks again later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the probe is closed
    unreachable = connect(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/carevault")
    try:
        assert try_chores_lease(unreachable) is None
    finally:
        unreachable.dispose()


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "carevault.db"


@pytest.fixture
def sqlite_engine(sqlite_file: Path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{sqlite_file}")
    yield engine
    engine.dispose()


def flock_from_another_process(path: Path) -> str:
    """Try an exclusive flock on ``path`` from a separate process: "taken" or "blocked"."""
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    print('blocked')\n"
        "else:\n"
        "    print('taken')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                          text=True, timeout=DEADLINE_SECONDS, check=True)
    return done.stdout.strip()


def test_sqlite_the_lock_file_sits_beside_the_database(
    sqlite_file: Path, sqlite_engine: Engine, leases: list[Lease]
) -> None:
    lock_file = sqlite_file.with_name("carevault.db.chores")

    lease = take(sqlite_engine, leases)

    assert lease is not None
    assert lock_file.is_file()
    assert sorted(p.name for p in sqlite_file.parent.iterdir() if "chores" in p.name) == [
        "carevault.db.chores"]
    assert flock_from_another_process(lock_file) == "blocked"
    lease.release()
    assert not lease.alive()
    assert flock_from_another_process(lock_file) == "taken"


def test_sqlite_a_relative_database_path_locks_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leases: list[Lease]
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = connect("sqlite:///var/carevault.db")
    other = connect(f"sqlite:///{tmp_path / 'var' / 'carevault.db'}")  # the same file
    try:
        assert take(engine, leases) is not None
        assert (tmp_path / "var" / "carevault.db.chores").is_file()
        assert take(other, leases) is None
    finally:
        engine.dispose()
        other.dispose()


def test_sqlite_separate_databases_have_separate_leases(
    tmp_path: Path, leases: list[Lease]
) -> None:
    first = connect(f"sqlite:///{tmp_path / 'a.db'}")
    second = connect(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert take(first, leases) is not None
        assert take(second, leases) is not None
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_in_memory_is_always_granted(url: str, leases: list[Lease]) -> None:
    """An in-memory database belongs to its process alone: nothing to share the chores with."""
    engines = [connect(url), connect(url)]
    try:
        first, second = (take(engine, leases) for engine in engines)
        assert first is not None
        assert second is not None
        assert first.alive()
        assert second.alive()
        first.release()
        assert take(engines[0], leases) is not None
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_the_lock_is_not_inherited_by_programs_the_holder_starts(
    sqlite_file: Path, sqlite_engine: Engine, leases: list[Lease]
) -> None:
    """A lease holder that runs another program (``openssl``, a helper…) must not leave the
    lock with it: the program's descriptor would keep the flock after the holder ends."""
    lease = take(sqlite_engine, leases)
    assert lease is not None
    lock_file = sqlite_file.with_name("carevault.db.chores")
    inode = lock_file.stat().st_ino
    child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        inherited = [
            fd for fd in os.listdir(f"/proc/{child.pid}/fd")
            if _inode_of(f"/proc/{child.pid}/fd/{fd}") == inode
        ]
        assert inherited == []
    finally:
        child.kill()
        child.wait(timeout=DEADLINE_SECONDS)


def _inode_of(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def test_flock_semantics_assumed_by_the_file_lease(tmp_path: Path) -> None:
    """The tests above stand a second engine in for another process: that holds only because
    flock locks belong to open file descriptions, so two opens in one process exclude each
    other as two processes do."""
    path = tmp_path / "probe"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)
