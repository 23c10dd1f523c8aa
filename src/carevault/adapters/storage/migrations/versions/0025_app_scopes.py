"""An app's registration names the scopes it may ever be granted (``oauth_client.scopes``): a
token's scopes never exceed what the app's registration, the person's role and their consent
allow. Apps registered before kept no such list and could be granted anything a role allows:
they are given exactly that (every patient and system scope), so that none stops working; an
operator narrows one by registering it again with ``--scope``.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-10 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

# What an app could be granted before this revision: any scope of either context.
_BEFORE = "launch/patient openid fhirUser patient/*.cruds system/*.cruds"


def upgrade() -> None:
    with op.batch_alter_table("oauth_client") as batch:
        batch.add_column(sa.Column("scopes", sa.Text(), nullable=False, server_default=_BEFORE))


def downgrade() -> None:
    with op.batch_alter_table("oauth_client") as batch:
        batch.drop_column("scopes")
