"""Documents: registry metadata, sealed content (database storage backend), SubmissionSets.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 20:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _indexes(table: str, *columns: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column])


def upgrade() -> None:
    code = sa.String(length=300)
    op.create_table(
        "document_metadata",
        sa.Column("document_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("master_identifier", sa.String(length=255), nullable=False),
        sa.Column("xds_class", code, nullable=False),
        sa.Column("xds_type", code, nullable=False),
        sa.Column("format", code, nullable=False),
        sa.Column("practice_setting", code, nullable=False),
        sa.Column("facility_type", code, nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("sha1", sa.String(length=40), nullable=True),
        sa.Column("created", TIMESTAMP, nullable=True),
        sa.Column("service_start", TIMESTAMP, nullable=True),
        sa.Column("service_end", TIMESTAMP, nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("replaces", ID, nullable=True),
        sa.Column("signs", ID, nullable=True),
        sa.Column("submission_set_id", ID, nullable=True),
        sa.Column("patient_authored", sa.Boolean(), nullable=False),
        sa.Column("release_at", TIMESTAMP, nullable=True),
        sa.Column("sealed_text", sa.LargeBinary(), nullable=True),
        sa.Column("text_kek_id", sa.String(length=64), nullable=True),
        _fk("document_metadata", "document_id", "document"),
        _fk("document_metadata", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_document_metadata")),
        sa.UniqueConstraint(
            "master_identifier", name=op.f("uq_document_metadata_master_identifier")
        ),
    )
    _indexes(
        "document_metadata",
        "patient_id",
        "replaces",
        "signs",
        "submission_set_id",
        "text_kek_id",
        "release_at",
    )
    op.create_table(
        "document_content",
        sa.Column("document_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("location", sa.String(length=128), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _fk("document_content", "document_id", "document"),
        _fk("document_content", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_document_content")),
    )
    _indexes("document_content", "kek_id", "patient_id")
    op.create_table(
        "submission_set",
        sa.Column("id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("master_identifier", sa.String(length=255), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("author_id", ID, nullable=True),
        sa.Column("submitted_at", TIMESTAMP, nullable=False),
        sa.Column("document_ids", sa.Text(), nullable=False),
        _fk("submission_set", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submission_set")),
        sa.UniqueConstraint("master_identifier", name=op.f("uq_submission_set_master_identifier")),
    )
    _indexes("submission_set", "patient_id")


def downgrade() -> None:
    op.drop_table("submission_set")
    op.drop_table("document_content")
    op.drop_table("document_metadata")
