"""A search by the start of any word of a name (a patient's or a professional's given names,
``name=``; an organization's or a care team's name) at national scale: ``LIKE '% x%'`` cannot
use a B-tree, and each such search read the whole table (100 ms for a million names), at the
rate limit's pace of one professional. PostgreSQL's trigram indexes (pg_trgm, a trusted
extension that the database's owner may create) serve it. SQLite, for development only, gets
an empty index of the same name (``WHERE 0``) so that the declared schema is one on both.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_patient_name_family_words", "patient_name", "family_folded"),
    ("ix_patient_name_given_words", "patient_name", "given_folded"),
    ("ix_practitioner_family_words", "practitioner", "family_folded"),
    ("ix_practitioner_given_words", "practitioner", "given_folded"),
    ("ix_organization_name_words", "organization", "name_folded"),
    ("ix_care_team_name_words", "care_team", "name_folded"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in _INDEXES:
        op.create_index(
            name,
            table,
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
            sqlite_where=sa.text("0"),
        )


def downgrade() -> None:
    for name, table, _column in _INDEXES:
        op.drop_index(name, table_name=table)
