"""Routes: ``/objects/{id}`` and ``/objects/{id}/instances``.

Object ids may contain ``/`` (sent as ``%2F``), so one catch-all route reads the raw path:
``/objects/a%2Fb`` is Object ``a/b``; ``/objects/a%2Fb/instances`` is its instances.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import base_url, context, read_json
from tamstore.api.errors import error_response
from tamstore.api.params import Query, raw_path_tail
from tamstore.api.responses import empty, page_response
from tamstore.api.routing import add_get, api_router
from tamstore.domain.errors import BadRequest, NotFound
from tamstore.ops import objects

router = api_router(tags=["objects"])


def _target(request: Request) -> tuple[str, bool]:
    try:
        tail = raw_path_tail(request, "objects")
    except UnicodeDecodeError:
        raise BadRequest("the Object id is not valid percent-encoded UTF-8") from None
    if len(tail) == 2 and tail[1] == "instances":
        return tail[0], True
    if len(tail) != 1 or tail[0] == "":
        raise NotFound("no such resource; send '/' inside an Object id as %2F")
    return tail[0], False


async def object_route(request: Request, object_path: str) -> Response:
    object_id, instances = _target(request)
    ctx = context(request)
    if not instances:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request, "GET, HEAD")
        q = Query(request)
        page = await objects.get_object(
            ctx,
            object_id,
            q.page((str,), reverse_param=False),
            q.tag_filters("flow_tag"),
            q.url_filter(),
            base_url(request),
        )
        return page_response(request, page, count_headers=False, body=page.items[0])
    if request.method == "POST":
        await objects.add_instance(ctx, object_id, await read_json(request))
        return empty(201)
    if request.method == "DELETE":
        q = Query(request)
        storage_id = q.text("storage_id") or None
        await objects.remove_instance(ctx, object_id, storage_id, q.text("label") or None)
        return empty(204)
    return _method_not_allowed(request, "DELETE, POST")


OBJECT_PATH = "/objects/{object_path:path}"
add_get(router, OBJECT_PATH, object_route, summary="Get an Object")
router.add_api_route(OBJECT_PATH, object_route, methods=["POST"], summary="Add an Object instance (.../instances)")
router.add_api_route(OBJECT_PATH, object_route, methods=["DELETE"], summary="Remove an Object instance (.../instances)")
# Only so that these get a 405 naming the right methods for the resource addressed.
router.add_api_route(OBJECT_PATH, object_route, methods=["PUT", "PATCH", "OPTIONS"], include_in_schema=False)


def _method_not_allowed(request: Request, allow: str) -> Response:
    """Answer 405 here: the catch-all route serves two resources with different methods."""
    return error_response(request, BadRequest("method not allowed"), 405, {"Allow": allow})
