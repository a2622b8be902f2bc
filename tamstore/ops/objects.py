"""Objects and their instances (CHECKLIST §9; ADR 0027, 0038, 0042), and ``get_urls`` rendering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from tamstore import spec
from tamstore.domain.access import WRITE
from tamstore.domain.errors import BadRequest, Forbidden, NotFound
from tamstore.domain.objects import UrlFilter
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter, tags_match
from tamstore.ops import access
from tamstore.ops.context import Context
from tamstore.ops.storage import delete_bytes, usable_backend
from tamstore.store.metadata.sql import Tx

__all__ = ["UrlRenderer", "add_instance", "get_object", "record_size", "remove_instance", "render_get_urls"]


class UrlRenderer:
    """``get_urls`` for any number of Objects under one filter. Which backends the filter keeps,
    the fixed fields of their URLs and their signers are worked out once per response, not
    once per URL."""

    def __init__(self, ctx: Context, filt: UrlFilter, base_url: str) -> None:
        self.filt = filt
        self._backends, self._base_url = ctx.backends, base_url
        # storage id: (its signer, the fields every URL from it carries besides the URL)
        self.signers: dict[str, tuple[Callable[[str], str], dict[str, Any]]] = {}
        self.uncontrolled = False
        if filt.nothing:
            return
        if filt.presigned is not False:  # every controlled URL is presigned
            for storage_id, backend in ctx.backends.items():
                info = backend.info
                if not (filt.wants_label(info.label) and filt.wants_storage(info.id)):
                    continue
                if not tags_match(info.tags, filt.backend_tags, filt.backend_tags_exist):
                    continue
                fixed: dict[str, Any] = {"presigned": True, "label": info.label}
                if filt.verbose:
                    fixed.update(info.to_json())
                    del fixed["id"], fixed["default_storage"]
                    fixed["storage_id"] = info.id
                    fixed["controlled"] = True
                self.signers[storage_id] = (backend.get_url_signer(base_url), fixed)
        # An uncontrolled URL is on no backend, so it fails any positive backend match.
        self.uncontrolled = not (
            filt.accept_storage_ids or filt.backend_tags or any(filt.backend_tags_exist.values())
        ) and filt.wants_presigned(False)

    def controlled_only(self, storage_id: str, object_id: str) -> list[dict[str, Any]]:
        """``render`` of an Object whose one instance is the controlled one on ``storage_id``,
        without that instance (nearly every Object of a segment page); ``render`` makes each
        controlled instance's URL with it."""
        signer = self.signers.get(storage_id)
        return _controlled_urls(signer[0](object_id), signer[1]) if signer is not None else []

    def controlled_json(self) -> dict[str, Callable[[str], orjson.Fragment]]:
        """For each backend the filter keeps, a function from an Object id to what
        ``controlled_only`` gives for it, as JSON made once per URL window: a segment page's
        Objects are nearly all in that state, and this takes building and serializing their
        ``get_urls`` (a fifth of a fresh page's CPU) off every page but the window's first."""
        made = {}
        for storage_id, (_, fixed) in self.signers.items():
            # The same list as controlled_only's, serialized around its URL ("url" comes first,
            # so the first null is the URL's place).
            head, tail = orjson.dumps(_controlled_urls(None, fixed)).split(b"null", 1)
            made[storage_id] = self._backends[storage_id].get_url_json(self._base_url, (head, tail))
        return made

    def render(self, object_id: str, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """The Object's URLs from its current instances, in their order, filtered *before* any
        URL is signed."""
        urls: list[dict[str, Any]] = []
        for inst in instances:
            if inst.controlled:
                urls += self.controlled_only(inst.storage_id, object_id)
            elif self.uncontrolled and self.filt.wants_label(inst.label):
                url = {"url": inst.url, "presigned": False, "label": inst.label}
                if self.filt.verbose:
                    url["controlled"] = False
                urls.append(url)
        return urls


def _controlled_urls(url: str | None, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``get_urls`` of an Object whose one instance is a controlled one: its URL, then the
    fields every URL from that backend carries."""
    return [{"url": url, **fixed}]


def render_get_urls(
    ctx: Context, object_id: str, instances: list[Any], filt: UrlFilter, base_url: str
) -> list[dict[str, Any]]:
    """One Object's URLs (see :class:`UrlRenderer` for many)."""
    return UrlRenderer(ctx, filt, base_url).render(object_id, instances)


async def get_object(
    ctx: Context,
    object_id: str,
    page: PageRequest,
    flow_tags: list[TagFilter],
    filt: UrlFilter,
    base_url: str,
) -> Page[dict[str, Any]]:
    """The Object document; the page is over its ``referenced_by_flows``."""
    async with ctx.store.read() as tx:
        obj = await tx.get_object(object_id)
        seen = access.current()
        if obj is None or not obj.registered or not await tx.object_visible(object_id, seen):
            raise NotFound(f"Object {object_id!r} does not exist")
        refs = await tx.referenced_by_flows(object_id, page, flow_tags, seen)
        wanted = [object_id] + ([obj.init_object_id] if obj.init_object_id else [])
        instances = await tx.instances(wanted)
    doc: dict[str, Any] = {
        "id": object_id,
        "referenced_by_flows": [r.flow_id for r in refs.items],
    }
    if obj.first_referenced_by_flow:
        doc["first_referenced_by_flow"] = obj.first_referenced_by_flow
    if not obj.is_init and obj.timerange is not None:
        doc["timerange"] = obj.timerange
    if obj.key_frame_count is not None:
        doc["key_frame_count"] = obj.key_frame_count
    doc["get_urls"] = render_get_urls(ctx, object_id, instances[object_id], filt, base_url)
    if obj.init_object_id:
        doc["init_object"] = {
            "id": obj.init_object_id,
            "get_urls": render_get_urls(ctx, obj.init_object_id, instances[obj.init_object_id], filt, base_url),
        }
    return Page([doc], refs.limit, refs.next_key)


async def add_instance(ctx: Context, object_id: str, body: Any) -> None:
    """Register an uncontrolled URL, or copy the Object to another controlled backend."""
    spec.validate("objects-instances-post.json", body)
    if "storage_id" in body:
        await _copy_to_backend(ctx, object_id, body["storage_id"])
        return
    async with ctx.store.write() as tx:
        existing = await _registered_instances(tx, object_id)
        label = body["label"]
        if label in ctx.backend_labels():
            raise BadRequest(f"label {label!r} is a Storage Backend's label")
        if any(i.label == label for i in existing):
            raise BadRequest(f"the Object already has an instance labelled {label!r}")
        await tx.insert_instance({"object_id": object_id, "url": body["url"], "label": label, "controlled": False})


async def _registered_instances(tx: Tx, object_id: str) -> list[Any]:
    """The instances of a registered Object the caller may change (it may write a Flow that
    uses it; one it cannot even read is missing, one it can read is 403)."""
    obj = await tx.get_object(object_id)
    seen = access.current()
    if obj is None or not obj.registered or not await tx.object_visible(object_id, seen):
        raise NotFound(f"Object {object_id!r} does not exist")
    if not await tx.object_visible(object_id, seen, WRITE):
        raise Forbidden(f"your groups' auth classes do not allow changes to Object {object_id!r}")
    return (await tx.instances([object_id]))[object_id]


async def _copy_to_backend(ctx: Context, object_id: str, storage_id: str) -> None:
    """Copy the bytes with no transaction open (a copy may take minutes; a write transaction
    would hold SQLite's write lock all that time), then record the instance in a short one that
    checks again that the Object is still there and not already on the target."""
    target = usable_backend(ctx, storage_id)

    def on_target(instances: list[Any]) -> bool:
        return any(i.storage_id == target.info.id for i in instances)

    async with ctx.store.read() as tx:
        existing = await _registered_instances(tx, object_id)
    if on_target(existing):
        raise BadRequest(f"Object already has an instance on storage {target.info.id}")
    sources = ctx.holding(existing)
    if not sources:
        raise BadRequest("the Object has no controlled instance to copy from")
    try:
        await target.copy_from(object_id, sources[0])
    except NotImplementedError as exc:
        raise BadRequest(str(exc)) from None
    try:
        async with ctx.store.write() as tx:
            if on_target(await _registered_instances(tx, object_id)):
                raise BadRequest(f"Object already has an instance on storage {target.info.id}")
            await tx.insert_instance({"object_id": object_id, "storage_id": target.info.id, "controlled": True})
    except NotFound:
        await delete_bytes(ctx, {target.info.id: [object_id]})  # deleted while we copied: nobody's
        raise


async def remove_instance(ctx: Context, object_id: str, storage_id: str | None, label: str | None) -> None:
    if storage_id is None and label is None:
        raise BadRequest("give storage_id or label to say which instance to delete")
    async with ctx.store.write() as tx:
        existing = await _registered_instances(tx, object_id)
        match = [
            i
            for i in existing
            if (storage_id is not None and i.storage_id == storage_id)
            or (storage_id is None and i.label == label and not i.controlled)
            or (storage_id is None and i.controlled and _backend_label(ctx, i.storage_id) == label)
        ]
        if not match:
            raise NotFound(f"Object {object_id!r} has no such instance")
        if len(existing) == 1:
            raise BadRequest("cannot delete the last instance of an Object that is in use")
        inst = match[0]
        await tx.delete_instance(inst.id)
    if inst.controlled:
        await delete_bytes(ctx, {inst.storage_id: [object_id]})


def _backend_label(ctx: Context, storage_id: str | None) -> str | None:
    backend = ctx.backends.get(storage_id) if storage_id else None
    return backend.info.label if backend else None


async def record_size(ctx: Context, object_id: str, size: int) -> None:
    """Remember an upload's size (for usage analytics; the store counts it where it belongs)."""
    async with ctx.store.write() as tx:
        await tx.set_object_size(object_id, size)
