"""objects: the index of unregistered allocations becomes partial

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Registering an Object moved its entry within ix_objects_unregistered (registered, allocated_at);
now the index holds only unregistered Objects (WHERE registered = false), so registering one
just removes its entry, and registered Objects take no room in the index.

The index is rebuilt in place: on a large PostgreSQL store, writes to objects wait while it is
built (one pass over the table), so run `tamstore db upgrade` before the roll-out, as usual.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_UNREGISTERED = sa.column("registered", sa.Boolean) == sa.false()


def upgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_index("ix_objects_unregistered")
        batch_op.create_index(
            "ix_objects_unregistered",
            ["allocated_at"],
            unique=False,
            sqlite_where=_UNREGISTERED,
            postgresql_where=_UNREGISTERED,
        )


def downgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_index("ix_objects_unregistered")
        batch_op.create_index("ix_objects_unregistered", ["registered", "allocated_at"], unique=False)
