"""Usage analytics (a tamstore extension, outside the TAMS namespace).

Flow and storage figures come from counters every write keeps (``flows.seg_*``,
``usage_counters``), so they cost the same on a store of ten segments or ten million. A Flow's
timeline (coverage, gaps, segment durations) reads the coverage blocks of whole minutes and hours
inside the asked range and only the segments at its ends (``tamstore.domain.coverage``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tamstore.domain.coverage import BLOCK_SECONDS, Piece, pieces
from tamstore.domain.errors import BadRequest, NotFound
from tamstore.domain.timerange import NS_PER_S, TimeRange
from tamstore.ops import access
from tamstore.ops.context import Context
from tamstore.ops.flows import require_flow
from tamstore.store.metadata.rows import SegmentStats
from tamstore.store.metadata.sql import Tx

__all__ = ["flow_timeline", "flow_usage", "learn_sizes", "record_usage_day", "storage_usage"]

MAX_GAPS = 1000
EXACT_COVERAGE = 10_000  # segments in a range up to which its coverage parts are exact
GROUPS = ("format", "codec", "source_id", "container")


def _hours(ns: int) -> float:
    return round(ns / NS_PER_S / 3600, 6)


async def flow_usage(
    ctx: Context, group_by: str | None, filters: dict[str, Any], timerange: TimeRange | None
) -> dict[str, Any]:
    if group_by is not None and group_by not in GROUPS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}")
    span = None if timerange is None else (timerange.start, timerange.end)
    async with ctx.store.read() as tx:
        rows = await tx.flow_usage(group_by, filters, span, access.current())
    groups: list[dict[str, Any]] = [
        {
            **({group_by: r.key} if group_by else {}),
            "flows": int(r.flows),
            "segments": int(r.segments),
            "media_hours": _hours(int(r.duration)),
            "stored_bytes": int(r.bytes),
        }
        for r in rows
    ]
    totals = {k: sum(g[k] for g in groups) for k in ("flows", "segments", "stored_bytes")}
    totals["media_hours"] = round(sum(g["media_hours"] for g in groups), 6)
    return {"group_by": group_by, "groups": groups, "totals": totals}


async def storage_usage(ctx: Context, storage_id: str | None, days: int) -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d")
    async with ctx.store.read() as tx:
        usage = await tx.storage_usage()
        history = await tx.usage_history(since)
    backends = []
    for sid, backend in ctx.backends.items():
        if storage_id is not None and sid != storage_id:
            continue
        objects, size = usage.get(sid, (0, 0))
        backends.append(
            {
                "storage_id": sid,
                "label": backend.info.label,
                "objects": objects,
                "bytes": size,
                "history": [
                    {"day": h.day, "objects": int(h.objects), "bytes": int(h.bytes)}
                    for h in history
                    if h.storage_id == sid
                ],
            }
        )
    if storage_id is not None and not backends:
        raise NotFound(f"no storage backend {storage_id}")
    return {"backends": backends}


async def record_usage_day(ctx: Context) -> None:
    """Snapshot today's counters (housekeeping), for growth over time."""
    async with ctx.store.write() as tx:
        await tx.record_usage_day(datetime.now(UTC).strftime("%Y-%m-%d"))


async def flow_timeline(ctx: Context, flow_id: str, timerange: TimeRange, buckets: int = 0) -> dict[str, Any]:
    """Coverage and gaps of a Flow over a bounded range, with segment duration statistics;
    with ``buckets``, also how much of each of that many equal parts of the range is covered
    (for drawing a timeline at any zoom without reading segments)."""
    async with ctx.store.read() as tx:
        flow = await require_flow(tx, flow_id)
        if timerange.is_eternity() or not timerange.is_bounded():
            if flow.seg_start is None:
                return _timeline(timerange, 0, 0, None, None, [], False)
            lo = flow.seg_start if timerange.start is None else timerange.start
            hi = flow.seg_end if timerange.end is None else timerange.end
            timerange = TimeRange.from_bounds(lo, hi)
        if timerange.is_empty():
            raise BadRequest("timerange must not be empty")
        assert timerange.start is not None and timerange.end is not None
        count, total, shortest, longest = await _stats(tx, flow_id, timerange.start, timerange.end)
        bounds = await tx.segment_bounds(flow_id, timerange.start, timerange.end, MAX_GAPS + 1)
        coverage: list[float] | None = None
        if buckets:
            width = max(1, -(-(timerange.end - timerange.start) // buckets))
            if count <= EXACT_COVERAGE:  # few: each segment's overlap with every part it spans
                spans = await tx.segment_bounds(flow_id, timerange.start, timerange.end, EXACT_COVERAGE + 1)
                covered = spread(spans, timerange.start, width, buckets)
            elif width >= BLOCK_SECONDS[0] * NS_PER_S:  # parts of a minute or more: blocks
                spans = await _block_spans(tx, flow_id, timerange.start, timerange.end, width)
                covered = spread(spans, timerange.start, width, buckets)
            else:  # many in a short range: each counted in the part it starts in
                covered = await tx.segment_coverage(flow_id, timerange.start, width, buckets)
            coverage = [round(min(1.0, c / width), 4) for c in covered]
    gaps: list[str] = []
    start, end = timerange.start, timerange.end
    assert start is not None and end is not None
    cursor = start
    for a, b in bounds[:MAX_GAPS]:
        a, b = max(a, start), min(b, end)
        if a > cursor:
            gaps.append(TimeRange.from_bounds(cursor, a).to_str())
        cursor = max(cursor, b)
    truncated = len(bounds) > MAX_GAPS
    if not truncated and cursor < end:
        gaps.append(TimeRange.from_bounds(cursor, end).to_str())
    out = _timeline(timerange, int(count), int(total), shortest, longest, gaps, truncated)
    if coverage is not None:
        out["coverage_buckets"] = coverage
    return out


def _pieces(lo: int, hi: int, largest: int | None = None) -> list[Piece]:
    """``[lo, hi)`` as coverage pieces, always starting with segments: the one segment that
    starts before ``lo`` and overlaps it belongs to the range, though to no block of it."""
    out = pieces(lo, hi, largest)
    return out if out[0].seconds is None else [Piece(None, lo, lo), *out]


async def _stats(tx: Tx, flow_id: str, lo: int, hi: int) -> SegmentStats:
    """Count, total, shortest and longest of the segments overlapping ``[lo, hi)``: whole
    blocks where the range holds them, segments for the rest."""
    count = total = 0
    shortest: int | None = None
    longest: int | None = None
    for i, p in enumerate(_pieces(lo, hi)):
        if p.seconds is None:  # the first piece takes the segment overlapping lo, later ones by start
            part = await tx.segment_stats(flow_id, p.start, p.end, by_start=i > 0)
        else:
            part = await tx.block_stats(flow_id, p.seconds, p.start, p.end)
        count, total = count + part.segments, total + part.total
        if part.shortest is not None:
            shortest = part.shortest if shortest is None else min(shortest, part.shortest)
        if part.longest is not None:
            longest = part.longest if longest is None else max(longest, part.longest)
    return SegmentStats(count, total, shortest, longest)


async def _block_spans(tx: Tx, flow_id: str, lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """Spans to spread over parts of ``width``: the segments at the range's ends, and each block
    (none longer than a part) as its covered nanoseconds from its start. A block is seldom split
    by a part's edge, and then at worst shifts a part's share by less than the block."""
    spans: list[tuple[int, int]] = []
    for i, p in enumerate(_pieces(lo, hi, width)):
        if p.seconds is None:
            spans += await tx.segment_bounds(flow_id, p.start, p.end, None, by_start=i > 0)
        else:
            spans += await tx.block_spans(flow_id, p.seconds, p.start, p.end)
    return spans


def spread(spans: list[tuple[int, int]], lo: int, width: int, buckets: int) -> list[int]:
    """Nanoseconds of ``spans`` in each of ``buckets`` parts of ``width`` from ``lo``, a span
    split across the parts it overlaps: O(spans + buckets), however long a span is."""
    covered = [0] * buckets
    whole = [0] * (buckets + 1)  # differences: parts a span covers from end to end
    hi = lo + width * buckets
    for a, b in spans:
        a, b = max(a, lo), min(b, hi)
        if b <= a:
            continue
        first, last = (a - lo) // width, (b - 1 - lo) // width
        if first == last:
            covered[first] += b - a
            continue
        covered[first] += lo + (first + 1) * width - a
        covered[last] += b - (lo + last * width)
        whole[first + 1] += 1
        whole[last] -= 1
    running = 0
    for k in range(buckets):
        running += whole[k]
        covered[k] += running * width
    return covered


def _timeline(
    tr: TimeRange, count: int, total: int, shortest: int | None, longest: int | None, gaps: list[str], truncated: bool
) -> dict[str, Any]:
    length = (tr.end - tr.start) if tr.is_bounded() and not tr.is_empty() else 0  # type: ignore[operator]
    return {
        "timerange": tr.to_str(),
        "segments": count,
        "covered_seconds": total / NS_PER_S,
        "coverage": round(min(total, length) / length, 6) if length else 0.0,
        "gaps": gaps,
        "gaps_truncated": truncated,
        "segment_duration": {
            "min_seconds": None if shortest is None else shortest / NS_PER_S,
            "max_seconds": None if longest is None else longest / NS_PER_S,
            "mean_seconds": (total / count / NS_PER_S) if count else None,
        },
    }


async def learn_sizes(ctx: Context, limit: int = 1000) -> int:
    """Uploads to S3 go straight to the bucket, so tamstore learns their sizes afterwards: ask
    the bucket (HEAD) for registered Objects of unknown size and count them in. Housekeeping."""
    from tamstore.store.media.s3 import S3MediaStore

    s3 = {sid: b for sid, b in ctx.backends.items() if isinstance(b, S3MediaStore)}
    if not s3:
        return 0
    async with ctx.store.read() as tx:
        rows = await tx.unsized_objects(list(s3), limit)
    learnt = 0
    for row in rows:
        size = await s3[row.storage_id].size(row.id)
        if size is None:
            continue  # registered before its upload finished: next round
        async with ctx.store.write() as tx:
            current = await tx.get_object(row.id)
            if current is None or current.size is not None:
                continue
            await tx.set_object_size(row.id, size)
        learnt += 1
    return learnt
