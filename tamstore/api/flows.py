"""Routes: ``/flows``, ``/flows/{id}`` and its metadata sub-resources."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.delete_requests import deletion_response
from tamstore.api.deps import context, principal, read_json
from tamstore.api.params import MAX_LOOKUP_IDS, Query, path_id, raw_path_tail
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import add_get, api_router, get
from tamstore.domain.flows import FLOW_STATUSES, FORMATS
from tamstore.domain.timerange import TimeRange
from tamstore.ops import deletion, flows

router = api_router(tags=["flows"])


@get(router, "/flows", summary="List Flows")
async def list_flows(request: Request) -> Response:
    q = Query(request)
    sort_by = q.choice("sort_by", ("created", "metadata_updated", "label"), "created") or "created"
    filters: dict[str, Any] = {}
    for column, value in (
        ("source_id", q.uuid("source_id")),
        ("format", q.choice("format", FORMATS)),
        ("codec", q.mime("codec")),
        ("profile_id", q.uuid("profile_id")),
        ("label", q.text("label")),
        ("status", q.choice("status", FLOW_STATUSES)),
        ("frame_width", q.integer("frame_width")),
        ("frame_height", q.integer("frame_height")),
        ("init_segments", q.flag("init_segments", None)),
    ):
        if value is not None:
            filters[column] = value
    query = flows.FlowQuery(
        filters=filters,
        tags=q.tag_filters(),
        collected_by_ids=q.uuid_list("collected_by_ids", empty_allowed=True, most=MAX_LOOKUP_IDS),
        timerange=q.timerange(),
        sort_by=sort_by,
    )
    page = await flows.list_flows(context(request), query, q.page((str, str) if sort_by == "label" else (int, str)))
    return page_response(request, page)


@get(router, "/flows/{flow_id}", summary="Get a Flow")
async def get_flow(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    q = Query(request)
    doc = await flows.get_flow(
        context(request),
        flow_id,
        include_timerange=bool(q.flag("include_timerange")),
        timerange=q.timerange() or TimeRange.eternity(),
    )
    return json_response(request, doc)


@router.put("/flows/{flow_id}", summary="Create or replace a Flow")
async def put_flow(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    created = await flows.put_flow(context(request), flow_id, await read_json(request), principal(request))
    if created is None:
        return empty(204)
    return json_response(request, created, status=201)


@router.delete("/flows/{flow_id}", summary="Delete a Flow and its segments")
async def delete_flow(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    pending = await deletion.delete_flow(context(request), flow_id, principal(request))
    return deletion_response(request, pending)


@get(router, "/flows/{flow_id}/tags", summary="Get a Flow's tags")
async def get_tags(request: Request, flow_id: str) -> Response:
    path_id(flow_id, "Flow")
    return json_response(request, await flows.get_flow_tag(context(request), flow_id, None))


def _tag_name(request: Request) -> str:
    return "/".join(raw_path_tail(request, "tags"))


@get(router, "/flows/{flow_id}/tags/{name:path}", summary="Get a Flow tag")
async def get_tag(request: Request, flow_id: str, name: str) -> Response:
    path_id(flow_id, "Flow")
    return json_response(request, await flows.get_flow_tag(context(request), flow_id, _tag_name(request)))


@router.put("/flows/{flow_id}/tags/{name:path}", summary="Set a Flow tag", status_code=204)
async def put_tag(request: Request, flow_id: str, name: str) -> Response:
    path_id(flow_id, "Flow")
    await flows.set_flow_property(context(request), flow_id, "tags/" + _tag_name(request), await read_json(request))
    return empty()


@router.delete("/flows/{flow_id}/tags/{name:path}", summary="Delete a Flow tag", status_code=204)
async def delete_tag(request: Request, flow_id: str, name: str) -> Response:
    path_id(flow_id, "Flow")
    await flows.set_flow_property(context(request), flow_id, "tags/" + _tag_name(request))
    return empty()


def _property_routes(prop: str, deletable: bool = True) -> None:
    path = f"/flows/{{flow_id}}/{prop}"

    async def get_prop(request: Request, flow_id: str) -> Response:
        path_id(flow_id, "Flow")
        return json_response(request, await flows.get_flow_property(context(request), flow_id, prop))

    async def put_prop(request: Request, flow_id: str) -> Response:
        path_id(flow_id, "Flow")
        await flows.set_flow_property(context(request), flow_id, prop, await read_json(request))
        return empty()

    async def delete_prop(request: Request, flow_id: str) -> Response:
        path_id(flow_id, "Flow")
        await flows.set_flow_property(context(request), flow_id, prop)
        return empty()

    add_get(router, path, get_prop, summary=f"Get a Flow's {prop}")
    router.add_api_route(path, put_prop, methods=["PUT"], summary=f"Set a Flow's {prop}", status_code=204)
    if deletable:
        router.add_api_route(path, delete_prop, methods=["DELETE"], summary=f"Unset a Flow's {prop}", status_code=204)


for _prop in flows.SIMPLE_PROPERTIES:
    _property_routes(_prop)
_property_routes("read_only", deletable=False)
