"""Routes: ``/flows/{id}/segments`` and ``/flows/{id}/storage``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.delete_requests import deletion_response
from tamstore.api.deps import base_url, context, principal, read_json
from tamstore.api.params import Query, path_id
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import api_router, get
from tamstore.domain.timerange import TimeRange
from tamstore.ops import deletion, segments, storage

router = api_router(tags=["segments"])


@get(router, "/flows/{flow_id}/segments", summary="List segments")
async def list_segments(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    q = Query(request)
    query = segments.SegmentQuery(
        timerange=q.timerange() or TimeRange.eternity(),
        object_id=q.text("object_id"),
        urls=q.url_filter(),
        include_object_timerange=bool(q.flag("include_object_timerange")),
    )
    page = await segments.list_segments(context(request), flow_id, query, q.page((int,)), base_url(request))
    return page_response(request, page, extra_headers={"X-Paging-Timerange": page.extra["timerange"].to_str()})


@router.post("/flows/{flow_id}/segments", summary="Register one segment or an array of them")
async def post_segments(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    body = await read_json(request)
    failures = await segments.post_segments(context(request), flow_id, body)
    registered = (len(body) if isinstance(body, list) else 1) - len(failures or [])
    request.app.state.metrics.segments.inc(registered)
    if failures:
        return json_response(request, {"failed_segments": failures}, status=200)
    return empty(201)


@router.delete("/flows/{flow_id}/segments", summary="Delete segments inside a timerange")
async def delete_segments(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    q = Query(request)
    tr = q.timerange() or TimeRange.eternity()
    pending = await deletion.delete_segments(context(request), flow_id, tr, q.text("object_id"), principal(request))
    return deletion_response(request, pending)


@router.post("/flows/{flow_id}/storage", summary="Allocate Objects and their upload URLs")
async def post_storage(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    body = await read_json(request, required=False)
    result = await storage.allocate(context(request), flow_id, body, base_url(request))
    return json_response(request, result, status=201)
