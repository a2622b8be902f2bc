"""Routes: ``/service/webhooks`` and ``/service/webhooks/{id}`` (CHECKLIST §12)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tamstore.api.deps import caller, context, read_json
from tamstore.api.params import Query, path_id
from tamstore.api.responses import empty, json_response, page_response
from tamstore.api.routing import api_router, get
from tamstore.ops import webhooks

router = api_router(tags=["webhooks"])


@get(router, "/service/webhooks", summary="List webhooks")
async def list_webhooks(request: Request) -> Response:
    q = Query(request)
    page = await webhooks.list_webhooks(context(request), q.page((str, str)), q.tag_filters())
    return page_response(request, page)


@router.post("/service/webhooks", summary="Register a webhook", status_code=201)
async def post_webhook(request: Request) -> Response:
    doc = await webhooks.create_webhook(context(request), await read_json(request), caller(request))
    return json_response(request, doc, status=201)


@get(router, "/service/webhooks/{webhook_id}", summary="Get a webhook")
async def get_webhook(request: Request, webhook_id: str) -> Response:
    path_id(webhook_id, "Webhook")
    return json_response(request, await webhooks.get_webhook(context(request), webhook_id))


@router.put("/service/webhooks/{webhook_id}", summary="Replace a webhook", status_code=201)
async def put_webhook(request: Request, webhook_id: str) -> Response:
    path_id(webhook_id, "Webhook")
    doc = await webhooks.replace_webhook(context(request), webhook_id, await read_json(request), caller(request))
    return json_response(request, doc, status=201)


@router.delete("/service/webhooks/{webhook_id}", summary="Delete a webhook", status_code=204)
async def delete_webhook(request: Request, webhook_id: str) -> Response:
    path_id(webhook_id, "Webhook")
    await webhooks.delete_webhook(context(request), webhook_id, caller(request))
    return empty()
