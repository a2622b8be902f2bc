"""Committed events, at once, in every process: the wake-up behind webhook delivery and the
event stream, and the fan-out to this process's stream clients.

Every change records its event in the transactional outbox (``events``). Each event gets its
number (``seq``) in commit order: on SQLite as it is inserted (one writer at a time), on
PostgreSQL just after it commits, by whichever process gets there first. A process learns that
there is something new:
- from its own commits, at once (a callback of the metadata store; its webhook worker also
  waits on them);
- from other processes on PostgreSQL by ``LISTEN``: each transaction that records or numbers
  events, or asks for a deletion, sends ``NOTIFY`` as it commits;
- from other processes on SQLite by ``PRAGMA data_version``, which changes when another
  connection commits, read every ``SQLITE_POLL`` seconds (a counter read, no query);
- and, whatever happens to those, by looking again every ``FALLBACK_POLL`` seconds.

A commit elsewhere wakes this process's webhook worker and its deleter. While the process has
stream clients, the hub also reads the new events (numbering any that are not yet) and hands
them to each client's buffer. A buffer is bounded in bytes: a client that reads too slowly
overflows it and is cut off (``Subscriber.overflowed``), never allowed to grow memory. With no
clients, the hub reads nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from typing import Any

from tamstore.ops.context import Context
from tamstore.store.metadata.base import EVENTS_CHANNEL
from tamstore.waiting import woken
from tamstore.workers import log_failure

__all__ = ["EventHub", "Subscriber"]

log = logging.getLogger("tamstore.events")

FALLBACK_POLL = 1.0
SQLITE_POLL = 0.02
READ_BATCH = 500


class Subscriber:
    """One stream client's events waiting to be sent: at most ``limit`` bytes of them, or one
    event of any size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: collections.deque[Any] = collections.deque()
        self.bytes = 0
        self.ready = asyncio.Event()
        self.overflowed = False

    def offer(self, events: list[Any]) -> None:
        if not events:
            return
        for event in events:
            if self.overflowed:
                return
            size = len(event.payload)
            if self.events and self.bytes + size > self.limit:  # one event always fits
                self.overflowed = True
                self.events.clear()
                self.bytes = 0
            else:
                self.events.append(event)
                self.bytes += size
        self.ready.set()

    def take(self) -> list[Any]:
        events = list(self.events)
        self.events.clear()
        self.bytes = 0
        self.ready.clear()
        return events


class EventHub:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.subscribers: set[Subscriber] = set()
        self.last_seq = 0  # the newest numbered event this hub has handed out (or seen)
        self.wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Any = None

    async def start(self) -> None:
        """Starts following the database without reading it: ``subscribe`` catches up when the
        first client comes, so a process (the worker process above all) starts even while
        the database is away, and serves 503s until it is back."""
        self.ctx.store.on_events_written.append(self._committed_here)
        self._tasks.append(asyncio.create_task(self._run(), name="tamstore-event-hub"))
        if self.ctx.store.dialect == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen(), name="tamstore-event-listen"))
        elif self.ctx.store.dialect == "sqlite":
            self._tasks.append(asyncio.create_task(self._watch_sqlite(), name="tamstore-event-watch"))

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.ctx.store.on_events_written.remove(self._committed_here)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)

    async def subscribe(self, limit: int) -> Subscriber:
        """A new client's buffer, from the newest event on (the hub catches up first: with no
        clients it does not follow the log)."""
        if not self.subscribers:
            async with self.ctx.store.read() as tx:
                self.last_seq = max(self.last_seq, await tx.max_event_seq())
        subscriber = Subscriber(limit)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def _committed_here(self) -> None:
        """This process committed events: its own worker has been told (its own callback);
        the hub has work only if it has stream clients."""
        if self.subscribers:
            self.wake.set()

    def _committed_elsewhere(self) -> None:
        """Another process (or connection) committed: webhooks may be due, a deletion asked
        for, clients served."""
        self.ctx.wake_webhooks.set()
        self.ctx.wake_deleter.set()
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await woken(self.wake, FALLBACK_POLL)
            self.wake.clear()
            try:
                await self._pump()
            except Exception as exc:  # the database may be away a moment: try again at the next wake
                log_failure("event hub: reading new events", exc, log)

    async def _pump(self) -> None:
        if not self.subscribers:
            return  # the worker numbers and delivers for webhooks; nobody else to serve here
        store = self.ctx.store
        async with store.read() as tx:
            unnumbered = await tx.has_unsequenced_events()
        if unnumbered:
            async with store.write() as tx:
                await tx.sequence_events()
        while True:
            async with store.read() as tx:
                events = await tx.events_after(self.last_seq, READ_BATCH)
            top = (events[-1].seq or self.last_seq) if events else self.last_seq
            self.last_seq = max(self.last_seq, top)
            for subscriber in list(self.subscribers):
                subscriber.offer(events)
            if len(events) < READ_BATCH:
                return

    async def _listen(self) -> None:
        """PostgreSQL: a connection of its own LISTENing; reconnects when it is lost."""
        import asyncpg  # type: ignore[import-untyped]

        url = self.ctx.settings.database_url or ""
        while True:
            try:
                self._listener = await asyncpg.connect(url)
                lost = asyncio.Event()
                self._listener.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await self._listener.add_listener(EVENTS_CHANNEL, lambda *_: self._committed_elsewhere())
                self._committed_elsewhere()  # anything committed while not listening
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event hub: cannot LISTEN on PostgreSQL (%s); polling until it can", exc)
            finally:
                if self._listener is not None:
                    with contextlib.suppress(Exception):
                        await self._listener.close(timeout=2)
                    self._listener = None
            await asyncio.sleep(1.0)

    async def _watch_sqlite(self) -> None:
        """SQLite: ``PRAGMA data_version`` changes when another connection commits."""
        path = self.ctx.settings.sqlalchemy_url().split("///", 1)[-1]
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            version = None
            while True:
                try:
                    current = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    current = None
                if version is not None and current != version:
                    self._committed_elsewhere()
                version = current
                await asyncio.sleep(SQLITE_POLL)
        finally:
            conn.close()
