"""Webhook registrations (CHECKLIST §12.2, §12.3; ADR 0037). ``api_key_value`` is stored but
never returned. Every filter and transformation of the spec is supported, so none is refused."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tamstore import spec
from tamstore.domain.access import DELETE, READ, WRITE
from tamstore.domain.errors import BadRequest, Forbidden, NotFound
from tamstore.domain.events import check_transition
from tamstore.domain.limits import MAX_URL_BYTES, check_text
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter, check_tags
from tamstore.domain.targets import check_header
from tamstore.ops import access
from tamstore.ops.context import Caller, Context, now_us
from tamstore.outbound import check_target
from tamstore.store.metadata.sql import Tx

__all__ = ["create_webhook", "delete_webhook", "get_webhook", "list_webhooks", "replace_webhook"]

CLIENT_FIELDS = (
    "url",
    "api_key_name",
    "events",
    "flow_ids",
    "source_ids",
    "flow_collected_by_ids",
    "source_collected_by_ids",
    "accept_get_urls",
    "accept_storage_ids",
    "presigned",
    "verbose_storage",
    "include_object_timerange",
    "tags",
)


async def _check_target(ctx: Context, body: dict[str, Any]) -> None:
    """The URL is an absolute http(s) URL to an allowed address (domain/targets.py), and the
    API key is something HTTP can carry: refused now, not found undeliverable later."""
    check_text(body["url"], MAX_URL_BYTES, "webhook url")
    if "api_key_name" in body:
        problem = check_header(body["api_key_name"], body.get("api_key_value"))
        if problem is not None:
            raise BadRequest(problem)
    elif body.get("api_key_value") is not None:
        raise BadRequest("api_key_value needs an api_key_name to be sent as")
    check_tags(body.get("tags", {}))
    await check_target(body["url"], ctx.target_policy)


def webhook_doc(row: Any) -> dict[str, Any]:
    doc = orjson.loads(row.doc)
    doc["id"] = row.id
    doc["status"] = row.status
    if row.status == "error" and row.error:
        doc["error"] = orjson.loads(row.error)
    return doc  # type: ignore[no-any-return]


def _doc(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in CLIENT_FIELDS if k in body}


async def create_webhook(ctx: Context, body: Any, caller: Caller) -> dict[str, Any]:
    spec.validate("webhook-post.json", body)
    await _check_target(ctx, body)
    doc = _doc(body)
    webhook_id = str(uuid.uuid4())
    limit = ctx.settings.max_webhooks
    async with ctx.store.write() as tx:
        # The events' sequencer comes first: on PostgreSQL it is a lock held to the commit, so
        # registrations count one after another and racing ones cannot pass the limit together.
        await tx.sequence_events()
        # Each webhook sends every event it hears of to its URL: without a bound, one client
        # could have tamstore send any number of requests to a host of its choosing per change.
        if await tx.count_webhooks_of(caller.name, limit) >= limit:
            raise BadRequest(f"at most {limit} webhooks per owner (max_webhooks): delete some first")
        row = {
            "id": webhook_id,
            "url": doc["url"],
            "doc": orjson.dumps(doc).decode(),
            "api_key_value": body.get("api_key_value"),
            "status": body.get("status", "created"),
            "cursor": await tx.max_event_seq(),  # new webhooks hear about what happens from now on
            "created": now_us(),
            "created_by": caller.name,
            "owner_groups": orjson.dumps(sorted(caller.groups)).decode(),
            "owner_admin": caller.admin,
        }
        access.check_reclassing({}, doc.get("tags", {}))
        await tx.insert_webhook(row, doc.get("tags", {}))
        created = await tx.get_webhook(webhook_id)
    return webhook_doc(created)


async def get_webhook(ctx: Context, webhook_id: str) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        row = await _visible_webhook(tx, webhook_id)
    return webhook_doc(row)


async def _visible_webhook(tx: Tx, webhook_id: str, action: str = READ) -> Any:
    """The webhook, if it exists and its ``auth_classes`` let the caller ``action`` it."""
    row = await tx.get_webhook(webhook_id)
    if row is None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    access.require(f"webhook {webhook_id}", row, action)
    return row


async def list_webhooks(ctx: Context, page: PageRequest, tags: list[TagFilter]) -> Page[dict[str, Any]]:
    async with ctx.store.read() as tx:
        result = await tx.list_webhooks(page, tags, access.current())
    return result.map(webhook_doc)


async def replace_webhook(ctx: Context, webhook_id: str, body: Any, caller: Caller) -> dict[str, Any]:
    """PUT: full replacement, by the webhook's owner or an admin. Without ``api_key_value`` the
    stored secret is kept (it cannot be read back, so a client could not resend it), but only
    while it goes where it went before: a new ``url`` or ``api_key_name`` without the value
    drops it, so that changing a webhook never sends its secret somewhere new."""
    spec.validate("webhook-put.json", body)
    if body["id"] != webhook_id:
        raise BadRequest(f"webhook id in the body ({body['id']}) does not match the path")
    await _check_target(ctx, body)
    doc = _doc(body)
    async with ctx.store.write() as tx:
        row = await _visible_webhook(tx, webhook_id, WRITE)
        if not caller.may_manage(row.created_by):
            raise Forbidden("only the principal that registered this webhook, or an admin, may change it")
        access.check_reclassing(orjson.loads(row.doc).get("tags") or {}, doc.get("tags", {}))
        check_transition(row.status, body["status"])
        values: dict[str, Any] = {"url": doc["url"], "doc": orjson.dumps(doc).decode()}
        if caller.name is not None and caller.name == row.created_by:  # the owner's groups as they are now
            values.update(owner_groups=orjson.dumps(sorted(caller.groups)).decode(), owner_admin=caller.admin)
        if "api_key_value" in body:
            values["api_key_value"] = body["api_key_value"]
        elif row.url != doc["url"] or orjson.loads(row.doc).get("api_key_name") != doc.get("api_key_name"):
            values["api_key_value"] = None
        new_status = body["status"]
        if new_status == "created" and row.status in ("error", "disabled"):
            values.update(status="created", error=None, attempts=0, next_attempt=0)
            if row.status == "disabled":  # a disabled webhook did not want what it missed
                await tx.sequence_events()
                values["cursor"] = await tx.max_event_seq()
        elif new_status == "disabled":
            values.update(status="disabled")
        await tx.update_webhook(webhook_id, values, doc.get("tags", {}))
        updated = await tx.get_webhook(webhook_id)
    ctx.wake_webhooks.set()
    return webhook_doc(updated)


async def delete_webhook(ctx: Context, webhook_id: str, caller: Caller) -> None:
    async with ctx.store.write() as tx:
        row = await _visible_webhook(tx, webhook_id, DELETE)
        if not caller.may_manage(row.created_by):
            raise Forbidden("only the principal that registered this webhook, or an admin, may delete it")
        await tx.delete_webhook(webhook_id)
