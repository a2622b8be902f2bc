"""Routes: the embedded backend's signed media URLs (``/x-tamstore/media/{object id}``).

These are not TAMS API routes: they are what a ``put_url``/``get_url`` of the filesystem
backend points at. They are authorised by the URL's signature alone (like an S3 presigned
URL), never by API credentials.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tamstore.api.deps import context
from tamstore.api.responses import empty
from tamstore.api.routing import api_router
from tamstore.domain.errors import Forbidden, NotFound
from tamstore.ops.objects import record_size
from tamstore.store.media.filesystem import MEDIA_PREFIX, FilesystemMediaStore, decode_id

router = api_router(include_in_schema=False)


class MediaFileResponse(FileResponse):
    """An Object's bytes, read 1 MiB per thread hop rather than Starlette's 64 KiB: segments are
    megabytes, and each read is a hop to a worker thread and back."""

    chunk_size = 1 << 20


def _authorised(request: Request) -> tuple[FilesystemMediaStore, str]:
    store = context(request).filesystem
    if not isinstance(store, FilesystemMediaStore):
        raise NotFound("this service has no filesystem media backend")
    tail = request.path_params["object_path"]
    if "." in tail:  # an extension for players that want one (ops.playback): not part of the id
        tail = tail.split(".", 1)[0]
    object_id = decode_id(tail) if "/" not in tail else None
    if object_id is None:
        raise Forbidden("invalid media URL")
    q = request.query_params
    if not store.verify(request.method, object_id, q.get("expires", ""), q.get("signature", "")):
        raise Forbidden("the media URL's signature is invalid or has expired")
    return store, object_id


@router.api_route(MEDIA_PREFIX + "/{object_path:path}", methods=["GET", "HEAD"])
async def get_media(request: Request, object_path: str) -> Response:
    store, object_id = _authorised(request)
    path = store.path_for(object_id)
    if not path.exists():
        raise NotFound("no media has been uploaded for this Object")
    async with context(request).store.read() as tx:
        obj = await tx.get_object(object_id)
    media_type = (obj.content_type if obj is not None else None) or "application/octet-stream"
    return MediaFileResponse(path, media_type=media_type)


@router.put(MEDIA_PREFIX + "/{object_path:path}")
async def put_media(request: Request, object_path: str) -> Response:
    """Upload an Object's bytes, until a segment uses them: from then on they are immutable
    (a segment's media never changes under its readers), checked again just before the upload
    is put in place."""
    store, object_id = _authorised(request)
    ctx = context(request)

    async def still_unused() -> None:
        async with ctx.store.read() as tx:
            obj = await tx.get_object(object_id)
        if obj is None:
            raise NotFound("the Object was never allocated or has been garbage-collected")
        if obj.registered:
            raise Forbidden("a segment uses this Object: its bytes can no longer be changed")

    await still_unused()
    # (uvicorn has already refused a request whose Content-Length is not a number)
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isascii() and length.isdigit() and len(length) < 20 else None
    size = await store.write(object_id, request.stream(), before_install=still_unused, declared=declared)
    await record_size(ctx, object_id, size)
    return empty(200)
