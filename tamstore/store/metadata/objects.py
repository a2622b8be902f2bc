"""Media Objects, their instances (where the bytes are) and object_refs (which Flows use each one)."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    delete,
    false,
    insert,
    select,
    update,
)

from tamstore.domain.access import EVERYTHING, READ, Access
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.rows import FlowRef, InstanceRow, ObjectRow, row_as, rows_as


class Instance(NamedTuple):
    """Where an Object's bytes are: a controlled Storage Backend, or an uncontrolled URL."""

    storage_id: str | None
    url: str | None
    label: str | None
    controlled: bool


@functools.cache
def only_controlled(storage_id: str) -> tuple[Instance]:
    """The instances of an Object whose one instance is the controlled one on ``storage_id``
    (as ``objects.sole_instance`` says), as reading them would give them (one tuple per
    backend, shared)."""
    return (Instance(storage_id, None, None, True),)


def instances_of(row: Any, instances: Mapping[str, Sequence[Instance]]) -> Sequence[Instance]:
    """The instances of a segment page row's Object (``SegmentQueries.list_segments``): its
    controlled one when its row says that is all it has, else those the page read for it."""
    if row.sole_instance:
        return only_controlled(row.storage_id)
    return instances.get(row.object_id, ())


def sole_storage(row: ObjectRow) -> str | None:
    """The backend holding the Object's one instance, when its row says that controlled
    instance is all it has (``only_controlled`` gives it); None: its instances must be read."""
    return row.storage_id if row.sole_instance else None


_OBJECT_SELECT = ", ".join(ObjectRow._fields)

# Usage counters are spread over shards, so that concurrent writers seldom update one row.
USAGE_SHARDS = 8


class ObjectQueries(Queries):
    """Objects, instances and the reference counts that decide when bytes may go."""

    # -- objects ------------------------------------------------------------------------------

    async def get_object(self, object_id: str) -> ObjectRow | None:
        return row_as(ObjectRow, await self._one(select(t.objects).where(t.objects.c.id == object_id)))

    async def get_objects(self, object_ids: Iterable[str]) -> dict[str, ObjectRow]:
        """The Objects with these ids that exist, by id. Read on the driver: a segment batch
        reads a thousand at once, and SQLAlchemy's expanding IN and Row objects cost more than
        the lookups."""
        rows = await self._rows_for_ids(f"SELECT {_OBJECT_SELECT} FROM objects", "id", list(set(object_ids)))
        make = tuple.__new__  # not ObjectRow's own constructor: a Python function call per row
        return {r[0]: make(ObjectRow, r) for r in rows}

    async def insert_objects(self, rows: list[dict[str, Any]], instances: list[dict[str, Any]]) -> None:
        await self._insert_many(t.objects, rows)
        if instances:
            await self._insert_many(t.object_instances, instances)
            # A segment's get_urls may add instances to an Object other Flows already use; an
            # Object inserted just now is in no Flow's pages yet.
            new = {r["id"] for r in rows}
            await self._instances_changed(i["object_id"] for i in instances if i["object_id"] not in new)

    async def set_object_size(self, object_id: str, size: int) -> ObjectRow | None:
        """Record the Object's byte size; once it is registered, the size counts in its
        backend's usage and in every Flow that uses it (once per segment). Returns the Object
        as it was (None: no such Object)."""
        obj = await self.get_object(object_id)
        if obj is None:
            return None
        await self.conn.execute(update(t.objects).where(t.objects.c.id == object_id).values(size=size))
        delta = size - (obj.size or 0)
        if obj.registered and delta:
            if obj.storage_id:
                await self._count_usage({obj.storage_id: (0, delta)})
            await self._add_flow_bytes(object_id, delta)
        return obj

    async def register_objects(self, updates: list[tuple[str, dict[str, Any]]], known: Mapping[str, ObjectRow]) -> None:
        """Mark newly used Objects registered, with the properties fixed at first use, given as
        ``(object_id, {column: value})``: one executemany per set of columns. ``known`` are the
        Objects' rows as read before; those registered now start counting in their backend's
        usage. (``registered`` is written as a constant, not a parameter: Python's sqlite3 binds
        a bool by way of its adapter lookup, 0.7 µs an Object.)"""
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        usage: dict[str, tuple[int, int]] = {}
        for object_id, values in updates:
            shapes.setdefault(tuple(values), []).append((*values.values(), object_id))
            row = known.get(object_id)
            if row is not None and not row.registered and row.storage_id:
                objects, size = usage.get(row.storage_id, (0, 0))
                usage[row.storage_id] = (objects + 1, size + (row.size or 0))
        for columns, rows in shapes.items():
            assignments = "".join(f", {c} = ?" for c in columns)
            await self._executemany(f"UPDATE objects SET registered = true{assignments} WHERE id = ?", rows)
        await self._count_usage(usage)

    async def instances(self, object_ids: Iterable[str]) -> dict[str, list[InstanceRow]]:
        ids = list(set(object_ids))
        out: dict[str, list[InstanceRow]] = {i: [] for i in ids}
        if not ids:
            return out
        rows = await self._rows_for_ids(
            "SELECT id, object_id, storage_id, url, label, controlled FROM object_instances",
            "object_id",
            ids,
            " ORDER BY id",
        )
        make = tuple.__new__  # (as in get_objects)
        for r in rows:
            out[r[1]].append(make(InstanceRow, (r[0], r[1], r[2], r[3], r[4], bool(r[5]))))
        return out

    async def insert_instance(self, row: dict[str, Any]) -> None:
        """Add an instance; a controlled one of a registered Object counts in that backend's usage."""
        await self.conn.execute(insert(t.object_instances).values(**row))
        await self._instances_changed([row["object_id"]])
        if row.get("controlled") and row.get("storage_id"):
            obj = await self.get_object(row["object_id"])
            if obj is not None and obj.registered:
                await self._count_usage({row["storage_id"]: (1, obj.size or 0)})

    async def delete_instance(self, instance_id: int) -> None:
        """Remove an instance; a controlled one of a registered Object stops counting."""
        oi = t.object_instances
        deleted = await self._one(
            delete(oi).where(oi.c.id == instance_id).returning(oi.c.object_id, oi.c.storage_id, oi.c.controlled)
        )
        if deleted is None:
            return
        await self._instances_changed([deleted.object_id])
        if deleted.controlled and deleted.storage_id:
            obj = await self.get_object(deleted.object_id)
            if obj is not None and obj.registered:
                await self._count_usage({deleted.storage_id: (-1, -(obj.size or 0))})

    async def referenced_by_flows(
        self, object_id: str, page: PageRequest, tags: list[TagFilter], access: Access = EVERYTHING
    ) -> Page[FlowRef]:
        """Flows whose segments use the Object, directly or (for init Objects) via media
        Objects: those ``access`` may read."""
        r = t.object_refs
        keys: list[ColumnElement[Any]] = [r.c.flow_id]
        stmt = self._with_keys(select(r.c.flow_id), keys).where(r.c.object_id == object_id)
        if (visible := await self.visible("flow", r.c.flow_id, access)) is not None:
            stmt = stmt.where(visible)
        for tf in tags:
            stmt = stmt.where((await self._tag_clause(t.flow_tags, t.flow_tags.c.flow_id, r.c.flow_id, tf)).clause)
        return await self._page(stmt, keys, page, descending=False, row=FlowRef)

    async def object_visible(self, object_id: str, access: Access, action: str = READ) -> bool:
        """Whether ``access`` allows ``action`` on a Flow whose segments use the Object
        (AppNote 0016: an Object belongs to the Flows that use it)."""
        return object_id in await self.objects_visible([object_id], access, action)

    async def objects_visible(self, object_ids: Iterable[str], access: Access, action: str = READ) -> set[str]:
        """Those of ``object_ids`` that :meth:`object_visible` holds, in one statement."""
        ids = sorted(set(object_ids))
        visible = await self.visible("flow", t.object_refs.c.flow_id, access, action)
        if visible is None or not ids:
            return set(ids)
        r = t.object_refs
        rows = await self._all(select(r.c.object_id).where(r.c.object_id.in_(ids), visible).distinct())
        return {row.object_id for row in rows}

    async def add_refs(self, flow_id: str, counts: dict[str, int]) -> None:
        """Count ``counts[object_id]`` more segments of ``flow_id`` using each Object."""
        if not counts:
            return
        await self._executemany(
            "INSERT INTO object_refs (object_id, flow_id, segments) VALUES (?, ?, ?)"
            " ON CONFLICT (object_id, flow_id) DO UPDATE SET segments = object_refs.segments + excluded.segments",
            [(o, flow_id, n) for o, n in counts.items()],
        )

    async def remove_refs(self, flow_id: str, counts: dict[str, int]) -> None:
        """Count ``counts[object_id]`` fewer segments of ``flow_id`` using each Object. The rows
        that fall to zero (nearly all, when a range goes) are deleted first, one statement per
        distinct count; only the others are updated."""
        if not counts:
            return
        by_count: dict[int, list[str]] = {}
        for oid, n in counts.items():
            by_count.setdefault(n, []).append(oid)
        survivors: list[tuple[int, str, str]] = []
        for n, ids in by_count.items():
            gone = await self._rows_for_ids(
                "DELETE FROM object_refs",
                "object_id",
                ids,
                " AND flow_id = ? AND segments <= ? RETURNING object_id",
                (flow_id, n),
            )
            survivors += [(n, oid, flow_id) for oid in set(ids).difference(r[0] for r in gone)]
        if survivors:
            await self._executemany(
                "UPDATE object_refs SET segments = segments - ? WHERE object_id = ? AND flow_id = ?", survivors
            )

    async def unreferenced(self, object_ids: Iterable[str]) -> list[str]:
        """Those of ``object_ids`` that no segment of any Flow uses (directly or as init)."""
        ids = list(set(object_ids))
        if not ids:
            return []
        d, o = t.deleted_segments, t.objects
        used = {row[0] for row in await self._rows_for_ids("SELECT object_id FROM object_refs", "object_id", ids)}
        # Segments in the recovery window keep their Objects, and those Objects' init Objects
        # (not asked when the window holds nothing, as it always does with the window off).
        if not await self._driver_rows("SELECT 1 FROM deleted_segments LIMIT 1", ()):
            return [i for i in ids if i not in used]
        kept = select(d.c.object_id).where(d.c.object_id.in_(ids))
        kept_init = (
            select(o.c.init_object_id.label("object_id"))
            .select_from(d.join(o, o.c.id == d.c.object_id))
            .where(o.c.init_object_id.in_(ids))
        )
        used |= {row.object_id for row in await self._all(kept.union(kept_init))}
        return [i for i in ids if i not in used]

    async def expired_allocations(self, allocated_before: int, limit: int) -> list[ObjectRow]:
        o = t.objects
        return rows_as(
            ObjectRow,
            await self._all(
                select(o)
                .where(o.c.registered == false(), o.c.allocated_at < allocated_before)
                .order_by(o.c.allocated_at)
                .limit(limit)
            ),
        )

    async def delete_objects(self, object_ids: list[str]) -> dict[str, list[str]]:
        """Delete Objects with their instances; registered ones stop counting in each controlled
        backend's usage. Returns, per controlled backend, the Objects whose bytes it holds (to
        be deleted once this transaction commits). Two statements per IN_CHUNK ids, each
        returning what it deleted: nothing is read first."""
        if not object_ids:
            return {}
        instances = await self._rows_for_ids(
            "DELETE FROM object_instances", "object_id", object_ids, " RETURNING object_id, storage_id, controlled"
        )
        deleted = await self._rows_for_ids("DELETE FROM objects", "id", object_ids, " RETURNING id, registered, size")
        objects = {r[0]: (bool(r[1]), r[2] or 0) for r in deleted}
        usage: dict[str, tuple[int, int]] = {}
        holders: dict[str, list[str]] = {}
        for oid, storage_id, controlled in instances:
            if not (controlled and storage_id):
                continue
            holders.setdefault(storage_id, []).append(oid)
            registered, size = objects.get(oid, (False, 0))
            if registered:
                count, total = usage.get(storage_id, (0, 0))
                usage[storage_id] = (count - 1, total - size)
        await self._count_usage(usage)
        return holders

    async def falsely_sole(self, limit: int) -> list[str]:
        """Objects marked ``sole_instance`` whose instances are not just their controlled one
        (``tamstore admin check``: a whole-table read, for operators). Pages would leave their
        other instances out."""
        rows = await self._driver_rows(
            "SELECT o.id FROM objects o WHERE o.sole_instance AND NOT ("
            " (SELECT count(*) FROM object_instances i WHERE i.object_id = o.id) = 1"
            " AND EXISTS (SELECT 1 FROM object_instances i WHERE i.object_id = o.id"
            " AND i.controlled AND i.storage_id = o.storage_id))"
            " ORDER BY o.id LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    async def init_objects_of(self, object_ids: Iterable[str]) -> set[str]:
        """The init Objects these Objects name (an init Object is used through each of them)."""
        ids = list(set(object_ids))
        rows = await self._rows_for_ids(
            "SELECT DISTINCT init_object_id FROM objects", "id", ids, " AND init_object_id IS NOT NULL"
        )
        return {r[0] for r in rows}

    async def purge_unreferenced(self, object_ids: Iterable[str]) -> dict[str, list[str]]:
        """Delete those of ``object_ids`` that no segment uses any more (see ``unreferenced``);
        the Objects whose bytes each controlled backend holds, as ``delete_objects``."""
        return await self.delete_objects(await self.unreferenced(object_ids))

    # -- storage usage: counted here, where Objects and instances change --------------------------

    async def _count_usage(self, deltas: dict[str, tuple[int, int]]) -> None:
        """Add (objects, bytes) to each backend's counters, on a random shard."""
        rows = [(sid, random.randrange(USAGE_SHARDS), o, b) for sid, (o, b) in deltas.items() if sid and (o or b)]
        if rows:
            await self._add_on_conflict(t.usage_counters, ["storage_id", "shard"], ["objects", "bytes"], rows)

    async def _add_flow_bytes(self, object_id: str, size: int) -> None:
        """Count an Object's newly learnt size in every Flow that uses it (once per segment)."""
        r, f = t.object_refs, t.flows
        for row in await self._all(select(r.c.flow_id, r.c.segments).where(r.c.object_id == object_id)):
            await self.conn.execute(
                update(f).where(f.c.id == row.flow_id).values(seg_bytes=f.c.seg_bytes + size * row.segments)
            )
