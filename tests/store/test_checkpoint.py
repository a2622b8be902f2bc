"""SQLite's write-ahead log is checkpointed by the background workers, off the request path."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tamstore.config import Settings
from tamstore.testing import app_client
from tests.conftest import add_segments, put_flow


async def test_commits_leave_the_log_and_the_checkpoint_job_moves_it_into_the_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with app_client(settings) as client:
        store = client.app.state.ctx.store  # type: ignore[attr-defined]
        db = settings.data_dir / "tamstore.db"
        flow = await put_flow(client)
        await store.checkpoint()
        before = db.stat().st_size
        await add_segments(client, flow["id"], list(range(300)))
        assert db.stat().st_size == before  # the commits wrote only to the log
        await store.checkpoint()
        assert db.stat().st_size > before
        async with store.read() as tx:
            assert (await tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 8000


async def test_workers_checkpoint_every_second(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with app_client(settings, workers=True) as client:
        db = settings.data_dir / "tamstore.db"
        flow = await put_flow(client)
        await asyncio.sleep(1.5)
        before = db.stat().st_size
        await add_segments(client, flow["id"], list(range(300)))
        for _ in range(30):
            if db.stat().st_size > before:
                break
            await asyncio.sleep(0.1)
        assert db.stat().st_size > before
