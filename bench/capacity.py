"""What one PostgreSQL carries (docs/scaling.md): the bytes each segment costs in each table,
and the database's own rates for the two hot paths (a segment page read, a 1,000-segment batch
written) with ``segments`` as tamstore creates it, then hash-partitioned by Flow with the SQL
of docs/scaling.md. The rates are the raw statements on one connection: the ceiling that
tamstore's processes, however many, share."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from pathlib import Path

import asyncpg

from bench import floor, loader
from tamstore.config import Settings

Row = tuple[str, str, str, str]

DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
TABLES = ("segments", "objects", "object_instances", "object_refs")


def partition_sql() -> str:
    """The fenced block of docs/scaling.md that starts ``-- partition-segments``."""
    found = re.search(r"```sql\n-- partition-segments\n(.*?)```", DOC.read_text(), re.S)
    if found is None:
        raise LookupError("docs/scaling.md has lost its partitioning block")
    return found.group(1)


def plain_url(url: str) -> str:
    """asyncpg's form of a SQLAlchemy PostgreSQL URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _bytes_per_table(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute("VACUUM ANALYZE")
        out = {}
        for table in TABLES:
            # A partitioned table's own size is 0: add its partitions'.
            row = await conn.fetchrow(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.oid = $1::regclass"
                " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
                table,
            )
            out[table] = int(row[0])
        return out
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    """Run ``sql`` (several statements may be given) on a connection of its own."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _rates(settings: Settings, flow_ids: list[str], segments: int, seconds: float) -> tuple[float, float]:
    """Raw page statements per second at random places in the Flows, and segments per second
    of 1,000-segment batches."""
    raw = floor.connect(settings)
    try:
        rng = random.Random(1)
        pages = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            raw.page(rng.choice(flow_ids), rng.randrange(0, segments - 100), 100)
            pages += 1
        page_rate = pages / (time.perf_counter() - t0)
        written = raw.bulk_insert(20, 1000)
        return page_rate, 20_000 / written
    finally:
        raw.close()


def bench_capacity(settings: Settings, segments: int, flows: int = 10) -> list[Row]:
    if not settings.database_url:
        return [("capacity of one PostgreSQL", "(PostgreSQL only: --backend postgres)", "", "")]
    per_flow = segments // flows
    flow_ids = [str(uuid.uuid4()) for _ in range(flows)]
    t0 = time.perf_counter()
    loader.load(settings, [(f, per_flow, {}) for f in flow_ids])
    loaded = time.perf_counter() - t0
    sizes = asyncio.run(_bytes_per_table(settings.database_url))
    plain = _rates(settings, flow_ids, per_flow, 5.0)
    t0 = time.perf_counter()
    asyncio.run(execute(settings.database_url, partition_sql()))
    converted = time.perf_counter() - t0
    parted_sizes = asyncio.run(_bytes_per_table(settings.database_url))
    parted = _rates(settings, flow_ids, per_flow, 5.0)
    # PostgreSQL 15 locks every partition when it reuses a generic plan of a prepared
    # statement (asyncpg prepares every statement): custom plans prune before locking.
    database = settings.database_url.rsplit("/", 1)[1]
    asyncio.run(execute(settings.database_url, f'ALTER DATABASE "{database}" SET plan_cache_mode = force_custom_plan'))
    custom = _rates(settings, flow_ids, per_flow, 5.0)
    total = per_flow * flows
    rows: list[Row] = [(f"store of {total:,} segments in {flows} flows, bulk-loaded", f"{loaded:.0f} s", "", "")]
    for table in TABLES:
        rows.append((f"  bytes per segment: {table} (with its indexes)", f"{sizes[table] / total:.0f}", "", ""))
    whole = sum(sizes.values()) / total
    rows.append(("  bytes per segment, all four", f"{whole:.0f}", "", ""))
    rows.append(("  per 1,000,000,000 segments", f"{whole * 1e9 / 2**40:.2f} TiB", "", ""))
    rows.append(("segments hash-partitioned by flow (16; docs/scaling.md)", f"{converted:.0f} s to convert", "", ""))
    rows.append(("  bytes per segment, all four, partitioned", f"{sum(parted_sizes.values()) / total:.0f}", "", ""))
    rows.append(
        (
            "raw 100-segment page statements/s, one connection (partitioned beside plain)",
            f"{parted[0]:,.0f}/s",
            f"{plain[0]:,.0f}/s",
            f"{parted[0] / plain[0]:.2f}x",
        )
    )
    rows.append(
        (
            "  the same with plan_cache_mode = force_custom_plan (partitioned beside plain)",
            f"{custom[0]:,.0f}/s",
            f"{plain[0]:,.0f}/s",
            f"{custom[0] / plain[0]:.2f}x",
        )
    )
    rows.append(
        (
            "raw registration statements, 1,000-segment batches (partitioned beside plain)",
            f"{parted[1]:,.0f} seg/s",
            f"{plain[1]:,.0f} seg/s",
            f"{parted[1] / plain[1]:.2f}x",
        )
    )
    return rows
