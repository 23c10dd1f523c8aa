"""A care team's name is kept folded too (``name_folded``, lower-case and accent-free, as the
organizations' names are), so that a patient finds a team in the directory by a word of its name
from the portal. Teams written before are folded here, in batches.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from carevault.domain.text import fold

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_BATCH = 500
_TEAMS = sa.table(
    "care_team",
    sa.column("id", sa.String),
    sa.column("name", sa.Text),
    sa.column("name_folded", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("care_team") as batch:
        batch.add_column(sa.Column("name_folded", sa.Text(), nullable=True))
    connection = op.get_bind()
    fill = (
        sa.update(_TEAMS)
        .where(_TEAMS.c.id == sa.bindparam("team"))
        .values(name_folded=sa.bindparam("folded"))
    )
    after = ""
    while True:
        rows = connection.execute(
            sa.select(_TEAMS.c.id, _TEAMS.c.name)
            .where(_TEAMS.c.id > after)
            .order_by(_TEAMS.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        connection.execute(fill, [{"team": row.id, "folded": fold(row.name)} for row in rows])
        after = rows[-1].id
    with op.batch_alter_table("care_team") as batch:
        batch.alter_column("name_folded", existing_type=sa.Text(), nullable=False)
        batch.create_index(
            "ix_care_team_name_folded",
            ["name_folded"],
            unique=False,
            postgresql_ops={"name_folded": "text_pattern_ops"},
        )


def downgrade() -> None:
    with op.batch_alter_table("care_team") as batch:
        batch.drop_index(
            "ix_care_team_name_folded", postgresql_ops={"name_folded": "text_pattern_ops"}
        )
        batch.drop_column("name_folded")
