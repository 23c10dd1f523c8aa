"""Alembic environment: the engine comes from the caller (`database.upgrade`), never from a URL
written in a file, so that migrations run against exactly the database the platform uses."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from carevault.adapters.storage.schema import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run migrations through 'carevault db upgrade'")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
