"""Audit log: entries, perfect subtree hashes, writer state, signed tree heads, export cursors.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 17:39:53.231550
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("agent", sa.String(length=255), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "leaf_index", name=op.f("pk_audit_entry")),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_entry_patient", ["stream", "patient_id", "leaf_index"], unique=False
        )
        batch_op.create_index(
            "ix_audit_entry_agent", ["stream", "agent", "leaf_index"], unique=False
        )
        batch_op.create_index("ix_audit_entry_recorded", ["stream", "recorded_at"], unique=False)

    op.create_table(
        "audit_export_cursor",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("next_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "destination", name=op.f("pk_audit_export_cursor")),
    )
    state = op.create_table(
        "audit_log_state",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_audit_log_state")),
    )
    op.create_table(
        "audit_node",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("stream", "level", "idx", name=op.f("pk_audit_node")),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_token", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("stream", "tree_size", name=op.f("pk_audit_tree_head")),
    )

    # Every stream starts as an empty tree; writers lock its row to append.
    op.bulk_insert(
        state, [{"stream": s, "tree_size": 0, "frontier": b""} for s in ("clinical", "operator")]
    )


def downgrade() -> None:
    op.drop_table("audit_tree_head")
    op.drop_table("audit_node")
    op.drop_table("audit_log_state")
    op.drop_table("audit_export_cursor")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_entry_recorded")
        batch_op.drop_index("ix_audit_entry_agent")
        batch_op.drop_index("ix_audit_entry_patient")

    op.drop_table("audit_entry")
