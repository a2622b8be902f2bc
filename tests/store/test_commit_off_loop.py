"""A big SQLite commit runs in a thread, and a cancellation waits for it (driver.commit_off_loop)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tamstore.store.metadata.driver import commit_off_loop


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
