"""What professionals record about each other: assistants' mandates and care teams (with their
members); and a held document's release time as a fact of the document itself
(``document.held_until``), so that the engine releases it on time rather than a chore.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_until", TIMESTAMP, nullable=True))
    # Documents held until a date keep it (the metadata's release time), once.
    metadata_table = sa.table(
        "document_metadata",
        sa.column("document_id", sa.String()),
        sa.column("release_at", TIMESTAMP),
    )
    document = sa.table(
        "document",
        sa.column("id", sa.String()),
        sa.column("held_until", TIMESTAMP),
        sa.column("not_yet_visible", sa.Boolean()),
    )
    op.get_bind().execute(
        sa.update(document)
        .where(document.c.not_yet_visible.is_(True))
        .values(
            held_until=sa.select(metadata_table.c.release_at)
            .where(metadata_table.c.document_id == document.c.id)
            .scalar_subquery()
        )
    )
    op.create_table(
        "assistant_mandate",
        sa.Column("id", ID, nullable=False),
        sa.Column("mandator_id", ID, nullable=False),
        sa.Column("assistant_id", ID, nullable=False),
        sa.Column("classes", sa.Text(), nullable=True),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("ended_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["mandator_id"],
            ["practitioner.id"],
            name=op.f("fk_assistant_mandate_mandator_id_practitioner"),
        ),
        sa.ForeignKeyConstraint(
            ["assistant_id"],
            ["practitioner.id"],
            name=op.f("fk_assistant_mandate_assistant_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assistant_mandate")),
    )
    with op.batch_alter_table("assistant_mandate", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assistant_mandate_mandator_id"), ["mandator_id"])
        batch_op.create_index(batch_op.f("ix_assistant_mandate_assistant_id"), ["assistant_id"])
    op.create_table(
        "care_team",
        sa.Column("id", ID, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("period_start", TIMESTAMP, nullable=True),
        sa.Column("period_end", TIMESTAMP, nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_care_team_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_team")),
    )
    with op.batch_alter_table("care_team", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_care_team_organization_id"), ["organization_id"])
    op.create_table(
        "care_team_member",
        sa.Column("care_team_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", ID, nullable=False),
        sa.Column("period_start", TIMESTAMP, nullable=True),
        sa.Column("period_end", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["care_team_id"],
            ["care_team.id"],
            name=op.f("fk_care_team_member_care_team_id_care_team"),
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioner.id"],
            name=op.f("fk_care_team_member_practitioner_id_practitioner"),
        ),
        sa.PrimaryKeyConstraint("care_team_id", "position", name=op.f("pk_care_team_member")),
    )
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_care_team_member_practitioner_id"), ["practitioner_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_team_member_practitioner_id"))
    op.drop_table("care_team_member")
    with op.batch_alter_table("care_team", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_team_organization_id"))
    op.drop_table("care_team")
    with op.batch_alter_table("assistant_mandate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assistant_mandate_assistant_id"))
        batch_op.drop_index(batch_op.f("ix_assistant_mandate_mandator_id"))
    op.drop_table("assistant_mandate")
    # Plain ALTER on both databases: a batch would rebuild the referenced document table on
    # SQLite, which its rows' foreign keys forbid.
    op.execute("ALTER TABLE document DROP COLUMN held_until")
