"""The worker process of ``tamstore serve``: the background work (deletions, retention, garbage
collection, checkpoints, webhook delivery) beside the server rather than inside it.

That work runs in long stretches of statements and Python. On the server's event loop it took
turns with requests, and every request waited for its turns: pages of another Flow during an
86,400-segment deletion had a p99 of 7-8 ms against 1 ms at rest, and a server delivering
webhooks as fast as it could made a third of the changes it made without them. In a process of
its own it shares nothing with requests but the database, whose readers never wait for its
writer (WAL, or PostgreSQL), and the cores.

The server starts the process once its database is migrated, starts it again if it dies, and
stops it when the server stops. The process watches the server in turn: orphaned (the server
killed outright), it stops too. It hears of the server's commits as any other process does
(``streaming.EventHub``), and that wakes its deleter and its deliverer at once. Deliveries are
counted in the database, so the server's ``/metrics`` reports them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from tamstore.config import Settings
from tamstore.waiting import woken

__all__ = ["PARENT_ENV", "SETTINGS_ENV", "WorkerProcess", "until_stopped"]

log = logging.getLogger("tamstore.workers")

SETTINGS_ENV = "TAMSTORE_WORKER_PROCESS_SETTINGS"  # the server's settings, as JSON
PARENT_ENV = "TAMSTORE_WORKER_PROCESS_PARENT"  # the server's pid: gone, the worker stops
RESTART_SECONDS = 1.0  # between a worker's death and its replacement; doubled for each one in a
MAX_RESTART_SECONDS = 30.0  # row that lived less than this, up to this
STOP_SECONDS = 15.0  # a stop waits this long before it kills
PARENT_CHECK_SECONDS = 1.0


class WorkerProcess:
    """The server's side: start, supervise and stop one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="tamstore-worker-process", daemon=True)
        self._supervisor.start()

    def _spawn(self) -> None:
        env = {**os.environ, SETTINGS_ENV: self.settings.to_json(), PARENT_ENV: str(os.getpid())}
        with self._lock:
            if not self._stopping.is_set():
                self._proc = subprocess.Popen([sys.executable, "-m", "tamstore.worker_process"], env=env)

    def _supervise(self) -> None:
        quick = 0  # deaths in a row, each soon after its start (a database it cannot open...)
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            quick = quick + 1 if time.monotonic() - started < MAX_RESTART_SECONDS else 0
            delay = min(RESTART_SECONDS * 2 ** max(quick - 1, 0), MAX_RESTART_SECONDS)
            log.warning("worker process %d exited with status %s; starting another in %g s", proc.pid, code, delay)
            while not self._stopping.wait(delay):
                try:
                    self._spawn()
                    break
                except OSError as exc:  # out of processes or memory, for a moment: try again
                    log.warning("cannot start a worker process (%s); trying again", exc)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until_stopped(parent: int | None = None) -> None:
    """Return once told to stop (SIGTERM, SIGINT) or, given the pid of the server that started
    this process, once that server is gone (this process is re-parented)."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    while parent is None or os.getppid() == parent:
        if await woken(stopped, PARENT_CHECK_SECONDS):
            return
    log.warning("worker process: the server (pid %d) is gone; stopping", parent)


async def _run(settings: Settings, parent: int) -> None:
    from tamstore.startup import open_context
    from tamstore.workers import run_background

    ctx = await open_context(settings)
    try:
        await run_background(ctx, until_stopped(parent))
    finally:
        await ctx.store.close()


def main() -> None:
    """The worker process's entry point (``python -m tamstore.worker_process``), with the
    server's settings and pid in its environment."""
    from tamstore.api.observability import configure_logging

    settings = dataclasses.replace(Settings.from_json(os.environ[SETTINGS_ENV]), migrate=False)
    configure_logging(settings.log_format)
    asyncio.run(_run(settings, int(os.environ[PARENT_ENV])))


if __name__ == "__main__":
    main()
