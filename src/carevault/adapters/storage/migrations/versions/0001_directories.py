"""Directories: the master patient index and the professional directory.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 17:28:25.163897
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organization",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_folded", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("patient_id_system", sa.String(length=255), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("identifier", name=op.f("uq_organization_identifier")),
        sa.UniqueConstraint("patient_id_system", name=op.f("uq_organization_patient_id_system")),
    )
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.create_index(
            "ix_organization_name_folded",
            ["name_folded"],
            unique=False,
            postgresql_ops={"name_folded": "text_pattern_ops"},
        )

    op.create_table(
        "patient",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("national_id", sa.String(length=32), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("merged_into", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into"], ["patient.id"], name=op.f("fk_patient_merged_into_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("national_id", name=op.f("uq_patient_national_id")),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index("ix_patient_birth_date", ["birth_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_patient_merged_into"), ["merged_into"], unique=False)

    op.create_table(
        "practitioner",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("family_folded", sa.Text(), nullable=False),
        sa.Column("given_folded", sa.Text(), nullable=False),
        sa.Column("licence_status", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioner")),
        sa.UniqueConstraint("identifier", name=op.f("uq_practitioner_identifier")),
    )
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.create_index(
            "ix_practitioner_family_folded",
            ["family_folded"],
            unique=False,
            postgresql_ops={"family_folded": "text_pattern_ops"},
        )

    op.create_table(
        "resource_history",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "resource_id", "version_id", name=op.f("pk_resource_history")
        ),
    )
    with op.batch_alter_table("resource_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_resource_history_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "patient_identifier",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_identifier_patient_id_patient")
        ),
        sa.UniqueConstraint("system", "value", name=op.f("uq_patient_identifier_system_value")),
    )
    with op.batch_alter_table("patient_identifier", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_identifier_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "patient_merge",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("survivor_id", sa.String(length=64), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unmerged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_merge_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"], ["patient.id"], name=op.f("fk_patient_merge_survivor_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_merge")),
    )
    with op.batch_alter_table("patient_merge", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_merge_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "patient_name",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("family_folded", sa.Text(), nullable=False),
        sa.Column("given_folded", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_name_patient_id_patient")
        ),
    )
    with op.batch_alter_table("patient_name", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_name_family_folded",
            ["family_folded"],
            unique=False,
            postgresql_ops={"family_folded": "text_pattern_ops"},
        )
        batch_op.create_index(
            batch_op.f("ix_patient_name_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "patient_postal_code",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("postal_code", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_postal_code_patient_id_patient")
        ),
    )
    with op.batch_alter_table("patient_postal_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_postal_code_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patient_postal_code_postal_code"), ["postal_code"], unique=False
        )

    op.create_table(
        "practitioner_role",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("profession", sa.String(length=64), nullable=False),
        sa.Column("specialty", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_practitioner_role_organization_id_organization"),
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioner.id"],
            name=op.f("fk_practitioner_role_practitioner_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioner_role")),
    )
    with op.batch_alter_table("practitioner_role", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_practitioner_role_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_practitioner_role_practitioner_id"), ["practitioner_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_practitioner_role_profession"), ["profession"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_practitioner_role_specialty"), ["specialty"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("practitioner_role", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_practitioner_role_specialty"))
        batch_op.drop_index(batch_op.f("ix_practitioner_role_profession"))
        batch_op.drop_index(batch_op.f("ix_practitioner_role_practitioner_id"))
        batch_op.drop_index(batch_op.f("ix_practitioner_role_organization_id"))

    op.drop_table("practitioner_role")
    with op.batch_alter_table("patient_postal_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_postal_code_postal_code"))
        batch_op.drop_index(batch_op.f("ix_patient_postal_code_patient_id"))

    op.drop_table("patient_postal_code")
    with op.batch_alter_table("patient_name", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_name_patient_id"))
        batch_op.drop_index(
            "ix_patient_name_family_folded", postgresql_ops={"family_folded": "text_pattern_ops"}
        )

    op.drop_table("patient_name")
    with op.batch_alter_table("patient_merge", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_merge_patient_id"))

    op.drop_table("patient_merge")
    with op.batch_alter_table("patient_identifier", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_identifier_patient_id"))

    op.drop_table("patient_identifier")
    with op.batch_alter_table("resource_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_history_patient_id"))

    op.drop_table("resource_history")
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_practitioner_family_folded", postgresql_ops={"family_folded": "text_pattern_ops"}
        )

    op.drop_table("practitioner")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_merged_into"))
        batch_op.drop_index("ix_patient_birth_date")

    op.drop_table("patient")
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_organization_name_folded", postgresql_ops={"name_folded": "text_pattern_ops"}
        )

    op.drop_table("organization")
