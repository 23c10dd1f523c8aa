"""Migrations are the only way the schema changes: they must build exactly the declared schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from carevault.adapters.storage.database import upgrade
from carevault.adapters.storage.schema import metadata


def test_upgrade_is_idempotent_and_matches_the_declared_schema(engine: Engine) -> None:
    upgrade(engine)  # the fixture already upgraded once; a second run changes nothing
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []
    tables = set(inspect(engine).get_table_names())
    assert {"patient", "patient_identifier", "practitioner", "organization",
            "resource_history", "alembic_version"} <= tables
