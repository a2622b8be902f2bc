"""What handlers take from a request: the running Context, the JSON body, URLs, the principal."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Scope

from tamstore.domain.errors import BadRequest, UnsupportedMedia
from tamstore.domain.limits import JsonLimits, check_json
from tamstore.ops.context import Caller, Context

__all__ = ["base_url", "caller", "context", "principal", "read_json", "scope_context"]

_NO_BODY = object()


def context(request: Request) -> Context:
    return scope_context(request.scope)


def scope_context(scope: Scope) -> Context:
    """The running Context from an ASGI scope (for middleware, which has no Request)."""
    ctx = scope["app"].state.ctx
    assert isinstance(ctx, Context)
    return ctx


def base_url(request: Request) -> str:
    """Scheme, host and any deployment prefix, for absolute URLs we hand out."""
    return str(request.base_url).rstrip("/")


def principal(request: Request) -> str | None:
    """The authenticated caller's name, when authentication is on."""
    return request.scope.get("tamstore.principal")


def caller(request: Request) -> Caller:
    """Who makes the request, for rules that depend on it (webhook ownership)."""
    return Caller(
        request.scope.get("tamstore.principal"),
        bool(request.scope.get("tamstore.admin")),
        frozenset(request.scope.get("tamstore.groups", ())),
    )


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request's JSON body, held to the service's limits (``domain/limits.py``). A body must
    say it is JSON: a browser page may send ``text/plain`` to any address without asking
    (no CORS preflight), so accepting it would let any web page change a loopback server."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("a JSON request body is required")
        return None
    if not _is_json(request.headers.get("content-type", "")):
        raise UnsupportedMedia("the request body must be JSON, sent with Content-Type: application/json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if b"\\u0000" in raw:
        # No database stores NUL inside text; refuse it rather than store something else.
        raise BadRequest("strings in the request body must not contain NUL (\\u0000)")
    return check_json(body, json_limits(request))


def json_limits(request: Request) -> JsonLimits:
    return JsonLimits(max_items=context(request).settings.max_json_items)


def _is_json(content_type: str) -> bool:
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
