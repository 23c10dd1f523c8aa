"""A search by family name at national scale: the common names are borne by thousands of
patients, and a search's total (PDQm's Bundle.total is always given) and its first page read
every one of them: the names' table rows for the patient ids, then the patients' rows to leave
out the merged ones. With the patient id in the family-name index and an index of the patients
not merged away, both are read from the indexes alone.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_FOLDED = {"family_folded": "text_pattern_ops"}


def upgrade() -> None:
    op.drop_index("ix_patient_name_family_folded", table_name="patient_name")
    op.create_index(
        "ix_patient_name_family_folded",
        "patient_name",
        ["family_folded", "patient_id"],
        postgresql_ops=_FOLDED,
    )
    op.create_index(
        "ix_patient_live_id",
        "patient",
        ["id"],
        postgresql_where=sa.text("merged_into IS NULL"),
        sqlite_where=sa.text("merged_into IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_patient_live_id", table_name="patient")
    op.drop_index("ix_patient_name_family_folded", table_name="patient_name")
    op.create_index(
        "ix_patient_name_family_folded", "patient_name", ["family_folded"], postgresql_ops=_FOLDED
    )
