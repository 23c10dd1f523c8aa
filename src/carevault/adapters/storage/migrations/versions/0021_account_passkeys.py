"""Patients' and representatives' passkeys: a second factor besides the TOTP code, and the
account a WebAuthn ceremony's challenge was issued to; an index on the tokens' subject, so
that "sign out everywhere" revokes an account's app tokens without reading them all.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_passkey",
        sa.Column("credential_id", sa.String(700), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_account_passkey_account_id", "account_passkey", ["account_id"])
    with op.batch_alter_table("workspace_challenge") as batch:
        batch.add_column(sa.Column("account_id", sa.String(64), nullable=True))
    op.create_index("ix_oauth_token_subject", "oauth_token", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_oauth_token_subject", "oauth_token")
    with op.batch_alter_table("workspace_challenge") as batch:
        batch.drop_column("account_id")
    op.drop_index("ix_account_passkey_account_id", "account_passkey")
    op.drop_table("account_passkey")
