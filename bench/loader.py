"""Build synthetic stores fast, straight into the database (not through the API).

A flow of N one-second segments, each with its own Object, a controlled instance on the
embedded filesystem backend and its reference count: the same rows the API would write, but
written with executemany (SQLite) or COPY (PostgreSQL), so 10 million segments take minutes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tamstore.config import Settings
from tamstore.domain.access import auth_key, classes_of
from tamstore.domain.coverage import BLOCK_SECONDS
from tamstore.domain.flows import columns_of
from tamstore.store.media.filesystem import FILESYSTEM_BACKEND_ID
from tamstore.store.metadata.coverage import backfill_sql
from tamstore.store.metadata.driver import for_asyncpg
from tamstore.store.metadata.sql import open_metadata_store
from tamstore.store.migrate import upgrade

NS = 1_000_000_000
BATCH = 50_000
# The Storage Backend the loaded Objects' instances are on (the embedded one unless told).
STORAGE_ID = {"id": FILESYSTEM_BACKEND_ID}


def flow_doc(flow_id: str, source_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "format": "urn:x-nmos:format:video",
        "codec": "video/h264",
        "container": "video/mp2t",
        "essence_parameters": {
            "frame_width": 1920,
            "frame_height": 1080,
            "frame_rate": {"numerator": 25, "denominator": 1},
        },
        "tags": {},
        **extra,
    }


def _flow_rows(flow_id: str, source_id: str, n: int, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    now = time.time_ns() // 1000
    source = {
        "id": source_id,
        "format": doc["format"],
        "tags": "{}",
        "created": now,
        "updated": now,
        "label_key": "1",
    }
    flow = {
        "id": flow_id,
        **columns_of(doc),
        "doc": json.dumps(doc),
        "created": now,
        "metadata_updated": now,
        "segments_updated": now if n else None,
        "seg_start": 0 if n else None,
        "seg_end": n * NS if n else None,
        "auth_key": auth_key(classes_of(doc.get("tags"))),
    }
    return source, flow


_OBJECT_COLUMNS = [
    "id",
    "allocated_for_flow",
    "storage_id",
    "content_type",
    "allocated_at",
    "registered",
    "is_init",
    "first_referenced_by_flow",
    "timerange",
    "sole_instance",
]


def _object_columns(existing: set[str]) -> list[str]:
    """The object columns the loader fills: all of them, or all but the last, ``sole_instance``,
    on a schema from before it (the bench also runs against older commits). Rows are cut to
    the same length."""
    return _OBJECT_COLUMNS if "sole_instance" in existing else _OBJECT_COLUMNS[:-1]


def object_id(flow_id: str, i: int) -> str:
    """The id of the Object of a loaded Flow's ``i``-th segment: shaped like tamstore's own ids
    and in the Flow's order, as its (time-ordered) allocations are. With "flow/1", "flow/10",
    "flow/100"... a deletion chunk's Objects were scattered over ten times as many index pages
    as a real store's."""
    return f"{flow_id[:8]}-0000-7000-8000-{i:012d}"


def _segment_batches(flow_id: str, n: int) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
    """Rows for segments, objects, instances and refs, in batches (in time order)."""
    now = time.time_ns() // 1000
    for start in range(0, n, BATCH):
        segs, objs, insts, refs = [], [], [], []
        for i in range(start, min(n, start + BATCH)):
            oid = object_id(flow_id, i)
            tr = f"[{i}:0_{i + 1}:0)"
            segs.append((flow_id, i * NS, (i + 1) * NS, tr, oid, 0))
            objs.append(
                (
                    oid,
                    flow_id,
                    STORAGE_ID["id"],
                    "video/mp2t",
                    now,
                    True,
                    False,
                    flow_id,
                    f"[{i}:0_{i + 1}:0)",
                    True,  # sole_instance: its one instance, below (as allocation marks it)
                )
            )
            insts.append((oid, STORAGE_ID["id"], True))
            refs.append((oid, flow_id, 1))
        yield segs, objs, insts, refs


def load_sqlite(db_path: Path, flows: list[tuple[str, int, dict[str, Any]]]) -> None:
    """Insert flows of the given sizes (flow_id, segment count, extra doc fields)."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    # One big transaction appends pages: a rollback journal has little to keep, where WAL would
    # write everything twice. The server's WAL mode is put back afterwards.
    try:
        switched = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    except sqlite3.OperationalError:  # a server has the database open: stay in WAL mode
        switched = False
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    # The write lock first, waited for: a deferred BEGIN reads (table_info) before it writes, and
    # a serving tamstore's commit in between makes the first INSERT fail at once ("database is
    # locked": a WAL snapshot cannot be upgraded), without waiting (a test loading into a running
    # server failed so, one CI run in many).
    conn.execute("BEGIN IMMEDIATE")
    object_columns = _object_columns({r[1] for r in conn.execute("PRAGMA table_info(objects)")})
    for flow_id, n, extra in flows:
        source_id = str(uuid.uuid4())
        doc = flow_doc(flow_id, source_id, **extra)
        source, flow = _flow_rows(flow_id, source_id, n, doc)
        _insert_dict(conn, "sources", source)
        _insert_dict(conn, "flows", flow)
        for name, value in doc.get("tags", {}).items():
            conn.execute("INSERT INTO flow_tags (flow_id, name, value) VALUES (?, ?, ?)", (flow_id, name, value))
        if flow["auth_key"] is not None:
            conn.execute("INSERT OR IGNORE INTO auth_keys (kind, auth_key) VALUES ('flow', ?)", (flow["auth_key"],))
        for segs, objs, insts, refs in _segment_batches(flow_id, n):
            conn.executemany(
                "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id, ts_offset)"
                " VALUES (?,?,?,?,?,?)",
                segs,
            )
            conn.executemany(
                f"INSERT INTO objects ({', '.join(object_columns)}) VALUES ({', '.join('?' * len(object_columns))})",
                [o[: len(object_columns)] for o in objs],
            )
            conn.executemany("INSERT INTO object_instances (object_id, storage_id, controlled) VALUES (?,?,?)", insts)
            conn.executemany("INSERT INTO object_refs (object_id, flow_id, segments) VALUES (?,?,?)", refs)
        for seconds in BLOCK_SECONDS:  # the coverage blocks the store keeps with every segment write
            conn.execute(backfill_sql(seconds, one_flow=True), (flow_id,))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    if switched:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def _insert_dict(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))


async def load_postgres(url: str, flows: list[tuple[str, int, dict[str, Any]]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'objects'")
        object_columns = _object_columns({r[0] for r in columns})
        for flow_id, n, extra in flows:
            source_id = str(uuid.uuid4())
            doc = flow_doc(flow_id, source_id, **extra)
            source, flow = _flow_rows(flow_id, source_id, n, doc)
            for table, row in (("sources", source), ("flows", flow)):
                cols = ", ".join(row)
                marks = ", ".join(f"${i + 1}" for i in range(len(row)))
                await conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", *row.values())
            for name, value in doc.get("tags", {}).items():
                await conn.execute(
                    "INSERT INTO flow_tags (flow_id, name, value) VALUES ($1,$2,$3)", flow_id, name, value
                )
            if flow["auth_key"] is not None:
                await conn.execute(
                    "INSERT INTO auth_keys (kind, auth_key) VALUES ('flow', $1) ON CONFLICT DO NOTHING",
                    flow["auth_key"],
                )
            for segs, objs, insts, refs in _segment_batches(flow_id, n):
                await conn.copy_records_to_table(
                    "objects", records=[o[: len(object_columns)] for o in objs], columns=object_columns
                )
                await conn.copy_records_to_table(
                    "segments",
                    records=segs,
                    columns=["flow_id", "ts_start", "ts_end", "timerange", "object_id", "ts_offset"],
                )
                await conn.copy_records_to_table(
                    "object_instances", records=insts, columns=["object_id", "storage_id", "controlled"]
                )
                await conn.copy_records_to_table(
                    "object_refs", records=refs, columns=["object_id", "flow_id", "segments"]
                )
            for seconds in BLOCK_SECONDS:
                await conn.execute(for_asyncpg(backfill_sql(seconds, one_flow=True))[0], flow_id)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def prepare(settings: Settings) -> None:
    """Create the schema (as ``tamstore serve`` would) before loading."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


def load(settings: Settings, flows: list[tuple[str, int, dict[str, Any]]]) -> float:
    """Load flows into the store the settings name; returns seconds taken."""
    asyncio.run(prepare(settings))
    t0 = time.perf_counter()
    if settings.database_url:
        asyncio.run(load_postgres(settings.database_url, flows))
    else:
        load_sqlite(settings.data_dir / "tamstore.db", flows)
    return time.perf_counter() - t0
