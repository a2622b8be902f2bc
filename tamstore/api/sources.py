"""Routes: ``/sources`` and its sub-resources (Sources are created only through Flows)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import context, principal, read_json
from tamstore.api.params import MAX_LOOKUP_IDS, Query, path_id, raw_path_tail
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import add_get, api_router, get
from tamstore.domain.flows import FORMATS
from tamstore.domain.queries import SourceQuery
from tamstore.ops import sources

router = api_router(tags=["sources"])


@get(router, "/sources", summary="List Sources")
async def list_sources(request: Request) -> Response:
    q = Query(request)
    sort_by = q.choice("sort_by", ("created", "updated", "label"), "created")
    query = SourceQuery(
        sort_by=sort_by or "created",
        label=q.text("label"),
        format=q.choice("format", FORMATS),
        tags=q.tag_filters(),
        collected_by_ids=q.uuid_list("collected_by_ids", empty_allowed=True, most=MAX_LOOKUP_IDS),
    )
    page = await sources.list_sources(context(request), q.page((str, str) if sort_by == "label" else (int, str)), query)
    return page_response(request, page)


@get(router, "/sources/{source_id}", summary="Get a Source")
async def get_source(request: Request, source_id: str) -> Response:
    path_id(source_id, "Source")
    return json_response(request, await sources.get_source(context(request), source_id))


@get(router, "/sources/{source_id}/tags", summary="Get a Source's tags")
async def get_tags(request: Request, source_id: str) -> Response:
    path_id(source_id, "Source")
    return json_response(request, await sources.get_source_property(context(request), source_id, "tags"))


def _tag_name(request: Request) -> str:
    return "tags/" + "/".join(raw_path_tail(request, "tags"))


@get(router, "/sources/{source_id}/tags/{name:path}", summary="Get a tag")
async def get_tag(request: Request, source_id: str, name: str) -> Response:
    path_id(source_id, "Source")
    value = await sources.get_source_property(context(request), source_id, _tag_name(request))
    return json_response(request, value)


@router.put("/sources/{source_id}/tags/{name:path}", summary="Set a tag", status_code=204)
async def put_tag(request: Request, source_id: str, name: str) -> Response:
    path_id(source_id, "Source")
    await sources.set_source_property(
        context(request), source_id, _tag_name(request), await read_json(request), principal(request)
    )
    return empty()


@router.delete("/sources/{source_id}/tags/{name:path}", summary="Delete a tag", status_code=204)
async def delete_tag(request: Request, source_id: str, name: str) -> Response:
    path_id(source_id, "Source")
    await sources.set_source_property(context(request), source_id, _tag_name(request), principal=principal(request))
    return empty()


def _property_routes(prop: str) -> None:
    path = f"/sources/{{source_id}}/{prop}"

    async def get_prop(request: Request, source_id: str) -> Response:
        path_id(source_id, "Source")
        return json_response(request, await sources.get_source_property(context(request), source_id, prop))

    async def put_prop(request: Request, source_id: str) -> Response:
        path_id(source_id, "Source")
        body = await read_json(request)
        await sources.set_source_property(context(request), source_id, prop, body, principal(request))
        return empty()

    async def delete_prop(request: Request, source_id: str) -> Response:
        path_id(source_id, "Source")
        await sources.set_source_property(context(request), source_id, prop, principal=principal(request))
        return empty()

    add_get(router, path, get_prop, summary=f"Get a Source's {prop}")
    router.add_api_route(path, put_prop, methods=["PUT"], summary=f"Set a Source's {prop}", status_code=204)
    router.add_api_route(path, delete_prop, methods=["DELETE"], summary=f"Delete a Source's {prop}", status_code=204)


for _prop in ("label", "description"):
    _property_routes(_prop)
