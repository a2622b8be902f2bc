"""docs/scaling.md's step one, tested: the ``segments`` table of a migrated PostgreSQL store
converted to hash partitions by Flow with the SQL block on that page, and tamstore working on
it unchanged (registration, the no-overlap rule, pages, deletion, Object collection), with a
page's statement pruned to one partition."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import asyncpg
import pytest

from bench.capacity import execute, partition_sql, plain_url
from tamstore.config import Settings
from tamstore.ops import deletion
from tamstore.store.metadata.driver import for_asyncpg
from tamstore.store.metadata.segment_page import Shape, sql_for
from tamstore.testing import app_client
from tests.conftest import add_segments, put_flow
from tests.pgcluster import create_database

pytestmark = pytest.mark.postgres


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_segments_partitioned_by_flow(tmp_path: Path, pg_server: str) -> None:
    url = await create_database(pg_server)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, default_page_limit=100)
    async with app_client(settings) as client:  # migrates the new database
        before = await put_flow(client)
        await add_segments(client, before["id"], list(range(10)))

    await execute(url, partition_sql())
    parts = await _fetch(url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'segments'::regclass")
    assert parts[0][0] == 16

    # Ranges of up to 60 segments are deleted inline; a whole Flow of 100 through a request.
    async with app_client(dataclasses.replace(settings, inline_delete_limit=60)) as client:
        # What was there before is all there.
        r = await client.get(f"/flows/{before['id']}/segments")
        assert [s["timerange"] for s in r.json()] == [f"[{i}:0_{i + 1}:0)" for i in range(10)]

        flows = [await put_flow(client) for _ in range(4)]
        for f in flows:
            await add_segments(client, f["id"], list(range(0, 200, 2)))
        # The API's overlap rule.
        objs = (await client.post(f"/flows/{flows[0]['id']}/storage", json={"limit": 1})).json()["media_objects"]
        r = await client.post(
            f"/flows/{flows[0]['id']}/segments",
            json={"object_id": objs[0]["object_id"], "timerange": "[1:500000000_2:500000000)"},
        )
        assert r.status_code == 400, r.text
        # The same segment in another Flow is no overlap.
        await add_segments(client, flows[1]["id"], [1])

        # Pages, forwards and by time.
        r = await client.get(f"/flows/{flows[2]['id']}/segments", params={"timerange": "[10:0_20:0)"})
        assert [s["timerange"] for s in r.json()] == [f"[{i}:0_{i + 1}:0)" for i in range(10, 20, 2)]

        # Deleting a range inline and a whole Flow through a delete request; Objects collected.
        r = await client.delete(f"/flows/{flows[2]['id']}/segments", params={"timerange": "[0:0_100:0)"})
        assert r.status_code == 204, r.text
        r = await client.get(f"/flows/{flows[2]['id']}/segments")
        assert len(r.json()) == 50
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        r = await client.delete(f"/flows/{flows[3]['id']}")
        assert r.status_code == 202, r.text
        while await deletion.run_next_delete_request(ctx, "test"):
            pass
        assert (await client.get(f"/flows/{flows[3]['id']}")).status_code == 404

    # Behind tamstore's back: the database itself still refuses an overlap in one Flow.
    flow_id = flows[0]["id"]
    with pytest.raises(asyncpg.ExclusionViolationError):
        await _fetch(
            url,
            "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id)"
            " SELECT flow_id, ts_start + 1, ts_end + 1, timerange, object_id FROM segments"
            " WHERE flow_id = $1 ORDER BY ts_start LIMIT 1",
            flow_id,
        )
    leftover = await _fetch(
        url,
        "SELECT count(*) FROM objects o WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.object_id = o.id)"
        " AND o.registered AND o.allocated_for_flow = $1",
        flows[3]["id"],
    )
    assert leftover[0][0] == 0  # the deleted Flow's Objects went with it

    # A page's statement reads one partition, not sixteen.
    sql, names = for_asyncpg(sql_for(Shape(True, True, False, False, False)))
    params = {"flow_id": flow_id, "lo": 0, "hi": 10 * 10**9, "limit": 101}
    plan = "\n".join(r[0] for r in await _fetch(url, "EXPLAIN " + sql, *[params[n] for n in names]))
    scanned = set(re.findall(r"segments_p\d+", plan))
    assert len(scanned) == 1, plan


def test_partition_block_is_one_transaction() -> None:
    """The block converts in one transaction: interrupted, it leaves the table as it was."""
    sql = partition_sql().strip()
    assert sql.startswith("BEGIN;") and sql.endswith("COMMIT;")
