"""Responses: JSON encoded once with orjson (no response-model re-validation on hot paths),
HEAD answered with GET's status and headers and no body, and the paging headers of ADR 0010."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from tamstore.domain.errors import TamsError, error_body
from tamstore.domain.paging import Page

__all__ = ["empty", "error_reply", "json_response", "next_page_url", "page_response"]

JSON = "application/json"


def json_response(request: Request, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = b"" if request.method == "HEAD" else orjson.dumps(data)
    response = Response(body, status_code=status, media_type=JSON, headers=headers)
    if request.method == "HEAD":
        # Starlette would say 0; a HEAD should describe the GET it stands for.
        response.headers["content-length"] = str(len(orjson.dumps(data)))
    return response


def empty(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    response = Response(status_code=status, headers=headers)
    response.headers["content-type"] = JSON
    return response


def page_response(
    request: Request,
    page: Page[Any],
    *,
    count_headers: bool = True,
    body: Any = None,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """A listing with ``Link``/``X-Paging-*`` headers. ``count_headers`` False gives the short
    set (Limit, NextKey, Link) that /service/profiles and /objects use."""
    headers = {"X-Paging-Limit": str(page.limit)}
    if count_headers:
        headers["X-Paging-Count"] = str(len(page.items))
        headers["X-Paging-Reverse-Order"] = "true" if page.reverse else "false"
    cursor = page.next_cursor
    if cursor is not None:
        headers["X-Paging-NextKey"] = cursor
        headers["Link"] = f'<{next_page_url(request, cursor)}>; rel="next"'
    if extra_headers:
        headers.update(extra_headers)
    return json_response(request, page.items if body is None else body, headers=headers)


def next_page_url(request: Request, cursor: str) -> str:
    """The request's own URL with ``page`` set to ``cursor``, its other parameters kept in their
    order (what Starlette's ``remove_query_params`` then ``include_query_params`` give, in one
    parse and one encoding instead of two each: a listing with a next page pays it every time)."""
    pairs = [pair for pair in parse_qsl(request.url.query, keep_blank_values=True) if pair[0] != "page"]
    pairs.append(("page", cursor))
    return str(request.url.replace(query=urlencode(pairs)))


async def error_reply(
    scope: Scope, send: Send, status: int, err: TamsError, headers: dict[str, str] | None = None
) -> None:
    """An error in the spec's shape straight from ASGI middleware, before any route runs."""
    body = b"" if scope["method"] == "HEAD" else orjson.dumps(error_body(err))
    response = Response(body, status_code=status, media_type=JSON, headers=headers)
    await response(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # pragma: no cover - responses never read
    return {"type": "http.disconnect"}
