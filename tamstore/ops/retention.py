"""Retention enforced by the workers (AppNote 0019; the rules are in ``domain/retention.py``).

A pass, run by whichever worker holds the ``retention`` lease (in ``serve`` or ``tamstore
worker``; several processes share it), reads the Flows that carry a retention tag through the
tag index, and:

- for ``segment_retention_offset``, deletes the segments that have expired, earliest first, a
  chunk per transaction and at most ``PASS_CHUNKS`` chunks per Flow per pass, so that a long
  backlog is worked off over several passes while the API keeps its turns at the write lock
  and the other Flows get theirs. A Flow whose first segment starts after the cutoff has
  nothing to delete and costs no query beyond the pass's one read.
- for ``flow_retention_offset``, deletes the whole Flow once it has been idle that long,
  checked again under the Flow's lock (a Flow written to meanwhile is spared).

Both go through the API's deletion machinery: reference-counted Objects, the recovery window,
``flows/segments_deleted`` and ``flows/deleted`` events, delete requests for large Flows.
Read-only Flows are left alone. Invalid tag values stored before they were refused are skipped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tamstore.domain.errors import Forbidden, NotFound
from tamstore.domain.retention import Retention
from tamstore.domain.tai import utc_to_tai
from tamstore.ops import deletion
from tamstore.ops.context import Context, now_us

__all__ = ["LEASE", "PASS_CHUNKS", "PassResult", "retention_pass"]

log = logging.getLogger("tamstore.retention")

LEASE = "retention"
PASS_CHUNKS = 10  # chunks of deletion.CHUNK segments one Flow may lose per pass
PRINCIPAL = "tamstore:retention"  # the delete requests retention creates say so


@dataclass
class PassResult:
    flows: int = 0  # Flows with a retention tag
    segments_deleted: int = 0
    flows_deleted: list[str] = field(default_factory=list)
    backlog: bool = False  # a Flow had more expired segments than a pass deletes: go again soon


async def retention_pass(ctx: Context, owner: str, *, now_ns: int | None = None) -> PassResult | None:
    """One pass, at ``now_ns`` (wall-clock UTC nanoseconds; the system clock when None). None
    when another worker holds the lease."""
    now = time.time_ns() if now_ns is None else now_ns
    if not await _claim(ctx, owner):
        return None
    async with ctx.store.read() as tx:
        rows = await tx.retained_flows()
    tags: dict[str, dict[str, Any]] = defaultdict(dict)
    facts: dict[str, Any] = {}
    for row in rows:
        seen = tags[row.flow_id]
        # An array-valued tag has a row per value: a list, which is no valid offset.
        seen[row.name] = [seen[row.name], row.value] if row.name in seen else row.value
        facts[row.flow_id] = row
    result = PassResult(flows=len(facts))
    renewed = time.monotonic()
    tai_now = utc_to_tai(now)
    # Most Flows share a handful of tag values: each is parsed once per pass.
    parsed: dict[tuple[tuple[str, Any], ...], Retention] = {}
    for flow_id, flow_tags in tags.items():
        if time.monotonic() - renewed > ctx.settings.worker_lease / 3:
            # A long pass keeps its lease, or stops where another worker takes over.
            if not await _claim(ctx, owner):
                break
            renewed = time.monotonic()
        row = facts[flow_id]
        if row.read_only:
            continue
        key = tuple(sorted((k, v if isinstance(v, str) else repr(v)) for k, v in flow_tags.items()))
        retention = parsed.get(key) or parsed.setdefault(key, Retention.of(flow_tags))
        if retention.flow_expired(row.metadata_updated, row.segments_updated, now):
            if await _delete_flow(ctx, flow_id, now):
                result.flows_deleted.append(flow_id)
            continue
        cutoff = retention.segment_cutoff(tai_now)
        if cutoff is None or row.seg_start is None or row.seg_start >= cutoff:
            continue  # nothing can have expired: every segment ends after the first one starts
        deleted = await deletion.delete_segments_ending_by(ctx, flow_id, lambda flow: _cutoff(flow, now), PASS_CHUNKS)
        result.segments_deleted += deleted
        result.backlog = result.backlog or deleted >= PASS_CHUNKS * deletion.CHUNK
    if result.segments_deleted or result.flows_deleted:
        log.info("retention: deleted %d segments and %d Flows", result.segments_deleted, len(result.flows_deleted))
    return result


async def _claim(ctx: Context, owner: str) -> bool:
    """Take or renew the lease for another ``worker_lease`` seconds (False: another holds it)."""
    at = now_us()
    async with ctx.store.write() as tx:
        return await tx.claim_lease(LEASE, owner, at, at + ctx.settings.worker_lease * 1_000_000)


def _tags(flow: Any) -> dict[str, Any]:
    return dict(orjson.loads(flow.doc).get("tags") or {})


def _cutoff(flow: Any, now: int) -> int | None:
    """The segment cutoff from the Flow row as it is now (its tag may have changed)."""
    return Retention.of(_tags(flow)).segment_cutoff(utc_to_tai(now))


async def _delete_flow(ctx: Context, flow_id: str, now: int) -> bool:
    """Delete an expired Flow, unless, under its lock, it is no longer expired."""

    def still_wanted(flow: Any) -> bool:
        retention = Retention.of(_tags(flow))
        return not retention.flow_expired(flow.metadata_updated, flow.segments_updated, now)

    try:
        await deletion.delete_flow(ctx, flow_id, PRINCIPAL, unless=still_wanted)
    except (deletion.Spared, NotFound, Forbidden):
        return False  # written to, deleted or made read-only since the pass read it
    async with ctx.store.write() as tx:
        await tx.add_to_counters({"retention_flows_deleted": 1})
    return True
