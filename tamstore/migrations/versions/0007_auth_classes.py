"""resource_classes: the auth classes of Sources, Flows and webhooks, for auth_classes enforced in SQL

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Filled from the ``auth_classes`` tags already stored, so that a policy configured later applies
to content tagged before this version.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tamstore.domain.access import classes_of

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    classes = op.create_table(
        "resource_classes",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("auth_class", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "resource_id", "auth_class"),
    )
    op.create_index("ix_resource_classes_class", "resource_classes", ["kind", "auth_class", "resource_id"])
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("owner_groups", sa.Text(), nullable=True))
        batch.add_column(sa.Column("owner_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    conn = op.get_bind()
    rows = []
    for kind, table, owner in (
        ("flow", "flow_tags", "flow_id"),
        ("source", "source_tags", "source_id"),
        ("webhook", "webhook_tags", "webhook_id"),
    ):
        values: dict[str, list[str]] = {}
        found = conn.execute(sa.text(f"SELECT {owner}, value FROM {table} WHERE name = 'auth_classes'"))
        for owner_id, value in found:
            values.setdefault(owner_id, []).append(value)
        for owner_id, listed in values.items():
            tag = listed[0] if len(listed) == 1 else listed
            for name in classes_of({"auth_classes": tag}):
                rows.append({"kind": kind, "resource_id": owner_id, "auth_class": name})
    if rows:
        op.bulk_insert(classes, rows)


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("owner_admin")
        batch.drop_column("owner_groups")
    op.drop_index("ix_resource_classes_class", "resource_classes")
    op.drop_table("resource_classes")
