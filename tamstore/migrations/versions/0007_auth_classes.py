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

from tamstore.domain.access import auth_key, classes_of

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
    keys = op.create_table(
        "auth_keys",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("auth_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "auth_key"),
    )
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("owner_groups", sa.Text(), nullable=True))
        batch.add_column(sa.Column("owner_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("auth_key", sa.Text(), nullable=True))
    for table in ("flows", "sources"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("auth_key", sa.Text(), nullable=True))
    conn = op.get_bind()
    rows = []
    seen_keys: set[tuple[str, str]] = set()
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
            found_classes = classes_of({"auth_classes": tag})
            for name in found_classes:
                rows.append({"kind": kind, "resource_id": owner_id, "auth_class": name})
            key = auth_key(found_classes)
            if key is not None:
                seen_keys.add((kind, key))
                conn.execute(
                    sa.text(f"UPDATE {kind}s SET auth_key = :key WHERE id = :id"), {"key": key, "id": owner_id}
                )
    if rows:
        op.bulk_insert(classes, rows)
    if seen_keys:
        op.bulk_insert(keys, [{"kind": k, "auth_key": v} for k, v in sorted(seen_keys)])


def downgrade() -> None:
    for table in ("flows", "sources"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("auth_key")
    op.drop_table("auth_keys")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("auth_key")
        batch.drop_column("owner_admin")
        batch.drop_column("owner_groups")
    op.drop_index("ix_resource_classes_class", "resource_classes")
    op.drop_table("resource_classes")
