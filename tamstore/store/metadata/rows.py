"""Declared types of the rows that leave the store: one NamedTuple per table, its fields the
table's columns in order (``tests/store/test_rows.py`` holds them to ``tables.py``). Operations
read them by attribute; nothing of SQLAlchemy crosses into ``ops``."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "BatchRow",
    "DeletableSegment",
    "DeleteRequestRow",
    "DeletedFlowRow",
    "DeletedSegmentRow",
    "EventRow",
    "FlowRef",
    "SegmentStats",
    "StoredObject",
    "UsageGroup",
    "FlowRow",
    "InstanceRow",
    "ObjectRow",
    "ProfileRow",
    "RetainedFlow",
    "SourceRow",
    "UsageDayRow",
    "WebhookRow",
    "all_equal",
    "flow_row",
    "row_as",
    "rows_as",
]


class SourceRow(NamedTuple):
    """A row of ``sources``."""

    id: str
    format: str
    label: str | None
    label_key: str
    description: str | None
    tags: str
    created_by: str | None
    updated_by: str | None
    created: int
    updated: int
    auth_key: str | None


class FlowRow(NamedTuple):
    """A row of ``flows``."""

    id: str
    source_id: str
    format: str
    codec: str | None
    container: str | None
    label: str | None
    label_key: str
    status: str | None
    profile_id: str | None
    frame_width: int | None
    frame_height: int | None
    init_segments: bool
    read_only: bool
    doc: str
    created: int
    metadata_updated: int
    segments_updated: int | None
    seg_start: int | None
    seg_end: int | None
    seg_count: int
    seg_duration: int
    seg_bytes: int
    pages_token: int
    seg_removed: int
    seg_breaks: int
    auth_key: str | None


class ProfileRow(NamedTuple):
    """A row of ``profiles``."""

    id: str
    format: str
    codec: str | None
    label: str | None
    doc: str
    created: int


class ObjectRow(NamedTuple):
    """A row of ``objects``."""

    id: str
    allocated_for_flow: str | None
    storage_id: str | None
    content_type: str | None
    allocated_at: int
    registered: bool
    is_init: bool
    first_referenced_by_flow: str | None
    timerange: str | None
    key_frame_count: int | None
    init_object_id: str | None
    size: int | None
    sole_instance: bool


class InstanceRow(NamedTuple):
    """A row of ``object_instances``."""

    id: int
    object_id: str
    storage_id: str | None
    url: str | None
    label: str | None
    controlled: bool


class DeleteRequestRow(NamedTuple):
    """A row of ``flow_delete_requests``."""

    id: str
    flow_id: str
    timerange_to_delete: str
    timerange_remaining: str | None
    object_id: str | None
    delete_flow: bool
    status: str
    error: str | None
    created: int
    created_by: str | None
    updated: int
    expiry: int | None
    expiry_key: int
    lease_owner: str | None
    lease_until: int | None


class DeletedFlowRow(NamedTuple):
    """A row of ``deleted_flows``."""

    batch_id: str
    flow_id: str
    deleted_at: int
    flow: str
    tags: str
    collection: str
    source: str | None


class DeletedSegmentRow(NamedTuple):
    """A row of ``deleted_segments``."""

    batch_id: str
    deleted_at: int
    flow_id: str
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


class BatchRow(NamedTuple):
    """A row of ``deletion_batches``."""

    id: str
    flow_id: str
    timerange: str
    whole_flow: bool
    segments: int
    deleted_at: int


class WebhookRow(NamedTuple):
    """A row of ``webhooks``."""

    id: str
    url: str
    doc: str
    api_key_value: str | None
    status: str
    error: str | None
    cursor: int
    attempts: int
    next_attempt: int
    lease_owner: str | None
    lease_until: int | None
    created: int
    created_by: str | None
    owner_groups: str | None
    owner_admin: bool
    auth_key: str | None


class EventRow(NamedTuple):
    """A row of ``events``."""

    id: int
    seq: int | None
    event_type: str
    flow_id: str | None
    source_id: str | None
    meta: str
    payload: str
    created: int


class UsageDayRow(NamedTuple):
    """A row of ``usage_history``."""

    day: str
    storage_id: str
    objects: int
    bytes: int


class UsageGroup(NamedTuple):
    """Flows summed by one grouping key (``key`` is "all" without grouping)."""

    key: str
    flows: int
    segments: int
    duration: int
    bytes: int


class SegmentStats(NamedTuple):
    """Segments overlapping a range: how many, their total length, shortest and longest (ns)."""

    segments: int
    total: int
    shortest: int | None
    longest: int | None


class DeletableSegment(NamedTuple):
    """A segment about to be deleted, with what removing it needs of its Object (a join)."""

    ts_start: int
    ts_end: int
    object_id: str
    timerange: str
    init_object_id: str | None
    size: int | None


class StoredObject(NamedTuple):
    """An Object and the backend its bytes were allocated on."""

    id: str
    storage_id: str


class FlowRef(NamedTuple):
    """A Flow that uses an Object (``object_refs``)."""

    flow_id: str


class RetainedFlow(NamedTuple):
    """A Flow's retention tag and what a retention pass decides on (a join, not one table)."""

    flow_id: str
    name: str
    value: str
    seg_start: int | None
    read_only: bool
    metadata_updated: int
    segments_updated: int | None


R = TypeVar("R", bound=tuple[Any, ...])


def row_as(kind: type[R], row: Sequence[Any] | None) -> R | None:
    """``row`` (a SQLAlchemy Row or a driver tuple, possibly with extra columns after the
    table's, such as paging keys) as ``kind``; None stays None."""
    if row is None:
        return None
    return tuple.__new__(kind, row[: len(kind._fields)])  # type: ignore[attr-defined]


_FLOW_BOOLS = (FlowRow._fields.index("init_segments"), FlowRow._fields.index("read_only"))


def flow_row(row: Sequence[Any]) -> FlowRow:
    """A ``flows`` row read on the driver as a FlowRow: its booleans made ``bool`` (SQLite gives
    0 and 1, which a document would show as numbers)."""
    values = list(row[: len(FlowRow._fields)])
    for i in _FLOW_BOOLS:
        values[i] = bool(values[i])
    return tuple.__new__(FlowRow, values)


def rows_as(kind: type[R], rows: Sequence[Sequence[Any]]) -> list[R]:
    """Each row as ``kind``, made with ``tuple.__new__`` from a slice of the row (a listing page
    makes a hundred: the named tuple's own ``_make`` is a Python function, and copying the row
    whole before slicing it doubled the copying)."""
    n = len(kind._fields)  # type: ignore[attr-defined]
    make = tuple.__new__
    return [make(kind, r[:n]) for r in rows]


def all_equal(rows: Sequence[Mapping[str, Any]], key: str, value: Any) -> bool:
    """Whether every row's ``key`` equals ``value``, in C loops (the values picked out, then
    counted): a column of a 1,000-segment batch in 25 µs, a Python test per row in 80."""
    return list(map(operator.itemgetter(key), rows)).count(value) == len(rows)
