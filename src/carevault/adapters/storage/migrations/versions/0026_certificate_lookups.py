"""Two lookups of the certificates were not index-bound: the encryption certificates of a
mailbox's owner, found by their directory identifier in any case (``lower(client_id)``; the
index on ``client_id`` cannot serve it), read whenever a message is sent or the directory
publishes an ``Endpoint``; and a practitioner's certificates (``practitioner_id``), read for
``PractitionerRole?_include=PractitionerRole:endpoint``. At national scale (hundreds of
thousands of professionals, several certificates each) both were full scans.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-12 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_pki_certificate_practitioner_id", "pki_certificate", ["practitioner_id"])
    op.create_index(
        "ix_pki_certificate_client_id_lower", "pki_certificate", [sa.text("lower(client_id)")]
    )


def downgrade() -> None:
    op.drop_index("ix_pki_certificate_client_id_lower", table_name="pki_certificate")
    op.drop_index("ix_pki_certificate_practitioner_id", table_name="pki_certificate")
