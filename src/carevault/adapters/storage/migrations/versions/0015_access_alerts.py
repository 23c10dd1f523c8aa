"""The security officer's alerts (the access anomaly detector's queue and the emergency accesses
to review) and how far the detector has read the audit log.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_alert",
        sa.Column("id", ID, nullable=False),
        sa.Column("group_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("professional", sa.String(length=255), nullable=False),
        sa.Column("organization", sa.String(length=255), nullable=True),
        sa.Column("patient_id", ID, nullable=True),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("raised_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("assignee", sa.String(length=255), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=255), nullable=True),
        sa.Column("closed_by", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("patient_notified_at", TIMESTAMP, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_alert")),
        sa.UniqueConstraint("group_key", name=op.f("uq_access_alert_group_key")),
    )
    with op.batch_alter_table("access_alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_alert_status"), ["status"])
        batch_op.create_index(batch_op.f("ix_access_alert_professional"), ["professional"])
        batch_op.create_index(batch_op.f("ix_access_alert_patient_id"), ["patient_id"])
        batch_op.create_index(batch_op.f("ix_access_alert_raised_at"), ["raised_at"])
    op.create_table(
        "anomaly_cursor",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_anomaly_cursor")),
    )


def downgrade() -> None:
    op.drop_table("anomaly_cursor")
    with op.batch_alter_table("access_alert", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_alert_raised_at"))
        batch_op.drop_index(batch_op.f("ix_access_alert_patient_id"))
        batch_op.drop_index(batch_op.f("ix_access_alert_professional"))
        batch_op.drop_index(batch_op.f("ix_access_alert_status"))
    op.drop_table("access_alert")
