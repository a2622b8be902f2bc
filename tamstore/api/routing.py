"""Route registration helpers: every GET has its HEAD twin (CHECKLIST §2.3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

__all__ = ["add_get", "get"]


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
