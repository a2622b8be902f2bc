"""Threads of their own for blocking calls that wait on someone else: an S3 bucket (boto3),
a name server (``getaddrinfo``).

asyncio's default executor is the wrong place for those: it is small (the cores + 4 threads) and
shared with work that every request may wait for (SQLite's big commits, uploads installed on
disk, password checks). An S3 endpoint that accepts connections and then never answers (a frozen
host, a stuck proxy), or a name server that never answers for a name a client chose, would hold
those threads for as long as the library waits, and every request needing one behind them. So
each such kind of call has a lane of a few threads: a silent service costs only the requests
that use it, and those get the lane's ``busy`` error when no thread frees up in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["ThreadLane"]

T = TypeVar("T")


class ThreadLane:
    """At most ``threads`` blocking calls at once; a call waits at most
    ``wait`` seconds for its turn, then raises ``busy(why)``."""

    def __init__(self, name: str, busy: Callable[[str], Exception], *, threads: int = 8, wait: float = 10.0) -> None:
        self.name = name
        self.threads = threads
        self.wait = wait
        self._busy = busy
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"tamstore-{name}")
        # A semaphore belongs to the loop it first waits on; tests (and `serve --processes`'
        # start-up) run more than one loop in a process, so each gets its own.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.threads)
        try:
            await asyncio.wait_for(slots.acquire(), self.wait)
        except TimeoutError:
            raise self._busy(f"{self.threads} calls to it have not answered for {self.wait:g} s") from None
        try:
            future = self._pool.submit(functools.partial(fn, *args, **kwargs))
        except BaseException:
            slots.release()
            raise
        # The turn ends when the thread's call does, not when its caller stops waiting (a
        # client gone away): otherwise a silent bucket could gather any number of threads.
        future.add_done_callback(lambda _: _release_from_thread(loop, slots))
        return await asyncio.wrap_future(future)


def _release_from_thread(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for a turn
        loop.call_soon_threadsafe(slots.release)
