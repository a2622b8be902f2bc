"""The one place where failures become HTTP: domain errors, validation errors, unknown routes.

Every error body has the spec's error shape (error.json: ``type``, ``summary``, ``time``).
FastAPI's 422 for a malformed request becomes the 400 that TAMS documents.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from tamstore.domain.errors import (
    BadRequest,
    Forbidden,
    InsufficientStorage,
    NotFound,
    TamsError,
    TimedOut,
    TooLarge,
    TooManyRequests,
    Unavailable,
    UnsupportedMedia,
    error_body,
)

__all__ = ["STATUS", "error_response", "install_error_handlers", "retry_headers", "status_of"]

log = logging.getLogger("tamstore")

STATUS: dict[type[TamsError], int] = {
    BadRequest: 400,
    Forbidden: 403,
    NotFound: 404,
    TimedOut: 408,
    TooLarge: 413,
    UnsupportedMedia: 415,
    TooManyRequests: 429,
    InsufficientStorage: 507,
    Unavailable: 503,
}


def status_of(exc: TamsError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(request: Request, exc: TamsError, status: int, headers: dict[str, str] | None = None) -> Response:
    body = b"" if request.method == "HEAD" else orjson.dumps(error_body(exc))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def retry_headers(exc: TamsError) -> dict[str, str] | None:
    """``Retry-After`` for the errors that pass: a backing service down, a client held back."""
    if isinstance(exc, TooManyRequests):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unavailable) and not isinstance(exc, InsufficientStorage):
        return {"Retry-After": "5"}
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def tams_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TamsError)
        return error_response(request, exc, status_of(exc), retry_headers(exc))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(request, BadRequest(f"invalid request at {where}: {first.get('msg', '')}"), 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kinds = {404: NotFound, 403: Forbidden}
        err = kinds.get(exc.status_code, BadRequest)(str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow", ""))
        return error_response(request, err, exc.status_code, headers)

    async def disconnected(request: Request, exc: Exception) -> Response:
        # The client went away mid-request (a slow or cancelled upload): nothing failed here,
        # and nobody is listening for the answer. One line, not a traceback.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return error_response(request, BadRequest("the client disconnected before the request was read"), 400)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = TamsError("internal server error")
        err.kind = "internal_error"
        return error_response(request, err, 500)

    app.add_exception_handler(TamsError, tams_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, unexpected)


def _allowed_methods(request: Request, fallback: str) -> str:
    """Every method routed for this path: a path may be served by several routes (one per
    method), and Starlette's own ``Allow`` names only the first route's."""
    methods: set[str] = set()
    pending = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            pending.extend(included.routes)
            continue
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods)) if methods else fallback
