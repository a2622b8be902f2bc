"""Storage allocation (CHECKLIST §8, ADR 0011, 0034) and collection of unused allocations."""

from __future__ import annotations

import logging
from typing import Any

from tamstore import spec
from tamstore.domain.access import READ, WRITE, classes_of
from tamstore.domain.errors import BadRequest, Forbidden, Unavailable
from tamstore.domain.ids import time_ordered_ids
from tamstore.ops import access
from tamstore.ops.context import Context, now_us
from tamstore.ops.flows import writable_flow
from tamstore.store.media.base import MediaStore

log = logging.getLogger("tamstore.storage")

__all__ = ["allocate", "collect_expired_allocations", "usable_backend"]

# Allocations live a little longer than advertised, for clients that are slightly late.
GRACE_SECONDS = 60


def usable_backend(ctx: Context, storage_id: str | None) -> MediaStore:
    """The Storage Backend to write to, if the caller's auth classes allow it (ADR 0055: its
    ``auth_classes`` tag); one it may not see is as unknown as a missing one."""
    backend = ctx.backend(storage_id)
    classes = classes_of(backend.info.tags)
    seen = access.current()
    if not seen.allows(READ, classes):
        if storage_id is None:
            raise BadRequest("no storage_id given and this service has no default backend")
        raise BadRequest(f"unknown storage_id {storage_id!r}")
    if not seen.allows(WRITE, classes):
        raise Forbidden(f"your groups' auth classes do not allow write on Storage Backend {backend.info.id}")
    return backend


async def allocate(ctx: Context, flow_id: str, body: Any, base_url: str) -> dict[str, Any]:
    body = {} if body is None else body
    spec.validate("flow-storage-post.json", body)
    backend = usable_backend(ctx, body.get("storage_id"))
    if body.get("presigned") is False:
        raise BadRequest(
            f"Storage Backend {backend.info.label!r} only issues presigned URLs; omit 'presigned' or set it to true"
        )
    object_ids = body.get("object_ids")
    if object_ids is not None:
        if len(set(object_ids)) != len(object_ids):
            raise BadRequest("object_ids must not repeat")
        if any(oid == "" for oid in object_ids):
            raise BadRequest("object_ids must not be empty strings")
        if len(object_ids) > ctx.settings.max_storage_limit:
            raise BadRequest(f"at most {ctx.settings.max_storage_limit} object_ids per request")
    else:
        limit = body.get("limit", ctx.settings.default_page_limit)
        if limit < 1:
            raise BadRequest("limit must be at least 1")
        object_ids = time_ordered_ids(min(limit, ctx.settings.max_storage_limit))
    async with ctx.store.write() as tx:
        flow = await writable_flow(tx, flow_id)
        if not flow.container:
            raise BadRequest(f"Flow {flow_id} has no container set, so it cannot hold segments")
        content_type = body.get("content_type") or flow.container
        if body.get("object_ids") is not None:
            taken = await tx.get_objects(object_ids)
            if taken:
                raise BadRequest(f"object_ids already in use: {', '.join(sorted(taken)[:10])}")
        now = now_us()
        await tx.insert_objects(
            [
                {
                    "id": oid,
                    "allocated_for_flow": flow_id,
                    "storage_id": backend.info.id,
                    "content_type": content_type,
                    "allocated_at": now,
                    "sole_instance": True,  # its one instance, below
                }
                for oid in object_ids
            ],
            [{"object_id": oid, "storage_id": backend.info.id, "controlled": True} for oid in object_ids],
        )
    media_objects = []
    for oid in object_ids:
        signed = backend.put_url(oid, content_type, base_url)
        entry: dict[str, Any] = {
            "object_id": oid,
            "put_url": {"url": signed.url, "content-type": content_type},
        }
        if signed.presigned:
            entry["presigned"] = True
        media_objects.append(entry)
    return {"media_objects": media_objects}


Holders = dict[str, list[str]]  # a controlled backend's id -> Objects whose bytes it holds


async def delete_bytes(ctx: Context, holders: Holders) -> None:
    """Delete the bytes of Objects whose metadata has gone (committed): ``holders`` maps each
    controlled backend to the Objects it holds. A crash before this leaves orphaned bytes for
    ``tamstore admin cleanup``, never a segment without its media. So does a backend that
    cannot delete now (a bucket unreachable, a disk gone read-only): the deletion the client
    asked for has happened, and answering it with an error would have it retried against
    metadata that is gone. The bytes left behind are logged, for the cleanup."""
    for storage_id, ids in holders.items():
        if storage_id in ctx.backends:
            try:
                await ctx.backends[storage_id].delete(ids)
            except (Unavailable, OSError) as exc:
                log.warning(
                    "the bytes of %d Object(s) stay on storage %s, which cannot delete them now (%s): "
                    "tamstore admin cleanup removes them",
                    len(ids),
                    storage_id,
                    exc,
                )


async def collect_expired_allocations(ctx: Context, batch: int = 500) -> int:
    """Delete Objects allocated more than ``min_object_timeout`` (+grace) ago and never used,
    with any bytes uploaded for them. Returns how many went."""
    cutoff = now_us() - (ctx.settings.min_object_timeout + GRACE_SECONDS) * 1_000_000
    removed = 0
    while True:
        async with ctx.store.write() as tx:
            rows = await tx.expired_allocations(cutoff, batch)
            holders = await tx.delete_objects([r.id for r in rows])
        await delete_bytes(ctx, holders)
        removed += len(rows)
        if len(rows) < batch:
            return removed
