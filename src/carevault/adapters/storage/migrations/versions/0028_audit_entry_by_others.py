"""A patient's chart of accesses counts the entries made by professionals and systems, not by
the patient (or their representative) reading their own record. The query left those out by
their agent, which no index holds: it walked the patient's own entries of the last twelve
months to find the others, and each reading of the history page adds one, so its cost grew
with how often the patient looked. ``audit_entry.by_others`` says it at append time, and the
index puts those entries in the patient's own order
(`tests/integration/test_audit_log.py`: the plan uses it for a patient with 3,000 visits).

Entries appended before this revision are marked as the query marked them.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "audit_entry",
        sa.Column("by_others", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        "UPDATE audit_entry SET by_others = TRUE WHERE agent IS NULL OR "
        "(agent NOT LIKE 'account:%' AND agent <> 'Patient/' || COALESCE(patient_id, ''))"
    )
    op.create_index(
        "ix_audit_entry_patient_by_others",
        "audit_entry",
        ["stream", "patient_id", "by_others", "leaf_index"],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_entry_patient_by_others", table_name="audit_entry")
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_column("by_others")
