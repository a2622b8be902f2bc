"""flows: seg_removed and seg_breaks, the counters live playlists number their segments by

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

A live HLS playlist is a window at the end of a Flow; a player reloading it must see the same
segment under the same media sequence number each time. The number of the window's first
segment is the count of segments before it, which the Flow's counters give without reading
them: seg_count + seg_removed - (segments in the window). Likewise seg_breaks counts the
discontinuities (holes, ts_offset or init Object changes) between segments appended at the
end. Existing Flows start at 0: their numbering starts afresh, once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("seg_removed", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("flows", sa.Column("seg_breaks", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_column("seg_breaks")
        batch_op.drop_column("seg_removed")
