"""The service description, storage backends and Profiles (CHECKLIST §1.1, §4.1, §4.2; ADR 0047)."""

from __future__ import annotations

from typing import Any

import orjson

from tamstore import __version__, spec
from tamstore.domain.access import READ, classes_of
from tamstore.domain.errors import BadRequest, NotFound
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import tags_match
from tamstore.domain.timerange import NS_PER_S, format_timestamp
from tamstore.ops import access
from tamstore.ops.context import Context, now_us, rfc3339

__all__ = [
    "API_VERSION",
    "create_profile",
    "get_profile",
    "get_service",
    "list_profiles",
    "list_storage_backends",
    "update_service",
]

API_VERSION = "8.2"
SERVICE_TYPE = "urn:x-tams:service:tamstore"


# How clients can follow what happens in the store (the spec's `event_stream_mechanisms`).
EVENT_STREAM_MECHANISMS = [{"name": "webhooks", "docs": "https://github.com/bbc/tams"}]
SERVER_SENT_EVENTS = {
    "name": "x-tamstore-server-sent-events",
    "docs": "tamstore's docs/operating.md, section 'Event stream'",
    "config": {
        "url": "/x-tamstore/events",
        "resume": "Last-Event-ID header or after= query parameter",
        "filters": "the webhook filters as query parameters (events, flow_ids, source_ids, ...)",
    },
}


async def get_service(ctx: Context) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        info = await tx.service_info()
    out: dict[str, Any] = {
        "type": SERVICE_TYPE,
        "api_version": API_VERSION,
        "service_version": f"tamstore {__version__}",
        "name": info.get("name", ctx.settings.service_name),
        "min_object_timeout": format_timestamp(ctx.settings.min_object_timeout * NS_PER_S),
        "min_presigned_url_timeout": format_timestamp(ctx.settings.presigned_url_timeout * NS_PER_S),
    }
    if "description" in info:
        out["description"] = info["description"]
    out["event_stream_mechanisms"] = EVENT_STREAM_MECHANISMS + (
        [SERVER_SENT_EVENTS] if ctx.settings.event_stream else []
    )
    if ctx.policy.enabled:  # AppNote 0016's auth_classes, enforced here (docs/operating.md)
        out["x-tamstore-authorisation"] = ctx.policy.describe()
    return out


async def update_service(ctx: Context, body: Any) -> None:
    spec.validate("service-post.json", body)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    values = {k: body[k] for k in ("name", "description") if k in body}
    async with ctx.store.write() as tx:
        await tx.set_service_info(values)


def list_storage_backends(
    ctx: Context,
    page: PageRequest,
    tag_values: dict[str, tuple[str, ...]],
    tag_exists: dict[str, bool],
) -> Page[dict[str, Any]]:
    """Backends are few and set at deploy time, so they are filtered and paged in memory,
    sorted by label (ADR 0052)."""
    infos = sorted((b.info for b in ctx.backends.values()), key=lambda i: (i.label, i.id), reverse=page.reverse)
    seen = access.current()
    infos = [i for i in infos if tags_match(i.tags, tag_values, tag_exists) and seen.allows(READ, classes_of(i.tags))]
    start = 0
    if page.after is not None:
        ids = [i.id for i in infos]
        start = ids.index(page.after[0]) + 1 if page.after[0] in ids else len(ids)
    chunk = infos[start : start + page.limit]
    has_more = start + page.limit < len(infos)
    next_key = (chunk[-1].id,) if has_more and chunk else None
    return Page([i.to_json() for i in chunk], page.limit, next_key, page.reverse)


async def create_profile(ctx: Context, profile_id: str, body: Any, principal: str | None) -> dict[str, Any]:
    spec.validate("profile.json", body)
    if body["id"] != profile_id:
        raise BadRequest(f"Profile id in the body ({body['id']}) does not match the path")
    meta = body["flow_metadata"]
    doc = {k: v for k, v in body.items() if k != "created"}
    if principal is not None:
        doc.setdefault("created_by", principal)
    now = now_us()
    async with ctx.store.write() as tx:
        await tx.insert_profile(
            {
                "id": profile_id,
                "format": meta["format"],
                "codec": meta.get("codec"),
                "label": body.get("label"),
                "doc": orjson.dumps(doc).decode(),
                "created": now,
            }
        )
    return {**doc, "created": rfc3339(now)}


def _profile_doc(row: Any) -> dict[str, Any]:
    return {**orjson.loads(row.doc), "created": rfc3339(row.created)}


async def get_profile(ctx: Context, profile_id: str) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        row = await tx.get_profile(profile_id)
    if row is None:
        raise NotFound(f"Profile {profile_id} does not exist")
    return _profile_doc(row)


async def list_profiles(
    ctx: Context, page: PageRequest, *, format: str | None, codec: str | None, label: str | None
) -> Page[dict[str, Any]]:
    async with ctx.store.read() as tx:
        result = await tx.list_profiles(page, format=format, codec=codec, label=label)
    return result.map(_profile_doc)
