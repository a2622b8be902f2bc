"""Route registration: every route documented by FastAPI and called the plain Starlette way, and
every GET with its HEAD twin (CHECKLIST §2.3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

__all__ = ["PlainRoute", "add_get", "api_router", "get"]


class PlainRoute(APIRoute):
    """A route that FastAPI documents in ``/openapi.json`` and Starlette calls directly.

    Every tamstore handler takes the Request and its path parameters as strings, and checks
    all of its input itself (``api/params.py``, ``domain/limits.py``): there is nothing for
    FastAPI's dependency solving and parameter validation to do, yet it cost about 0.03 ms of
    every request, a twentieth of a fresh segment page. So the handler is called with the
    Request and ``path_params`` by Starlette's plain request/response wrapper, which turns
    exceptions into responses through the app's handlers just the same.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)

        async def call(request: Request) -> Response:
            return await endpoint(request, **request.path_params)  # type: ignore[no-any-return]

        self.app = request_response(call)


def api_router(**kwargs: Any) -> APIRouter:
    """A module's router, its routes :class:`PlainRoute`."""
    return APIRouter(route_class=PlainRoute, **kwargs)


def add_get(router: APIRouter, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
    """GET (documented) and HEAD (the same handler, kept out of the OpenAPI document so that
    operation ids stay unique)."""
    router.add_api_route(path, endpoint, methods=["GET"], **kwargs)
    router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, **kwargs)


def get(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        add_get(router, path, endpoint, **kwargs)
        return endpoint

    return decorate
