"""Coverage blocks (``tamstore.domain.coverage``): kept by segment writes, read by the timeline.

Adding segments adds to their blocks (an upsert per block touched: a batch of one-second
segments touches one or two of each size). Removing segments counts the blocks at the edges of
what went again, from the segments (a minute) or the finer blocks (an hour), and drops the blocks
in between, which the removal emptied; a removal that is not one range counts again every block
it touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tamstore.domain.coverage import BLOCK_SECONDS, block_sums
from tamstore.domain.timerange import INT64_MAX, INT64_MIN, NS_PER_S
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.rows import SegmentStats

__all__ = ["CoverageQueries", "backfill_sql"]

_COLUMNS = "flow_id, seconds, block, segments, covered, shortest, longest"
_ADD = (
    f"INSERT INTO coverage_blocks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (flow_id, seconds, block) DO UPDATE SET"
    " segments = coverage_blocks.segments + excluded.segments,"
    " covered = coverage_blocks.covered + excluded.covered,"
    " shortest = {least}(coverage_blocks.shortest, excluded.shortest),"
    " longest = {greatest}(coverage_blocks.longest, excluded.longest)"
)
_ADD_SQL = {
    "sqlite": _ADD.format(least="min", greatest="max"),
    "postgresql": _ADD.format(least="least", greatest="greatest"),
}
_DROP = "DELETE FROM coverage_blocks WHERE flow_id = ? AND seconds = ? AND block = ?"
_DROP_BETWEEN = "DELETE FROM coverage_blocks WHERE flow_id = ? AND seconds = ? AND block > ? AND block < ?"
# One block counted again: a minute from its segments, a coarser block from the finer blocks in
# it. No row when nothing is left. (Casts: PostgreSQL cannot type a bare parameter in a SELECT list.)
_KEYS = "CAST(? AS VARCHAR(36)), CAST(? AS INTEGER), CAST(? AS BIGINT)"
_RECOUNT_FROM_SEGMENTS = (
    f"INSERT INTO coverage_blocks ({_COLUMNS}) SELECT {_KEYS}, count(*), sum(ts_end - ts_start),"
    " min(ts_end - ts_start), max(ts_end - ts_start) FROM segments"
    " WHERE flow_id = ? AND ts_start >= ? AND ts_start < ? HAVING count(*) > 0"
)
_RECOUNT_FROM_BLOCKS = (
    f"INSERT INTO coverage_blocks ({_COLUMNS}) SELECT {_KEYS}, sum(segments), sum(covered),"
    " min(shortest), max(longest) FROM coverage_blocks"
    " WHERE flow_id = ? AND seconds = ? AND block >= ? AND block < ? HAVING count(*) > 0"
)


def _span_of(block: int, size: int) -> tuple[int, int]:
    """A block's ``[start, end)``, kept inside the 64-bit columns: the first and last blocks of
    the timeline reach past them (no stored segment does)."""
    return max(block * size, INT64_MIN), min((block + 1) * size, INT64_MAX)


def _floor_div(column: str, size: int) -> str:
    """``column // size`` in SQL, rounding down for negative timestamps too (SQL's integer
    division rounds towards zero)."""
    return f"CASE WHEN {column} >= 0 THEN {column} / {size} ELSE -((-{column} - 1) / {size}) - 1 END"


def backfill_sql(seconds: int, one_flow: bool = False) -> str:
    """The statement that fills the blocks of ``seconds`` from the segments stored (of one
    Flow with ``one_flow``: its id the one ``?`` parameter), for the migration that adds the
    blocks and for loaders that write segments past the store."""
    block = _floor_div("ts_start", seconds * NS_PER_S)
    where = " WHERE flow_id = ?" if one_flow else ""
    return (
        f"INSERT INTO coverage_blocks ({_COLUMNS}) SELECT flow_id, {seconds}, {block}, count(*),"
        f" sum(ts_end - ts_start), min(ts_end - ts_start), max(ts_end - ts_start) FROM segments{where}"
        f" GROUP BY flow_id, {block}"
    )


class CoverageQueries(Queries):
    """A Flow's coverage blocks: kept up to date, and read."""

    async def add_coverage(self, flow_id: str, spans: Iterable[tuple[int, int]]) -> None:
        """Count new segments (their ``(ts_start, ts_end)``) in their blocks, in one order
        (size, then time) whatever the segments' order, so that two writers never lock two
        blocks in opposite orders."""
        sums = sorted(block_sums(spans))
        if sums:
            await self._executemany(_ADD_SQL[self.conn.dialect.name], [(flow_id, *s) for s in sums])

    async def remove_coverage(self, flow_id: str, starts: Sequence[int], contiguous: bool) -> None:
        """Count again the blocks of segments just removed (their starts, in time order).
        ``contiguous``: every segment from the first start to the last went, so the blocks
        strictly between the first's and the last's are empty now."""
        if not starts:
            return
        finer: int | None = None
        for seconds in BLOCK_SECONDS:
            size = seconds * NS_PER_S
            if contiguous:
                first, last = starts[0] // size, starts[-1] // size
                if last - first > 1:
                    await self._executemany(_DROP_BETWEEN, [(flow_id, seconds, first, last)])
                touched = sorted({first, last})
            else:
                touched = sorted({s // size for s in starts})
            await self._executemany(_DROP, [(flow_id, seconds, b) for b in touched])
            if finer is None:
                from_segments = [(flow_id, seconds, b, flow_id, *_span_of(b, size)) for b in touched]
                await self._executemany(_RECOUNT_FROM_SEGMENTS, from_segments)
            else:
                ratio = seconds // finer
                from_blocks = [(flow_id, seconds, b, flow_id, finer, b * ratio, (b + 1) * ratio) for b in touched]
                await self._executemany(_RECOUNT_FROM_BLOCKS, from_blocks)
            finer = seconds

    async def coverage_totals(self) -> dict[tuple[str, int], int]:
        """Segments counted by each Flow's blocks of each size (``tamstore admin check``: a
        whole-table read, for operators)."""
        rows = await self._driver_rows(
            "SELECT flow_id, seconds, sum(segments) FROM coverage_blocks GROUP BY flow_id, seconds", ()
        )
        return {(flow_id, int(seconds)): int(n) for flow_id, seconds, n in rows}

    async def block_stats(self, flow_id: str, seconds: int, start: int, end: int) -> SegmentStats:
        """Count, total, shortest and longest duration of the segments starting in ``[start,
        end)``, both on block boundaries of ``seconds``."""
        size = seconds * NS_PER_S
        rows = await self._driver_rows(
            "SELECT coalesce(sum(segments), 0), coalesce(sum(covered), 0), min(shortest), max(longest)"
            " FROM coverage_blocks WHERE flow_id = ? AND seconds = ? AND block >= ? AND block < ?",
            (flow_id, seconds, start // size, end // size),
        )
        count, total, shortest, longest = rows[0]
        return SegmentStats(int(count), int(total), shortest, longest)

    async def block_spans(self, flow_id: str, seconds: int, start: int, end: int) -> list[tuple[int, int]]:
        """Each block of ``seconds`` in ``[start, end)`` (on its boundaries) as one span: its
        covered nanoseconds from its start (how a timeline spreads it over its parts)."""
        size = seconds * NS_PER_S
        rows = await self._driver_rows(
            "SELECT block, covered FROM coverage_blocks WHERE flow_id = ? AND seconds = ? AND block >= ? AND block < ?"
            " ORDER BY block",
            (flow_id, seconds, start // size, end // size),
        )
        return [(block * size, block * size + covered) for block, covered in rows]
