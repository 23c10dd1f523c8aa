"""Who may change the facts the engine trusts: registered directory authorities, and the
patients' presence codes that prove a care relationship.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "directory_authority",
        sa.Column("id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("assigning_authority", sa.String(length=255), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("ended_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_directory_authority_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_authority")),
    )
    with op.batch_alter_table("directory_authority", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_authority_organization_id"), ["organization_id"]
        )
    op.create_table(
        "presence_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.Column("used_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_presence_code_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_presence_code")),
    )
    with op.batch_alter_table("presence_code", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_presence_code_patient_id"), ["patient_id"])


def downgrade() -> None:
    with op.batch_alter_table("presence_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_presence_code_patient_id"))
    op.drop_table("presence_code")
    with op.batch_alter_table("directory_authority", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_authority_organization_id"))
    op.drop_table("directory_authority")
