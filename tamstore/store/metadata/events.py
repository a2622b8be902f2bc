"""Webhook registrations and the event outbox they are delivered from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from tamstore.domain.access import EVERYTHING, Access
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.rows import EventRow, WebhookRow, row_as, rows_as

# Statements of the hot event paths, built once (building them cost more than running them).
_TOP_SEQ = (
    "SELECT {greatest}((SELECT coalesce(max(seq), 0) FROM events), (SELECT coalesce(max(cursor), 0) FROM webhooks))"
)
# Asked by a worker at every wake-up (each commit that wrote an event: every segment write
# and deletion chunk), so on the driver: SQLAlchemy took 1.7 ms to run it.
_LOWEST_DUE_CURSOR = (
    "SELECT min(cursor) FROM webhooks WHERE status IN ('created', 'started') AND next_attempt <= :now"
    " AND (lease_until IS NULL OR lease_until < :now)"
)


class EventQueries(Queries):
    """Webhooks, their leases and the events waiting for them."""

    # -- webhooks and the event outbox -------------------------------------------------------------

    async def webhooks_listening(self) -> bool:
        """Whether any webhook may want events (so that changes record them)."""
        w = t.webhooks
        row = await self._one(select(w.c.id).where(w.c.status != "disabled").limit(1))
        return row is not None

    async def get_webhook(self, webhook_id: str) -> WebhookRow | None:
        return row_as(WebhookRow, await self._one(select(t.webhooks).where(t.webhooks.c.id == webhook_id)))

    async def insert_webhook(self, row: dict[str, Any], tags: dict[str, Any]) -> None:
        await self.conn.execute(insert(t.webhooks).values(**row))
        await self._replace_tags(t.webhook_tags, "webhook_id", row["id"], tags)

    async def count_webhooks_of(self, owner: str | None, up_to: int) -> int:
        """How many webhooks ``owner`` registered (None: those registered with authentication
        off), counting no further than ``up_to``."""
        w = t.webhooks
        owned = w.c.created_by.is_(None) if owner is None else w.c.created_by == owner
        first = select(w.c.id).where(owned).limit(up_to).subquery()
        return int((await self.conn.execute(select(func.count()).select_from(first))).scalar_one())

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

    async def list_webhooks(
        self, page: PageRequest, tags: list[TagFilter], access: Access = EVERYTHING
    ) -> Page[WebhookRow]:
        w = t.webhooks
        keys: list[ColumnElement[Any]] = [w.c.url, w.c.id]
        stmt = self._with_keys(select(w), keys)
        if (visible := await self.visible("webhook", w.c.id, access)) is not None:
            stmt = stmt.where(visible)
        for f in tags:
            stmt = stmt.where((await self._tag_clause(t.webhook_tags, t.webhook_tags.c.webhook_id, w.c.id, f)).clause)
        return await self._page(stmt, keys, page, descending=False, row=WebhookRow)

    async def insert_events(self, rows: list[dict[str, Any]]) -> None:
        """Record events (on the driver: nearly every write records one, and SQLAlchemy's insert
        cost more than the database's work)."""
        if rows:
            if self.conn.dialect.name == "sqlite":
                # One writer at a time: numbered here, in commit order, with no sequencer pass.
                top = await self.max_event_seq()
                rows = [{**row, "seq": top + i + 1} for i, row in enumerate(rows)]
            await self._insert_many(t.events, rows)
            if not self.wrote_events:
                await self._notify()
            self.wrote_events = True

    async def has_unsequenced_events(self) -> bool:
        if self.conn.dialect.name == "sqlite":
            return False  # numbered as they are inserted
        e = t.events
        return await self._one(select(e.c.id).where(e.c.seq.is_(None)).limit(1)) is not None

    async def oldest_event_seq(self) -> int | None:
        e = t.events
        return (await self._one(select(func.min(e.c.seq))))[0]  # type: ignore[no-any-return]

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
        await self._notify()  # numbered: readers in other processes may take them now
        return len(rows)

    async def max_event_seq(self) -> int:
        """The last ``seq`` given out. Delivered events are purged, so the webhooks' cursors
        remember it too: numbering must never go back below a cursor."""
        rows = await self._driver_rows(
            _TOP_SEQ.format(greatest="max"), (), postgresql=(_TOP_SEQ.format(greatest="greatest"), ())
        )
        return int(rows[0][0])

    async def webhooks_due(self, now: int) -> bool:
        """Whether any webhook has events to deliver now that no worker holds (a read, so that
        a worker woken for nothing writes nothing)."""
        lowest = (await self._driver_rows(_LOWEST_DUE_CURSOR, {"now": now}))[0][0]
        return lowest is not None and lowest < await self.max_event_seq()

    async def claim_webhooks(self, owner: str, now: int, lease_until: int, limit: int) -> list[WebhookRow]:
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
        return rows_as(WebhookRow, await self._all(select(w).where(w.c.id.in_(ids))))

    async def events_after(self, seq: int, limit: int) -> list[EventRow]:
        e = t.events
        return rows_as(EventRow, await self._all(select(e).where(e.c.seq > seq).order_by(e.c.seq).limit(limit)))

    async def purge_events(self, created_before: int, *, keep_delivered: bool = False) -> None:
        """Drop events older than the retention period and (unless the event stream keeps them
        for replay, ``keep_delivered``) the ones every webhook is past."""
        e, w = t.events, t.webhooks
        if keep_delivered:
            # The newest event stays, whatever its age: numbering goes on from it after a quiet
            # spell, so an id a client holds never comes round again.
            top = (await self._one(select(func.max(e.c.seq))))[0]
            if top is not None:
                await self.conn.execute(delete(e).where(e.c.created < created_before, e.c.seq < top))
            return
        low = (await self._one(select(func.min(w.c.cursor)).where(w.c.status.in_(("created", "started", "error")))))[0]
        # With no webhook left to serve, every numbered event is done with.
        delivered = e.c.seq <= low if low is not None else e.c.seq.is_not(None)
        await self.conn.execute(delete(e).where(or_(e.c.created < created_before, delivered)))
