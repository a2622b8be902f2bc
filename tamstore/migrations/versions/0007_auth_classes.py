"""auth_key on Sources, Flows and webhooks, and auth_keys: auth_classes enforced in SQL

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Each resource's ``auth_classes`` tag is kept as one key on its row, and the distinct keys in
``auth_keys``; both are filled from the tags already stored, so that a policy configured later
applies to content tagged before this version. Webhooks also record their owner's groups.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tamstore.domain.access import AUTH_CLASSES_TAG, auth_key, classes_of

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    seen: set[tuple[str, str]] = set()
    for kind, table, owner in (
        ("flow", "flow_tags", "flow_id"),
        ("source", "source_tags", "source_id"),
        ("webhook", "webhook_tags", "webhook_id"),
    ):
        values: dict[str, list[str]] = {}
        found = conn.execute(
            sa.text(f"SELECT {owner}, value FROM {table} WHERE name = :tag"), {"tag": AUTH_CLASSES_TAG}
        )
        for owner_id, value in found:
            values.setdefault(owner_id, []).append(value)
        for owner_id, listed in values.items():  # (an array-valued tag has a row per value)
            key = auth_key(classes_of({AUTH_CLASSES_TAG: listed[0] if len(listed) == 1 else listed}))
            if key is not None:
                seen.add((kind, key))
                conn.execute(
                    sa.text(f"UPDATE {kind}s SET auth_key = :key WHERE id = :id"), {"key": key, "id": owner_id}
                )
    if seen:
        op.bulk_insert(keys, [{"kind": k, "auth_key": v} for k, v in sorted(seen)])


def downgrade() -> None:
    for table in ("flows", "sources"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("auth_key")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("auth_key")
        batch.drop_column("owner_admin")
        batch.drop_column("owner_groups")
    op.drop_table("auth_keys")
