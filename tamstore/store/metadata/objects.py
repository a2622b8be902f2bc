"""Media Objects, their instances (where the bytes are) and object_refs (which Flows use each one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    bindparam,
    delete,
    false,
    insert,
    literal,
    select,
    update,
)

from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import IN_CHUNK, Queries
from tamstore.store.metadata.rows import FlowRef, InstanceRow, ObjectRow, row_as, rows_as


class Instance(NamedTuple):
    """Where an Object's bytes are: a controlled Storage Backend, or an uncontrolled URL."""

    storage_id: str | None
    url: str | None
    label: str | None
    controlled: bool


_OBJECT_SELECT = ", ".join(ObjectRow._fields)

_INSTANCES = (
    select(t.object_instances)
    .where(t.object_instances.c.object_id.in_(bindparam("ids", expanding=True)))
    .order_by(t.object_instances.c.id)
)


class ObjectQueries(Queries):
    """Objects, instances and the reference counts that decide when bytes may go."""

    # -- objects ------------------------------------------------------------------------------

    async def get_object(self, object_id: str) -> ObjectRow | None:
        return row_as(ObjectRow, await self._one(select(t.objects).where(t.objects.c.id == object_id)))

    async def get_objects(self, object_ids: Iterable[str]) -> dict[str, ObjectRow]:
        """The Objects with these ids that exist, by id. Read on the driver: a segment batch
        reads a thousand at once, and SQLAlchemy's expanding IN and Row objects cost more than
        the lookups."""
        ids = list(set(object_ids))
        out: dict[str, ObjectRow] = {}
        for at in range(0, len(ids), IN_CHUNK):
            chunk = ids[at : at + IN_CHUNK]
            rows = await self._driver_rows(
                f"SELECT {_OBJECT_SELECT} FROM objects WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
                postgresql=(f"SELECT {_OBJECT_SELECT} FROM objects WHERE id = ANY($1::varchar[])", [chunk]),
            )
            for r in rows:
                out[r[0]] = ObjectRow(*r)
        return out

    async def insert_objects(self, rows: list[dict[str, Any]], instances: list[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(insert(t.objects), rows)
        if instances:
            await self.conn.execute(insert(t.object_instances), instances)
            # A segment's get_urls may add instances to an Object other Flows already use; an
            # Object inserted just now is in no Flow's pages yet.
            new = {r["id"] for r in rows}
            await self._renew_pages_of_objects(i["object_id"] for i in instances if i["object_id"] not in new)

    async def update_object(self, object_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(update(t.objects).where(t.objects.c.id == object_id).values(**values))

    async def register_objects(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        """Mark newly used Objects registered, with the properties fixed at first use, given as
        ``(object_id, {column: value})``: one executemany per set of columns."""
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for object_id, values in updates:
            shapes.setdefault(tuple(values), []).append((*values.values(), object_id))
        for columns, rows in shapes.items():
            await self._executemany(f"UPDATE objects SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?", rows)

    async def instances(self, object_ids: Iterable[str]) -> dict[str, list[InstanceRow]]:
        ids = list(set(object_ids))
        out: dict[str, list[InstanceRow]] = {i: [] for i in ids}
        if not ids:
            return out
        for r in rows_as(InstanceRow, await self._all(_INSTANCES, {"ids": ids})):
            out[r.object_id].append(r)
        return out

    async def insert_instance(self, row: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.object_instances).values(**row))
        await self._renew_pages_of_objects([row["object_id"]])

    async def delete_instance(self, instance_id: int) -> None:
        oi = t.object_instances
        deleted = await self._one(delete(oi).where(oi.c.id == instance_id).returning(oi.c.object_id))
        if deleted is not None:
            await self._renew_pages_of_objects([deleted.object_id])

    async def referenced_by_flows(self, object_id: str, page: PageRequest, tags: list[TagFilter]) -> Page[FlowRef]:
        """Flows whose segments use the Object, directly or (for init Objects) via media Objects."""
        r = t.object_refs
        keys: list[ColumnElement[Any]] = [r.c.flow_id]
        stmt = self._with_keys(select(r.c.flow_id), keys).where(r.c.object_id == object_id)
        for tf in tags:
            stmt = stmt.where(self._tag_clause(t.flow_tags, t.flow_tags.c.flow_id, r.c.flow_id, tf))
        return await self._page(stmt, keys, page, descending=False, row=FlowRef)

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
        if not counts:
            return
        await self._executemany(
            "UPDATE object_refs SET segments = segments - ? WHERE object_id = ? AND flow_id = ?",
            [(n, o, flow_id) for o, n in counts.items()],
        )
        await self._executemany(
            "DELETE FROM object_refs WHERE object_id = ? AND flow_id = ? AND segments <= 0",
            [(o, flow_id) for o in counts],
        )

    async def unreferenced(self, object_ids: Iterable[str]) -> list[str]:
        """Those of ``object_ids`` that no segment of any Flow uses (directly or as init)."""
        ids = list(set(object_ids))
        if not ids:
            return []
        r, d, o = t.object_refs, t.deleted_segments, t.objects
        used = {row.object_id for row in await self._all(select(r.c.object_id).where(r.c.object_id.in_(ids)))}
        # Segments in the recovery window keep their Objects, and those Objects' init Objects
        # (not asked when the window holds nothing, as it always does with the window off).
        if await self._one(select(literal(1)).select_from(d).limit(1)) is None:
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

    async def delete_objects(self, object_ids: list[str]) -> None:
        if not object_ids:
            return
        ids = [(i,) for i in object_ids]
        await self._executemany("DELETE FROM object_instances WHERE object_id = ?", ids)
        await self._executemany("DELETE FROM objects WHERE id = ?", ids)
