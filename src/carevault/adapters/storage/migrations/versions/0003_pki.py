"""Platform PKI: the certificate authorities and the client certificates they issued.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pki_authority",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("encrypted_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pki_authority")),
    )
    op.create_table(
        "pki_certificate",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=True),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_pki_certificate")),
    )
    with op.batch_alter_table("pki_certificate", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pki_certificate_client_id"), ["client_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("pki_certificate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pki_certificate_client_id"))

    op.drop_table("pki_certificate")
    op.drop_table("pki_authority")
