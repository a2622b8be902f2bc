"""Usage counters and the analytics read from them (storage per backend, Flow statistics)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    and_,
    delete,
    func,
    insert,
    literal,
    select,
)

from tamstore.domain.access import EVERYTHING, Access
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.catalog import span_overlaps
from tamstore.store.metadata.rows import SegmentStats, StoredObject, UsageDayRow, UsageGroup, rows_as
from tamstore.store.metadata.segments import segment_range_clause


def _starting_in(flow_id: str, lo: int | None, hi: int | None) -> Any:
    """A Flow's segments starting in ``[lo, hi)`` (None: unbounded): coverage blocks and the
    buckets of a timeline count a segment where it starts."""
    s = t.segments
    clauses = [s.c.flow_id == flow_id]
    if lo is not None:
        clauses.append(s.c.ts_start >= lo)
    if hi is not None:
        clauses.append(s.c.ts_start < hi)
    return and_(*clauses)


class UsageQueries(Queries):
    """Counters kept by every write, and the statistics read from them."""

    # -- usage counters and analytics ----------------------------------------------------------------

    async def unsized_objects(self, storage_ids: list[str], limit: int) -> list[StoredObject]:
        """Registered Objects on these backends whose size tamstore has not learnt yet."""
        o = t.objects
        return rows_as(
            StoredObject,
            await self._all(
                select(o.c.id, o.c.storage_id)
                .where(o.c.registered.is_(True), o.c.size.is_(None), o.c.storage_id.in_(storage_ids))
                .limit(limit)
            ),
        )

    async def storage_usage(self) -> dict[str, tuple[int, int]]:
        u = t.usage_counters
        rows = await self._all(
            select(u.c.storage_id, func.sum(u.c.objects), func.sum(u.c.bytes)).group_by(u.c.storage_id)
        )
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}

    async def record_usage_day(self, day: str) -> None:
        h = t.usage_history
        await self.conn.execute(delete(h).where(h.c.day == day))
        usage = await self.storage_usage()
        if usage:
            await self.conn.execute(
                insert(h), [{"day": day, "storage_id": sid, "objects": o, "bytes": b} for sid, (o, b) in usage.items()]
            )

    async def usage_history(self, since: str) -> list[UsageDayRow]:
        h = t.usage_history
        return rows_as(
            UsageDayRow, await self._all(select(h).where(h.c.day >= since).order_by(h.c.day, h.c.storage_id))
        )

    async def flow_usage(
        self,
        group_by: str | None,
        filters: dict[str, Any],
        span: tuple[int | None, int | None] | None,
        access: Access = EVERYTHING,
    ) -> list[UsageGroup]:
        f = t.flows
        key = f.c[group_by] if group_by else literal("all")
        stmt = select(
            key.label("key"),
            func.count().label("flows"),
            func.coalesce(func.sum(f.c.seg_count), 0).label("segments"),
            func.coalesce(func.sum(f.c.seg_duration), 0).label("duration"),
            func.coalesce(func.sum(f.c.seg_bytes), 0).label("bytes"),
        )
        for column, value in filters.items():
            stmt = stmt.where(f.c[column] == value)
        if span is not None:
            stmt = stmt.where(span_overlaps(*span))
        if (visible := await self.visible("flow", f.c.id, access)) is not None:
            stmt = stmt.where(visible)
        if group_by:
            stmt = stmt.group_by(key).order_by(key)
        return [UsageGroup(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in await self._all(stmt)]

    async def segment_stats(
        self, flow_id: str, lo: int | None, hi: int | None, *, by_start: bool = False
    ) -> SegmentStats:
        """Of the segments overlapping ``[lo, hi)``; ``by_start``: of those starting in it."""
        s = t.segments
        length = s.c.ts_end - s.c.ts_start
        row = await self._one(
            select(func.count(), func.coalesce(func.sum(length), 0), func.min(length), func.max(length)).where(
                _starting_in(flow_id, lo, hi) if by_start else segment_range_clause(flow_id, lo, hi)
            )
        )
        assert row is not None  # an aggregate always has its row
        return SegmentStats(int(row[0]), int(row[1]), row[2], row[3])

    async def segment_bounds(
        self, flow_id: str, lo: int | None, hi: int | None, limit: int | None, *, by_start: bool = False
    ) -> list[tuple[int, int]]:
        """``(ts_start, ts_end)`` of the first ``limit`` segments overlapping ``[lo, hi)`` (or
        starting in it: ``by_start``), in time order."""
        s = t.segments
        rows = await self._all(
            select(s.c.ts_start, s.c.ts_end)
            .where(_starting_in(flow_id, lo, hi) if by_start else segment_range_clause(flow_id, lo, hi))
            .order_by(s.c.ts_start)
            .limit(limit)
        )
        return [(r.ts_start, r.ts_end) for r in rows]

    async def segment_coverage(self, flow_id: str, lo: int, width: int, buckets: int) -> list[int]:
        """Nanoseconds of segments starting in each of ``buckets`` buckets of ``width`` from
        ``lo``: one aggregate over the segments' index, however many there are (a timeline drawn
        from a day of one-second segments reads 86,400 index entries, and sends 200 numbers)."""
        s = t.segments
        hi = lo + width * buckets
        bucket = ((s.c.ts_start - lo) // width).label("bucket")
        rows = await self._all(
            select(bucket, func.sum(s.c.ts_end - s.c.ts_start)).where(_starting_in(flow_id, lo, hi)).group_by(bucket)
        )
        covered = [0] * buckets
        for b, total in rows:
            if b is not None and 0 <= int(b) < buckets:
                covered[int(b)] = int(total)
        return covered

    # -- whole-table recounts for `tamstore admin check` and `stats` (operators', off-peak) -------

    async def controlled_instances_after(self, after: str, limit: int) -> list[tuple[str, str | None]]:
        """(object id, storage id) of registered Objects' controlled instances, by object id,
        the first ``limit`` after ``after``."""
        oi, o = t.object_instances, t.objects
        rows = await self._all(
            select(oi.c.object_id, oi.c.storage_id)
            .select_from(oi.join(o, o.c.id == oi.c.object_id))
            .where(o.c.registered.is_(True), oi.c.controlled.is_(True), oi.c.object_id > after)
            .order_by(oi.c.object_id)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in rows]

    async def segment_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Each Flow's segments as counted now, beside the count the Flow row keeps."""
        s, f = t.segments, t.flows
        actual = {r[0]: int(r[1]) for r in await self._all(select(s.c.flow_id, func.count()).group_by(s.c.flow_id))}
        kept = {r[0]: int(r[1]) for r in await self._all(select(f.c.id, f.c.seg_count))}
        return actual, kept

    async def controlled_objects_per_backend(self) -> dict[str, int]:
        """Registered Objects with an instance on each controlled backend, counted now."""
        oi, o = t.object_instances, t.objects
        rows = await self._all(
            select(oi.c.storage_id, func.count())
            .select_from(oi.join(o, o.c.id == oi.c.object_id))
            .where(o.c.registered.is_(True), oi.c.controlled.is_(True))
            .group_by(oi.c.storage_id)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def count_sources(self) -> int:
        return int((await self._one(select(func.count()).select_from(t.sources)))[0])

    async def webhooks_by_status(self) -> dict[str, int]:
        w = t.webhooks
        return {r[0]: int(r[1]) for r in await self._all(select(w.c.status, func.count()).group_by(w.c.status))}
