"""The physical floor: the same work as tamstore does, done directly on the database.

Each method runs the queries tamstore's store runs for that operation (same SQL shape, same
indexes), with the raw driver and no HTTP, JSON or SQLAlchemy in between.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from typing import Any

from tamstore.config import Settings
from tamstore.store.metadata.driver import for_asyncpg
from tamstore.store.metadata.segment_page import Shape, sql_for

NS = 1_000_000_000


PAGE_SHAPE = Shape(lo=True, hi=True, object_id=False, after=False, reverse=False)


def setup_statements(flow_id: str, objects: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """A Source, a Flow and its allocated (not yet registered) Objects."""
    return [
        (
            "INSERT INTO sources (id, format, created, updated) VALUES (?, 'urn:x-nmos:format:video', 0, 0)",
            [(flow_id,)],
        ),
        (
            "INSERT INTO flows (id, source_id, format, container, doc, created, metadata_updated)"
            " VALUES (?, ?, 'urn:x-nmos:format:video', 'video/mp2t', '{}', 0, 0)",
            [(flow_id, flow_id)],
        ),
        (
            "INSERT INTO objects (id, allocated_for_flow, allocated_at, registered, is_init)"
            " VALUES (?, ?, 0, false, false)",
            [(f"{flow_id}/{i}", flow_id) for i in range(objects)],
        ),
    ]


def batch_statements(flow_id: str, base: int, n: int) -> list[tuple[str, str, Any]]:
    """What tamstore's store does for one batch of ``n`` segments on newly allocated Objects:
    read the Objects, mark them registered, insert the segments, count the references, update
    the Flow's maintained span and counters."""
    ids = [f"{flow_id}/{base + i}" for i in range(n)]
    spans = [((base + i) * NS, (base + i + 1) * NS, f"[{base + i}:0_{base + i + 1}:0)") for i in range(n)]
    return [
        ("fetch", f"SELECT * FROM objects WHERE id IN ({','.join('?' * n)})", ids),
        (
            "many",
            "UPDATE objects SET first_referenced_by_flow = ?, registered = true, timerange = ? WHERE id = ?",
            [(flow_id, tr, oid) for oid, (_, _, tr) in zip(ids, spans, strict=True)],
        ),
        (
            "many",
            "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id, ts_offset)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            [(flow_id, lo, hi, tr, oid) for oid, (lo, hi, tr) in zip(ids, spans, strict=True)],
        ),
        (
            "many",
            "INSERT INTO object_refs (object_id, flow_id, segments) VALUES (?, ?, 1) ON CONFLICT (object_id, flow_id)"
            " DO UPDATE SET segments = object_refs.segments + excluded.segments",
            [(oid, flow_id) for oid in ids],
        ),
        (
            "many",
            "UPDATE flows SET seg_start = ?, seg_end = ?, seg_count = seg_count + ? WHERE id = ?",
            [(spans[0][0], spans[-1][1], n, flow_id)],
        ),
    ]


RETAINED_SQL = (
    "SELECT flow_tags.flow_id, name, value, seg_start, read_only, metadata_updated, segments_updated"
    " FROM flow_tags JOIN flows ON flows.id = flow_tags.flow_id"
    " WHERE name IN ('segment_retention_offset', 'flow_retention_offset')"
)


def connect(settings: Settings) -> Any:
    if settings.database_url:
        return PostgresFloor(settings.database_url)
    return SqliteFloor(str(settings.data_dir / "tamstore.db"))


def create_database(server: str) -> str:
    from tests.pgcluster import create_database as create

    return asyncio.run(create(server, "bench_"))


class SqliteFloor:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")

    def page(self, flow_id: str, at: int, n: int) -> None:
        sql = sql_for(PAGE_SHAPE)
        params = {"flow_id": flow_id, "lo": at * NS, "hi": (at + n) * NS, "limit": n + 1}
        self.conn.execute(sql, params).fetchall()

    def bulk_insert(self, requests: int, per_request: int) -> float:
        """The statements of a segment batch (see ``batch_statements``), foreign keys on as
        tamstore has them, on a Flow whose Objects were allocated beforehand."""
        self.conn.execute("PRAGMA foreign_keys=ON")
        flow_id = str(uuid.uuid4())
        self.conn.execute("BEGIN IMMEDIATE")
        for sql, args in setup_statements(flow_id, requests * per_request):
            self.conn.executemany(sql, args)
        self.conn.execute("COMMIT")
        t0 = time.perf_counter()
        for k in range(requests):
            self.conn.execute("BEGIN IMMEDIATE")
            for kind, sql, args in batch_statements(flow_id, k * per_request, per_request):
                if kind == "fetch":
                    self.conn.execute(sql, args).fetchall()
                else:
                    self.conn.executemany(sql, args)
            self.conn.execute("COMMIT")
        return time.perf_counter() - t0

    def flows_page(self, limit: int, tag: str | None) -> None:
        if tag is None:
            self.conn.execute("SELECT * FROM flows ORDER BY created DESC, id DESC LIMIT ?", (limit + 1,)).fetchall()
        else:
            self.conn.execute(
                "SELECT * FROM flows WHERE EXISTS (SELECT 1 FROM flow_tags WHERE flow_tags.flow_id = flows.id"
                " AND name = 'genre' AND value IN (?)) ORDER BY created DESC, id DESC LIMIT ?",
                (tag, limit + 1),
            ).fetchall()

    def retained_flows(self) -> None:
        self.conn.execute(RETAINED_SQL).fetchall()

    def delete_flow(self, flow_id: str) -> float:
        """One transaction by ``flow_id``, foreign keys checked as tamstore has them (deleting
        an Object probes each table that may refer to it)."""
        self.conn.execute("PRAGMA foreign_keys=ON")
        t0 = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM object_refs WHERE flow_id = ?", (flow_id,))
        self.conn.execute(
            "DELETE FROM object_instances WHERE object_id IN (SELECT object_id FROM segments WHERE flow_id = ?)",
            (flow_id,),
        )
        ids = self.conn.execute("SELECT object_id FROM segments WHERE flow_id = ?", (flow_id,)).fetchall()
        self.conn.execute("DELETE FROM segments WHERE flow_id = ?", (flow_id,))
        self.conn.executemany("DELETE FROM objects WHERE id = ?", ids)
        self.conn.execute("DELETE FROM flows WHERE id = ?", (flow_id,))
        self.conn.execute("COMMIT")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.conn.close()


class PostgresFloor:
    def __init__(self, url: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def page(self, flow_id: str, at: int, n: int) -> None:
        sql, names = for_asyncpg(sql_for(PAGE_SHAPE))
        params = {"flow_id": flow_id, "lo": at * NS, "hi": (at + n) * NS, "limit": n + 1}
        self._run(self.conn.fetch(sql, *[params[name] for name in names]))

    def bulk_insert(self, requests: int, per_request: int) -> float:
        """The same statements as the SQLite floor, on asyncpg."""
        flow_id = str(uuid.uuid4())

        async def setup() -> None:
            async with self.conn.transaction():
                for sql, args in setup_statements(flow_id, requests * per_request):
                    await self.conn.executemany(for_asyncpg(sql)[0], args)

        async def batch(base: int) -> None:
            async with self.conn.transaction():
                for kind, sql, args in batch_statements(flow_id, base, per_request):
                    if kind == "fetch":  # the SQLite statement's IN (?, ?, ...) as one array parameter
                        await self.conn.fetch("SELECT * FROM objects WHERE id = ANY($1)", list(args))
                    else:
                        await self.conn.executemany(for_asyncpg(sql)[0], args)

        self._run(setup())
        t0 = time.perf_counter()
        for k in range(requests):
            self._run(batch(k * per_request))
        return time.perf_counter() - t0

    def flows_page(self, limit: int, tag: str | None) -> None:
        if tag is None:
            self._run(self.conn.fetch("SELECT * FROM flows ORDER BY created DESC, id DESC LIMIT $1", limit + 1))
        else:
            self._run(
                self.conn.fetch(
                    "SELECT * FROM flows WHERE EXISTS (SELECT 1 FROM flow_tags WHERE flow_tags.flow_id = flows.id"
                    " AND name = 'genre' AND value = $1) ORDER BY created DESC, id DESC LIMIT $2",
                    tag,
                    limit + 1,
                )
            )

    def retained_flows(self) -> None:
        self._run(self.conn.fetch(RETAINED_SQL))

    def delete_flow(self, flow_id: str) -> float:
        async def run() -> None:
            async with self.conn.transaction():
                ids = [
                    r[0] for r in await self.conn.fetch("SELECT object_id FROM segments WHERE flow_id = $1", flow_id)
                ]
                await self.conn.execute("DELETE FROM object_refs WHERE flow_id = $1", flow_id)
                await self.conn.execute("DELETE FROM segments WHERE flow_id = $1", flow_id)
                await self.conn.execute("DELETE FROM object_instances WHERE object_id = ANY($1)", ids)
                await self.conn.execute("DELETE FROM objects WHERE id = ANY($1)", ids)
                await self.conn.execute("DELETE FROM flows WHERE id = $1", flow_id)

        t0 = time.perf_counter()
        self._run(run())
        return time.perf_counter() - t0

    def close(self) -> None:
        self._run(self.conn.close())
        self.loop.close()
