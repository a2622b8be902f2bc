"""The metadata store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

``MetadataStore.read()`` and ``.write()`` open a transaction and hand out a ``Tx`` whose methods
speak in rows and domain values. Everything one API operation does happens in one ``Tx``, so an
operation is all-or-nothing. On SQLite, statements run on the sqlite3 driver in the event loop's
thread (``_InlineConnection``); writers are serialised by an asyncio lock and ``BEGIN IMMEDIATE``
(taken without blocking the loop) so that readers (WAL) never wait for them and writers never see
SQLITE_BUSY. PostgreSQL goes through asyncpg. Every query here is a keyed lookup or an indexed
range scan bounded by a page size; the hottest ones (the segment page, batch writes) run as SQL
text on the driver, see ``segment_page.py`` and ``Tx._executemany``.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from tamstore.domain.errors import BadRequest, Conflict, TamsError, Unavailable
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.segment_page import SEGMENT_COLUMNS, SegmentRow, Shape, sql_for

__all__ = ["Instance", "MetadataStore", "Tx", "open_metadata_store", "segment_range_clause"]

USAGE_SHARDS = 8


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _tag_rows(owner_col: str, owner_id: str, tags: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, value in tags.items():
        for v in value if isinstance(value, list) else [value]:
            rows.append({owner_col: owner_id, "name": name, "value": v})
    return rows


def _span_overlaps(lo: int | None, hi: int | None) -> Any:
    """Flows with segments whose span overlaps ``[lo, hi)`` (from the maintained span columns)."""
    f = t.flows
    clauses = [f.c.seg_start.is_not(None)]
    if hi is not None:
        clauses.append(f.c.seg_start < hi)
    if lo is not None:
        clauses.append(f.c.seg_end > lo)
    return and_(*clauses)


_PAGES_TOKEN = "SELECT pages_token FROM flows WHERE id = ?"


def _new_pages_token() -> int:
    """A random non-negative 63-bit value: it fits BIGINT on both databases, and the chance
    that a Flow's new token equals an old one a kept page was rendered at is nil in practice."""
    return secrets.randbits(63)


def _is_integrity_error(exc: BaseException) -> bool:
    """sqlite3's IntegrityError, or any of asyncpg's integrity violations (SQLSTATE class 23),
    as they come from the raw drivers."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    return str(getattr(exc, "sqlstate", "") or "").startswith("23")


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (our SQL has no ``?`` inside literals)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" if i < len(parts) else part for i, part in enumerate(parts, 1))


_PAGES_TOKEN_PG = _numbered(_PAGES_TOKEN)


class Instance(NamedTuple):
    """Where an Object's bytes are: a controlled Storage Backend, or an uncontrolled URL."""

    storage_id: str | None
    url: str | None
    label: str | None
    controlled: bool


_SEGMENT_COLUMNS = [c.name for c in t.segments.c]
_INSERT_SEGMENT = (
    f"INSERT INTO segments ({', '.join(_SEGMENT_COLUMNS)}) VALUES ({', '.join('?' * len(_SEGMENT_COLUMNS))})"
)
_segment_values = operator.itemgetter(*_SEGMENT_COLUMNS)  # a segment row dict -> its values in column order
# An Object row as ``get_objects`` returns it: every column, by name.
ObjectRow = NamedTuple("ObjectRow", [(c.name, Any) for c in t.objects.columns])  # type: ignore[misc]
_OBJECT_SELECT = ", ".join(ObjectRow._fields)
_IN_CHUNK = 10_000  # ids per IN list: well under SQLite's 32,766 bound parameters
_COLLECTORS = (
    select(t.flow_collections.c.member_id, t.flow_collections.c.collector_id)
    .where(t.flow_collections.c.member_id.in_(bindparam("ids", expanding=True)))
    .order_by(t.flow_collections.c.collector_id)
)
_INSTANCES = (
    select(t.object_instances)
    .where(t.object_instances.c.object_id.in_(bindparam("ids", expanding=True)))
    .order_by(t.object_instances.c.id)
)


def segment_range_clause(flow_id: Any, lo: Any, hi: Any) -> Any:
    """A Flow's segments overlapping ``[lo, hi)`` (None: unbounded), as an indexed range scan.
    Segments never overlap, so every one overlapping a range starting at ``lo`` starts at or after
    the start of the first segment that ends after ``lo``: the scan begins there, never at the
    start of the Flow. (Values or bind parameters.)"""
    s = t.segments
    clauses: list[Any] = [s.c.flow_id == flow_id]
    if lo is not None:
        first = select(s.c.ts_start).where(s.c.flow_id == flow_id, s.c.ts_end > lo).order_by(s.c.ts_end).limit(1)
        clauses.append(s.c.ts_start >= first.scalar_subquery())
    if hi is not None:
        clauses.append(s.c.ts_start < hi)
    return and_(*clauses)


class Tx:
    """One transaction on the metadata store."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.wrote_events = False

    async def _all(self, stmt: Any, params: dict[str, Any] | None = None) -> Sequence[Any]:
        return (await self.conn.execute(stmt, params)).all()

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement (``?`` placeholders) for many rows, on the driver's own executemany.
        For the 1,000-row writes of a segment batch, SQLAlchemy's per-row parameter handling cost
        more than the database's work (docs/performance.md). Integrity errors come out as
        SQLAlchemy's ``IntegrityError``, as from any other statement."""
        try:
            if isinstance(self.conn, _InlineConnection):  # SQLite
                self.conn.driver().executemany(sql, rows)
            else:  # PostgreSQL
                raw = await self.conn.get_raw_connection()
                await raw.driver_connection.executemany(_numbered(sql), rows)  # type: ignore[union-attr]
        except Exception as exc:
            if _is_integrity_error(exc):
                raise IntegrityError(sql, None, exc) from exc
            raise

    async def _driver_rows(
        self, sqlite: tuple[str, Sequence[Any] | dict[str, Any]], postgresql: tuple[str, Sequence[Any]]
    ) -> Sequence[Sequence[Any]]:
        """Rows as plain tuples from the driver underneath, past SQLAlchemy's Row objects: the
        statement in each dialect's placeholders with its parameters (sqlite3 takes ``?`` or
        ``:name``, asyncpg ``$1, $2, ...``)."""
        if isinstance(self.conn, _InlineConnection):
            sql, params = sqlite
            return self.conn.driver().execute(sql, params).fetchall()  # type: ignore[no-any-return]
        sql, args = postgresql
        raw = await self.conn.get_raw_connection()
        return await raw.driver_connection.fetch(sql, *args)  # type: ignore[no-any-return, union-attr]

    async def _one(self, stmt: Any) -> Any:
        return (await self.conn.execute(stmt)).first()

    # -- service ------------------------------------------------------------------------------

    async def service_info(self) -> dict[str, str]:
        rows = await self._all(select(t.service_info))
        return {r.key: r.value for r in rows}

    async def set_service_info(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            await self.conn.execute(delete(t.service_info).where(t.service_info.c.key == key))
            await self.conn.execute(insert(t.service_info).values(key=key, value=value))

    # -- paging -------------------------------------------------------------------------------

    async def _page(
        self,
        stmt: Select[Any],
        keys: list[ColumnElement[Any]],
        page: PageRequest,
        *,
        descending: bool,
    ) -> Page[Any]:
        """Run ``stmt`` as one keyset page ordered by ``keys`` (all in one direction)."""
        desc = descending != page.reverse
        if page.after is not None:
            cursor = tuple_(*keys)
            after = tuple_(*[literal(v) for v in page.after])
            stmt = stmt.where(cursor < after if desc else cursor > after)
        order = [k.desc() if desc else k.asc() for k in keys]
        rows = list(await self._all(stmt.order_by(*order).limit(page.limit + 1)))
        next_key = None
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            next_key = tuple(rows[-1]._mapping[f"_k{i}"] for i in range(len(keys)))
        return Page(rows, page.limit, next_key, page.reverse)

    @staticmethod
    def _with_keys(stmt: Select[Any], keys: list[ColumnElement[Any]]) -> Select[Any]:
        return stmt.add_columns(*[k.label(f"_k{i}") for i, k in enumerate(keys)])

    @staticmethod
    def _tag_clause(tag_table: Any, owner_col: Any, owner_id_col: Any, f: TagFilter) -> Any:
        match = select(literal(1)).where(owner_col == owner_id_col, tag_table.c.name == f.name)
        if f.values is not None:
            return exists(match.where(tag_table.c.value.in_(f.values)))
        clause = exists(match)
        return clause if f.exists else not_(clause)

    # -- sources ------------------------------------------------------------------------------

    async def get_source(self, source_id: str) -> Any:
        return await self._one(select(t.sources).where(t.sources.c.id == source_id))

    async def insert_source(self, row: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.sources).values(**row))
        await self._replace_tags(t.source_tags, "source_id", row["id"], orjson.loads(row["tags"]))

    async def update_source(self, source_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(update(t.sources).where(t.sources.c.id == source_id).values(**values))
        if "tags" in values:
            await self._replace_tags(t.source_tags, "source_id", source_id, orjson.loads(values["tags"]))

    async def delete_source(self, source_id: str) -> None:
        await self.conn.execute(delete(t.source_tags).where(t.source_tags.c.source_id == source_id))
        await self.conn.execute(delete(t.sources).where(t.sources.c.id == source_id))

    async def source_has_flows(self, source_id: str) -> bool:
        row = await self._one(select(t.flows.c.id).where(t.flows.c.source_id == source_id).limit(1))
        return row is not None

    async def list_sources(
        self,
        page: PageRequest,
        *,
        sort_by: str,
        label: str | None,
        format: str | None,
        tags: list[TagFilter],
        collected_by_ids: list[str] | None,
    ) -> Page[Any]:
        s = t.sources
        keys, descending = self._sort_keys(s, sort_by, {"created": "created", "updated": "updated"})
        stmt = self._with_keys(select(s), keys)
        if label is not None:
            stmt = stmt.where(s.c.label == label)
        if format is not None:
            stmt = stmt.where(s.c.format == format)
        for f in tags:
            stmt = stmt.where(self._tag_clause(t.source_tags, t.source_tags.c.source_id, s.c.id, f))
        if collected_by_ids is not None:
            stmt = stmt.where(self._source_collected_by_clause(s.c.id, collected_by_ids))
        return await self._page(stmt, keys, page, descending=descending)

    @staticmethod
    def _sort_keys(table: Any, sort_by: str, datetime_columns: dict[str, str]) -> tuple[list[ColumnElement[Any]], bool]:
        """Sort keys per ADR 0052: datetimes newest first; labels A-Z with unlabelled last."""
        if sort_by == "label":
            return [table.c.label_key, table.c.id], False
        return [table.c[datetime_columns[sort_by]], table.c.id], True

    @staticmethod
    def _source_collected_by_clause(source_id_col: Any, ids: list[str]) -> Any:
        member = t.flows.alias("member")
        collector = t.flows.alias("collector")
        fc = t.flow_collections
        q = (
            select(literal(1))
            .select_from(
                member.join(fc, fc.c.member_id == member.c.id).join(collector, collector.c.id == fc.c.collector_id)
            )
            .where(member.c.source_id == source_id_col, collector.c.source_id != source_id_col)
        )
        if ids:
            return exists(q.where(collector.c.source_id.in_(ids)))
        return not_(exists(q))

    async def source_collections(self, source_ids: list[str]) -> dict[str, dict[str, list[Any]]]:
        """``source_collection`` and ``collected_by`` for each Source, inferred from Flows."""
        out: dict[str, dict[str, list[Any]]] = {
            sid: {"source_collection": [], "collected_by": []} for sid in source_ids
        }
        if not source_ids:
            return out
        member = t.flows.alias("member")
        collector = t.flows.alias("collector")
        fc = t.flow_collections
        joined = member.join(fc, fc.c.member_id == member.c.id).join(collector, collector.c.id == fc.c.collector_id)
        rows = await self._all(
            select(collector.c.source_id, member.c.source_id.label("member_source"), fc.c.role)
            .select_from(joined)
            .where(
                or_(collector.c.source_id.in_(source_ids), member.c.source_id.in_(source_ids)),
                collector.c.source_id != member.c.source_id,
            )
            .order_by(collector.c.created, fc.c.collector_id, fc.c.position)
        )
        for r in rows:
            if r.source_id in out:
                items = out[r.source_id]["source_collection"]
                item = {"id": r.member_source}
                if r.role is not None:
                    item["role"] = r.role
                if item not in items:
                    items.append(item)
            if r.member_source in out:
                by = out[r.member_source]["collected_by"]
                if r.source_id not in by:
                    by.append(r.source_id)
        return out

    # -- tags (shared by sources and flows) -----------------------------------------------------

    async def _replace_tags(self, table: Any, owner: str, owner_id: str, tags: dict[str, Any]) -> None:
        await self.conn.execute(delete(table).where(table.c[owner] == owner_id))
        rows = _tag_rows(owner, owner_id, tags)
        if rows:
            await self.conn.execute(insert(table), rows)

    # -- flows --------------------------------------------------------------------------------

    async def get_flow(self, flow_id: str, *, lock: bool = False) -> Any:
        """The Flow row. ``lock`` holds the row until the transaction ends, so that writers of
        one Flow's segments take turns (on PostgreSQL; SQLite has one writer anyway) and each
        sees the segments the previous one committed."""
        stmt = select(t.flows).where(t.flows.c.id == flow_id)
        if lock:
            stmt = stmt.with_for_update()
        return await self._one(stmt)

    async def get_flows(self, flow_ids: Iterable[str]) -> dict[str, Any]:
        ids = list(set(flow_ids))
        if not ids:
            return {}
        rows = await self._all(select(t.flows).where(t.flows.c.id.in_(ids)))
        return {r.id: r for r in rows}

    async def insert_flow(self, row: dict[str, Any], tags: dict[str, Any], collection: list[Any]) -> None:
        await self.conn.execute(insert(t.flows).values(**row))
        await self._replace_tags(t.flow_tags, "flow_id", row["id"], tags)
        await self.replace_collection(row["id"], collection)

    async def update_flow(
        self,
        flow_id: str,
        values: dict[str, Any],
        *,
        tags: dict[str, Any] | None = None,
        collection: list[Any] | None = None,
    ) -> None:
        await self.conn.execute(update(t.flows).where(t.flows.c.id == flow_id).values(**values))
        if tags is not None:
            await self._replace_tags(t.flow_tags, "flow_id", flow_id, tags)
        if collection is not None:
            await self.replace_collection(flow_id, collection)

    async def replace_collection(self, flow_id: str, collection: list[Any]) -> None:
        fc = t.flow_collections
        await self.conn.execute(delete(fc).where(fc.c.collector_id == flow_id))
        rows = [
            {
                "collector_id": flow_id,
                "member_id": item["id"],
                "position": i,
                "role": item.get("role"),
                "container_mapping": _json(item["container_mapping"]) if "container_mapping" in item else None,
            }
            for i, item in enumerate(collection)
        ]
        if rows:
            await self.conn.execute(insert(fc), rows)

    async def delete_flow_row(self, flow_id: str) -> None:
        await self.conn.execute(delete(t.flow_tags).where(t.flow_tags.c.flow_id == flow_id))
        await self.conn.execute(delete(t.flow_collections).where(t.flow_collections.c.collector_id == flow_id))
        await self.conn.execute(delete(t.flows).where(t.flows.c.id == flow_id))

    async def collected_by(self, flow_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {fid: [] for fid in flow_ids}
        if not flow_ids:
            return out
        for r in await self._all(_COLLECTORS, {"ids": flow_ids}):
            if r.collector_id not in out[r.member_id]:
                out[r.member_id].append(r.collector_id)
        return out

    async def list_flows(
        self,
        page: PageRequest,
        *,
        sort_by: str,
        filters: dict[str, Any],
        tags: list[TagFilter],
        collected_by_ids: list[str] | None,
        timerange: tuple[int | None, int | None] | None,
        empty_only: bool = False,
    ) -> Page[Any]:
        f = t.flows
        keys, descending = self._sort_keys(f, sort_by, {"created": "created", "metadata_updated": "metadata_updated"})
        stmt = self._with_keys(select(f), keys)
        for column, value in filters.items():
            stmt = stmt.where(f.c[column] == value)
        for tf in tags:
            stmt = stmt.where(self._tag_clause(t.flow_tags, t.flow_tags.c.flow_id, f.c.id, tf))
        if collected_by_ids is not None:
            fc = t.flow_collections
            q = select(literal(1)).where(fc.c.member_id == f.c.id)
            if collected_by_ids:
                stmt = stmt.where(exists(q.where(fc.c.collector_id.in_(collected_by_ids))))
            else:
                stmt = stmt.where(not_(exists(q)))
        if empty_only:
            stmt = stmt.where(f.c.seg_start.is_(None))
        elif timerange is not None:
            stmt = stmt.where(_span_overlaps(*timerange))
        return await self._page(stmt, keys, page, descending=descending)

    # -- profiles -----------------------------------------------------------------------------

    async def get_profile(self, profile_id: str) -> Any:
        return await self._one(select(t.profiles).where(t.profiles.c.id == profile_id))

    async def insert_profile(self, row: dict[str, Any]) -> None:
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(insert(t.profiles).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"Profile {row['id']} already exists; Profiles are immutable") from exc

    async def list_profiles(
        self, page: PageRequest, *, format: str | None, codec: str | None, label: str | None
    ) -> Page[Any]:
        p = t.profiles
        keys: list[ColumnElement[Any]] = [p.c.id]
        stmt = self._with_keys(select(p), keys)
        if format is not None:
            stmt = stmt.where(p.c.format == format)
        if codec is not None:
            stmt = stmt.where(p.c.codec == codec)
        if label is not None:
            stmt = stmt.where(p.c.label == label)
        return await self._page(stmt, keys, page, descending=False)

    # -- objects ------------------------------------------------------------------------------

    async def get_object(self, object_id: str) -> Any:
        return await self._one(select(t.objects).where(t.objects.c.id == object_id))

    async def get_objects(self, object_ids: Iterable[str]) -> dict[str, ObjectRow]:
        """The Objects with these ids that exist, by id. Read on the driver: a segment batch
        reads a thousand at once, and SQLAlchemy's expanding IN and Row objects cost more than
        the lookups."""
        ids = list(set(object_ids))
        out: dict[str, ObjectRow] = {}
        for at in range(0, len(ids), _IN_CHUNK):
            chunk = ids[at : at + _IN_CHUNK]
            rows = await self._driver_rows(
                (f"SELECT {_OBJECT_SELECT} FROM objects WHERE id IN ({', '.join('?' * len(chunk))})", chunk),
                (f"SELECT {_OBJECT_SELECT} FROM objects WHERE id = ANY($1::varchar[])", [chunk]),
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

    async def instances(self, object_ids: Iterable[str]) -> dict[str, list[Any]]:
        ids = list(set(object_ids))
        out: dict[str, list[Any]] = {i: [] for i in ids}
        if not ids:
            return out
        for r in await self._all(_INSTANCES, {"ids": ids}):
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

    # -- pages tokens: what lets every process reuse a rendered segment page --------------------

    async def pages_token(self, flow_id: str) -> int | None:
        """The Flow's pages token (None: no such Flow). It changes in every transaction that
        changes what a segment page of the Flow shows; see :meth:`_renew_pages_tokens`."""
        rows = await self._driver_rows((_PAGES_TOKEN, (flow_id,)), (_PAGES_TOKEN_PG, (flow_id,)))
        return rows[0][0] if rows else None

    async def _renew_pages_tokens(self, flow_ids: Iterable[str]) -> None:
        """Called by every write of segments: a fresh random token for each Flow written."""
        await self._executemany(
            "UPDATE flows SET pages_token = ? WHERE id = ?", [(_new_pages_token(), f) for f in set(flow_ids)]
        )

    async def _renew_pages_of_objects(self, object_ids: Iterable[str]) -> None:
        """Called by every write of Object instances: the pages of every Flow whose segments use
        one of the Objects, directly or as their init Object (object_refs counts both), show
        its URLs."""
        renew = [(_new_pages_token(), o) for o in set(object_ids)]
        if renew:
            await self._executemany(
                "UPDATE flows SET pages_token = ? WHERE id IN (SELECT flow_id FROM object_refs WHERE object_id = ?)",
                renew,
            )

    async def referenced_by_flows(self, object_id: str, page: PageRequest, tags: list[TagFilter]) -> Page[Any]:
        """Flows whose segments use the Object, directly or (for init Objects) via media Objects."""
        r = t.object_refs
        keys: list[ColumnElement[Any]] = [r.c.flow_id]
        stmt = self._with_keys(select(r.c.flow_id), keys).where(r.c.object_id == object_id)
        for tf in tags:
            stmt = stmt.where(self._tag_clause(t.flow_tags, t.flow_tags.c.flow_id, r.c.flow_id, tf))
        return await self._page(stmt, keys, page, descending=False)

    def _add_on_conflict(self, table: Any, keys: list[str], counters: list[str]) -> Any:
        """INSERT ... ON CONFLICT (keys) DO UPDATE adding the new row's counters to the old."""
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: table.c[c] + stmt.excluded[c] for c in counters},
        )

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

    async def expired_allocations(self, allocated_before: int, limit: int) -> list[Any]:
        o = t.objects
        return list(
            await self._all(
                select(o)
                .where(o.c.registered == false(), o.c.allocated_at < allocated_before)
                .order_by(o.c.allocated_at)
                .limit(limit)
            )
        )

    async def delete_objects(self, object_ids: list[str]) -> None:
        if not object_ids:
            return
        ids = [(i,) for i in object_ids]
        await self._executemany("DELETE FROM object_instances WHERE object_id = ?", ids)
        await self._executemany("DELETE FROM objects WHERE id = ?", ids)

    # -- segments -----------------------------------------------------------------------------

    async def list_segments(
        self,
        flow_id: str,
        page: PageRequest,
        *,
        lo: int | None,
        hi: int | None,
        object_id: str | None,
    ) -> Page[Any]:
        """One page of segments overlapping ``[lo, hi)``, each with its Object's init Object id;
        ``extra["instances"]`` maps each Object to its instances (in id order). One statement."""
        shape = Shape(lo is not None, hi is not None, object_id is not None, page.after is not None, page.reverse)
        params: dict[str, Any] = {"flow_id": flow_id, "limit": page.limit + 1}
        if lo is not None:
            params["lo"] = lo
        if hi is not None:
            params["hi"] = hi
        if object_id is not None:
            params["object_id"] = object_id
        if page.after is not None:
            params["after"] = page.after[0]
        rows: list[SegmentRow] = []
        instances: dict[str, list[Instance]] = {}
        filling = False  # whether the rows at hand bring instances of an Object not seen before
        for r in await self._segment_page_rows(shape, params):
            if not rows or r[0] != rows[-1].ts_start:
                row = SegmentRow(*r[:SEGMENT_COLUMNS])
                rows.append(row)
                filling = row.object_id not in instances
                if filling:
                    instances[row.object_id] = []
            if filling and r[-1] is not None:
                instances[rows[-1].object_id].append(Instance(r[-4], r[-3], r[-2], bool(r[-1])))
        next_key = None
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            next_key = (rows[-1].ts_start,)
        return Page(rows, page.limit, next_key, page.reverse, {"instances": instances})

    async def _segment_page_rows(self, shape: Shape, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """The page statement's rows, as tuples from the driver."""
        pg_sql, names = sql_for(shape, "postgresql")
        return await self._driver_rows((sql_for(shape, "sqlite")[0], params), (pg_sql, [params[n] for n in names]))

    async def overlapping_segments(self, flow_id: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Bounds of existing segments overlapping ``[lo, hi)`` (for the no-overlap rule)."""
        s = t.segments
        rows = await self._all(
            select(s.c.ts_start, s.c.ts_end).where(segment_range_clause(flow_id, lo, hi)).order_by(s.c.ts_start)
        )
        return [(r.ts_start, r.ts_end) for r in rows]

    async def insert_segments(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            async with self.conn.begin_nested():
                await self._executemany(_INSERT_SEGMENT, list(map(_segment_values, rows)))
        except IntegrityError as exc:
            raise Conflict("segment overlaps an existing segment of the Flow") from exc
        await self._renew_pages_tokens(r["flow_id"] for r in rows)

    async def segment_extent(self, flow_id: str, lo: int | None = None, hi: int | None = None) -> Any:
        """First and last segment of the Flow (optionally of those overlapping ``[lo, hi)``)."""
        s = t.segments
        where = segment_range_clause(flow_id, lo, hi)
        first = await self._one(select(s.c.timerange, s.c.ts_start).where(where).order_by(s.c.ts_start).limit(1))
        if first is None:
            return None
        last = await self._one(select(s.c.timerange, s.c.ts_end).where(where).order_by(s.c.ts_start.desc()).limit(1))
        return first, last

    async def refresh_flow_span(self, flow_id: str) -> tuple[int | None, int | None]:
        s = t.segments
        first = await self._one(select(s.c.ts_start).where(s.c.flow_id == flow_id).order_by(s.c.ts_start).limit(1))
        last = await self._one(select(s.c.ts_end).where(s.c.flow_id == flow_id).order_by(s.c.ts_end.desc()).limit(1))
        span = (first.ts_start if first else None, last.ts_end if last else None)
        await self.conn.execute(
            update(t.flows).where(t.flows.c.id == flow_id).values(seg_start=span[0], seg_end=span[1])
        )
        return span

    async def segments_to_delete(
        self, flow_id: str, lo: int | None, hi: int | None, object_id: str | None, limit: int
    ) -> list[Any]:
        """Segments wholly inside ``[lo, hi)`` (optionally of one Object), in time order."""
        s = t.segments
        stmt = select(s.c.ts_start, s.c.ts_end, s.c.object_id, s.c.timerange).where(
            segment_range_clause(flow_id, lo, hi)
        )
        if lo is not None:
            stmt = stmt.where(s.c.ts_start >= lo)
        if hi is not None:
            stmt = stmt.where(s.c.ts_end <= hi)
        if object_id is not None:
            stmt = stmt.where(s.c.object_id == object_id)
        return list(await self._all(stmt.order_by(s.c.ts_start).limit(limit)))

    async def delete_segments(self, flow_id: str, starts: list[int]) -> None:
        await self._executemany(
            "DELETE FROM segments WHERE flow_id = ? AND ts_start = ?", [(flow_id, start) for start in starts]
        )
        await self._renew_pages_tokens([flow_id])

    async def count_segments_in(
        self, flow_id: str, lo: int | None, hi: int | None, object_id: str | None, limit: int
    ) -> int:
        """How many segments lie wholly inside ``[lo, hi)``, counting no further than ``limit``."""
        rows = await self.segments_to_delete(flow_id, lo, hi, object_id, limit)
        return len(rows)

    async def move_segments_to_deleted(self, batch_id: str, flow_id: str, starts: list[int], now: int) -> None:
        """Keep segments in the recovery window instead of dropping them (then delete them)."""
        s, d = t.segments, t.deleted_segments
        cols = [c.name for c in s.c]
        for i in range(0, len(starts), 500):
            chunk = starts[i : i + 500]
            picked = select(
                literal(batch_id).label("batch_id"), literal(now).label("deleted_at"), *[s.c[c] for c in cols]
            ).where(s.c.flow_id == flow_id, s.c.ts_start.in_(chunk))
            await self.conn.execute(insert(d).from_select(["batch_id", "deleted_at", *cols], picked))
        await self.delete_segments(flow_id, starts)

    # -- flow delete requests ----------------------------------------------------------------------

    async def insert_delete_request(self, row: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.flow_delete_requests).values(**row))

    async def get_delete_request(self, request_id: str, now: int) -> Any:
        r = t.flow_delete_requests
        return await self._one(select(r).where(r.c.id == request_id, or_(r.c.expiry.is_(None), r.c.expiry > now)))

    async def pending_flow_deletion(self, flow_id: str) -> Any:
        r = t.flow_delete_requests
        return await self._one(
            select(r)
            .where(r.c.flow_id == flow_id, r.c.delete_flow == true(), r.c.status.in_(("created", "started")))
            .limit(1)
        )

    async def list_delete_requests(self, page: PageRequest, sort_by: str, now: int) -> Page[Any]:
        r = t.flow_delete_requests
        keys: list[ColumnElement[Any]] = [r.c.expiry_key if sort_by == "expiry" else r.c.created, r.c.id]
        stmt = self._with_keys(select(r), keys).where(or_(r.c.expiry.is_(None), r.c.expiry > now))
        return await self._page(stmt, keys, page, descending=True)

    async def update_delete_request(self, request_id: str, values: dict[str, Any], owner: str | None = None) -> bool:
        """Update a request; with ``owner``, only while that worker still holds its lease."""
        r = t.flow_delete_requests
        stmt = update(r).where(r.c.id == request_id)
        if owner is not None:
            stmt = stmt.where(r.c.lease_owner == owner)
        result = await self.conn.execute(stmt.values(**values))
        return bool(result.rowcount)

    async def claim_delete_request(self, owner: str, now: int, lease_until: int) -> Any:
        """Take the oldest request nobody holds a live lease on. ``SKIP LOCKED`` lets several
        workers on PostgreSQL claim different requests at the same moment."""
        r = t.flow_delete_requests
        stmt = (
            select(r.c.id)
            .where(r.c.status.in_(("created", "started")), or_(r.c.lease_until.is_(None), r.c.lease_until < now))
            .order_by(r.c.created)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = await self._one(stmt)
        if row is None:
            return None
        await self.conn.execute(
            update(r)
            .where(r.c.id == row.id)
            .values(status="started", lease_owner=owner, lease_until=lease_until, updated=now)
        )
        return await self._one(select(r).where(r.c.id == row.id))

    async def count_pending_deletions(self) -> int:
        r = t.flow_delete_requests
        row = await self._one(select(func.count()).where(r.c.status.in_(("created", "started"))))
        return int(row[0])

    async def purge_expired_delete_requests(self, now: int) -> None:
        r = t.flow_delete_requests
        await self.conn.execute(delete(r).where(r.c.expiry.is_not(None), r.c.expiry <= now))

    # -- recovery window ------------------------------------------------------------------------

    async def record_batch(self, row: dict[str, Any]) -> None:
        b = t.deletion_batches
        if await self._one(select(b.c.id).where(b.c.id == row["id"])) is None:
            await self.conn.execute(insert(b).values(**row))

    async def count_batch_segments(self, batch_id: str, n: int) -> None:
        b = t.deletion_batches
        await self.conn.execute(update(b).where(b.c.id == batch_id).values(segments=b.c.segments + n))

    async def save_deleted_flow(self, row: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.deleted_flows).values(**row))

    async def flow_tag_map(self, flow_id: str) -> dict[str, Any]:
        ft = t.flow_tags
        out: dict[str, Any] = {}
        for r in await self._all(select(ft.c.name, ft.c.value).where(ft.c.flow_id == flow_id)):
            out.setdefault(r.name, []).append(r.value)
        return out

    async def collection_rows(self, flow_id: str) -> list[dict[str, Any]]:
        fc = t.flow_collections
        rows = await self._all(select(fc).where(fc.c.collector_id == flow_id).order_by(fc.c.position))
        return [dict(r._mapping) for r in rows]

    async def list_batches(self, limit: int) -> list[Any]:
        b = t.deletion_batches
        return list(await self._all(select(b).order_by(b.c.deleted_at.desc(), b.c.id).limit(limit)))

    async def get_batch(self, batch_id: str) -> Any:
        b = t.deletion_batches
        return await self._one(select(b).where(b.c.id == batch_id))

    async def expired_batches(self, before: int, limit: int) -> list[Any]:
        b = t.deletion_batches
        return list(await self._all(select(b).where(b.c.deleted_at < before).order_by(b.c.deleted_at).limit(limit)))

    async def get_deleted_flow(self, batch_id: str) -> Any:
        return await self._one(select(t.deleted_flows).where(t.deleted_flows.c.batch_id == batch_id))

    async def deleted_segment_chunk(self, batch_id: str, limit: int) -> list[Any]:
        d = t.deleted_segments
        return list(await self._all(select(d).where(d.c.batch_id == batch_id).order_by(d.c.ts_start).limit(limit)))

    async def forget_deleted_segments(self, batch_id: str, starts: list[int]) -> None:
        d = t.deleted_segments
        for i in range(0, len(starts), 500):
            await self.conn.execute(delete(d).where(d.c.batch_id == batch_id, d.c.ts_start.in_(starts[i : i + 500])))

    async def forget_batch(self, batch_id: str) -> None:
        await self.conn.execute(delete(t.deleted_flows).where(t.deleted_flows.c.batch_id == batch_id))
        await self.conn.execute(delete(t.deletion_batches).where(t.deletion_batches.c.id == batch_id))

    async def restore_flow_rows(
        self, flow: dict[str, Any], tags: dict[str, Any], collection: list[dict[str, Any]]
    ) -> None:
        await self.conn.execute(insert(t.flows).values(**flow))
        await self._replace_tags(t.flow_tags, "flow_id", flow["id"], tags)
        if collection:
            await self.conn.execute(insert(t.flow_collections), collection)

    # -- webhooks and the event outbox -------------------------------------------------------------

    async def webhooks_listening(self) -> bool:
        """Whether any webhook may want events (so that changes record them)."""
        w = t.webhooks
        row = await self._one(select(w.c.id).where(w.c.status != "disabled").limit(1))
        return row is not None

    async def get_webhook(self, webhook_id: str) -> Any:
        return await self._one(select(t.webhooks).where(t.webhooks.c.id == webhook_id))

    async def insert_webhook(self, row: dict[str, Any], tags: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.webhooks).values(**row))
        await self._replace_tags(t.webhook_tags, "webhook_id", row["id"], tags)

    async def update_webhook(
        self, webhook_id: str, values: dict[str, Any], tags: dict[str, Any] | None = None, owner: str | None = None
    ) -> bool:
        w = t.webhooks
        stmt = update(w).where(w.c.id == webhook_id)
        if owner is not None:
            stmt = stmt.where(w.c.lease_owner == owner)
        result = await self.conn.execute(stmt.values(**values))
        if tags is not None:
            await self._replace_tags(t.webhook_tags, "webhook_id", webhook_id, tags)
        return bool(result.rowcount)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.conn.execute(delete(t.webhook_tags).where(t.webhook_tags.c.webhook_id == webhook_id))
        await self.conn.execute(delete(t.webhooks).where(t.webhooks.c.id == webhook_id))

    async def list_webhooks(self, page: PageRequest, tags: list[TagFilter]) -> Page[Any]:
        w = t.webhooks
        keys: list[ColumnElement[Any]] = [w.c.url, w.c.id]
        stmt = self._with_keys(select(w), keys)
        for f in tags:
            stmt = stmt.where(self._tag_clause(t.webhook_tags, t.webhook_tags.c.webhook_id, w.c.id, f))
        return await self._page(stmt, keys, page, descending=False)

    async def insert_events(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(insert(t.events), rows)
            self.wrote_events = True

    async def sequence_events(self, limit: int = 1000) -> int:
        """Number the committed events that have no ``seq`` yet, in id order. One sequencer at
        a time (a transaction-scoped advisory lock on PostgreSQL; SQLite has one writer)."""
        e = t.events
        if self.conn.dialect.name == "postgresql":
            await self.conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7261001)")
        rows = await self._all(select(e.c.id).where(e.c.seq.is_(None)).order_by(e.c.id).limit(limit))
        if not rows:
            return 0
        top = await self.max_event_seq()
        await self.conn.execute(
            update(e).where(e.c.id == bindparam("_id")).values(seq=bindparam("_seq")),
            [{"_id": r.id, "_seq": top + i + 1} for i, r in enumerate(rows)],
        )
        return len(rows)

    async def max_event_seq(self) -> int:
        """The last ``seq`` given out. Delivered events are purged, so the webhooks' cursors
        remember it too: numbering must never go back below a cursor."""
        e, w = t.events, t.webhooks
        events_top = (await self._one(select(func.coalesce(func.max(e.c.seq), 0))))[0]
        cursor_top = (await self._one(select(func.coalesce(func.max(w.c.cursor), 0))))[0]
        return int(max(events_top, cursor_top))

    async def claim_webhooks(self, owner: str, now: int, lease_until: int, limit: int) -> list[Any]:
        """Webhooks with events to deliver that no other worker holds (SKIP LOCKED)."""
        w = t.webhooks
        top = await self.max_event_seq()
        rows = await self._all(
            select(w.c.id)
            .where(
                w.c.status.in_(("created", "started")),
                w.c.cursor < top,
                w.c.next_attempt <= now,
                or_(w.c.lease_until.is_(None), w.c.lease_until < now),
            )
            .order_by(w.c.next_attempt)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = [r.id for r in rows]
        if not ids:
            return []
        await self.conn.execute(update(w).where(w.c.id.in_(ids)).values(lease_owner=owner, lease_until=lease_until))
        return list(await self._all(select(w).where(w.c.id.in_(ids))))

    async def events_after(self, seq: int, limit: int) -> list[Any]:
        e = t.events
        return list(await self._all(select(e).where(e.c.seq > seq).order_by(e.c.seq).limit(limit)))

    async def purge_events(self, created_before: int) -> None:
        """Drop events every webhook is past, and any older than the retention period."""
        e, w = t.events, t.webhooks
        low = (await self._one(select(func.min(w.c.cursor)).where(w.c.status.in_(("created", "started", "error")))))[0]
        # With no webhook left to serve, every numbered event is done with.
        delivered = e.c.seq <= low if low is not None else e.c.seq.is_not(None)
        await self.conn.execute(delete(e).where(or_(e.c.created < created_before, delivered)))

    # -- usage counters and analytics ----------------------------------------------------------------

    async def bump_usage(self, deltas: dict[str, tuple[int, int]]) -> None:
        """Add (objects, bytes) to each backend's counters, on a random shard."""
        rows = [
            {"storage_id": sid, "shard": random.randrange(USAGE_SHARDS), "objects": o, "bytes": b}
            for sid, (o, b) in deltas.items()
            if sid and (o or b)
        ]
        if not rows:
            return
        stmt = self._add_on_conflict(t.usage_counters, ["storage_id", "shard"], ["objects", "bytes"])
        for row in rows:
            await self.conn.execute(stmt, [row])

    async def unsized_objects(self, storage_ids: list[str], limit: int) -> list[Any]:
        """Registered Objects on these backends whose size tamstore has not learnt yet."""
        o = t.objects
        return list(
            await self._all(
                select(o.c.id, o.c.storage_id)
                .where(o.c.registered.is_(True), o.c.size.is_(None), o.c.storage_id.in_(storage_ids))
                .limit(limit)
            )
        )

    async def add_flow_bytes(self, object_id: str, size: int) -> None:
        """Count an Object's newly learnt size in every Flow that uses it (once per segment)."""
        r, f = t.object_refs, t.flows
        for row in await self._all(select(r.c.flow_id, r.c.segments).where(r.c.object_id == object_id)):
            await self.conn.execute(
                update(f).where(f.c.id == row.flow_id).values(seg_bytes=f.c.seg_bytes + size * row.segments)
            )

    async def storage_usage(self) -> dict[str, tuple[int, int]]:
        u = t.usage_counters
        rows = await self._all(
            select(u.c.storage_id, func.sum(u.c.objects), func.sum(u.c.bytes)).group_by(u.c.storage_id)
        )
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}

    async def record_usage_day(self, day: str) -> None:
        h = t.usage_history
        await self.conn.execute(delete(h).where(h.c.day == day))
        usage = await self.storage_usage()
        if usage:
            await self.conn.execute(
                insert(h), [{"day": day, "storage_id": sid, "objects": o, "bytes": b} for sid, (o, b) in usage.items()]
            )

    async def usage_history(self, since: str) -> list[Any]:
        h = t.usage_history
        return list(await self._all(select(h).where(h.c.day >= since).order_by(h.c.day, h.c.storage_id)))

    async def flow_usage(
        self, group_by: str | None, filters: dict[str, Any], span: tuple[int | None, int | None] | None
    ) -> list[Any]:
        f = t.flows
        key = f.c[group_by] if group_by else literal("all")
        stmt = select(
            key.label("key"),
            func.count().label("flows"),
            func.coalesce(func.sum(f.c.seg_count), 0).label("segments"),
            func.coalesce(func.sum(f.c.seg_duration), 0).label("duration"),
            func.coalesce(func.sum(f.c.seg_bytes), 0).label("bytes"),
        )
        for column, value in filters.items():
            stmt = stmt.where(f.c[column] == value)
        if span is not None:
            stmt = stmt.where(_span_overlaps(*span))
        if group_by:
            stmt = stmt.group_by(key).order_by(key)
        return list(await self._all(stmt))

    async def segment_stats(self, flow_id: str, lo: int | None, hi: int | None) -> Any:
        s = t.segments
        length = s.c.ts_end - s.c.ts_start
        return await self._one(
            select(func.count(), func.coalesce(func.sum(length), 0), func.min(length), func.max(length)).where(
                segment_range_clause(flow_id, lo, hi)
            )
        )

    async def segment_bounds(self, flow_id: str, lo: int | None, hi: int | None, limit: int) -> list[tuple[int, int]]:
        s = t.segments
        rows = await self._all(
            select(s.c.ts_start, s.c.ts_end)
            .where(segment_range_clause(flow_id, lo, hi))
            .order_by(s.c.ts_start)
            .limit(limit)
        )
        return [(r.ts_start, r.ts_end) for r in rows]


class _InlineConnection:
    """A synchronous SQLAlchemy connection behind the awaitable methods ``Tx`` uses.

    On SQLite every statement runs in the event loop's own thread. Each is a keyed lookup, a
    scan bounded by a page, or one batch's rows; handing it to aiosqlite's thread instead cost
    several thread switches per statement, which was most of the time of a small request.
    The one wait SQLite can impose, for another process's write lock, is taken without
    blocking the loop (:func:`_begin_immediate`).
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        return self._conn.execute(stmt, params)

    async def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        return self._conn.exec_driver_sql(sql, params)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._conn.begin_nested():
            yield

    def driver(self) -> Any:
        """The sqlite3 connection underneath."""
        return self._conn.connection.driver_connection


async def _begin_immediate(dbapi_conn: Any, timeout: float = 30.0) -> None:
    """Take SQLite's write lock (``BEGIN IMMEDIATE``) without blocking the event loop: try at
    once, and while another process holds the lock, sleep asynchronously and try again."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout=30000")


class MetadataStore:
    """Opens transactions on one database. Create with :func:`open_metadata_store`."""

    def __init__(
        self,
        engine: AsyncEngine,
        sync_engine: Engine | None = None,
        read_engine: AsyncEngine | None = None,
        busy_timeout: float = 30.0,
    ) -> None:
        self.engine = engine
        self.sync_engine = sync_engine  # SQLite: every transaction runs on it, in the loop's thread
        self.read_engine = read_engine  # PostgreSQL: autocommit connections for read()
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.busy_timeout = busy_timeout  # seconds a write may wait for its turn before a 503
        self._blocked_since: float | None = None
        self._lookups: Any = None  # SQLite: a connection kept for one-statement reads (pages_token)
        # Set after a transaction that recorded events commits: wakes this process's webhook worker.
        self.events_written = asyncio.Event()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        try:
            if self.sync_engine is not None:
                with self.sync_engine.connect() as sync_conn:
                    yield Tx(_InlineConnection(sync_conn))  # type: ignore[arg-type]
                return
            async with (self.read_engine or self.engine).connect() as conn:
                yield Tx(conn)
        except Exception as exc:
            translated = _translate(exc)
            if translated is None:
                raise
            raise translated from exc

    async def pages_token(self, flow_id: str) -> int | None:
        """The Flow's pages token (see :meth:`Tx.pages_token`), read on its own, as cheaply as the
        database allows: it is read before every segment page. On SQLite it runs on a connection
        kept for it (in the loop's thread and with no await in between, so no two reads ever share
        it; fetchall ends the statement, and so its snapshot, at once): a pool checkout cost four
        times the query. Elsewhere it is an ordinary read."""
        if self.sync_engine is None:
            async with self.read() as tx:
                return await tx.pages_token(flow_id)
        try:
            if self._lookups is None:
                self._lookups = self.sync_engine.raw_connection()
            rows = self._lookups.driver_connection.execute(_PAGES_TOKEN, (flow_id,)).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"metadata database unavailable: {_short(exc)}") from exc
        return rows[0][0] if rows else None

    @property
    def writes_blocked(self) -> bool:
        """True while writes are giving up on a database locked elsewhere (for /readyz)."""
        return self._blocked_since is not None

    async def _take_write_lock(self, deadline: float) -> None:
        """This process's turn to write, within the busy timeout counted from the request: a
        queue of writers behind another process's lock all give up on time, not one after
        another."""
        assert self._write_lock is not None
        try:
            await asyncio.wait_for(self._write_lock.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._blocked_since = self._blocked_since or time.monotonic()
            raise _busy(self.busy_timeout) from None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        deadline = time.monotonic() + self.busy_timeout
        if self._write_lock is not None:
            await self._take_write_lock(deadline)
        try:
            try:
                if self.sync_engine is not None:
                    with self.sync_engine.connect() as sync_conn:
                        try:
                            await _begin_immediate(
                                sync_conn.connection.driver_connection, max(0.0, deadline - time.monotonic())
                            )
                        except sqlite3.OperationalError as exc:
                            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                                raise
                            self._blocked_since = self._blocked_since or time.monotonic()
                            raise _busy(self.busy_timeout) from exc
                        self._blocked_since = None
                        # The transaction is open; tell SQLAlchemy, whose own BEGIN is skipped.
                        with sync_conn.execution_options(tamstore_begun=True).begin():
                            tx = Tx(_InlineConnection(sync_conn))  # type: ignore[arg-type]
                            yield tx
                else:
                    async with self.engine.connect() as conn, conn.begin():
                        tx = Tx(conn)
                        yield tx
                if tx.wrote_events:
                    self.events_written.set()
            except Exception as exc:
                translated = _translate(exc)
                if translated is None:
                    raise
                raise translated from exc
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    async def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file, in a thread of its own, so
        that commits on the request path seldom do it themselves (only past
        ``wal_autocheckpoint``). The background workers call this every second."""
        if self.sync_engine is not None:
            await asyncio.to_thread(_checkpoint, str(self.sync_engine.url.database))

    def pools(self) -> list[Any]:
        """The connection pools in use (for metrics)."""
        return [e.pool for e in (self.engine, self.read_engine, self.sync_engine) if e is not None]

    async def close(self) -> None:
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None
        if self.read_engine is not None:
            await self.read_engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        await self.engine.dispose()


def _is_disconnect(exc: DBAPIError) -> bool:
    return bool(getattr(exc, "connection_invalidated", False)) or isinstance(exc, OperationalError)


def _busy(timeout: float) -> Unavailable:
    return Unavailable(f"the database is locked by another writer; gave up after {timeout:g} s")


# SQLSTATE classes: the server or the connection is going away (08 connection exception, 57
# operator intervention such as "database system is shutting down", 53 insufficient resources)
# is a 503; a value the database cannot take (22 data exception, 54 program limit exceeded such
# as "index row size exceeds maximum") is the client's: a 400. Checked on what asyncpg raises
# directly too (raw driver statements), not only on SQLAlchemy's wrappers.
_UNAVAILABLE_CLASSES = ("08", "57", "53")
_BAD_VALUE_CLASSES = ("22", "54")


def _sqlstate(exc: BaseException) -> str:
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state:
            return str(state)
    return ""


def _translate(exc: BaseException) -> TamsError | None:
    """The client's view of a database failure, or None for one that is a bug (left as a 500)."""
    if isinstance(exc, TamsError):
        return None
    state = _sqlstate(exc)
    if state[:2] in _UNAVAILABLE_CLASSES:
        return Unavailable(f"metadata database unavailable: {_short(exc)}")
    if state[:2] in _BAD_VALUE_CLASSES or isinstance(exc, OverflowError):
        return BadRequest(f"a value in the request cannot be stored: {_short(exc)}")
    if isinstance(exc, (OperationalError, OSError, sqlite3.OperationalError, SATimeoutError)):
        return Unavailable(f"metadata database unavailable: {_short(exc)}")
    if isinstance(exc, DBAPIError) and _is_disconnect(exc):
        return Unavailable(f"metadata database unavailable: {_short(exc)}")
    if type(exc).__module__.startswith("asyncpg") and type(exc).__name__ in (
        "InterfaceError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
    ):
        return Unavailable(f"metadata database unavailable: {_short(exc)}")
    return None


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200]


def open_metadata_store(url: str, *, pool_size: int = 10, busy_timeout: float = 30.0) -> MetadataStore:
    """Open the store for a SQLAlchemy async URL (``sqlite+aiosqlite:///...`` or
    ``postgresql+asyncpg://...``)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        # Transactions: the plain sqlite3 driver in the event loop's thread (_InlineConnection);
        # the aiosqlite engine above remains for migrations.
        # The pool never blocks (unbounded overflow): a blocked loop thread could not give back
        # the connection it waits for.
        sync_engine = create_engine(
            url.replace("+aiosqlite", ""),
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=-1,
            # A Connection rolls back its own transaction when closed; no second reset.
            pool_reset_on_return=None,
            connect_args={"check_same_thread": False},
        )
        for each in (engine.sync_engine, sync_engine):
            event.listen(each, "connect", _sqlite_pragmas)
            event.listen(each, "begin", _sqlite_begin)
        return MetadataStore(engine, sync_engine, busy_timeout=busy_timeout)
    # PostgreSQL: writes on one pool; reads on another whose connections are in autocommit for
    # good. Under READ COMMITTED each statement takes its own snapshot even inside a transaction,
    # so a read transaction's BEGIN and ROLLBACK (and, per checkout, the isolation level's set and
    # reset) were round trips that bought nothing: a 100-flow read went from ~1.1 to ~0.8 ms
    # (floor 0.3 ms), measured in process. Locking reads (FOR UPDATE, advisory locks) are only
    # ever in write transactions. Reads get db_pool_size connections, writes half as many; each pool
    # grows by half again in bursts.
    writers = max(2, pool_size // 2)
    common: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": 10}
    engine = create_async_engine(url, pool_size=writers, max_overflow=writers // 2, **common)
    read_engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size // 2, isolation_level="AUTOCOMMIT", **common
    )
    return MetadataStore(engine, read_engine=read_engine, busy_timeout=busy_timeout)


def _checkpoint(path: str) -> None:
    conn = sqlite3.connect(path, timeout=1)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise  # busy: another process (serve --processes, tamstore worker) is checkpointing
    finally:
        conn.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # Commits checkpoint the log themselves only past 32 MB: the workers' checkpoint job does it
    # off the request path (a 1,000-segment commit spent ~4 ms checkpointing).
    cur.execute("PRAGMA wal_autocheckpoint=8000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN for the transactions SQLAlchemy opens (reads; migrations on the aiosqlite engine).
    Store writes open theirs with ``_begin_immediate`` and mark the connection ``tamstore_begun``."""
    if conn.get_execution_options().get("tamstore_begun"):
        return
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite3.Connection):
        driver.execute("BEGIN")  # straight on the driver: it runs for every read transaction
    else:
        conn.exec_driver_sql("BEGIN")
