"""What every command needs: settings, a database, and the operators' audit stream.

"One function, one trace": whatever an operator changes from the command line is recorded in
the operator stream of the audit log, inside the transaction that makes the change.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from carevault.adapters.storage.audit_store import AuditStore
from carevault.adapters.storage.database import shared_engine
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.bootstrap import audit_log
from carevault.domain.audit import (
    Agent,
    AuditRecord,
    Written,
    professionals_detail,
    rfc3339_ms,
)
from carevault.services.audit_log import AuditLog
from carevault.services.unit_of_work import UnitOfWork
from carevault.settings import Settings


def settings() -> Settings:
    return Settings()


engine_for = shared_engine  # the commands' engine for a database URL, one per process


def operator() -> str:
    return f"os-user:{getpass.getuser()}"


def operator_record(
    action: str,
    interaction: str,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    detail: dict[str, str] | None = None,
    outcome: str = "0",
) -> AuditRecord:
    return AuditRecord(
        stream="operator",
        recorded=rfc3339_ms(datetime.now(UTC)),
        kind="operator",
        action=action,
        interaction=interaction,
        outcome=outcome,
        agent=Agent(who=operator(), role="operator", network="local"),
        entity_type=entity_type,
        entity_id=entity_id,
        detail=detail or {},
    )


def audited_units(
    config: Settings,
    interaction: str,
    *,
    action: str = "C",
    detail: dict[str, str] | None = None,
    affects_access: bool = False,
) -> Callable[[], UnitOfWork]:
    """Units of work whose commits each record ``interaction`` in the operator stream. A change
    that ``affects_access`` (a professional's role or organization, a licence) made by hand
    rather than by the provider registry's feed is said so, with an alert for the security
    officer beside it."""
    engine = engine_for(config.database_url)
    log = audit_log(config, engine)

    def record(store: AuditStore, written: Written) -> None:
        patients = written.patients
        entity = {"patients": ",".join(patients)} if patients else {}
        change = {"directory-change": "providers"} if affects_access else {}
        professionals = professionals_detail(written.professionals)
        entry = operator_record(
            action, interaction, detail={**(detail or {}), **entity, **change, **professionals}
        )
        alerts = [replace(entry, kind="alert")] if affects_access else []
        log.append_with(store, [entry, *alerts])

    return lambda: SqlUnitOfWork(engine, before_commit=record)


def log_for(config: Settings) -> AuditLog:
    return audit_log(config, engine_for(config.database_url))


def record_now(config: Settings, entry: AuditRecord) -> None:
    """Record an operator's action (`operator_record`) in the operators' stream at once: one
    that changes nothing through a unit of work (those are recorded with their commit,
    `audited_units`), or a refusal (outcome 4)."""
    log_for(config).append_now([entry])
