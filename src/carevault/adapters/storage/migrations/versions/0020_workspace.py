"""The professionals' workspace: passkeys bound to the card certificate they were enrolled
with, the single-use challenges of the card proof and of the WebAuthn ceremonies, and the
certificate a professional's portal session stands on.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "passkey",
        sa.Column("credential_id", sa.String(700), primary_key=True),
        sa.Column("practitioner_id", sa.String(64), nullable=False),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_passkey_practitioner_id", "passkey", ["practitioner_id"])
    op.create_table(
        "workspace_challenge",
        sa.Column("challenge_hash", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("practitioner_id", sa.String(64)),
        sa.Column("certificate_serial", sa.String(64)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_workspace_challenge_expires_at", "workspace_challenge", ["expires_at"])
    with op.batch_alter_table("portal_session") as batch:
        batch.add_column(sa.Column("certificate_serial", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("portal_session") as batch:
        batch.drop_column("certificate_serial")
    op.drop_index("ix_workspace_challenge_expires_at", "workspace_challenge")
    op.drop_table("workspace_challenge")
    op.drop_index("ix_passkey_practitioner_id", "passkey")
    op.drop_table("passkey")
