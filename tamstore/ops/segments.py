"""Flow Segments: register, read by time, delete (CHECKLIST §7; ADR 0029, 0030, 0036, 0045).

Registering a batch costs a fixed number of queries whatever its size: one for the segments
already in the batch's span, one for the Objects it names, one insert of all new segments.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tamstore.domain.errors import BadRequest, error_body
from tamstore.domain.objects import UrlFilter
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.segments import SegmentPost, overlaps_any, parse_segment
from tamstore.domain.timerange import TimeRange, format_timestamp
from tamstore.ops import access, events
from tamstore.ops.context import Context, now_us
from tamstore.ops.flows import writable_flow
from tamstore.ops.objects import UrlRenderer
from tamstore.ops.render import extent_timerange
from tamstore.store.metadata.objects import sole_storage
from tamstore.store.metadata.rows import ObjectRow
from tamstore.store.metadata.sql import Tx

__all__ = ["SegmentQuery", "list_segments", "post_segments"]


@dataclass(frozen=True)
class SegmentQuery:
    timerange: TimeRange
    object_id: str | None
    urls: UrlFilter
    include_object_timerange: bool = False


@dataclass(slots=True)
class _ObjectState:
    """What the batch knows about one Object as it goes (it may register it part-way)."""

    row: ObjectRow | None
    registered: bool
    is_init: bool
    timerange: TimeRange | None
    init_object_id: str | None
    allocated_for: str | None
    changes: dict[str, Any]  # the columns registering it fixes (``registered`` goes without saying)
    new_instances: list[dict[str, Any]]


async def list_segments(
    ctx: Context, flow_id: str, query: SegmentQuery, page: PageRequest, base_url: str
) -> Page[dict[str, Any]]:
    tr = query.timerange
    if tr.is_empty():
        return Page([], page.limit, None, page.reverse, {"timerange": TimeRange.never()})
    async with ctx.store.read() as tx:
        if not access.current().everything and not await _readable(tx, flow_id):
            return Page([], page.limit, None, page.reverse, {"timerange": TimeRange.never()})
        result = await tx.list_segments(flow_id, page, lo=tr.start, hi=tr.end, object_id=query.object_id)
        instances = result.extra.pop("instances")
    rows = result.items
    result.items = segment_docs(ctx, rows, instances, query, base_url)
    span = TimeRange.never()
    if rows:
        first, last = (rows[0], rows[-1]) if not page.reverse else (rows[-1], rows[0])
        span = extent_timerange(first.timerange, last.timerange)
    result.extra["timerange"] = span
    return result


async def _readable(tx: Tx, flow_id: str) -> bool:
    """Whether the caller may read the Flow's segments: a hidden Flow's list is that of a
    missing one."""
    row = await tx.get_flow(flow_id)
    return row is None or access.allows(row)


def segment_docs(
    ctx: Context,
    rows: list[Any],
    instances: Mapping[str, Sequence[Any]],
    query: SegmentQuery,
    base_url: str,
) -> list[dict[str, Any]]:
    """flow-segment.json documents for segment rows (``SegmentRow``'s fields: each names its
    Object's init Object and says whether the Object has only its controlled instance, and on
    which backend), given the instances of the other Objects and of the init Objects (looked up
    by the caller: from the database now, or as recorded in a webhook event). This is the hot
    loop of a segment page: plain attribute reads, no per-URL set-up, and an Object with only
    its controlled instance (nearly every one) rendered from its backend without one. Such an
    Object's ``get_urls`` is JSON already (``orjson.Fragment``, made once per URL window), so
    the documents are for ``orjson.dumps``, which every caller gives them to."""
    with_object_timerange = query.include_object_timerange
    no_instances: tuple[Any, ...] = ()
    renderer = UrlRenderer(ctx, query.urls, base_url)
    render, controlled_json = renderer.render, renderer.controlled_json().get
    out = []
    for r in rows:
        object_id = r.object_id
        seg: dict[str, Any] = {"object_id": object_id, "timerange": r.timerange}
        if r.ts_offset:
            seg["ts_offset"] = format_timestamp(r.ts_offset)
        if r.last_duration is not None:
            seg["last_duration"] = format_timestamp(r.last_duration)
        if r.key_frame_count is not None:
            seg["key_frame_count"] = r.key_frame_count
        if r.sample_offset is not None:
            seg["sample_offset"] = r.sample_offset
        if r.sample_count is not None:
            seg["sample_count"] = r.sample_count
        if with_object_timerange:
            seg["object_timerange"] = r.object_timerange or (
                TimeRange.from_str(r.timerange).shift(-r.ts_offset).to_str()
            )
        if r.sole_instance:
            as_json = controlled_json(r.storage_id)
            seg["get_urls"] = [] if as_json is None else as_json(object_id)
        else:
            seg["get_urls"] = render(object_id, instances.get(object_id, no_instances))
        init = r.init_object_id
        if init:
            seg["init_object"] = {"object_id": init, "get_urls": render(init, instances.get(init, no_instances))}
        out.append(seg)
    return out


BATCH = 1000  # segments registered per transaction


async def post_segments(ctx: Context, flow_id: str, body: Any) -> list[dict[str, Any]] | None:
    """Register one segment or an array. Returns None when all succeeded, else the failures
    (only for an array: a single bad segment raises ``BadRequest``). An array (at most
    ``max_json_items``) is registered ``BATCH`` segments a transaction, letting other requests
    run in between, so that a large one neither holds the write lock nor the event loop for
    long; each segment succeeds or fails on its own either way, as the spec's failed list allows."""
    single = not isinstance(body, list)
    items = [body] if single else body
    failures: list[dict[str, Any]] = []
    for start in range(0, max(len(items), 1), BATCH):
        if start:
            await asyncio.sleep(0)
        failures += await _post_batch(ctx, flow_id, items[start : start + BATCH], single)
    return failures or None


async def _post_batch(ctx: Context, flow_id: str, items: list[Any], single: bool) -> list[dict[str, Any]]:
    async with ctx.store.write() as tx:
        flow = await writable_flow(tx, flow_id)
        if not flow.container:
            raise BadRequest(f"Flow {flow_id} has no container set, so it cannot hold segments")
        failures: list[dict[str, Any]] = []
        parsed: list[SegmentPost] = []
        for raw in items:
            try:
                parsed.append(parse_segment(raw))
            except BadRequest as exc:
                failures.append(_failure(raw, exc))
        accepted, states = await _check_batch(ctx, tx, flow, parsed, failures)
        if single and failures:
            raise BadRequest(failures[0]["error"]["summary"])
        await _save_objects(tx, states)
        if accepted:
            await _commit_batch(tx, flow, accepted, states)
    return failures


async def _check_batch(
    ctx: Context, tx: Tx, flow: Any, parsed: list[SegmentPost], failures: list[dict[str, Any]]
) -> tuple[list[SegmentPost], dict[str, _ObjectState]]:
    """The segments of the batch that pass every rule, and what registering them makes of their
    Objects (recorded in the states; nothing is written here)."""
    if not parsed:
        return [], {}
    parsed = sorted(parsed, key=_start)
    lo = parsed[0].lo
    hi = max(s.hi for s in parsed)
    taken = await tx.overlapping_segments(flow.id, lo, hi)
    starts = [a for a, _ in taken]
    ids = {s.object_id for s in parsed} | {s.init_object_id for s in parsed if s.init_object_id}
    rows = await tx.get_objects(ids)
    states = {oid: _state_of(rows.get(oid)) for oid in ids}
    # AppNote 0016 step 6: reusing an Object needs read access to a Flow that already uses it;
    # one the caller may not see is as unknown to it as a missing one.
    used = {oid for oid, st in states.items() if st.registered}
    hidden = used - await tx.objects_visible(used, access.current())
    labels = ctx.backend_labels()
    accepted: list[SegmentPost] = []
    for seg in parsed:
        try:
            if hidden and (seg.object_id in hidden or seg.init_object_id in hidden):
                named = seg.object_id if seg.object_id in hidden else seg.init_object_id
                raise BadRequest(f"Object {named!r} is unknown: allocate it with /storage or give get_urls")
            if overlaps_any(seg.lo, seg.hi, starts, taken):
                raise BadRequest(f"segment {seg.timerange} overlaps an existing segment of the Flow")
            _check_objects(flow, seg, states, labels)
        except BadRequest as exc:
            failures.append(_failure(seg, exc))
            continue
        _claim_objects(flow, seg, states)
        i = bisect.bisect_left(starts, seg.lo)
        starts.insert(i, seg.lo)
        taken.insert(i, (seg.lo, seg.hi))
        accepted.append(seg)
    return accepted, states


_start = operator.attrgetter("lo")


def _state_of(row: ObjectRow | None) -> _ObjectState:
    """An Object's state as the batch starts, from its row (None: no such Object yet)."""
    if row is None:
        return _ObjectState(None, False, False, None, None, None, {}, [])
    timerange = TimeRange.from_str(row.timerange) if row.timerange else None
    return _ObjectState(
        row, bool(row.registered), bool(row.is_init), timerange, row.init_object_id, row.allocated_for_flow, {}, []
    )


def _check_objects(flow: Any, seg: SegmentPost, states: dict[str, _ObjectState], labels: set[str]) -> None:
    """The Object rules of CHECKLIST §7.3 for one segment, against the batch's running state."""
    if seg.get_urls:
        clash = [u["label"] for u in seg.get_urls if u["label"] in labels]
        if clash:
            raise BadRequest(f"get_urls label {clash[0]!r} is a Storage Backend's label")
    obj = states[seg.object_id]
    _check_media_object(flow, seg, obj)
    init_id = seg.init_object_id if seg.init_object_id is not None else obj.init_object_id
    if seg.init_object_id is not None and not flow.init_segments:
        raise BadRequest("init_object_id given but the Flow does not use init segments")
    if flow.init_segments and init_id is None:
        raise BadRequest("the Flow uses init segments, so the segment needs init_object_id")
    if seg.init_object_id is not None and seg.init_object_id != obj.init_object_id:
        _check_init_object(flow, seg.init_object_id, states[seg.init_object_id])


def _check_media_object(flow: Any, seg: SegmentPost, obj: _ObjectState) -> None:
    """The Object that holds the segment's media: known (or given by URL), this Flow's if not
    yet used, and consistent with what its first use fixed."""
    if obj.is_init:
        raise BadRequest(f"Object {seg.object_id!r} is an init Object and cannot hold media")
    if obj.row is None and not obj.registered:
        if not seg.get_urls:
            raise BadRequest(f"Object {seg.object_id!r} is unknown: allocate it with /storage or give get_urls")
    elif not obj.registered:
        if obj.allocated_for != flow.id:
            raise BadRequest(f"Object {seg.object_id!r} was allocated for another Flow")
    else:
        used = seg.on_object_timeline()
        if seg.object_timerange is not None and obj.timerange != seg.object_timerange:
            raise BadRequest(f"object_timerange conflicts with Object {seg.object_id!r}")
        if seg.init_object_id is not None and seg.init_object_id != obj.init_object_id:
            raise BadRequest(f"init_object_id conflicts with Object {seg.object_id!r}")
        if obj.timerange is not None and not obj.timerange.contains(used):
            raise BadRequest(f"segment uses {used} of Object {seg.object_id!r}, outside its timerange {obj.timerange}")
    if seg.object_timerange is not None and not seg.object_timerange.contains(used := seg.on_object_timeline()):
        raise BadRequest(f"object_timerange {seg.object_timerange} does not cover {used}")


def _check_init_object(flow: Any, init_id: str, init: _ObjectState) -> None:
    """An init Object the segment names for the first time: known, not holding media, and this
    Flow's if not yet used."""
    if init.row is None:
        raise BadRequest(f"init Object {init_id!r} is unknown")
    if init.registered and not init.is_init:
        raise BadRequest(f"Object {init_id!r} holds media and cannot be an init Object")
    if not init.registered and init.allocated_for != flow.id:
        raise BadRequest(f"init Object {init_id!r} was allocated for another Flow")


def _claim_objects(flow: Any, seg: SegmentPost, states: dict[str, _ObjectState]) -> None:
    """Record what registering ``seg`` changes in its Objects (first use fixes properties)."""
    obj = states[seg.object_id]
    if obj.registered:
        if seg.object_timerange is None and obj.timerange is not None and obj.timerange != seg.on_object_timeline():
            # A reuse of part of an Object: its segment says what the whole Object holds, for
            # readers to tell which samples to drop (AppNote 0036). A segment using all of its
            # Object leaves it unset; a read gives the used range, which is then the same.
            seg.object_timerange = obj.timerange
    else:
        obj.registered = True
        obj.timerange = seg.object_timerange or seg.on_object_timeline()
        obj.init_object_id = seg.init_object_id
        changes = obj.changes
        changes["first_referenced_by_flow"] = flow.id
        changes["timerange"] = obj.timerange.to_str()
        # Unset properties stay as allocated (NULL): not writing them spares their indexes.
        if seg.key_frame_count is not None:
            changes["key_frame_count"] = seg.key_frame_count
        if seg.init_object_id is not None:
            changes["init_object_id"] = seg.init_object_id
    if seg.get_urls:
        for u in seg.get_urls:
            obj.new_instances.append({"url": u["url"], "label": u["label"], "controlled": False})
    if seg.init_object_id is not None:
        init = states[seg.init_object_id]
        if not init.registered:
            init.registered = True
            init.is_init = True
            init.changes.update(is_init=True, first_referenced_by_flow=flow.id)


_UNSET_PROPERTIES = {"key_frame_count": None, "init_object_id": None}


async def _save_objects(tx: Tx, states: dict[str, _ObjectState]) -> None:
    new_rows, instances = [], []
    updates: list[tuple[str, dict[str, Any]]] = []
    now = now_us()
    for oid, st in states.items():
        if st.row is None and st.registered:
            # (one insert for all: every row names the same columns)
            new_rows.append({"id": oid, "allocated_at": now, "registered": True, **_UNSET_PROPERTIES, **st.changes})
        elif st.changes:
            updates.append((oid, st.changes))
        have = set()
        for inst in st.new_instances:
            if inst["label"] in have:
                continue
            have.add(inst["label"])
            instances.append({"object_id": oid, **inst})
    if instances:
        known = await tx.instances({i["object_id"] for i in instances})
        labels = {(oid, i.label) for oid, insts in known.items() for i in insts}
        instances = [i for i in instances if (i["object_id"], i["label"]) not in labels]
    await tx.insert_objects(new_rows, instances)
    await tx.register_objects(updates, {oid: st.row for oid, st in states.items() if st.row is not None})


async def _commit_batch(tx: Tx, flow: Any, accepted: list[SegmentPost], states: dict[str, _ObjectState]) -> None:
    rows = [
        {
            "flow_id": flow.id,
            "ts_start": s.lo,
            "ts_end": s.hi,
            "timerange": s.timerange.to_str(),
            "object_id": s.object_id,
            "ts_offset": s.ts_offset,
            "last_duration": s.last_duration,
            "object_timerange": s.object_timerange.to_str() if s.object_timerange else None,
            "key_frame_count": s.key_frame_count,
            "sample_offset": s.sample_offset,
            "sample_count": s.sample_count,
        }
        for s in accepted
    ]
    init_of = {oid: st.init_object_id for oid, st in states.items()}
    sizes = {oid: (st.row.size or 0) if st.row is not None else 0 for oid, st in states.items()}
    await tx.add_segments(flow, rows, init_of, sizes, now_us())
    # The Objects whose rows, as this transaction read them, say where their one instance is
    # (unless the batch gave them more): the event need not read their instances.
    sole = {}
    for oid, st in states.items():
        if st.row is not None and not st.new_instances and (storage_id := sole_storage(st.row)):
            sole[oid] = storage_id
    await events.segments_added(tx, flow, rows, init_of, sole)


def _failure(raw: Any, exc: BadRequest) -> dict[str, Any]:
    if isinstance(raw, SegmentPost):
        item: dict[str, Any] = {"object_id": raw.object_id, "timerange": raw.timerange.to_str()}
    else:
        item = {"object_id": raw.get("object_id", "") if isinstance(raw, dict) else ""}
        if not isinstance(item["object_id"], str):
            item["object_id"] = str(item["object_id"])
        tr = raw.get("timerange") if isinstance(raw, dict) else None
        if isinstance(tr, str):
            with contextlib.suppress(ValueError):
                item["timerange"] = TimeRange.from_str(tr).to_str()
    item["error"] = error_body(exc)
    return item
