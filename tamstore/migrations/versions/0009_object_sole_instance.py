"""objects.sole_instance: an Object whose one instance is its controlled one says so itself

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

A page of segments joined every segment's Object to object_instances for its URLs, though
nearly every Object has exactly one instance: the controlled one on the backend it was
allocated on. Objects that are in that state now say so (``sole_instance``), and the page reads
object_instances only for the others. Objects already stored are marked here, in one pass.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("objects", sa.Column("sole_instance", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE objects SET sole_instance = true"
        " WHERE storage_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM object_instances i WHERE i.object_id = objects.id"
        " AND i.controlled AND i.storage_id = objects.storage_id)"
        " AND (SELECT count(*) FROM object_instances i WHERE i.object_id = objects.id) = 1"
    )


def downgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_column("sole_instance")
