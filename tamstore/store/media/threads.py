"""Blocking calls to a storage service, on threads of the backend's own.

boto3 blocks, so its calls run in threads. asyncio's default executor is the wrong place for
them: it is small (the cores + 4 threads) and shared with work that every request may wait for
(SQLite's big commits, uploads installed on disk, password checks). An S3 endpoint that accepts
connections and then never answers (a frozen host, a stuck proxy) would hold those threads for
as long as botocore waits, and every request needing one behind them. So each S3 backend has a
few threads of its own: a silent bucket costs only the requests that use it, and those get a
503 when no thread frees up in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tamstore.domain.errors import Unavailable

__all__ = ["StorageThreads"]

T = TypeVar("T")


class StorageThreads:
    """At most ``threads`` blocking calls at once for one backend; a call waits at most
    ``wait`` seconds for its turn, then raises ``busy(...)`` (an ``Unavailable``, a 503)."""

    def __init__(self, name: str, busy: Callable[[str], Unavailable], *, threads: int = 8, wait: float = 10.0) -> None:
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
