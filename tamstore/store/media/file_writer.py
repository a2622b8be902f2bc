"""Writing an upload to a file on a thread while the event loop goes on receiving it.

An upload arrives as a stream of chunks of about 64 KiB. Writing each from the event loop would
block it on the disk; handing each to a worker thread and waiting for it (as before) left the
socket unread while the disk was written, so receiving and writing took turns: 0.14 of a raw
write. Here the loop only queues chunks (no copy) and one thread writes them (``writev`` of
whatever has queued up) and fsyncs at the end, so the two overlap; the loop waits only when
``MAX_QUEUED`` bytes are waiting for the disk (back-pressure: a fast client cannot fill the
memory of a server with a slow disk).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["BackgroundFileWriter"]

# Bytes received and not yet written, per upload. Measured: 2 MiB made receiving and writing
# take turns again (0.24-0.28 of a raw write, against 1.0-2.2 with 16 MiB, alternating runs).
# The store writes at most UPLOADS_AT_ONCE uploads at once, so at most 512 MiB wait in all.
MAX_QUEUED = 16 << 20
IDLE_CHECK = 5.0  # seconds the writer waits for a chunk before checking the server is still there
MAX_IOV = 256  # chunks per writev (well under IOV_MAX, 1024 on Linux)
UPLOADS_AT_ONCE = 32
WRITERS = ThreadPoolExecutor(max_workers=UPLOADS_AT_ONCE, thread_name_prefix="tamstore-upload")


class BackgroundFileWriter:
    """Create ``path`` and write the chunks given to ``write`` to it on a thread of ``WRITERS``;
    ``close`` fsyncs it and reports any failure (an ``OSError`` such as a full disk). Use as
    ``async with``; leaving early (an exception) stops the thread and closes the file, and the
    caller removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._room = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._error: BaseException | None = None
        self._stopped = False
        self._finished: asyncio.Future[None] | None = None

    async def __aenter__(self) -> BackgroundFileWriter:
        self._finished = asyncio.wrap_future(WRITERS.submit(self._run))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is not None:  # stop the thread and let it close the file; the error goes on up
            self._stopped = True
            self._chunks.put(None)
            assert self._finished is not None
            await asyncio.gather(self._finished, return_exceptions=True)

    async def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not chunk:
            return
        with self._lock:
            self._queued += len(chunk)
        self._chunks.put(chunk)
        # Cleared here, on the loop's thread, a wake-up the writer thread schedules after this
        # point still runs after it: none is lost, and a stale one only means looking again.
        while self._queued > MAX_QUEUED and self._error is None:
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise self._error

    async def drain(self) -> None:
        """Wait until every chunk given to ``write`` so far is written (not yet fsynced)."""
        while self._queued > 0 and self._error is None:
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Wait until every chunk is written and the file fsynced; raise what went wrong."""
        self._chunks.put(None)
        assert self._finished is not None
        await self._finished
        if self._error is not None:
            raise self._error

    # -- on the writer thread --------------------------------------------------------------------

    def _next(self) -> bytes | None:
        """The next chunk (None: the end). Should the event loop be gone without ending the
        upload (a process stopped abruptly), give up rather than hold the process open."""
        while True:
            try:
                return self._chunks.get(timeout=IDLE_CHECK)
            except queue.Empty:
                if self._loop.is_closed():
                    raise ConnectionAbortedError("the server stopped during the upload") from None

    def _run(self) -> None:
        fd = -1
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            ending = False
            while not ending:
                got = [self._next()]
                while len(got) < MAX_IOV and got[-1] is not None:
                    try:
                        got.append(self._chunks.get_nowait())
                    except queue.Empty:
                        break
                ending = got[-1] is None  # nothing is queued after the end
                if self._stopped:
                    return
                written = _write_all(fd, [c for c in got if c is not None])
                with self._lock:
                    self._queued -= written
                    room = self._queued <= MAX_QUEUED
                if room:
                    self._loop.call_soon_threadsafe(self._room.set)
            os.fsync(fd)
        except BaseException as exc:
            self._error = exc
            self._loop.call_soon_threadsafe(self._room.set)  # a writer waiting for room learns of it
        finally:
            if fd >= 0:
                os.close(fd)


def _write_all(fd: int, chunks: list[bytes]) -> int:
    """``writev`` until every byte of ``chunks`` is written (a write may be partial)."""
    total = sum(len(c) for c in chunks)
    left = total
    views = [memoryview(c) for c in chunks]
    while left:
        n = os.writev(fd, views)
        left -= n
        while n and views:
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0] = views[0][n:]
                n = 0
    return total
