"""The database driver underneath the store: raw statements, placeholders, SQLite's write lock,
and what a driver's failure means to a client.

- ``InlineConnection``: on SQLite, statements run on the sqlite3 driver in the event loop's own
  thread (a thread hop per statement cost more than the statement); ``begin_immediate`` takes the
  write lock without blocking the loop.
- ``for_asyncpg``: the one placeholder translation. Raw SQL is written with ``?`` (positional)
  or ``:name`` placeholders, which sqlite3 takes as they are; asyncpg takes ``$1, $2, ...``.
- ``translate``: a driver error as the client should see it (503 for a database going away, 400
  for a value it cannot store), or None for a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from tamstore.domain.errors import BadRequest, TamsError, Unavailable

__all__ = [
    "BIG_WRITE_ROWS",
    "InlineConnection",
    "begin_immediate",
    "busy",
    "commit_off_loop",
    "for_asyncpg",
    "is_integrity_error",
    "short",
    "translate",
]


def is_integrity_error(exc: BaseException) -> bool:
    """sqlite3's IntegrityError, or any of asyncpg's integrity violations (SQLSTATE class 23),
    as they come from the raw drivers."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    return str(getattr(exc, "sqlstate", "") or "").startswith("23")


@functools.lru_cache(maxsize=256)
def for_asyncpg(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with its ``?`` or ``:name`` placeholders as asyncpg's ``$1, $2, ...``, and the
    parameter names in that order (empty for ``?``). Our SQL has no ``?`` or ``:word`` inside
    string literals; ``::`` casts are left alone."""
    if "?" in sql:
        parts = sql.split("?")
        return "".join(f"{part}${i}" if i < len(parts) else part for i, part in enumerate(parts, 1)), ()
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):(\w+)", number, sql), tuple(names)


class InlineConnection:
    """A synchronous SQLAlchemy connection behind the awaitable methods ``Tx`` uses.

    On SQLite every statement runs in the event loop's own thread. Each is a keyed lookup, a
    scan bounded by a page, or one batch's rows; handing it to aiosqlite's thread instead cost
    several thread switches per statement, which was most of the time of a small request.
    The one wait SQLite can impose, for another process's write lock, is taken without
    blocking the loop (:func:`_begin_immediate`).

    A transaction of many statements (a deletion chunk: ~30 ms) would hold the loop from its
    first statement to its last, and every other request waited that long; so before a
    statement, once the transaction has had the loop for ``SLICE`` seconds, it gives the loop a
    turn (other requests run on their own connections; this one keeps its transaction). At
    4 ms, pages of another Flow had a p99 of 10-11 ms during a deletion; at 2 ms, about 7 ms,
    the deletion as fast within noise (a turn with nothing else to run costs microseconds).
    """

    SLICE = 0.002

    def __init__(self, conn: Connection, scan_rows: int) -> None:
        self._conn = conn
        self.scan_rows = scan_rows  # rows a filtered listing's page looks at (``Queries._page``)
        self.dialect = conn.dialect
        self._since = time.perf_counter()

    async def turn(self) -> None:
        """Let the loop run other work if this transaction has had it for ``SLICE``."""
        if time.perf_counter() - self._since > self.SLICE:
            await asyncio.sleep(0)
            self._since = time.perf_counter()

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        await self.turn()
        return self._conn.execute(stmt, params)

    async def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        await self.turn()
        return self._conn.exec_driver_sql(sql, params)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._conn.begin_nested():
            yield

    async def driver_rows(self, sql: str, params: Any) -> list[Any]:
        """One statement on the sqlite3 connection underneath, past SQLAlchemy: its rows."""
        await self.turn()
        return self._driver().execute(sql, params).fetchall()  # type: ignore[no-any-return]

    async def driver_executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement for many rows on the sqlite3 connection underneath."""
        await self.turn()
        self._driver().executemany(sql, rows)

    def _driver(self) -> Any:
        return self._conn.connection.driver_connection


# A write transaction that changed at least this many rows commits from a thread: writing its
# pages to the log, and the checkpoint a commit makes once the log passes wal_autocheckpoint
# (50-100 ms), would hold the event loop that every other request runs on. Smaller commits
# (a single segment: about 1 ms) stay inline, where a thread hop would cost more.
BIG_WRITE_ROWS = 500


async def commit_off_loop(commit: Callable[[], None]) -> None:
    """Run ``commit`` in a thread and wait for it. Cancelled meanwhile, it still waits for the
    commit to finish before the cancellation goes on: the connection must not go back to its
    pool, or be closed, with a commit running on it."""
    job = asyncio.ensure_future(asyncio.to_thread(commit))
    cancelled = False
    while not job.done():
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        job.exception()  # retrieved: the cancellation is what the caller hears of
        raise asyncio.CancelledError
    job.result()


async def begin_immediate(dbapi_conn: Any, timeout: float = 30.0) -> None:
    """Take SQLite's write lock (``BEGIN IMMEDIATE``) without blocking the event loop: try at
    once, and while another process holds the lock, sleep asynchronously and try again."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout=30000")


def _is_disconnect(exc: DBAPIError) -> bool:
    return bool(getattr(exc, "connection_invalidated", False)) or isinstance(exc, OperationalError)


def busy(timeout: float) -> Unavailable:
    return Unavailable(f"the database is locked by another writer; gave up after {timeout:g} s")


# SQLSTATE classes: the server or the connection is going away (08 connection exception, 57
# operator intervention such as "database system is shutting down", 53 insufficient resources)
# is a 503; a value the database cannot take (22 data exception, 54 program limit exceeded such
# as "index row size exceeds maximum") is the client's: a 400. Checked on what asyncpg raises
# directly too (raw driver statements), not only on SQLAlchemy's wrappers.
_UNAVAILABLE_CLASSES = ("08", "57", "53")
_BAD_VALUE_CLASSES = ("22", "54")


def _sqlstate(exc: BaseException) -> str:
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state:
            return str(state)
    return ""


def translate(exc: BaseException) -> TamsError | None:
    """The client's view of a database failure, or None for one that is a bug (left as a 500)."""
    if isinstance(exc, TamsError):
        return None
    state = _sqlstate(exc)
    if state[:2] in _UNAVAILABLE_CLASSES:
        return Unavailable(f"metadata database unavailable: {short(exc)}")
    if state[:2] in _BAD_VALUE_CLASSES or isinstance(exc, OverflowError):
        return BadRequest(f"a value in the request cannot be stored: {short(exc)}")
    if isinstance(exc, TimeoutError):  # (asyncpg's command_timeout: see open_metadata_store)
        return Unavailable("metadata database unavailable: it did not answer within the statement timeout")
    if isinstance(exc, (OperationalError, OSError, sqlite3.OperationalError, SATimeoutError)):
        return Unavailable(f"metadata database unavailable: {short(exc)}")
    if isinstance(exc, DBAPIError) and _is_disconnect(exc):
        return Unavailable(f"metadata database unavailable: {short(exc)}")
    if type(exc).__module__.startswith("asyncpg") and type(exc).__name__ in (
        "InterfaceError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
    ):
        return Unavailable(f"metadata database unavailable: {short(exc)}")
    if _cut_off_mid_protocol(exc):
        return Unavailable(f"metadata database unavailable: {short(exc)}")
    return None


# asyncpg's protocol states that mean the server broke off the conversation: 1 failed, 2
# consuming an error (until a ReadyForQuery that a closing server never sends), 4 terminating.
_BROKEN_PROTOCOL = re.compile(r'another operation \([124]\) is in progress|protocol is in the "failed" state')


def _cut_off_mid_protocol(exc: BaseException) -> bool:
    """Whether asyncpg refused a statement because its connection's server had already sent
    its parting error. A server shutting down ("terminating connection due to administrator
    command") sends that FATAL to idle connections too; asyncpg takes it as an error to consume,
    and a statement issued before it has seen the socket close fails with "cannot switch to
    state 12; another operation (2) is in progress". The request was unlucky, not wrong: a 503.
    Any other of asyncpg's internal errors (two statements at once on one connection) is a bug."""
    seen: BaseException | None = exc
    for _ in range(4):  # SQLAlchemy's wrapper, its adapted error, asyncpg's own
        if seen is None:
            return False
        if type(seen).__name__ == "InternalClientError" and _BROKEN_PROTOCOL.search(str(seen)):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def short(exc: BaseException) -> str:
    """The first line of a driver error, or its kind when it says nothing (a timeout). A socket's
    error is told by its errno's words alone: asyncio's name the database's address and port
    ("Connect call failed ('10.0.0.5', 5432)"), which are the service's business, not a client's."""
    cause = getattr(exc, "orig", exc)
    if isinstance(cause, OSError):
        return os.strerror(cause.errno) if cause.errno and cause.errno > 0 else type(cause).__name__
    lines = str(cause).splitlines()
    return (lines[0] if lines and lines[0].strip() else type(cause).__name__)[:200]
