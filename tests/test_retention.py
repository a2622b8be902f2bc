"""Retention (issue 24, AppNote 0019): the workers delete expired segments and idle Flows.

Each pass is called with the wall-clock time it should believe (``now_ns``), and the time the
store stamps on writes is moved by ``shifted_clock``: no test sleeps. Segments are placed on
the TAI timeline around the real present, as a live recorder's would be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from tamstore.config import Settings
from tamstore.domain.tai import NS, utc_to_tai
from tamstore.ops import deletion, retention
from tamstore.store.metadata import tables as t
from tamstore.testing import app_client
from tests.conftest import allocate, put_flow

HOUR = 3600 * NS


class ShiftedClock:
    """The real ``time`` module, but ``time_ns`` moved by ``shift`` nanoseconds."""

    def __init__(self) -> None:
        self.shift = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.shift

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def shifted_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShiftedClock]:
    """The clock ``now_us`` (metadata_updated, segments_updated, leases) reads."""
    from tamstore.ops import context

    clock = ShiftedClock()
    monkeypatch.setattr(context, "time", clock)
    yield clock


def live_seconds(now_ns: int) -> int:
    """The TAI second a live recorder is writing at wall-clock ``now_ns``."""
    return utc_to_tai(now_ns) // NS


async def record(client: httpx.AsyncClient, flow_id: str, starts: list[int]) -> None:
    """One-second segments starting at these TAI seconds."""
    objs = await allocate(client, flow_id, len(starts))
    body = [{"object_id": o["object_id"], "timerange": f"[{s}:0_{s + 1}:0)"} for o, s in zip(objs, starts, strict=True)]
    r = await client.post(f"/flows/{flow_id}/segments", json=body)
    assert r.status_code == 201, r.text


async def starts(client: httpx.AsyncClient, flow_id: str) -> list[int]:
    r = await client.get(f"/flows/{flow_id}/segments", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [int(s["timerange"][1:].split(":")[0]) for s in r.json()]


async def tag(client: httpx.AsyncClient, flow_id: str, name: str, value: Any) -> httpx.Response:
    return await client.put(f"/flows/{flow_id}/tags/{name}", json=value)


def ctx_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


async def counters(client: httpx.AsyncClient) -> dict[str, Any]:
    async with ctx_of(client).store.read() as tx:
        return dict(await tx.counter_values())


async def test_a_loop_recorder_keeps_only_its_window_and_follows_the_tag(settings: Settings) -> None:
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        now = time.time_ns()
        live = live_seconds(now)
        flow = await put_flow(client, label="channel 1", tags={"segment_retention_offset": "30:0"})
        await record(client, flow["id"], list(range(live - 60, live)))  # the last minute

        first = (await client.get(f"/flows/{flow['id']}/segments", params={"limit": 1})).json()[0]["object_id"]
        done = await retention.retention_pass(ctx, "w1", now_ns=now)
        assert done is not None and done.flows == 1 and done.segments_deleted == 30
        assert (await client.get(f"/objects/{first}")).status_code == 404  # its Object collected
        assert await starts(client, flow["id"]) == list(range(live - 30, live))  # the last 30 s

        # ten seconds later, ten more recorded: still 30 s kept, the window moved on
        await record(client, flow["id"], list(range(live, live + 10)))
        done = await retention.retention_pass(ctx, "w1", now_ns=now + 10 * NS)
        assert done is not None and done.segments_deleted == 10
        assert await starts(client, flow["id"]) == list(range(live - 20, live + 10))

        # the window shrinks to 10 s at the next pass ...
        assert (await tag(client, flow["id"], "segment_retention_offset", "10:0")).status_code == 204
        await retention.retention_pass(ctx, "w1", now_ns=now + 10 * NS)
        assert await starts(client, flow["id"]) == list(range(live, live + 10))
        # ... and grows again: nothing more goes while the recording goes on
        assert (await tag(client, flow["id"], "segment_retention_offset", "3600:0")).status_code == 204
        await record(client, flow["id"], list(range(live + 10, live + 70)))
        done = await retention.retention_pass(ctx, "w1", now_ns=now + 70 * NS)
        assert done is not None and done.segments_deleted == 0
        assert await starts(client, flow["id"]) == list(range(live, live + 70))

        # the counters and events say what happened
        assert (await counters(client))["retention_segments_deleted"] == 60
        async with ctx.store.read() as tx:
            rows = await tx.conn.execute(
                select(t.events.c.event_type, t.events.c.payload).where(t.events.c.flow_id == flow["id"])
            )
            deleted = [orjson.loads(r.payload) for r in rows if r.event_type == "flows/segments_deleted"]
        assert deleted and all(e["flow_id"] == flow["id"] for e in deleted)
        stats = (await client.get("/metrics")).text
        assert "tamstore_retained_flows 1.0" in stats
        assert 'tamstore_retention_deleted{kind="segments"} 60.0' in stats


async def test_a_flow_idle_past_its_offset_goes_and_one_still_written_stays(
    settings: Settings, shifted_clock: ShiftedClock
) -> None:
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        idle = await put_flow(client, label="idle", tags={"flow_retention_offset": "3600:0"})
        await record(client, idle["id"], [live_seconds(time.time_ns())])
        shifted_clock.shift = 2 * HOUR  # two hours on, another Flow is being written
        busy = await put_flow(client, label="busy", tags={"flow_retention_offset": "3600:0"})
        await record(client, busy["id"], [live_seconds(shifted_clock.time_ns())])
        untagged = await put_flow(client, label="no retention")

        done = await retention.retention_pass(ctx, "w1", now_ns=shifted_clock.time_ns() + 60 * NS)
        assert done is not None and done.flows_deleted == [idle["id"]]
        assert (await client.get(f"/flows/{idle['id']}")).status_code == 404
        assert (await client.get(f"/flows/{busy['id']}")).status_code == 200
        assert (await client.get(f"/flows/{untagged['id']}")).status_code == 200
        assert (await counters(client))["retention_flows_deleted"] == 1

        # a Flow written to between the pass's read and its deletion is spared, under its lock
        def wanted_after_all(flow: Any) -> bool:
            return True

        with pytest.raises(deletion.Spared):
            await deletion.delete_flow(ctx, busy["id"], "test", unless=wanted_after_all)
        assert (await client.get(f"/flows/{busy['id']}")).status_code == 200


async def test_workers_share_passes_by_a_lease_and_never_delete_twice(settings: Settings) -> None:
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        now = time.time_ns()
        live = live_seconds(now)
        flows = []
        for n in range(3):
            flow = await put_flow(client, label=f"channel {n}", tags={"segment_retention_offset": "0:0"})
            await record(client, flow["id"], list(range(live - 40, live)))
            flows.append(flow["id"])

        # two workers at once: one holds the lease, the other does nothing this time
        first, second = await asyncio.gather(
            retention.retention_pass(ctx, "w1", now_ns=now), retention.retention_pass(ctx, "w2", now_ns=now)
        )
        results = [r for r in (first, second) if r is not None]
        assert len(results) == 1 and results[0].segments_deleted == 120
        # a worker whose lease ran out and one that took over, deleting the same Flow at once
        await record(client, flows[0], list(range(live, live + 30)))
        amounts = await asyncio.gather(
            *(
                deletion.delete_segments_ending_by(ctx, flows[0], lambda f: utc_to_tai(now) + 30 * NS, 10)
                for _ in range(2)
            )
        )
        assert sorted(amounts) == [0, 30]
        assert (await counters(client))["retention_segments_deleted"] == 150
        for flow_id in flows:
            assert await starts(client, flow_id) == []


async def test_a_backlog_goes_in_bounded_passes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "PASS_CHUNKS", 1)
    monkeypatch.setattr(deletion, "CHUNK", 25)
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        now = time.time_ns()
        live = live_seconds(now)
        flow = await put_flow(client, tags={"segment_retention_offset": "10:0"})
        await record(client, flow["id"], list(range(live - 70, live)))
        passes = []
        while True:
            done = await retention.retention_pass(ctx, "w1", now_ns=now)
            assert done is not None
            passes.append(done.segments_deleted)
            if not done.backlog:
                break
        assert passes == [25, 25, 10]
        assert await starts(client, flow["id"]) == list(range(live - 10, live))


async def test_the_recovery_window_restores_what_retention_deleted(settings: Settings) -> None:
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        now = time.time_ns()
        live = live_seconds(now)
        flow = await put_flow(client, label="recorder", tags={"segment_retention_offset": "5:0"})
        await record(client, flow["id"], list(range(live - 10, live)))
        done = await retention.retention_pass(ctx, "w1", now_ns=now)
        assert done is not None and done.segments_deleted == 5
        listed = await deletion.list_deleted(ctx)
        assert [d["what"] for d in listed] == ["segments"]
        # restored segments come back (the tag would take them again: lift it first)
        assert (await client.delete(f"/flows/{flow['id']}/tags/segment_retention_offset")).status_code == 204
        await deletion.restore(ctx, listed[0]["id"])
        assert await starts(client, flow["id"]) == list(range(live - 10, live))

        # a whole Flow deleted for idleness comes back with its segments and tags
        assert (await tag(client, flow["id"], "flow_retention_offset", "60:0")).status_code == 204
        done = await retention.retention_pass(ctx, "w1", now_ns=now + HOUR)
        assert done is not None and done.flows_deleted == [flow["id"]]
        listed = await deletion.list_deleted(ctx)
        await deletion.restore(ctx, listed[0]["id"])
        got = (await client.get(f"/flows/{flow['id']}")).json()
        assert got["tags"]["flow_retention_offset"] == "60:0"
        assert await starts(client, flow["id"]) == list(range(live - 10, live))


@pytest.mark.parametrize("value", ["ten days", "-5:0", "5", ["60:0", "120:0"], 60, "999999999999999:0"], ids=repr)
async def test_invalid_retention_values_are_refused_naming_the_tag(client: httpx.AsyncClient, value: Any) -> None:
    flow = await put_flow(client)
    for name in ("segment_retention_offset", "flow_retention_offset"):
        r = await tag(client, flow["id"], name, value)
        if isinstance(value, int):  # not a tag value at all: the schema refuses it first
            assert r.status_code == 400
            continue
        assert r.status_code == 400, (name, value, r.text)
        assert name in r.json()["summary"]
        body = {**flow, "tags": {name: value}}
        r = await client.put(f"/flows/{flow['id']}", json=body)
        assert r.status_code == 400 and name in r.json()["summary"], r.text


async def test_a_bad_value_stored_before_the_rule_never_stops_a_pass(settings: Settings) -> None:
    async with app_client(settings) as client:
        ctx = ctx_of(client)
        now = time.time_ns()
        live = live_seconds(now)
        good = await put_flow(client, tags={"segment_retention_offset": "0:0"})
        await record(client, good["id"], [live - 5])
        bad = await put_flow(client, tags={"segment_retention_offset": "0:0"})
        await record(client, bad["id"], [live - 5])
        async with ctx.store.write() as tx:  # as an older tamstore would have let it be stored
            await tx.conn.execute(t.flow_tags.update().where(t.flow_tags.c.flow_id == bad["id"]).values(value="a week"))
        done = await retention.retention_pass(ctx, "w1", now_ns=now)
        assert done is not None and done.segments_deleted == 1
        assert await starts(client, good["id"]) == []


async def test_the_background_workers_run_passes(settings: Settings) -> None:
    """In ``serve`` (and ``tamstore worker``) passes run every ``retention_interval`` seconds."""
    from tamstore.ops import check

    settings = dataclasses.replace(settings, retention_interval=1)
    async with app_client(settings, workers=True) as client:
        live = live_seconds(time.time_ns())
        flow = await put_flow(client, tags={"segment_retention_offset": "0:0"})
        await record(client, flow["id"], list(range(live - 20, live - 10)))
        deadline = time.monotonic() + 20
        while await starts(client, flow["id"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await starts(client, flow["id"]) == []
        stats = await check.stats(ctx_of(client))
        assert stats["retention"] == {"flows": 1, "segments_deleted": 10, "flows_deleted": 0}


async def test_a_flow_not_on_the_wall_clock_follows_the_appnote(settings: Settings) -> None:
    """An edit whose timeline starts at 0:0: the offset still applies to segment end times,
    which lie decades in the past, so everything goes (docs/operating.md warns)."""
    async with app_client(settings) as client:
        edit = await put_flow(client, label="edit", tags={"segment_retention_offset": "86400:0"})
        await record(client, edit["id"], [0, 1, 2])
        done = await retention.retention_pass(ctx_of(client), "w1", now_ns=time.time_ns())
        assert done is not None and done.segments_deleted == 3
        assert await starts(client, edit["id"]) == []
