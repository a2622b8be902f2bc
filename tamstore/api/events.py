"""Route: ``GET /x-tamstore/events``, the event stream (Server-Sent Events; tamstore extension).

The same events, bodies and filters as webhooks, for clients that cannot be called back
(browsers, short-lived tools, clients behind NAT). Each event's SSE ``id`` is its number in the
durable, ordered event log; a client resumes exactly after the last one it saw with
``Last-Event-ID`` (or ``?after=``), replayed from what is retained (``webhook_event_retention``).
An id older than that, or one not given out yet, ends the stream with an ``error`` event saying
so, never a silent gap; so does reading too slowly (``event_stream_buffer_kib``). A comment line
every ``event_stream_heartbeat`` seconds keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tamstore.api.connections import STREAM_SCOPE_KEY
from tamstore.api.deps import context
from tamstore.api.params import Query
from tamstore.api.routing import api_router
from tamstore.delivery import event_body, event_facts
from tamstore.domain.access import READ, Access
from tamstore.domain.errors import BadRequest, NotFound, TamsError, Unavailable, error_body
from tamstore.domain.events import EVENT_TYPES, WebhookFilter
from tamstore.ops import access
from tamstore.ops.context import Context
from tamstore.streaming import EventHub

router = api_router(tags=["events"], include_in_schema=False)

REPLAY_BATCH = 500
WRITE_TIMEOUT = 30.0  # seconds one write to a client may take before the connection is dropped


def _filter(q: Query) -> WebhookFilter:
    """A webhook's filters and URL options, from the query string."""
    doc: dict[str, Any] = {"events": list(EVENT_TYPES)}
    events = q.label_list("events")
    if events is not None:
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown or not events:
            raise BadRequest(f"query parameter events: one or more of {', '.join(EVENT_TYPES)}")
        doc["events"] = list(events)
    for name in ("flow_ids", "source_ids"):
        ids = q.uuid_list(name, empty_allowed=False)
        if ids is not None:
            doc[name] = ids
    for name in ("flow_collected_by_ids", "source_collected_by_ids"):
        ids = q.uuid_list(name, empty_allowed=True)
        if ids is not None:
            doc[name] = ids
    urls = q.url_filter()
    if urls.accept_get_urls is not None:
        doc["accept_get_urls"] = list(urls.accept_get_urls)
    if urls.accept_storage_ids:
        doc["accept_storage_ids"] = list(urls.accept_storage_ids)
    if urls.presigned is not None:
        doc["presigned"] = urls.presigned
    if urls.verbose:
        doc["verbose_storage"] = True
    if q.flag("include_object_timerange"):
        doc["include_object_timerange"] = True
    return WebhookFilter.from_doc(doc)


def _resume_point(request: Request, q: Query) -> int | None:
    header = request.headers.get("last-event-id")
    if header is not None:
        if not re.fullmatch(r"[0-9]{1,18}", header.strip()):
            raise BadRequest("Last-Event-ID must be the id of an event of this stream")
        return int(header.strip())
    return q.integer("after", minimum=0)


def _frame(event: Any, body: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.event_type.encode(), body)


def _error_frame(kind: str, summary: str) -> bytes:
    err = TamsError(summary)
    err.kind = kind
    return b"event: error\ndata: %s\n\n" % orjson.dumps(error_body(err))


class EventStreamResponse(Response):
    """Sends ``body`` as ``text/event-stream``; a write the client does not take within
    ``WRITE_TIMEOUT`` drops the connection; a client that goes away, or a server that stops,
    ends the body (``stop``)."""

    def __init__(self, body: AsyncIterator[bytes], stop: asyncio.Event) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.stream, self.stop = body, stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[STREAM_SCOPE_KEY] = self.stop.set  # a stopping server ends the stream (api.connections)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.stop.set()

        watcher = asyncio.create_task(watch())
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: pass events on as they come
        ]
        try:
            # The first chunk comes once the client is subscribed: a client that sees the
            # stream open misses nothing committed after that.
            first = await anext(self.stream)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": first, "more_body": True}), WRITE_TIMEOUT
            )
            async for chunk in self.stream:
                if self.stop.is_set():
                    break
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": chunk, "more_body": True}), WRITE_TIMEOUT
                )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), WRITE_TIMEOUT)
        except (TimeoutError, OSError, StopAsyncIteration):
            self.stop.set()  # the client stopped reading, or went: nothing more to say to it
        finally:
            watcher.cancel()
            await self.stream.aclose()  # type: ignore[attr-defined]


@router.get("/x-tamstore/events")
async def event_stream(request: Request) -> EventStreamResponse:
    ctx = context(request)
    settings = ctx.settings
    if not settings.event_stream:
        raise NotFound("the event stream is off here (event_stream)")
    q = Query(request)
    filt = _filter(q)
    after = _resume_point(request, q)
    hub: EventHub = request.app.state.hub
    if len(hub.subscribers) >= settings.event_stream_max_clients:
        raise Unavailable("too many event stream clients on this process; try again shortly")
    stop = asyncio.Event()  # the client went, or the server is stopping
    gauge = request.app.state.metrics.event_stream_clients
    # What the caller may hear of, fixed now (the stream outlives the middleware's frame).
    seen = access.current()
    return EventStreamResponse(_stream(ctx, hub, filt, after, stop, gauge, seen), stop)


async def _stream(
    ctx: Context,
    hub: EventHub,
    filt: WebhookFilter,
    after: int | None,
    stop: asyncio.Event,
    gauge: Any,
    seen: Access,
) -> AsyncIterator[bytes]:
    def wanted(event: Any) -> bool:
        facts = event_facts(event)
        return filt.matches(facts) and seen.allows(READ, facts.classes)

    # Subscribed before anything is replayed: an event numbered meanwhile is in one or the other.
    subscriber = await hub.subscribe(ctx.settings.event_stream_buffer_kib * 1024)
    gauge.inc()
    try:
        yield b"retry: 2000\n\n"  # reconnect after 2 s, with Last-Event-ID
        cursor = hub.last_seq
        if after is not None:
            async with ctx.store.read() as tx:
                top = await tx.max_event_seq()
                oldest = await tx.oldest_event_seq()
            if after > top:
                yield _error_frame("unknown_event_id", f"event {after} has not happened: the newest is {top}")
                return
            if after < top and (oldest is None or oldest > after + 1):
                first = "none" if oldest is None else str(oldest)
                yield _error_frame(
                    "events_expired",
                    f"events after {after} are no longer kept (the oldest kept is {first}): "
                    "read the state again and follow from now, without Last-Event-ID",
                )
                return
            cursor = after
            while True:  # replay what was missed, then go on with what the hub hands over
                async with ctx.store.read() as tx:
                    events = await tx.events_after(cursor, REPLAY_BATCH)
                for event in events:
                    if wanted(event):
                        yield _frame(event, event_body(ctx, event, filt))
                    cursor = event.seq or cursor
                if len(events) < REPLAY_BATCH:
                    break
        heartbeat = ctx.settings.event_stream_heartbeat
        while not stop.is_set():
            if subscriber.overflowed:
                yield _error_frame("slow_consumer", "this client read too slowly and fell too far behind; reconnect")
                return
            if not subscriber.events:
                subscriber.ready.clear()
                waiting = [asyncio.ensure_future(subscriber.ready.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    done, _ = await asyncio.wait(waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiting:
                        w.cancel()
                if not done:
                    yield b": heartbeat\n\n"
                continue
            for event in subscriber.take():
                if (event.seq or 0) <= cursor:
                    continue  # replayed already
                if wanted(event):
                    yield _frame(event, event_body(ctx, event, filt))
                cursor = event.seq or cursor
    finally:
        hub.unsubscribe(subscriber)
        gauge.dec()
