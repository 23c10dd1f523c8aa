"""OAuth 2 / SMART: used client assertion ids and issued access tokens.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 18:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_assertion",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_oauth_assertion")),
    )
    with op.batch_alter_table("oauth_assertion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_assertion_expires_at"), ["expires_at"])
    op.create_table(
        "oauth_token",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("certificate_serial", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_oauth_token")),
    )
    with op.batch_alter_table("oauth_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_token_client_id"), ["client_id"])


def downgrade() -> None:
    with op.batch_alter_table("oauth_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_token_client_id"))
    op.drop_table("oauth_token")
    with op.batch_alter_table("oauth_assertion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_assertion_expires_at"))
    op.drop_table("oauth_assertion")
