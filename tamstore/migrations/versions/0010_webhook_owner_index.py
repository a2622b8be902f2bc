"""webhooks: an index on created_by, so that each owner's webhooks can be counted

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Each owner may register at most ``max_webhooks`` webhooks: every webhook sends every event it
hears of to its URL, so unbounded registrations would let one client make tamstore send any
number of requests to a host of its choosing for each change. The count at registration reads
this index, at most the limit's worth of entries.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhooks_created_by", "webhooks", ["created_by"])


def downgrade() -> None:
    op.drop_index("ix_webhooks_created_by", table_name="webhooks")
