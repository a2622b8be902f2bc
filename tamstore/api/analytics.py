"""Routes: ``/x-tamstore/analytics/...``, usage analytics (a tamstore extension, not TAMS)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import context
from tamstore.api.params import Query, path_id
from tamstore.api.responses import json_response
from tamstore.api.routing import api_router, get
from tamstore.domain.flows import FORMATS
from tamstore.domain.timerange import TimeRange
from tamstore.ops import analytics

router = api_router(tags=["analytics (tamstore extension)"])
PREFIX = "/x-tamstore/analytics"


@get(router, PREFIX + "/flows", summary="Flow usage: Flows, segments, hours of media and bytes, grouped")
async def flow_usage(request: Request) -> Response:
    q = Query(request)
    filters: dict[str, Any] = {}
    for column, value in (
        ("format", q.choice("format", FORMATS)),
        ("codec", q.mime("codec")),
        ("source_id", q.uuid("source_id")),
        ("id", q.uuid("flow_id")),
    ):
        if value is not None:
            filters[column] = value
    result = await analytics.flow_usage(context(request), q.text("group_by"), filters, q.timerange())
    return json_response(request, result)


@get(router, PREFIX + "/storage", summary="Storage usage: Objects and bytes per Storage Backend, by day")
async def storage_usage(request: Request) -> Response:
    q = Query(request)
    days = q.integer("days", minimum=0, maximum=36_525)  # a century of daily snapshots at most
    result = await analytics.storage_usage(context(request), q.uuid("storage_id"), 30 if days is None else days)
    return json_response(request, result)


@get(router, PREFIX + "/flows/{flow_id}/timeline", summary="Coverage, gaps and segment durations of a Flow")
async def flow_timeline(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    q = Query(request)
    tr = q.timerange() or TimeRange.eternity()
    buckets = q.integer("buckets", minimum=0, maximum=2000) or 0
    return json_response(request, await analytics.flow_timeline(context(request), flow_id, tr, buckets))
