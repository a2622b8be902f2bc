"""Reads (and, on PostgreSQL, writes) run on connections kept from earlier ones. On SQLite each
read still sees every write committed before it began, whatever happened to the read before it
on the same connection; on PostgreSQL a kept connection that the server has closed is never
used again."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tamstore.config import Settings
from tamstore.domain.errors import Unavailable
from tamstore.store.metadata.sql import IDLE_READERS, MetadataStore, open_metadata_store
from tamstore.store.migrate import upgrade


def write_elsewhere(db: Path, value: str) -> None:
    """A write committed by another process's connection."""
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("INSERT OR REPLACE INTO service_info (key, value) VALUES ('description', ?)", (value,))
    finally:
        other.close()


@contextlib.asynccontextmanager
async def postgresql_store(settings: Settings) -> AsyncIterator[MetadataStore]:
    """A store on the test's PostgreSQL (the test is skipped on SQLite)."""
    if settings.database_url is None:
        pytest.skip("PostgreSQL's kept connections")
    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
        yield store
    finally:
        await store.close()


async def server_pid(tx: Any) -> int:
    """The PostgreSQL backend serving the transaction's connection."""
    return (await tx.conn.get_raw_connection()).driver_connection.get_server_pid()  # type: ignore[no-any-return]


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


async def test_postgresql_drops_a_kept_connection_its_server_closed(settings: Settings) -> None:
    async with postgresql_store(settings) as store:
        async with store.read() as tx:
            pid = await server_pid(tx)
        async with store.read() as tx:  # the same connection, kept
            assert await server_pid(tx) == pid
        async with store.write() as tx:  # as a restart or an administrator would
            await tx.conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)  # the loop sees the socket close
        for _ in range(3):  # every read is answered, none on the closed connection
            assert await description(store) is None
        with pytest.raises(RuntimeError):
            async with store.read() as tx:
                await tx.service_info()
                failed = tx.conn
                raise RuntimeError("the caller's own failure")
        assert all(kept is not failed for kept in store._idle_pg_readers)  # back to the pool, not kept
        assert await description(store) is None
        assert store.connections_in_use() == 0


async def test_postgresql_writes_on_kept_connections_survive_their_server_closing_them(settings: Settings) -> None:
    """Writes keep their connections too (no ping before each): one the server closed is
    dropped, and a write that fails leaves its connection to the pool, not kept."""
    async with postgresql_store(settings) as store:
        async with store.write() as tx:
            pid = await server_pid(tx)
        async with store.write() as tx:  # the same connection, kept
            assert await server_pid(tx) == pid
        async with store.read() as tx:
            await tx.conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)  # the loop sees the socket close
        for n in range(3):  # every write is answered, none on the closed connection
            async with store.write() as tx:
                await tx.set_service_info({"description": f"after {n}"})
        assert await description(store) == "after 2"
        with pytest.raises(RuntimeError):
            async with store.write() as tx:
                await tx.set_service_info({"description": "rolled back"})
                failed = tx.conn
                raise RuntimeError("the caller's own failure")
        assert all(kept is not failed for kept in store._idle_pg_writers)
        assert await description(store) == "after 2"
        assert store.connections_in_use() == 0


async def test_postgresql_a_statement_after_the_servers_parting_error_is_a_503(settings: Settings) -> None:
    """A server going away sends its parting FATAL to idle connections too. asyncpg takes it as
    an error to consume and, until it sees the socket close, refuses the next statement with an
    internal error ("another operation (2) is in progress"). On the driver directly (as the
    store's raw statements run) that is still the database going away: a 503, never a 500."""
    async with postgresql_store(settings) as store:
        outcomes = []
        for turns in range(3):
            async with store.read() as tx:
                pid = await server_pid(tx)
            async with store.write() as tx:
                await tx.conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            time.sleep(0.2)  # the FATAL and the socket's end arrive; the loop has read neither
            for _ in range(turns):
                await asyncio.sleep(0)
            try:
                async with store.read() as tx:  # the kept connection: its socket not yet seen closed
                    await tx.collected_by([str(uuid.uuid4())])
                outcomes.append("answered")
            except Unavailable as exc:
                outcomes.append(str(exc))
            await asyncio.sleep(0.2)
        assert any("another operation (2)" in outcome for outcome in outcomes), outcomes
        async with store.read() as tx:  # and the next read is on a sound connection
            assert await tx.collected_by(["x"]) == {"x": []}
        assert store.connections_in_use() == 0
