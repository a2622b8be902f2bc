"""flows: pages_token, which changes whenever a segment page of the Flow may show something new

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every server process keeps recently rendered segment pages and reuses one only while its Flow's
pages_token is what it was when the page was rendered. Writes of segments and of Object
instances set the token of each Flow they touch to a fresh random value. Existing Flows start at
0 (a constant default: adding the column rewrites no rows on PostgreSQL 11+ or SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("pages_token", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_column("pages_token")
