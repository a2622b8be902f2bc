"""``tamstore.waiting.woken``: the background loops' sleep between rounds."""

from __future__ import annotations

import asyncio

import pytest

from tamstore.waiting import woken


async def test_woken_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await woken(event, 5) is True


async def test_a_cancellation_arriving_with_the_event_is_not_lost() -> None:
    """The event set and the task cancelled at the same moment: the task ends cancelled.
    (``asyncio.wait_for`` on Python 3.11 returned True instead, and a loop built on it went
    round again, holding whoever stopped it for a whole poll.)"""

    async def loop(event: asyncio.Event, rounds: list[int]) -> None:
        while True:
            await woken(event, 30)
            event.clear()
            rounds.append(1)

    for _ in range(20):
        event, rounds = asyncio.Event(), []
        task = asyncio.create_task(loop(event, rounds))
        await asyncio.sleep(0)  # the task is waiting
        event.set()
        await asyncio.sleep(0)  # the waiter learns of the event...
        task.cancel()  # ...and the cancellation comes before the task runs again
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
