"""Routes: ``/``, ``/service``, ``/service/storage-backends``, ``/service/profiles``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import context, principal, read_json
from tamstore.api.params import Query, path_id
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import api_router, get
from tamstore.domain.flows import FORMATS
from tamstore.ops import service

router = api_router(tags=["service"])


@get(router, "/", summary="List the API's root resources")
async def root(request: Request) -> Response:
    return json_response(request, ["service", "flows", "sources", "objects", "flow-delete-requests"])


@get(router, "/service", summary="Describe this TAMS service")
async def get_service(request: Request) -> Response:
    return json_response(request, await service.get_service(context(request)))


@router.post("/service", summary="Update the service name and description")
async def post_service(request: Request) -> Response:
    await service.update_service(context(request), await read_json(request))
    return empty(200)


@get(router, "/service/storage-backends", summary="List storage backends")
async def storage_backends(request: Request) -> Response:
    q = Query(request)
    tags = q.tag_filters()
    page = service.list_storage_backends(
        context(request),
        q.page((str,)),
        {t.name: t.values for t in tags if t.values is not None},
        {t.name: bool(t.exists) for t in tags if t.exists is not None},
    )
    return page_response(request, page)


@get(router, "/service/profiles", summary="List Flow Profiles")
async def list_profiles(request: Request) -> Response:
    q = Query(request)
    page = await service.list_profiles(
        context(request),
        q.page((str,), reverse_param=False),
        format=q.choice("format", FORMATS),
        codec=q.mime("codec"),
        label=q.text("label"),
    )
    return page_response(request, page, count_headers=False)


@get(router, "/service/profiles/{profile_id}", summary="Get a Flow Profile")
async def get_profile(request: Request, profile_id: str) -> Response:
    path_id(profile_id, "Profile")
    return json_response(request, await service.get_profile(context(request), profile_id))


@router.post("/service/profiles/{profile_id}", summary="Create an (immutable) Flow Profile")
async def post_profile(request: Request, profile_id: str) -> Response:
    path_id(profile_id, "Profile")
    body = await read_json(request)
    doc = await service.create_profile(context(request), profile_id, body, principal(request))
    return json_response(request, doc, status=201)
