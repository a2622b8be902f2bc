"""SQLite runs in the event loop's thread, so waiting for another process's write lock must
not block the loop: the writer retries asynchronously while everything else goes on."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from tamstore.config import Settings
from tamstore.store.metadata.driver import InlineConnection
from tamstore.testing import app_client
from tests.conftest import put_flow


async def test_a_writer_waits_for_another_processes_lock_while_reads_are_answered(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with app_client(settings) as client:
        flow = await put_flow(client, label="before")
        other = sqlite3.connect(settings.data_dir / "tamstore.db", isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # as another process's writer would
        try:
            write = asyncio.create_task(client.put(f"/flows/{flow['id']}/label", json="after"))
            await asyncio.sleep(0.3)
            assert not write.done()
            r = await client.get(f"/flows/{flow['id']}")  # the loop is free meanwhile
            assert r.status_code == 200 and r.json()["label"] == "before"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await asyncio.wait_for(write, 10)).status_code == 204
        assert (await client.get(f"/flows/{flow['id']}")).json()["label"] == "after"


async def test_queued_writes_all_give_up_within_the_busy_timeout(tmp_path: Path) -> None:
    """Five writes queued behind another process's lock each answer 503 within the busy timeout
    of their own arrival, not one timeout after another; /readyz says why meanwhile."""
    settings = Settings(data_dir=tmp_path / "data", db_busy_timeout=1)
    async with app_client(settings) as client:
        flow = await put_flow(client, label="before")
        other = sqlite3.connect(settings.data_dir / "tamstore.db", isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            writes = [client.put(f"/flows/{flow['id']}/label", json=f"w{i}") for i in range(5)]
            answers = await asyncio.wait_for(asyncio.gather(*writes), 10)
            elapsed = loop.time() - start
            assert [r.status_code for r in answers] == [503] * 5
            assert all("locked" in r.json()["summary"] and r.headers["retry-after"] for r in answers)
            assert elapsed < 3, elapsed  # one timeout (1 s) plus slack, not five in a row
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "locked" in ready.json()["checks"]["database"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await client.put(f"/flows/{flow['id']}/label", json="after")).status_code == 204
        assert (await client.get("/readyz")).status_code == 200


async def test_a_long_write_transaction_lets_other_requests_run_between_its_statements(tmp_path: Path) -> None:
    """SQLite statements run in the loop's thread: a transaction that has held the loop for
    InlineConnection.SLICE gives other work a turn before its next statement (a deletion
    chunk held every request for ~30 ms before)."""
    settings = Settings(data_dir=tmp_path / "data")
    async with app_client(settings) as client:
        store = client.app.state.ctx.store  # type: ignore[attr-defined]
        ran: list[str] = []

        async def other() -> None:
            ran.append("other")

        async with store.write() as tx:
            await tx._driver_rows("SELECT 1", ())
            asyncio.get_running_loop().create_task(other())
            time.sleep(InlineConnection.SLICE * 2)  # the transaction holds the loop
            await tx._driver_rows("SELECT 1", ())
            assert ran == ["other"]  # the other task ran before that statement
