"""Point-in-time recovery of a PostgreSQL installation with pgBackRest (Debian's package):
a private PostgreSQL 15 archiving its WAL to an encrypted pgBackRest repository, a full backup,
documents published before and after a chosen moment, then a restore to that moment into a
new data directory. The restored database passes the drill (`carevault.services.backup.drill`):
the documents of before open, those of after are absent, the audit log verifies.

Everything runs as ``postgres`` in a directory it owns; only processes started here are
stopped (``pg_ctl stop -m immediate`` on their own data directories)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.storage.database import connect, upgrade
from carevault.bootstrap import build
from carevault.services import backup
from carevault.settings import Settings
from support.documents import created_id, provide_bundle, publish
from support.patroni import PG_BIN, POSTGRESQL_15, free_ports
from support.records import patient_and_author
from support.requirements import Requirement, require
from support.tokens import professional_token

pytestmark = pytest.mark.e2e
PGBACKREST = Requirement("pgBackRest", "pgbackrest",
                         lambda: None if shutil.which("pgbackrest") else "not installed")


class Workdir:
    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="carevault-pitr-", dir="/tmp"))
        self.user = pwd.getpwnam("postgres")
        os.chown(self.path, self.user.pw_uid, self.user.pw_gid)
        self.path.chmod(0o700)
        self.conf = self.path / "pgbackrest.conf"
        self.started: list[Path] = []

    def run(self, *args: str) -> str:
        done = subprocess.run(list(args), user=self.user.pw_uid, group=self.user.pw_gid,
                              extra_groups=[], cwd=self.path, capture_output=True, text=True,
                              env={"PATH": f"{PG_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8"},
                              check=False, timeout=120)
        assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def backrest(self, *args: str) -> str:
        return self.run("pgbackrest", f"--config={self.conf}", "--stanza=cv", *args)

    def start(self, data: Path, port: int, *options: str) -> None:
        settings = " ".join([f"-c port={port}", "-c listen_addresses=127.0.0.1",
                             f"-c unix_socket_directories={self.path}", *options])
        self.run(f"{PG_BIN}/pg_ctl", "-D", str(data), "-l", str(data) + ".log", "-w",
                 "-t", "60", "-o", settings, "start")
        self.started.append(data)

    def stop(self) -> None:
        for data in self.started:
            subprocess.run([f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                           user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[],
                           capture_output=True, check=False, timeout=60)
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Workdir]:
    require(POSTGRESQL_15, PGBACKREST)
    work = Workdir()
    try:
        yield work
    finally:
        work.stop()


def test_point_in_time_recovery_with_pgbackrest_passes_the_drill(
        workdir: Workdir, tmp_path: Path) -> None:
    port, restored_port = free_ports(2)
    data = workdir.path / "data"
    workdir.run(f"{PG_BIN}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
                "--encoding", "UTF8")
    for name in ("repo", "log", "lock", "spool"):
        (workdir.path / name).mkdir()
        os.chown(workdir.path / name, workdir.user.pw_uid, workdir.user.pw_gid)
    workdir.conf.write_text(f"""[global]
repo1-path={workdir.path / 'repo'}
repo1-retention-full=1
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=a-test-passphrase-kept-apart-from-the-key-file
log-path={workdir.path / 'log'}
lock-path={workdir.path / 'lock'}
spool-path={workdir.path / 'spool'}
log-level-console=warn
start-fast=y

[cv]
pg1-path={data}
pg1-port={port}
pg1-socket-path={workdir.path}
""")
    workdir.conf.chmod(0o644)
    archive = f"pgbackrest --config={workdir.conf} --stanza=cv archive-push %p"
    workdir.start(data, port, "-c wal_level=replica", "-c archive_mode=on",
                  f"-c archive_command='{archive}'")
    workdir.backrest("stanza-create")
    workdir.backrest("check")

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as admin:
        admin.execute("CREATE DATABASE carevault")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/carevault"
    engine = connect(url)
    upgrade(engine)
    workdir.backrest("backup", "--type=full")
    # pgBackRest records the backup's stop time to the second: a target in that same second is
    # "before every backup set" and refused, so the target below must be in a later second.
    time.sleep(1.1)
    key_file = tmp_path / "carevault.key"
    create_key_file(key_file)
    settings = Settings(database_url=url, key_source=f"file:{key_file}", environment="dev",
                        _env_file=None)  # type: ignore[call-arg]
    platform = build(settings, engine)
    client = TestClient(platform.app, base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 50000),
                        headers={"Authorization": f"Bearer {professional_token(platform)}"})
    patient_id, gp = patient_and_author(platform, client, number=12, author="HP-PITR")
    before = [created_id(publish(client, gp, provide_bundle(
        patient_id, gp, b"%PDF-1.4\n% before " + bytes([65 + n]) + b"\n%%EOF\n")))
        for n in range(2)]
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="carevault",
                         autocommit=True) as connection:
        target = connection.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    time.sleep(1.0)  # the later commits are clearly after the target
    after = created_id(publish(client, gp, provide_bundle(
        patient_id, gp, b"%PDF-1.4\n% after the target\n%%EOF\n")))
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as admin:
        admin.execute("SELECT pg_switch_wal()")
    workdir.backrest("check")  # waits until the current WAL is archived
    engine.dispose()

    restored = workdir.path / "restored"
    restored.mkdir(mode=0o700)
    os.chown(restored, workdir.user.pw_uid, workdir.user.pw_gid)
    moment = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"
    workdir.backrest(f"--pg1-path={restored}", "restore", "--type=time", f"--target={moment}",
                     "--target-action=promote")
    workdir.start(restored, restored_port, "-c archive_mode=off")
    restored_url = f"postgresql+psycopg://postgres@127.0.0.1:{restored_port}/carevault"
    with psycopg.connect(host="127.0.0.1", port=restored_port, user="postgres",
                         dbname="carevault", autocommit=True) as connection:
        for _ in range(300):
            if not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                break
            time.sleep(0.1)
    again = build(settings.model_copy(update={"database_url": restored_url}))
    with again.unit_of_work() as uow:
        assert all(uow.documents.get(d) is not None for d in before)
        assert uow.documents.get(after) is None
    report = backup.drill(again.unit_of_work, again.audit, again.vault)
    assert report.documents == 4  # the two reports of before and their signatures
    again.engine.dispose()
