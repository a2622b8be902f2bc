"""Waiting for an asyncio.Event, or a time limit, whichever comes first.

The background loops (workers, the event hub, the worker process's watch on its server) sleep
this way between rounds. They used ``asyncio.wait_for``, which on Python 3.11 returns normally
when the event is set at the moment its task is cancelled: the cancellation is lost, the loop
goes round again, and whoever stops it waits out its time limit (the event hub held one test
teardown in three for 5 s). ``asyncio.timeout`` lets a cancellation through whatever else
happens at that moment.
"""

from __future__ import annotations

import asyncio

__all__ = ["woken"]


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set (True) or ``seconds`` pass (False)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
