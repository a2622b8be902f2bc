"""Queries scale with the answer, not the store.

1. Every statement the API runs on SQLite is checked with EXPLAIN QUERY PLAN: no full scan of a
   table that grows with the store, and no sort of a whole result in a temporary b-tree.
2. 100,000 Flows page correctly, each page an indexed range scan.
3. On PostgreSQL, a statement over a list of ids never tests each row against the list.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import event, insert

from tamstore.config import Settings
from tamstore.store.metadata import tables as t
from tamstore.testing import app_client
from tests.conftest import add_segments, put_flow

GROWING = ("segments", "flows", "sources", "objects", "object_instances", "flow_tags", "source_tags")


def _bad_plan_lines(statement: str, plan: list[tuple[int, str]]) -> list[str]:
    """A full scan of a growing table is always wrong. A sort in a temporary b-tree is wrong
    for a LIMITed page (it must come off an index in order); elsewhere the input is already
    bounded by a page (``WHERE id IN (<the page's ids>)``). The segment page query
    (``WITH page AS (... LIMIT n) SELECT ...``) may sort at its top level: that sort orders the
    page's own rows with their instances joined on. So may a lookup that reads its members
    first (``id IN (SELECT ...)``, a LIST SUBQUERY): the store counted them first, and takes
    that form only for fewer than FEW_IDS (``Queries._member_of``)."""
    bad = []
    page_cte = statement.lstrip().startswith("WITH page AS")
    members_first = any("LIST SUBQUERY" in line for _, line in plan)
    for parent, line in plan:
        words = line.split()
        if line.startswith("SCAN") and len(words) >= 2 and words[1] in GROWING and "INDEX" not in line:
            bad.append(line)
        sorted_page = "TEMP B-TREE" in line and "LIMIT" in statement
        if sorted_page and not (page_cte and parent == 0) and not members_first:
            bad.append(line)
    return bad


async def test_every_statement_uses_an_index(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", listing_scan_rows=1)  # broad filters' pages cut short too
    async with app_client(settings) as client:
        store = client.app.state.ctx.store  # type: ignore[attr-defined]
        flow = await put_flow(client, tags={"genre": "news"})
        other = await put_flow(client)
        oids = await add_segments(client, flow["id"], list(range(20)))
        await add_segments(client, other["id"], [0])
        await client.post(f"/objects/{oids[0]}/instances", json={"url": "https://x", "label": "cdn"})

        seen: list[tuple[str, Any]] = []

        def trace(statement: str) -> None:  # every statement, as sqlite3 runs it (values inlined)
            if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                seen.append((statement, ()))

        def traced(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_trace_callback(trace)

        store.drop_idle_connections()
        store.sync_engine.dispose()
        event.listen(store.sync_engine, "connect", traced)
        try:
            fid = flow["id"]
            for url in [
                "/flows",
                "/flows?tag.genre=news",
                "/flows?codec=video/none",
                f"/flows?collected_by_ids={flow['id']}",
                "/sources?tag.genre=news",
                "/flows?sort_by=label",
                "/flows?sort_by=metadata_updated",
                f"/flows?source_id={flow['source_id']}",
                "/flows?timerange=[3:0_5:0)",
                "/sources",
                "/sources?tag_exists.genre=true",
                f"/flows/{fid}?include_timerange=true",
                f"/flows/{fid}/segments?limit=5",
                f"/flows/{fid}/segments?timerange=[5:0_9:0)&limit=2",
                f"/flows/{fid}/segments?reverse_order=true&limit=3",
                f"/flows/{fid}/segments?object_id={oids[3]}",
                f"/objects/{oids[2]}",
            ]:
                r = await client.get(url)
                assert r.status_code == 200, url
                if "next" in r.links:
                    assert (await client.get(r.links["next"]["url"])).status_code == 200
            assert (await client.delete(f"/flows/{fid}/segments?timerange=[0:0_3:0)")).status_code == 204
        finally:
            event.remove(store.sync_engine, "connect", traced)
            store.drop_idle_connections()
            store.sync_engine.dispose()

        problems = []
        async with store.engine.connect() as conn:
            for statement, params in seen:
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                bad = _bad_plan_lines(statement, [(r[1], r[3]) for r in rows])
                if bad:
                    problems.append(f"{statement.strip()}\n  -> {bad}")
        assert len(seen) > 20
        assert any("FROM segments s JOIN objects o" in statement for statement, _ in seen)  # the page
        assert not problems, "\n\n".join(problems)


@pytest.mark.slow
async def test_listing_100000_flows_pages_correctly(settings: Settings) -> None:
    total = 100_000
    async with app_client(settings) as client:
        store = client.app.state.ctx.store  # type: ignore[attr-defined]
        source_id = str(uuid.uuid4())
        now = time.time_ns() // 1000
        async with store.write() as tx:
            await tx.insert_source(
                {
                    "id": source_id,
                    "format": "urn:x-nmos:format:data",
                    "tags": "{}",
                    "created": now,
                    "updated": now,
                }
            )
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "source_id": source_id,
                    "format": "urn:x-nmos:format:data",
                    "doc": f'{{"source_id":"{source_id}","format":"urn:x-nmos:format:data"}}',
                    "created": now + i % 5000,
                    "metadata_updated": now,
                    "label": f"f{i % 977}",
                }
                for i in range(total)
            ]
            for i in range(0, total, 10_000):
                await tx.conn.execute(insert(t.flows), rows[i : i + 10_000])
        seen: set[str] = set()
        pages = 0
        url: str | None = "/flows?limit=1000"
        previous: tuple[str, str] | None = None
        while url:
            r = await client.get(url)
            assert r.status_code == 200
            for f in r.json():
                key = (f["created"], f["id"])
                assert previous is None or key < previous  # newest first, strictly ordered
                previous = key
                seen.add(f["id"])
            pages += 1
            url = r.links.get("next", {}).get("url")
        assert len(seen) == total and pages == total // 1000
        labelled = await client.get("/flows?sort_by=label&label=f5&limit=1000")
        assert len(labelled.json()) == len([i for i in range(total) if i % 977 == 5])


async def test_postgresql_never_tests_each_row_against_an_id_list(settings: Settings) -> None:
    """A statement over a list of ids joins the list in (``PG_IN_IDS``). With ``= ANY($1)`` a
    connection's generic plan, made while the table was small, kept scanning it as it grew and
    compared every row with every id (350 ms a 1,000-id statement at 30,000 Objects); its first
    custom plans scanned the whole table too. Here the table grows past its statistics and the
    generic plan is asked for: no scan may test rows against the list."""
    if settings.database_url is None:
        pytest.skip("PostgreSQL's planner only")
    from sqlalchemy import text

    from tamstore.store.metadata.base import PG_IN_IDS
    from tamstore.store.metadata.sql import open_metadata_store
    from tamstore.store.migrate import upgrade

    def objects(first: int, last: int) -> Any:
        return text(
            "INSERT INTO objects (id, allocated_at, registered, is_init)"
            f" SELECT 'flow/' || g, 0, false, false FROM generate_series({first}, {last}) g"
        )

    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
        async with store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE objects SET (autovacuum_enabled = false)"))
            await conn.execute(objects(1, 200))
            await conn.execute(text("ANALYZE objects"))  # statistics of a small table ...
            await conn.execute(objects(201, 50_000))  # ... that has grown since
        plans = {}
        async with store.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.execute("SET plan_cache_mode = force_generic_plan")  # type: ignore[union-attr]
            ids = [f"flow/{g}" for g in range(5000, 6000)]
            for name, condition in (("joined", PG_IN_IDS), ("= ANY", "= ANY($1::varchar[])")):
                explained = await raw.fetchval(  # type: ignore[union-attr]
                    f"EXPLAIN (FORMAT JSON) SELECT id, size FROM objects WHERE id {condition}", ids
                )
                plans[name] = str(explained)
    finally:
        await store.close()
    # A filter "id = ANY (...)" on a scan: each row tested against the list.
    assert "Seq Scan" in plans["= ANY"] and "= ANY" in plans["= ANY"], plans  # the trap is real here
    assert "= ANY" not in plans["joined"], plans["joined"]
