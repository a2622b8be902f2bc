"""Routes: ``/flow-delete-requests`` (asynchronous deletions, CHECKLIST §11)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import base_url, context
from tamstore.api.params import Query
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import api_router, get
from tamstore.ops import deletion

router = api_router(tags=["flow-delete-requests"])


def deletion_response(request: Request, pending: dict[str, Any] | None) -> Response:
    """204 when the deletion is done; 202 with the request and its absolute Location if not."""
    if pending is None:
        return empty(204)
    location = f"{base_url(request)}/flow-delete-requests/{pending['id']}"
    return json_response(request, pending, status=202, headers={"Location": location})


@get(router, "/flow-delete-requests", summary="List flow delete requests")
async def list_requests(request: Request) -> Response:
    q = Query(request)
    sort_by = q.choice("sort_by", ("created", "expiry"), "created") or "created"
    page = await deletion.list_delete_requests(context(request), q.page((int, str)), sort_by)
    return page_response(request, page)


@get(router, "/flow-delete-requests/{request_id}", summary="Get a flow delete request")
async def get_request(request: Request, request_id: str) -> Response:
    return json_response(request, await deletion.get_delete_request(context(request), request_id))
