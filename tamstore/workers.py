"""Background work: flow-delete-requests, collection of unused allocations, the recovery-window
purge, webhook delivery, retention (AppNote 0019), and (SQLite) checkpoints of the write-ahead log.
Runs in a worker process beside ``tamstore serve`` by default (``tamstore.worker_process``), in
the server process with ``--no-worker-process``, or alone as ``tamstore worker`` beside stateless
API replicas; several workers share a store safely, by leases."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from tamstore.delivery import Deliverer
from tamstore.domain.errors import Unavailable
from tamstore.ops import analytics, deletion, retention
from tamstore.ops.context import Context
from tamstore.ops.storage import collect_expired_allocations
from tamstore.waiting import woken

__all__ = ["Workers", "log_failure", "run_background"]

log = logging.getLogger("tamstore.workers")

HOUSEKEEPING_SECONDS = 60.0
POLL_SECONDS = 0.5
STOP_SECONDS = 10.0
# Four times a second: a 1,000-segment batch writes about 1 MB of log, so at 25 batches a second
# a checkpoint every second left the log to reach wal_autocheckpoint (32 MB) between two, and
# every 30th commit copied it itself (90-100 ms; bulk registration 22.6k -> 24.7-25.2k seg/s).
# A checkpoint of a log already copied costs a connection and a PRAGMA.
CHECKPOINT_SECONDS = 0.25


class Workers:
    def __init__(self, ctx: Context, *, housekeeping_seconds: float = HOUSEKEEPING_SECONDS) -> None:
        self.ctx = ctx
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = ctx.wake_deleter
        self.housekeeping_seconds = housekeeping_seconds
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.deliverer = Deliverer(self.ctx, self.owner)
        self._tasks = [
            asyncio.create_task(self._deletions(), name="tamstore-deletions"),
            asyncio.create_task(self._webhooks(), name="tamstore-webhooks"),
            asyncio.create_task(
                self._every(self.housekeeping_seconds, self.housekeeping), name="tamstore-housekeeping"
            ),
        ]
        if self.ctx.settings.retention_interval > 0:
            self._tasks.append(asyncio.create_task(self._retention(), name="tamstore-retention"))
        if self.ctx.store.dialect == "sqlite":
            self._tasks.append(
                asyncio.create_task(self._every(CHECKPOINT_SECONDS, self.ctx.store.checkpoint), name="tamstore-wal")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a stuck task must not hold up shutdown
            await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
        await self.deliverer.close()

    async def housekeeping(self) -> None:
        removed = await collect_expired_allocations(self.ctx)
        if removed:
            log.info("garbage-collected %d unused allocated objects", removed)
        if self.ctx.settings.recovery_window > 0:
            await deletion.purge_recovery_window(self.ctx)
        await analytics.learn_sizes(self.ctx)
        await analytics.record_usage_day(self.ctx)

    async def _deletions(self) -> None:
        while True:
            try:
                while await deletion.run_next_delete_request(self.ctx, self.owner):
                    pass
            except Exception as exc:  # keep going; the request stays leased and is retried later
                log_failure("flow deletion", exc)
            await woken(self.wake, POLL_SECONDS)
            self.wake.clear()

    async def _retention(self) -> None:
        """A pass every ``retention_interval`` seconds, by whichever worker holds the lease; at
        once again while a backlog is being worked off (each pass deletes a bounded amount)."""
        interval = float(self.ctx.settings.retention_interval)
        while True:
            wait = interval
            try:
                done = await retention.retention_pass(self.ctx, self.owner)
                if done is not None and done.backlog:
                    wait = 0.0
            except Exception as exc:
                log_failure("retention pass", exc)
            await asyncio.sleep(wait)

    async def _webhooks(self) -> None:
        """Deliver as soon as events are committed (this process's commits, and other
        processes' as the event hub hears of them, both set ``wake_webhooks``); otherwise look
        every POLL_SECONDS (for retries that have come due)."""
        wake = self.ctx.wake_webhooks
        self.ctx.store.on_events_written.append(wake.set)
        try:
            while True:
                wake.clear()
                try:
                    while await self.deliverer.run_once():
                        pass
                except Exception as exc:
                    log_failure("webhook delivery", exc)
                await woken(wake, POLL_SECONDS)
        finally:
            with contextlib.suppress(ValueError):
                self.ctx.store.on_events_written.remove(wake.set)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                log_failure(f"background job {job.__name__}", exc)


def log_failure(what: str, exc: Exception, logger: logging.Logger = log) -> None:
    """A background job's failure, logged. The database being away (a restart, an outage) is
    expected and retried: one line each time, not a traceback at every wake-up of every job."""
    if isinstance(exc, Unavailable):
        logger.warning("%s failed, will try again: %s", what, exc)
    else:
        logger.error("%s failed", what, exc_info=exc)


async def run_background(ctx: Context, until: Awaitable[None]) -> None:
    """The background work of a process that does nothing else (the worker process beside
    ``serve``, ``tamstore worker``) until ``until`` completes. An event hub wakes it when
    other processes commit: a new deletion or new events are taken up at once."""
    from tamstore.streaming import EventHub

    # What start-up built lives as long as the process: out of the garbage collector's sight,
    # as in the server (``app.create_app``), so that collections amid a deletion's many
    # short-lived objects do not walk it all again (5-10% of an 86,400-segment deletion).
    gc.freeze()
    hub = EventHub(ctx)
    await hub.start()
    workers = Workers(ctx)
    workers.start()
    try:
        await until
    finally:
        await workers.stop()
        await hub.stop()
