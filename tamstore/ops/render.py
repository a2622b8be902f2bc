"""Rows to API documents (plain dicts, encoded once by the HTTP layer)."""

from __future__ import annotations

from typing import Any

import orjson

from tamstore.domain.timerange import TimeRange
from tamstore.ops import access
from tamstore.ops.context import rfc3339
from tamstore.store.metadata.sql import Tx

__all__ = ["flow_docs", "source_docs", "extent_timerange"]


async def flow_docs(tx: Tx, rows: list[Any]) -> list[dict[str, Any]]:
    """Flow documents (flow-get.json) for rows of the flows table, in one extra query."""
    collected = await tx.collected_by([r.id for r in rows])
    seen = access.current()
    if not seen.everything:  # Flows the caller may not see are not named either
        shown = await tx.readable_ids("flow", (i for ids in collected.values() for i in ids), seen)
        collected = {k: [i for i in ids if i in shown] for k, ids in collected.items()}
    out = []
    for r in rows:
        doc = orjson.loads(r.doc)
        doc["id"] = r.id
        doc["read_only"] = bool(r.read_only)
        doc["created"] = rfc3339(r.created)
        doc["metadata_updated"] = rfc3339(r.metadata_updated)
        if r.segments_updated is not None:
            doc["segments_updated"] = rfc3339(r.segments_updated)
        if collected[r.id]:
            doc["collected_by"] = collected[r.id]
        out.append(doc)
    return out


async def source_docs(tx: Tx, rows: list[Any]) -> list[dict[str, Any]]:
    """Source documents (source.json), with collections inferred from Flows (ADR 0012 3a)."""
    collections = await tx.source_collections([r.id for r in rows])
    seen = access.current()
    if not seen.everything:  # Sources the caller may not see are not named either
        named = {i["id"] for c in collections.values() for i in c["source_collection"]}
        named |= {i for c in collections.values() for i in c["collected_by"]}
        shown = await tx.readable_ids("source", named, seen)
        for c in collections.values():
            c["source_collection"] = [i for i in c["source_collection"] if i["id"] in shown]
            c["collected_by"] = [i for i in c["collected_by"] if i in shown]
    out = []
    for r in rows:
        doc: dict[str, Any] = {"id": r.id, "format": r.format}
        for key in ("label", "description", "created_by", "updated_by"):
            if getattr(r, key) is not None:
                doc[key] = getattr(r, key)
        doc["created"] = rfc3339(r.created)
        doc["updated"] = rfc3339(r.updated)
        doc["tags"] = orjson.loads(r.tags)
        c = collections[r.id]
        if c["source_collection"]:
            doc["source_collection"] = c["source_collection"]
        if c["collected_by"]:
            doc["collected_by"] = c["collected_by"]
        out.append(doc)
    return out


def extent_timerange(first_tr: str, last_tr: str) -> TimeRange:
    """The span from the first to the last of a run of segments, keeping each end's brackets."""
    return TimeRange.from_str(first_tr).extend_to_encompass(TimeRange.from_str(last_tr))
