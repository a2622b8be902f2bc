"""Deleting segments and Flows, and the Objects nobody references any more (CHECKLIST §7.4, §11).

Objects are shared between Flows (edit by reference), so bytes go only when the last segment
that uses an Object (directly, or through a media Object as its init Object) is gone. The
metadata goes first, in the transaction; bytes are deleted after it commits, so a crash leaves
orphaned bytes for ``tamstore admin cleanup`` to find, never a segment without its media.
"""

from __future__ import annotations

from typing import Any

from tamstore.domain.errors import NotFound
from tamstore.domain.timerange import TimeRange
from tamstore.ops import events
from tamstore.ops.context import Context, now_us
from tamstore.ops.flows import writable_flow
from tamstore.ops.render import extent_timerange
from tamstore.ops.segments import reference_counts
from tamstore.store.metadata.sql import Tx

__all__ = ["delete_flow", "delete_segments", "delete_segment_chunk", "purge_objects"]

CHUNK = 1000


async def delete_segment_chunk(
    tx: Tx, flow_id: str, timerange: TimeRange, object_id: str | None, limit: int = CHUNK
) -> tuple[int, set[str]]:
    """Delete up to ``limit`` segments wholly inside ``timerange``, earliest first.
    Returns how many went and the Objects they used. Emits one ``segments_deleted`` event per
    contiguous run, so the event's range starts and ends inside deleted segments."""
    rows = await tx.segments_to_delete(flow_id, timerange.start, timerange.end, object_id, limit)
    if not rows:
        return 0, set()
    await tx.delete_segments(flow_id, [r.ts_start for r in rows])
    objects = await tx.get_objects(r.object_id for r in rows)
    init_of = {oid: o.init_object_id for oid, o in objects.items()}
    await tx.remove_refs(flow_id, reference_counts([r.object_id for r in rows], init_of))
    await tx.refresh_flow_span(flow_id)
    await tx.update_flow(flow_id, {"segments_updated": now_us()})
    run_first = rows[0]
    for prev, row in zip(rows, rows[1:], strict=False):
        if row.ts_start != prev.ts_end:
            await events.segments_deleted(
                tx, flow_id, extent_timerange(run_first.timerange, prev.timerange).to_str()
            )
            run_first = row
    await events.segments_deleted(
        tx, flow_id, extent_timerange(run_first.timerange, rows[-1].timerange).to_str()
    )
    used = set(init_of) | {i for i in init_of.values() if i}
    return len(rows), used


async def purge_objects(ctx: Context, object_ids: set[str]) -> None:
    """Delete those Objects that nothing references any more: metadata, then bytes."""
    async with ctx.store.write() as tx:
        gone = await tx.unreferenced(object_ids)
        instances = await tx.instances(gone)
        await tx.delete_objects(gone)
    for oid in gone:
        for inst in instances.get(oid, []):
            backend = ctx.backends.get(inst.storage_id) if inst.controlled else None
            if backend is not None:
                await backend.delete([oid])


async def delete_segments(ctx: Context, flow_id: str, timerange: TimeRange, object_id: str | None) -> None:
    objects: set[str] = set()
    while True:
        async with ctx.store.write() as tx:
            await writable_flow(tx, flow_id)
            count, used = await delete_segment_chunk(tx, flow_id, timerange, object_id)
        objects |= used
        if count < CHUNK:
            break
    await purge_objects(ctx, objects)


async def delete_flow(ctx: Context, flow_id: str) -> None:
    async with ctx.store.read() as tx:
        if await tx.get_flow(flow_id) is None:
            raise NotFound(f"Flow {flow_id} does not exist")
    objects: set[str] = set()
    while True:
        async with ctx.store.write() as tx:
            flow = await writable_flow(tx, flow_id)
            count, used = await delete_segment_chunk(tx, flow_id, TimeRange.eternity(), None)
            objects |= used
            if count < CHUNK:
                await _drop_flow(tx, flow)
                break
    await purge_objects(ctx, objects)


async def _drop_flow(tx: Tx, flow: Any) -> None:
    await tx.delete_flow_row(flow.id)
    await events.flow_deleted(tx, flow.id)
    if not await tx.source_has_flows(flow.source_id):
        await tx.delete_source(flow.source_id)
        await events.source_deleted(tx, flow.source_id)
