"""A SubmissionSet keeps what its List said beyond the columns searches use (MHD 4.2
Comprehensive: designationType, intendedRecipient, source and authorOrg, title, note, and the
contained resources they name), as JSON, so that ITI-66 returns it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submission_set") as batch:
        batch.add_column(sa.Column("details", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submission_set") as batch:
        batch.drop_column("details")
