"""Finding media nobody can reach: bytes with no Object record, leftovers of interrupted uploads,
and Objects allocated but never registered past their timeout (``tamstore admin cleanup``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tamstore.ops.context import Context, now_us
from tamstore.ops.storage import GRACE_SECONDS, collect_expired_allocations
from tamstore.store.media.filesystem import FilesystemMediaStore, StoredItem
from tamstore.store.media.s3 import S3MediaStore

__all__ = ["Findings", "find_orphans", "remove_orphans"]

BATCH = 500


@dataclass(frozen=True)
class S3Item:
    backend: S3MediaStore
    object_id: str | None
    key: str

    @property
    def name(self) -> str:
        return self.object_id if self.object_id is not None else self.key


@dataclass
class Findings:
    orphaned_bytes: list[StoredItem] = field(default_factory=list)
    orphaned_keys: list[S3Item] = field(default_factory=list)
    expired_allocations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"orphaned media: {item.name} ({item.path})" for item in self.orphaned_bytes]
        out += [f"orphaned media: {i.name} (s3://{i.backend.bucket}/{i.key})" for i in self.orphaned_keys]
        out += [f"allocated, never registered, past its timeout: {oid}" for oid in self.expired_allocations]
        return out


async def find_orphans(ctx: Context, min_age: int | None = None) -> Findings:
    """What cleanup would delete. Bytes younger than ``min_age`` seconds (by default the
    allocation timeout) are left alone: they may belong to an upload registering right now."""
    found = Findings()
    young = time.time() - (ctx.settings.min_object_timeout + GRACE_SECONDS if min_age is None else min_age)
    fs = ctx.filesystem
    if isinstance(fs, FilesystemMediaStore):
        pending: list[StoredItem] = []
        for item in fs.stored():
            if item.mtime > young:
                continue
            if item.object_id is None:
                found.orphaned_bytes.append(item)
            else:
                pending.append(item)
            if len(pending) >= BATCH:
                found.orphaned_bytes += await _unknown(ctx, pending)
                pending = []
        found.orphaned_bytes += await _unknown(ctx, pending)
    for backend in ctx.backends.values():
        if isinstance(backend, S3MediaStore):
            found.orphaned_keys += await _s3_orphans(ctx, backend, young)
    cutoff = now_us() - (ctx.settings.min_object_timeout + GRACE_SECONDS) * 1_000_000
    async with ctx.store.read() as tx:
        rows = await tx.expired_allocations(cutoff, 100_000)
    found.expired_allocations = [r.id for r in rows]
    return found


async def _s3_orphans(ctx: Context, backend: S3MediaStore, young: float) -> list[S3Item]:
    listing = await asyncio.to_thread(lambda: list(backend.stored_ids()))
    old = [S3Item(backend, oid, key) for oid, key, modified in listing if modified.timestamp() <= young]
    out: list[S3Item] = []
    for i in range(0, len(old), BATCH):
        chunk = old[i : i + BATCH]
        async with ctx.store.read() as tx:
            known = await tx.get_objects(item.object_id for item in chunk if item.object_id is not None)
        out += [item for item in chunk if item.object_id not in known]
    return out


async def _unknown(ctx: Context, items: list[StoredItem]) -> list[StoredItem]:
    if not items:
        return []
    async with ctx.store.read() as tx:
        known = await tx.get_objects(i.object_id for i in items if i.object_id is not None)
    return [i for i in items if i.object_id not in known]


async def remove_orphans(ctx: Context, found: Findings) -> int:
    fs = ctx.filesystem
    for item in found.orphaned_bytes:
        if isinstance(fs, FilesystemMediaStore):
            fs.remove_stored(item)
    for key in found.orphaned_keys:
        await asyncio.to_thread(key.backend.remove_key, key.key)
    return len(found.orphaned_bytes) + len(found.orphaned_keys) + await collect_expired_allocations(ctx)
