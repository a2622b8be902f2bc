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

NS = 1_000_000_000

PAGE_SQL = (
    "SELECT flow_id, ts_start, ts_end, timerange, object_id, ts_offset, last_duration, object_timerange,"
    " key_frame_count, sample_offset, sample_count FROM segments WHERE flow_id = {p1} AND ts_start >= "
    "(SELECT ts_start FROM segments WHERE flow_id = {p1} AND ts_end > {p2} ORDER BY ts_end LIMIT 1)"
    " AND ts_start < {p3} ORDER BY ts_start LIMIT {p4}"
)


def connect(settings: Settings) -> Any:
    if settings.database_url:
        return PostgresFloor(settings.database_url)
    return SqliteFloor(str(settings.data_dir / "tamstore.db"))


def create_database(server: str) -> str:
    import asyncpg

    async def run() -> str:
        name = "bench_" + uuid.uuid4().hex[:10]
        conn = await asyncpg.connect(server + "/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return f"{server}/{name}"

    return asyncio.run(run())


class SqliteFloor:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")

    def page(self, flow_id: str, at: int, n: int) -> None:
        sql = PAGE_SQL.format(p1="?", p2="?", p3="?", p4="?").replace("flow_id = ?", "flow_id = :f")
        rows = self.conn.execute(
            sql.replace("ts_end > ?", "ts_end > :lo")
            .replace("ts_start < ?", "ts_start < :hi")
            .replace("LIMIT ?", "LIMIT :n"),
            {"f": flow_id, "lo": at * NS, "hi": (at + n) * NS, "n": n + 1},
        ).fetchall()
        ids = [r[4] for r in rows]
        marks = ",".join("?" * len(ids))
        self.conn.execute(f"SELECT * FROM objects WHERE id IN ({marks})", ids).fetchall()
        self.conn.execute(f"SELECT * FROM object_instances WHERE object_id IN ({marks}) ORDER BY id", ids).fetchall()

    def bulk_insert(self, requests: int, per_request: int) -> float:
        flow_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        for k in range(requests):
            base = k * per_request
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id, ts_offset)"
                " VALUES (?,?,?,?,?,0)",
                [
                    (
                        flow_id,
                        (base + i) * NS,
                        (base + i + 1) * NS,
                        f"[{base + i}:0_{base + i + 1}:0)",
                        f"o{base + i}",
                    )
                    for i in range(per_request)
                ],
            )
            self.conn.executemany(
                "INSERT INTO object_refs (object_id, flow_id, segments) VALUES (?,?,1)",
                [(f"o{base + i}", flow_id) for i in range(per_request)],
            )
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

    def delete_flow(self, flow_id: str) -> float:
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
        sql = PAGE_SQL.format(p1="$1", p2="$2", p3="$3", p4="$4")
        rows = self._run(self.conn.fetch(sql, flow_id, at * NS, (at + n) * NS, n + 1))
        ids = [r["object_id"] for r in rows]
        self._run(self.conn.fetch("SELECT * FROM objects WHERE id = ANY($1)", ids))
        self._run(self.conn.fetch("SELECT * FROM object_instances WHERE object_id = ANY($1) ORDER BY id", ids))

    def bulk_insert(self, requests: int, per_request: int) -> float:
        flow_id = str(uuid.uuid4())
        self._run(
            self.conn.execute(
                "INSERT INTO sources (id, format, created, updated) VALUES ($1, 'urn:x-nmos:format:data', 0, 0)",
                flow_id,
            )
        )
        self._run(
            self.conn.execute(
                "INSERT INTO flows (id, source_id, format, doc, created, metadata_updated)"
                " VALUES ($1, $1, 'x', '{}', 0, 0)",
                flow_id,
            )
        )
        self._run(
            self.conn.executemany(
                "INSERT INTO objects (id, allocated_at) VALUES ($1, 0)",
                [(f"o{i}",) for i in range(requests * per_request)],
            )
        )
        t0 = time.perf_counter()
        for k in range(requests):
            base = k * per_request

            async def one(base: int = base) -> None:
                async with self.conn.transaction():
                    await self.conn.executemany(
                        "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id, ts_offset)"
                        " VALUES ($1,$2,$3,$4,$5,0)",
                        [
                            (
                                flow_id,
                                (base + i) * NS,
                                (base + i + 1) * NS,
                                f"[{base + i}:0_{base + i + 1}:0)",
                                f"o{base + i}",
                            )
                            for i in range(per_request)
                        ],
                    )
                    await self.conn.executemany(
                        "INSERT INTO object_refs (object_id, flow_id, segments) VALUES ($1,$2,1)",
                        [(f"o{base + i}", flow_id) for i in range(per_request)],
                    )

            self._run(one())
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
