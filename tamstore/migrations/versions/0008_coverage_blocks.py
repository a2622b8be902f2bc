"""coverage_blocks: each Flow's segments summed per minute and per hour of its timeline

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

A zoomed-out timeline of a long Flow reads these blocks instead of every segment in its range
(``tamstore.domain.coverage``). They are filled here from the segments already stored: one
aggregate per block size over the segments' primary key (14 s for ten million segments on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tamstore.domain.coverage import BLOCK_SECONDS
from tamstore.store.metadata.coverage import backfill_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coverage_blocks",
        sa.Column("flow_id", sa.String(36), sa.ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.Column("covered", sa.BigInteger(), nullable=False),
        sa.Column("shortest", sa.BigInteger(), nullable=False),
        sa.Column("longest", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "seconds", "block"),
    )
    for seconds in BLOCK_SECONDS:
        op.execute(backfill_sql(seconds))


def downgrade() -> None:
    op.drop_table("coverage_blocks")
