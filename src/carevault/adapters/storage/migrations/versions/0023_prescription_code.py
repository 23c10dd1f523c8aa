"""A prescription keeps its access code sealed (``access_code_sealed``) beside its hash, so
that its patient can be shown it again (the portal, their app); the hash still checks a code
presented by a pharmacy. Tasks created before have none: their patients ask the prescriber.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prescription_task") as batch:
        batch.add_column(sa.Column("access_code_sealed", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prescription_task") as batch:
        batch.drop_column("access_code_sealed")
