"""Batch writes go through the drivers' executemany; the database's own guards still answer
as the store's errors."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tamstore.domain.errors import Conflict
from tests.conftest import add_segments, multi_flow, put_flow

NS = 1_000_000_000


async def test_a_segment_the_database_refuses_is_a_conflict_and_nothing_is_written(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    oids = await add_segments(client, flow["id"], [0, 1])
    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    row = {
        "flow_id": flow["id"],
        "ts_start": 5 * NS,
        "ts_end": 6 * NS,
        "timerange": "[5:0_6:0)",
        "object_id": oids[0],
        "ts_offset": 0,
        "last_duration": None,
        "object_timerange": None,
        "key_frame_count": None,
        "sample_offset": None,
        "sample_count": None,
    }
    clash = {**row, "ts_start": 1 * NS, "ts_end": 2 * NS, "timerange": "[1:0_2:0)"}  # the key of segment 1
    with pytest.raises(Conflict):
        async with store.write() as tx:
            await tx.insert_segments([row, clash])
    page = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert [s["timerange"] for s in page] == ["[0:0_1:0)", "[1:0_2:0)"]
    await add_segments(client, flow["id"], [7])  # the failed transaction left no connection unusable
    page = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert [s["timerange"] for s in page] == ["[0:0_1:0)", "[1:0_2:0)", "[7:0_8:0)"]


async def test_a_write_whose_first_statements_run_on_the_driver_is_still_one_transaction(
    client: httpx.AsyncClient,
) -> None:
    """On PostgreSQL, SQLAlchemy's adapter begins a transaction only with its own first
    statement: the store begins it first, so driver statements before any of SQLAlchemy's are
    rolled back with the rest."""
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0, 1])
    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        async with store.write() as tx:
            row = await tx.get_flow(flow["id"], lock=True)  # on the driver
            await tx.remove_segments(flow["id"], await tx.segments_to_delete(flow["id"], None, None, None, 10), None, 1)
            assert row is not None
            raise RuntimeError("roll back")
    page = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert [s["timerange"] for s in page] == ["[0:0_1:0)", "[1:0_2:0)"]


async def test_a_flow_read_on_the_driver_has_booleans(client: httpx.AsyncClient) -> None:
    """SQLite's driver gives booleans as 0 and 1: the Flow row says True and False."""
    flow = await put_flow(client, read_only=True)
    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    async with store.read() as tx:
        row = await tx.get_flow(flow["id"])
    assert row is not None and row.read_only is True and row.init_segments is False


async def test_source_collections_asked_of_more_sources_than_one_statement_takes(client: httpx.AsyncClient) -> None:
    """The Sources go a hundred to a statement: a collection whose collector and member Sources
    fall in different statements is reported once, on both sides."""
    member = await put_flow(client)
    collector = multi_flow([(member["id"], "video")])
    assert (await client.put(f"/flows/{collector['id']}", json=collector)).status_code == 201
    others = [str(uuid.uuid4()) for _ in range(150)]
    asked = [collector["source_id"], *others, member["source_id"]]  # the two in different hundreds
    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    async with store.read() as tx:
        found = await tx.source_collections(asked)
    assert found[collector["source_id"]] == {
        "source_collection": [{"id": member["source_id"], "role": "video"}],
        "collected_by": [],
    }
    assert found[member["source_id"]] == {"source_collection": [], "collected_by": [collector["source_id"]]}
    assert all(found[o] == {"source_collection": [], "collected_by": []} for o in others)
