"""Record policy: the record's settings, grants, blocks, delegations, emergency accesses,
document facts and encounters; a notification may be addressed to a patient without an account.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def _patient(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["patient_id"], ["patient.id"], name=op.f(f"fk_{table}_patient_id_patient")
    )


def _index_patient(table: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{table}_patient_id"), ["patient_id"])


def upgrade() -> None:
    op.create_table(
        "record",
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("referring_physician_id", ID, nullable=True),
        sa.Column("emergency_setting", sa.String(length=24), nullable=False),
        sa.Column("delegation_allowed", sa.Boolean(), nullable=False),
        sa.Column("default_confidentiality", sa.String(length=1), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        _patient("record"),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_record")),
    )
    op.create_table(
        "record_grant",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("party", sa.String(length=16), nullable=False),
        sa.Column("party_id", ID, nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=True),
        sa.Column("granted_by", sa.String(length=255), nullable=False),
        sa.Column("delegable", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_ref", sa.String(length=128), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        _patient("record_grant"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_grant")),
    )
    _index_patient("record_grant")
    op.create_table(
        "record_block",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("party", sa.String(length=16), nullable=False),
        sa.Column("party_id", ID, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        _patient("record_block"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_block")),
    )
    _index_patient("record_block")
    op.create_table(
        "record_delegation",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("delegator_id", ID, nullable=False),
        sa.Column("delegate_id", ID, nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        _patient("record_delegation"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_delegation")),
    )
    _index_patient("record_delegation")
    op.create_table(
        "emergency_access",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("practitioner_id", ID, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        _patient("emergency_access"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emergency_access")),
    )
    _index_patient("emergency_access")
    op.create_table(
        "document",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("author_id", ID, nullable=False),
        sa.Column("author_organization_id", ID, nullable=False),
        sa.Column("class_code", sa.String(length=64), nullable=False),
        sa.Column("type_code", sa.String(length=64), nullable=False),
        sa.Column("confidentiality", sa.String(length=1), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("not_yet_visible", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _patient("document"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document")),
    )
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.create_index("ix_document_patient_id_class_code", ["patient_id", "class_code"])
    op.create_table(
        "encounter",
        sa.Column("id", ID, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("practitioner_id", ID, nullable=False),
        sa.Column("organization_id", ID, nullable=True),
        sa.Column("period_start", TIMESTAMP, nullable=False),
        sa.Column("period_end", TIMESTAMP, nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _patient("encounter"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encounter")),
    )
    _index_patient("encounter")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.alter_column("account_id", existing_type=ID, nullable=True)


def downgrade() -> None:
    # Notifications addressed to a patient alone cannot survive the older schema.
    op.execute(sa.text("DELETE FROM notification WHERE account_id IS NULL"))
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.alter_column("account_id", existing_type=ID, nullable=False)
    for table in ("encounter", "emergency_access", "record_delegation", "record_block"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_patient_id"))
        op.drop_table(table)
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_index("ix_document_patient_id_class_code")
    op.drop_table("document")
    with op.batch_alter_table("record_grant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_grant_patient_id"))
    op.drop_table("record_grant")
    op.drop_table("record")
