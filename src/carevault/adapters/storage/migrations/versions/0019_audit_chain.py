"""Each patient's hash chain through the audit log (`domain/audit_chain.py`): the head of every
patient's chain, per stream, which the next entry about them links to.

Entries appended before this migration carry no link and are left exactly as they are (their
bytes are what the signed tree heads commit to). A patient's chain starts with their first
entry after the upgrade: its genesis link (seq 0, no previous hash). The completeness proof
covers a patient's history from that entry on; before it, each entry still has its inclusion
proof, as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("stream", sa.String(16), primary_key=True),
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_head")
