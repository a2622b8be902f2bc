"""Source operations (CHECKLIST §5): read, list, and the label/description/tags sub-resources."""

from __future__ import annotations

from typing import Any

import orjson

from tamstore.domain.access import AUTH_CLASSES_TAG, READ, WRITE
from tamstore.domain.errors import BadRequest, NotFound
from tamstore.domain.flows import label_key
from tamstore.domain.limits import MAX_LABEL_BYTES, check_text
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.queries import SourceQuery
from tamstore.domain.tags import check_tag_name, check_tag_value
from tamstore.ops import access, events, flows
from tamstore.ops.context import Context, now_us
from tamstore.ops.render import source_docs
from tamstore.store.metadata.sql import Tx

__all__ = ["get_source", "get_source_property", "list_sources", "set_source_property"]


async def _require_source(tx: Tx, source_id: str, action: str = READ) -> Any:
    row = await tx.get_source(source_id)
    if row is None:
        raise NotFound(f"Source {source_id} does not exist")
    access.require(f"Source {source_id}", row, action)
    return row


async def get_source(ctx: Context, source_id: str) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        row = await _require_source(tx, source_id)
        return (await source_docs(tx, [row]))[0]


async def list_sources(ctx: Context, page: PageRequest, query: SourceQuery) -> Page[dict[str, Any]]:
    async with ctx.store.read() as tx:
        result = await tx.list_sources(page, query, access.current())
        docs = await source_docs(tx, result.items)
    return Page(docs, result.limit, result.next_key, result.reverse, result.extra)


async def get_source_property(ctx: Context, source_id: str, name: str) -> Any:
    async with ctx.store.read() as tx:
        row = await _require_source(tx, source_id)
    if name.startswith("tags"):
        tags = orjson.loads(row.tags)
        if name == "tags":
            return tags
        tag = name[len("tags/") :]
        if tag not in tags:
            raise NotFound(f"Source {source_id} has no tag {tag!r}")
        return tags[tag]
    value = getattr(row, name)
    if value is None:
        raise NotFound(f"Source {source_id} has no {name}")
    return value


_DELETE = object()


async def set_source_property(
    ctx: Context, source_id: str, name: str, value: Any = _DELETE, principal: str | None = None
) -> None:
    """PUT or DELETE ``label``, ``description`` or ``tags/{name}`` of a Source."""
    deleting = value is _DELETE
    reclassed = None
    if not deleting:
        if name.startswith("tags/"):
            check_tag_name(name[len("tags/") :])
            value = check_tag_value(value)
        elif not isinstance(value, str):
            raise BadRequest(f"{name} must be a JSON string")
        elif name == "label":
            check_text(value, MAX_LABEL_BYTES, "label")
    async with ctx.store.write() as tx:
        row = await _require_source(tx, source_id, WRITE)
        values: dict[str, Any] = {"updated": now_us()}
        if principal is not None:
            values["updated_by"] = principal
        if name.startswith("tags/"):
            tag = name[len("tags/") :]
            tags = orjson.loads(row.tags)
            if deleting:
                if tag not in tags:
                    raise NotFound(f"Source {source_id} has no tag {tag!r}")
                del tags[tag]
            else:
                tags[tag] = value
            reclassed = access.check_reclassing(orjson.loads(row.tags), tags)
            values["tags"] = orjson.dumps(tags).decode()
        else:
            values[name] = None if deleting else value
            if name == "label":
                values["label_key"] = label_key(values[name])
        await tx.update_source(source_id, values)
        await events.source_updated(tx, source_id)
        if name.startswith("tags/") and reclassed is not None:
            await _propagate(tx, source_id, tags.get(AUTH_CLASSES_TAG), set())


async def _propagate(tx: Tx, source_id: str, value: Any, seen: set[str]) -> None:
    """AppNote 0016 step 7 and "Permissions propagation": a Source's new ``auth_classes`` go
    to its Flows and to the Sources it collects (those the caller may re-class; propagation
    stops at the others), and on from each of those, each once."""
    seen.add(source_id)
    await flows.reclass_flows(tx, await tx.flow_ids_of_source(source_id), value)
    members = (await tx.source_collections([source_id]))[source_id]["source_collection"]
    for item in members:
        member_id = item["id"]
        if member_id in seen:
            continue
        row = await tx.get_source(member_id)
        if row is None:
            continue
        new = access.reclassed_tags(row, orjson.loads(row.tags), value)
        if new is None:
            continue
        await tx.update_source(member_id, {"tags": orjson.dumps(new).decode(), "updated": now_us()})
        await events.source_updated(tx, member_id)
        await _propagate(tx, member_id, value, seen)
