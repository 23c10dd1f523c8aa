"""A patient's notification remembers when it was mailed: the outbox of the e-mail chore is
the notifications not mailed yet (at least once: a crash between sending and marking sends it
again, never loses it).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 06:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification") as batch:
        batch.add_column(sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification") as batch:
        batch.drop_column("mailed_at")
