"""The metadata store: ``MetadataStore.read()`` and ``.write()`` open a transaction and hand out a
``Tx``, whose methods speak in rows and domain values. Everything one API operation does happens in
one ``Tx``, so an operation is all-or-nothing.

``Tx`` is the one facade the operations use. Its queries live with their aggregate, one module
each: ``catalog`` (service, Sources, Flows, Profiles), ``objects`` (Objects, instances, references
and the storage usage they make), ``segments``, ``deletion`` (delete requests, recovery window),
``events`` (webhooks, the outbox) and ``usage`` (analytics). ``timeline`` owns adding and removing
segments with all their derived state. Rows leave the store as the types in ``rows``; ``base``
holds what the modules share and ``driver`` the raw execution.

On SQLite, writers are serialised by an asyncio lock and ``BEGIN IMMEDIATE`` (taken without
blocking the loop) so that readers (WAL) never wait for them and writers never see SQLITE_BUSY.
PostgreSQL goes through asyncpg. Every query is a keyed lookup or an indexed range scan bounded by
a page size.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from tamstore.domain.errors import Unavailable
from tamstore.store.metadata.base import PAGES_TOKEN, SCAN_ROWS
from tamstore.store.metadata.driver import (
    BIG_WRITE_ROWS,
    InlineConnection,
    begin_immediate,
    busy,
    commit_off_loop,
    short,
    translate,
)
from tamstore.store.metadata.events import EventQueries
from tamstore.store.metadata.objects import Instance
from tamstore.store.metadata.retention import RetentionQueries
from tamstore.store.metadata.segments import segment_range_clause
from tamstore.store.metadata.timeline import TimelineWrites
from tamstore.store.metadata.usage import UsageQueries

__all__ = ["Instance", "MetadataStore", "Tx", "open_metadata_store", "segment_range_clause"]


IDLE_READERS = 8  # connections kept between reads (more are opened, and closed, as needed)
_PG_BEGIN = "SELECT 1"  # a write transaction's first statement on PostgreSQL (see ``write``)


class Tx(TimelineWrites, EventQueries, UsageQueries, RetentionQueries):
    """One transaction on the metadata store: every aggregate's queries on one connection."""


class MetadataStore:
    """Opens transactions on one database. Create with :func:`open_metadata_store`."""

    def __init__(
        self,
        engine: AsyncEngine,
        sync_engine: Engine | None = None,
        read_engine: AsyncEngine | None = None,
        busy_timeout: float = 30.0,
        scan_rows: int = SCAN_ROWS,
    ) -> None:
        self.engine = engine
        self.sync_engine = sync_engine  # SQLite: every transaction runs on it, in the loop's thread
        self.read_engine = read_engine  # PostgreSQL: autocommit connections for read()
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.busy_timeout = busy_timeout  # seconds a write may wait for its turn before a 503
        self.scan_rows = scan_rows  # SQLite: rows a filtered listing's page looks at, at most
        self._blocked_since: float | None = None
        self._lookups: Any = None  # SQLite: a connection kept for one-statement reads (pages_token)
        self._idle_readers: list[Connection] = []  # SQLite: connections kept for the next reads
        self._idle_pg_readers: list[AsyncConnection] = []  # PostgreSQL: the same
        self._idle_pg_writers: list[AsyncConnection] = []  # PostgreSQL: kept between writes
        # No more writers kept than the write pool's own size, so that its overflow stays free.
        self._keep_writers: int = getattr(engine.pool, "size", lambda: 0)()
        # Set after a transaction that recorded events commits: wakes this process's webhook worker.
        # Called after every commit that recorded events (the webhook worker's and the event
        # hub's wake-up).
        self.on_events_written: list[Callable[[], None]] = []
        # Record every change's event, webhooks or not (the event stream replays them).
        self.record_all_events = False

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        try:
            if self.sync_engine is not None:
                async with self._sqlite_read() as tx:
                    yield tx
                return
            # A connection kept from an earlier read (see ``_kept_pg``).
            async with _kept_pg(self.read_engine or self.engine, self._idle_pg_readers, IDLE_READERS) as conn:
                yield Tx(conn)
        except Exception as exc:
            translated = translate(exc)
            if translated is None:
                raise
            raise translated from exc

    @contextlib.asynccontextmanager
    async def _sqlite_read(self) -> AsyncIterator[Tx]:
        """A read on a connection kept from an earlier read: a pool checkout and check-in, with
        a Connection object made each time, cost a fifth of a page's store time (the page
        itself being one statement)."""
        assert self.sync_engine is not None
        sync_conn = self._idle_readers.pop() if self._idle_readers else self.sync_engine.connect()
        try:
            yield Tx(InlineConnection(sync_conn, self.scan_rows))  # type: ignore[arg-type]
        finally:
            self._keep_reader(sync_conn)

    def _keep_reader(self, conn: Connection) -> None:
        """Keep a read's connection for the next read, its snapshot ended; one that cannot even
        roll back (the database went away under it) is dropped."""
        try:
            conn.rollback()
        except Exception:
            conn.invalidate()
            conn.close()
            return
        if len(self._idle_readers) < IDLE_READERS:
            self._idle_readers.append(conn)
        else:
            conn.close()

    async def pages_token(self, flow_id: str) -> int | None:
        """The Flow's pages token (see :meth:`Tx.pages_token`), read on its own, as cheaply as the
        database allows: it is read before every segment page. On SQLite it runs on a connection
        kept for it (in the loop's thread and with no await in between, so no two reads ever share
        it; fetchall ends the statement, and so its snapshot, at once): a pool checkout cost four
        times the query. Elsewhere it is an ordinary read."""
        if self.sync_engine is None:
            async with self.read() as tx:
                return await tx.pages_token(flow_id)
        try:
            if self._lookups is None:
                self._lookups = self.sync_engine.raw_connection()
            rows = self._lookups.driver_connection.execute(PAGES_TOKEN, (flow_id,)).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"metadata database unavailable: {short(exc)}") from exc
        return rows[0][0] if rows else None

    @property
    def writes_blocked(self) -> bool:
        """True while writes are giving up on a database locked elsewhere (for /readyz)."""
        return self._blocked_since is not None

    async def _take_write_lock(self, deadline: float) -> None:
        """This process's turn to write, within the busy timeout counted from the request: a
        queue of writers behind another process's lock all give up on time, not one after
        another."""
        assert self._write_lock is not None
        try:
            await asyncio.wait_for(self._write_lock.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._blocked_since = self._blocked_since or time.monotonic()
            raise busy(self.busy_timeout) from None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        deadline = time.monotonic() + self.busy_timeout
        if self._write_lock is not None:
            await self._take_write_lock(deadline)
        try:
            try:
                if self.sync_engine is not None:
                    with self.sync_engine.connect() as sync_conn:
                        sqlite_conn = sync_conn.connection.driver_connection
                        assert sqlite_conn is not None
                        try:
                            await begin_immediate(sqlite_conn, max(0.0, deadline - time.monotonic()))
                        except sqlite3.OperationalError as exc:
                            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                                raise
                            self._blocked_since = self._blocked_since or time.monotonic()
                            raise busy(self.busy_timeout) from exc
                        self._blocked_since = None
                        # The transaction is open; tell SQLAlchemy, whose own BEGIN is skipped.
                        changes = sqlite_conn.total_changes
                        trans = sync_conn.execution_options(tamstore_begun=True).begin()
                        try:
                            tx = Tx(InlineConnection(sync_conn, self.scan_rows))  # type: ignore[arg-type]
                            tx.record_all_events = self.record_all_events
                            yield tx
                        except BaseException:
                            trans.rollback()
                            raise
                        if sqlite_conn.total_changes - changes >= BIG_WRITE_ROWS:
                            await commit_off_loop(trans.commit)
                        else:
                            trans.commit()
                else:
                    kept = _kept_pg(self.engine, self._idle_pg_writers, self._keep_writers)
                    async with kept as conn, conn.begin():
                        # SQLAlchemy's asyncpg adapter sends BEGIN only with its own first
                        # statement, and statements run on the driver underneath before it would
                        # each commit on their own: begin for real before any of them.
                        await conn.exec_driver_sql(_PG_BEGIN)
                        tx = Tx(conn)
                        tx.record_all_events = self.record_all_events
                        yield tx
                if tx.wrote_events:
                    for callback in self.on_events_written:
                        callback()
            except Exception as exc:
                translated = translate(exc)
                if translated is None:
                    raise
                raise translated from exc
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    async def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file, in a thread of its own, so
        that commits on the request path seldom do it themselves (only past
        ``wal_autocheckpoint``). The background workers call this every second."""
        if self.sync_engine is not None:
            await asyncio.to_thread(_checkpoint, str(self.sync_engine.url.database))

    def pools(self) -> list[Any]:
        """The connection pools in use (for metrics)."""
        return [e.pool for e in (self.engine, self.read_engine, self.sync_engine) if e is not None]

    def connections_in_use(self) -> int:
        """Connections serving a transaction now (those kept idle between transactions are not)."""
        checked_out = sum(getattr(p, "checkedout", lambda: 0)() for p in self.pools())
        kept = len(self._idle_readers) + len(self._idle_pg_readers) + len(self._idle_pg_writers)
        return int(checked_out) - kept

    def drop_idle_connections(self) -> None:
        """Close the connections kept between reads: the next reads open new ones."""
        while self._idle_readers:
            self._idle_readers.pop().close()

    async def close(self) -> None:
        self.drop_idle_connections()
        for idle in (self._idle_pg_readers, self._idle_pg_writers):
            while idle:
                await _drop(idle.pop())
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None
        if self.read_engine is not None:
            await self.read_engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        await self.engine.dispose()


def open_metadata_store(
    url: str,
    *,
    pool_size: int = 10,
    busy_timeout: float = 30.0,
    statement_timeout: float | None = None,
    scan_rows: int = SCAN_ROWS,
) -> MetadataStore:
    """Open the store for a SQLAlchemy async URL (``sqlite+aiosqlite:///...`` or
    ``postgresql+asyncpg://...``). ``statement_timeout`` (PostgreSQL): seconds a statement may
    wait for its answer (asyncpg's ``command_timeout``), so that a server that hangs without
    closing its connections (stopped, partitioned away) costs a request a 503, not a hang."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        # Transactions: the plain sqlite3 driver in the event loop's thread (_InlineConnection);
        # the aiosqlite engine above remains for migrations.
        # The pool never blocks (unbounded overflow): a blocked loop thread could not give back
        # the connection it waits for.
        sync_engine = create_engine(
            url.replace("+aiosqlite", ""),
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=-1,
            # A Connection rolls back its own transaction when closed; no second reset.
            pool_reset_on_return=None,
            connect_args={"check_same_thread": False},
        )
        for each in (engine.sync_engine, sync_engine):
            event.listen(each, "connect", _sqlite_pragmas)
            event.listen(each, "begin", _sqlite_begin)
        return MetadataStore(engine, sync_engine, busy_timeout=busy_timeout, scan_rows=scan_rows)
    # PostgreSQL: writes on one pool; reads on another whose connections are in autocommit for
    # good. Under READ COMMITTED each statement takes its own snapshot even inside a transaction,
    # so a read transaction's BEGIN and ROLLBACK (and, per checkout, the isolation level's set and
    # reset) were round trips that bought nothing: a 100-flow read went from ~1.1 to ~0.8 ms
    # (floor 0.3 ms), measured in process. Locking reads (FOR UPDATE, advisory locks) are only
    # ever in write transactions. Reads get db_pool_size connections, writes half as many; each pool
    # grows by half again in bursts.
    writers = max(2, pool_size // 2)
    common: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": 10}
    if statement_timeout:
        common["connect_args"] = {"command_timeout": statement_timeout, "timeout": min(statement_timeout, 60.0)}
    engine = create_async_engine(url, pool_size=writers, max_overflow=writers // 2, **common)
    read_engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size // 2, isolation_level="AUTOCOMMIT", **common
    )
    if statement_timeout:
        for each in (engine.sync_engine, read_engine.sync_engine):
            event.listen(each, "handle_error", _end_hung_connection)
    return MetadataStore(engine, read_engine=read_engine, busy_timeout=busy_timeout)


@contextlib.asynccontextmanager
async def _kept_pg(engine: AsyncEngine, idle: list[AsyncConnection], keep: int) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL connection kept from an earlier transaction, as on SQLite. A checkout
    from the pool pings the server first (``pool_pre_ping``): a round trip that cost ~110 us
    of every read, and three (BEGIN, the ping, ROLLBACK) before every write. A kept
    connection is instead checked locally: one that the server closed (a restart, a
    shutdown) is dropped. Only a transaction that ended well leaves its connection kept:
    after a failure or a cancellation (asyncpg may still be cancelling a query) it goes back
    to the pool, whose ping checks it before anyone uses it again. At most ``keep`` are kept."""
    conn = None
    while idle and conn is None:
        kept = idle.pop()
        if _pg_alive(kept):
            conn = kept
        else:
            await _drop(kept)
    if conn is None:
        conn = await engine.connect()
    try:
        yield conn
    except BaseException:
        await _drop(conn)
        raise
    await _keep_pg(conn, idle, keep)


def _end_hung_connection(context: Any) -> None:
    """A statement through SQLAlchemy that got no answer in time: close its socket before
    SQLAlchemy rolls the transaction back, which would first wait (as long again) for asyncpg's
    cancellation of the statement, sent to the same silent server; and have the connection
    taken as lost, so it is discarded, not rolled back."""
    if isinstance(context.original_exception, TimeoutError) and context.connection is not None:
        driver = context.connection.connection.driver_connection
        if driver is not None:
            driver.terminate()  # (at once, without a word to the server)
        context.is_disconnect = True


def _pg_alive(conn: AsyncConnection) -> bool:
    """Whether a kept PostgreSQL connection may serve another transaction, judged without a round
    trip: asyncpg notices at once when the server closes the socket."""
    if conn.closed or conn.invalidated:
        return False
    driver = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
    return driver is not None and not driver.is_closed()


async def _keep_pg(conn: AsyncConnection, idle: list[AsyncConnection], keep: int) -> None:
    """Keep a connection whose transaction ended well for the next one (up to ``keep``); any
    more, or one the server closed, go back to the pool."""
    if len(idle) >= keep or not _pg_alive(conn):
        await _drop(conn)
        return
    try:
        await conn.rollback()  # ends SQLAlchemy's own transaction (a read's: its connection autocommits)
    except Exception:
        await _drop(conn)
        return
    idle.append(conn)


async def _drop(conn: AsyncConnection) -> None:
    """Give a connection back to its pool; one that cannot be (its server is gone) is discarded."""
    with contextlib.suppress(Exception):
        if not conn.invalidated and not _pg_alive(conn):
            await conn.invalidate()
        await conn.close()


def _checkpoint(path: str) -> None:
    conn = sqlite3.connect(path, timeout=1)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise  # busy: another process (serve --processes, tamstore worker) is checkpointing
    finally:
        conn.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # Commits checkpoint the log themselves only past 32 MB: the workers' checkpoint job does it
    # off the request path (a 1,000-segment commit spent ~4 ms checkpointing).
    cur.execute("PRAGMA wal_autocheckpoint=8000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN for the transactions SQLAlchemy opens (reads; migrations on the aiosqlite engine).
    Store writes open theirs with ``_begin_immediate`` and mark the connection ``tamstore_begun``."""
    if conn.get_execution_options().get("tamstore_begun"):
        return
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite3.Connection):
        driver.execute("BEGIN")  # straight on the driver: it runs for every read transaction
    else:
        conn.exec_driver_sql("BEGIN")
