"""The professional's own accesses in the workspace: the professional an assistant's session
acts for (chosen among their mandates in force, checked again at each request), and the indexes
that list a professional's grants, delegations and emergency windows across records.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_session") as batch:
        batch.add_column(sa.Column("acting_for", sa.String(64), nullable=True))
    op.create_index("ix_record_grant_party", "record_grant", ["party", "party_id"])
    op.create_index("ix_record_delegation_delegator_id", "record_delegation", ["delegator_id"])
    op.create_index("ix_record_delegation_delegate_id", "record_delegation", ["delegate_id"])
    op.create_index("ix_emergency_access_practitioner_id", "emergency_access", ["practitioner_id"])


def downgrade() -> None:
    op.drop_index("ix_emergency_access_practitioner_id", "emergency_access")
    op.drop_index("ix_record_delegation_delegate_id", "record_delegation")
    op.drop_index("ix_record_delegation_delegator_id", "record_delegation")
    op.drop_index("ix_record_grant_party", "record_grant")
    with op.batch_alter_table("portal_session") as batch:
        batch.drop_column("acting_for")
