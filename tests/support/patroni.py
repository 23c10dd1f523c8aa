"""A private two-site PostgreSQL on loopback ports: three etcd members and two PostgreSQL 15
members managed by Patroni (Debian's ``patroni`` and ``etcd-server``), in synchronous strict
mode, with the timings of ``deploy/two-site/patroni-site-a.yml``.

The sites, as in docs/operations.md: site *i* (0 or 1) is PostgreSQL member ``pg<i>``, its
Patroni and etcd member ``e<i>``; ``e2`` is the witness at a third place. `kill_site` loses a
whole site at once (SIGKILL of its Patroni, its postmaster and its etcd member: the two other
etcd members keep the quorum); `restart_site` brings it back with its data.

Everything lives in one directory owned by ``postgres`` (PostgreSQL refuses to run as root);
Patroni runs as ``postgres`` in its own session, so the PIDs kept are Patroni's own. ``stop``
kills what it started by PID only: Patroni (SIGKILL), each postmaster (SIGQUIT, from its
``postmaster.pid``), etcd (SIGKILL). A machine without the packages skips the tests that use
it; CI fails them (`support.requirements`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.requirements import Requirement, require

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_SECONDS = 90.0

PATRONI = Requirement("Patroni", "patroni",
                      lambda: None if shutil.which("patroni") else "patroni is not installed")
ETCD = Requirement("etcd", "etcd-server",
                   lambda: None if shutil.which("etcd") else "etcd is not installed")
POSTGRESQL_15 = Requirement(
    "PostgreSQL 15 binaries", "postgresql-15",
    lambda: None if (PG_BIN / "postgres").exists() else f"{PG_BIN}/postgres is missing")


def free_ports(count: int) -> list[int]:
    import socket
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Member:
    name: str
    port: int
    api_port: int
    data_dir: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@dataclass
class PatroniCluster:
    workdir: Path
    members: list[Member] = field(default_factory=list)
    etcd: list[subprocess.Popen[bytes]] = field(default_factory=list)
    etcd_client_ports: list[int] = field(default_factory=list)
    etcd_commands: list[list[str]] = field(default_factory=list)

    @classmethod
    def create(cls) -> PatroniCluster:
        require(PATRONI, ETCD, POSTGRESQL_15)
        workdir = Path(tempfile.mkdtemp(prefix="carevault-patroni-", dir="/tmp"))
        postgres = pwd.getpwnam("postgres")
        os.chown(workdir, postgres.pw_uid, postgres.pw_gid)
        workdir.chmod(0o700)
        return cls(workdir)

    # --- etcd ---------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        ports = free_ports(6)
        clients, peers = ports[:3], ports[3:]
        self.etcd_client_ports = clients
        initial = ",".join(f"e{i}=http://127.0.0.1:{peers[i]}" for i in range(3))
        for i in range(3):
            data = self.workdir / f"etcd{i}"
            self.etcd_commands.append(
                ["etcd", "--name", f"e{i}", "--data-dir", str(data),
                 "--listen-client-urls", f"http://127.0.0.1:{clients[i]}",
                 "--advertise-client-urls", f"http://127.0.0.1:{clients[i]}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", self.workdir.name,
                 "--heartbeat-interval", "100", "--election-timeout", "1000"])
            self.etcd.append(self._etcd_process(i))
        self._wait_for_etcd(range(3))

    def _etcd_process(self, i: int) -> subprocess.Popen[bytes]:
        """etcd member ``e<i>``; started again on its data directory, it rejoins (the
        ``--initial-*`` flags count only for a new one)."""
        log = open(self.workdir / f"etcd{i}.log", "ab")  # noqa: SIM115 - the child's
        try:
            return subprocess.Popen(self.etcd_commands[i], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def _wait_for_etcd(self, members: range | list[int]) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not all(self._etcd_healthy(self.etcd_client_ports[i]) for i in members):
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not become healthy:\n" + self.logs())
            time.sleep(0.1)

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    # --- Patroni ------------------------------------------------------------------------------

    def _config(self, name: str, port: int, api_port: int, data_dir: Path) -> dict[str, Any]:
        return {
            "scope": self.workdir.name, "namespace": "/service/", "name": name,
            "log": {"level": "INFO", "dir": str(self.workdir / f"{name}-log")},
            "restapi": {"listen": f"127.0.0.1:{api_port}",
                        "connect_address": f"127.0.0.1:{api_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{p}" for p in self.etcd_client_ports]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20, "loop_wait": 1, "retry_timeout": 5,
                    "maximum_lag_on_failover": 0,
                    "synchronous_mode": True, "synchronous_mode_strict": True,
                    "primary_start_timeout": 0,
                    "postgresql": {
                        "use_pg_rewind": True, "use_slots": True,
                        "parameters": {
                            "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                            "max_wal_senders": 10, "max_replication_slots": 10,
                            "wal_retrieve_retry_interval": "500ms",
                            "max_connections": 120, "shared_buffers": "32MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{port}", "connect_address": f"127.0.0.1:{port}",
                "data_dir": str(data_dir), "bin_dir": str(PG_BIN),
                "pgpass": str(self.workdir / f"{name}.pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "unused-trust"},
                    "replication": {"username": "replicator", "password": "unused-trust"},
                    "rewind": {"username": "postgres", "password": "unused-trust"},
                },
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "host replication replicator 127.0.0.1/32 trust",
                           "local replication all trust"],
                "parameters": {"unix_socket_directories": str(self.workdir)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False,
                     "nosync": False},
        }

    def start(self) -> None:
        self._start_etcd()
        ports = free_ports(4)
        postgres = pwd.getpwnam("postgres")
        for i in range(2):
            name = f"pg{i}"
            data_dir = self.workdir / name
            config = self.workdir / f"{name}.yml"
            (self.workdir / f"{name}-log").mkdir()
            os.chown(self.workdir / f"{name}-log", postgres.pw_uid, postgres.pw_gid)
            # JSON is YAML: Patroni reads it as is.
            config.write_text(json.dumps(self._config(name, ports[i], ports[2 + i], data_dir)))
            os.chown(config, postgres.pw_uid, postgres.pw_gid)
            member = Member(name, ports[i], ports[2 + i], data_dir, config)
            self.members.append(member)
            self.start_member(member)
            if i == 0:  # the first bootstraps alone, then the second clones it
                self.wait_for(lambda: self.leader() is not None)
        self.wait_for(self.healthy)

    def start_member(self, member: Member) -> None:
        postgres = pwd.getpwnam("postgres")
        log = open(self.workdir / f"{member.name}.out", "ab")  # noqa: SIM115 - the child's
        member.process = subprocess.Popen(
            ["patroni", str(member.config)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
            user=postgres.pw_uid, group=postgres.pw_gid, extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "LANG": "C.UTF-8"})
        log.close()

    # --- state --------------------------------------------------------------------------------

    def cluster(self) -> dict[str, Any] | None:
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            try:
                url = f"http://127.0.0.1:{member.api_port}/cluster"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    return dict(json.loads(answer.read()))
            except (OSError, ValueError):
                continue
        return None

    def _role(self, role: str) -> Member | None:
        state = self.cluster() or {}
        for entry in state.get("members", []):
            if entry.get("role") == role and entry.get("state") in ("running", "streaming"):
                return next(m for m in self.members if m.name == entry["name"])
        return None

    def leader(self) -> Member | None:
        return self._role("leader")

    def sync_standby(self) -> Member | None:
        return self._role("sync_standby")

    def healthy(self) -> bool:
        return self.leader() is not None and self.sync_standby() is not None

    def wait_for(self, check: Any, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not get there:\n{self.cluster()}\n"
                                   + self.logs())
            time.sleep(0.2)

    def url(self, database: str) -> str:
        hosts = "&".join(f"host=127.0.0.1:{m.port}" for m in self.members)
        return (f"postgresql+psycopg://postgres@/{database}?{hosts}"
                "&target_session_attrs=read-write&connect_timeout=3")

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.out")) + sorted(self.workdir.glob("etcd*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # --- faults and teardown ------------------------------------------------------------------

    def kill_postmaster(self, member: Member) -> None:
        pid = member.postmaster_pid()
        assert pid is not None, f"{member.name} has no postmaster"
        os.kill(pid, signal.SIGKILL)

    def kill_member(self, member: Member) -> None:
        """The whole member: its Patroni, then its PostgreSQL."""
        if member.process is not None and member.process.poll() is None:
            member.process.kill()
            member.process.wait()
        pid = member.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def kill_site(self, member: Member) -> None:
        """Lose ``member``'s whole site at once: SIGKILL of its Patroni, its postmaster and
        the site's etcd member, one right after the other (nothing shuts down cleanly, the
        leader key is not released: the other site waits for it to expire)."""
        site = self.members.index(member)
        assert member.process is not None
        postmaster = member.postmaster_pid()
        member.process.kill()
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        self.etcd[site].kill()
        member.process.wait()
        self.etcd[site].wait()

    def restart_site(self, member: Member) -> None:
        """Bring a lost site back with its data: its etcd member, then its Patroni (which
        rewinds the old primary and has it follow the new one)."""
        site = self.members.index(member)
        self.etcd[site] = self._etcd_process(site)
        self._wait_for_etcd([site])
        self.start_member(member)

    def stop(self) -> None:
        for member in self.members:
            self.kill_member(member)
        for process in self.etcd:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
