"""worker_leases and counters, for retention enforced by the workers (AppNote 0019)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

A retention pass is run by one worker at a time, whoever holds the ``retention`` lease; the
segments and Flows it deletes are counted in ``counters`` so that ``/metrics`` and ``tamstore
admin stats`` show them whichever process did the work. Flows with retention are found through
``flow_tags``' existing (name, value, flow_id) index: no new index on the hot tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leases = op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), server_default="0", nullable=False),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("value", sa.BigInteger(), server_default="0", nullable=False),
    )
    # Seeded, so that claiming and counting are updates of existing rows (no insert races).
    op.bulk_insert(leases, [{"name": "retention", "owner": None, "lease_until": 0}])
    op.bulk_insert(
        counters,
        [{"name": "retention_segments_deleted", "value": 0}, {"name": "retention_flows_deleted", "value": 0}],
    )


def downgrade() -> None:
    op.drop_table("counters")
    op.drop_table("worker_leases")
