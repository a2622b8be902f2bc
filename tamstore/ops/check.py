"""``tamstore admin check`` and ``admin stats``: is the metadata consistent with the stored media
and with itself? Offline-grade work: it reads whole tables, in pages, and is meant for operators,
not for the API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tamstore.domain.coverage import BLOCK_SECONDS
from tamstore.ops.cleanup import find_orphans
from tamstore.ops.context import Context
from tamstore.store.media.base import MediaStore
from tamstore.store.media.filesystem import FilesystemMediaStore
from tamstore.store.media.s3 import S3MediaStore

__all__ = ["Report", "check", "stats"]

BATCH = 1000
DRIFT_LIMIT = 1000  # Objects named as instance drift at most: enough to act on, never the whole table


@dataclass
class Report:
    missing_media: list[str] = field(default_factory=list)
    orphaned_media: list[str] = field(default_factory=list)
    counter_drift: list[str] = field(default_factory=list)
    instance_drift: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_media or self.orphaned_media or self.counter_drift or self.instance_drift)

    def lines(self) -> list[str]:
        out = [f"missing media: Object {oid}" for oid in self.missing_media]
        out += [f"orphaned media: {name}" for name in self.orphaned_media]
        out += [f"counter drift: {what}" for what in self.counter_drift]
        out += [f"instance drift: {what}" for what in self.instance_drift]
        return out


async def check(ctx: Context) -> Report:
    report = Report()
    await _media_of_registered_objects(ctx, report)
    found = await find_orphans(ctx)
    report.orphaned_media = [i.name for i in found.orphaned_bytes] + [i.name for i in found.orphaned_keys]
    await _counters(ctx, report)
    async with ctx.store.read() as tx:
        wrong = await tx.falsely_sole(DRIFT_LIMIT)
    report.instance_drift = [
        f"Object {oid} is marked as having only its controlled instance, and has others" for oid in wrong
    ]
    return report


async def _media_of_registered_objects(ctx: Context, report: Report) -> None:
    """Every controlled instance of a registered Object should have its bytes."""
    listings: dict[str, set[str | None]] = {}
    for sid, backend in ctx.backends.items():
        if isinstance(backend, S3MediaStore):
            listings[sid] = await asyncio.to_thread(_stored_ids, backend)
    after = ""
    while True:
        async with ctx.store.read() as tx:
            rows = await tx.controlled_instances_after(after, BATCH)
        for object_id, storage_id in rows:
            holder: MediaStore | None = ctx.backends.get(storage_id) if storage_id else None
            on_disk = isinstance(holder, FilesystemMediaStore) and holder.path_for(object_id).exists()
            in_bucket = isinstance(holder, S3MediaStore) and object_id in listings[storage_id or ""]
            if holder is not None and not (on_disk or in_bucket):
                report.missing_media.append(object_id)
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def _stored_ids(backend: S3MediaStore) -> set[str | None]:
    return {oid for oid, _, _ in backend.stored_ids()}


async def _counters(ctx: Context, report: Report) -> None:
    """The maintained counters against a recount."""
    async with ctx.store.read() as tx:
        actual, kept = await tx.segment_counts()
        recount = await tx.controlled_objects_per_backend()
        usage = await tx.storage_usage()
        blocks = await tx.coverage_totals()
    for flow_id, count in kept.items():
        has = actual.get(flow_id, 0)
        if count != has:
            report.counter_drift.append(f"Flow {flow_id} counts {count} segments, has {has}")
        for seconds in BLOCK_SECONDS:
            if (in_blocks := blocks.get((flow_id, seconds), 0)) != has:
                report.counter_drift.append(
                    f"Flow {flow_id}'s coverage blocks of {seconds} s count {in_blocks} segments, it has {has}"
                )
    for sid in set(recount) | set(usage):
        if recount.get(sid, 0) != usage.get(sid, (0, 0))[0]:
            report.counter_drift.append(
                f"backend {sid} counts {usage.get(sid, (0, 0))[0]} Objects, holds {recount.get(sid, 0)}"
            )


async def stats(ctx: Context) -> dict[str, Any]:
    from tamstore.ops import analytics

    async with ctx.store.read() as tx:
        sources = await tx.count_sources()
        hooks = await tx.webhooks_by_status()
        backlog = await tx.count_pending_deletions()
        retained = await tx.count_retained_flows()
        counters = await tx.counter_values()
    usage = await analytics.flow_usage(ctx, None, {}, None)
    storage = await analytics.storage_usage(ctx, None, 0)
    return {
        "sources": sources,
        **usage["totals"],
        "storage": [{k: b[k] for k in ("label", "objects", "bytes")} for b in storage["backends"]],
        "webhooks": hooks,
        "pending_deletions": backlog,
        "retention": {
            "flows": retained,
            "segments_deleted": counters.get("retention_segments_deleted", 0),
            "flows_deleted": counters.get("retention_flows_deleted", 0),
        },
    }
