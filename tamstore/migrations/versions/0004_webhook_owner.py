"""webhooks: created_by, the principal that registered the webhook

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Only a webhook's owner (or an admin) may change or delete it: a webhook carries its
api_key_value to its URL, so whoever may retarget it may take the secret. Webhooks registered
before this revision, or with authentication off, have none: with authentication on, only an
admin may change those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhooks", sa.Column("created_by", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("created_by")
