"""What a patient's chain link costs on append, against the same appends without one, in one run.

An entry without a patient takes exactly the path every entry took before the chains
(`docs/audit.md`): no head read, no link, no head written. An entry about a patient adds, under
the stream's lock, one indexed read of the chain heads and their upsert (in the same statement
as the entries on PostgreSQL). Each figure below alternates rounds of the two kinds on the same
fresh database, so both see the same tree size and the same machine load:

* *change*: one transaction per entry through ``AuditLog.append_with`` (a write's own entry);
* *group commit*: C threads calling ``AuditLog.append([record])`` (a read's entry).

Run: ``.venv/bin/python bench/audit_chain.py [--entries N] [--clients C] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from carevault.adapters.keys.log_signer import Ed25519TreeHeadSigner
from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.database import connect, upgrade
from carevault.domain.audit import STREAMS, Agent, AuditRecord
from carevault.services.audit_log import AuditLog

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PATIENTS = 1000


def record(n: int, linked: bool) -> AuditRecord:
    return AuditRecord(
        stream="clinical",
        recorded="2026-12-05T10:00:00.000Z",
        kind="access",
        action="R",
        interaction="read",
        outcome="0",
        agent=Agent(who=f"Practitioner/{n % 97}", network="127.0.0.1"),
        patient=f"patient-{n % PATIENTS}" if linked else None,
        entity_type="DocumentReference",
        entity_id=str(n),
        status=200,
    )


def per_append_us(work: Callable[[int, bool], None], entries: int, linked: bool) -> float:
    start = time.perf_counter()
    work(entries, linked)
    return (time.perf_counter() - start) / entries * 1e6


def changes(log: AuditLog) -> Callable[[int, bool], None]:
    def work(entries: int, linked: bool) -> None:
        for n in range(entries):
            log.append_now([record(n, linked)])

    return work


def group_commits(log: AuditLog, clients: int) -> Callable[[int, bool], None]:
    def work(entries: int, linked: bool) -> None:
        each = entries // clients

        def client(c: int) -> None:
            for n in range(c * each, (c + 1) * each):
                log.append([record(n, linked)])

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return work


def measure(name: str, url: str, entries: int, clients: int, rounds: int) -> None:
    engine = connect(url)
    upgrade(engine)
    signers = {s: Ed25519TreeHeadSigner.derive(b"b" * 32, s) for s in STREAMS}
    log = AuditLog(AuditDatabase(engine), dict(signers), lambda: datetime.now(UTC))
    try:
        for label, work in (
            ("change (1 entry per transaction)", changes(log)),
            (f"group commit ({clients} clients)", group_commits(log, clients)),
        ):
            work(entries // 4, True)  # warm up: connections, statements, every patient's head
            without, with_link = [], []
            for _ in range(rounds):
                without.append(per_append_us(work, entries, False))
                with_link.append(per_append_us(work, entries, True))
            a, b = statistics.median(without), statistics.median(with_link)
            print(
                f"{name:10} {label:34} without link {a:8.1f} µs/append ({1e6 / a:7.0f}/s)  "
                f"with link {b:8.1f} µs/append ({1e6 / b:7.0f}/s)  cost {b - a:+7.1f} µs "
                f"({(b / a - 1) * 100:+5.1f} %)"
            )
    finally:
        log.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=800)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.entries} appends per round, {args.rounds} rounds of each kind, alternating; "
          f"medians; {PATIENTS} patients; {os.cpu_count()} cores")
    admin_url = make_url(os.environ.get("CAREVAULT_BENCH_DATABASE_URL", DEFAULT_PG))
    name = f"carevault_bench_chain_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        measure("PostgreSQL", url, args.entries, args.clients, args.rounds)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    with tempfile.TemporaryDirectory() as folder:
        measure(
            "SQLite", f"sqlite:///{Path(folder) / 'bench.db'}", args.entries, args.clients,
            args.rounds,
        )


if __name__ == "__main__":
    main()
