"""SQLite runs in the event loop's thread, so waiting for another process's write lock must
not block the loop: the writer retries asynchronously while everything else goes on."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tamstore.config import Settings
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
