"""The Alembic history builds exactly the schema tables.py describes, on every backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tamstore.config import Settings
from tamstore.store.metadata.sql import open_metadata_store
from tamstore.store.metadata.tables import metadata
from tamstore.store.migrate import upgrade


async def test_migrations_match_the_table_definitions(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
        await upgrade(store.engine)  # running it again is harmless

        def diff(sync_conn: Any) -> list[Any]:
            return compare_metadata(MigrationContext.configure(sync_conn), metadata)  # type: ignore[no-any-return]

        async with store.engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await store.close()
    assert differences == []
