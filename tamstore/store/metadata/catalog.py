"""The catalogue: the service document, Sources, Flows (with their tags and collections) and Flow Profiles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    exists,
    insert,
    literal,
    not_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tamstore.domain.access import EVERYTHING, Access
from tamstore.domain.errors import Conflict
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.queries import SourceQuery
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import IN_CHUNK, Queries, json_text
from tamstore.store.metadata.rows import FlowRow, ProfileRow, SourceRow, flow_row, row_as, rows_as


def span_overlaps(lo: int | None, hi: int | None) -> Any:
    """Flows with segments whose span overlaps ``[lo, hi)`` (from the maintained span columns)."""
    f = t.flows
    clauses: list[ColumnElement[bool]] = [f.c.seg_start.is_not(None)]
    if hi is not None:
        clauses.append(f.c.seg_start < hi)
    if lo is not None:
        clauses.append(f.c.seg_end > lo)
    return and_(*clauses)


# The collector and member Sources of the Flow collections touching any of the ``{ids}``: on
# the driver (every segment write's event asks it of one Source, and SQLAlchemy took ten times
# the query's time to run it).
_SOURCE_COLLECTIONS = (
    "SELECT collector.source_id, member.source_id, fc.role FROM flows member"
    " JOIN flow_collections fc ON fc.member_id = member.id JOIN flows collector ON collector.id = fc.collector_id"
    " WHERE (collector.source_id IN ({ids}) OR member.source_id IN ({ids})) AND collector.source_id != member.source_id"
    " ORDER BY collector.created, fc.collector_id, fc.position"
)
_FLOW_BY_ID = f"SELECT {', '.join(c.name for c in t.flows.c)} FROM flows WHERE id = ?"
_FLOW_BY_ID_PG = _FLOW_BY_ID.replace("?", "$1")


# A listing filtered on one of these columns reads the rows with that value from an index, and
# is a lookup: clients take its first page as the answer, so it runs whole, never cut short at
# ``listing_scan_rows`` (``Queries._page``), as does one with a tag value or collection of few members
# (``Lookup.few``). Other filters (format, codec, status, sizes, a timerange, a tag's
# presence, a tag value on many rows, what the caller may read) are cut short.
_INDEXED_COLUMNS = frozenset({"source_id", "profile_id", "label"})


class CatalogQueries(Queries):
    """Sources, Flows, Profiles and the service document."""

    # -- service ------------------------------------------------------------------------------

    async def service_info(self) -> dict[str, str]:
        rows = await self._all(select(t.service_info))
        return {r.key: r.value for r in rows}

    async def set_service_info(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            await self.conn.execute(delete(t.service_info).where(t.service_info.c.key == key))
            await self.conn.execute(insert(t.service_info).values(key=key, value=value))

    # -- sources ------------------------------------------------------------------------------

    async def get_source(self, source_id: str) -> SourceRow | None:
        return row_as(SourceRow, await self._one(select(t.sources).where(t.sources.c.id == source_id)))

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

    async def flow_ids_of_source(self, source_id: str, limit: int = 10_000) -> list[str]:
        """The Source's Flows (through its index; bounded: a Source has a handful)."""
        f = t.flows
        rows = await self._all(select(f.c.id).where(f.c.source_id == source_id).order_by(f.c.id).limit(limit))
        return [r.id for r in rows]

    async def source_has_flows(self, source_id: str) -> bool:
        row = await self._one(select(t.flows.c.id).where(t.flows.c.source_id == source_id).limit(1))
        return row is not None

    async def list_sources(self, page: PageRequest, query: SourceQuery, access: Access = EVERYTHING) -> Page[SourceRow]:
        s = t.sources
        keys, descending = self._sort_keys(s, query.sort_by, {"created": "created", "updated": "updated"})
        stmt = self._with_keys(select(s), keys)
        if (visible := await self.visible("source", s.c.id, access)) is not None:
            stmt = stmt.where(visible)
        if query.label is not None:
            stmt = stmt.where(s.c.label == query.label)
        if query.format is not None:
            stmt = stmt.where(s.c.format == query.format)
        lookups = [await self._tag_clause(t.source_tags, t.source_tags.c.source_id, s.c.id, f) for f in query.tags]
        if query.collected_by_ids:
            lookups.append(await self._member_of(s.c.id, self._sources_collected_by(query.collected_by_ids)))
        elif query.collected_by_ids is not None:
            stmt = stmt.where(not_(exists(self._sources_collected_by(None, s.c.id))))
        stmt = stmt.where(*(lookup.clause for lookup in lookups))
        pinpoint = query.label is not None or any(lookup.few for lookup in lookups)
        filtered = stmt.whereclause is not None and not pinpoint
        return await self._page(stmt, keys, page, descending=descending, row=SourceRow, filtered=filtered)

    @staticmethod
    def _sort_keys(table: Any, sort_by: str, datetime_columns: dict[str, str]) -> tuple[list[ColumnElement[Any]], bool]:
        """Sort keys per ADR 0052: datetimes newest first; labels A-Z with unlabelled last."""
        if sort_by == "label":
            return [table.c.label_key, table.c.id], False
        return [table.c[datetime_columns[sort_by]], table.c.id], True

    @staticmethod
    def _sources_collected_by(ids: list[str] | None, source_id: Any = None) -> Select[Any]:
        """The ids of Sources with a Flow in a collection of a Flow of another Source: one of
        ``ids``, or (None) any, and only ``source_id`` where given."""
        member = t.flows.alias("member")
        collector = t.flows.alias("collector")
        fc = t.flow_collections
        q = (
            select(member.c.source_id)
            .select_from(
                member.join(fc, fc.c.member_id == member.c.id).join(collector, collector.c.id == fc.c.collector_id)
            )
            .where(collector.c.source_id != member.c.source_id)
        )
        if ids is not None:
            q = q.where(collector.c.source_id.in_(ids))
        if source_id is not None:
            q = q.where(member.c.source_id == source_id)
        return q

    async def source_collections(self, source_ids: list[str]) -> dict[str, dict[str, list[Any]]]:
        """``source_collection`` and ``collected_by`` for each Source, inferred from Flows."""
        out: dict[str, dict[str, list[Any]]] = {
            sid: {"source_collection": [], "collected_by": []} for sid in source_ids
        }
        if not source_ids:
            return out
        rows: list[Any] = []
        for at in range(0, len(source_ids), IN_CHUNK):  # every row about a Source comes with its own chunk
            chunk = source_ids[at : at + IN_CHUNK]
            rows += await self._driver_rows(_SOURCE_COLLECTIONS.format(ids=", ".join("?" * len(chunk))), chunk * 2)
        for collector, member, role in rows:
            if collector in out:
                items = out[collector]["source_collection"]
                item = {"id": member}
                if role is not None:
                    item["role"] = role
                if item not in items:
                    items.append(item)
            if member in out:
                by = out[member]["collected_by"]
                if collector not in by:
                    by.append(collector)
        return out

    # -- flows --------------------------------------------------------------------------------

    async def get_flow(self, flow_id: str, *, lock: bool = False) -> FlowRow | None:
        """The Flow row. ``lock`` holds the row until the transaction ends, so that writers of
        one Flow's segments take turns (on PostgreSQL; SQLite has one writer anyway) and each
        sees the segments the previous one committed.

        On the driver: every segment write and every deletion chunk reads its Flow first, and
        SQLAlchemy's statement took a millisecond where the read takes a few dozen µs."""
        rows = await self._driver_rows(
            _FLOW_BY_ID, (flow_id,), postgresql=(_FLOW_BY_ID_PG + (" FOR UPDATE" if lock else ""), (flow_id,))
        )
        return flow_row(rows[0]) if rows else None

    async def get_flows(self, flow_ids: Iterable[str]) -> dict[str, FlowRow]:
        ids = list(set(flow_ids))
        if not ids:
            return {}
        rows = rows_as(FlowRow, await self._all(select(t.flows).where(t.flows.c.id.in_(ids))))
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
                "container_mapping": json_text(item["container_mapping"]) if "container_mapping" in item else None,
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
        # On the driver: a page of 100 Flows made SQLAlchemy render 100 binds every time.
        for member_id, collector_id in await self._rows_for_ids(
            "SELECT member_id, collector_id FROM flow_collections", "member_id", flow_ids, " ORDER BY collector_id"
        ):
            if collector_id not in out[member_id]:
                out[member_id].append(collector_id)
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
        access: Access = EVERYTHING,
    ) -> Page[FlowRow]:
        f = t.flows
        keys, descending = self._sort_keys(f, sort_by, {"created": "created", "metadata_updated": "metadata_updated"})
        stmt = self._with_keys(select(f), keys)
        if (visible := await self.visible("flow", f.c.id, access)) is not None:
            stmt = stmt.where(visible)
        for column, value in filters.items():
            stmt = stmt.where(f.c[column] == value)
        lookups = [await self._tag_clause(t.flow_tags, t.flow_tags.c.flow_id, f.c.id, tf) for tf in tags]
        fc = t.flow_collections
        if collected_by_ids:
            members = select(fc.c.member_id).where(fc.c.collector_id.in_(collected_by_ids))
            rows = f"SELECT 1 FROM flow_collections WHERE collector_id IN ({', '.join('?' * len(collected_by_ids))})"
            lookups.append(await self._member_of(f.c.id, members, (rows, list(collected_by_ids))))
        elif collected_by_ids is not None:
            stmt = stmt.where(not_(exists(select(literal(1)).where(fc.c.member_id == f.c.id))))
        stmt = stmt.where(*(lookup.clause for lookup in lookups))
        if empty_only:
            stmt = stmt.where(f.c.seg_start.is_(None))
        elif timerange is not None:
            stmt = stmt.where(span_overlaps(*timerange))
        pinpoint = not filters.keys().isdisjoint(_INDEXED_COLUMNS) or any(lookup.few for lookup in lookups)
        filtered = stmt.whereclause is not None and not pinpoint
        return await self._page(stmt, keys, page, descending=descending, row=FlowRow, filtered=filtered)

    # -- profiles -----------------------------------------------------------------------------

    async def get_profile(self, profile_id: str) -> ProfileRow | None:
        return row_as(ProfileRow, await self._one(select(t.profiles).where(t.profiles.c.id == profile_id)))

    async def insert_profile(self, row: dict[str, Any]) -> None:
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(insert(t.profiles).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"Profile {row['id']} already exists; Profiles are immutable") from exc

    async def list_profiles(
        self, page: PageRequest, *, format: str | None, codec: str | None, label: str | None
    ) -> Page[ProfileRow]:
        p = t.profiles
        keys: list[ColumnElement[Any]] = [p.c.id]
        stmt = self._with_keys(select(p), keys)
        if format is not None:
            stmt = stmt.where(p.c.format == format)
        if codec is not None:
            stmt = stmt.where(p.c.codec == codec)
        if label is not None:
            stmt = stmt.where(p.c.label == label)
        return await self._page(stmt, keys, page, descending=False, row=ProfileRow)
