"""Webhook delivery: from the outbox to each webhook's URL, in order, at least once.

A worker numbers newly committed events, then leases webhooks that have events waiting
(``SKIP LOCKED``, so two workers never deliver to one webhook at once), and for each delivers its
events one after another with httpx. A failure backs off exponentially and blocks that webhook's
later events (order is kept); after ``webhook_max_attempts`` the webhook goes to ``error``. The
cursor moves only past deliveries that succeeded, every ``SAVE_EVERY`` of them and at the end of
a batch, so a crash repeats at most those.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import orjson

from tamstore.domain.access import READ
from tamstore.domain.errors import TamsError, error_body
from tamstore.domain.events import EventFacts, WebhookFilter
from tamstore.domain.objects import UrlFilter
from tamstore.domain.timerange import TimeRange
from tamstore.ops.context import Context, now_us, rfc3339
from tamstore.ops.events import SEGMENT_DEFAULTS
from tamstore.ops.segments import SegmentQuery, segment_docs
from tamstore.outbound import OutboundClient
from tamstore.store.metadata.objects import only_controlled

__all__ = ["Deliverer", "event_body", "event_facts"]

log = logging.getLogger("tamstore.webhooks")

BATCH = 100
# Deliveries between cursor writes: a crash repeats at most these (delivery is at least once),
# and a burst is not one write transaction per delivery.
SAVE_EVERY = 20
PURGE_SECONDS = 5.0  # events past their retention are dropped this often


class Deliverer:
    def __init__(self, ctx: Context, owner: str) -> None:
        self.ctx = ctx
        self.owner = owner
        s = ctx.settings
        self.client = OutboundClient(ctx.target_policy, s.webhook_timeout)
        self.concurrency = asyncio.Semaphore(s.webhook_concurrency)
        self.next_purge = 0.0  # monotonic time of the next purge of old events
        # Deliveries not yet added to the store's counters (``/metrics`` reads those, in any
        # process): added by the next write of a delivery pass.
        self.counted = {"ok": 0, "failed": 0}

    def _take_counts(self) -> dict[str, int]:
        counts = {f"webhook_deliveries_{outcome}": n for outcome, n in self.counted.items()}
        self.counted = {"ok": 0, "failed": 0}
        return counts

    async def close(self) -> None:
        await self.client.aclose()

    async def run_once(self) -> int:
        """Sequence new events and deliver what is due. Returns deliveries attempted. Woken for
        nothing (no webhook due, nothing to number or purge), it only reads."""
        s = self.ctx.settings
        lease = s.worker_lease * 1_000_000
        purge = time.monotonic() >= self.next_purge
        async with self.ctx.store.read() as tx:
            unnumbered = await tx.has_unsequenced_events()
            due = await tx.webhooks_due(now_us())
        if not (unnumbered or due or purge):
            return 0
        async with self.ctx.store.write() as tx:
            if unnumbered:
                await tx.sequence_events()
            if purge:
                await tx.purge_events(now_us() - s.webhook_event_retention * 1_000_000, keep_delivered=s.event_stream)
                self.next_purge = time.monotonic() + PURGE_SECONDS
            hooks = await tx.claim_webhooks(self.owner, now_us(), now_us() + lease, s.webhook_concurrency)
        if not hooks:
            return 0
        counts = await asyncio.gather(*(self._serve(h) for h in hooks))
        return sum(counts)

    async def _serve(self, hook: Any) -> int:
        async with self.concurrency:
            # Release the lease when done. Not when cancelled (shutting down): no database work
            # then, and the lease simply runs out for the next worker.
            delivered = await self._deliver_pending(hook)
            async with self.ctx.store.write() as tx:
                await tx.update_webhook(hook.id, {"lease_until": None}, owner=self.owner)
                await tx.add_to_counters(self._take_counts())
            return delivered

    async def _deliver_pending(self, hook: Any) -> int:
        doc = orjson.loads(hook.doc)
        filt = WebhookFilter.from_doc(doc)
        owner = self.ctx.owner_access(
            hook.created_by, frozenset(orjson.loads(hook.owner_groups or "[]")), bool(hook.owner_admin)
        )
        headers = {"content-type": "application/json"}
        if doc.get("api_key_name") and hook.api_key_value is not None:
            headers[doc["api_key_name"]] = hook.api_key_value
        cursor, delivered = hook.cursor, 0
        status = hook.status

        async def save(position: int) -> bool:
            """Move the webhook's cursor past what was delivered; False: the lease is lost."""
            nonlocal status
            lease_until = now_us() + self.ctx.settings.worker_lease * 1_000_000
            values: dict[str, Any] = {"cursor": position, "attempts": 0, "lease_until": lease_until}
            if status == "created":
                values["status"] = status = "started"
            async with self.ctx.store.write() as tx:
                await tx.add_to_counters(self._take_counts())
                return await tx.update_webhook(hook.id, values, owner=self.owner)

        while True:
            async with self.ctx.store.read() as tx:
                events = await tx.events_after(cursor, BATCH)
            if not events:
                return delivered
            saved, unsaved = cursor, 0
            for event in events:
                facts = event_facts(event)
                if filt.matches(facts) and owner.allows(READ, facts.classes):
                    body = event_body(self.ctx, event, filt)
                    ok, problem = await self.client.post(hook.url, body, headers)
                    delivered += 1
                    self.counted["ok" if ok else "failed"] += 1
                    if not ok:
                        if cursor != saved and not await save(cursor):
                            return delivered
                        await self._failed(hook, problem)
                        return delivered
                    unsaved += 1
                cursor = event.seq or cursor  # numbered: events_after reads only those
                if unsaved >= SAVE_EVERY:
                    if not await save(cursor):
                        return delivered  # lost the lease, or the webhook was changed: stop here
                    saved, unsaved = cursor, 0
            if cursor != saved and not await save(cursor):
                return delivered

    async def _failed(self, hook: Any, problem: str) -> None:
        s = self.ctx.settings
        async with self.ctx.store.write() as tx:
            current = await tx.get_webhook(hook.id)
            attempts = (current.attempts if current else hook.attempts) + 1
            if attempts >= s.webhook_max_attempts:
                err = TamsError(f"delivery failed {attempts} times; last: {problem}")
                err.kind = "delivery_failed"
                values = {"status": "error", "error": orjson.dumps(error_body(err)).decode(), "attempts": attempts}
                log.warning("webhook %s disabled after %d failed deliveries: %s", hook.id, attempts, problem)
            else:
                delay_ms = min(s.webhook_backoff_ms * 2 ** (attempts - 1), s.webhook_backoff_max * 1000)
                values = {"attempts": attempts, "next_attempt": now_us() + delay_ms * 1000}
            await tx.update_webhook(hook.id, values, owner=self.owner)


def event_body(ctx: Context, event: Any, filt: WebhookFilter) -> bytes:
    """An event as a webhook (or event stream client) receives it: segments rendered as
    GET /flows/{id}/segments would show them, with the receiver's URL filters, URLs signed now."""
    payload = orjson.loads(event.payload)
    if event.event_type == "flows/segments_added":
        init_of = payload.pop("_init_of")
        instances: dict[str, Sequence[Any]] = {
            oid: [SimpleNamespace(**i) for i in items] for oid, items in payload.pop("_instances").items()
        }
        # Objects with only their controlled instance, by backend (events recorded before it: none)
        sole = {oid: storage_id for storage_id, ids in payload.pop("_sole", {}).items() for oid in ids}
        for oid, storage_id in sole.items():  # (init Objects go by their instances)
            instances[oid] = only_controlled(storage_id)
        payload["segments"] = _render(ctx, payload["segments"], init_of, sole, instances, filt.transforms)
    return orjson.dumps({"event_timestamp": rfc3339(event.created), "event_type": event.event_type, "event": payload})


def _render(
    ctx: Context,
    segments: list[dict[str, Any]],
    init_of: dict[str, str | None],
    sole: dict[str, str],
    instances: dict[str, Sequence[Any]],
    t: dict[str, Any],
) -> list[dict[str, Any]]:
    urls = UrlFilter(
        accept_get_urls=None if t.get("accept_get_urls") is None else tuple(t["accept_get_urls"]),
        accept_storage_ids=tuple(t["accept_storage_ids"]) if t.get("accept_storage_ids") else None,
        presigned=t.get("presigned"),
        verbose=bool(t.get("verbose_storage")),
    )
    query = SegmentQuery(TimeRange.eternity(), None, urls, bool(t.get("include_object_timerange")))
    # Rows as a page's (SegmentRow's fields): an Object with only its controlled instance goes
    # by its backend, as on a page.
    rows = [
        SimpleNamespace(
            **{**SEGMENT_DEFAULTS, **seg},
            init_object_id=init_of.get(seg["object_id"]),
            storage_id=sole.get(seg["object_id"]),
            sole_instance=seg["object_id"] in sole,
        )
        for seg in segments
    ]
    return segment_docs(ctx, rows, instances, query, ctx.settings.base_url())


def event_facts(event: Any) -> EventFacts:
    meta = orjson.loads(event.meta)
    return EventFacts(
        event.event_type,
        event.flow_id,
        event.source_id,
        tuple(meta.get("flow_collected_by", ())),
        tuple(meta.get("source_collected_by", ())),
        frozenset(meta.get("classes", ())),
    )
