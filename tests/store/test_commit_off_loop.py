"""A big SQLite commit runs in a thread, and a cancellation waits for it (driver.commit_off_loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from tamstore.config import Settings
from tamstore.store.metadata import sql
from tamstore.store.metadata.driver import commit_off_loop
from tamstore.testing import app_client
from tests.conftest import add_segments, put_flow


async def test_the_loop_runs_while_a_commit_does_and_a_cancellation_waits_for_it() -> None:
    release, finished = threading.Event(), threading.Event()

    def commit() -> None:  # a commit checkpointing a long log: it takes a while
        release.wait(5)
        finished.set()

    task = asyncio.create_task(commit_off_loop(commit))
    ticks = 0
    for _ in range(20):  # the loop is free meanwhile
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 20 and not task.done()
    task.cancel()
    await asyncio.sleep(0.02)
    assert not task.done()  # cancelled, but the connection is still committing: wait
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_a_failed_commit_is_raised_to_the_writer() -> None:
    def commit() -> None:
        time.sleep(0.01)
        raise OSError("disk I/O error")

    with pytest.raises(OSError, match="disk I/O error"):
        await commit_off_loop(commit)


async def test_sqlite_commits_a_big_write_off_the_loop_and_a_small_one_inline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allocating 1,000 Objects and registering 1,000 segments each change thousands of rows:
    their commits go to a thread; a single segment's (and its Object's) stay on the loop. All
    are committed."""
    if settings.database_url:
        pytest.skip("SQLite's commits only")
    off_loop: list[int] = []

    async def spy(commit: Callable[[], None]) -> None:
        off_loop.append(1)
        await commit_off_loop(commit)

    monkeypatch.setattr(sql, "commit_off_loop", spy)
    async with app_client(settings) as client:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0])
        assert off_loop == []
        await add_segments(client, flow["id"], list(range(1, 1001)))
        assert off_loop == [1, 1]  # the allocation, then the registration
        stored = (await client.get(f"/x-tamstore/analytics/flows/{flow['id']}/timeline")).json()
        assert stored["segments"] == 1001
