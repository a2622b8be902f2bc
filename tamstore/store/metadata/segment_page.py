"""The segment page query, the hottest read of the store, as SQL text run on the raw driver.

A 100-segment page through SQLAlchemy Core spent more time building Row objects and reading
their attributes than SQLite spent answering (see docs/performance.md). Here the same query is
written once as SQL, run on the sqlite3 or asyncpg connection underneath, and its rows come back
as plain named tuples, each made from the driver's own tuple with no copy.
``tests/store/test_segment_page.py`` checks it returns exactly what the same query built with
SQLAlchemy from the store's own ``segment_range_clause`` returns.

The query: one page of a Flow's segments overlapping ``[lo, hi)`` in time order (keyset on
``ts_start``), each with its Object's init Object id, backend and whether that backend's
controlled instance is the Object's only one (``objects.sole_instance``). Nearly every Object is
in that state, and its URLs are made from its backend alone; the instances of the others are
read by the caller in a second statement. Joining every segment to its instances cost a third
of the statement (docs/performance.md). The lower bound is the start of the first segment
ending after ``lo``: segments never overlap, so the scan starts there and never from the start
of the Flow.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

__all__ = ["SegmentRow", "Shape", "range_conditions", "sql_for"]


class SegmentRow(NamedTuple):
    ts_start: int
    ts_end: int
    timerange: str
    object_id: str
    ts_offset: int
    last_duration: int | None
    object_timerange: str | None
    key_frame_count: int | None
    sample_offset: int | None
    sample_count: int | None
    init_object_id: str | None
    # The Object's backend, and whether the controlled instance there is the Object's only one
    # (truthy: its URLs come from that backend alone; SQLite gives 0 or 1).
    storage_id: str | None
    sole_instance: bool | int


class Shape(NamedTuple):
    """Which optional conditions a page query has (each shape is one cached statement)."""

    lo: bool
    hi: bool
    object_id: bool
    after: bool
    reverse: bool


_TEMPLATE = """\
SELECT s.ts_start, s.ts_end, s.timerange, s.object_id, s.ts_offset, s.last_duration,
       s.object_timerange, s.key_frame_count, s.sample_offset, s.sample_count, o.init_object_id,
       o.storage_id, o.sole_instance
FROM segments s JOIN objects o ON o.id = s.object_id
WHERE s.flow_id = :flow_id{conditions}
ORDER BY s.ts_start {direction}
LIMIT :limit"""


def range_conditions(alias: str, *, lo: bool, hi: bool) -> str:
    """`` AND ...`` conditions on the segments ``alias`` for those overlapping ``[:lo, :hi)`` (of
    ``:flow_id``), as ``segment_range_clause`` builds them: the scan starts at the start of the
    first segment ending after ``:lo``. Every statement on the driver that reads a time range of a
    Flow's segments takes its range from here."""
    conditions = ""
    if lo:
        conditions += (
            f"\n  AND {alias}.ts_start >= (SELECT ts_start FROM segments"
            " WHERE flow_id = :flow_id AND ts_end > :lo ORDER BY ts_end LIMIT 1)"
        )
    if hi:
        conditions += f"\n  AND {alias}.ts_start < :hi"
    return conditions


@functools.cache
def sql_for(shape: Shape) -> str:
    """The SQL text for a shape, with ``:name`` placeholders (driver.for_asyncpg numbers them
    for asyncpg)."""
    conditions = range_conditions("s", lo=shape.lo, hi=shape.hi)
    if shape.object_id:
        conditions += "\n  AND s.object_id = :object_id"
    if shape.after:
        conditions += "\n  AND s.ts_start " + ("< :after" if shape.reverse else "> :after")
    return _TEMPLATE.format(conditions=conditions, direction="DESC" if shape.reverse else "ASC")
