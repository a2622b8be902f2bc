"""ThreadLane (``tamstore/threads.py``): blocking calls that wait on someone else, on threads of
their own. A silent service must not gather threads beyond the lane's, even when the requests
that called it give up."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tamstore.threads import ThreadLane


async def test_a_turn_lasts_as_long_as_its_thread_not_its_caller() -> None:
    """A caller that goes away (a client gone, a timeout) leaves its call running in its thread:
    the lane's turn is the thread's until the call returns, so the next caller waits for it and
    is refused after ``wait``, rather than queueing behind it without bound."""
    lane = ThreadLane("test", RuntimeError, threads=1, wait=0.2)
    release = threading.Event()
    try:
        first = asyncio.ensure_future(lane.run(release.wait, 10))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(RuntimeError, match="have not answered for 0.2 s"):
            await asyncio.wait_for(lane.run(sum, [1]), 2)
    finally:
        release.set()
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(lane.run(sum, [1, 2]), 2) == 3
