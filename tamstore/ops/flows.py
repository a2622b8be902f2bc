"""Flow operations: create/replace, read, list, sub-resource edits (CHECKLIST §6)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson

from tamstore import spec
from tamstore.domain.access import AUTH_CLASSES_TAG, READ, WRITE
from tamstore.domain.errors import BadRequest, Forbidden, NotFound
from tamstore.domain.flows import (
    PROFILE_FIELDS,
    SERVER_MANAGED,
    check_collection,
    check_flow_limits,
    columns_of,
    new_metadata_version,
)
from tamstore.domain.limits import MAX_LABEL_BYTES, check_text
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.retention import check_retention_tags
from tamstore.domain.tags import TagFilter, check_tag_name, check_tag_value
from tamstore.domain.timerange import TimeRange
from tamstore.ops import access, events
from tamstore.ops.context import Context, now_us
from tamstore.ops.render import extent_timerange, flow_docs
from tamstore.store.metadata.sql import Tx

__all__ = [
    "FlowQuery",
    "get_flow",
    "list_flows",
    "put_flow",
    "reclass_flows",
    "require_flow",
    "set_flow_property",
]


@dataclass(frozen=True)
class FlowQuery:
    filters: dict[str, Any]
    tags: list[TagFilter]
    collected_by_ids: list[str] | None
    timerange: TimeRange | None
    sort_by: str = "created"


async def require_flow(tx: Tx, flow_id: str, action: str = READ, *, lock: bool = False) -> Any:
    """The Flow row; 404 when missing or hidden from the caller, 403 when its auth classes do
    not allow the caller ``action``."""
    row = await tx.get_flow(flow_id, lock=lock)
    if row is None:
        raise NotFound(f"Flow {flow_id} does not exist")
    access.require(f"Flow {flow_id}", row, action)
    return row


async def writable_flow(tx: Tx, flow_id: str, action: str = WRITE) -> Any:
    """The Flow row, locked for this transaction; as :func:`require_flow`, and 403 when
    read-only."""
    row = await require_flow(tx, flow_id, action, lock=True)
    if row.read_only:
        raise Forbidden(f"Flow {flow_id} is read-only")
    return row


async def get_flow(ctx: Context, flow_id: str, *, include_timerange: bool, timerange: TimeRange) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        row = await require_flow(tx, flow_id)
        doc = (await flow_docs(tx, [row]))[0]
        if include_timerange:
            doc["timerange"] = (await flow_timerange(tx, flow_id, timerange)).to_str()
    return doc


async def flow_timerange(tx: Tx, flow_id: str, within: TimeRange) -> TimeRange:
    """Extent of the Flow's segments that overlap ``within`` (``()`` when there are none)."""
    if within.is_empty():
        return TimeRange.never()
    ext = await tx.segment_extent(flow_id, within.start, within.end)
    if ext is None:
        return TimeRange.never()
    return extent_timerange(*ext)


async def list_flows(ctx: Context, query: FlowQuery, page: PageRequest) -> Page[dict[str, Any]]:
    tr = query.timerange
    async with ctx.store.read() as tx:
        result = await tx.list_flows(
            page,
            sort_by=query.sort_by,
            filters=query.filters,
            tags=query.tags,
            collected_by_ids=query.collected_by_ids,
            timerange=None if tr is None else (tr.start, tr.end),
            empty_only=tr is not None and tr.is_empty(),
            access=access.current(),
        )
        docs = await flow_docs(tx, result.items)
    return Page(docs, result.limit, result.next_key, result.reverse, result.extra)


async def put_flow(ctx: Context, flow_id: str, body: Any, principal: str | None) -> dict[str, Any] | None:
    """Create (returns the new Flow) or replace (returns None) a Flow."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object describing a Flow")
    spec.validate("flow-put.json", body)
    if body["id"] != flow_id:
        raise BadRequest(f"Flow id in the body ({body['id']}) does not match the path ({flow_id})")
    doc = {k: v for k, v in body.items() if k not in SERVER_MANAGED}
    doc.setdefault("tags", {})
    check_flow_limits(doc)
    async with ctx.store.write() as tx:
        existing = await tx.get_flow(flow_id)
        if existing is not None:
            access.require(f"Flow {flow_id}", existing, WRITE)
            if existing.read_only:
                raise Forbidden(f"Flow {flow_id} is read-only")
        old = orjson.loads(existing.doc) if existing is not None else {}
        reclassed = access.check_reclassing(old.get("tags"), doc["tags"])
        await _apply_profile(tx, doc)
        if existing is not None and existing.format != doc["format"]:
            raise BadRequest(f"cannot change the format of Flow {flow_id} from {existing.format} to {doc['format']}")
        collection = doc.get("flow_collection") or []
        if collection:
            found = await _visible_flows(tx, (item["id"] for item in collection))
            check_collection(flow_id, collection, set(found))
        now = now_us()
        if principal is not None:
            doc.setdefault("updated_by", principal)
        created = await _ensure_source(
            tx, doc, now, principal, joining=existing is None or existing.source_id != doc["source_id"]
        )
        value = doc["tags"].get(AUTH_CLASSES_TAG)
        spread = reclassed is not None or (value is not None and collection != (old.get("flow_collection") or []))
        if existing is None:
            doc.setdefault("metadata_version", new_metadata_version())
            if principal is not None:
                doc.setdefault("created_by", principal)
            row = {
                "id": flow_id,
                **columns_of(doc),
                "doc": _doc_json(doc),
                "created": now,
                "metadata_updated": now,
            }
            await tx.insert_flow(row, doc["tags"], collection)
            if spread:
                await _propagate(tx, collection, value, {flow_id})
            new = (await flow_docs(tx, [await tx.get_flow(flow_id)]))[0]
            if created:
                await events.source_created(tx, doc["source_id"])
            await events.flow_event(tx, "flows/created", new)
            return new
        # A replacement describes the Flow, not its history: who created it stays (flow-common.json
        # asks for a default), as does `created` (a column the update leaves alone).
        if "created_by" in old:
            doc.setdefault("created_by", old["created_by"])
        if doc.get("metadata_version") in (None, old.get("metadata_version")):
            doc["metadata_version"] = new_metadata_version()
        await tx.update_flow(
            flow_id,
            {**columns_of(doc), "doc": _doc_json(doc), "metadata_updated": now},
            tags=doc["tags"],
            collection=collection,
        )
        if existing.source_id != doc["source_id"]:
            await _drop_source_if_unused(tx, existing.source_id)
        await events.flow_updated(tx, flow_id)
        if spread:
            await _propagate(tx, collection, value, {flow_id})
        return None


async def _visible_flows(tx: Tx, flow_ids: Any) -> dict[str, Any]:
    """The Flows among ``flow_ids`` that exist and the caller may read."""
    return {fid: row for fid, row in (await tx.get_flows(flow_ids)).items() if access.allows(row)}


async def reclass_flows(tx: Tx, flow_ids: list[str], value: Any) -> None:
    """Give these Flows (a Source's, re-classed) ``auth_classes`` ``value``, and what they collect."""
    await _propagate(tx, [{"id": i} for i in flow_ids], value, set())


async def _propagate(tx: Tx, collection: list[Any], value: Any, seen: set[str]) -> None:
    """AppNote 0016 step 7 and "Permissions propagation": when a Flow's ``auth_classes``
    change, or Flows join its collection, the Flows it collects take its value (``None``:
    none), and those they collect in turn, each once. Propagation stops at a Flow the caller
    may not re-class (it keeps its classes, and so does what it collects)."""
    for item in collection:
        member_id = item["id"]
        if member_id in seen:
            continue
        seen.add(member_id)
        row = await tx.get_flow(member_id)
        if row is None or row.read_only:
            continue
        doc = orjson.loads(row.doc)
        tags = access.reclassed_tags(row, doc.get("tags") or {}, value)
        if tags is None:
            continue
        doc["tags"] = tags
        doc["metadata_version"] = new_metadata_version()
        await tx.update_flow(
            member_id, {**columns_of(doc), "doc": _doc_json(doc), "metadata_updated": now_us()}, tags=tags
        )
        await events.flow_updated(tx, member_id)
        await _propagate(tx, doc.get("flow_collection") or [], value, seen)


async def _apply_profile(tx: Tx, doc: dict[str, Any]) -> None:
    """Fill a Profile's technical metadata into a Flow that names it (ADR 0047)."""
    profile_id = doc.get("profile_id")
    if profile_id == "":
        del doc["profile_id"]  # "profile_id": "" unlinks the Flow from its Profile
        return
    if profile_id is None:
        return
    clash = [f for f in PROFILE_FIELDS if f in doc]
    if clash:
        raise BadRequest(f"a Flow created from a Profile may not also set {', '.join(clash)}")
    profile = await tx.get_profile(profile_id)
    if profile is None:
        raise BadRequest(f"Profile {profile_id} does not exist")
    doc.update(copy.deepcopy(orjson.loads(profile.doc)["flow_metadata"]))


async def _ensure_source(tx: Tx, doc: dict[str, Any], now: int, principal: str | None, *, joining: bool) -> bool:
    """Create the Flow's Source when new (AppNote 0007), with the Flow's ``auth_classes``
    (AppNote 0016: a new Source inherits the permissions of the first Flow that references
    it); refuse a format clash. A Flow ``joining`` an existing Source needs write access to it
    (AppNote 0016, "Adding Flows to existing Sources"). True if created."""
    source = await tx.get_source(doc["source_id"])
    if source is not None:
        if joining:
            access.require(f"Source {source.id}", source, WRITE)
        if source.format != doc["format"]:
            raise BadRequest(
                f"Source {doc['source_id']} has format {source.format}; "
                f"a Flow of format {doc['format']} cannot belong to it"
            )
        return False
    inherited = {AUTH_CLASSES_TAG: doc["tags"][AUTH_CLASSES_TAG]} if AUTH_CLASSES_TAG in doc["tags"] else {}
    await tx.insert_source(
        {
            "id": doc["source_id"],
            "format": doc["format"],
            "tags": orjson.dumps(inherited).decode(),
            "created": now,
            "updated": now,
            "created_by": principal,
            "updated_by": principal,
        }
    )
    return True


async def _drop_source_if_unused(tx: Tx, source_id: str) -> None:
    """Sources live only while a Flow uses them (ADR 0018)."""
    if not await tx.source_has_flows(source_id):
        await events.source_deleted(tx, source_id)  # first: it records the Source's classes
        await tx.delete_source(source_id)


def _doc_json(doc: dict[str, Any]) -> str:
    return orjson.dumps({k: v for k, v in doc.items() if k != "id"}).decode()


# -- sub-resources ---------------------------------------------------------------------------

_DELETE = object()

SIMPLE_PROPERTIES = ("label", "description", "max_bit_rate", "avg_bit_rate", "flow_collection")


async def get_flow_property(ctx: Context, flow_id: str, name: str) -> Any:
    async with ctx.store.read() as tx:
        row = await require_flow(tx, flow_id)
    doc = orjson.loads(row.doc)
    if name == "read_only":
        return bool(row.read_only)
    if name not in doc:
        if name == "flow_collection":
            return []
        raise NotFound(f"Flow {flow_id} has no {name}")
    return doc[name]


async def get_flow_tag(ctx: Context, flow_id: str, name: str | None) -> Any:
    async with ctx.store.read() as tx:
        row = await require_flow(tx, flow_id)
    tags = orjson.loads(row.doc).get("tags", {})
    if name is None:
        return tags
    if name not in tags:
        raise NotFound(f"Flow {flow_id} has no tag {name!r}")
    return tags[name]


def check_property_value(name: str, value: Any) -> Any:
    if name in ("label", "description"):
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a JSON string")
        if name == "label":
            check_text(value, MAX_LABEL_BYTES, "label")
    elif name in ("max_bit_rate", "avg_bit_rate"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"{name} must be a non-negative integer (kbit/s)")
    elif name == "read_only":
        if not isinstance(value, bool):
            raise BadRequest("read_only must be a JSON boolean")
    elif name == "flow_collection":
        spec.validate("flow-collection.json", value, "flow_collection")
    return value


async def set_flow_property(ctx: Context, flow_id: str, name: str, value: Any = _DELETE) -> None:
    """PUT (``value`` given) or DELETE one Flow property; ``tags/{x}`` names a single tag."""
    deleting = value is _DELETE
    if not deleting:
        if name.startswith("tags/"):
            check_tag_name(name[len("tags/") :])
            value = check_tag_value(value)
            check_retention_tags({name[len("tags/") :]: value})
        else:
            check_property_value(name, value)
    async with ctx.store.write() as tx:
        row = await require_flow(tx, flow_id, WRITE)
        if row.read_only and name != "read_only":
            raise Forbidden(f"Flow {flow_id} is read-only")
        doc = orjson.loads(row.doc)
        extra: dict[str, Any] = {}
        reclassed = None
        if name.startswith("tags/"):
            tag = name[len("tags/") :]
            tags = doc.setdefault("tags", {})
            before = dict(tags)
            if deleting:
                if tag not in tags:
                    raise NotFound(f"Flow {flow_id} has no tag {tag!r}")
                del tags[tag]
            else:
                tags[tag] = value
            reclassed = access.check_reclassing(before, tags)
            extra["tags"] = tags
        elif name == "avg_bit_rate" and doc.get("profile_id") and not deleting:
            raise BadRequest("avg_bit_rate comes from the Flow's Profile and cannot be set here")
        elif deleting:
            doc.pop(name, None)
            if name == "flow_collection":
                extra["collection"] = []
        else:
            if name == "flow_collection":
                found = await _visible_flows(tx, (item["id"] for item in value))
                check_collection(flow_id, value, set(found))
                extra["collection"] = value
            doc[name] = value
        doc["metadata_version"] = new_metadata_version()
        await tx.update_flow(
            flow_id,
            {**columns_of(doc), "doc": _doc_json(doc), "metadata_updated": now_us()},
            **extra,
        )
        await events.flow_updated(tx, flow_id)
        value = (doc.get("tags") or {}).get(AUTH_CLASSES_TAG)
        if reclassed is not None or (name == "flow_collection" and not deleting and value is not None):
            await _propagate(tx, doc.get("flow_collection") or [], value, {flow_id})
