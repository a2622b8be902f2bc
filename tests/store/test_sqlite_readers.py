"""SQLite reads run on connections kept from earlier reads: each read still sees every write
committed before it began, whatever happened to the read before it on the same connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tamstore.store.metadata.sql import IDLE_READERS, MetadataStore, open_metadata_store
from tamstore.store.migrate import upgrade


def write_elsewhere(db: Path, value: str) -> None:
    """A write committed by another process's connection."""
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("INSERT OR REPLACE INTO service_info (key, value) VALUES ('description', ?)", (value,))
    finally:
        other.close()


async def description(store: MetadataStore) -> str | None:
    async with store.read() as tx:
        return (await tx.service_info()).get("description")


async def test_a_kept_connection_sees_writes_made_after_its_last_read(tmp_path: Path) -> None:
    db = tmp_path / "tamstore.db"
    store = open_metadata_store(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade(store.engine)
        async with store.write() as tx:
            await tx.set_service_info({"description": "first"})
        assert await description(store) == "first"
        write_elsewhere(db, "second")
        assert await description(store) == "second"
        with pytest.raises(RuntimeError):  # a read that fails part-way leaves no snapshot behind
            async with store.read() as tx:
                await tx.service_info()
                raise RuntimeError("the caller's own failure")
        write_elsewhere(db, "third")
        assert await description(store) == "third"
        assert store.connections_in_use() == 0

        async def held() -> None:  # more reads at once than are kept afterwards
            async with store.read() as tx:
                await tx.service_info()
                await asyncio.sleep(0.01)

        await asyncio.gather(*(held() for _ in range(IDLE_READERS + 4)))
        assert len(store._idle_readers) == IDLE_READERS and store.connections_in_use() == 0
    finally:
        await store.close()
