"""Flow delete requests (worked through under leases) and the recovery window of deleted content."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from tamstore.domain.access import EVERYTHING, Access
from tamstore.domain.paging import Page, PageRequest
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.rows import BatchRow, DeletedFlowRow, DeletedSegmentRow, DeleteRequestRow, row_as, rows_as


def _claimable(now: int) -> tuple[ColumnElement[bool], ...]:
    """A request not finished, on which nobody holds a live lease (ix_delete_requests_pending)."""
    r = t.flow_delete_requests
    return r.c.status.in_(("created", "started")), or_(r.c.lease_until.is_(None), r.c.lease_until < now)


def _expired(now: int) -> tuple[ColumnElement[bool], ...]:
    """A finished request past its listing (``expiry_key`` is its expiry, 0 while it has none;
    ix_delete_requests_expiry)."""
    r = t.flow_delete_requests
    return r.c.expiry_key > 0, r.c.expiry_key <= now


class DeletionQueries(Queries):
    """Delete requests and the recovery window."""

    # -- flow delete requests ----------------------------------------------------------------------

    async def insert_delete_request(self, row: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.flow_delete_requests).values(**row))
        await self._notify()  # a worker in another process starts on it at once

    async def get_delete_request(self, request_id: str, now: int) -> DeleteRequestRow | None:
        r = t.flow_delete_requests
        return row_as(
            DeleteRequestRow,
            await self._one(select(r).where(r.c.id == request_id, or_(r.c.expiry.is_(None), r.c.expiry > now))),
        )

    async def pending_flow_deletion(self, flow_id: str) -> DeleteRequestRow | None:
        r = t.flow_delete_requests
        return row_as(
            DeleteRequestRow,
            await self._one(
                select(r)
                .where(r.c.flow_id == flow_id, r.c.delete_flow == true(), r.c.status.in_(("created", "started")))
                .limit(1)
            ),
        )

    async def list_delete_requests(
        self, page: PageRequest, sort_by: str, now: int, access: Access = EVERYTHING
    ) -> Page[DeleteRequestRow]:
        """Unexpired requests about Flows ``access`` may read (a Flow already gone has no
        classes left: its requests follow the policy for untagged content)."""
        r = t.flow_delete_requests
        keys: list[ColumnElement[Any]] = [r.c.expiry_key if sort_by == "expiry" else r.c.created, r.c.id]
        stmt = self._with_keys(select(r), keys).where(or_(r.c.expiry.is_(None), r.c.expiry > now))
        if (visible := await self.visible("flow", r.c.flow_id, access)) is not None:
            stmt = stmt.where(visible)
        return await self._page(stmt, keys, page, descending=True, row=DeleteRequestRow)

    async def update_delete_request(self, request_id: str, values: dict[str, Any], owner: str | None = None) -> bool:
        """Update a request; with ``owner``, only while that worker still holds its lease. On the
        driver: a flow-delete-request's worker updates it in every chunk's transaction."""
        columns = t.flow_delete_requests.c
        sets = ", ".join(f"{columns[name].name} = ?" for name in values)  # (a column's name, or KeyError)
        sql = f"UPDATE flow_delete_requests SET {sets} WHERE id = ?"
        params = [*values.values(), request_id]
        if owner is not None:
            sql += " AND lease_owner = ?"
            params.append(owner)
        return bool(await self._driver_rows(sql + " RETURNING id", params))

    async def claim_delete_request(self, owner: str, now: int, lease_until: int) -> DeleteRequestRow | None:
        """Take the oldest request nobody holds a live lease on. ``SKIP LOCKED`` lets several
        workers on PostgreSQL claim different requests at the same moment."""
        r = t.flow_delete_requests
        stmt = select(r.c.id).where(*_claimable(now)).order_by(r.c.created).limit(1).with_for_update(skip_locked=True)
        row = await self._one(stmt)
        if row is None:
            return None
        await self.conn.execute(
            update(r)
            .where(r.c.id == row.id)
            .values(status="started", lease_owner=owner, lease_until=lease_until, updated=now)
        )
        return row_as(DeleteRequestRow, await self._one(select(r).where(r.c.id == row.id)))

    async def delete_work_due(self, now: int) -> bool:
        """Whether a request may be claimed, or a finished one has expired: what a worker woken
        by any commit elsewhere reads before it takes the write lock (two index probes)."""
        r = t.flow_delete_requests
        claimable = select(r.c.id).where(*_claimable(now)).limit(1)
        expired = select(r.c.id).where(*_expired(now)).limit(1)
        row = await self._one(select(exists(claimable) | exists(expired)))
        return bool(row[0])

    async def count_pending_deletions(self) -> int:
        r = t.flow_delete_requests
        row = await self._one(select(func.count()).where(r.c.status.in_(("created", "started"))))
        return int(row[0])

    async def purge_expired_delete_requests(self, now: int) -> None:
        await self.conn.execute(delete(t.flow_delete_requests).where(*_expired(now)))

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

    async def list_batches(self, limit: int) -> list[BatchRow]:
        b = t.deletion_batches
        return rows_as(BatchRow, await self._all(select(b).order_by(b.c.deleted_at.desc(), b.c.id).limit(limit)))

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        b = t.deletion_batches
        return row_as(BatchRow, await self._one(select(b).where(b.c.id == batch_id)))

    async def expired_batches(self, before: int, limit: int) -> list[BatchRow]:
        b = t.deletion_batches
        return rows_as(
            BatchRow, await self._all(select(b).where(b.c.deleted_at < before).order_by(b.c.deleted_at).limit(limit))
        )

    async def get_deleted_flow(self, batch_id: str) -> DeletedFlowRow | None:
        return row_as(
            DeletedFlowRow, await self._one(select(t.deleted_flows).where(t.deleted_flows.c.batch_id == batch_id))
        )

    async def deleted_segment_chunk(self, batch_id: str, limit: int) -> list[DeletedSegmentRow]:
        d = t.deleted_segments
        return rows_as(
            DeletedSegmentRow,
            await self._all(select(d).where(d.c.batch_id == batch_id).order_by(d.c.ts_start).limit(limit)),
        )

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
