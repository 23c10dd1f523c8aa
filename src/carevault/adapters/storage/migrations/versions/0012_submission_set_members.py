"""Each document names its SubmissionSet (``document_metadata.submission_set_id``), so that an
ITI-66 search lists, and counts, only the SubmissionSets of which the caller sees a document:
the column existed but was left empty; it is filled here from ``submission_set.document_ids``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_BATCH = 1000

_SETS = sa.table(
    "submission_set", sa.column("id", sa.String()), sa.column("document_ids", sa.Text())
)
_METADATA = sa.table(
    "document_metadata",
    sa.column("document_id", sa.String()),
    sa.column("submission_set_id", sa.String()),
)


def upgrade() -> None:
    connection = op.get_bind()
    fill = (
        sa.update(_METADATA)
        .where(_METADATA.c.document_id == sa.bindparam("member"))
        .values(submission_set_id=sa.bindparam("set_id"))
    )
    after = ""
    while True:
        rows = connection.execute(
            sa.select(_SETS.c.id, _SETS.c.document_ids)
            .where(_SETS.c.id > after)
            .order_by(_SETS.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        members = [
            {"member": document_id, "set_id": row.id}
            for row in rows
            for document_id in json.loads(row.document_ids)
        ]
        if members:
            connection.execute(fill, members)
        after = rows[-1].id


def downgrade() -> None:
    op.execute(sa.update(_METADATA).values(submission_set_id=None))
