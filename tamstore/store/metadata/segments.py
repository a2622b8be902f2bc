"""Flow Segments: the page query, batch inserts, extents and deletion by time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.exc import IntegrityError

from tamstore.domain.errors import Conflict
from tamstore.domain.paging import Page, PageRequest
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.objects import ObjectQueries
from tamstore.store.metadata.rows import DeletableSegment
from tamstore.store.metadata.segment_page import (
    SegmentRow,
    Shape,
    range_conditions,
    sql_for,
)

_SEGMENT_COLUMNS = [c.name for c in t.segments.c]

# Statements of every registration, on the driver (SQLAlchemy took longer to build and run
# each than the database took to answer): the stored segments a batch's span overlaps, and the
# Flow's last segment.
_OVERLAPPING = (
    "SELECT ts_start, ts_end FROM segments WHERE flow_id = :flow_id"
    f"{range_conditions('segments', lo=True, hi=True)} ORDER BY ts_start"
)
_LAST_SEGMENT = (
    "SELECT segments.ts_end, segments.ts_offset, objects.init_object_id FROM segments"
    " JOIN objects ON objects.id = segments.object_id WHERE segments.flow_id = ?"
    " ORDER BY segments.ts_start DESC LIMIT 1"
)


def segment_range_clause(flow_id: Any, lo: Any, hi: Any) -> Any:
    """A Flow's segments overlapping ``[lo, hi)`` (None: unbounded), as an indexed range scan.
    Segments never overlap, so every one overlapping a range starting at ``lo`` starts at or after
    the start of the first segment that ends after ``lo``: the scan begins there, never at the
    start of the Flow. (Values or bind parameters.)"""
    s = t.segments
    clauses: list[Any] = [s.c.flow_id == flow_id]
    if lo is not None:
        first = select(s.c.ts_start).where(s.c.flow_id == flow_id, s.c.ts_end > lo).order_by(s.c.ts_end).limit(1)
        clauses.append(s.c.ts_start >= first.scalar_subquery())
    if hi is not None:
        clauses.append(s.c.ts_start < hi)
    return and_(*clauses)


class SegmentQueries(ObjectQueries):
    """A Flow's segments (and, for their pages, their Objects' instances)."""

    # -- segments -----------------------------------------------------------------------------

    async def list_segments(
        self,
        flow_id: str,
        page: PageRequest,
        *,
        lo: int | None,
        hi: int | None,
        object_id: str | None,
    ) -> Page[Any]:
        """One page of segments overlapping ``[lo, hi)``, each with its Object's init Object id
        and, when the Object has only its controlled instance, that instance's backend
        (``SegmentRow.sole_instance``, ``storage_id``: nearly every Object). ``extra["instances"]``
        maps each of the other Objects, and each init Object, to its instances (in id order),
        read with a second statement only when the page has any; ``instances_of`` gives any
        row's. Every reader of a page renders its init Objects too: they are read here, once."""
        shape = Shape(lo is not None, hi is not None, object_id is not None, page.after is not None, page.reverse)
        params: dict[str, Any] = {"flow_id": flow_id, "limit": page.limit + 1}
        if lo is not None:
            params["lo"] = lo
        if hi is not None:
            params["hi"] = hi
        if object_id is not None:
            params["object_id"] = object_id
        if page.after is not None:
            params["after"] = page.after[0]
        raw = await self._segment_page_rows(shape, params)
        if len(raw) > page.limit:
            raw = raw[: page.limit]
            next_key: tuple[Any, ...] | None = (raw[-1][0],)
        else:
            next_key = None
        # Tuples are made with tuple.__new__, not the named tuples' own constructors (Python
        # functions): a third of the time spent on a page's rows went to those calls.
        make = tuple.__new__
        rows = [make(SegmentRow, r) for r in raw]
        unknown = {r.object_id for r in rows if not r.sole_instance}
        unknown.update(r.init_object_id for r in rows if r.init_object_id)
        instances = await self.instances(unknown) if unknown else {}
        return Page(rows, page.limit, next_key, page.reverse, {"instances": instances})

    async def _segment_page_rows(self, shape: Shape, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """The page statement's rows, as tuples from the driver."""
        return await self._driver_rows(sql_for(shape), params)

    async def overlapping_segments(self, flow_id: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Bounds of existing segments overlapping ``[lo, hi)`` (for the no-overlap rule)."""
        rows = await self._driver_rows(_OVERLAPPING, {"flow_id": flow_id, "lo": lo, "hi": hi})
        return [(r[0], r[1]) for r in rows]

    async def insert_segments(self, rows: list[dict[str, Any]]) -> None:
        """Insert segment rows (Conflict when one overlaps). The caller renews the Flow's pages
        token (``TimelineWrites.add_segments``, in the same statement as its counters)."""
        if not rows:
            return
        # No savepoint: a Conflict ends the whole transaction (it is rolled back), so there is
        # nothing to keep. On PostgreSQL a savepoint and its release were four round trips of
        # every registration (their names change each time, so asyncpg prepares each anew).
        try:
            await self._insert_many(t.segments, rows)
        except IntegrityError as exc:
            raise Conflict("segment overlaps an existing segment of the Flow") from exc

    async def segment_extent(
        self, flow_id: str, lo: int | None = None, hi: int | None = None
    ) -> tuple[str, str] | None:
        """The timeranges of the first and last segment of the Flow (optionally of those
        overlapping ``[lo, hi)``); None when there are none."""
        s = t.segments
        where = segment_range_clause(flow_id, lo, hi)
        first = await self._one(select(s.c.timerange, s.c.ts_start).where(where).order_by(s.c.ts_start).limit(1))
        if first is None:
            return None
        last = await self._one(select(s.c.timerange, s.c.ts_end).where(where).order_by(s.c.ts_start.desc()).limit(1))
        return str(first.timerange), str(last.timerange)

    async def last_segment(self, flow_id: str) -> tuple[int, int, str | None] | None:
        """The end, ``ts_offset`` and init Object of the Flow's last segment: one indexed read."""
        rows = await self._driver_rows(_LAST_SEGMENT, (flow_id,))
        return None if not rows else (int(rows[0][0]), int(rows[0][1] or 0), rows[0][2])

    async def longest_segment(self, flow_id: str, lo: int | None, hi: int | None) -> int | None:
        """The longest duration among the segments overlapping ``[lo, hi)``: one pass over
        their index entries (a VOD playlist's target duration comes before its segments)."""
        s = t.segments
        row = await self._one(
            select(func.max(s.c.ts_end - s.c.ts_start).label("longest")).where(segment_range_clause(flow_id, lo, hi))
        )
        return None if row is None or row.longest is None else int(row.longest)

    async def segments_to_delete(
        self, flow_id: str, lo: int | None, hi: int | None, object_id: str | None, limit: int
    ) -> list[DeletableSegment]:
        """Segments wholly inside ``[lo, hi)`` (optionally of one Object), in time order, each
        with its Object's init Object and size (what removing it needs; read in the same
        statement, not by a second one over the chunk's Object ids). On the driver: a deletion
        reads a thousand a chunk, and SQLAlchemy's rows cost more than the statement."""
        conditions = range_conditions("segments", lo=lo is not None, hi=hi is not None)
        params: dict[str, Any] = {"flow_id": flow_id, "limit": limit}
        if lo is not None:  # wholly inside: starting at or after lo too
            conditions += " AND segments.ts_start >= :lo"
            params["lo"] = lo
        if hi is not None:
            conditions += " AND segments.ts_end <= :hi"
            params["hi"] = hi
        if object_id is not None:
            conditions += " AND segments.object_id = :object_id"
            params["object_id"] = object_id
        rows = await self._driver_rows(
            "SELECT segments.ts_start, segments.ts_end, segments.object_id, segments.timerange,"
            " objects.init_object_id, objects.size FROM segments LEFT OUTER JOIN objects"
            f" ON objects.id = segments.object_id WHERE segments.flow_id = :flow_id{conditions}"
            " ORDER BY segments.ts_start LIMIT :limit",
            params,
        )
        make = tuple.__new__
        return [make(DeletableSegment, r) for r in rows]

    def _deletable(
        self, stmt: Select[Any], flow_id: str, lo: int | None, hi: int | None, object_id: str | None
    ) -> Select[Any]:
        s = t.segments
        stmt = stmt.where(segment_range_clause(flow_id, lo, hi))
        if lo is not None:
            stmt = stmt.where(s.c.ts_start >= lo)
        if hi is not None:
            stmt = stmt.where(s.c.ts_end <= hi)
        if object_id is not None:
            stmt = stmt.where(s.c.object_id == object_id)
        return stmt

    async def delete_segments(self, flow_id: str, starts: list[int], span: tuple[int, int] | None = None) -> None:
        """Delete the Flow's segments starting at ``starts``; with ``span`` (first, last start),
        they are all the Flow has from the one to the other, and go as one range scan. The
        caller renews the pages token (``TimelineWrites.remove_segments``)."""
        if span is not None:
            await self._driver_rows(
                "DELETE FROM segments WHERE flow_id = ? AND ts_start >= ? AND ts_start <= ?", (flow_id, *span)
            )
        elif self.conn.dialect.name == "postgresql":  # one statement, not one per segment
            await self._driver_rows(
                "",
                (),
                postgresql=(
                    "DELETE FROM segments WHERE flow_id = $1 AND ts_start = ANY($2::bigint[])",
                    [flow_id, starts],
                ),
            )
        else:
            await self._executemany(
                "DELETE FROM segments WHERE flow_id = ? AND ts_start = ?", [(flow_id, start) for start in starts]
            )

    async def count_segments_in(
        self, flow_id: str, lo: int | None, hi: int | None, object_id: str | None, limit: int
    ) -> int:
        """How many segments lie wholly inside ``[lo, hi)``, counting no further than ``limit``."""
        s = t.segments
        rows = await self._all(self._deletable(select(s.c.ts_start), flow_id, lo, hi, object_id).limit(limit))
        return len(rows)

    async def move_segments_to_deleted(
        self, batch_id: str, flow_id: str, starts: list[int], now: int, span: tuple[int, int] | None = None
    ) -> None:
        """Keep segments in the recovery window instead of dropping them (then delete them).
        ``span`` as for ``delete_segments``."""
        s, d = t.segments, t.deleted_segments
        cols = [c.name for c in s.c]
        picked = select(literal(batch_id).label("batch_id"), literal(now).label("deleted_at"), *[s.c[c] for c in cols])
        if span is not None:
            where = [s.c.flow_id == flow_id, s.c.ts_start >= span[0], s.c.ts_start <= span[1]]
            await self.conn.execute(insert(d).from_select(["batch_id", "deleted_at", *cols], picked.where(*where)))
        else:
            for i in range(0, len(starts), 500):
                chunk = picked.where(s.c.flow_id == flow_id, s.c.ts_start.in_(starts[i : i + 500]))
                await self.conn.execute(insert(d).from_select(["batch_id", "deleted_at", *cols], chunk))
        await self.delete_segments(flow_id, starts, span)
