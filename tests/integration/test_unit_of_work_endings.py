"""How a unit of work left without `commit` ends, on both databases: whatever wrote is rolled
back; on PostgreSQL, one that only read ends with a COMMIT, which changes nothing and keeps
psycopg's prepared statements (a ROLLBACK makes psycopg forget every one of the connection,
so that pages which only read had every statement planned again on every request)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from carevault.adapters.storage.audit_database import AuditDatabase
from carevault.adapters.storage.audit_store import PendingEntry
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.domain.audit import Agent, AuditRecord

COUNT_ORGANIZATIONS = text("SELECT count(*) FROM organization")
READ = text("SELECT count(*) FROM organization WHERE id = :id")


def _organizations(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(COUNT_ORGANIZATIONS).scalar_one())


def _operator_entry() -> PendingEntry:
    record = AuditRecord(
        stream="operator", recorded="2026-12-07T10:00:00.000Z", kind="access", action="R",
        interaction="read", outcome="0", agent=Agent(), entity_type=None, status=200,
        rule=None, request_id="not-committed", detail={})
    return PendingEntry(record.canonical(), None, datetime.now(UTC), None)


def test_a_write_left_without_commit_is_rolled_back(engine: Engine) -> None:
    before = _organizations(engine)
    with SqlUnitOfWork(engine) as uow:
        uow.directory.connection.execute(READ, {"id": "x"})  # a read first, then the write
        uow.directory.connection.execute(text(
            "INSERT INTO organization (id, version_id, identifier, name, name_folded, active, "
            "resource, updated_at) VALUES ('org-left', 1, 'ORG-LEFT', 'Left', 'left', true, "
            "'{}', CURRENT_TIMESTAMP)"))
        assert uow.directory.connection.execute(COUNT_ORGANIZATIONS).scalar_one() == before + 1
    assert _organizations(engine) == before


def test_a_write_through_the_driver_left_without_commit_is_rolled_back(engine: Engine) -> None:
    """The audit store writes through psycopg's own cursor, which SQLAlchemy does not see."""
    with SqlUnitOfWork(engine) as uow:
        size = uow.audit.size("operator")
        uow.audit.append("operator", [_operator_entry()])
    with SqlUnitOfWork(engine) as uow:
        assert uow.audit.size("operator") == size


def test_a_reading_unit_of_work_keeps_the_prepared_statements(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("psycopg's prepared statements: PostgreSQL only")
    engine = engine.execution_options()  # the fixture's engine, a pool of its own
    names: set[bytes] = set()
    for _ in range(8):  # psycopg prepares a statement at its fifth execution
        with SqlUnitOfWork(engine) as uow:
            uow.directory.connection.execute(READ, {"id": "x"})
            driver = uow.directory.connection.connection.driver_connection
            assert driver is not None
            prepared = driver._prepared._names
        names = set(prepared.values())
    assert names, "the reading units of work ended with a ROLLBACK: nothing stayed prepared"


def test_the_audit_logs_reads_keep_the_prepared_statements(engine: Engine) -> None:
    """The audit log's reads (a page of history, a proof, a tree head) end as a reading unit
    of work does (`database.ends_as_read`)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("psycopg's prepared statements: PostgreSQL only")
    database = AuditDatabase(engine.execution_options())
    names: set[bytes] = set()
    for _ in range(8):
        with database.reading() as store:
            store.size("clinical")
            driver = store.connection.connection.driver_connection
            assert driver is not None
            prepared = driver._prepared._names
        names = set(prepared.values())
    assert names, "the audit log's reads ended with a ROLLBACK: nothing stayed prepared"


def test_a_failed_read_caught_by_the_use_case_is_rolled_back(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("an aborted transaction: PostgreSQL only")
    with SqlUnitOfWork(engine) as uow, pytest.raises(DBAPIError):
        uow.directory.connection.execute(text("SELECT 1 / 0"))
    # Left without an error of its own: the aborted transaction was rolled back, and the
    # connection serves the next unit of work.
    with SqlUnitOfWork(engine) as uow:
        assert uow.directory.connection.execute(text("SELECT 1")).scalar_one() == 1
