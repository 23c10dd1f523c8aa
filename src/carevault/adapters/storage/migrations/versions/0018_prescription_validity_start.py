"""A prescription remembers when its validity starts (``valid_from``): a repeat prescription
(linked tasks, each with its own validity window) is not dispensed before its window opens.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 09:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prescription_task") as batch:
        batch.add_column(sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prescription_task") as batch:
        batch.drop_column("valid_from")
