"""Enrolment invitations: one-time activation codes for opening a patient account.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 18:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_invitation",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_enrolment_invitation")),
    )
    with op.batch_alter_table("enrolment_invitation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrolment_invitation_patient_id"), ["patient_id"])


def downgrade() -> None:
    with op.batch_alter_table("enrolment_invitation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolment_invitation_patient_id"))
    op.drop_table("enrolment_invitation")
