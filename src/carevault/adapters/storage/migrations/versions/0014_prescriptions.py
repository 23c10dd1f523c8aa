"""E-prescriptions: the ``prescription_task`` table (gematik's E-Rezept Task workflow) and the
wrong-code attempts that rate-limit ``$accept``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prescription_task",
        sa.Column("id", ID, nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("patient_id", ID, nullable=True),
        sa.Column("prescriber_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("access_code_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("pharmacist_id", ID, nullable=True),
        sa.Column("pharmacy_id", ID, nullable=True),
        sa.Column("signed_prescription", sa.Text(), nullable=True),
        sa.Column("dispense", sa.Text(), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
        sa.Column("repeat_of", ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_prescription_task_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescription_task")),
        sa.UniqueConstraint("number", name=op.f("uq_prescription_task_number")),
    )
    with op.batch_alter_table("prescription_task", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prescription_task_patient_id"), ["patient_id"])
        batch_op.create_index(batch_op.f("ix_prescription_task_prescriber_id"), ["prescriber_id"])
    op.create_table(
        "prescription_failure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("who", sa.String(length=255), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescription_failure")),
    )
    with op.batch_alter_table("prescription_failure", schema=None) as batch_op:
        batch_op.create_index("ix_prescription_failure_who_at", ["who", "at"])


def downgrade() -> None:
    op.drop_table("prescription_failure")
    op.drop_table("prescription_task")
