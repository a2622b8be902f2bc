"""Coverage blocks stay equal to what the stored segments say, through every kind of write, and
a timeline answered from them is the timeline the segments give (tamstore.domain.coverage)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tamstore.config import Settings
from tamstore.domain.coverage import BLOCK_SECONDS, MIN_BLOCKS, Piece, block_sums, pieces
from tamstore.domain.timerange import INT64_MAX, INT64_MIN, NS_PER_S
from tamstore.ops import analytics, deletion
from tamstore.store.metadata import tables as t
from tamstore.testing import app_client
from tests.conftest import allocate, put_flow

S = NS_PER_S


def test_pieces_cover_the_range_with_whole_blocks_in_the_middle() -> None:
    lo, hi = -600 * S + 7, 5 * 3600 * S + 300 * S + 5
    got = pieces(lo, hi)
    assert got[0].start == lo and got[-1].end == hi
    assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))
    assert [p.seconds for p in got] == [None, 60, 3600, 60, None]
    assert got[1] == Piece(60, -540 * S, 0) and got[2] == Piece(3600, 0, 5 * 3600 * S)
    assert pieces(0, (MIN_BLOCKS * 60 - 1) * S) == [Piece(None, 0, (MIN_BLOCKS * 60 - 1) * S)]  # too short
    assert [p.seconds for p in pieces(0, 10 * 3600 * S, largest=3599 * S)] == [60]  # no block wider than a part


def _stamp(ns: int) -> str:
    return f"{'-' if ns < 0 else ''}{abs(ns) // S}:{abs(ns) % S}"


def _timerange(start: int, end: int) -> str:
    return f"[{_stamp(start)}_{_stamp(end)})"


async def _register(client: httpx.AsyncClient, flow_id: str, spans: list[tuple[int, int]], shared: bool = False) -> str:
    """Register ``spans`` (ns), each with an Object of its own or (``shared``) all with one."""
    first = None
    for i in range(0, len(spans), 1000):
        batch = spans[i : i + 1000]
        objects = await allocate(client, flow_id, 1 if shared else len(batch))
        first = first or objects[0]["object_id"]
        if shared:  # the one Object's media shown again and again: each later use offset in time
            body = [
                {"object_id": first, "timerange": _timerange(a, b), "ts_offset": _stamp(a - spans[0][0])}
                for a, b in batch
            ]
        else:
            body = [
                {"object_id": o["object_id"], "timerange": _timerange(a, b)}
                for o, (a, b) in zip(objects, batch, strict=True)
            ]
        r = await client.post(f"/flows/{flow_id}/segments", json=body)
        assert r.status_code == 201, r.text
    return str(first)


async def _stored(ctx: Any, flow_id: str) -> tuple[list[tuple[int, int]], set[tuple[Any, ...]]]:
    async with ctx.store.read() as tx:
        spans = await tx.segment_bounds(flow_id, None, None, None)
        c = t.coverage_blocks
        rows = (
            await tx.conn.execute(select(*[col for col in c.c if col.name != "flow_id"]).where(c.c.flow_id == flow_id))
        ).all()
    return spans, {tuple(r) for r in rows}


async def _check(client: httpx.AsyncClient, flow_id: str, ranges: list[tuple[int, int]]) -> None:
    """The blocks are exactly the sums of the segments stored, and each range's statistics are
    the segments' own."""
    spans, blocks = await _stored(client.app.state.ctx, flow_id)  # type: ignore[attr-defined]
    assert blocks == {tuple(b) for b in block_sums(spans)}
    for lo, hi in ranges:
        got = (
            await client.get(f"/x-tamstore/analytics/flows/{flow_id}/timeline?timerange={_timerange(lo, hi)}")
        ).json()
        inside = [b - a for a, b in spans if b > lo and a < hi]
        assert got["segments"] == len(inside), (lo, hi)
        assert got["covered_seconds"] == sum(inside) / S
        duration = got["segment_duration"]
        assert duration["min_seconds"] == (min(inside) / S if inside else None)
        assert duration["max_seconds"] == (max(inside) / S if inside else None)


async def test_blocks_follow_every_write_and_answer_long_ranges(settings: Settings) -> None:
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        flow = await put_flow(client)
        fid = flow["id"]
        run_a = [(s * S, (s + 1) * S) for s in range(-130, 500)]  # one-second segments across zero
        run_b = [(s * S, (s + 2) * S) for s in range(700, 4300, 2)]  # two-second ones across an hour
        odd = [(4400 * S, 4490 * S), (4500 * S + S // 2, 4501 * S), (5000 * S, 12200 * S)]  # long and short
        await _register(client, fid, run_a)
        await _register(client, fid, run_b + odd)
        shared = await _register(client, fid, [((13000 + 997 * k) * S, (13001 + 997 * k) * S) for k in range(8)], True)
        rng = random.Random(7)
        ranges = [(-200 * S, 20000 * S), (-130 * S + 3, 4000 * S + 7), (0, 3600 * S), (59 * S + 1, 3660 * S + 1)]
        ranges += [(a, a + rng.randrange(1, 9000 * S)) for a in (rng.randrange(-300 * S, 15000 * S) for _ in range(12))]
        await _check(client, fid, ranges)

        # a range deleted (one contiguous run, by a worker: it is large), then the segments of
        # one Object (scattered)
        gone = _timerange(100 * S, 3000 * S)
        assert (await client.delete(f"/flows/{fid}/segments?timerange={gone}")).status_code == 202
        while await deletion.run_next_delete_request(ctx, "test"):
            pass
        await _check(client, fid, ranges)
        assert (await client.delete(f"/flows/{fid}/segments?object_id={shared}")).status_code == 204
        await _check(client, fid, ranges)
        # put back from the recovery window
        for batch in await deletion.list_deleted(ctx):
            await deletion.restore(ctx, batch["id"])
        await _check(client, fid, ranges)
        assert len((await _stored(ctx, fid))[0]) == len(run_a) + len(run_b) + len(odd) + 8

        # at the ends of the 64-bit timeline, where a block reaches past what the columns hold
        edges = [(INT64_MIN + 2, INT64_MIN + S), (INT64_MAX - S, INT64_MAX - 1)]
        await _register(client, fid, edges)
        await _check(client, fid, [*ranges, (INT64_MIN + 2, INT64_MAX - 1)])
        for a, b in edges:
            assert (await client.delete(f"/flows/{fid}/segments?timerange={_timerange(a, b)}")).status_code == 204
        await _check(client, fid, [(INT64_MIN + 2, INT64_MAX - 1)])

        # the whole Flow deleted: its blocks go with it
        assert (await client.delete(f"/flows/{fid}")).status_code == 202
        while await deletion.run_next_delete_request(ctx, "test"):
            pass
        assert (await _stored(ctx, fid))[1] == set()


async def test_a_zoomed_out_timeline_is_drawn_from_blocks(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of a minute or more are filled from blocks (here for any count of segments): full
    inside a run of segments, empty away from them, and within a block's share of the exact answer."""
    async with app_client(settings) as client:
        flow = await put_flow(client)
        await _register(client, flow["id"], [(s * S, (s + 1) * S) for s in range(-130, 500)])
        await _register(client, flow["id"], [(s * S, (s + 2) * S) for s in range(700, 4300, 2)])
        lo, hi, buckets = -130 * S, 4300 * S, 20
        url = f"/x-tamstore/analytics/flows/{flow['id']}/timeline?timerange={_timerange(lo, hi)}&buckets={buckets}"
        exact = (await client.get(url)).json()["coverage_buckets"]  # 2,430 segments: exact
        monkeypatch.setattr(analytics, "EXACT_COVERAGE", 0)
        drawn = (await client.get(url)).json()["coverage_buckets"]
    width = (hi - lo) // buckets
    for k, (a, b) in enumerate(zip(exact, drawn, strict=True)):
        start, end = lo + k * width, lo + (k + 1) * width
        assert abs(a - b) <= BLOCK_SECONDS[0] * S / width + 0.001, k
        if (lo <= start and end <= 440 * S) or (start >= 760 * S and end <= 4300 * S):
            assert b == 1.0, k
        if start >= 560 * S and end <= 640 * S:
            assert b == 0.0, k


async def test_admin_check_reports_blocks_that_disagree_with_the_segments(settings: Settings) -> None:
    from sqlalchemy import update

    from tamstore.ops import check

    async with app_client(settings) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        flow = await put_flow(client)
        await _register(client, flow["id"], [(s * S, (s + 1) * S) for s in range(100)])
        assert (await check.check(ctx)).counter_drift == []
        async with ctx.store.write() as tx:
            c = t.coverage_blocks
            await tx.conn.execute(update(c).where(c.c.seconds == 3600).values(segments=c.c.segments + 1))
        assert (await check.check(ctx)).counter_drift == [
            f"Flow {flow['id']}'s coverage blocks of 3600 s count 101 segments, it has 100"
        ]
