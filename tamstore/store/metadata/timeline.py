"""Writes that change a Flow's timeline, each with all the state derived from it.

A segment is more than its row: the Objects it uses count one more reference (``object_refs``,
which decides when bytes may be deleted), the Flow's span, counters and ``segments_updated``
move, its coverage blocks change (zoomed-out timelines), and its pages token changes (kept
segment pages). ``add_segments`` and ``remove_segments`` are the only ways the operations add or
remove segments, so no caller can forget one of these.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tamstore.domain.playlists import is_break
from tamstore.domain.segments import reference_counts
from tamstore.store.metadata.base import new_pages_token
from tamstore.store.metadata.catalog import CatalogQueries
from tamstore.store.metadata.coverage import CoverageQueries
from tamstore.store.metadata.deletion import DeletionQueries
from tamstore.store.metadata.rows import FlowRow
from tamstore.store.metadata.segments import SegmentQueries

__all__ = ["SegmentSpan", "TimelineWrites"]

# The Flow's counters, on the driver: written by every segment write (added segments' new
# totals, computed from the row this transaction read) and every deletion chunk (removed
# segments' increments, so the row need not be read again, and the span the Flow's remaining
# segments have, read in the same statement).
_UPDATE_COUNTERS = (
    "UPDATE flows SET pages_token = ?, segments_updated = ?, seg_start = ?, seg_end = ?, seg_count = ?,"
    " seg_duration = ?, seg_bytes = ?, seg_breaks = ? WHERE id = ?"
)
_REMOVE_COUNTERS = (
    "UPDATE flows SET pages_token = ?, segments_updated = ?,"
    " seg_start = (SELECT ts_start FROM segments WHERE flow_id = flows.id ORDER BY ts_start LIMIT 1),"
    " seg_end = (SELECT ts_end FROM segments WHERE flow_id = flows.id ORDER BY ts_end DESC LIMIT 1),"
    " seg_count = seg_count - ?, seg_duration = seg_duration - ?, seg_bytes = seg_bytes - ?,"
    " seg_removed = seg_removed + ? WHERE id = ?"
)
_START, _END, _OBJECT = (operator.itemgetter(c) for c in ("ts_start", "ts_end", "object_id"))


class SegmentSpan(Protocol):
    """What removing a segment needs to know of it (a segment row, stored or deleted)."""

    @property
    def ts_start(self) -> int: ...
    @property
    def ts_end(self) -> int: ...
    @property
    def object_id(self) -> str: ...
    @property
    def init_object_id(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...


class TimelineWrites(CatalogQueries, SegmentQueries, DeletionQueries, CoverageQueries):
    """Adding and removing segments together with their references, span and counters."""

    async def add_segments(
        self,
        flow: FlowRow,
        rows: list[dict[str, Any]],
        init_of: Mapping[str, str | None],
        sizes: Mapping[str, int],
        now: int,
    ) -> None:
        """Insert segment rows of ``flow`` (Conflict if one overlaps a stored segment) with
        their derived state. ``init_of`` and ``sizes`` give each used Object's init Object and
        byte size as they are once this transaction commits; ``now`` (µs) is ``segments_updated``."""
        if not rows:
            return
        rows = sorted(rows, key=_START)  # (usually in order already: one pass)
        starts, ends = list(map(_START, rows)), list(map(_END, rows))
        object_ids = list(map(_OBJECT, rows))
        lo, hi = starts[0], max(ends)
        breaks = 0
        if flow.seg_end is not None and lo >= flow.seg_end:  # appended at the end: count its breaks
            prev = await self.last_segment(flow.id)
            offsets = [r.get("ts_offset") or 0 for r in rows]
            inits = list(map(init_of.get, object_ids))
            if prev is not None:
                breaks += is_break(prev[0], prev[1], prev[2], lo, offsets[0], inits[0])
            breaks += sum(map(is_break, ends, offsets, inits, starts[1:], offsets[1:], inits[1:]))
        await self.insert_segments(rows)
        await self.add_refs(flow.id, reference_counts(object_ids, init_of))
        await self.add_coverage(flow.id, zip(starts, ends, strict=True))
        await self._executemany(  # the pages token renewed with the counters: one statement
            _UPDATE_COUNTERS,
            [
                (
                    new_pages_token(),
                    now,
                    lo if flow.seg_start is None else min(lo, flow.seg_start),
                    hi if flow.seg_end is None else max(hi, flow.seg_end),
                    flow.seg_count + len(rows),
                    flow.seg_duration + sum(ends) - sum(starts),
                    flow.seg_bytes + sum(map(sizes.get, object_ids, itertools.repeat(0))),
                    flow.seg_breaks + breaks,
                    flow.id,
                )
            ],
        )

    async def remove_segments(
        self, flow_id: str, rows: Sequence[SegmentSpan], batch: str | None, now: int, *, contiguous: bool = False
    ) -> set[str]:
        """Delete these stored segments of the Flow (into the recovery window ``batch`` when one
        is given) with their derived state. ``contiguous``: the rows are every segment of the
        Flow from the first to the last (in time order), so they go as one range. Returns the
        Objects they used, init Objects too: the ones whose bytes may now be unreferenced."""
        if not rows:
            return set()
        starts = [r.ts_start for r in rows]
        span = (starts[0], starts[-1]) if contiguous else None
        if batch is not None:
            await self.move_segments_to_deleted(batch, flow_id, starts, now, span)
            await self.count_batch_segments(batch, len(rows))
        else:
            await self.delete_segments(flow_id, starts, span)
        await self.remove_coverage(flow_id, starts, contiguous)
        init_of = {r.object_id: r.init_object_id for r in rows}
        await self.remove_refs(flow_id, reference_counts([r.object_id for r in rows], init_of))
        await self._executemany(  # counters as increments, the span read again, the pages token renewed
            _REMOVE_COUNTERS,
            [
                (
                    new_pages_token(),
                    now,
                    len(rows),
                    sum(r.ts_end for r in rows) - sum(starts),
                    sum(r.size or 0 for r in rows),
                    len(rows),
                    flow_id,
                )
            ],
        )
        return set(init_of) | {i for i in init_of.values() if i}
